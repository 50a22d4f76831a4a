"""Searches: the same hyperparameter budget for every arm, chosen on val, then final runs scored on test once.

A study with ``study.search`` (:class:`bench.config.SearchConfig`) runs in two phases:

1. **Trials.** Every arm (value of ``study.compare_key``, the reference included) gets ``search.trials`` runs in
   ``results/<study>/trials/``, each an ordinary run (resumable, reused when finished, fanned out by an executor)
   that trains with ``search.train_seed`` and is scored on the val split only, at its last epoch. A trial whose
   loss became NaN / inf has *diverged*: it is a finished trial with no score, ranked last, not run again.
2. **Final runs.** Each arm's trial best on ``search.metric`` (ties: the lower trial number) gives its parameters
   to the final runs (the grid's seeds, in ``runs/``), which are then an ordinary study
   (:func:`bench.study.runner.run_study`): tables, paired comparisons against the reference with verdicts, the
   center row, figures. The test split is read there and nowhere in the search.

Written beside the study's report: ``trials.csv`` (one row per trial), ``search.md`` (the budget, each arm's
choice, the spaces), ``chosen.csv`` and ``search.png`` (the val metric against each searched parameter).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.atomic_files import write_csv_rows, write_text  # noqa: E402
from bench.config import RunConfig, StudyConfig, search_final_runs, search_trial_index  # noqa: E402
from bench.run.folder import COMPLETE, FAILED, HISTORY_FILE, MANIFEST_FILE, METRICS_FILE, run_status  # noqa: E402
from bench.study.results import StudyError, read_history, value_label  # noqa: E402
from bench.study.runner import (  # noqa: E402
    Executor,
    PendingRun,
    RunsFailedError,
    StudyPageWriter,
    run_pending,
    run_state,
    run_study,
    study_states,
    write_report,
)
from bench.training.loop import NonFiniteLossError  # noqa: E402

TRIALS_FILE, CHOSEN_FILE, SEARCH_REPORT, SEARCH_FIGURE = "trials.csv", "chosen.csv", "search.md", "search.png"
DIVERGED = "diverged"  # a trial whose training loss became NaN / inf: finished, unscored
METRIC_LABELS = {"max_box_acc_v2": "val MaxBoxAccV2 (%)", "top1_loc": "val top-1 loc (%)"}


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the search reads it: its arm, number, drawn values and val scores (None: not scored)."""

    arm: Any
    trial: int
    name: str
    values: dict[str, Any]
    state: str  # complete, diverged, or a runner state (missing, interrupted, partial, running, different)
    top1_cls_error: float | None = None  # val scores, in %; the selection metrics by their search.metric names
    top1_loc: float | None = None
    max_box_acc_v2: float | None = None
    train_accuracy: float | None = None  # % on the training batches in its last epoch: a collapsed classifier shows

    @property
    def finished(self) -> bool:
        return self.state in (COMPLETE, DIVERGED)

    def score(self, metric: str) -> float | None:
        """The val score of selection metric ``metric`` (``search.metric``: ``max_box_acc_v2`` or ``top1_loc``)."""
        return getattr(self, metric)


def diverged(config: RunConfig) -> bool:
    """Whether the run stopped because its training loss became NaN / inf (its manifest's error says so)."""
    if run_status(config.run_dir) != FAILED:
        return False
    try:
        manifest = json.loads((config.run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return str(manifest.get("error", "")).startswith(NonFiniteLossError.__name__)


def read_trial(study: StudyConfig, config: RunConfig) -> TrialOutcome:
    """The outcome of trial run ``config`` of ``study`` (the scores from its val ``metrics.json`` when finished)."""
    arm = arm_of(study, config)
    base = dict(arm=arm, trial=search_trial_index(config), name=config.name,
                values=study.search.draw(arm, search_trial_index(config)))
    if diverged(config):
        return TrialOutcome(**base, state=DIVERGED)
    state = run_state(config)
    if state != COMPLETE:
        return TrialOutcome(**base, state=state)
    metrics = json.loads((config.run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    v2 = metrics["sweep"]["max_box_acc_v2"]["value"]
    history = read_history(config.run_dir / HISTORY_FILE)
    return TrialOutcome(**base, state=COMPLETE, top1_cls_error=metrics["top1_cls_error"],
                        top1_loc=100.0 - metrics["top1_loc_error"], max_box_acc_v2=v2,
                        train_accuracy=history[-1]["accuracy"] if history else None)


def arm_of(study: StudyConfig, config: RunConfig) -> Any:
    """The value of ``study.compare_key`` a trial run trains, as the study file writes it."""
    arms = dict(study.grid)[study.compare_key]
    written = config.name.rsplit("_trial-", 1)[0].split("-", 1)[1]
    return next(arm for arm in arms if str(arm) == written)


def choose(study: StudyConfig, outcomes: list[TrialOutcome], arms: Collection[Any] | None = None
           ) -> dict[Any, TrialOutcome]:
    """Each arm's chosen trial: the best ``search.metric`` among its scored trials, ties to the lower trial number.

    ``arms``: only these (default: every arm of the grid). :class:`StudyError` when an arm has no scored trial
    (all diverged, or none finished).
    """
    chosen, metric = {}, study.search.metric
    for arm in dict(study.grid)[study.compare_key]:
        if arms is not None and arm not in arms:
            continue
        scored = [o for o in outcomes if o.arm == arm and o.score(metric) is not None]
        if not scored:
            states = ", ".join(f"{o.name}: {o.state}" for o in outcomes if o.arm == arm)
            raise StudyError(f"study {study.name}: no trial of {study.compare_key}={arm} has a val score ({states}); "
                             "widen or lower its search space, or add trials")
        chosen[arm] = best_trial(scored, lambda o: o.score(metric))
    return chosen


def best_trial(scored: list[TrialOutcome], score: Callable[[TrialOutcome], float]) -> TrialOutcome:
    """The trial of ``scored`` with the highest ``score``, ties to the lower trial number: the search's one rule."""
    return max(scored, key=lambda o: (score(o), -o.trial))


def run_search(study: StudyConfig, trials: list[RunConfig], overwrite: bool = False,
               log: Callable[[str], None] = print, executor: Executor | None = None,
               run_page: Callable | None = None, study_page: StudyPageWriter | None = None) -> Path:
    """Run the trials not finished yet, choose each arm's parameters on val, then run and report the final runs.

    Trials run one after another here, or through ``executor`` (as a study's runs do); a diverged trial is
    recorded and the search goes on. Any other trial failure stops the search after its report is written.
    """
    states = study_states(study, trials, overwrite)
    done = {config.name for config in trials if states[config.name] == "complete" or diverged(config)}
    pending = [PendingRun(config, states[config.name]) for config in trials if config.name not in done]
    log(f"study {study.name}: search of {study.search.trials} trial(s) for each of "
        f"{len(trials) // study.search.trials} arm(s) ({len(done)} of {len(trials)} finished and reused) "
        f"-> {study.study_dir / 'trials'}/")
    failed: dict[str, str] = {}
    if executor is None:
        for index, item in enumerate(pending, start=1):
            log(f"[trial {index}/{len(pending)}] {item.config.name}")
            try:
                run_pending(item.config, item.state, log, after_complete=run_page)
            except NonFiniteLossError as error:
                log(f"{item.config.name}: diverged ({error}); recorded as a trial without a score")
    elif pending:
        failed = {name: why for name, why in executor(study, pending, log).items()
                  if not diverged(next(c for c in trials if c.name == name))}
    outcomes = write_search_report(study, trials, log)
    if failed:
        raise RunsFailedError(f"study {study.name}: {len(failed)} trial(s) failed for good: "
                              + "; ".join(f"{name}: {why}" for name, why in failed.items()))
    finals = search_final_runs(study, {arm: o.values for arm, o in choose(study, outcomes).items()})
    return run_study(study, finals, overwrite=overwrite, log=log, executor=executor, run_page=run_page,
                     study_page=study_page)


def report_search(study: StudyConfig, trials: list[RunConfig], log: Callable[[str], None] = print,
                  study_page: StudyPageWriter | None = None) -> Path:
    """``bench report`` on a search study: the search's files, then the final runs' report once trials allow."""
    outcomes = write_search_report(study, trials, log)
    unfinished = [o.name for o in outcomes if not o.finished]
    if unfinished:
        raise StudyError(f"study {study.name}: {len(unfinished)} trial(s) unfinished ({', '.join(unfinished[:3])}); "
                         "the final runs wait for every trial: run the study (make benchmark CONFIG=...)")
    finals = search_final_runs(study, {arm: o.values for arm, o in choose(study, outcomes).items()})
    return write_report(study, finals, log=log, study_page=study_page)


def write_search_report(study: StudyConfig, trials: list[RunConfig],
                        log: Callable[[str], None] = print) -> list[TrialOutcome]:
    """``trials.csv``, ``search.md``, ``chosen.csv`` and ``search.png`` from the trials as they are now."""
    outcomes = [read_trial(study, config) for config in trials]
    folder, metric = study.study_dir, study.search.metric
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(key for o in outcomes for key in o.values))
    write_csv_rows(folder / TRIALS_FILE, trial_columns(keys), [trial_row(o, keys, metric) for o in outcomes])
    finished_arms = {o.arm for o in outcomes} - {o.arm for o in outcomes if not o.finished}
    chosen = {}
    if all(any(o.score(metric) is not None for o in outcomes if o.arm == arm) for arm in finished_arms):
        chosen = choose(study, outcomes, finished_arms)  # an arm still training has no choice yet
    write_csv_rows(folder / CHOSEN_FILE, ["arm", "trial", "run", metric, *keys],
                   [[value_label(arm), o.trial, o.name, _number(o.score(metric)), *(_value(o.values.get(k)) for k in keys)]
                    for arm, o in chosen.items()])
    markdown = search_markdown(study, outcomes, chosen)
    write_text(folder / SEARCH_REPORT, markdown)
    if any(o.score(metric) is not None for o in outcomes) and keys:
        draw_search(study, outcomes, chosen, folder / SEARCH_FIGURE)
    log(markdown)
    return outcomes


def trial_columns(keys: list[str]) -> list[str]:
    return ["arm", "trial", "run", "state", *keys, "val_metric", "val_max_box_acc_v2", "val_top1_loc",
            "val_top1_cls_error", "train_accuracy"]


def trial_row(outcome: TrialOutcome, keys: list[str], metric: str) -> list:
    """One row of ``trials.csv`` (:func:`trial_columns`): ``val_metric`` is the selection metric ``metric``'s."""
    return [value_label(outcome.arm), outcome.trial, outcome.name, outcome.state,
            *(_value(outcome.values.get(key)) for key in keys), _number(outcome.score(metric)),
            _number(outcome.max_box_acc_v2), _number(outcome.top1_loc), _number(outcome.top1_cls_error),
            _number(outcome.train_accuracy)]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def other_choice(study: StudyConfig, outcomes: list[TrialOutcome], arm: Any) -> TrialOutcome | None:
    """The trial of ``arm`` the *other* selection metric would choose (same rule: best, ties to the lower
    trial number), None without a scored trial: how much the choice depends on the metric, said beside it."""
    other = next(key for key in METRIC_LABELS if key != study.search.metric)
    scored = [o for o in outcomes if o.arm == arm and o.score(other) is not None]
    return best_trial(scored, lambda o: o.score(other)) if scored else None


def search_markdown(study: StudyConfig, outcomes: list[TrialOutcome], chosen: dict[Any, TrialOutcome]) -> str:
    """The search in words and tables: budget, spaces, each arm's trials, its choice and the other metric's."""
    search = study.search
    metric = METRIC_LABELS[search.metric]
    other = next(label for key, label in METRIC_LABELS.items() if key != search.metric)
    finished = sum(o.finished for o in outcomes)
    lines = [f"# Search: {study.name}", "",
             f"{search.trials} trial(s) for every value of {study.compare_key} (the reference "
             f"{value_label(study.reference)} included), each trained with seed {search.train_seed} and scored on "
             f"the val split at its last epoch; draws from seed {search.seed}. Chosen: the trial best on {metric} "
             f"(ties: the lower trial number). {finished} of {len(outcomes)} trials finished. The final runs "
             f"(seeds {', '.join(str(s) for s in dict(study.grid).get('seed', ()))}) use each arm's choice and are "
             "the only runs scored on test.", "",
             "| arm | searched | trials scored | diverged | chosen trial | " + metric + " | its train acc (%) | "
             f"chosen values | {other} would choose |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in dict(study.grid)[study.compare_key]:
        own = [o for o in outcomes if o.arm == arm]
        spaces = "; ".join(f"{key}: {d.describe()}" for key, d in search.space_of(arm)) or "nothing"
        pick = chosen.get(arm)
        values = ", ".join(f"{k}={_value(v)}" for k, v in pick.values.items()) if pick else "(pending)"
        alternative = other_choice(study, outcomes, arm) if pick else None
        instead = "" if alternative is None else f"trial {alternative.trial}" + (" (the same)" if alternative is pick
                                                                                  else "")
        lines.append(f"| {value_label(arm)} | {spaces} | {sum(o.score(search.metric) is not None for o in own)} / "
                     f"{len(own)} | {sum(o.state == DIVERGED for o in own)} | {pick.trial if pick else ''} | "
                     f"{_number(pick.score(search.metric)) if pick else ''} | "
                     f"{_number(pick.train_accuracy) if pick else ''} | {values} | {instead} |")
    keys = list(dict.fromkeys(key for o in outcomes for key in o.values))
    lines += ["", "## Trials", "", "| " + " | ".join(trial_columns(keys)) + " |",
              "|" + "---|" * len(trial_columns(keys))]
    lines += ["| " + " | ".join(str(cell) for cell in trial_row(o, keys, search.metric)) + " |" for o in outcomes]
    return "\n".join(lines) + "\n"


def draw_search(study: StudyConfig, outcomes: list[TrialOutcome], chosen: dict[Any, TrialOutcome],
                path: Path) -> Path:
    """``search.png``: the val metric of every scored trial against each searched parameter, one panel each,
    a colour per arm, each arm's chosen trial ringed; log axis for log-uniform parameters."""
    keys = list(dict.fromkeys(key for o in outcomes for key in o.values))
    kinds = {key: d.kind for arm in dict(study.grid)[study.compare_key] for key, d in study.search.space_of(arm)}
    columns = min(len(keys), 3)
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.4 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    arms, metric = list(dict(study.grid)[study.compare_key]), study.search.metric
    for axis, key in zip(axes.flat, keys):
        for index, arm in enumerate(arms):
            scored = [o for o in outcomes if o.arm == arm and o.score(metric) is not None and key in o.values]
            if not scored:
                continue
            xs = [_plotted(o.values[key]) for o in scored]
            axis.scatter(xs, [o.score(metric) for o in scored], color=colours[index % len(colours)], s=28,
                         label=value_label(arm))
            pick = chosen.get(arm)
            if pick is not None and key in pick.values:
                axis.scatter([_plotted(pick.values[key])], [pick.score(metric)], s=140, facecolors="none",
                             edgecolors=colours[index % len(colours)], linewidths=1.6)
        if kinds.get(key) == "log_uniform":
            axis.set_xscale("log")
        axis.set_xlabel(key)
        axis.set_ylabel(METRIC_LABELS[metric])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, title="ringed: chosen", title_fontsize=7)
    for axis in list(axes.flat)[len(keys):]:
        axis.set_visible(False)
    figure.suptitle(f"{study.name}: val score of each trial ({study.search.trials} per arm)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _plotted(value: Any) -> Any:
    """A drawn value on a figure axis: numbers as they are, anything else (a choice of pairs) as its text."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else _value(value)
