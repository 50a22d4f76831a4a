"""Shared fixtures: a tiny run config and a tiny synthetic dataset, built once per session."""

from pathlib import Path

import pytest
from helpers import TINY_CONFIG

from bench.config import load_config


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A data folder shared by the tests that run the tiny config (generated on first use)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def tiny_config(tiny_data_dir, tmp_path):
    """configs/tiny.yaml with data in the shared folder and results in this test's tmp_path."""
    def make(*overrides: str):
        return load_config(TINY_CONFIG, [f"data_root={tiny_data_dir}", f"results_dir={tmp_path / 'results'}",
                                         *overrides])
    return make
