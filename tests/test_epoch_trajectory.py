"""GAP - GMP along training: per-epoch val outcomes, paired over images and seeds (bench.study.epoch_trajectory)."""

import csv

import numpy as np
import pytest
from helpers import REPO

from bench.config import load_study
from bench.study.epoch_trajectory import (
    BY_EPOCH_COLUMNS,
    draw_epoch_differences,
    epoch_differences,
    main,
    read_epoch_differences,
    read_val_by_epoch,
    study_series,
    write_epoch_differences,
)
from bench.study.results import RunResult

# (seed, pooling) -> epoch -> (top1_correct, top1_loc, gt_known_loc) of the val images a, b, c, d
OUTCOMES = {
    (0, "gap"): {1: ([1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]), 2: ([1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0])},
    (0, "gmp"): {1: ([1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]), 2: ([1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0])},
    (1, "gap"): {1: ([1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]), 2: ([1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1])},
    (1, "gmp"): {1: ([0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0]), 2: ([1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1])},
}


def _write_outcomes(run_dir, epochs):
    run_dir.mkdir(parents=True)
    with (run_dir / "val_by_epoch.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "image_id", "top1_correct", "top1_loc", "gt_known_loc"])
        for epoch, (correct, top1_loc, gt_known) in epochs.items():
            for image, values in zip("dcba", zip(correct[::-1], top1_loc[::-1], gt_known[::-1])):  # any row order
                writer.writerow([epoch, image, *values])


def _result(config):
    return RunResult(config=config, metrics={}, image_ids=[], per_image={}, gt_boxes=[],
                     gt_class_boxes=np.zeros((0, 4)), gt_class_iou=np.zeros(0), gt_class_cams=None,
                     box_acc_curve=(np.zeros(0), np.zeros(0)))


@pytest.fixture
def study_and_results(tmp_path):
    study_file = tmp_path / "study.yaml"
    study_file.write_text(f"study:\n  base: {REPO / 'configs' / 'tiny.yaml'}\n  grid:\n    model.pooling: [gap, gmp]\n"
                          f"    seed: [0, 1]\n  bootstrap: 500\n", encoding="utf-8")
    study, runs = load_study(study_file, overrides=[f"results_dir={tmp_path / 'results'}"])
    for config in runs:
        _write_outcomes(config.run_dir, OUTCOMES[(config.seed, config.model.pooling)])
    return study, [_result(config) for config in runs]


def test_val_outcomes_are_read_per_epoch_in_image_order(study_and_results):
    _, results = study_and_results
    epochs = read_val_by_epoch(results[0].config.run_dir)  # gap, seed 0
    assert sorted(epochs) == [1, 2]
    assert list(epochs[1]["image_ids"]) == ["a", "b", "c", "d"]
    assert epochs[1]["gt_known_loc"].tolist() == [1, 1, 0, 0] and epochs[2]["top1_correct"].tolist() == [1, 1, 1, 0]
    assert read_val_by_epoch(results[0].config.run_dir.parent / "missing") == {}


def test_gap_minus_gmp_at_every_epoch_is_paired_over_images_and_seeds(study_and_results):
    study, results = study_and_results
    rows = {(row["epoch"], row["metric"]): row for row in epoch_differences(study, results)}
    assert sorted(rows) == [(epoch, metric) for epoch in (1, 2)
                            for metric in ("gt_known_loc_acc", "top1_cls_error", "top1_loc_error")]
    # Epoch 1, GT-known: GAP hits 2 + 3 of 8 image-seeds (62.5 %), GMP 1 + 2 (37.5 %): +25 points.
    gt_known = rows[(1, "gt_known_loc_acc")]
    assert (gt_known["reference_mean"], gt_known["versus_mean"], gt_known["difference"]) == pytest.approx(
        (62.5, 37.5, 25.0))
    assert gt_known["low"] <= 25.0 <= gt_known["high"] and gt_known["high"] > gt_known["low"]
    assert (gt_known["seeds"], gt_known["images"], gt_known["reference"], gt_known["versus"]) == (2, 4, "GAP", "GMP")
    # Top-1 loc error: GAP misses 3 + 2 of 8 (62.5 %), GMP 4 + 3 (87.5 %): GAP - GMP = -25 (GAP better).
    assert rows[(1, "top1_loc_error")]["difference"] == pytest.approx(-25.0)
    # cls error: the mean of both poolings' errors, (37.5 + 62.5) / 2 = 50 % at epoch 1.
    assert rows[(1, "top1_cls_error")]["difference"] == pytest.approx(-25.0)
    assert [row["cls_error"] for key, row in rows.items() if key[0] == 1] == pytest.approx([50.0] * 3)
    # Epoch 2: the poolings agree on every image, so every resample gives 0.
    assert {(row["difference"], row["low"], row["high"]) for key, row in rows.items() if key[0] == 2} == {
        (0.0, 0.0, 0.0)}


def test_runs_without_per_epoch_outcomes_give_no_rows(study_and_results):
    study, results = study_and_results
    for result in results:
        if result.config.model.pooling == "gmp":
            (result.config.run_dir / "val_by_epoch.csv").unlink()
    assert epoch_differences(study, results) == []


def test_the_rows_round_trip_and_several_studies_draw_in_one_figure(study_and_results, tmp_path):
    study, results = study_and_results
    rows = epoch_differences(study, results)
    for name in ("easy", "hard"):
        (tmp_path / name).mkdir()
        write_epoch_differences(rows, tmp_path / name / "by_epoch.csv")
    back = read_epoch_differences(tmp_path / "easy" / "by_epoch.csv")
    assert list(back[0]) == list(BY_EPOCH_COLUMNS) and len(back) == len(rows) == 6
    assert back[0]["difference"] == pytest.approx(rows[0]["difference"], abs=1e-4)
    series = study_series(back, "easy: ")
    assert list(series) == ["easy: GAP - GMP, 2 seeds x 4 val images"]
    out = tmp_path / "figure" / "both.png"
    assert main([str(tmp_path / "easy"), f"{tmp_path / 'hard'}=cub48", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert draw_epoch_differences(series, tmp_path / "one.png", "t").is_file()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere"), "--out", str(out)])
