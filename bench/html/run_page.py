"""``<run>/index.html``: one run's metrics (each with its protocol), config, curves and a browsable image grid.

Everything is read back from the run folder (:mod:`bench.run.folder` names the
files), so a finished run's page can be rendered again at any time
(``python -m bench report <run config>``). The grid needs the dataset's images
for its thumbnails; without them the page says so and shows the rest.

The grid shows every evaluated image, or a fixed sample of
:data:`bench.html.thumbnails.MAX_IMAGES` of a bigger split (stated on the
page), 60 cards per screen page, so a 50,000-image ILSVRC val run gives a page
of a few thousand small JPEGs that opens as fast as a small one.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from bench.atomic_files import TEMPORARY_SUFFIX
from bench.config import RunConfig
from bench.data.loading import load_dataset
from bench.data.samples import DatasetFormatError, Sample
from bench.data.wsol_layout import read_class_names
from bench.errors import MissingInputError
from bench.html.render import copy_assets, write_page
from bench.html.thumbnails import MAX_IMAGES, page_sample, thumbnail_name, write_image_thumbnails
from bench.run.folder import (
    CAMS_FILE,
    COMPLETE,
    CONFIG_FILE,
    CURVES_FIGURE,
    HISTORY_FIGURE,
    HISTORY_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    PAGE_DIR,
    PAGE_FILE,
    PREDICTIONS_FILE,
    SELECTED_DIR,
    run_status,
)
from bench.scoring.image_rows import parse_boxes
from bench.scoring.metric_names import CALIBRATED_ROWS, HISTORY_COLUMNS, RUN_METRICS, SWEEP_ROWS
from bench.training.loop import loss_term_columns, loss_term_label

IMAGE_DIR = "img"  # under PAGE_DIR: the thumbnails


def read_predictions(path: Path) -> list[dict[str, str]]:
    """``predictions.csv`` as one dict of column -> text per image, in split order."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(value: float, key: str) -> str:
    return f"{value:.3f}" if key == "mean_iou" else f"{value:.2f}"


def metric_rows(final: dict, selected: dict | None) -> list[dict]:
    """The metrics table: ``{"label", "final", "selected", "protocol"}`` per row, numbers as text.

    ``final`` / ``selected``: ``metrics.json`` of the final epoch and of the
    val-selected one (None if the run has none). The fixed-tau rows share the
    run's protocol; each threshold-sweep row states its own.
    """
    def pick(metrics: dict | None, *keys: str) -> str:
        value = metrics
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return ""
            value = value[key]
        return _number(value, keys[-1])

    rows = [{"label": label, "final": pick(final, key), "selected": pick(selected, key),
             "protocol": final["protocol"]} for key, label in RUN_METRICS.items()]
    sweep = final.get("sweep", {})
    for key, label in SWEEP_ROWS.items():
        if key in sweep:
            tau = f" (best tau {sweep[key]['tau']:g})" if "tau" in sweep[key] else ""
            rows.append({"label": label, "final": pick(final, "sweep", key, "value"),
                         "selected": pick(selected, "sweep", key, "value"), "protocol": sweep[key]["protocol"] + tau})
    if "calibrated" in sweep:
        for key, label in CALIBRATED_ROWS.items():
            rows.append({"label": label, "final": pick(final, "sweep", "calibrated", key),
                         "selected": pick(selected, "sweep", "calibrated", key),
                         "protocol": sweep["calibrated"]["protocol"]})
    return _merge_protocols(rows)


def _merge_protocols(rows: list[dict]) -> list[dict]:
    """Give each row ``span``: how many rows from it on share its protocol (one table cell); 0 under such a cell."""
    for index, row in enumerate(rows):
        if index and rows[index - 1]["protocol"] == row["protocol"]:
            row["span"] = 0
            continue
        end = index
        while end < len(rows) and rows[end]["protocol"] == row["protocol"]:
            end += 1
        row["span"] = end - index
    return rows


def history_table(run_dir: Path) -> tuple[list[str], list[list[str]]]:
    """``history.csv`` as (header, rows of text) with the columns of :data:`HISTORY_COLUMNS` it has, the loss's
    terms after the loss (ACoL, SPG); empty if none."""
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return [], []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), reader.fieldnames or []
    if not rows:
        return [], []
    keys, terms = [key for key in HISTORY_COLUMNS if key in fields], loss_term_columns(fields)
    at = keys.index("loss") + 1 if "loss" in keys else len(keys)
    columns = keys[:at] + terms + keys[at:]
    losses = {"loss", *terms}
    body = [[row[key] if key == "epoch" else (f"{float(row[key]):.3g}" if key in losses else f"{float(row[key]):.1f}")
             if row[key] else "" for key in columns] for row in rows]
    return [HISTORY_COLUMNS[key] if key in HISTORY_COLUMNS else loss_term_label(key) for key in columns], body


def card(row: int, prediction: dict[str, str], class_names: list[str]) -> dict:
    """One image of the grid: the ``predictions.csv`` values the filters read, as the file writes them."""
    label, predicted = int(prediction["label"]), int(prediction["top5_classes"].split()[0])
    top1_correct = prediction["top1_correct"] == "1"
    image = f"{PAGE_DIR}/{IMAGE_DIR}/{thumbnail_name(row, 'image')}"
    top1 = f"{PAGE_DIR}/{IMAGE_DIR}/{thumbnail_name(row, 'top1')}"
    return {
        "row": row, "image_id": prediction["image_id"], "label": label, "label_name": class_names[label],
        "predicted": predicted, "predicted_name": class_names[predicted], "top1_correct": int(top1_correct),
        "top1_iou": prediction["top1_iou"], "gt_class_iou": prediction["gt_class_iou"],
        "top1_loc": prediction["top1_loc"], "gt_known_loc": prediction["gt_known_loc"],
        "image": image, "top1": top1,
        "gt": top1 if top1_correct else f"{PAGE_DIR}/{IMAGE_DIR}/{thumbnail_name(row, 'gt')}",
    }


def evaluated_samples(config: RunConfig) -> list[Sample]:
    """The samples of the run's evaluated split, read from its dataset (what the thumbnails are drawn from)."""
    return load_dataset(config.dataset, Path(config.data_root), progress=False).splits[config.eval.split]


def _thumbnail_files(predictions: list[dict[str, str]], shown: np.ndarray) -> list[str]:
    """The thumbnail file names the grid's cards of the rows ``shown`` link to (:func:`card`)."""
    names = []
    for row in shown.tolist():
        names += [thumbnail_name(row, "image"), thumbnail_name(row, "top1")]
        if predictions[row]["top1_correct"] != "1":
            names.append(thumbnail_name(row, "gt"))
    return names


def write_thumbnails(config: RunConfig, predictions: list[dict[str, str]], shown: np.ndarray,
                     samples: list[Sample] | None) -> str:
    """Thumbnails of the rows ``shown`` into ``<run>/page/img/``; returns "" or why the grid cannot be shown.

    ``samples``: the evaluated split's samples (read from the dataset when None).
    The new thumbnails are drawn in a temporary folder that then replaces the
    old one, so a failure half-way leaves the old set. Without the dataset's
    images an existing complete set is kept and shown (``bench report`` on a
    machine without the data re-renders the page, not its images).
    """
    folder = config.run_dir / PAGE_DIR / IMAGE_DIR
    try:
        samples = samples if samples is not None else evaluated_samples(config)
    except (OSError, DatasetFormatError) as error:
        return _kept_or(folder, predictions, shown,
                        f"The image grid needs the dataset's images, which could not be read ({error}).")
    by_id = {sample.image_id: sample for sample in samples}
    missing = [predictions[row]["image_id"] for row in shown.tolist()
               if predictions[row]["image_id"] not in by_id or not by_id[predictions[row]["image_id"]].image_path.is_file()]
    if missing:
        return _kept_or(folder, predictions, shown,
                        f"The image grid needs the dataset's images; {len(missing)} evaluated image(s) are missing "
                        f"from the dataset at {config.data_root} (e.g. {missing[0]}).")
    building = folder.with_name(folder.name + TEMPORARY_SUFFIX)
    shutil.rmtree(building, ignore_errors=True)  # a build an earlier kill interrupted
    building.mkdir(parents=True)
    try:
        _draw_thumbnails(config, predictions, shown, by_id, building)
        if folder.exists():
            shutil.rmtree(folder)
        building.rename(folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return ""


def _kept_or(folder: Path, predictions: list[dict[str, str]], shown: np.ndarray, note: str) -> str:
    """"" when ``folder`` already holds every thumbnail the grid links to (they are kept), else ``note``."""
    if all((folder / name).is_file() for name in _thumbnail_files(predictions, shown)):
        return ""
    return note


def _draw_thumbnails(config: RunConfig, predictions: list[dict[str, str]], shown: np.ndarray,
                     by_id: dict[str, Sample], folder: Path) -> None:
    """Each row of ``shown``: its image and CAM thumbnails into ``folder``, from ``cams.npz`` and the boxes."""
    with np.load(config.run_dir / CAMS_FILE) as cams:
        index = {image_id: position for position, image_id in enumerate(cams["image_ids"].tolist())}
        top1, gt_class = cams["top1"], cams["gt_class"]
    for row in shown.tolist():
        prediction = predictions[row]
        position = index[prediction["image_id"]]
        boxes = {"gt_boxes": parse_boxes(prediction["gt_boxes"]), "top1_box": parse_boxes(prediction["top1_box"])[0],
                 "gt_class_box": parse_boxes(prediction["gt_class_box"])[0],
                 "top1_correct": prediction["top1_correct"] == "1"}
        write_image_thumbnails(folder, row, by_id[prediction["image_id"]], config.eval.frame,
                               config.model.input_size, config.eval.normalization, boxes,
                               {"top1": top1[position], "gt_class": gt_class[position]})


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_run_page(config: RunConfig, samples: list[Sample] | None = None,
                   log: Callable[[str], None] = print) -> Path:
    """``<run>/index.html`` and its ``page/`` folder from the finished run in ``config.run_dir``; returns its path."""
    run_dir = config.run_dir
    predictions = read_predictions(run_dir / PREDICTIONS_FILE)
    class_names = read_class_names(run_dir)
    shown = page_sample(len(predictions))
    note = write_thumbnails(config, predictions, shown, samples)
    if note:
        log(f"{run_dir / PAGE_FILE}: {note}")
    copy_assets(run_dir / PAGE_DIR)
    final = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    selected = _read_json(run_dir / SELECTED_DIR / METRICS_FILE)
    manifest = _read_json(run_dir / MANIFEST_FILE) or {}
    header, body = history_table(run_dir)
    figures = [(name, caption) for name, caption in
               ((HISTORY_FIGURE, "Learning curves: training loss; train accuracy, val top-1 cls error and val "
                                 "GT-known loc per epoch"),
                (CURVES_FIGURE, f"BoxAcc against tau on the {config.eval.split} split"))
               if (run_dir / name).is_file()]
    return write_page(
        run_dir / PAGE_FILE, "run.html", title=f"run {config.name}", config=config, manifest=manifest,
        metrics=metric_rows(final, selected), scale_rows=scale_rows(final, selected),
        final_epoch=final.get("epoch", config.train.epochs),
        selected_epoch=selected.get("epoch") if selected else None, num_images=len(predictions),
        config_text=(run_dir / CONFIG_FILE).read_text(encoding="utf-8"), history_header=header, history_rows=body,
        figures=figures,
        cards=[] if note else [card(row, predictions[row], class_names) for row in shown.tolist()],
        class_names=class_names, grid_note=note, sampled=len(shown) < len(predictions), cap=MAX_IMAGES,
        assets=PAGE_DIR,
    )


def scale_rows(final: dict, selected: dict | None) -> list[dict]:
    """The page's table by object scale from ``metrics.json``'s ``by_object_scale`` (numbers as text; [] if absent).

    Runs scored before object-scale bins existed have no such key: the page then has no table.
    """
    def text(row: dict | None, key: str, digits: int) -> str:
        return "-" if not row or key not in row else f"{row[key]:.{digits}f}"

    chosen = {row["bin"]: row for row in (selected or {}).get("by_object_scale", [])}
    return [{"bin": row["bin"], "images": row["num_images"], "gt_known": text(row, "gt_known_loc_acc", 1),
             "top1_loc_error": text(row, "top1_loc_error", 1), "mean_iou": text(row, "mean_iou", 3),
             "selected_gt_known": text(chosen.get(row["bin"]), "gt_known_loc_acc", 1)}
            for row in final.get("by_object_scale", [])]


def rewrite_run_page(config: RunConfig, log: Callable[[str], None] = print) -> Path:
    """:func:`write_run_page` for ``bench report <run config>``; a folder without a finished run is an error.

    Raises:
        MissingInputError: ``config.run_dir`` holds no complete run (its status is named).
    """
    status = run_status(config.run_dir)
    if status != COMPLETE:
        raise MissingInputError(f"{config.run_dir} holds no finished run (status: {status}); run it first "
                                f"(make benchmark CONFIG=...), then re-render its page")
    return write_run_page(config, log=log)
