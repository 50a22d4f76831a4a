"""End to end on the tiny config: every output file and its schema, determinism, no silent overwrite."""

import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from bench.cli import main
from bench.config import load_config
from bench.evaluate import PREDICTION_COLUMNS
from bench.metrics import METRIC_KEYS
from bench.pipeline import RunExistsError, run
from conftest import TINY_CONFIG

RUN_FILES = {"config.yaml", "manifest.json", "checkpoint.pt", "metrics.json", "predictions.csv", "cams.npz",
             "gallery.png"}


@pytest.fixture
def finished_run(tiny_config):
    config = tiny_config()
    metrics = run(config, log=lambda message: None)
    return config, metrics


def test_run_folder_holds_every_output_with_its_schema(finished_run):
    config, metrics = finished_run
    folder = config.run_dir
    assert {path.name for path in folder.iterdir()} == RUN_FILES

    assert load_config(folder / "config.yaml") == config  # the resolved config reproduces the run

    saved = json.loads((folder / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(saved) and saved["num_images"] == config.dataset.num_test
    assert saved["tau"] == 0.2 and saved["normalization"] == "max" and "fixed tau=0.2" in saved["protocol"]
    assert {key: saved[key] for key in METRIC_KEYS} == metrics
    for key in METRIC_KEYS[1:6]:
        assert 0.0 <= saved[key] <= 100.0
    assert 0.0 <= saved["mean_iou"] <= 1.0

    with (folder / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == PREDICTION_COLUMNS and len(rows) == config.dataset.num_test
    for row in rows:
        assert len(row["top5_classes"].split()) == 5 and len(row["top1_box"].split()) == 4
        assert row["top1_correct"] in {"0", "1"} and 0.0 <= float(row["top1_iou"]) <= 1.0
    # The table is recomputable from the rows.
    assert 100.0 * sum(r["top1_loc"] == "0" for r in rows) / len(rows) == pytest.approx(metrics["top1_loc_error"])
    assert np.mean([float(r["top1_iou"]) for r in rows]) == pytest.approx(metrics["mean_iou"], abs=1e-4)

    cams = np.load(folder / "cams.npz")
    h = config.model.input_size // config.model.feature_stride
    assert cams["top1"].shape == cams["gt_class"].shape == (config.dataset.num_test, h, h)
    assert cams["top1"].dtype == np.float16
    assert list(cams["image_ids"]) == [row["image_id"] for row in rows]

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 0
    assert manifest["versions"]["torch"] and manifest["device"] == "cpu"
    assert set(manifest["timings_s"]) == {"data", "model", "train", "evaluate", "report", "total"}
    assert [epoch["epoch"] for epoch in manifest["train_history"]] == [1, 2]

    with Image.open(folder / "gallery.png") as gallery:
        assert gallery.width > 300 and gallery.height > 200


def test_same_config_and_seed_give_identical_results(finished_run, tiny_config):
    config, metrics = finished_run
    again = tiny_config("name=again")
    assert run(again, log=lambda message: None) == metrics
    first = (config.run_dir / "predictions.csv").read_text()
    assert (again.run_dir / "predictions.csv").read_text() == first


def test_existing_run_is_never_overwritten_silently(finished_run, tiny_config, capsys):
    config, _ = finished_run
    before = (config.run_dir / "predictions.csv").stat().st_mtime_ns
    with pytest.raises(RunExistsError, match="already exists"):
        run(tiny_config(), log=lambda message: None)
    overrides = [f"{key}={value}" for key, value in
                 {"dataset.root": config.dataset.root, "results_dir": config.results_dir}.items()]
    assert main(["run", str(TINY_CONFIG), *overrides]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (config.run_dir / "predictions.csv").stat().st_mtime_ns == before
    assert main(["run", str(TINY_CONFIG), *overrides, "--overwrite"]) == 0
    assert (config.run_dir / "predictions.csv").stat().st_mtime_ns != before
    assert yaml.safe_load((config.run_dir / "config.yaml").read_text())["name"] == "tiny"
