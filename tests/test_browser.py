"""The pages in a real browser: headless Chromium (Debian's chromium-headless-shell; .ci/run installs it).

Each page must load with no console error, no broken image and no request
outside its folder; one filter is applied and the visible count checked.
Screenshots go to ``$WSOL_SCREENSHOTS`` (default: the test's tmp_path): look at them.
"""

import csv
import os
from pathlib import Path

import pytest

from bench.html.browser import Browser, choose, find_browser

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


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


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
