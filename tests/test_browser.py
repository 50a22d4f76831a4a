"""The pages in a real browser: headless Chromium (Debian's chromium-headless-shell; .ci/run installs it).

Each page must load with no console error, no broken image and no request
outside its folder; one filter is applied and the visible count checked.
Screenshots go to ``$WSOL_SCREENSHOTS`` (default: the test's tmp_path): look at them.
"""

import os
import time
from pathlib import Path

import pytest
from helpers import read_rows

from bench.html.browser import Browser, BrowserError, choose, find_browser

EXECUTABLE = find_browser()
pytestmark = pytest.mark.skipif(EXECUTABLE is None, reason="no Chromium binary (apt-get install "
                                "chromium-headless-shell; .ci/run does it)")


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("WSOL_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def visible(browser: Browser, selector: str) -> int:
    return browser.evaluate(f"Array.from(document.querySelectorAll({selector!r}))"
                            ".filter((element) => element.offsetParent !== null).length")


def test_run_page_loads_cleanly_and_filters_wrong_classes(tiny_run, tmp_path):
    folder = tiny_run.config.run_dir
    predictions = read_rows(folder / "predictions.csv")
    wrong = sum(row["top1_correct"] == "0" for row in predictions)
    with Browser(EXECUTABLE) as browser:
        report = browser.report(browser.load(folder / "index.html"))
        assert report.problems(folder) == []
        assert any(url.endswith("_top1.jpg") for url in report.requests)
        assert visible(browser, ".card") == len(predictions) == 24  # one screen page holds 60
        browser.screenshot(screenshot_dir(tmp_path) / "run_page.png")
        browser.evaluate("document.getElementById('wrong-class').click()")
        assert visible(browser, ".card") == wrong
        assert browser.evaluate("document.getElementById('count').textContent") == f"{wrong} of 24 images"
        assert browser.report().problems(folder) == []


@pytest.mark.slow
def test_study_page_loads_cleanly_and_filters_where_gap_alone_localizes(tiny_study, tmp_path):
    study, runs = tiny_study
    folder = study.study_dir
    located = {config.model.pooling: [row["gt_known_loc"] for row in read_rows(config.run_dir / "predictions.csv")]
               for config in runs}
    expected = sum(gap == "1" and gmp == "0" for gap, gmp in zip(located["gap"], located["gmp"]))
    with Browser(EXECUTABLE) as browser:
        report = browser.report(browser.load(folder / "index.html"))
        assert report.problems(folder) == []
        assert visible(browser, "table.browser tbody tr") == 24
        options = browser.evaluate("Array.from(document.getElementById('agreement').options).map((o) => o.text)")
        choose(browser, "agreement", options.index("GAP localizes, GMP does not"))
        assert visible(browser, "table.browser tbody tr") == expected
        assert browser.evaluate("document.getElementById('count').textContent") == f"{expected} of 24 images"
        neither = sum(gap == "0" and gmp == "0" for gap, gmp in zip(located["gap"], located["gmp"]))
        choose(browser, "agreement", options.index("no column localizes"))
        assert visible(browser, "table.browser tbody tr") == neither > 0
        browser.evaluate("document.getElementById('browser').scrollIntoView()")
        assert browser.report().problems(folder) == []
        browser.screenshot(screenshot_dir(tmp_path) / "study_page.png")
        for config in runs:  # the run pages the study links to
            assert browser.report(browser.load(config.run_dir / "index.html")).problems(config.run_dir) == []


def test_lazy_images_below_the_fold_are_loaded_and_one_that_never_loads_fails_in_seconds(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "red.png")
    images = "".join(f'<img src="red.png?{k}" width="100" height="400" loading="lazy"><br>' for k in range(30))
    page = tmp_path / "index.html"
    page.write_text(f'<!doctype html><meta charset="utf-8"><body>{images}'
                    '<img src="missing.png" width="100" height="100" loading="lazy">'
                    '<img src="red.png?hidden" style="display: none"></body>', encoding="utf-8")
    start = time.monotonic()
    with Browser(EXECUTABLE, width=400, height=300, image_patience=2.0) as browser:
        report = browser.report(browser.load(page))
        assert browser.evaluate("window.scrollY") == 0  # the checker scrolled, then put the page back
        loaded = browser.evaluate("Array.from(document.images).filter((i) => i.loading === 'lazy' && i.naturalWidth > 0).length")
    assert time.monotonic() - start < 30  # was 60 s of waiting, then a pass
    assert loaded == 30  # every lazy image below the 300 px viewport was scrolled to and decoded
    missing = (tmp_path / "missing.png").as_uri()
    assert report.problems(tmp_path) == [f"console: Failed to load resource: net::ERR_FILE_NOT_FOUND {missing}",
                                         f"broken image: {missing}"]


def test_a_page_that_does_not_exist_is_an_error_naming_it(tmp_path):
    with Browser(EXECUTABLE) as browser, pytest.raises(BrowserError, match="missing.html: the page did not load"):
        browser.load(tmp_path / "missing.html")
