"""Studies: the grid, strict study files, reuse of finished runs, the paired bootstrap, tables and figures."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, TINY_CONFIG, hand_made_run

from bench.commands.cli import main
from bench.config import (
    SAME_EXPERIMENT_KEYS,
    ConfigError,
    config_differences,
    is_study_file,
    load_config,
    load_study,
    save_config,
)
from bench.run.pipeline import ResumeError, check_resumable
from bench.study.results import StudyError
from bench.study.runner import run_state, run_study
from bench.study.statistics import max_box_acc_on_draws, paired_bootstrap, paired_max_box_acc, verdict


def write_study(tmp_path, tiny_data_dir, text=None):
    text = text or f"""\
study:
  base: {TINY_CONFIG}
  grid:
    model.pooling: [gap, gmp]
    seed: [0, 1]
  set:
    data_root: {tiny_data_dir}
    results_dir: {tmp_path / 'results'}
  quick:
    grid:
      seed: [0]
  compare: [gmp]
  bootstrap: 200
"""
    path = tmp_path / "mystudy.yaml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- study files


def test_grid_gives_every_combination_named_by_its_values(tmp_path, tiny_data_dir):
    study, runs = load_study(write_study(tmp_path, tiny_data_dir))
    assert study.name == "mystudy" and study.study_dir == tmp_path / "results" / "mystudy"
    assert [run.name for run in runs] == ["pooling-gap_seed-0", "pooling-gap_seed-1", "pooling-gmp_seed-0",
                                          "pooling-gmp_seed-1"]
    assert [(run.model.pooling, run.seed) for run in runs] == [("gap", 0), ("gap", 1), ("gmp", 0), ("gmp", 1)]
    assert {run.run_dir.parent for run in runs} == {tmp_path / "results" / "mystudy" / "runs"}
    assert all(run.data_root == str(tiny_data_dir) and run.dataset.num_test == 24 for run in runs)
    quick, quick_runs = load_study(write_study(tmp_path, tiny_data_dir), quick=True)
    assert quick.name == "mystudy_quick" and [run.name for run in quick_runs] == ["pooling-gap_seed-0",
                                                                                  "pooling-gmp_seed-0"]


@pytest.mark.parametrize("body, fragment", [
    ("  base: tiny.yaml\n  grid: {model.pooling: [gap]}\n  bootstrapp: 10\n",
     "unknown key 'study.bootstrapp'. Allowed keys in study: base, grid, set, quick, compare_key, reference, "
     "compare, bootstrap, confidence, methods, search, few_shot. Did you mean 'bootstrap'?"),
    ("  base: tiny.yaml\n  grid: {model.pooling: [gap, gap]}\n", "expected a non-empty list of distinct values"),
    ("  base: tiny.yaml\n  grid: {model.poling: [gap]}\n", "unknown key 'model.poling'"),
    ("  base: tiny.yaml\n  grid: {model.pooling: [gap, avg]}\n", "study run pooling-avg: "),
    ("  base: tiny.yaml\n  grid: {model.pooling: [gap, gmp]}\n  compare: [lse]\n",
     "line 4: 'study.compare' is ['lse']; every entry must be a value of study.grid.model.pooling other than the "
     "reference gap, and gap must be in the grid (['gap', 'gmp'])"),
    # The compared axis: compare_key must be a grid key (not seed); reference is required off model.pooling and
    # must be a value of the key; compare is checked against it.
    ("  base: tiny.yaml\n  grid: {model.pooling: [gap, gmp], seed: [0]}\n  compare_key: train.lr\n  "
     "reference: 0.1\n", "line 4: 'study.compare_key' is 'train.lr'; expected a key of study.grid other than seed "
     "(the grid has: model.pooling)"),
    ("  base: tiny.yaml\n  grid: {model.pooling: [gap], seed: [0, 1]}\n  compare_key: seed\n  reference: 0\n",
     "line 4: 'study.compare_key' is 'seed'; expected a key of study.grid other than seed"),
    ("  base: tiny.yaml\n  grid: {train.lr: [0.1, 0.01]}\n  compare_key: train.lr\n",
     "line 4: 'study.reference' is required with 'study.compare_key' 'train.lr': name the value the others are "
     "compared with, one of [0.1, 0.01]"),
    ("  base: tiny.yaml\n  grid: {train.lr: [0.1, 0.01]}\n  compare_key: train.lr\n  reference: 0.5\n",
     "line 5: 'study.reference' is 0.5; expected one of study.grid.train.lr: [0.1, 0.01]"),
    ("  base: tiny.yaml\n  grid: {model.pooling: [gap, gmp]}\n  reference: lse\n",
     "line 4: 'study.reference' is 'lse'; expected one of study.grid.model.pooling: ['gap', 'gmp']"),
    ("  base: tiny.yaml\n  grid: {train.lr: [0.1, 0.01]}\n  compare_key: train.lr\n  reference: 0.1\n"
     "  compare: [0.1]\n", "line 6: 'study.compare' is [0.1]; every entry must be a value of study.grid.train.lr "
     "other than the reference 0.1"),
    ("  base: tiny.yaml\n  grid: {model.lse_r: [1.0, 2.0]}\n  compare: [gmp]\n",
     "line 4: 'study.compare' is ['gmp'], but model.pooling is not a key of study.grid"),
    ("  grid: {seed: [0]}\n", "'study.base' must name the run config"),
])
def test_bad_study_files_name_the_key_and_what_is_expected(tmp_path, body, fragment):
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG.read_text())
    path = tmp_path / "bad.yaml"
    path.write_text("study:\n" + body)
    with pytest.raises(ConfigError) as error:
        load_study(path)
    assert fragment in str(error.value) and str(path.parent) in str(error.value)


def test_a_study_whose_base_is_missing_names_the_study_file_the_key_and_the_resolved_path(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG.read_text())
    path = tmp_path / "typo.yaml"
    path.write_text("study:\n  grid: {seed: [0]}\n  base: tinyy.yaml\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"config error: {path}, line 3: 'study.base' is 'tinyy.yaml', which resolves to "
                   f"{tmp_path / 'tinyy.yaml'} (relative to the study file's folder {tmp_path}), and there is no "
                   f"such file; expected the run config every run starts from. Did you mean 'tiny.yaml'?\n")
    path.write_text("study:\n  base: ../nowhere/base.yaml\n  grid: {seed: [0]}\n")
    with pytest.raises(ConfigError, match=r"line 2: 'study.base' is '../nowhere/base.yaml', .* Files there: "
                                          r"tiny.yaml\.$"):
        load_study(path)
    assert not (tmp_path / "results").exists()


def test_shipped_study_files_load():
    counts = {"paper.yaml": 6, "paper_birds12.yaml": 6, "paper_full.yaml": 18, "lse_sweep.yaml": 5,
              "resolution.yaml": 12, "pooling_family.yaml": 5, "object_scale.yaml": 12, "wsol_methods.yaml": 12,
              "tiny_ray.yaml": 4, "tiny_search.yaml": 4, "pooling_search.yaml": 10, "wsol_search.yaml": 30}
    # Every study file shipped in configs/ is listed here, so each one is loaded.
    assert sorted(p.name for p in (REPO / "configs").glob("*.yaml") if is_study_file(p)) == sorted(counts)
    for name, count in counts.items():
        study, runs = load_study(REPO / "configs" / name)
        assert len(runs) == count and len({run.name for run in runs}) == count
    _, quick = load_study(REPO / "configs" / "paper.yaml", quick=True)
    assert [(run.model.pooling, run.seed, run.train.epochs) for run in quick] == [("gap", 0, 4), ("gmp", 0, 4)]
    # The default study is on the default data, 3 seeds; the studies whose numbers docs/results.md reports on the
    # 12 hue classes of earlier releases stay on them.
    _, paper = load_study(REPO / "configs" / "paper.yaml")
    assert {(run.dataset.classes, run.train.epochs) for run in paper} == {("cub48", 16)}
    assert sorted({run.seed for run in paper}) == [0, 1, 2]
    for name in ("pooling_search.yaml", "wsol_search.yaml"):  # the searches run on the default data too
        _, trials = load_study(REPO / "configs" / name)
        assert {(run.dataset.classes, run.train.epochs, run.eval.split) for run in trials} == {("cub48", 16, "val")}
    for name in counts.keys() - {"paper.yaml", "pooling_search.yaml", "wsol_search.yaml"}:
        _, runs = load_study(REPO / "configs" / name)
        assert {run.dataset.classes for run in runs} == {"birds12"}, name
    study, runs = load_study(REPO / "configs" / "pooling_family.yaml")
    assert study.compare == ("gmp", "lse", "topk", "mixed")
    assert {(r.model.topk_fraction, r.model.topk_alpha, r.model.mix_alpha, r.model.lse_r) for r in runs} == {
        (0.2, 0.7, 0.5, 5.0)}


def test_a_study_and_resume_agree_on_which_keys_a_run_may_change(tmp_path):
    # The folder of `config` holds a run saved with another config; only SAME_EXPERIMENT_KEYS may differ.
    config = load_config(TINY_CONFIG, [f"results_dir={tmp_path / 'results'}", "data_root=data/here"])
    moved = load_config(TINY_CONFIG, [f"results_dir={tmp_path / 'elsewhere'}", "data_root=data/there", "threads=3",
                                      "train.num_workers=1"])
    other = load_config(TINY_CONFIG, [f"results_dir={tmp_path / 'results'}", "data_root=data/here", "train.epochs=7"])
    assert SAME_EXPERIMENT_KEYS == ("threads", "train.num_workers", "data_root", "results_dir")

    def saved(old, status):
        config.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(old, config.run_dir / "config.yaml")
        (config.run_dir / "manifest.json").write_text(json.dumps({"status": status}))

    saved(moved, "complete")
    assert run_state(config) == "complete"  # moved data and results, other threads: reused, not retrained
    saved(other, "complete")
    assert run_state(config) == "different"
    saved(moved, "interrupted")
    assert run_state(config) == "interrupted" and check_resumable(config) is None  # no checkpoint yet
    saved(other, "interrupted")
    assert run_state(config) == "partial"
    with pytest.raises(ResumeError, match=f"train.epochs: 7 -> {config.train.epochs}"):
        check_resumable(config)
    # A live process holds the run: --resume names it.
    (config.run_dir / "manifest.json").write_text(json.dumps({"status": "running", "pid": os.getpid(),
                                                              "host": socket.gethostname()}))
    with pytest.raises(ResumeError, match=f"still running \\(process {os.getpid()} on this host\\)"):
        check_resumable(config)


def test_a_finished_run_copied_under_another_name_is_reused_an_unfinished_one_is_not(tmp_path):
    # A run folder copied from another study into this one's runs/<this run's name>: its saved config differs in
    # name (and results_dir) only. Finished, it is the same experiment; unfinished, --resume would refuse it.
    config = load_config(TINY_CONFIG, [f"results_dir={tmp_path / 'results'}", "name=pooling-gap_seed-0"])
    elsewhere = load_config(TINY_CONFIG, [f"results_dir={tmp_path / 'other' / 'runs'}", "name=gap-0"])
    config.run_dir.mkdir(parents=True)
    save_config(elsewhere, config.run_dir / "config.yaml")
    (config.run_dir / "manifest.json").write_text(json.dumps({"status": "complete"}))
    assert run_state(config) == "complete"
    (config.run_dir / "manifest.json").write_text(json.dumps({"status": "interrupted"}))
    assert run_state(config) == "partial"  # run again from scratch rather than resumed under another name
    renamed_and_changed = load_config(TINY_CONFIG, ["name=gap-0", "train.epochs=7"])
    save_config(renamed_and_changed, config.run_dir / "config.yaml")
    (config.run_dir / "manifest.json").write_text(json.dumps({"status": "complete"}))
    assert run_state(config) == "different"


# ----------------------------------------------------------------------------- statistics


def test_paired_bootstrap_on_hand_computed_cases():
    # A constant difference has a degenerate interval at that constant.
    a = np.array([[3.0, 5.0, 7.0], [1.0, 1.0, 1.0]])
    assert paired_bootstrap(a, a - 2.0, resamples=500, confidence=0.95) == (2.0, 2.0, 2.0)
    # One seed, differences [0, 2]: the resampled mean is 0, 1 or 2 with probability 1/4, 1/2, 1/4,
    # so the 95% interval is [0, 2] and about half of the resamples give 1.
    mean, low, high = paired_bootstrap(np.array([[0.0, 2.0]]), np.zeros((1, 2)), resamples=4000, confidence=0.95)
    assert (mean, low, high) == (1.0, 0.0, 2.0)
    # Pairing: a and b share a large per-image effect, so the interval is tight around the true +1.
    rng = np.random.default_rng(1)
    shared = rng.normal(0, 10, size=(3, 400))
    mean, low, high = paired_bootstrap(shared + 1.0 + rng.normal(0, 0.1, (3, 400)), shared, 1000, 0.95)
    assert 0.95 < low < mean < high < 1.05
    with pytest.raises(ValueError, match=r"\(seeds, images\)"):
        paired_bootstrap(np.zeros(3), np.zeros(3), 100, 0.95)


def _hits(rows: list[list[list[int]]]) -> np.ndarray:
    return np.array(rows, dtype=bool)  # (N, 4, T): largest_0.5, all_0.3, all_0.5, all_0.7


# Two images, two taus. Run A: image 0 right at tau 0 by every rule, image 1 right at tau 1 by all but all_0.7.
A_HITS = _hits([[[1, 0], [1, 0], [1, 0], [1, 0]], [[0, 1], [0, 1], [0, 1], [0, 0]]])
# Run B: image 0 right at tau 1 by the largest component only; image 1 never right.
B_HITS = _hits([[[0, 1], [0, 0], [0, 0], [0, 0]], [[0, 0]] * 4])


def test_max_box_accs_of_a_draw_take_the_best_tau_on_the_draw_itself():
    counts = np.array([[1, 1], [2, 0], [0, 2]])  # the split itself, image 0 twice, image 1 twice
    scores = max_box_acc_on_draws(A_HITS, counts)
    # Split: MaxBoxAcc = max(50, 50) = 50; V2 = mean of max over tau per delta = (50 + 50 + 50) / 3 = 50.
    # Image 0 twice: 100 at tau 0 everywhere: 100, 100. Image 1 twice: 100 at tau 1 but all_0.7 (0): 100, 200 / 3.
    np.testing.assert_allclose(scores, [[50, 50], [100, 100], [100, 200 / 3]], rtol=1e-12)
    # Three images, one drawn twice: BoxAcc is over the draw's N images, each maximum over tau on the draw.
    three = np.concatenate([A_HITS, A_HITS[:1]])  # images 0, 1, and a copy of 0
    np.testing.assert_allclose(max_box_acc_on_draws(three, np.array([[0, 2, 1]])), [[200 / 3, 500 / 9]])


def test_paired_max_box_acc_differences_and_intervals_on_hand_computed_cases():
    # A - B on the split: MaxBoxAcc 50 - 50 = 0; V2 50 - 0 = 50 (B's V2 rows never hit).
    result = paired_max_box_acc([A_HITS], [B_HITS], resamples=400, confidence=0.95)
    assert result["max_box_acc"][0] == 0.0 and result["max_box_acc_v2"][0] == 50.0
    # V2 on any draw of the two images: A's is 100 (image 0 only), 50 or 200 / 3 (image 1 only); B's is 0:
    # so every resampled difference lies in [50, 100] and both ends are drawn (probability 1/4 each).
    low, high = result["max_box_acc_v2"][1:]
    assert (low, high) == (pytest.approx(50.0), pytest.approx(100.0))
    # A run against itself: no difference on any draw; over two seeds, the mean of the seeds' differences.
    assert paired_max_box_acc([A_HITS, A_HITS], [A_HITS, A_HITS], 100, 0.95)["max_box_acc_v2"] == (0.0, 0.0, 0.0)
    two = paired_max_box_acc([A_HITS, A_HITS], [B_HITS, A_HITS], 100, 0.95)
    assert two["max_box_acc_v2"][0] == 25.0  # (50 + 0) / 2
    with pytest.raises(ValueError, match="same number"):
        paired_max_box_acc([A_HITS], [B_HITS[:1]], 100, 0.95)


def test_verdict_reads_the_interval_with_the_metric_direction():
    assert verdict(1.0, 5.0, "gt_known_loc_acc", "GAP") == "GAP localizes better"
    assert verdict(-5.0, -1.0, "gt_known_loc_acc", "GAP") == "GAP localizes worse"
    assert verdict(-1.0, 5.0, "gt_known_loc_acc", "GAP") == "no significant difference"
    assert verdict(-5.0, -1.0, "top1_loc_error", "GAP") == "GAP localizes better"  # lower error is better
    # Classification error is not localization: GAP with fewer classification errors classifies better.
    assert verdict(-5.0, -1.0, "top1_cls_error", "GAP") == "GAP classifies better"
    assert verdict(1.0, 5.0, "top1_cls_error", "GAP") == "GAP classifies worse"
    # The sentence names the study's reference: CAM - X in a study of WSOL methods.
    assert verdict(1.0, 5.0, "gt_known_loc_acc", "CAM") == "CAM localizes better"
    assert verdict(1.0, 5.0, "top1_loc_error", "CAM") == "CAM localizes worse"


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_study_runs_reports_and_reuses_finished_runs(tmp_path, tiny_data_dir, capsys):
    path = write_study(tmp_path, tiny_data_dir)
    study, runs = load_study(path)
    folder = run_study(study, runs, log=lambda message: None)
    assert {p.name for p in folder.iterdir()} >= {"runs", "table.md", "table.tex", "table.csv", "comparison.md",
                                                 "comparison.csv", "cams_gap_vs_gmp.png", "iou_hist.png",
                                                 "boxacc_vs_tau.png", "cam_area.png"}
    assert not list(folder.glob("*.tmp*"))
    for figure in ("cams_gap_vs_gmp.png", "iou_hist.png", "boxacc_vs_tau.png", "cam_area.png"):
        assert (folder / figure).stat().st_size > 10_000  # a drawn figure, not an empty file

    with (folder / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # Every table ends with the center and few-shot baselines' rows (tests/test_study_axis.py, test_few_shot.py).
    few_shot, center = rows.pop(), rows.pop()
    assert [(row["model.pooling"], row["seeds"]) for row in (center, few_shot)] == [
        ("center baseline", "-"), ("few-shot (val masks)", "-")]
    assert [row["model.pooling"] for row in rows] == ["gap", "gmp"] and {row["seeds"] for row in rows} == {"2"}
    for row, pooling in zip(rows, ("gap", "gmp")):
        values = [json.loads((run.run_dir / "metrics.json").read_text())["top1_loc_error"]
                  for run in runs if run.model.pooling == pooling]
        assert float(row["top1_loc_error_mean"]) == pytest.approx(np.mean(values))
        assert float(row["top1_loc_error_std"]) == pytest.approx(np.std(values, ddof=1))
    table = (folder / "table.md").read_text()
    assert "GoogLeNet-GAP | 35.0 | 56.40 | 43.00" in table and "another dataset" in table
    tex = (folder / "table.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex

    with (folder / "comparison.csv").open() as handle:
        differences = list(csv.DictReader(handle))
    known = next(d for d in differences if d["metric"] == "gt_known_loc_acc")
    gap_mean = np.mean([float(r["gt_known_loc_acc_mean"]) for r in rows if r["model.pooling"] == "gap"])
    gmp_mean = np.mean([float(r["gt_known_loc_acc_mean"]) for r in rows if r["model.pooling"] == "gmp"])
    assert float(known["difference"]) == pytest.approx(gap_mean - gmp_mean)
    assert float(known["low"]) <= float(known["difference"]) <= float(known["high"])
    assert known["verdict"] == verdict(float(known["low"]), float(known["high"]), "gt_known_loc_acc", "GAP")
    assert f"GAP vs GMP, GT-known loc (%): {known['verdict']}" in (folder / "comparison.md").read_text()
    top1 = next(d for d in differences if d["metric"] == "top1_loc_error")
    assert f"GAP vs GMP, top-1 loc err (%): {top1['verdict']}" in (folder / "comparison.md").read_text()
    # MaxBoxAccV2, paired on the runs' box hits: the observed difference is the table's, its verdict a headline.
    v2 = next(d for d in differences if d["metric"] == "max_box_acc_v2")
    v2_mean = {pooling: np.mean([float(r["sweep.max_box_acc_v2.value_mean"]) for r in rows
                                 if r["model.pooling"] == pooling]) for pooling in ("gap", "gmp")}
    assert float(v2["difference"]) == pytest.approx(v2_mean["gap"] - v2_mean["gmp"], abs=1e-9)
    assert float(v2["low"]) <= float(v2["difference"]) <= float(v2["high"])
    assert f"GAP vs GMP, MaxBoxAccV2 (%, oracle tau): {v2['verdict']}" in (folder / "comparison.md").read_text()
    assert any(d["metric"] == "max_box_acc" for d in differences)
    # The val-selected epoch gets its own table and comparison; the table says which epoch and train accuracy.
    assert {"table_val_selected.csv", "table_val_selected.tex", "comparison_val_selected.csv",
            "learning_curves.png"} <= {p.name for p in folder.iterdir()}
    with (folder / "table_val_selected.csv").open() as handle:
        selected_rows = list(csv.DictReader(handle))
    for row, pooling in zip(selected_rows, ("gap", "gmp")):
        chosen = [json.loads((run.run_dir / "val_selected" / "metrics.json").read_text()) for run in runs
                  if run.model.pooling == pooling]
        assert float(row["epoch_mean"]) == pytest.approx(np.mean([c["epoch"] for c in chosen]))
        assert float(row["gt_known_loc_acc_mean"]) == pytest.approx(np.mean([c["gt_known_loc_acc"] for c in chosen]))
    for row, pooling in zip(rows, ("gap", "gmp")):
        final_accuracy = [json.loads((run.run_dir / "manifest.json").read_text())["train_history"][-1]["accuracy"]
                          for run in runs if run.model.pooling == pooling]
        assert float(row["train_accuracy_mean"]) == pytest.approx(np.mean(final_accuracy), rel=1e-5)
    assert "| pooling | seeds | train acc (%) | top-1 cls err (%) |" in table and "## Final epoch" in table
    assert "| pooling | seeds | train acc (%) | epoch | top-1 cls err (%) |" in table

    # A second call reuses every finished run (nothing retrained) and re-renders the report.
    stamps = {run.name: (run.run_dir / "predictions.csv").stat().st_mtime_ns for run in runs}
    assert main(["run", str(path), "threads=1"]) == 0  # speed-only keys do not make a run "different"
    assert "4 runs (4 finished and reused)" in capsys.readouterr().out
    assert stamps == {run.name: (run.run_dir / "predictions.csv").stat().st_mtime_ns for run in runs}

    # A run whose process is alive stops the study; one whose process is gone (killed) is continued from its
    # checkpoint (bench.run.folder decides); a finished run of another config is refused.
    manifest_path = runs[1].run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "status": "running", "pid": os.getpid()}))
    assert run_state(runs[1]) == "running"
    with pytest.raises(StudyError, match=f"being run by another process.*{runs[1].name}: process {os.getpid()} "
                                         f"on this host"):
        run_study(study, runs, log=lambda message: None)
    # On another host the process cannot be checked: the message says how to release the run.
    manifest_path.write_text(json.dumps({**manifest, "status": "running", "pid": 7, "host": "node-b.example"}))
    with pytest.raises(StudyError, match='process 7 on host node-b.example.*set "status" to "interrupted"'):
        run_study(study, runs, log=lambda message: None)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    manifest_path.write_text(json.dumps({**manifest, "status": "running", "pid": gone.pid}))
    assert run_state(runs[1]) == "interrupted"
    messages = []
    run_study(study, runs, log=messages.append)
    assert run_state(runs[1]) == "complete"
    assert any("continuing from its last checkpoint" in message for message in messages)
    assert len(json.loads(manifest_path.read_text())["resumed"]) == 1
    (runs[1].run_dir / "config.yaml").write_text("model: [not a config\n")
    manifest_path.write_text(json.dumps({**manifest, "status": "failed"}))
    assert run_state(runs[1]) == "partial"  # unreadable config: run again from scratch
    _, other_runs = load_study(path, overrides=["train.epochs=1"])
    with pytest.raises(StudyError, match="hold another config"):
        run_study(study, other_runs, log=lambda message: None)


def test_a_study_scored_in_the_original_frame_says_at_load_that_it_gets_no_figures(tmp_path, tiny_data_dir, capsys):
    from bench.study.runner import RunsFailedError, frame_note

    base = tmp_path / "original.yaml"
    base.write_text(TINY_CONFIG.read_text() + "  frame: original\n")  # the last section of tiny.yaml is eval
    path = write_study(tmp_path, tiny_data_dir, write_study(tmp_path, tiny_data_dir).read_text().replace(
        str(TINY_CONFIG), str(base)))
    study, runs = load_study(path)
    assert {run.eval.frame for run in runs} == {"original"}
    warning = (f"study mystudy: warning: every run is scored in the original frame (eval.frame: original, from "
               f"{base}): the report will have no figures and no table by object scale (both need the input "
               f"frame); set eval.frame: input in study.set to get them")
    assert frame_note(study, runs) == warning
    # Said when the study is loaded: by show-config, --check, and run_study before any run starts.
    assert main(["show-config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == warning
    assert main(["run", str(path), "--check"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == warning
    messages = []
    with pytest.raises(RunsFailedError):  # an executor that runs nothing: only what run_study says first counts
        run_study(study, runs, log=messages.append,
                  executor=lambda study, pending, log: {item.config.name: "not run" for item in pending})
    assert messages[0] == warning
    # Half the runs in the original frame, by the study's grid; none: no line.
    path.write_text(path.read_text().replace(str(base), str(TINY_CONFIG)).replace(
        "    seed: [0, 1]\n", "    eval.frame: [input, original]\n"))
    assert frame_note(*load_study(path)) == (
        "study mystudy: warning: 2 of its 4 runs are scored in the original frame (eval.frame: original, from "
        "study.grid): the report will have no figures and no table by object scale (both need the input frame); "
        "set eval.frame: input in study.set to get them")
    assert frame_note(*load_study(write_study(tmp_path, tiny_data_dir))) == ""


def test_report_without_finished_runs_says_so(tmp_path, tiny_data_dir, capsys):
    path = write_study(tmp_path, tiny_data_dir)
    assert main(["report", str(path)]) == 2
    assert "none of its 4 runs has finished" in capsys.readouterr().err
    # A run config: its page is re-rendered, which needs a finished run.
    assert main(["report", str(TINY_CONFIG), f"results_dir={tmp_path / 'results'}"]) == 2
    assert "holds no finished run (status: unknown)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tables from hand-made runs


def test_table_cells_are_recomputed_from_per_image_rows_with_exact_strings(tmp_path, tiny_data_dir):
    from bench.study.tables import markdown_table, table_rows

    study, _ = load_study(write_study(tmp_path, tiny_data_dir))
    results = [
        # GAP seed 0: 3 of 4 classified, 2 of 4 top-1 localized, GT-known 3 of 4, IoUs mean 0.5; MaxBoxAcc 75.
        hand_made_run("gap", 0, [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0.8, 0.6, 0.4, 0.2], [50, 75]),
        # GAP seed 1: 4 of 4 classified, 3 of 4 localized, GT-known 4 of 4, IoUs mean 0.6; MaxBoxAcc 100.
        hand_made_run("gap", 1, [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0.9, 0.7, 0.5, 0.3],
                      [100, 25]),
        hand_made_run("gmp", 0, [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0], [0, 0]),
    ]
    rows = table_rows(study, results)
    assert [(row["model.pooling"], row["seeds"]) for row in rows] == [("gap", 2), ("gmp", 1)]
    # top-1 cls error: 25 and 0 -> mean 12.5, std (ddof 1) = 25 / sqrt(2) = 17.68
    assert rows[0]["top1_cls_error_mean"] == 12.5 and rows[0]["top1_cls_error_std"] == pytest.approx(17.6777, abs=1e-4)
    table = markdown_table(study, rows, "hand-made")
    gap_line = next(line for line in table.splitlines() if line.startswith("| gap |"))
    # columns: cls err, top-1 loc err (50, 25), top-5 loc err (25, 0), GT-known (75, 100), mean IoU (0.5, 0.6),
    # MaxBoxAcc (max of each curve: 75, 100)
    assert gap_line == ("| gap | 2 | 12.5 ± 17.7 | 37.5 ± 17.7 | 12.5 ± 17.7 | 87.5 ± 17.7 | 0.550 ± 0.071 | "
                        "87.5 ± 17.7 |")
    assert "| gmp | 1 | 100.0 | 100.0 | 100.0 | 0.0 | 0.000 | 0.0 |" in table  # one seed: no ± to show
    # A column that some run lacks (no PxAP in metrics.json) is left out rather than shown half-empty.
    assert "PxAP" not in table and "MaxBoxAcc (%, oracle tau)" in table


def test_a_column_some_run_lacks_is_left_out_of_every_table_file(tmp_path, tiny_data_dir):
    from dataclasses import replace

    from bench.study.tables import latex_table, run_frame, table_rows, write_csv

    study, _ = load_study(write_study(tmp_path, tiny_data_dir))
    gap = hand_made_run("gap", 0, [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0.8, 0.6, 0.4, 0.2],
                        [50, 75])
    gmp = hand_made_run("gmp", 0, [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0.9, 0.7, 0.5, 0.3], [0, 0])
    gmp = replace(gmp, metrics={"protocol": "hand-made", "sweep": {"pxap": {"value": 40.0}}})  # only gmp has PxAP
    runs = run_frame(study, [gap, gmp])  # one row per run
    assert runs[["model.pooling", "seed"]].values.tolist() == [["gap", 0], ["gmp", 0]]
    assert runs["top1_loc_error"].tolist() == [50.0, 25.0] and runs["mean_iou"].tolist() == pytest.approx([0.5, 0.6])
    assert runs["sweep.pxap.value"].isna().tolist() == [True, False]
    rows = table_rows(study, [gap, gmp])
    write_csv(tmp_path / "table.csv", rows)  # a csv.DictWriter over these rows used to fail on the extra keys
    header = (tmp_path / "table.csv").read_text().splitlines()[0]
    assert header.startswith("model.pooling,seeds,top1_cls_error_mean,top1_cls_error_std,") and "pxap" not in header
    assert "PxAP" not in latex_table(study, rows, "hand-made")


def test_a_grid_of_seeds_only_gives_one_row_without_key_columns():
    from bench.config import StudyConfig
    from bench.study.tables import latex_table, markdown_table, table_rows

    study = StudyConfig(name="seeds", base="tiny.yaml", grid=(("seed", (0, 1)),))
    results = [
        hand_made_run("gap", 0, [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0.8, 0.6, 0.4, 0.2], [50, 75]),
        hand_made_run("gap", 1, [1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0.9, 0.7, 0.5, 0.3],
                      [100, 25]),
    ]
    rows = table_rows(study, results)
    assert len(rows) == 1 and rows[0]["seeds"] == 2 and rows[0]["top1_loc_error_mean"] == 37.5
    table = markdown_table(study, rows, "hand-made").splitlines()
    assert "| seeds | top-1 cls err (%) | top-1 loc err (%) | top-5 loc err (%) | GT-known loc (%) | mean IoU | " \
           "MaxBoxAcc (%, oracle tau) |" in table
    assert "| 2 | 12.5 ± 17.7 | 37.5 ± 17.7 | 12.5 ± 17.7 | 87.5 ± 17.7 | 0.550 ± 0.071 | 87.5 ± 17.7 |" in table
    tex = latex_table(study, rows, "hand-made").splitlines()
    assert r"\begin{tabular}{lrrrrrr}" in tex
    assert r"\multicolumn{1}{l}{GoogLeNet-GAP} & 35.0 & 56.40 & 43.00 &  &  &  \\" in tex


@pytest.mark.slow
def test_resolution_study_draws_metrics_against_map_side(tmp_path, tiny_data_dir):
    path = write_study(tmp_path, tiny_data_dir, f"""\
study:
  base: {TINY_CONFIG}
  grid:
    model.input_size: [32, 64]
    model.pooling: [gap, gmp]
    seed: [0]
  set:
    data_root: {tiny_data_dir}
    results_dir: {tmp_path / 'results'}
    train.epochs: 1
""")
    study, runs = load_study(path)
    folder = run_study(study, runs, log=lambda message: None)
    assert (folder / "map_resolution.png").stat().st_size > 10_000
    with (folder / "comparison.csv").open() as handle:  # GAP - GMP within each input size
        assert {row["setting"] for row in csv.DictReader(handle)} == {"input_size=32", "input_size=64"}


@pytest.mark.slow
def test_lse_sweep_study_draws_metric_against_r(tmp_path, tiny_data_dir):
    path = write_study(tmp_path, tiny_data_dir, f"""\
study:
  base: {TINY_CONFIG}
  grid:
    model.lse_r: [0.5, 8.0]
    seed: [0]
  set:
    model.pooling: lse
    data_root: {tiny_data_dir}
    results_dir: {tmp_path / 'results'}
    train.epochs: 1
    train.lr: 0.005
""")
    study, runs = load_study(path)
    folder = run_study(study, runs, log=lambda message: None)
    assert (folder / "lse_sweep.png").stat().st_size > 10_000
    with (folder / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # The runs' rows, then one center and one few-shot baseline row for both settings: r changes neither the data
    # nor the map grid (the compared key, pooling, is no grid key: the rows are labelled in the seeds column).
    assert [(row["model.lse_r"], row["seeds"]) for row in rows] == [
        ("0.5", "1"), ("8.0", "1"), ("all", "center baseline"), ("all", "few-shot (val masks)")]
    from bench.study.methods_table import read_methods_table

    # Scored once, on the first setting's run.
    assert not (runs[1].run_dir / "methods").exists()
    assert float(rows[2]["gt_known_loc_acc_mean"]) == pytest.approx(
        read_methods_table(runs[0].run_dir)["center"]["gt_known_loc_acc"])


def test_object_scale_study_pairs_every_scale_with_both_poolings_under_one_recipe():
    _, runs = load_study(REPO / "configs" / "object_scale.yaml")
    cells = {(run.dataset.object_scale, run.model.pooling, run.seed) for run in runs}
    assert cells == {(scale, pooling, seed) for scale in ("small", "cub", "imagenet")
                     for pooling in ("gap", "gmp") for seed in (0, 1)}
    # The recipe is the same everywhere: runs differ only in the grid's keys (and their names and folders).
    first = runs[0]
    for run in runs[1:]:
        changed = {line.split(":")[0] for line in config_differences(first, run)}
        assert changed <= {"name", "results_dir", "dataset.object_scale", "model.pooling", "seed"}


def test_the_birds12_pooling_studys_gap_and_gmp_runs_are_the_object_scale_studys_cub_runs():
    # Same names and the same experiments (configs equal but for where results go), so a finished run of one
    # study can be copied into the other's runs/ folder and is reused there, its config checked by run_state.
    _, paper = load_study(REPO / "configs" / "paper_birds12.yaml")
    _, scale = load_study(REPO / "configs" / "object_scale.yaml")
    cub = {run.name: run for run in scale if run.dataset.object_scale == "cub"}
    shared = [run for run in paper if run.name in cub]
    assert sorted(run.name for run in shared) == sorted(cub) and len(cub) == 4
    for run in shared:
        assert config_differences(run, cub[run.name], SAME_EXPERIMENT_KEYS) == []
