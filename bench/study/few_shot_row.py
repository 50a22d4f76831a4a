"""The few-shot baseline as a row of every study table: the ceiling beside the center baseline's floor.

wsolevaluation's few-shot baseline trains a localizer on the val split's full
supervision, the images a WSOL method would otherwise be tuned on
(:mod:`bench.run.few_shot_baseline`: the run's backbone frozen, a 1x1
convolution to a foreground logit, trained on the val masks with a fixed
recipe). Like the center baseline (:mod:`bench.study.center_row`) its map is
the same for every class and it is scored by the same code as the CAM, so its
GT-known loc, mean IoU, MaxBoxAcc, MaxBoxAccV2 and PxAP fill the table
(:data:`~bench.study.center_row.TABLE_COLUMNS`) and the classifier's columns
stay empty. It depends on the data, the map grid, the backbone and its
weights (:func:`few_shot_identity`), not on the pooling or the training: the
settings that share those share one row, trained and scored once on the run
:func:`~bench.study.center_row.baseline_runs` picks for the group's first
setting, and cached under the study folder (:data:`CACHE_DIR`, one folder per
key: re-rendering the report reuses it, a changed key trains anew; the folders of
keys no setting uses any more are kept, and named in one logged line). A
group whose baseline cannot be made (its dataset, val split or checkpoint
gone) is left out with one logged line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.atomic_files import TEMPORARY_SUFFIX
from bench.config import RunConfig, StudyConfig
from bench.errors import InputError
from bench.run.few_shot_baseline import PREDICTIONS, ensure_few_shot
from bench.study.center_row import (
    baseline_groups,
    baseline_identity,
    baseline_label,
    binned_rows,
    fixed_row,
    predictions_result,
)
from bench.study.tables import FixedRow
from bench.training.few_shot import RECIPE

FEW_SHOT_LABEL = "few-shot (val masks)"  # its cell in the compared key's column
CACHE_DIR = "few_shot"  # under the study folder: one folder per baseline key (bench.run.few_shot_baseline)


@dataclass(frozen=True)
class FewShotBaseline:
    """The few-shot baseline of the settings that share it: the run it was scored on, its cached folder and
    scores (``scores.json``: ``row``, methods.csv's columns, and ``training``)."""

    settings: tuple[tuple, ...]
    run: RunConfig
    folder: Path
    scores: dict


def few_shot_identity(config: RunConfig) -> tuple:
    """What the baseline depends on for the run ``config``: the center baseline's identity (data, map grid,
    scoring keys), the backbone's weights, and the training flip the recipe takes from the run."""
    model = config.model
    return (*baseline_identity(config), model.pretrained, model.weights, config.train.augment.hflip)


def few_shot_baselines(study: StudyConfig, finished: list[RunConfig],
                       log: Callable[[str], None] = print) -> list[FewShotBaseline]:
    """The few-shot baselines of the settings, one per group with the same :func:`few_shot_identity`, each
    trained and scored where ``<study folder>/few_shot/`` has no finished folder of its key.

    A group that cannot be done (an :class:`~bench.errors.InputError` or ``OSError``) is left out, said in one line.
    """
    out = []
    for settings, config in baseline_groups(study, finished, few_shot_identity):
        try:
            folder, scores = ensure_few_shot(config, study.study_dir / CACHE_DIR, log)
        except (InputError, OSError) as error:
            log(f"study {study.name}: few-shot baseline row left out for {baseline_label(study, settings)} "
                f"(scored on {config.name}): {error}")
            continue
        out.append(FewShotBaseline(settings, config, folder, scores))
    stale = stale_folders(study.study_dir / CACHE_DIR, [baseline.folder for baseline in out])
    if stale:
        log(f"study {study.name}: {len(stale)} cached few-shot folder(s) no setting uses now (an earlier data, "
            f"grid or backbone), kept: {', '.join(str(folder) for folder in stale)}; delete them to free the space")
    return out


def stale_folders(cache_root: Path, used: list[Path]) -> list[Path]:
    """The folders under ``cache_root`` other than ``used`` (and other than unfinished ``.tmp`` builds), sorted."""
    if not cache_root.is_dir():
        return []
    kept = {folder.resolve() for folder in used}
    return sorted(folder for folder in cache_root.iterdir() if folder.is_dir() and folder.resolve() not in kept
                  and not folder.name.endswith(TEMPORARY_SUFFIX))


def few_shot_table_rows(study: StudyConfig, baselines: list[FewShotBaseline]) -> list[FixedRow]:
    """The table rows of ``baselines`` (:func:`bench.study.center_row.fixed_row`, labelled :data:`FEW_SHOT_LABEL`)."""
    return [fixed_row(study, baseline.settings, FEW_SHOT_LABEL, baseline.scores["row"]) for baseline in baselines]


def few_shot_scale_rows(study: StudyConfig, baselines: list[FewShotBaseline]) -> list[dict]:
    """Each baseline's rows by object scale (:func:`bench.study.center_row.binned_rows` of its cached
    per-image rows)."""
    return [row for baseline in baselines
            for row in binned_rows(study, baseline.settings, FEW_SHOT_LABEL,
                                   predictions_result(baseline.run, baseline.folder / PREDICTIONS))]


def few_shot_note(baselines: list[FewShotBaseline]) -> str:
    """The tables' sentence on the few-shot row: what it trained on and how it was chosen ("" without one)."""
    if not baselines:
        return ""
    trained = " / ".join(dict.fromkeys(f"{baseline.scores['training']['images']} val images "
                                       f"({baseline.scores['training']['per_class']})" for baseline in baselines))
    return (f"The {FEW_SHOT_LABEL} row is a class-agnostic foreground map (the run's backbone, frozen, and a 1x1 "
            f"convolution) trained with full supervision on the {trained} with their masks, as wsolevaluation's "
            f"few-shot baseline; a fixed recipe (L-BFGS, at most {RECIPE.iterations} iterations, the last kept), so "
            "those images choose neither a stopping point nor tau (its fixed-tau cells use the config's tau and "
            "normalization; MaxBoxAcc(V2) and PxAP need none); scored like the CAM, its '-' cells are the "
            "classifier's.")
