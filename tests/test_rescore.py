"""``bench rescore``: box hits added to a finished run from its saved network, only where its scores reproduce."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import folder_fingerprint

from bench.commands.cli import main
from bench.run.folder import (
    BEST_EPOCH_FILE,
    BOX_HITS_FILE,
    CHECKPOINT_FILE,
    MANIFEST_FILE,
    PREDICTIONS_FILE,
    SELECTED_DIR,
)
from bench.run.rescore import rescore_box_hits, rescore_points
from bench.scoring.threshold_free_metrics import load_box_hits


@pytest.fixture
def run_without_hits(tiny_run, tmp_path):
    """A copy of the shared tiny run with its box hits removed, as a run scored before they existed; the
    removed files, by folder, to compare with."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run.config.run_dir, copy)
    removed = {}
    for folder in (copy, copy / SELECTED_DIR):
        if (folder / BOX_HITS_FILE).is_file():
            removed[folder] = load_box_hits(folder / BOX_HITS_FILE)
            (folder / BOX_HITS_FILE).unlink()
    return copy, removed


@pytest.mark.slow
def test_rescore_gives_back_the_runs_own_box_hits_and_changes_nothing_else(run_without_hits, capsys):
    copy, removed = run_without_hits
    # the tiny run's val-selected epoch is its last (5): both points are scored from checkpoint.pt
    assert rescore_points(copy) == [(copy, 5, copy / CHECKPOINT_FILE), (copy / SELECTED_DIR, 5, copy / CHECKPOINT_FILE)]
    assert list(removed) == [copy, copy / SELECTED_DIR]
    before = folder_fingerprint(copy)
    assert main(["rescore", str(copy)]) == 0
    for folder, original in removed.items():
        again = load_box_hits(folder / BOX_HITS_FILE)
        assert again.image_ids == original.image_ids
        assert np.array_equal(again.thresholds, original.thresholds) and np.array_equal(again.hits, original.hits)
    after = folder_fingerprint(copy)
    added = {f"{folder.relative_to(copy).as_posix()}/{BOX_HITS_FILE}".lstrip("./") for folder in removed}
    assert set(after) - set(before) == added  # no scratch folder left behind
    assert {name: after[name] for name in before} == before  # every other file untouched
    assert "reproduced byte for byte" in capsys.readouterr().out
    assert rescore_box_hits(copy, log=lambda message: None) == []  # already there: nothing to do


@pytest.mark.slow
def test_rescore_refuses_a_run_whose_scores_do_not_reproduce_and_writes_nothing(run_without_hits, capsys):
    copy, removed = run_without_hits
    lines = (copy / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = lines[3].replace(",1,", ",0,", 1) if ",1," in lines[3] else lines[3].replace(",0,", ",1,", 1)
    (copy / PREDICTIONS_FILE).write_text("".join(lines), encoding="utf-8")
    before = folder_fingerprint(copy)
    assert main(["rescore", str(copy)]) == 2
    error = capsys.readouterr().err
    assert f"{copy / PREDICTIONS_FILE}, line 4: scoring the saved network again does not reproduce it" in error
    assert folder_fingerprint(copy) == before  # not even the val-selected point got its hits


def test_an_earlier_val_selected_epoch_is_scored_from_best_epoch_pt(run_without_hits):
    copy, _ = run_without_hits
    manifest = json.loads((copy / MANIFEST_FILE).read_text(encoding="utf-8"))
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "val_selected_epoch": 3}), encoding="utf-8")
    assert rescore_points(copy) == [(copy, 5, copy / CHECKPOINT_FILE), (copy / SELECTED_DIR, 3, copy / BEST_EPOCH_FILE)]
    shutil.rmtree(copy / SELECTED_DIR)  # a run without val: only the final epoch
    assert rescore_points(copy) == [(copy, 5, copy / CHECKPOINT_FILE)]


def test_rescore_names_what_is_missing(tmp_path, run_without_hits, capsys):
    assert main(["rescore", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'} holds no finished run" in capsys.readouterr().err
    copy, _ = run_without_hits
    (copy / CHECKPOINT_FILE).unlink()
    assert main(["rescore", str(copy)]) == 2
    assert f"{copy / CHECKPOINT_FILE} not found: the run's saved network is needed" in capsys.readouterr().err


def test_a_network_is_scored_again_in_the_memory_layout_it_was_trained_in(tiny_config):
    # oneDNN's NHWC kernels sum in another order than NCHW's: a default-data run rescored in NCHW moved one box by
    # a pixel, so the layout is the run's (channels_last, default true) when its network is scored again.
    from bench.model.camnet import build_model
    from bench.run.pipeline import set_memory_layout

    for channels_last in (True, False):
        config = tiny_config(f"channels_last={str(channels_last).lower()}")
        network = build_model(config.model, 3, config.wsol)
        set_memory_layout(network, config)
        convs = [p for p in network.parameters() if p.dim() == 4 and p.shape[-1] > 1 and p.shape[1] > 1]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) == channels_last for p in convs)
