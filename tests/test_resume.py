"""Nothing lost: a SIGKILLed run resumes to the same results, a NaN loss stops with its epoch and step and keeps
the last good checkpoint, partial folders are never reported, writes are atomic."""

import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import REPO, TINY_CONFIG

from bench.atomic_files import DiskFullError, atomic_path
from bench.commands.cli import describe_failure, main
from bench.config import load_config
from bench.run.folder import finished_runs, run_status
from bench.run.pipeline import prepare_dataset, run
from bench.training import loop as train
from bench.training.checkpoint import capture_rng_state, load_training_state, restore_rng_state, save_training_state


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.normal()  # leaves a cached Gaussian in NumPy's state
    save_training_state(tmp_path / "state.pt", {"rng": capture_rng_state()})
    expected = (random.random(), np.random.normal(), torch.rand(2))
    restore_rng_state(load_training_state(tmp_path / "state.pt")["rng"])
    again = (random.random(), np.random.normal(), torch.rand(2))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])
    assert [path.name for path in tmp_path.iterdir()] == ["state.pt"]


def test_a_full_disk_names_the_file_and_leaves_the_old_one(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(DiskFullError, match=rf"out of disk space writing {target} .*--resume"):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["metrics.json"]
    assert "out of memory; lower train.batch_size" in describe_failure(MemoryError())
    worker = RuntimeError("DataLoader worker (pid 12) is killed by signal: Killed. ")
    assert "lower train.num_workers" in describe_failure(worker)
    assert describe_failure(ValueError("a bug")) is None  # real bugs keep their traceback


def _cli_overrides(config):
    return [f"data_root={config.data_root}", f"results_dir={config.results_dir}"]


@pytest.mark.slow  # starts python -m bench run and kills it
def test_a_sigkilled_run_is_recognized_and_resumes_to_the_same_results(tiny_config, capsys):
    # One thread in the killed process, the resumed one and the whole run: the same arithmetic in all three.
    overrides = ["train.epochs=4", "threads=1"]
    whole = tiny_config(*overrides, "name=whole")
    killed = tiny_config(*overrides, "name=killed")
    prepare_dataset(whole)  # generated before the subprocess starts, so it starts training at once
    command = [sys.executable, "-m", "bench", "run", str(TINY_CONFIG), *_cli_overrides(killed), *overrides,
               "name=killed"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed.run_dir / "checkpoint.pt"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)  # the moment epoch 1's checkpoint exists: mid-run, no cleanup possible
    process.wait()
    assert process.returncode == -signal.SIGKILL
    state = load_training_state(checkpoint)
    assert 1 <= state["epoch"] < 4, state["epoch"]  # killed before the end
    print(f"killed after epoch {state['epoch']}")

    # The partial folder is recognizable and never counted as a result.
    assert run_status(killed.run_dir) == "interrupted"
    assert json.loads((killed.run_dir / "manifest.json").read_text())["status"] == "running"
    assert finished_runs(killed.results_dir) == []
    assert main(["run", str(TINY_CONFIG), *_cli_overrides(killed), *overrides, "name=killed"]) == 2
    assert "unfinished run (status: interrupted); pass --resume" in capsys.readouterr().err
    assert main(["run", str(TINY_CONFIG), *_cli_overrides(killed), "name=killed", "--resume"]) == 2
    error = capsys.readouterr().err
    assert "the config differs" in error and f"train.epochs: 4 -> {load_config(TINY_CONFIG).train.epochs}" in error

    assert main(["run", str(TINY_CONFIG), *_cli_overrides(killed), *overrides, "name=killed", "--resume"]) == 0
    run(whole, log=lambda message: None)
    for name in ("metrics.json", "predictions.csv", "val_selected/metrics.json", "val_selected/predictions.csv",
                 "val_by_epoch.csv"):
        assert (killed.run_dir / name).read_text() == (whole.run_dir / name).read_text()
    resumed = json.loads((killed.run_dir / "manifest.json").read_text())
    uninterrupted = json.loads((whole.run_dir / "manifest.json").read_text())

    def without_wall_time(history):
        return [{key: value for key, value in row.items() if key != "seconds"} for row in history]

    assert without_wall_time(resumed["train_history"]) == without_wall_time(uninterrupted["train_history"])
    assert resumed["val_selected_epoch"] == uninterrupted["val_selected_epoch"]
    assert resumed["resumed"][0]["after_epoch"] == state["epoch"]
    assert finished_runs(killed.results_dir) == [killed.run_dir, whole.run_dir]
    assert main(["run", str(TINY_CONFIG), *_cli_overrides(killed), *overrides, "name=killed", "--resume"]) == 2
    assert "already complete" in capsys.readouterr().err


def test_a_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(tiny_config, monkeypatch, capsys):
    config = tiny_config()
    steps = math.ceil(config.dataset.num_train / config.train.batch_size)  # per epoch
    calls = []
    real_loss = train.F.cross_entropy

    def loss_that_breaks_at_the_second_step_of_epoch_two(logits, labels):
        calls.append(1)
        loss = real_loss(logits, labels)
        return loss * float("nan") if len(calls) == steps + 2 else loss

    monkeypatch.setattr(train.F, "cross_entropy", loss_that_breaks_at_the_second_step_of_epoch_two)
    assert main(["run", str(TINY_CONFIG), *_cli_overrides(config)]) == 1
    error = capsys.readouterr().err
    assert f"epoch 2/{config.train.epochs}, step 2/{steps}: the training loss became nan" in error
    assert "the checkpoint of epoch 1 is kept" in error and "Traceback" not in error
    assert load_training_state(config.run_dir / "checkpoint.pt")["epoch"] == 1
    assert run_status(config.run_dir) == "failed" and finished_runs(config.results_dir) == []
    assert "NonFiniteLossError" in json.loads((config.run_dir / "manifest.json").read_text())["error"]


def test_figures_are_written_atomically_and_closed(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from bench.run.figures import save_figure

    target = tmp_path / "gallery.png"
    target.write_text("old")
    figure = plt.figure()

    def fail_midway(path, **options):
        path.write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(figure, "savefig", fail_midway)
    with pytest.raises(DiskFullError, match="gallery.png"):
        save_figure(figure, target)
    assert target.read_text() == "old" and [path.name for path in tmp_path.iterdir()] == ["gallery.png"]
    assert not plt.fignum_exists(figure.number)  # closed even on failure: no figure leaks in long studies
    figure = plt.figure(figsize=(2, 1))
    assert save_figure(figure, target, dpi=50) == target
    assert target.read_bytes().startswith(b"\x89PNG") and [path.name for path in tmp_path.iterdir()] == ["gallery.png"]
    assert not plt.fignum_exists(figure.number)
