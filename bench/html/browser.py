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
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
# The rendered <img> (hidden ones, e.g. filtered out, have no client rects) that are still loading, and the
# broken ones (complete, yet nothing decoded). A lazy image below the fold stays "loading" until it is
# scrolled near the viewport, so this expression also scrolls the first one still loading into view (a
# reader would scroll to it); ``window[KEY]`` keeps the scroll positions found on the first call.
_IMAGES_STATE = """(() => {
  const key = "__wsolScrollPositions";
  if (!window[key]) {
    window[key] = new Map(Array.from(document.querySelectorAll("*")).filter((e) => e.scrollTop || e.scrollLeft)
      .map((e) => [e, [e.scrollTop, e.scrollLeft]]));
  }
  const rendered = Array.from(document.images).filter((image) => image.getClientRects().length > 0);
  const loading = rendered.filter((image) => !image.complete);
  if (loading.length) loading[0].scrollIntoView({block: "center", inline: "nearest"});
  const broken = rendered.filter((image) => image.complete && image.naturalWidth === 0);
  return {rendered: rendered.length, loading: loading.map((image) => image.currentSrc || image.src),
          broken: broken.map((image) => image.currentSrc || image.src)};
})()"""
# Put every scrolled element back where :data:`_IMAGES_STATE` found it (screenshots show what was asked for).
_RESTORE_SCROLL = """(() => {
  const key = "__wsolScrollPositions";
  const saved = window[key] || new Map();
  for (const element of document.querySelectorAll("*")) {
    const [top, left] = saved.get(element) || [0, 0];
    if (element.scrollTop !== top || element.scrollLeft !== left) {
      element.scrollTop = top;
      element.scrollLeft = left;
    }
  }
  delete window[key];
})()"""


def images_settled(state: dict, stalled_seconds: float, patience: float) -> tuple[bool, list[str]]:
    """Given one :data:`_IMAGES_STATE`, whether to stop waiting, and the images that never loaded.

    Stop when nothing is loading, or when no image finished for ``patience`` seconds
    (``stalled_seconds``): the ones still loading then never load, and are reported.
    """
    if not state["loading"]:
        return True, []
    if stalled_seconds >= patience:
        return True, list(state["loading"])
    return False, []


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
    broken_images: list[str] = field(default_factory=list)  # rendered <img> whose file did not load or decode
    unloaded_images: list[str] = field(default_factory=list)  # rendered <img> still loading after the patience
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    load_seconds: float = 0.0  # navigation to the load event

    def problems(self, folder: Path) -> list[str]:
        """Everything wrong: errors, broken images, and requests outside ``folder`` (the page must be self-contained)."""
        inside = Path(folder).resolve().as_uri() + "/"
        outside = [url for url in self.requests if not url.startswith(inside)]
        return ([f"console: {text}" for text in self.console_errors]
                + [f"broken image: {src}" for src in self.broken_images]
                + [f"image never loaded: {src}" for src in self.unloaded_images]
                + [f"request outside {folder}: {url}" for url in outside])


class Browser:
    """One headless Chromium process and one tab, driven over the DevTools pipe.

    ``timeout``: seconds any DevTools answer may take; ``image_patience``: seconds
    :meth:`settle` waits for the next image to finish before it reports the ones
    still loading as never loaded.
    """

    def __init__(self, executable: str, width: int = 1280, height: int = 900, timeout: float = 60.0,
                 image_patience: float = 5.0):
        self.timeout, self.image_patience = timeout, image_patience
        self.exit_grace = 10.0  # seconds close() waits for Chromium to exit before it kills it
        self.events: list[dict] = []
        self._next_id = 0
        self._buffer = b""
        self._profile = tempfile.TemporaryDirectory(prefix="wsol-chromium-")
        self._process: subprocess.Popen | None = None
        self._to_browser = self._from_browser = -1
        try:
            self._start(executable)
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable", session=True)
            self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                             "deviceScaleFactor": 1, "mobile": False}, session=True)
        except BaseException:
            self._shut_down(grace=0.0)  # no Chromium, pipe or profile outlives a failed start
            raise

    def _start(self, executable: str) -> None:
        """Start Chromium with the command pipe on its fd 3 and the answer pipe on its fd 4, and no other fd."""
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # pipe() takes the lowest free numbers, so fds 3 and 4 are open here now (ours or older ones): the child
        # may keep them (pass_fds), wire() puts our two ends there, and close_fds closes every other one, the
        # parent's ends included (a child holding the command pipe's write end would never see it close).
        keep = (3, 4)

        def wire() -> None:  # in the child, before close_fds: via 100/101, in case our ends are fds 3 or 4
            os.dup2(to_browser, 100)
            os.dup2(from_browser, 101)
            os.dup2(100, 3)
            os.dup2(101, 4)
            os.close(100)
            os.close(101)

        command = [executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                   "--no-first-run", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self._profile.name}",
                   "about:blank"]
        try:
            # Its own process group, so a forced stop reaches Chromium's helper processes too.
            self._process = subprocess.Popen(command, preexec_fn=wire, close_fds=True, pass_fds=keep,
                                             start_new_session=True, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            os.close(to_browser)
            os.close(from_browser)

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
        """Open ``page`` (a file) and wait for its load event; returns the seconds it took.

        Raises :class:`BrowserError` when the navigation itself fails (``errorText``: a missing file, say).
        """
        self.events.clear()
        start = time.monotonic()
        navigated = self.call("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=True)
        if navigated.get("errorText"):
            raise BrowserError(f"{page}: the page did not load ({navigated['errorText']})")
        self.wait_for("Page.loadEventFired")
        return round(time.monotonic() - start, 3)

    def report(self, load_seconds: float = 0.0) -> PageReport:
        """Load the rendered images (scrolling to the lazy ones), then report what went wrong since :meth:`load`."""
        broken, unloaded = self.settle()
        report = PageReport(load_seconds=load_seconds, broken_images=broken, unloaded_images=unloaded)
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

    def settle(self) -> tuple[list[str], list[str]]:
        """Scroll to each rendered image still loading until all have loaded; ``(broken URLs, never loaded URLs)``.

        An image counts as never loaded when no image finished for ``image_patience`` seconds while it was
        still loading. The scroll positions are put back afterwards.
        """
        last_progress, remaining = time.monotonic(), None
        try:
            while True:
                state = self.evaluate(_IMAGES_STATE)
                if remaining is None or len(state["loading"]) < remaining:
                    last_progress, remaining = time.monotonic(), len(state["loading"])
                done, unloaded = images_settled(state, time.monotonic() - last_progress, self.image_patience)
                if done:
                    return state["broken"], unloaded
                time.sleep(0.05)
        finally:
            self.evaluate(_RESTORE_SCROLL)

    def screenshot(self, path: Path) -> Path:
        """The viewport as PNG into ``path``."""
        data = self.call("Page.captureScreenshot", {"format": "png"}, session=True)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        """Ask Chromium to quit; kill it if it does not answer or exit; always remove the pipes and the profile."""
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):  # no answer, or the pipe is gone (it crashed)
            self._shut_down(grace=0.0)
        else:
            self._shut_down(grace=self.exit_grace)

    def _shut_down(self, grace: float) -> None:
        """Wait ``grace`` seconds for Chromium to exit, then kill its process group; close the pipes, drop the profile."""
        try:
            if self._process is not None:
                try:
                    self._process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._process.pid, signal.SIGKILL)  # its helpers too, even if it exited already
                self._process.wait()
        finally:
            for fd in (self._to_browser, self._from_browser):
                if fd >= 0:
                    os.close(fd)
            self._to_browser = self._from_browser = -1
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
