"""A study's compared axis (study.compare_key / study.reference) and the center baseline row of its tables."""

import csv
import dataclasses
import math
import shutil

import numpy as np
import pytest
import yaml
from helpers import TINY_CONFIG, hand_made_run, read_rows

from bench.config import StudyConfig, load_config, load_study
from bench.study import center_row
from bench.study.center_row import (
    CENTER_LABEL,
    TABLE_NOTE,
    CenterBaseline,
    baseline_identity,
    baseline_label,
    baseline_runs,
    center_baselines,
    center_scale_rows,
    center_table_rows,
)
from bench.study.results import by_setting, ordered_values, setting_keys
from bench.study.statistics import comparison_markdown, comparisons
from bench.study.tables import FixedRow, latex_table, markdown_table, table_rows, with_fixed_rows, write_csv

# Hand-made per-image values (4 test images): "good" localizes 3 of 4 (GT-known 75 %), "bad" none.
GOOD = ([1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0.8, 0.6, 0.4, 0.2], [50, 75])
BAD = ([0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0], [0, 0])


def study_file(tmp_path, body):
    path = tmp_path / "axis.yaml"
    path.write_text(f"study:\n  base: {TINY_CONFIG}\n" + body)
    return path


# ----------------------------------------------------------------------------- study files


def test_the_axis_defaults_to_pooling_against_gap_and_takes_any_grid_key(tmp_path):
    study, _ = load_study(study_file(tmp_path, "  grid:\n    model.pooling: [gap, gmp, lse]\n"))
    assert (study.compare_key, study.reference, study.compare) == ("model.pooling", "gap", ("gmp", "lse"))
    study, runs = load_study(study_file(tmp_path, "  grid:\n    train.lr: [0.05, 0.02, 0.01]\n"
                                                  "    model.pooling: [gap, gmp]\n    seed: [0]\n"
                                                  "  compare_key: train.lr\n  reference: 0.02\n"))
    assert (study.compare_key, study.reference, study.compare) == ("train.lr", 0.02, (0.05, 0.01))
    assert setting_keys(study) == ["model.pooling"] and len(runs) == 6
    # Figures and pages: the reference first, then the grid's order (train.lr is no choice of the config).
    assert ordered_values(study, [0.01, 0.05, 0.02]) == [0.02, 0.05, 0.01]
    # Poolings keep the config's order (its Literal), the reference first.
    study, _ = load_study(study_file(tmp_path, "  grid:\n    model.pooling: [lse, gap, gmp]\n  reference: gmp\n"))
    assert (study.reference, study.compare) == ("gmp", ("lse", "gap"))
    assert ordered_values(study, ["lse", "gap", "gmp"]) == ["gmp", "gap", "lse"]


# ----------------------------------------------------------------------------- comparisons along the axis


def test_comparisons_name_the_reference_along_another_key():
    study = StudyConfig(name="lr", base="tiny.yaml", grid=(("train.lr", (0.05, 0.02)), ("seed", (0,))),
                        compare_key="train.lr", reference=0.02, compare=(0.05,), bootstrap=200)
    results = [hand_made_run("gap", 0, *GOOD, overrides=["train.lr=0.05"]),
               hand_made_run("gap", 0, *BAD, overrides=["train.lr=0.02"])]
    assert list(by_setting(study, results)[()]) == [0.05, 0.02]  # one setting: only the seed is left
    rows = comparisons(study, results)
    known = next(row for row in rows if row["metric"] == "gt_known_loc_acc")
    # 0.02 - 0.05 per image: -100, -100, -100, 0 -> mean -75; the interval stays below 0 (all four zeros:
    # one draw in 4**4 = 256, under the 2.5 % tail).
    assert (known["setting"], known["versus"], known["difference"]) == ("all runs", 0.05, -75.0)
    assert known["high"] < 0 and known["verdict"] == "0.02 localizes worse"
    text = comparison_markdown(study, rows)
    assert "Paired differences 0.02 - X" in text and "| setting | 0.02 - X | metric |" in text
    assert "- **all runs, 0.02 vs 0.05, GT-known loc (%): 0.02 localizes worse** (0.02 - 0.05 = -75.0 points" in text


def test_a_pooling_study_may_take_another_reference():
    study = StudyConfig(name="pool", base="tiny.yaml", grid=(("model.pooling", ("gap", "gmp")),),
                        reference="gmp", compare=("gap",), bootstrap=200)
    rows = comparisons(study, [hand_made_run("gap", 0, *GOOD), hand_made_run("gmp", 0, *BAD)])
    known = next(row for row in rows if row["metric"] == "gt_known_loc_acc")
    assert known["versus"] == "gap" and known["difference"] == -75.0 and known["verdict"] == "GMP localizes worse"
    assert "GMP vs GAP" in comparison_markdown(study, rows)


def test_max_box_accs_are_compared_only_where_both_runs_saved_box_hits():
    study = StudyConfig(name="pool", base="tiny.yaml", grid=(("model.pooling", ("gap", "gmp")),), bootstrap=200)
    hits = np.zeros((4, 4, 2), dtype=bool)
    hits[:, :, 0] = True  # every image right at tau 0 by every rule: 100 %
    with_hits = [dataclasses.replace(hand_made_run(p, 0, *GOOD), box_hits=hits if p == "gap" else ~hits)
                 for p in ("gap", "gmp")]  # GMP right at tau 1 instead: 100 % too
    rows = comparisons(study, with_hits, log=pytest.fail)
    v2 = next(row for row in rows if row["metric"] == "max_box_acc_v2")
    assert (v2["difference"], v2["low"], v2["high"], v2["verdict"]) == (0.0, 0.0, 0.0, "no significant difference")
    assert [row["metric"] for row in rows][-2:] == ["max_box_acc", "max_box_acc_v2"]
    messages = []
    rows = comparisons(study, [with_hits[0], hand_made_run("gmp", 0, *BAD)], log=messages.append)
    assert "max_box_acc_v2" not in {row["metric"] for row in rows} and len(rows) == 5  # the per-image metrics only
    assert messages == [f"study pool: MaxBoxAcc(V2) not compared for 1 run(s) scored before box_hits.npz existed "
                        f"({with_hits[1].config.name}); rerun them to compare it"]


# ----------------------------------------------------------------------------- the center baseline row


CENTER_CSV_ROW = {"top1_cls_error": 10.0, "top1_loc_error": 60.0, "top5_loc_error": 50.0, "gt_known_loc_acc": 40.0,
                  "mean_iou": 0.45, "max_box_acc": 50.0, "max_box_acc_v2": 45.0, "pxap": float("nan"),
                  "val_tau": 0.2, "top1_loc_error_val_tau": 55.0, "ms_per_image": 1.0, "overhead": 1.1}


def test_the_center_row_takes_the_model_free_cells_of_methods_csv_and_leaves_the_others_empty(tmp_path):
    study = StudyConfig(name="pool", base="tiny.yaml", grid=(("model.pooling", ("gap", "gmp")), ("seed", (0, 1))))
    config = load_config(TINY_CONFIG)
    fixed = center_table_rows(study, [CenterBaseline(settings=((),), run=config, row=CENTER_CSV_ROW)])
    # Only the columns the classifier does not decide; PxAP is NaN as methods.csv has it (no masks).
    assert fixed[0].label == CENTER_LABEL == "center baseline" and fixed[0].setting == {}
    assert {k: v for k, v in fixed[0].values.items() if k != "sweep.pxap.value"} == {
        "gt_known_loc_acc": 40.0, "mean_iou": 0.45, "sweep.max_box_acc.value": 50.0,
        "sweep.max_box_acc_v2.value": 45.0}
    results = [hand_made_run("gap", 0, *GOOD), hand_made_run("gap", 1, *GOOD), hand_made_run("gmp", 0, *BAD)]
    rows = with_fixed_rows(study, table_rows(study, results), fixed)
    assert len(rows) == 3 and list(rows[2]) == list(rows[0])  # the same columns, in the same order
    assert rows[2]["model.pooling"] == "center baseline" and rows[2]["seeds"] == "-"
    assert rows[2]["gt_known_loc_acc_mean"] == 40.0 and math.isnan(rows[2]["gt_known_loc_acc_std"])
    assert math.isnan(rows[2]["top1_cls_error_mean"]) and math.isnan(rows[2]["top1_loc_error_mean"])
    table = markdown_table(study, rows, "hand-made", note=TABLE_NOTE)
    # columns: cls err, top-1 loc err, top-5 loc err, GT-known, mean IoU, MaxBoxAcc
    assert "| center baseline | - | - | - | - | 40.0 | 0.450 | 50.0 |" in table.splitlines()
    assert "fixed centred Gaussian" in table and "no training" in table
    assert r"center baseline & - & - & - & - & 40.0 & 0.450 & 50.0 \\" in latex_table(study, rows, "hand-made")
    write_csv(tmp_path / "table.csv", rows)
    with (tmp_path / "table.csv").open() as handle:
        center = list(csv.DictReader(handle))[-1]
    assert (center["model.pooling"], center["seeds"], center["top1_loc_error_mean"], center["mean_iou_mean"]) == (
        "center baseline", "-", "", "0.45")  # NaN cells are empty


def test_without_a_compare_key_column_the_label_goes_in_the_seeds_column():
    study = StudyConfig(name="seeds", base="tiny.yaml", grid=(("seed", (0, 1)),))
    rows = with_fixed_rows(study, table_rows(study, [hand_made_run("gap", 0, *GOOD), hand_made_run("gap", 1, *GOOD)]),
                           [FixedRow(setting={}, label=CENTER_LABEL, values={"gt_known_loc_acc": 40.0})])
    assert rows[1]["seeds"] == "center baseline"
    assert "| center baseline | - | - | - | 40.0 | - | - |" in markdown_table(study, rows, "hand-made")


def test_each_setting_scores_its_baseline_on_the_references_lowest_seed():
    study = StudyConfig(name="s", base="tiny.yaml", grid=(("train.lr", (0.05, 0.02)), ("model.pooling", ("gap", "gmp")),
                                                          ("seed", (0, 1))), reference="gmp", compare=("gap",))
    configs = [load_config(TINY_CONFIG, [f"train.lr={lr}", f"model.pooling={pooling}", f"seed={seed}",
                                         f"name={lr}-{pooling}-{seed}"])
               for lr, pooling, seed in [(0.05, "gap", 0), (0.05, "gmp", 1), (0.05, "gmp", 0), (0.02, "gap", 1),
                                         (0.02, "gap", 0)]]
    # lr 0.05: GMP's seed 0; lr 0.02 has no GMP run: GAP's seed 0.
    assert {setting: config.name for setting, config in baseline_runs(study, configs).items()} == {
        (0.05,): "0.05-gmp-0", (0.02,): "0.02-gap-0"}


def test_settings_with_the_same_data_and_map_grid_share_one_center_row(monkeypatch):
    # An LSE sweep (r changes neither the data nor the map grid) with input size 32 / 64 (which does); the
    # scoring itself is stubbed: which run is scored, and how the rows are labelled, is under test.
    study = StudyConfig(name="sweep", base="tiny.yaml", grid=(("model.lse_r", (0.5, 2.0, 8.0)),
                                                              ("model.input_size", (32, 64)), ("seed", (0, 1))),
                        compare=())
    configs = [load_config(TINY_CONFIG, ["model.pooling=lse", f"model.lse_r={r}", f"model.input_size={size}",
                                         f"seed={seed}", f"name={r}-{size}-{seed}"])
               for size in (32, 64) for r in (0.5, 2.0, 8.0) for seed in (1, 0)]
    scored = []
    monkeypatch.setattr(center_row, "ensure_methods", lambda config, methods, log: scored.append(config.name))
    monkeypatch.setattr(center_row, "read_methods_table", lambda folder: {"center": CENTER_CSV_ROW})
    assert baseline_identity(configs[0]) == baseline_identity(configs[3])  # r 0.5 vs 2.0
    assert baseline_identity(configs[0]) != baseline_identity(configs[6])  # input size 32 vs 64
    assert baseline_identity(configs[0]) == baseline_identity(load_config(TINY_CONFIG, [
        "model.pooling=lse", "model.input_size=32", "eval.batch_size=3", "eval.gallery_size=0", "train.lr=1"]))
    assert baseline_identity(configs[0]) != baseline_identity(load_config(TINY_CONFIG, [
        "model.pooling=lse", "model.input_size=32", "eval.tau=0.5"]))
    baselines = center_baselines(study, configs)
    assert scored == ["0.5-32-0", "0.5-64-0"]  # once per input size, on the first setting's lowest seed
    assert [baseline.settings for baseline in baselines] == [((0.5, 32), (2.0, 32), (8.0, 32)),
                                                             ((0.5, 64), (2.0, 64), (8.0, 64))]
    assert [row.setting for row in center_table_rows(study, baselines)] == [
        {"model.lse_r": "all", "model.input_size": 32}, {"model.lse_r": "all", "model.input_size": 64}]
    assert baseline_label(study, baselines[0].settings) == "lse_r=all, input_size=32"
    # Runs of r = 8 unfinished: the row names the values it stands for.
    assert baseline_label(study, ((0.5, 32), (2.0, 32))) == "lse_r=0.5 / 2.0, input_size=32"
    assert baseline_label(study, ((8.0, 64),)) == "lse_r=8.0, input_size=64"
    results = [hand_made_run("lse", 0, *GOOD, overrides=[f"model.lse_r={r}", f"model.input_size={size}"])
               for size in (32, 64) for r in (0.5, 2.0, 8.0)]
    rows = with_fixed_rows(study, table_rows(study, results), center_table_rows(study, baselines))
    # Each input size's row after its own settings' rows, not both at the end.
    assert [(row["model.lse_r"], row["model.input_size"], row["seeds"]) for row in rows] == [
        (0.5, 32, 1), (2.0, 32, 1), (8.0, 32, 1), ("all", 32, "center baseline"),
        (0.5, 64, 1), (2.0, 64, 1), (8.0, 64, 1), ("all", 64, "center baseline")]
    assert "| all | 32 | center baseline | - | - | - | 40.0 |" in markdown_table(study, rows, "hand-made")


def test_baseline_rows_follow_the_settings_they_stand_for_in_order_else_the_tables_end():
    # Outer key data.object_scale, compare key pooling: each scale's center then few-shot row after its own rows.
    study = StudyConfig(name="scale", base="tiny.yaml", grid=(("data.object_scale", ("small", "cub")),
                                                              ("model.pooling", ("gap", "gmp")), ("seed", (0,))))
    rows = [{"data.object_scale": scale, "model.pooling": pooling, "seeds": 1, "gt_known_loc_acc_mean": 50.0}
            for scale in ("small", "cub") for pooling in ("gap", "gmp")]
    fixed = [FixedRow({"data.object_scale": scale}, f"{label} {scale}", {}) for label in ("center", "few-shot")
             for scale in ("small", "cub")]
    fixed += [FixedRow({"data.object_scale": "small / cub"}, "both", {}),  # covers every row: the last
              FixedRow({"data.object_scale": "imagenet"}, "none", {})]  # covers none: the end too
    laid_out = [row["model.pooling"] for row in with_fixed_rows(study, rows, fixed)]
    assert laid_out == ["gap", "gmp", "center small", "few-shot small", "gap", "gmp", "center cub", "few-shot cub",
                        "both", "none"]
    # An inner key's "all" where the outer key varies: its rows are not contiguous, so it goes to the end.
    inner = StudyConfig(name="i", base="tiny.yaml", grid=(("model.pooling", ("gap", "gmp")),
                                                          ("data.object_scale", ("small", "cub")), ("seed", (0,))))
    rows = [{"model.pooling": pooling, "data.object_scale": scale, "seeds": 1} for pooling in ("gap", "gmp")
            for scale in ("small", "cub")]
    laid_out = with_fixed_rows(inner, rows, [FixedRow({"data.object_scale": "small"}, "center small", {})])
    assert [row["model.pooling"] for row in laid_out] == ["gap", "gap", "gmp", "gmp", "center small"]


def test_a_baseline_that_cannot_be_scored_is_left_out_with_one_line(tiny_study, tmp_path):
    study, runs = tiny_study
    # A copy of a finished run whose dataset is gone (its config names a CSV file that does not exist).
    folder = tmp_path / "runs" / runs[0].name
    shutil.copytree(runs[0].run_dir, folder, ignore=shutil.ignore_patterns("methods"))
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    saved["dataset"].update(name="csv", path="gone.csv")
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    config = dataclasses.replace(runs[0], results_dir=str(tmp_path / "runs"))
    messages = []
    assert center_baselines(study, [config], messages.append) == []
    left_out = [m for m in messages if "left out" in m]
    assert len(left_out) == 1 and "\n" not in left_out[0]
    assert left_out[0].startswith(f"study {study.name}: center baseline row left out for all runs (scored on "
                                  f"{config.name}): ") and "gone.csv" in left_out[0]
    assert not (folder / "methods").exists() and not (folder / "methods.tmp").exists()


# ----------------------------------------------------------------------------- end to end on the tiny study


def test_every_study_table_ends_with_the_center_baseline_scored_on_the_references_seed(tiny_study):
    from bench.study.methods_table import read_methods_table
    from bench.study.runner import write_report

    study, runs = tiny_study
    gap, gmp = runs  # the reference (GAP) run scores it; GMP's run is left alone
    assert "center" in read_methods_table(gap.run_dir) and not (gmp.run_dir / "methods").exists()
    center = read_methods_table(gap.run_dir)["center"]
    for table in ("table.csv", "table_val_selected.csv"):  # the same row at both points: no epoch in it
        rows = read_rows(study.study_dir / table)
        # Then the few-shot baseline's row (tests/test_few_shot.py).
        assert [(row["model.pooling"], row["seeds"]) for row in rows] == [
            ("gap", "1"), ("gmp", "1"), ("center baseline", "-"), ("few-shot (val masks)", "-")]
        assert float(rows[-2]["gt_known_loc_acc_mean"]) == pytest.approx(center["gt_known_loc_acc"])
        assert float(rows[-2]["mean_iou_mean"]) == pytest.approx(center["mean_iou"])
        assert rows[-2]["top1_loc_error_mean"] == rows[-2]["top1_cls_error_mean"] == ""  # the classifier's
    markdown = (study.study_dir / "table.md").read_text()
    assert markdown.count("| center baseline | - |") == 2 and TABLE_NOTE in markdown
    by_scale = (study.study_dir / "by_object_scale.md").read_text()
    assert by_scale.count("| all runs | center baseline |") == 2 * 2  # GT-known and mean IoU, at both points
    # Binned, its GT-known loc is the overall one split by scale: the image-weighted mean gives it back.
    (baseline,) = center_baselines(study, runs, lambda message: None)
    bins = [row for row in center_scale_rows(study, [baseline]) if row["images"]]
    images = len(read_rows(gap.run_dir / "predictions.csv"))  # the tiny dataset's test split
    assert sum(row["images"] for row in bins) == images
    assert sum(row["images"] * row["gt_known_loc_acc"] for row in bins) / images == pytest.approx(
        center["gt_known_loc_acc"], abs=1e-4)  # methods.csv holds 4 decimals
    assert all(row["top1_loc_error"] is None for row in bins)
    # Written again, the report reuses the scored baselines: the center's and the cached few-shot one.
    before = read_rows(study.study_dir / "table.csv")[-2:]
    messages = []
    write_report(study, runs, log=messages.append)
    assert not any("map methods" in message or "training a foreground head" in message for message in messages)
    assert read_rows(study.study_dir / "table.csv")[-2:] == before


def test_a_study_along_another_key_reuses_runs_copied_under_its_names(tiny_study, tmp_path):
    from bench.html.study_page import write_study_page
    from bench.study.runner import run_state, write_report

    study, runs = tiny_study
    data_root = runs[0].data_root
    path = tmp_path / "lr_study.yaml"
    lr = runs[0].train.lr  # the tiny runs' own rate: the same experiments
    path.write_text(f"study:\n  base: {TINY_CONFIG}\n  grid:\n    model.pooling: [gap, gmp]\n    train.lr: [{lr}]\n"
                    f"    seed: [0]\n  set:\n    data_root: {data_root}\n    results_dir: {tmp_path / 'results'}\n"
                    f"  compare_key: train.lr\n  reference: {lr}\n  bootstrap: 200\n")
    lr_study, lr_runs = load_study(path)
    assert [config.name for config in lr_runs] == [f"pooling-gap_lr-{lr}_seed-0", f"pooling-gmp_lr-{lr}_seed-0"]
    for config, source in zip(lr_runs, runs):  # the same experiments under other names: copied, then reused
        shutil.copytree(source.run_dir, config.run_dir)
        assert run_state(config) == "complete"
    messages = []
    folder = write_report(lr_study, lr_runs, log=messages.append, study_page=write_study_page)
    assert not any("unfinished" in message for message in messages)
    with (folder / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # One setting per pooling; the pooling changes neither the data nor the map grid, so both share one center
    # baseline row (labelled in the compared key's column, "all" in the pooling's).
    assert [(row["model.pooling"], row["train.lr"]) for row in rows] == [
        ("gap", str(lr)), ("gmp", str(lr)), ("all", "center baseline"), ("all", "few-shot (val masks)")]
    assert (folder / "cams_by_lr.png").stat().st_size > 10_000 and not (folder / "cams_gap_vs_gmp.png").exists()
    by_scale = (folder / "by_object_scale.md").read_text()
    assert "| setting | lr |" in by_scale
    assert by_scale.count("| pooling=all | center baseline |") == 2 * 2  # GT-known and mean IoU, both points
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "cams_by_lr.png" in page and "under each lr" in page
    assert f"No comparison: the study has no {lr} run paired with another lr." in page  # one value: nothing to pair


def test_a_pooling_study_against_gmp_labels_every_report_file_with_it(tiny_study, tmp_path):
    from bench.study.runner import write_report

    study, runs = tiny_study
    against_gmp = dataclasses.replace(study, results_dir=str(tmp_path), reference="gmp", compare=("gap",))
    for config in runs:
        shutil.copytree(config.run_dir, against_gmp.study_dir / "runs" / config.name)
    moved = [dataclasses.replace(config, results_dir=str(against_gmp.study_dir / "runs")) for config in runs]
    folder = write_report(against_gmp, moved, log=lambda message: None)
    with (folder / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["versus"] for row in rows} == {"gap"}
    assert all(row["verdict"].startswith("GMP ") or row["verdict"] == "no significant difference" for row in rows)
    with (study.study_dir / "comparison.csv").open() as handle:  # GMP - GAP is minus GAP - GMP
        against_gap = {row["metric"]: float(row["difference"]) for row in csv.DictReader(handle)}
    assert {row["metric"]: float(row["difference"]) for row in rows} == pytest.approx(
        {metric: -value for metric, value in against_gap.items()})
    assert "GMP - X" in (folder / "comparison.md").read_text() and "GAP - X" not in (folder / "comparison.md").read_text()
    assert "| setting | GMP - X | bin |" in (folder / "by_object_scale.md").read_text()
    assert (folder / "cams_gap_vs_gmp.png").is_file()  # a pooling study keeps its figure's name
    assert np.isfinite([float(row["difference"]) for row in rows]).all()
