"""Shared fixtures, built once per session: the tiny synthetic dataset, a tiny run config, a finished tiny run."""

from pathlib import Path

import pytest
import torch
from helpers import TINY_CONFIG, FinishedRun, folder_fingerprint, tiny_run_config

from bench.html.run_page import write_run_page
from bench.run.pipeline import run


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A run with ``threads: N`` sets torch's process-wide thread count; later tests must not inherit it
    (float sums depend on the thread count, so tests that compare runs would compare different arithmetic)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data folder shared by the tests that run the tiny config (generated on first use)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_config(tiny_data_dir, tmp_path):
    """configs/tiny.yaml with data in the shared folder and results in this test's tmp_path."""
    def make(*overrides: str):
        return tiny_run_config(tiny_data_dir, tmp_path / "results", *overrides)
    return make


@pytest.fixture(scope="session")
def tiny_run(tiny_data_dir, tmp_path_factory) -> FinishedRun:
    """One finished run of configs/tiny.yaml as shipped (no overrides), for every test that only reads one.

    Read it, never write into it: a test that re-runs, overwrites or resumes a run makes its own
    (``tiny_config``) or works on a copy of this folder. Teardown fails if any file in it changed.
    """
    config = tiny_run_config(tiny_data_dir, tmp_path_factory.mktemp("tiny_run") / "results")
    metrics = run(config, log=lambda message: None, after_complete=write_run_page)  # as `bench run` does
    before = folder_fingerprint(config.run_dir)
    yield FinishedRun(config, metrics)
    after = folder_fingerprint(config.run_dir)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"a test wrote into the shared tiny run {config.run_dir}: {changed}"


@pytest.fixture(scope="session")
def tiny_study(tiny_data_dir, tmp_path_factory):
    """A finished study of two tiny runs (GAP and GMP, seed 0) with its report and pages: ``(study, runs)``."""
    from bench.config import load_study
    from bench.html.study_page import write_study_page
    from bench.study.runner import run_study

    folder = tmp_path_factory.mktemp("tiny_study")
    path = folder / "tiny_study.yaml"
    path.write_text(f"study:\n  base: {TINY_CONFIG}\n  grid:\n    model.pooling: [gap, gmp]\n    seed: [0]\n"
                    f"  set:\n    data_root: {tiny_data_dir}\n    results_dir: {folder / 'results'}\n"
                    f"  compare: [gmp]\n  bootstrap: 200\n")
    study, runs = load_study(path)
    run_study(study, runs, log=lambda message: None, run_page=write_run_page, study_page=write_study_page)
    return study, runs
