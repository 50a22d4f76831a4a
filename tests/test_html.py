"""The web pages (bench.html): parsed with an HTML parser, checked against the run folders' files."""

import dataclasses
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from helpers import read_rows
from PIL import Image

from bench.commands.cli import main
from bench.data.loading import load_dataset
from bench.html.run_page import history_table, metric_rows, write_run_page
from bench.html.thumbnails import GT_COLOUR, PREDICTED_COLOUR, _draw_boxes, page_sample, thumbnail_name
from bench.scoring.metric_names import RUN_METRICS as METRIC_LABELS


class Page(HTMLParser):
    """Every element's attributes, and each table's body rows as lists of cell texts."""

    def __init__(self, path: Path):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self._in_body = False  # inside a <tbody>
        self._cell: list[str] | None = None
        self.feed(path.read_text())

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "tbody":
            self.tables.append([])
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self._in_body:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def urls(self) -> list[str]:
        return [attrs[key] for _, attrs in self.elements for key in ("src", "href") if attrs.get(key)]

    def with_class(self, tag: str, name: str) -> list[dict]:
        return [attrs for t, attrs in self.elements if t == tag and name in attrs.get("class", "").split()]


def check_links(page_path: Path, root: Path) -> list[str]:
    """Every URL of the page is relative, names an existing file, and stays inside ``root``; returns them."""
    urls = Page(page_path).urls()
    for url in urls:
        parts = urlsplit(url)
        if parts.fragment and not parts.path:
            continue  # a link within the page
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), f"{url} leaves the folder"
        target = (page_path.parent / unquote(parts.path)).resolve()
        assert target.is_relative_to(root.resolve()), f"{url} points outside {root}"
        assert target.is_file(), f"{page_path.name} links {url}, which does not exist"
    return urls


# ----------------------------------------------------------------------------- pieces, by hand


def test_page_sample_keeps_small_splits_whole_and_samples_big_ones_the_same_way_every_time():
    assert page_sample(5, cap=10).tolist() == [0, 1, 2, 3, 4]
    assert page_sample(10, cap=10).tolist() == list(range(10))
    sample = page_sample(50_000, cap=2000)
    assert len(sample) == 2000 and len(set(sample.tolist())) == 2000
    assert np.all(np.diff(sample) > 0) and sample[0] >= 0 and sample[-1] < 50_000
    assert np.array_equal(sample, page_sample(50_000, cap=2000))  # every run of a study shows the same images


def test_thumbnail_names_are_row_numbers():
    assert thumbnail_name(42, "top1") == "00042_top1.jpg"
    assert thumbnail_name(0, "image") == "00000_image.jpg"
    with pytest.raises(ValueError, match="expected one of"):
        thumbnail_name(1, "cam")


def test_boxes_are_drawn_on_their_pixel_edges():
    picture = np.zeros((10, 10, 3), dtype=np.uint8)
    # GT (2, 3, 6, 8) covers columns 2..5 and rows 3..7; the predicted box, at half scale, (0, 0, 4, 4) -> 0..1.
    drawn = np.asarray(_draw_boxes(picture, (1.0, 1.0), np.array([[2, 3, 6, 8]]), None))
    outline = {(y, x) for y in range(3, 8) for x in range(2, 6) if y in (3, 7) or x in (2, 5)}
    coloured = {(y, x) for y in range(10) for x in range(10) if drawn[y, x].any()}
    assert coloured == outline and all(tuple(drawn[y, x]) == GT_COLOUR for y, x in outline)
    drawn = np.asarray(_draw_boxes(picture, (0.5, 0.5), np.zeros((0, 4)), np.array([0, 0, 4, 4])))
    assert {(y, x) for y in range(10) for x in range(10) if drawn[y, x].any()} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert tuple(drawn[0, 0]) == PREDICTED_COLOUR


def test_rows_with_one_protocol_share_one_cell():
    metrics = {key: 10.0 for key in METRIC_LABELS} | {"protocol": "fixed", "sweep": {
        "max_box_acc": {"value": 50.0, "tau": 0.3, "protocol": "oracle"},
        "max_box_acc_v2": {"value": 40.0, "protocol": "oracle v2"}}}
    rows = metric_rows(metrics, None)
    assert [row["span"] for row in rows] == [6, 0, 0, 0, 0, 0, 1, 1]
    assert [row["final"] for row in rows] == ["10.00"] * 5 + ["10.000", "50.00", "40.00"]
    assert rows[6]["protocol"] == "oracle (best tau 0.3)" and rows[0]["selected"] == ""


# ----------------------------------------------------------------------------- the run page


def test_run_page_links_tables_and_filter_data_match_the_run_folder(tiny_run):
    folder = tiny_run.config.run_dir
    page_path = folder / "index.html"
    urls = check_links(page_path, folder)
    page = Page(page_path)
    predictions = read_rows(folder / "predictions.csv")
    metrics = json.loads((folder / "metrics.json").read_text())

    metrics_table = page.tables[0]
    assert [row[0] for row in metrics_table][:6] == list(METRIC_LABELS.values())
    assert metrics_table[2][1] == f"{metrics['top1_loc_error']:.2f}"
    assert metrics_table[0][-1] == metrics["protocol"]  # the fixed-tau rows' shared protocol cell
    assert len(metrics_table) == 6 + 3 + 2  # MaxBoxAcc, V2, PxAP (the tiny data has masks), two tau-from-val rows
    history = read_rows(folder / "history.csv")
    # By object scale: one row per bin, and the bins' images add up to the split (metrics.json's by_object_scale).
    assert [row[0] for row in page.tables[1]] == ["[0, 0.1)", "[0.1, 0.2)", "[0.2, 0.3)", "[0.3, 0.5)", "[0.5, 1]"]
    assert sum(int(row[1]) for row in page.tables[1]) == metrics["num_images"]
    assert [row[0] for row in page.tables[2]] == [row["epoch"] for row in history]

    cards = page.with_class("figure", "card")
    assert len(cards) == len(predictions) == 24
    for card, row in zip(cards, predictions):
        assert card["data-id"] == row["image_id"] and card["data-label"] == row["label"]
        assert card["data-predicted"] == row["top5_classes"].split()[0]
        assert card["data-correct"] == row["top1_correct"]
        assert card["data-iou"] == row["top1_iou"] and card["data-gt-iou"] == row["gt_class_iou"]
    assert {url for url in urls if url.startswith("page/img/")} == {
        f"page/img/{thumbnail_name(k, 'image')}" for k in range(24)} | {
        f"page/img/{thumbnail_name(k, 'top1')}" for k in range(24)}
    wrong = {k for k, row in enumerate(predictions) if row["top1_correct"] == "0"}
    cams = page.with_class("img", "cam")
    assert {k for k, cam in enumerate(cams) if cam["data-gt"].endswith("_gt.jpg")} == wrong
    for cam in cams:
        assert (folder / cam["data-gt"]).is_file()
    assert sorted(p.name for p in (folder / "page" / "img").glob("*_gt.jpg")) == [
        thumbnail_name(k, "gt") for k in sorted(wrong)]
    with Image.open(folder / "page" / "img" / thumbnail_name(0, "top1")) as image:
        assert image.size == (112, 112) and image.format == "JPEG"


def test_report_rerenders_a_run_page_and_says_when_the_images_are_gone(tiny_run, tmp_path, capsys):
    results = tmp_path / "results"
    copy = results / tiny_run.config.name
    shutil.copytree(tiny_run.config.run_dir, copy)
    (copy / "index.html").unlink()
    shutil.rmtree(copy / "page")
    assert main(["report", "configs/tiny.yaml", f"data_root={tiny_run.config.data_root}",
                 f"results_dir={results}"]) == 0
    assert len(Page(copy / "index.html").with_class("figure", "card")) == 24
    assert (copy / "page" / "page.js").is_file() and (copy / "page" / "page.css").is_file()

    # A results folder copied without the dataset: its thumbnails are kept and shown, byte for byte.
    config = dataclasses.replace(tiny_run.config, results_dir=str(results))
    samples = load_dataset(config.dataset, Path(config.data_root), progress=False).splits["test"]
    gone = [dataclasses.replace(sample, image_path=tmp_path / "gone" / sample.image_path.name) for sample in samples]
    thumbnails = {path.name: path.read_bytes() for path in (copy / "page" / "img").iterdir()}
    notes = []
    write_run_page(config, gone, log=notes.append)
    assert notes == [] and len(Page(copy / "index.html").with_class("figure", "card")) == 24
    assert {path.name: path.read_bytes() for path in (copy / "page" / "img").iterdir()} == thumbnails
    check_links(copy / "index.html", copy)

    # Without the dataset and without thumbnails: the page keeps the rest and says why there is no grid.
    shutil.rmtree(copy / "page" / "img")
    write_run_page(config, gone, log=notes.append)
    page = Page(copy / "index.html")
    assert not page.with_class("figure", "card") and page.with_class("p", "warning")
    assert len(notes) == 1 and "24 evaluated image(s) are missing" in notes[0]
    assert not (copy / "page" / "img").exists()
    check_links(copy / "index.html", copy)


def test_pages_are_written_as_utf8_not_in_the_locale_encoding(tmp_path):
    """The pages say ``<meta charset="utf-8">``; writing them in the locale's encoding is an EncodingWarning."""
    import subprocess
    import sys

    script = ("import sys, warnings; warnings.simplefilter('error', EncodingWarning); "
              "from bench.html.render import write_page; "
              "write_page(__import__('pathlib').Path(sys.argv[1]), 'base.html', title='τ ± 0.5 · ré', assets='page')")
    path = tmp_path / "index.html"
    done = subprocess.run([sys.executable, "-X", "warn_default_encoding", "-c", script, str(path)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    text = path.read_bytes().decode("utf-8")
    assert '<meta charset="utf-8">' in text and "τ ± 0.5 · ré" in text


# ----------------------------------------------------------------------------- the study page


@pytest.mark.slow
def test_study_page_links_tables_and_side_by_side_data_match_the_runs(tiny_study):
    study, runs = tiny_study
    folder = study.study_dir
    urls = check_links(folder / "index.html", folder)
    page = Page(folder / "index.html")
    for config in runs:
        assert f"runs/{config.name}/index.html" in urls
        check_links(config.run_dir / "index.html", config.run_dir)

    points = len(list(folder.glob("table*.csv")))  # the final epoch's, and the val-selected one's
    assert points == 2
    for table in page.tables[:points]:
        assert [row[0] for row in table] == ["gap", "gmp", "center baseline", "few-shot (val masks)"]
        assert [row[1] for row in table] == ["1", "1", "-", "-"]
    comparison = page.tables[points]
    csv_rows = read_rows(folder / "comparison.csv")
    # the table's four metrics, then MaxBoxAcc and MaxBoxAccV2 paired from each run's box hits
    assert [row["metric"] for row in csv_rows] == ["top1_cls_error", "top1_loc_error", "top5_loc_error",
                                                   "gt_known_loc_acc", "mean_iou", "max_box_acc", "max_box_acc_v2"]
    assert len(comparison) == len(csv_rows) == 7
    assert [row[-1] for row in comparison] == [row["verdict"] for row in csv_rows]
    start = page.elements.index(("ul", {"class": "verdicts"}))  # the first point's verdicts, one per headline metric
    end = next(k for k in range(start, len(page.elements)) if page.elements[k][0] == "table")
    items = [attrs["class"] for tag, attrs in page.elements[start:end] if tag == "li"]
    headline = {row["metric"]: row["verdict"] for row in csv_rows}
    assert len(items) == 3 and headline.keys() >= {"top1_loc_error", "gt_known_loc_acc", "max_box_acc_v2"}

    predictions = {config.model.pooling: read_rows(config.run_dir / "predictions.csv") for config in runs}
    rows = [attrs for tag, attrs in page.elements if tag == "tr" and "data-loc" in attrs]
    assert len(rows) == 24
    for row in rows:
        k = int(row["data-row"])
        assert row["data-id"] == predictions["gap"][k]["image_id"]
        assert json.loads(row["data-loc"]) == {pooling.upper(): int(predictions[pooling][k]["gt_known_loc"])
                                               for pooling in ("gap", "gmp")}
    options = [attrs for tag, attrs in page.elements if tag == "option" and attrs.get("value") == "pair"]
    assert [(o["data-yes"], o["data-no"]) for o in options] == [("GAP", "GMP"), ("GMP", "GAP")]


def test_study_page_links_run_names_with_url_characters(tiny_study, tmp_path):
    """Run names with ``#``, ``?`` and ``%``: each link and image of the study page is percent-quoted."""
    from bench.html.study_page import write_study_page

    study, runs = tiny_study
    copied = dataclasses.replace(study, results_dir=str(tmp_path / "results"))
    for name in ("table.csv", "comparison.csv"):
        (copied.study_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(study.study_dir / name, copied.study_dir / name)
    renamed = []
    for config, name in zip(runs, ("gap #1?a=b", "gmp 100%")):
        moved = dataclasses.replace(config, name=name, results_dir=str(copied.study_dir / "runs"))
        shutil.copytree(config.run_dir, moved.run_dir)
        renamed.append(moved)
    write_study_page(copied, renamed, log=lambda message: None)
    urls = check_links(copied.study_dir / "index.html", copied.study_dir)
    assert "runs/gap%20%231%3Fa%3Db/index.html" in urls and "runs/gmp%20100%25/index.html" in urls
    assert any(url.startswith("runs/gmp%20100%25/page/img/") for url in urls)  # the side-by-side thumbnails


def test_the_history_table_puts_a_losss_terms_after_the_loss_and_names_them(tmp_path):
    (tmp_path / "history.csv").write_text(
        "epoch,loss,accuracy,loss_ce,loss_spg_b2,lr,seconds,val_top1_cls_error\n"
        "1,2.5,40.25,2.25,0.25,0.01,3.5,61.25\n")
    header, body = history_table(tmp_path)
    assert header == ["epoch", "training loss", "cross-entropy", "SPG: B2 against SPG-A's mask", "train acc (%)",
                      "val top-1 cls err (%)"]
    assert body == [["1", "2.5", "2.25", "0.25", "40.2", "61.2"]]
