"""Searches (study.search): draws, strict study files, the trial / choice / final-run phases, diverged trials."""

import dataclasses
import json

import numpy as np
import pytest
from helpers import REPO, TINY_CONFIG, read_rows

from bench.commands.cli import main
from bench.config import ConfigError, Distribution, SearchConfig, load_config, load_study, search_final_runs
from bench.run.folder import FAILED, MANIFEST_FILE
from bench.study.results import StudyError, value_label
from bench.study.search import DIVERGED, TrialOutcome, choose, other_choice, read_trial, search_markdown


class FixedDraws:
    """A stand-in for numpy's Generator that returns the numbers it is given, in order."""

    def __init__(self, uniforms=(), integers=()):
        self.uniforms, self.ints = list(uniforms), list(integers)

    def random(self):
        return self.uniforms.pop(0)

    def integers(self, n):
        return self.ints.pop(0)


def test_distributions_draw_the_hand_computed_value_rounded_to_three_significant_digits():
    # log-uniform [1e-3, 1e-1] at u = 0.5: exp((ln 1e-3 + ln 1e-1) / 2) = 1e-2; at u = 0.25: 10^-2.5 = 0.0031623 -> 0.00316
    log = Distribution("log_uniform", (0.001, 0.1))
    assert log.draw(FixedDraws([0.5])) == pytest.approx(0.01, rel=1e-12)
    assert log.draw(FixedDraws([0.25])) == 0.00316
    # uniform [0.2, 0.8] at u = 1/3: 0.2 + 0.2 = 0.4; at u = 0.123456: 0.2740736 -> 0.274
    uniform = Distribution("uniform", (0.2, 0.8))
    assert uniform.draw(FixedDraws([1 / 3])) == pytest.approx(0.4)
    assert uniform.draw(FixedDraws([0.123456])) == 0.274
    # rounding never leaves the range: u = 0 at low 0.0012345 gives 0.00123 < low without the clamp
    assert Distribution("uniform", (0.0012345, 0.002)).draw(FixedDraws([0.0])) == 0.0012345
    choice = Distribution("choice", (8, 16, [0.7, 0.01]))
    assert choice.draw(FixedDraws(integers=[2])) == [0.7, 0.01]
    assert log.describe() == "log-uniform [0.001, 0.1]" and choice.describe() == "choice {8, 16, [0.7, 0.01]}"


def test_a_trials_draw_depends_on_seed_arm_and_number_only():
    lr = (("train.lr", Distribution("log_uniform", (1e-4, 1e-1))),)
    grid = ("wsol.has_drop_rate", Distribution("uniform", (0.0, 1.0)))
    small = SearchConfig(trials=2, space=lr, arms=(("has", (grid,)),))
    large = SearchConfig(trials=30, space=lr, arms=(("has", (grid,)), ("adl", ())))
    for trial in range(2):
        assert small.draw("has", trial) == large.draw("has", trial)  # more trials, more arms: same first draws
        assert small.draw("cam", trial) == large.draw("cam", trial)
    assert small.draw("cam", 0) != small.draw("cam", 1)
    # the shared key takes the same value in every arm's trial i; the arm's own key is drawn apart
    assert small.draw("has", 1)["train.lr"] == small.draw("cam", 1)["train.lr"] == large.draw("adl", 1)["train.lr"]
    assert small.draw("cam", 0) != SearchConfig(trials=2, seed=1, space=lr).draw("cam", 0)
    assert list(small.draw("has", 0)) == ["train.lr", "wsol.has_drop_rate"] and list(small.draw("cam", 0)) == ["train.lr"]
    values = [small.draw("cam", i)["train.lr"] for i in range(200)]
    assert min(values) >= 1e-4 and max(values) <= 1e-1
    # log-uniform: the log of the draws is spread evenly, half of them below the geometric middle 10^-2.5
    assert 0.4 < np.mean(np.array(values) < 10 ** -2.5) < 0.6


def write_search(tmp_path, tiny_data_dir, search="", grid="model.pooling: [gap, gmp]\n    seed: [0, 1]", extra=""):
    search = search or """
    trials: 2
    space:
      train.lr: {log_uniform: [0.001, 0.01]}
    arms:
      gmp:
        train.weight_decay: {choice: [0.0001, 0.0005]}"""
    path = tmp_path / "search.yaml"
    path.write_text(f"""\
study:
  base: {TINY_CONFIG}
  grid:
    {grid}
  set:
    data_root: {tiny_data_dir}
    results_dir: {tmp_path / 'results'}{extra}
  search:{search}
  bootstrap: 200
""")
    return path


def test_a_search_study_loads_its_trials_scored_on_val_with_the_train_seed(tmp_path, tiny_data_dir):
    study, trials = load_study(write_search(tmp_path, tiny_data_dir))
    assert [t.name for t in trials] == ["pooling-gap_trial-0", "pooling-gap_trial-1", "pooling-gmp_trial-0",
                                        "pooling-gmp_trial-1"]
    assert {t.run_dir.parent for t in trials} == {tmp_path / "results" / "search" / "trials"}
    assert {(t.seed, t.eval.split) for t in trials} == {(100, "val")}
    for trial in trials:
        arm, number = trial.model.pooling, int(trial.name[-1])
        assert trial.train.lr == study.search.draw(arm, number)["train.lr"]
    assert {t.train.weight_decay for t in trials if t.model.pooling == "gap"} == {1e-4}  # only GMP searches it
    finals = search_final_runs(study, {"gap": {"train.lr": 0.002}, "gmp": {"train.lr": 0.005,
                                                                          "train.weight_decay": 0.0005}})
    assert [(f.name, f.seed, f.eval.split, f.train.lr, f.train.weight_decay) for f in finals] == [
        ("pooling-gap_seed-0", 0, "test", 0.002, 1e-4), ("pooling-gap_seed-1", 1, "test", 0.002, 1e-4),
        ("pooling-gmp_seed-0", 0, "test", 0.005, 5e-4), ("pooling-gmp_seed-1", 1, "test", 0.005, 5e-4)]
    assert {f.run_dir.parent for f in finals} == {tmp_path / "results" / "search" / "runs"}


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(grid="model.pooling: [gap, gmp]\n    train.epochs: [1, 2]"), "grid of model.pooling and seed only"),
    (dict(search="\n    trials: 2\n    train_seed: 1\n    space: {train.lr: {uniform: [0.001, 0.01]}}"),
     "'study.search.train_seed' is 1, one of the final seeds"),
    (dict(search="\n    trials: 0"), "'study.search.trials' is 0; expected an integer >= 1"),
    (dict(search="\n    trials: 2\n    space: {train.lrr: {uniform: [0.001, 0.01]}}"), "'train.lrr' is not a run-config"),
    (dict(search="\n    trials: 2\n    space: {train.lr: {normal: [0.001, 0.01]}}"), "expected one of {log_uniform"),
    (dict(search="\n    trials: 2\n    space: {train.lr: {log_uniform: [0, 0.01]}}"), "0 < low < high"),
    (dict(search="\n    trials: 2\n    space: {train.lr: {uniform: [-1, 0.01]}}"), "'train.lr' is -1"),
    (dict(search="\n    trials: 2\n    space: {train.lr: {choice: []}}"), "non-empty list of distinct"),
    (dict(search="\n    trials: 2\n    arms: {lse: {train.lr: {choice: [0.01]}}}"), "'study.search.arms' names 'lse'"),
    (dict(search="\n    trials: 2\n    space: {seed: {choice: [3, 4]}}"), "'seed' is searched"),
    (dict(search="\n    trials: 2\n    space: {data_root: {choice: [a, b]}}"), "is searched, but"),
    (dict(search="\n    trials: 2\n    split: test"), "'study.search.split' is 'test'; expected one of: val"),
    (dict(extra="\n    eval.split: val", search="\n    trials: 1"), "final runs on test"),
])
def test_bad_search_sections_name_the_key_and_what_is_expected(tmp_path, tiny_data_dir, kwargs, fragment, capsys):
    path = write_search(tmp_path, tiny_data_dir, **kwargs)
    with pytest.raises(ConfigError) as error:
        load_study(path)
    assert fragment in str(error.value) and str(path) in str(error.value)
    assert main(["show-config", str(path)]) == 2
    assert not (tmp_path / "results").exists()


def test_shipped_search_studies_load_with_one_budget_for_every_arm():
    study, trials = load_study(REPO / "configs" / "tiny_search.yaml")
    assert study.search.trials == 2 and len(trials) == 4


def outcome(arm, trial, v2, state="complete"):
    """A trial with val MaxBoxAccV2 ``v2`` (the selection metric of :func:`write_search`'s study)."""
    return TrialOutcome(arm=arm, trial=trial, name=f"pooling-{arm}_trial-{trial}", values={"train.lr": trial},
                        state=state, max_box_acc_v2=v2)


def test_choice_is_the_best_scored_trial_ties_to_the_lower_number_diverged_ranked_last(tmp_path, tiny_data_dir):
    study, _ = load_study(write_search(tmp_path, tiny_data_dir))
    outcomes = [outcome("gap", 0, 60.0), outcome("gap", 1, 61.5), outcome("gap", 2, 61.5),
                outcome("gmp", 0, None, DIVERGED), outcome("gmp", 1, 40.0)]
    chosen = choose(study, outcomes)
    assert (chosen["gap"].trial, chosen["gmp"].trial) == (1, 1)
    with pytest.raises(StudyError, match="no trial of model.pooling=gmp has a val score"):
        choose(study, outcomes[:3] + [outcome("gmp", 0, None, DIVERGED)])
    # A report while GMP's trials still train chooses for GAP only (it stopped on GMP's missing score before).
    assert list(choose(study, outcomes[:3] + [outcome("gmp", 0, None, "missing")], {"gap"})) == ["gap"]


def test_the_search_page_says_which_trial_the_other_metric_would_choose(tmp_path, tiny_data_dir):
    # MaxBoxAccV2 picks trial 2 (the weak classifier), top-1 loc trial 0; a tie on top-1 loc goes to the lower trial.
    study, _ = load_study(write_search(tmp_path, tiny_data_dir))
    outcomes = [dataclasses.replace(outcome("gap", t, v2), top1_loc=loc, train_accuracy=acc)
                for t, v2, loc, acc in ((0, 56.7, 39.6, 97.5), (1, 53.5, 34.2, 98.1), (2, 59.0, 22.5, 75.48))]
    outcomes += [dataclasses.replace(outcome("gmp", t, v2), top1_loc=loc)
                 for t, v2, loc in ((0, 53.6, 34.6), (1, 55.6, 34.6))]
    chosen = choose(study, outcomes)
    assert other_choice(study, outcomes, "gap").trial == 0 and other_choice(study, outcomes, "gmp").trial == 0
    page = search_markdown(study, outcomes, chosen)
    assert "| its train acc (%) | chosen values | val top-1 loc (%) would choose |" in page
    # the chosen trial's last-epoch train accuracy beside its score; blank where a trial has no history
    assert "| 2 | 59.00 | 75.48 | train.lr=2 | trial 0 |" in page and "| 1 | 55.60 |  | train.lr=1 | trial 0 |" in page
    assert "| GAP | 2 | pooling-gap_trial-2 | complete | 2 | 59.00 | 59.00 | 22.50 |  | 75.48 |" in page
    same = [dataclasses.replace(o, top1_loc=50.0 if o.trial == 2 else 1.0) for o in outcomes if o.arm == "gap"]
    assert "| 2 | 59.00 | 75.48 | train.lr=2 | trial 2 (the same) |" in search_markdown(
        study, same, choose(study, same + outcomes[3:]))


def test_a_search_on_top1_loc_chooses_on_it_and_names_maxboxaccv2s_choice_as_the_other(tmp_path, tiny_data_dir):
    study, _ = load_study(write_search(tmp_path, tiny_data_dir, search="""
    trials: 3
    metric: top1_loc
    space:
      train.lr: {log_uniform: [0.001, 0.01]}"""))
    outcomes = [dataclasses.replace(outcome(arm, t, v2), top1_loc=loc) for arm in ("gap", "gmp")
                for t, v2, loc in ((0, 56.7, 39.6), (1, 53.5, 34.2), (2, 59.0, 22.5))]
    assert {arm: o.trial for arm, o in choose(study, outcomes).items()} == {"gap": 0, "gmp": 0}
    assert other_choice(study, outcomes, "gap").trial == 2  # MaxBoxAccV2's pick, named beside it
    page = search_markdown(study, outcomes, choose(study, outcomes))
    assert "| val top-1 loc (%) | its train acc (%) | chosen values | val MaxBoxAccV2 (%) would choose |" in page
    assert "| 0 | 39.60 |  | train.lr=0 | trial 2 |" in page


def test_a_trial_stopped_by_a_non_finite_loss_is_read_as_diverged(tmp_path, tiny_data_dir):
    study, trials = load_study(write_search(tmp_path, tiny_data_dir))
    folder = trials[0].run_dir
    folder.mkdir(parents=True)
    (folder / MANIFEST_FILE).write_text(json.dumps({"status": FAILED, "error": "NonFiniteLossError: step 3"}))
    assert read_trial(study, trials[0]).state == DIVERGED
    (folder / MANIFEST_FILE).write_text(json.dumps({"status": FAILED, "error": "OSError: disk"}))
    assert read_trial(study, trials[0]).state != DIVERGED


def test_a_search_runs_trials_chooses_on_val_then_scores_final_runs_on_test_and_reuses_all(
        tmp_path, tiny_data_dir, capsys):
    path = write_search(tmp_path, tiny_data_dir, search="""
    trials: 2
    space:
      train.lr: {log_uniform: [0.001, 0.01]}
    arms:
      gmp:
        train.weight_decay: {choice: [0.0001, 0.0005]}""", extra="\n    train.epochs: 2")
    assert main(["run", str(path)]) == 0
    folder = tmp_path / "results" / "search"
    trials = read_rows(folder / "trials.csv")
    assert [(r["arm"], r["trial"], r["state"]) for r in trials] == [("GAP", "0", "complete"), ("GAP", "1", "complete"),
                                                                    ("GMP", "0", "complete"), ("GMP", "1", "complete")]
    for row in trials:  # the val metric is the trial's own metrics.json, scored on val
        metrics = json.loads((folder / "trials" / row["run"] / "metrics.json").read_text())
        assert metrics["split"] == "val"
        assert float(row["val_metric"]) == pytest.approx(metrics["sweep"]["max_box_acc_v2"]["value"], abs=0.005)
        history = read_rows(folder / "trials" / row["run"] / "history.csv")  # the last epoch's train accuracy
        assert len(history) == 2 and row["train_accuracy"] == f"{float(history[-1]['accuracy']):.2f}"
    chosen = {row["arm"]: row for row in read_rows(folder / "chosen.csv")}
    for arm in ("GAP", "GMP"):
        own = [r for r in trials if r["arm"] == arm]
        best = max(own, key=lambda r: (float(r["val_metric"]), -int(r["trial"])))
        assert chosen[arm]["trial"] == best["trial"]
        for seed in (0, 1):
            final = load_config(folder / "runs" / f"pooling-{arm.lower()}_seed-{seed}" / "config.yaml")
            assert (final.seed, final.eval.split) == (seed, "test")
            assert final.train.lr == float(best["train.lr"])
            metrics = json.loads((final.run_dir / "metrics.json").read_text())
            assert metrics["split"] == "test"
    assert {"search.md", "search.png", "table.md", "comparison.csv"} <= {p.name for p in folder.iterdir()}
    assert 'src="search.png"' in (folder / "index.html").read_text()  # the study page shows the search
    assert "| GAP | train.lr: log-uniform [0.001, 0.01] | 2 / 2 | 0 |" in (folder / "search.md").read_text()
    capsys.readouterr()
    assert main(["run", str(path)]) == 0  # everything is reused: nothing trains again
    out = capsys.readouterr().out
    assert "(4 of 4 finished and reused)" in out and "4 runs (4 finished and reused)" in out
    assert "training tiny_cnn" not in out
    assert main(["report", str(path)]) == 0


def test_arms_are_labelled_as_their_papers_write_them():
    assert [value_label(v) for v in ("gap", "cam", "has", "adl", "cutmix", "acol", "spg", 0.05)] == [
        "GAP", "CAM", "HaS", "ADL", "CutMix", "ACoL", "SPG", "0.05"]
