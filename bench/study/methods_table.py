"""A study's map methods (``study.methods``): ``bench methods`` on each finished run, then setting x method tables.

``methods_table.csv`` / ``methods_table.md`` hold one row per setting (every
grid key but ``seed``, e.g. the pooling) and method, each column of
:data:`METHOD_COLUMNS` as its mean over seeds, read from each run's
``methods/methods.csv`` (:mod:`bench.run.method_comparison`): localization,
the pointing game and the faithfulness metrics side by side, as ``bench
methods`` writes them, the faithfulness columns over the first
``faithfulness_images`` images of each run (said under the table).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from bench.atomic_files import atomic_path, write_text
from bench.config import RunConfig, StudyConfig
from bench.run.folder import METHODS_DIR, METHODS_TABLE
from bench.scoring.metric_names import METRICS, STUDY_METHOD_COLUMNS
from bench.study.results import config_value

METHOD_COLUMNS = STUDY_METHOD_COLUMNS
TABLE_STEM = "methods_table"


def read_methods_table(run_dir: Path) -> dict[str, dict[str, float]]:
    """A run's ``methods/methods.csv`` as ``{method: {column: value}}`` (empty if it has none)."""
    path = Path(run_dir) / METHODS_DIR / METHODS_TABLE
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {row.pop("method"): {key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)}


def ensure_methods(config: RunConfig, methods: Sequence[str], log: Callable[[str], None] = print) -> None:
    """Give a finished run a ``methods/`` holding at least ``methods``; one that has them all is kept.

    Otherwise it is made again for the methods it had and those asked for; so is one scored on the first
    images only (``bench methods --images``: ``all_images`` 0), which a study's tables never take.
    """
    from bench.run.method_comparison import write_methods_folder
    from bench.scoring.map_methods import METHODS  # the method library loads only when a study asks for methods

    have = read_methods_table(config.run_dir)
    every_image = all(row.get("all_images", 1.0) == 1.0 for row in have.values())  # files before the column: all
    if every_image and all(name in have for name in methods):
        return
    wanted = [name for name in METHODS if name in have or name in methods]
    log(f"{config.name}: map methods {', '.join(wanted)}")
    write_methods_folder(config.run_dir, wanted, overwrite=True, log=lambda message: None)


def write_methods_tables(study: StudyConfig, finished: list[RunConfig], folder: Path) -> str:
    """``methods_table.csv`` and ``.md`` from the runs' ``methods.csv`` (runs without one are left out); the md."""
    keys = [key for key, _ in study.grid if key != "seed"]
    records, faithful = [], set()
    for config in finished:
        for method, row in read_methods_table(config.run_dir).items():
            if method in study.methods:
                records.append({**{key: config_value(config, key) for key in keys}, "method": method,
                                **{column: row.get(column, float("nan")) for column in METHOD_COLUMNS}})
                faithful.add(int(row.get("faithfulness_images", 0)))
    if not records:
        return ""
    frame = pd.DataFrame.from_records(records)
    frame["method"] = pd.Categorical(frame["method"], categories=list(study.methods), ordered=True)
    grouped = frame.groupby([*keys, "method"], sort=False, observed=True)
    table = grouped[list(METHOD_COLUMNS)].mean()
    table.insert(0, "seeds", grouped.size())
    table = table.reset_index()
    with atomic_path(folder / f"{TABLE_STEM}.csv") as temporary:
        table.to_csv(temporary, index=False, float_format="%.6g", encoding="utf-8")
    header = [*keys, "method", "seeds", *METHOD_COLUMNS.values()]
    lines = [f"## Map methods: {' x '.join([*keys, 'method'])} (mean over seeds)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(keys) + "---|---:|" + "---:|" * len(METHOD_COLUMNS)]
    for record in table.to_dict("records"):
        cells = [str(record[key]) for key in [*keys, "method", "seeds"]]
        cells += ["-" if pd.isna(record[c]) else f"{record[c]:.{METRICS[c].digits}f}" for c in METHOD_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    counts = " or ".join(str(count) for count in sorted(faithful))
    lines += ["", f"Pointing game: every scored image. Faithfulness columns (deletion ... ROAD LeRF): the first "
              f"{counts} images of each run's split (`bench methods --faithfulness-images`; 0: not scored, -). "
              f"Each column is defined in docs/methods.md."]
    markdown = "\n".join(lines) + "\n"
    write_text(folder / f"{TABLE_STEM}.md", markdown)
    return markdown
