"""torchrun with 2 gloo processes on the tiny config: training completes, and the sharded evaluation
writes exactly what a single process writes from the same checkpoint."""

import json
import math
import os
import re
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, RUN_FILES, TINY_CONFIG, run_to_the_end

from bench.config import load_config
from bench.data.torch_dataset import WsolDataset, collate
from bench.model.camnet import build_model
from bench.run.figures import write_sweep_curves
from bench.run.pipeline import compact_maps, prepare_dataset
from bench.scoring.evaluation import SweepMeters, evaluate, sweep_split
from bench.scoring.threshold_free_metrics import sweep_summary
from bench.scoring.threshold_sweep import threshold_list
from bench.training.checkpoint import load_training_state
from bench.training.distributed import Context
from bench.training.loop import autocast


def test_my_batches_deals_whole_batches_round_robin():
    # 11 images in batches of 3: [0,1,2] [3,4,5] [6,7,8] [9,10]; rank 1 of 2 gets the 2nd and 4th.
    assert Context(rank=1, world_size=2).my_batches(11, 3) == [[3, 4, 5], [9, 10]]
    assert Context(rank=0, world_size=2).my_batches(11, 3) == [[0, 1, 2], [6, 7, 8]]
    assert Context().my_batches(4, 3) == [[0, 1, 2], [3]]


@pytest.mark.slow  # starts a 2-process torchrun job
def test_two_processes_train_and_shard_evaluation_identically_to_one(tiny_config, tmp_path):
    # eval.batch_size=5 over 24 images: 5 batches, rank 0 scores 3 and rank 1 scores 2; the gallery (8 images)
    # spans rank 0's first batch and rank 1's first batch. The 24 val images (tau calibration) are 5 batches too.
    overrides = ["eval.batch_size=5", "eval.gallery_size=8", "precision=fp32"]  # bit for bit: one precision
    config = tiny_config(*overrides)
    prepare_dataset(config)  # generate the shared dataset before the two processes read it
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "bench",
               "run", str(TINY_CONFIG), f"data_root={config.data_root}", f"results_dir={config.results_dir}",
               *overrides]
    # 20 s on an idle 2-core machine; the margin is for a machine shared with other jobs.
    done = run_to_the_end(command, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    # One progress bar per job: the first epoch's bar starts (0%, no loss yet) once, on rank 0 only.
    epochs = config.train.epochs
    assert len(re.findall(rf"epoch 1/{epochs}: +0%\|[^\r\n]*\?it/s\]", done.stderr)) == 1
    folder = config.run_dir
    assert {path.name for path in folder.iterdir()} == RUN_FILES  # rank 1 wrote nothing of its own
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["world_size"] == 2
    assert [epoch["epoch"] for epoch in manifest["train_history"]] == list(range(1, epochs + 1))

    # The checkpoint loads in a single process; evaluating it there reproduces the files byte for byte.
    state = load_training_state(folder / "checkpoint.pt")
    assert state["epoch"] == epochs
    dataset = prepare_dataset(config)
    model = build_model(config.model, num_classes=len(dataset.class_names))
    model.load_state_dict(state["model"])
    if config.channels_last:  # the memory layout the run evaluated in (kernels differ in the last bits)
        model.to(memory_format=torch.channels_last)

    def loader(samples):
        return torch.utils.data.DataLoader(
            WsolDataset(samples, config.model.input_size, model.mean, model.std, train=False),
            batch_size=config.eval.batch_size, collate_fn=collate)

    samples, val_samples = dataset.splits["test"], dataset.splits["val"]
    sweep, val_sweep = (SweepMeters.for_thresholds(threshold_list(config.eval.num_thresholds)) for _ in range(2))
    result = evaluate(model, loader(samples), samples, config.eval, torch.device("cpu"), tmp_path / "single.csv",
                      sweep)
    sweep_split(model, loader(val_samples), val_samples, config.eval, torch.device("cpu"), val_sweep)
    assert (tmp_path / "single.csv").read_text() == (folder / "predictions.csv").read_text()
    saved = json.loads((folder / "metrics.json").read_text())
    assert {key: saved[key] for key in result.metrics} == result.metrics
    # The threshold sweep (test counts and val calibration) summed over the 2 ranks equals one process's.
    assert val_sweep.boxes.num_images == config.dataset.num_val and sweep.pixels.num_images == config.dataset.num_test
    assert saved["sweep"] == sweep_summary(sweep.boxes, sweep.pixels, val_sweep.boxes, "test",
                                           config.eval.normalization, sweep.protocol)
    write_sweep_curves(sweep.boxes, val_sweep.boxes, tmp_path / "curves.csv", tmp_path / "curves.png", "single", [])
    assert (tmp_path / "curves.csv").read_text() == (folder / "box_acc_curves.csv").read_text()
    cams = np.load(folder / "cams.npz")
    assert list(cams["image_ids"]) == result.image_ids
    assert np.array_equal(cams["top1"], compact_maps(np.stack(result.top1_cams)))
    assert np.array_equal(cams["gt_class"], compact_maps(np.stack(result.gt_cams)))


def test_checks_against_the_job_and_the_machine(tiny_config):
    from bench.config import ConfigError
    from bench.run.pipeline import check_runtime

    with pytest.raises(ConfigError, match=r"'train.batch_size' is 16.*divisible by the number of processes \(3\)"):
        check_runtime(tiny_config(), Context(world_size=3))
    with pytest.raises(ConfigError, match="'precision' is 'fp16', which needs a CUDA GPU.*precision=bf16"):
        check_runtime(tiny_config("precision=fp16"), Context())
    check_runtime(tiny_config("precision=bf16"), Context(world_size=2))  # bf16 autocast runs on CPU


def test_bf16_autocast_run_completes_on_cpu(tiny_config, monkeypatch):
    from bench.run import pipeline
    from bench.training import loop as train

    entered = []  # the precision of every autocast context the run opens (training steps and evaluation)

    def recording_autocast(device, precision):
        entered.append(precision)
        return autocast(device, precision)

    monkeypatch.setattr(train, "autocast", recording_autocast)
    monkeypatch.setattr(pipeline, "autocast", recording_autocast)
    config = tiny_config("precision=bf16", "channels_last=true", "train.epochs=1")
    metrics = pipeline.run(config, log=lambda message: None, context=Context())
    assert metrics["num_images"] == config.dataset.num_test
    assert load_config(config.run_dir / "config.yaml").precision == "bf16"
    # One epoch's steps at least, all in bf16, and nothing fell back to fp32.
    assert len(entered) >= math.ceil(config.dataset.num_train / config.train.batch_size) and set(entered) == {"bf16"}
    manifest = json.loads((config.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["precision"] == "bf16"
    assert all(math.isfinite(epoch["loss"]) for epoch in manifest["train_history"])
    assert all(0.0 <= metrics[key] <= 100.0 for key in ("top1_cls_error", "top1_loc_error", "gt_known_loc_acc"))


@pytest.mark.slow  # torchrun, two processes
@pytest.mark.parametrize("method", ["spg"])
def test_two_processes_train_a_training_time_method(tiny_config, method):
    """DDP through a method's training pass (SPG: backbone taps, its own head, extra loss terms) to a complete run."""
    overrides = [f"wsol.method={method}", "wsol.head_channels=8", "train.epochs=1", "precision=fp32"]
    config = tiny_config(*overrides)
    prepare_dataset(config)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "bench",
               "run", str(TINY_CONFIG), f"data_root={config.data_root}", f"results_dir={config.results_dir}",
               *overrides]
    done = run_to_the_end(command, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((config.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["world_size"] == 2
    assert load_config(config.run_dir / "config.yaml").wsol.method == method
    # The loss's terms, each in the history and the epoch's log line (rank 0's batches).
    header = (config.run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["epoch", "loss", "accuracy", "loss_ce", "loss_spg_b2", "loss_spg_b1"], header
    assert "epoch 1/1: loss " in done.stdout and " (ce " in done.stdout and ", spg_c " in done.stdout
