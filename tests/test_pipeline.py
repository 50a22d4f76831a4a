"""End to end on the tiny config: every output file and its schema, determinism, no silent overwrite.

The tests that only read a finished run share the session's ``tiny_run`` (conftest.py)."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from helpers import HISTORY_COLUMNS, RUN_FILES, SELECTED_FILES, TINY_CONFIG
from PIL import Image

from bench.commands.cli import main
from bench.config import load_config
from bench.data.torch_dataset import WsolDataset, collate
from bench.model.camnet import build_model
from bench.run.pipeline import RunExistsError, prepare_dataset, run, select_epoch
from bench.scoring.evaluation import validation_metrics
from bench.scoring.fixed_tau_metrics import METRIC_KEYS
from bench.scoring.image_rows import PREDICTION_COLUMNS
from bench.scoring.threshold_free_metrics import load_box_hits, max_box_acc_from_hits
from bench.training.checkpoint import load_training_state


def test_run_folder_holds_every_output_with_its_schema(tiny_run):
    config, metrics = tiny_run
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
    assert set(manifest["timings_s"]) <= {"data", "model", "train", "evaluate", "evaluate_selected", "report", "total"}
    assert {"data", "model", "train", "evaluate", "report", "total"} <= set(manifest["timings_s"])
    assert manifest["precision"] == "fp32" and manifest["precision_config"] == "auto"  # auto is fp32 on every CPU
    assert [epoch["epoch"] for epoch in manifest["train_history"]] == list(range(1, config.train.epochs + 1))

    with Image.open(folder / "gallery.png") as gallery:
        assert gallery.width > 300 and gallery.height > 200


def test_threshold_sweep_metrics_agree_with_the_fixed_tau_protocol(tiny_run):
    config, metrics = tiny_run
    folder = config.run_dir
    sweep = json.loads((folder / "metrics.json").read_text())["sweep"]
    assert sweep["thresholds"] == {"count": 100, "first": 0.0, "last": 0.99}
    assert sweep["max_box_acc"]["protocol"].startswith("oracle max over tau on test")
    assert sweep["pxap"]["num_images"] == config.dataset.num_test  # the embedded data has masks
    assert 0.0 <= sweep["pxap"]["value"] <= 100.0
    calibrated = sweep["calibrated"]
    assert calibrated["val_images"] == config.dataset.num_val
    assert calibrated["protocol"].startswith(f"tau from val = {calibrated['tau']:g} ")
    with (folder / "box_acc_curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 100 and float(rows[20]["tau"]) == 0.2
    # Same maps, same rule: the sweep at tau = 0.2 reproduces the fixed-tau numbers.
    assert float(rows[20]["box_acc_largest_0.5"]) == pytest.approx(metrics["gt_known_loc_acc"], abs=1e-4)
    assert float(rows[20]["top1_loc_error"]) == pytest.approx(metrics["top1_loc_error"], abs=1e-4)
    assert float(rows[20]["top5_loc_error"]) == pytest.approx(metrics["top5_loc_error"], abs=1e-4)
    assert sweep["max_box_acc"]["value"] >= metrics["gt_known_loc_acc"]  # an oracle is never below a fixed tau
    # The calibrated tau is the val-best one.
    val_curve = [float(row["val_box_acc_largest_0.5"]) for row in rows]
    assert calibrated["tau"] == pytest.approx(float(rows[int(np.argmax(val_curve))]["tau"]))
    # box_hits.npz: each test image's hits, in predictions.csv's order, giving back the oracle metrics exactly.
    box_hits = load_box_hits(folder / "box_hits.npz")
    with (folder / "predictions.csv").open() as handle:
        assert box_hits.image_ids == [row["image_id"] for row in csv.DictReader(handle)]
    assert box_hits.hits.shape == (config.dataset.num_test, 4, 100)
    assert max_box_acc_from_hits(box_hits.hits) == {"max_box_acc": sweep["max_box_acc"]["value"],
                                                    "max_box_acc_v2": sweep["max_box_acc_v2"]["value"]}
    # Its largest-component row at tau = 0.2 is the GT-known loc of predictions.csv, image by image.
    assert box_hits.hits[:, 0, 20].mean() * 100 == pytest.approx(metrics["gt_known_loc_acc"], abs=1e-9)


def test_same_config_and_seed_give_identical_results(tiny_run, tiny_config):
    config, metrics = tiny_run
    again = tiny_config("name=again")
    assert run(again, log=lambda message: None) == metrics
    first = (config.run_dir / "predictions.csv").read_text()
    assert (again.run_dir / "predictions.csv").read_text() == first


def test_existing_run_is_never_overwritten_silently(tiny_run, tiny_config, capsys):
    config = tiny_config()
    shutil.copytree(tiny_run.config.run_dir, config.run_dir)  # a finished run of this config, ours to overwrite
    before = (config.run_dir / "predictions.csv").stat().st_mtime_ns
    with pytest.raises(RunExistsError, match="already exists"):
        run(tiny_config(), log=lambda message: None)
    overrides = [f"{key}={value}" for key, value in
                 {"data_root": config.data_root, "results_dir": config.results_dir}.items()]
    assert main(["run", str(TINY_CONFIG), *overrides]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (config.run_dir / "predictions.csv").stat().st_mtime_ns == before
    assert main(["run", str(TINY_CONFIG), *overrides, "--overwrite"]) == 0
    assert (config.run_dir / "predictions.csv").stat().st_mtime_ns != before
    assert yaml.safe_load((config.run_dir / "config.yaml").read_text())["name"] == "tiny"


def write_csv_copy(synthetic_root, folder):
    """The tiny synthetic dataset re-described as a user's CSV, plus one unreadable train image."""
    from bench.data.wsol_layout import read_wsol

    dataset = read_wsol(synthetic_root)
    rows = ["image,label,split,x0,y0,x1,y1"]
    for split, samples in dataset.splits.items():
        for sample in samples:
            image = sample.image_path.relative_to(synthetic_root).as_posix()
            rows += [f"{image},{dataset.class_names[sample.label]},{split}," + ",".join(f"{v:g}" for v in box)
                     for box in sample.boxes]
    (synthetic_root / "broken.jpg").write_bytes(b"not an image")
    rows.append(f"broken.jpg,{dataset.class_names[0]},train,,,,")
    path = folder / "mine.csv"
    path.write_text("\n".join(rows) + "\n")
    return path, len(dataset.splits["test"])


def test_a_users_csv_dataset_runs_end_to_end_and_bad_images_stop_or_are_skipped(tiny_config, tiny_data_dir, tmp_path,
                                                                                   capsys):
    first_image = prepare_dataset(tiny_config()).splits["train"][0].image_path
    root = next(folder for folder in first_image.parents if (folder / "classes.txt").is_file())
    copy = tmp_path / "mydata"  # a copy, so the shared dataset stays intact
    shutil.copytree(root, copy)
    csv_path, num_test = write_csv_copy(copy, copy)
    overrides = [f"data_root={tmp_path}", "dataset.name=csv", "dataset.path=mydata/mine.csv",
                 f"results_dir={tmp_path / 'results'}"]
    assert main(["run", str(TINY_CONFIG), *overrides]) == 2
    error = capsys.readouterr().err
    assert "1 of" in error and str(copy / "broken.jpg") in error and "dataset.skip_bad" in error
    assert not (tmp_path / "results" / "tiny").exists()  # stopped before anything was written

    metrics = run(load_config(TINY_CONFIG, overrides + ["dataset.skip_bad=true"]), log=lambda message: None)
    assert metrics["num_images"] == num_test
    manifest = json.loads((tmp_path / "results" / "tiny" / "manifest.json").read_text())
    assert manifest["skipped_images"] == [{"image": str(copy / "broken.jpg"), "reason": manifest["skipped_images"][0]
                                           ["reason"], "split": "train"}]
    assert manifest["skipped_images"][0]["reason"].startswith("cannot be opened as an image")
    assert manifest["dataset"].startswith(f"CSV {copy / 'mine.csv'}")


def test_cams_are_stored_in_float16_unless_beyond_its_range():
    from bench.run.pipeline import compact_maps

    small = np.array([[[1.5, -2.0], [60000.0, 0.0]]], dtype=np.float32)
    assert compact_maps(small).dtype == np.float16 and compact_maps(small)[0, 1, 0] == 60000.0
    large = np.array([[[1.5, 70000.0]]], dtype=np.float32)  # float16 would turn it into inf
    assert compact_maps(large).dtype == np.float32 and compact_maps(large)[0, 0, 1] == 70000.0


def test_history_and_val_selected_epoch_are_written_and_consistent(tiny_run):
    config, metrics = tiny_run
    folder = config.run_dir
    with (folder / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == HISTORY_COLUMNS
    assert [int(row["epoch"]) for row in rows] == list(range(1, config.train.epochs + 1))
    manifest = json.loads((folder / "manifest.json").read_text())
    for row, logged in zip(rows, manifest["train_history"]):
        assert float(row["val_gt_known_loc_acc"]) == pytest.approx(logged["val_gt_known_loc_acc"], rel=1e-5)
        assert float(row["accuracy"]) == pytest.approx(logged["accuracy"], rel=1e-5)
    # val_by_epoch.csv: every val image once per epoch; its outcomes average to that epoch's history row.
    with (folder / "val_by_epoch.csv").open(newline="", encoding="utf-8") as handle:
        outcomes = list(csv.DictReader(handle))
    assert tuple(outcomes[0]) == ("epoch", "image_id", "top1_correct", "top1_loc", "gt_known_loc")
    assert len(outcomes) == config.train.epochs * config.dataset.num_val
    for row in rows:
        epoch = [outcome for outcome in outcomes if outcome["epoch"] == row["epoch"]]
        assert len({outcome["image_id"] for outcome in epoch}) == config.dataset.num_val
        gt_known = 100 * np.mean([int(outcome["gt_known_loc"]) for outcome in epoch])
        cls_error = 100 * np.mean([1 - int(outcome["top1_correct"]) for outcome in epoch])
        top1_loc_error = 100 * np.mean([1 - int(outcome["top1_loc"]) for outcome in epoch])
        assert (gt_known, cls_error, top1_loc_error) == pytest.approx(
            (float(row["val_gt_known_loc_acc"]), float(row["val_top1_cls_error"]), float(row["val_top1_loc_error"])),
            abs=1e-3)  # history.csv keeps 4 decimals
    selected = manifest["val_selected_epoch"]
    assert selected == select_epoch(manifest["train_history"])
    assert {path.name for path in (folder / "val_selected").iterdir()} == SELECTED_FILES
    chosen = json.loads((folder / "val_selected" / "metrics.json").read_text())
    assert chosen["epoch"] == selected
    assert json.loads((folder / "metrics.json").read_text())["epoch"] == config.train.epochs

    # best_epoch.pt holds the selected epoch's weights: scoring the val split with them gives its history row.
    best = load_training_state(folder / "best_epoch.pt")
    assert best["epoch"] == selected
    dataset = prepare_dataset(config)
    model = build_model(config.model, num_classes=len(dataset.class_names))
    model.load_state_dict(best["model"])
    val = dataset.splits["val"]
    loader = torch.utils.data.DataLoader(WsolDataset(val, config.model.input_size, model.mean, model.std, train=False),
                                         batch_size=config.eval.batch_size, collate_fn=collate)
    rescored = validation_metrics(model, loader, val, config.eval, torch.device("cpu"))
    row = manifest["train_history"][selected - 1]
    assert rescored["gt_known_loc_acc"] == pytest.approx(row["val_gt_known_loc_acc"])
    assert rescored["top1_cls_error"] == pytest.approx(row["val_top1_cls_error"])


def test_select_epoch_prefers_val_localization_then_classification_then_the_later_epoch():
    def row(epoch, loc, cls):
        return {"epoch": epoch, "val_gt_known_loc_acc": loc, "val_top1_cls_error": cls}

    assert select_epoch([row(1, 40.0, 50.0), row(2, 55.0, 30.0), row(3, 50.0, 10.0)]) == 2
    assert select_epoch([row(1, 55.0, 20.0), row(2, 55.0, 30.0)]) == 1  # tie on loc: lower cls error
    assert select_epoch([row(1, 55.0, 20.0), row(2, 55.0, 20.0)]) == 2  # full tie: the later epoch
    assert select_epoch([{"epoch": 1, "loss": 1.0}]) is None  # no validation


def test_train_validate_false_writes_no_history_val_metrics_nor_selection(tiny_config):
    config = tiny_config("train.validate=false", "train.epochs=1")
    run(config, log=lambda message: None)
    folder = config.run_dir
    assert not (folder / "val_selected").exists() and not (folder / "best_epoch.pt").exists()
    with (folder / "history.csv").open() as handle:
        assert next(csv.reader(handle)) == HISTORY_COLUMNS[:5]


def test_errors_after_the_complete_manifest_leave_the_run_complete(tiny_config):
    """A failing page writer and a failing final message are reported; the trained, scored run stays complete."""
    config = tiny_config("train.epochs=1", "train.validate=false", "eval.calibrate=false")
    seen = []

    def page(run_config, samples, log):
        status = json.loads((run_config.run_dir / "manifest.json").read_text())["status"]
        seen.append((status, len(samples)))
        raise OSError("thumbnail disk gone")

    def log(message: str) -> None:
        if message.startswith("results in"):
            raise BrokenPipeError("the terminal went away")
        seen.append(message)

    metrics = run(config, log=log, after_complete=page)
    manifest = json.loads((config.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and "error" not in manifest
    assert metrics == {key: json.loads((config.run_dir / "metrics.json").read_text())[key] for key in metrics}
    assert ("complete", config.dataset.num_test) in seen  # the page is written once the manifest says complete
    assert any("the run is complete, but writing its page failed (OSError: thumbnail disk gone)" in str(item)
               for item in seen)
    assert any("the run is complete, but its summary could not be printed (BrokenPipeError" in str(item)
               for item in seen)
