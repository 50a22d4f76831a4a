"""Studies: several runs that differ in a few keys, their tables, paired comparisons and figures.

A study (:class:`bench.config.StudyConfig`) is a grid of run configs. Each run
is an ordinary run folder under ``results/<study>/runs/<run>/``; a finished run
whose saved config is the same experiment (:data:`bench.config.SAME_EXPERIMENT_KEYS`
may differ) is reused, so an interrupted study picks up where it stopped. The
study folder ``results/<study>/`` then gets:

* ``table.md``, ``table.tex`` (booktabs), ``table.csv``: one row per setting
  (every grid key but ``seed``), each metric as mean ± std over seeds, and the
  CAM paper's ILSVRC numbers in a separate reference block (:mod:`bench.study.tables`);
* ``comparison.md`` / ``comparison.csv``: ``GAP - X`` for each metric and
  each pooling X in ``study.compare``, with a paired bootstrap confidence
  interval over test images and seeds, and one computed verdict per setting
  (:mod:`bench.study.statistics`);
* a ``center baseline`` row per setting at the end of every table and of ``by_object_scale.md``'s, scored
  on one finished run per setting (:mod:`bench.study.center_row`), then (``study.few_shot``) a
  ``few-shot (val masks)`` row, a foreground map trained on the val masks and cached in ``few_shot/``
  (:mod:`bench.study.few_shot_row`);
* with ``study.methods``: ``methods_table.md`` / ``.csv``, setting x map method, after ``bench methods``
  on each finished run (:mod:`bench.study.methods_table`);
* figures: ``cams_gap_vs_gmp.png``, ``iou_hist.png``, ``boxacc_vs_tau.png``,
  ``cam_area.png`` and, when the grid varies ``model.lse_r``, ``lse_sweep.png``
  (:mod:`bench.study.figures`).

The runs go one after another in this process (or torchrun job), or, given an
executor, elsewhere: :mod:`bench.study.ray_executor` runs them as parallel Ray tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.atomic_files import write_text
from bench.config import SAME_EXPERIMENT_KEYS, RunConfig, StudyConfig, config_differences, load_config
from bench.run.folder import (
    COMPLETE,
    CONFIG_FILE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    resumable,
    run_status,
    running_process,
)
from bench.run.pipeline import AfterComplete, run
from bench.study import figures as study_figures
from bench.study.center_row import TABLE_NOTE, CenterBaseline, center_baselines, center_scale_rows, center_table_rows
from bench.study.epoch_trajectory import (
    BY_EPOCH_FIGURE,
    BY_EPOCH_FILE,
    draw_epoch_differences,
    epoch_differences,
    study_series,
    write_epoch_differences,
)
from bench.study.few_shot_row import (
    FewShotBaseline,
    few_shot_baselines,
    few_shot_note,
    few_shot_scale_rows,
    few_shot_table_rows,
)
from bench.study.methods_table import ensure_methods, write_methods_tables
from bench.study.results import (
    FINAL,
    POINT_TITLES,
    POINTS,
    StudyError,
    by_setting,
    has_point,
    read_run,
    value_label,
)
from bench.study.scale_table import scale_comparisons, scale_markdown, scale_rows
from bench.study.statistics import comparison_markdown, comparisons
from bench.study.tables import write_csv, write_tables
from bench.training import distributed

SCALE_REPORT = "by_object_scale.md"  # a study's localization by object scale (bench.study.scale_table)
# A finished run folder copied from another study into this one's runs/ under this study's run name differs from
# the config asked for in its name too: the folder is the run's identity and its name follows it, so it is
# reused. (An unfinished copy is not continued: --resume, SAME_EXPERIMENT_KEYS, wants the name it started with.)
REUSE_IGNORED_KEYS = (*SAME_EXPERIMENT_KEYS, "name")

# Writes the study's web page once its report files are in place: ``write_page(study, finished runs, log=log)``
# (:func:`bench.html.study_page.write_study_page`, handed down by the command line).
StudyPageWriter = Callable[..., object]


def run_state(config: RunConfig) -> str:
    """What a study does with ``config.run_dir``; its status is read by :func:`bench.run.folder.run_status`.

    ``missing``; ``complete`` (finished, the same experiment: reused); ``different`` (finished with another
    config); ``running`` (its process is alive, or runs on another host); ``interrupted`` (stopped early,
    killed or failed, the same experiment: continued from its checkpoint); ``partial`` (unfinished and
    unreadable, of another config, or of ``train.mode: head``, which does not resume: run again from
    scratch). The same experiment: the saved config differs from ``config`` in no key but
    :data:`bench.config.SAME_EXPERIMENT_KEYS`, as ``--resume`` requires; a finished run may also differ in
    its ``name`` (:data:`REUSE_IGNORED_KEYS`: a run copied from another study under this one's run name).
    """
    folder = config.run_dir
    if not folder.exists():
        return "missing"
    status = run_status(folder)
    if status == RUNNING:
        return "running"
    try:
        saved = load_config(folder / CONFIG_FILE)
    except Exception:  # noqa: BLE001 - any unreadable folder is an unfinished one
        return "partial"
    if status == COMPLETE:
        return "different" if config_differences(saved, config, REUSE_IGNORED_KEYS) else "complete"
    same = not config_differences(saved, config, SAME_EXPERIMENT_KEYS)
    # An unfinished run that does not resume (train.mode head) starts again from scratch.
    return "interrupted" if same and resumable(config) and status in (INTERRUPTED, FAILED) else "partial"


@dataclass(frozen=True)
class PendingRun:
    """A run of the study still to do, and its :func:`run_state` when the study started."""

    config: RunConfig
    state: str  # missing, interrupted, partial or different


# How a study runs its pending runs: ``execute(study, pending, log)`` returns ``{run name: why it failed}``
# for the runs that failed for good (none: every run finished). ``None`` runs them here, one after another.
Executor = Callable[[StudyConfig, list[PendingRun], Callable[[str], None]], dict[str, str]]


class RunsFailedError(RuntimeError):
    """Some runs of a study failed for good (the executor gave up on them); the report covers the others."""


def study_states(study: StudyConfig, runs: list[RunConfig], overwrite: bool = False) -> dict[str, str]:
    """Each run's :func:`run_state` by name; :class:`StudyError` where the study cannot start.

    Refused: finished runs of another config (unless ``overwrite``), and runs another process is running.
    Reads the run folders only.
    """
    states = {config.name: run_state(config) for config in runs}
    different = [name for name, state in states.items() if state == "different"]
    if different and not overwrite:
        raise StudyError(f"{len(different)} finished run folder(s) under {study.study_dir / 'runs'} hold another "
                         f"config than this study asks for ({', '.join(different[:3])}); pass --overwrite "
                         f"(make ... OVERWRITE=1) to retrain them, or rename the study file")
    running = [config for config in runs if states[config.name] == "running"]
    if running:
        raise StudyError(f"{len(running)} run(s) of study {study.name} are being run by another process; wait for "
                         f"it or stop it first: " + "; ".join(f"{config.name}: {running_process(config.run_dir)}"
                                                              for config in running[:3]))
    return states


def frame_note(study: StudyConfig, runs: list[RunConfig]) -> str:
    """A warning line when runs of ``runs`` are scored in the original frame (``eval.frame: original``): their
    report has no figures and no table by object scale, both of which need the input frame; "" otherwise.

    Said when a study starts (:func:`run_study`, ``bench run --check``, ``bench show-config``), not only when
    its report finds out, after every run.
    """
    original = [config for config in runs if config.eval.frame != "input"]
    if not original:
        return ""
    written = [f"study.{part}" for part, entries in (("grid", study.grid), ("set", study.set))
               if any(key == "eval.frame" for key, _ in entries)]
    which = "every run is" if len(original) == len(runs) else f"{len(original)} of its {len(runs)} runs are"
    return (f"study {study.name}: warning: {which} scored in the original frame (eval.frame: original, from "
            f"{', '.join(written) or study.base}): the report will have no figures and no table by object scale "
            f"(both need the input frame); set eval.frame: input in study.set to get them")


def run_pending(config: RunConfig, state: str, log: Callable[[str], None],
                context: distributed.Context | None = None, after_complete: AfterComplete | None = None) -> dict:
    """Run ``config`` as its :func:`run_state` says: from scratch, over an unfinished folder, or resumed.

    ``after_complete``: as :func:`bench.run.pipeline.run` takes it (the run page).
    """
    return run(config, overwrite=state in ("partial", "different"), resume=state == "interrupted", log=log,
               context=context, after_complete=after_complete)


def run_study(study: StudyConfig, runs: list[RunConfig], overwrite: bool = False,
              log: Callable[[str], None] = print, executor: Executor | None = None,
              run_page: AfterComplete | None = None, study_page: StudyPageWriter | None = None) -> Path:
    """Run every run not finished yet (reusing finished ones, continuing interrupted ones), then write the report.

    Under ``torchrun`` every rank takes part in each run; rank 0 decides what to run and writes the report.
    ``executor`` (e.g. :class:`bench.study.ray_executor.RayExecutor`) runs the pending runs elsewhere, in
    parallel; runs it gives up on are named, the report covers the others, then :class:`RunsFailedError`.
    ``run_page`` is handed to each run this process runs (:func:`bench.run.pipeline.run`'s ``after_complete``);
    ``study_page`` to :func:`write_report`.
    """
    context = distributed.from_environment()
    if executor is not None and context.distributed:
        raise StudyError("a study with an executor (--executor ray) starts its runs itself; do not launch it under "
                         "torchrun (NPROC=...): give --nproc to run each run in several processes")
    states = context.on_main(lambda: study_states(study, runs, overwrite))
    say = log if context.is_main else (lambda message: None)
    note = frame_note(study, runs)
    if note:
        say(note)
    reused = sum(state == "complete" for state in states.values())
    say(f"study {study.name}: {len(runs)} runs ({reused} finished and reused) -> {study.study_dir}/")
    pending = [PendingRun(config, states[config.name]) for config in runs if states[config.name] != "complete"]
    if executor is None:
        _run_in_order(runs, pending, say, log, context, run_page)
        failed = {}
    else:
        failed = executor(study, pending, log) if pending else {}
    if not context.is_main:
        return study.study_dir
    for config in runs if study.methods else ():
        if run_state(config) == "complete":
            ensure_methods(config, study.methods, log)
    if not failed:
        return write_report(study, runs, log=log, study_page=study_page)
    if len(failed) < len(runs):
        write_report(study, runs, log=log, study_page=study_page)
    raise RunsFailedError(f"study {study.name}: {len(failed)} run(s) failed for good: "
                          + "; ".join(f"{name}: {why}" for name, why in failed.items()))


def _run_in_order(runs: list[RunConfig], pending: list[PendingRun], say: Callable[[str], None],
                  log: Callable[[str], None], context: distributed.Context,
                  run_page: AfterComplete | None = None) -> None:
    """The pending runs one after another in this process (or this torchrun job); a failing run stops the study."""
    position = {config.name: index for index, config in enumerate(runs, start=1)}
    for item in pending:
        index, name = position[item.config.name], item.config.name
        if item.state == "interrupted":
            say(f"[{index}/{len(runs)}] {name}: interrupted earlier; continuing from its last checkpoint")
        elif item.state == "partial":
            say(f"[{index}/{len(runs)}] {name}: unfinished folder of another or unreadable config; running it again")
        say(f"[{index}/{len(runs)}] {name}")
        run_pending(item.config, item.state, log, context, run_page)


def write_report(study: StudyConfig, runs: list[RunConfig], log: Callable[[str], None] = print,
                 study_page: StudyPageWriter | None = None) -> Path:
    """Tables, comparisons and figures from the finished runs of ``runs`` (unfinished ones are left out, said).

    Each point of :data:`bench.study.results.POINTS` the runs were scored at
    gets its table and comparisons: ``table.*`` / ``comparison.csv`` for the
    final epoch, ``table_val_selected.*`` / ``comparison_val_selected.csv`` for
    the val-selected one; ``table.md`` and ``comparison.md`` hold both.
    ``study_page(study, finished, log=log)`` then writes the web page from those files.
    """
    finished = _finished_runs(study, runs, log)
    folder = study.study_dir
    folder.mkdir(parents=True, exist_ok=True)
    baselines = center_baselines(study, finished, log)
    few_shot = few_shot_baselines(study, finished, log) if study.few_shot else []
    tables, notes, figures = _write_point_reports(study, finished, folder, baselines, log, few_shot)
    if study.methods:
        tables.append(write_methods_tables(study, finished, folder))
    write_text(folder / "table.md", "\n".join(tables))
    if notes:
        write_text(folder / "comparison.md", "\n".join(notes))
    log((folder / "table.md").read_text(encoding="utf-8"))
    if notes:
        log((folder / "comparison.md").read_text(encoding="utf-8"))
    log(f"study report in {folder}/ ({', '.join(sorted(p.name for p in figures))})")
    if study_page is not None:
        study_page(study, finished, log=log)
    return folder


def _write_epoch_differences(study: StudyConfig, results: list, folder: Path) -> list[Path]:
    """``by_epoch.csv`` and ``by_epoch.png`` (:mod:`bench.study.epoch_trajectory`) where the runs kept their
    per-epoch val outcomes; nothing otherwise."""
    rows = epoch_differences(study, results)
    if not rows:
        return []
    write_epoch_differences(rows, folder / BY_EPOCH_FILE)
    title = f"{study.name}: {value_label(study.reference)} - X at every epoch (val images, paired over seeds)"
    return [draw_epoch_differences(study_series(rows), folder / BY_EPOCH_FIGURE, title)]


def _finished_runs(study: StudyConfig, runs: list[RunConfig], log: Callable[[str], None]) -> list[RunConfig]:
    """The runs of ``runs`` that are complete; the others are named (none complete: :class:`StudyError`)."""
    finished = [config for config in runs if run_state(config) == "complete"]
    missing = [config.name for config in runs if config not in finished]
    if not finished:
        raise StudyError(f"study {study.name}: none of its {len(runs)} runs has finished under "
                         f"{study.study_dir / 'runs'}; run it first (make benchmark CONFIG=...)")
    if missing:
        log(f"study {study.name}: {len(missing)} run(s) unfinished, left out of the report: {', '.join(missing)}")
    return finished


def _write_point_reports(study: StudyConfig, finished: list[RunConfig], folder: Path,
                         baselines: list[CenterBaseline] | None = None,
                         log: Callable[[str], None] = print,
                         few_shot: list[FewShotBaseline] = ()) -> tuple[list[str], list[str], list[Path]]:
    """Each scoring point's table and comparison files; returns (table markdowns, comparison markdowns, figures).

    ``baselines`` (:func:`bench.study.center_row.center_baselines`), then ``few_shot``
    (:func:`bench.study.few_shot_row.few_shot_baselines`) end every table and, per setting, the tables of
    ``by_object_scale.md``: they do not depend on the epoch, so both points show the same rows.
    The figures are drawn from the final epoch's results.
    """
    points = [point for point in POINTS if all(has_point(config, point) for config in finished)]
    tables, notes, figures, by_scale = [], [], [], []
    binned = all(config.eval.frame == "input" for config in finished)  # scale bins need the input frame
    baselines = baselines or []
    fixed = center_table_rows(study, baselines) + few_shot_table_rows(study, list(few_shot))
    note = " ".join(text for text in (TABLE_NOTE if baselines else "", few_shot_note(list(few_shot))) if text)
    baseline_scale_rows = (center_scale_rows(study, baselines) + few_shot_scale_rows(study, list(few_shot))
                           if binned else [])
    for point in points:
        results = [read_run(config, point) for config in finished]
        suffix = "" if point == FINAL else f"_{point}"
        title = POINT_TITLES[point] if len(points) > 1 else ""
        tables.append(write_tables(study, results, folder / f"table{suffix}", title, fixed, note))
        differences = comparisons(study, results, log if point == FINAL else lambda message: None)  # said once
        if differences:
            notes.append(comparison_markdown(study, differences, title))
            write_csv(folder / f"comparison{suffix}.csv", differences)
        if binned:
            scale_differences = scale_comparisons(study, results)
            by_scale.append(scale_markdown(study, scale_rows(study, results), scale_differences,
                                           POINT_TITLES[point], baseline_scale_rows))
            if scale_differences:
                write_csv(folder / f"comparison_by_object_scale{suffix}.csv", scale_differences)
        if point == FINAL:
            figures = study_figures.draw_all(study, results, by_setting(study, results), folder)
            figures += _write_epoch_differences(study, results, folder)
            if not binned:
                log(f"study {study.name}: scored in the original frame (eval.frame: original): no figures and no "
                    "table by object scale (both need the input frame)")
    if by_scale:
        write_text(folder / SCALE_REPORT, "# Localization by object scale\n\n" + "\n".join(by_scale))
    return tables, notes, figures
