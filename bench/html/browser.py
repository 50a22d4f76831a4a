"""Load a page in headless Chromium and report what a reader would hit: console errors, broken images, requests.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe``
(JSON messages ended by a NUL byte on file descriptors 3 and 4), so no Python
package beyond the standard library is needed; the browser is the Debian
package ``chromium-headless-shell`` (or ``chromium``). Used by
``tests/test_browser.py`` and to make the README's screenshot::

    python -m bench.html.browser results/paper/index.html --width 1100 --height 760 \\
        --select agreement=2 --scroll browser --colours 128 --screenshot docs/img/study_page.png

"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
# Every visible <img> loaded (complete) and decoded (naturalWidth > 0); lazy images below the fold are not visible.
_IMAGES_STATE = """(() => {
  const shown = Array.from(document.images).filter((image) => image.offsetParent !== null);
  const loading = shown.filter((image) => !image.complete).length;
  const broken = shown.filter((image) => image.complete && image.naturalWidth === 0).map((image) => image.src);
  return {shown: shown.length, loading, broken};
})()"""


class BrowserError(RuntimeError):
    """The browser could not be started or did not answer."""


def find_browser() -> str | None:
    """The path of a Chromium binary (``$CHROMIUM`` first, then :data:`BROWSERS` on ``PATH``), or None."""
    named = os.environ.get("CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@dataclass
class PageReport:
    """What loading one page gave."""

    console_errors: list[str] = field(default_factory=list)  # console.error, uncaught exceptions, failed loads
    broken_images: list[str] = field(default_factory=list)  # visible <img> whose file did not load or decode
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    load_seconds: float = 0.0  # navigation to the load event

    def problems(self, folder: Path) -> list[str]:
        """Everything wrong: errors, broken images, and requests outside ``folder`` (the page must be self-contained)."""
        inside = Path(folder).resolve().as_uri() + "/"
        outside = [url for url in self.requests if not url.startswith(inside)]
        return ([f"console: {text}" for text in self.console_errors] + [f"broken image: {src}" for src in
                self.broken_images] + [f"request outside {folder}: {url}" for url in outside])


class Browser:
    """One headless Chromium process and one tab, driven over the DevTools pipe."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900, timeout: float = 60.0):
        self.timeout = timeout
        self.events: list[dict] = []
        self._next_id = 0
        self._buffer = b""
        self._profile = tempfile.TemporaryDirectory(prefix="wsol-chromium-")
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()

        def wire() -> None:  # in the child: the pipes on fds 3 (commands in) and 4 (answers out)
            os.dup2(to_browser, 100)
            os.dup2(from_browser, 101)
            os.dup2(100, 3)
            os.dup2(101, 4)

        command = [executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                   "--no-first-run", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self._profile.name}",
                   "about:blank"]
        try:
            self._process = subprocess.Popen(command, preexec_fn=wire, close_fds=False, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(to_browser)
            os.close(from_browser)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=True)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._from_browser], [], [], remaining)[0]:
                raise BrowserError(f"the browser did not answer within {self.timeout:g} s")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError("the browser closed its DevTools pipe (did it crash?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: bool = False) -> dict:
        """Send one DevTools command and return its result; events that arrive meanwhile go to ``events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, event: str) -> dict:
        """Block until the DevTools event ``event`` arrives (or was already received); return it."""
        deadline = time.monotonic() + self.timeout
        while True:
            for index, message in enumerate(self.events):
                if message.get("method") == event:
                    return self.events.pop(index)
            self.events.append(self._read_message(deadline))

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited); page exceptions raise."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def load(self, page: Path) -> float:
        """Open ``page`` (a file) and wait for its load event; returns the seconds it took."""
        self.events.clear()
        start = time.monotonic()
        self.call("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=True)
        self.wait_for("Page.loadEventFired")
        return round(time.monotonic() - start, 3)

    def report(self, load_seconds: float = 0.0) -> PageReport:
        """Wait for the visible images, then report what went wrong since the last :meth:`load`."""
        report = PageReport(load_seconds=load_seconds, broken_images=self.settle())
        for message in self.events:
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                report.console_errors.append(" ".join(str(arg.get("value", arg.get("description", "")))
                                                      for arg in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                report.console_errors.append(details.get("exception", {}).get("description") or details.get("text"))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                report.console_errors.append(f"{entry.get('text')} {entry.get('url', '')}".strip())
            elif method == "Network.requestWillBeSent":
                report.requests.append(params["request"]["url"])
        return report

    def settle(self) -> list[str]:
        """Wait until every visible image has loaded or failed; return the URLs of the broken ones."""
        deadline = time.monotonic() + self.timeout
        while True:
            state = self.evaluate(_IMAGES_STATE)
            if not state["loading"] or time.monotonic() > deadline:
                return state["broken"]
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        """The viewport as PNG into ``path``."""
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except BrowserError:
            self._process.kill()
        self._process.wait(timeout=30)
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def choose(browser: Browser, select_id: str, index: int) -> None:
    """Pick option ``index`` of ``<select id=select_id>`` as a reader would (the page's input handlers run)."""
    browser.evaluate(f"(() => {{ const s = document.getElementById({json.dumps(select_id)}); "
                     f"s.selectedIndex = {index}; s.dispatchEvent(new Event('input')); }})()")


def _reduce_colours(path: Path, colours: int) -> None:
    from PIL import Image

    with Image.open(path) as image:
        reduced = image.convert("RGB").quantize(colours, dither=Image.Dither.NONE)
    reduced.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.html.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="an index.html written by wsol-bench")
    parser.add_argument("--screenshot", help="save the viewport as PNG here")
    parser.add_argument("--select", action="append", default=[], metavar="ID=INDEX",
                        help="choose option INDEX of the <select id=ID> first (repeatable)")
    parser.add_argument("--scroll", help="scroll the element with this id to the top first")
    parser.add_argument("--colours", type=int, default=0,
                        help="reduce the screenshot to this many colours (a small PNG for the docs; 0: keep all)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    executable = find_browser()
    if executable is None:
        print(f"error: no Chromium found (looked for {', '.join(BROWSERS)}; or set CHROMIUM)", file=sys.stderr)
        return 2
    page = Path(args.page)
    with Browser(executable, args.width, args.height) as browser:
        seconds = browser.load(page)
        for choice in args.select:
            select_id, index = choice.split("=")
            choose(browser, select_id, int(index))
        if args.scroll:
            browser.evaluate(f"document.getElementById({json.dumps(args.scroll)}).scrollIntoView()")
        report = browser.report(seconds)
        if args.screenshot:
            browser.screenshot(Path(args.screenshot))
            if args.colours:
                _reduce_colours(Path(args.screenshot), args.colours)
    problems = report.problems(page.parent)
    print(f"{page}: loaded in {report.load_seconds:.2f} s, {len(report.requests)} request(s), "
          f"{len(problems)} problem(s)")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
