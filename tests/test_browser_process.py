"""bench.html.browser without a browser: what becomes of the process, its pipes and its profile when Chromium fails.

A small Python program stands in for Chromium (the real one is in tests/test_browser.py): it records the file
descriptors it was given, then exits, stays silent, or answers every DevTools command and never exits.
"""

import sys
import tempfile
import time

import pytest

from bench.html.browser import Browser, BrowserError, images_settled

FAKE_CHROMIUM = f"""#!{sys.executable}
import json, os, subprocess, sys, time
mode, folder = os.environ["FAKE_MODE"], os.environ["FAKE_FOLDER"]
fds = []
for fd in range(256):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
with open(os.path.join(folder, "fds"), "w") as handle:
    handle.write(" ".join(map(str, fds)))
helper = subprocess.Popen(["sleep", "600"])  # as Chromium's renderer would be, in the browser's process group
with open(os.path.join(folder, "pids"), "w") as handle:
    handle.write(f"{{os.getpid()}} {{helper.pid}}")
if mode == "exit":
    sys.exit(0)
buffer = b""
while True:
    chunk = os.read(3, 65536)
    if not chunk:
        time.sleep(600)
    buffer += chunk
    while b"\\0" in buffer:
        message, buffer = buffer.split(b"\\0", 1)
        if mode == "answer":
            answer = {{"id": json.loads(message)["id"], "result": {{"targetId": "t", "sessionId": "s"}}}}
            os.write(4, json.dumps(answer).encode() + b"\\0")
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """``start(mode)``: the fake's path with FAKE_MODE set; the profile folders go to ``tmp_path/tmp``."""
    executable = tmp_path / "fake-chromium"
    executable.write_text(FAKE_CHROMIUM)
    executable.chmod(0o755)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("FAKE_FOLDER", str(tmp_path))

    def start(mode: str) -> str:
        monkeypatch.setenv("FAKE_MODE", mode)
        return str(executable)
    return start


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by init counts as gone)."""
    for _ in range(50):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def nothing_left(tmp_path) -> None:
    browser_pid, helper_pid = map(int, (tmp_path / "pids").read_text().split())
    assert gone(browser_pid) and gone(helper_pid)
    assert list((tmp_path / "tmp").iterdir()) == []  # the profile folder was removed


def test_the_browser_gets_its_two_pipes_and_no_other_descriptor(fake, tmp_path):
    with pytest.raises(BrowserError, match="closed its DevTools pipe"):
        Browser(fake("exit"), timeout=10)
    assert (tmp_path / "fds").read_text() == "0 1 2 3 4"  # was also 100, 101 (pipe copies) and any fd the parent left inheritable
    nothing_left(tmp_path)  # the profile used to stay behind when a call in __init__ failed


def test_a_browser_that_never_answers_is_killed_with_its_helpers(fake, tmp_path):
    start = time.monotonic()
    with pytest.raises(BrowserError, match="did not answer within 0.5 s"):
        Browser(fake("silent"), timeout=0.5)
    assert time.monotonic() - start < 10
    nothing_left(tmp_path)  # the process used to keep running, and the profile to stay


def test_a_browser_that_does_not_exit_after_close_is_killed(fake, tmp_path):
    browser = Browser(fake("answer"), timeout=5)
    browser.exit_grace = 0.5
    start = time.monotonic()
    browser.close()  # Browser.close is answered, yet the process stays: it used to wait 30 s, then raise
    assert time.monotonic() - start < 10
    nothing_left(tmp_path)


def test_images_settle_when_none_loads_and_report_the_stalled_ones():
    state = {"rendered": 3, "loading": ["file:///a.jpg"], "broken": []}
    assert images_settled({**state, "loading": []}, stalled_seconds=0.0, patience=5.0) == (True, [])
    assert images_settled(state, stalled_seconds=4.9, patience=5.0) == (False, [])
    assert images_settled(state, stalled_seconds=5.0, patience=5.0) == (True, ["file:///a.jpg"])
