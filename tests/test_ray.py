"""A study's runs as Ray tasks (--executor ray): same folders and tables as a sequential study, retries, failures.

The tests that run Ray start a local Ray once for the module, of 2 CPUs or torch's default thread count if
larger (a task asks for one CPU per thread by default), or connect to the cluster at ``RAY_ADDRESS`` when it is
set. They are skipped where Ray is not installed (``pip install -e '.[ray]'``; ``make test EXECUTOR=ray`` and the
CI install it).
"""

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import REPO, TINY_CONFIG, read_rows

from bench.commands.cli import main
from bench.config import ConfigError, load_config, load_study, save_config
from bench.study.ray_executor import (
    KILL_HOOK,
    MARKER_FILE,
    RayExecutor,
    RayStartError,
    RunResources,
    SharedFolderError,
    check_feasible,
    check_gpus_per_process,
    check_marker,
    default_resources,
    marker_path,
    parse_resources,
    start_ray,
    task_num_workers,
    task_threads,
    torchrun_was_killed,
)
from bench.study.runner import run_study

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install -e '.[ray]')")
# Written byte for byte the same by a sequential and a Ray study of the same runs.
REPORT_FILES = ("table.csv", "table.md", "table.tex", "comparison.csv", "comparison.md", "table_val_selected.csv",
                "comparison_val_selected.csv")


def write_study(folder, data_dir, name="study"):
    """Two tiny runs (GAP, GMP; seed 0), ``threads`` left at its default (0: torch's default), as a user writes it."""
    path = folder / f"{name}.yaml"
    path.write_text(f"""\
study:
  base: {TINY_CONFIG}
  grid:
    model.pooling: [gap, gmp]
  set:
    data_root: {data_dir}
    results_dir: {folder / 'results'}
  compare: [gmp]
  bootstrap: 200
""")
    return path


@pytest.fixture
def two_default_threads():
    """torch's default thread count is 2 in this test, whatever the machine (conftest restores it after)."""
    torch.set_num_threads(2)


# ----------------------------------------------------------------------------- without Ray


def test_run_resources_parse_and_bad_ones_name_the_flag():
    assert parse_resources("cpu=2,gpu=1") == RunResources(2.0, 1.0)
    assert parse_resources("gpu=0.5") == RunResources(None, 0.5)  # CPUs: the default, one per torch thread
    assert parse_resources("") == RunResources() == RunResources(cpus=None, gpus=0.0)  # no --run-resources
    for text, fragment in (("cpu=2,tpu=1", "'tpu=1' in 'cpu=2,tpu=1' is not valid"),
                           ("cpu=two", "'cpu=two'"), ("cpu=1,cpu=2", "each once"), ("gpu=-1", "N a number >= 0"),
                           ("cpu=0.5", "a run needs at least 1 CPU")):
        with pytest.raises(ConfigError, match="--run-resources") as error:
            parse_resources(text)
        assert fragment in str(error.value)


def test_the_marker_check_names_the_missing_file(tmp_path):
    marker = tmp_path / MARKER_FILE
    with pytest.raises(SharedFolderError, match=f"{marker} is missing.*shared") as error:
        check_marker(marker, "abc")
    assert "results_dir=" in str(error.value)
    marker.write_text("other\n")
    with pytest.raises(SharedFolderError, match="another study's token"):
        check_marker(marker, "abc")
    marker.write_text("abc\n")
    check_marker(marker, "abc")


def test_executor_flags_are_refused_where_they_do_not_apply(tmp_path, tiny_data_dir, capsys):
    for check in ([], ["--check"]):  # a single run: refused before its config is read, whatever the flags
        assert main(["run", str(TINY_CONFIG), "--executor", "ray", *check]) == 2
        assert capsys.readouterr().err == (f"config error: --executor ray spreads the runs of a study file; "
                                           f"{TINY_CONFIG} is a single run (run it without --executor, or with "
                                           f"torchrun for several processes)\n")
    path = write_study(tmp_path, tiny_data_dir)
    assert main(["run", str(path), "--executor", "ray", "--run-resources", "cpu=1,disk=3"]) == 2
    assert "--run-resources: 'disk=3'" in capsys.readouterr().err
    assert main(["run", str(path), "--executor", "ray", "--max-retries", "-1"]) == 2
    assert "--max-retries must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # refused before anything was written


def test_a_task_runs_the_thread_count_a_sequential_study_of_the_same_file_runs():
    # threads unset (0, torch's default): 2 per process on a 2-core machine, as the sequential study runs it.
    assert task_threads(0, 1, RunResources(cpus=2), default_threads=2) == 2
    assert task_threads(0, 2, RunResources(cpus=2), default_threads=2) == 1  # torchrun: OMP_NUM_THREADS=1
    assert task_threads(3, 1, RunResources(cpus=1), default_threads=2) == 3  # set in the study: kept
    with pytest.raises(ConfigError, match=r"'threads' is 0 .* 2 thread\(s\) per process .* cpu=1 .* threads=N"
                                          r".* --run-resources cpu=2 \(what leaving --run-resources out gives\)"):
        task_threads(0, 1, RunResources(cpus=1), default_threads=2)  # used to run 1 thread: other numbers


def test_without_run_resources_a_task_gets_one_cpu_per_thread_of_the_sequential_study():
    unset, three = load_config(TINY_CONFIG), load_config(TINY_CONFIG, ["threads=3"])
    assert default_resources(RunResources(), [unset], 1, default_threads=2) == RunResources(2.0, 0.0)
    assert default_resources(RunResources(), [unset], 1, default_threads=16) == RunResources(16.0, 0.0)
    assert default_resources(RunResources(), [unset, three], 1, default_threads=2) == RunResources(3.0, 0.0)
    assert default_resources(RunResources(), [unset], 4, default_threads=16) == RunResources(4.0, 0.0)  # 1 each
    assert default_resources(RunResources(gpus=1), [three], 2, default_threads=2) == RunResources(6.0, 1.0)
    assert default_resources(RunResources(cpus=5), [three], 1, default_threads=2) == RunResources(5.0, 0.0)
    # The defaults always agree: the README's `make benchmark EXECUTOR=ray` was refused on every multi-core machine.
    executor = RayExecutor()
    assert executor.plan([unset], default_threads=2) == RunResources(2.0, 0.0)
    assert RayExecutor(RunResources(gpus=2), nproc=2).plan([unset], default_threads=8) == RunResources(2.0, 2.0)
    with pytest.raises(ConfigError, match=r"'threads' is 0 .* cpu=1 "):
        RayExecutor(RunResources(cpus=1)).plan([unset], default_threads=2)


def test_a_refused_ray_study_starts_nothing_and_writes_nothing(tmp_path, tiny_data_dir, two_default_threads,
                                                               monkeypatch, capsys):
    from bench.study.runner import PendingRun

    path = write_study(tmp_path, tiny_data_dir)
    # Checked before Ray is looked for: the message is the threads', not "Ray is not installed".
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    assert main(["run", str(path), "--executor", "ray", "--run-resources", "cpu=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: 'threads' is 0 (torch's default), which is 2 thread(s) per process here")
    assert err.endswith("or ask for --run-resources cpu=2 (what leaving --run-resources out gives)\n")
    assert not (tmp_path / "results").exists()
    # The executor itself checks before it imports Ray or makes a folder (import ray would fail here).
    monkeypatch.setitem(sys.modules, "ray", None)
    study, runs = load_study(path)
    with pytest.raises(ConfigError, match=r"'threads' is 0 .* cpu=1 "):
        RayExecutor(RunResources(cpus=1))(study, [PendingRun(config, "missing") for config in runs], print)
    assert not (tmp_path / "results").exists()


def test_check_says_how_a_ray_study_would_run_without_ray_and_writes_nothing(tmp_path, tiny_data_dir,
                                                                            two_default_threads, monkeypatch,
                                                                            capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    path = write_study(tmp_path, tiny_data_dir)
    study_dir = tmp_path / "results" / "study"
    assert main(["run", str(path), "--executor", "ray", "--check"]) == 0
    assert capsys.readouterr().out == (f"study study: 2 runs (0 finished and reused, 2 to run as Ray tasks of 2 CPU "
                                       f"each (one CPU per torch thread, as a sequential study runs the runs)) -> "
                                       f"{study_dir}/; checked, nothing run\n")
    assert main(["run", str(path), "--executor", "ray", "--check", "--run-resources", "cpu=4,gpu=1"]) == 0
    assert "2 to run as Ray tasks of 4 CPU, 1 GPU each) -> " in capsys.readouterr().out
    assert main(["run", str(path), "--check"]) == 0
    assert "2 to run one after another in this process) -> " in capsys.readouterr().out
    assert not (tmp_path / "results").exists()
    # Without --check, the missing Ray is named with its fix.
    assert main(["run", str(path), "--executor", "ray"]) == 2
    assert "--executor ray needs Ray, which is not installed: pip install -e '.[ray]'" in capsys.readouterr().err
    # The study's own refusals are checked too: a finished run folder of another config (7 epochs).
    _, runs = load_study(path)
    other = dataclasses.replace(runs[0], train=dataclasses.replace(runs[0].train, epochs=7))
    runs[0].run_dir.mkdir(parents=True)
    save_config(other, runs[0].run_dir / "config.yaml")
    (runs[0].run_dir / "manifest.json").write_text(json.dumps({"status": "complete"}))
    assert main(["run", str(path), "--executor", "ray", "--check"]) == 2
    assert "1 finished run folder(s) under " in capsys.readouterr().err
    assert main(["run", str(path), "--executor", "ray", "--check", "--overwrite"]) == 0
    assert "(0 finished and reused, 2 to run as Ray tasks" in capsys.readouterr().out
    assert sorted(p.name for p in study_dir.rglob("*")) == ["config.yaml", "manifest.json", "pooling-gap", "runs"]


def test_loader_workers_fit_the_task_and_gpus_are_one_per_process():
    assert task_num_workers(4, RunResources(cpus=1), 1) == 0  # the one CPU trains
    assert task_num_workers(4, RunResources(cpus=4), 1) == 3
    assert task_num_workers(4, RunResources(cpus=8), 2) == 3
    assert task_num_workers(2, RunResources(cpus=16), 1) == 2  # never more than the config asks
    check_gpus_per_process(RunResources(gpus=2), 2)
    check_gpus_per_process(RunResources(gpus=0.5), 1)
    with pytest.raises(ConfigError, match=r"--nproc 2 with --run-resources gpu=1: .* gpu=2"):
        check_gpus_per_process(RunResources(gpus=1), 2)  # both ranks used to land on cuda:0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_checks_a_ray_study_before_it_installs_ray(tmp_path):
    # A stand-in venv whose python logs its calls and refuses pip: what make runs, in order, shows.
    venv, calls = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1 $2" = "-m pip" ] && exit 99\n'
                      f'exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: the venv counts as set up
    for config, args, message in (
            ("configs/tiny.yaml", "", "configs/tiny.yaml is a single run"),
            ("configs/tiny_ray.yaml", "train.lr=-1", "'train.lr' is -1")):
        calls.unlink(missing_ok=True)
        result = subprocess.run(["make", "--no-print-directory", "benchmark", "EXECUTOR=ray", f"CONFIG={config}",
                                 f"ARGS={args} results_dir={tmp_path / 'results'}", f"VENV={venv}"],
                                cwd=REPO, capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert calls.read_text().splitlines() == [
            f"-m bench run {config} {args} results_dir={tmp_path / 'results'} --executor ray --check".replace(
                "  ", " ")]  # only the check ran: no pip install of Ray, no run
    assert not (venv / ".installed-ray").exists() and not (tmp_path / "results").exists()


def test_an_infeasible_request_is_refused_naming_the_nodes():
    nodes = [{"CPU": 2.0}, {"CPU": 8.0, "GPU": 1.0}]
    check_feasible(RunResources(cpus=8, gpus=1), nodes)
    with pytest.raises(ConfigError, match=r"cpu=4,gpu=2: no node .* 2 CPU / 0 GPU, 8 CPU / 1 GPU"):
        check_feasible(RunResources(cpus=4, gpus=2), nodes)
    # The default CPUs (one per thread of the driver's machine) on a cluster of smaller nodes: the fix is threads.
    with pytest.raises(ConfigError, match=r"cpu=16,gpu=0, the CPUs by default \(one per torch thread .* no node "
                                          r".* \(nodes: 2 CPU / 0 GPU, 8 CPU / 1 GPU\)\. Set threads=N in the study"):
        check_feasible(RunResources(cpus=16), nodes, given=False)


def test_each_driver_has_its_own_marker(tmp_path):
    assert marker_path(tmp_path, "ab") != marker_path(tmp_path, "cd")
    assert marker_path(tmp_path, "ab").name == f"{MARKER_FILE}-ab"


def test_a_killed_rank_is_told_from_a_rank_that_raised():
    killed = ("=== attempt 1 started on h\n[...]\n=== attempt 2 started on h\nFailures:\n  exitcode  : -9 "
              "(pid: 123)\n")
    assert torchrun_was_killed(1, killed)
    raised = "=== attempt 1 started on h\n  exitcode  : -9\n=== attempt 2 started on h\n  exitcode  : 1\n"
    assert not torchrun_was_killed(1, raised)  # only this attempt's part counts
    assert torchrun_was_killed(-15, "")


def test_an_unfinished_head_mode_run_is_run_again_from_scratch(tmp_path, tiny_data_dir):
    from helpers import tiny_run_config

    from bench.config import save_config
    from bench.study.runner import run_state

    for mode, state in (("full", "interrupted"), ("head", "partial")):
        config = tiny_run_config(tiny_data_dir, tmp_path / mode, f"train.mode={mode}")
        config.run_dir.mkdir(parents=True)
        save_config(config, config.run_dir / "config.yaml")
        (config.run_dir / "manifest.json").write_text(json.dumps({"status": "failed"}))
        assert run_state(config) == state  # head used to be "interrupted": --resume, refused for head mode


# ----------------------------------------------------------------------------- on a local Ray


@pytest.fixture(scope="module")
def local_ray():
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        ray.init(num_cpus=max(2, torch.get_num_threads()), include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sequential_study(tmp_path_factory, tiny_data_dir):
    """The two-run study run one run after another, here, with torch's default threads: the reference a Ray
    study with its default settings must reproduce."""
    folder = tmp_path_factory.mktemp("sequential")
    study, runs = load_study(write_study(folder, tiny_data_dir))
    run_study(study, runs, log=lambda message: None)
    return study


@needs_ray
@pytest.mark.slow
def test_a_ray_study_whose_worker_is_killed_gives_the_sequential_tables(tmp_path, tiny_data_dir, sequential_study,
                                                                         local_ray, monkeypatch):
    # Ray with its defaults (no --run-resources, threads unset), as `make benchmark EXECUTOR=ray` runs it. GMP's
    # worker is SIGKILLed right after its first epoch's checkpoint, once; Ray reports the dead worker and the
    # study starts the run again, which continues from that checkpoint.
    monkeypatch.setenv(KILL_HOOK, f"pooling-gmp@{tmp_path / 'killed-once'}")
    study, runs = load_study(write_study(tmp_path, tiny_data_dir))
    messages = []
    threads = torch.get_num_threads()  # torch's default here: what the sequential study ran
    folder = run_study(study, runs, log=messages.append, executor=RayExecutor(poll_seconds=0.1))
    assert (tmp_path / "killed-once").exists()  # the hook did kill it
    for name in REPORT_FILES:
        assert (folder / name).read_bytes() == (sequential_study.study_dir / name).read_bytes(), name
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["pooling-gap", "pooling-gmp"]
    for config in runs:
        sequential = sequential_study.study_dir / "runs" / config.name
        assert {p.name for p in config.run_dir.iterdir()} == {p.name for p in sequential.iterdir()}
        for name in ("metrics.json", "predictions.csv", "val_selected/metrics.json"):
            assert (config.run_dir / name).read_bytes() == (sequential / name).read_bytes(), (config.name, name)
    manifest = json.loads((runs[1].run_dir / "manifest.json").read_text())
    assert manifest["resumed"][0]["after_epoch"] == 1 and manifest["torch_threads"] == threads
    assert json.loads((sequential_study.study_dir / "runs" / "pooling-gmp" / "manifest.json").read_text())[
        "torch_threads"] == threads
    assert "resumed" not in json.loads((runs[0].run_dir / "manifest.json").read_text())
    assert not list(folder.glob(f"{MARKER_FILE}*"))  # the driver removes its marker

    # One line per run as it starts, dies, finishes; an overall count; the run's own output in its log file.
    events = [m for m in messages if m.startswith("study study: ")]
    assert events[0] == f"study study: 2 runs (0 finished and reused) -> {folder}/"
    assert events[1].startswith(f"study study: 2 run(s) as Ray tasks of {threads} CPU each on a Ray cluster of ")
    assert any(m.startswith("study study: pooling-gmp: its worker died (") and
               "retrying from its last checkpoint (attempt 2 of 3)" in m for m in events), events
    assert sum(" started" in m for m in events) == 3  # gap, gmp, gmp again
    finished = [m for m in events if " finished in " in m]
    assert {m.split("] ")[1].split(" ")[0] for m in finished} == {"pooling-gap", "pooling-gmp"}
    assert [m.split("] ")[0][-4:] for m in finished] == ["[1/2", "[2/2"]
    assert "study study: 2 of 2 run(s) finished" in messages
    log = (folder / "logs" / "pooling-gmp.log").read_text()
    assert "=== attempt 1 started on " in log and "=== attempt 2 started on " in log
    epochs = runs[1].train.epochs
    assert f"resuming after epoch 1/{epochs}" in log and f"epoch {epochs}/{epochs}: loss" in log
    assert "it/s" not in log  # no progress bars: the driver's lines are the progress

    # Run again: every run is finished and reused, no task is started.
    messages.clear()
    run_study(study, runs, log=messages.append, executor=RayExecutor())
    assert messages[0] == f"study study: 2 runs (2 finished and reused) -> {folder}/"
    assert not any(" started" in m for m in messages)


@needs_ray
@pytest.mark.slow
def test_a_run_whose_worker_always_dies_fails_for_good_and_the_report_covers_the_rest(tmp_path, tiny_data_dir,
                                                                                     local_ray, monkeypatch, capsys):
    monkeypatch.setenv(KILL_HOOK, "pooling-gmp")  # every attempt dies after the epoch it trains
    path = write_study(tmp_path, tiny_data_dir)
    # Resources given: one CPU and one thread per run.
    assert main(["run", str(path), "threads=1", "--executor", "ray", "--run-resources", "cpu=1",
                 "--max-retries", "1"]) == 1
    out, err = capsys.readouterr()
    log = tmp_path / "results" / "study" / "logs" / "pooling-gmp.log"
    assert ("error: study study: 1 run(s) failed for good: pooling-gmp: its worker died 2 time(s) "
            f"(WorkerCrashedError) (log: {log})") in err
    assert "study study: [2/2] pooling-gmp FAILED: its worker died 2 time(s)" in out
    assert "study study: 2 run(s) as Ray tasks of 1 CPU each on " in out
    assert "retrying from its last checkpoint (attempt 2 of 2)" in out
    assert "1 run(s) unfinished, left out of the report: pooling-gmp" in out
    rows = read_rows(tmp_path / "results" / "study" / "table.csv")
    assert [row["model.pooling"] for row in rows] == ["gap", "center baseline", "few-shot (val masks)"]  # the run that finished
    manifest = json.loads((tmp_path / "results" / "study" / "runs" / "pooling-gmp" / "manifest.json").read_text())
    assert manifest["resumed"][0]["after_epoch"] == 1  # the second attempt did continue from the checkpoint


@needs_ray
def test_a_worker_that_cannot_see_the_results_folder_stops_the_study_before_any_run(tmp_path, tiny_data_dir,
                                                                                   local_ray, monkeypatch, capsys):
    from bench.study import ray_executor

    def elsewhere(marker, token):  # as if the driver's folder were not the workers' (no shared filesystem)
        marker.parent.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(ray_executor, "_write_marker", elsewhere)
    path = write_study(tmp_path, tiny_data_dir)
    assert main(["run", str(path), "--executor", "ray"]) == 2
    marker = tmp_path / "results" / "study" / MARKER_FILE
    assert f"Ray worker on host {os.uname().nodename}: {marker}-" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # the folders the driver made for its marker are gone again


@needs_ray
@pytest.mark.slow
def test_a_search_fans_its_trials_and_final_runs_out_as_ray_tasks(tmp_path, tiny_data_dir, local_ray):
    from bench.study.search import run_search

    path = tmp_path / "search.yaml"
    path.write_text(f"""\
study:
  base: {TINY_CONFIG}
  grid:
    model.pooling: [gap, gmp]
    seed: [0]
  set:
    data_root: {tiny_data_dir}
    results_dir: {tmp_path / 'results'}
    train.epochs: 2
  search:
    trials: 1
    space:
      train.lr: {{log_uniform: [0.001, 0.01]}}
  bootstrap: 200
""")
    study, trials = load_study(path)
    messages = []
    folder = run_search(study, trials, log=messages.append, executor=RayExecutor(poll_seconds=0.1))
    assert [(r["run"], r["state"]) for r in read_rows(folder / "trials.csv")] == [
        ("pooling-gap_trial-0", "complete"), ("pooling-gmp_trial-0", "complete")]
    assert sum(" started" in m for m in messages) == 4  # 2 trials, then 2 final runs, each a Ray task
    for name in ("pooling-gap_seed-0", "pooling-gmp_seed-0"):
        assert json.loads((folder / "runs" / name / "metrics.json").read_text())["split"] == "test"
    messages.clear()
    run_search(study, trials, log=messages.append)  # sequential now: everything is reused
    assert "(2 of 2 finished and reused)" in messages[0] and not any("training tiny_cnn" in m for m in messages)


@needs_ray
def test_a_ray_that_cannot_start_is_one_line_with_the_way_out(monkeypatch, capsys):
    import ray

    from bench.commands.cli import describe_failure

    def timed_out(**options):
        assert options == {"address": None, "include_dashboard": False}  # local: no dashboard
        raise Exception("The current node timed out during startup.")  # what Ray said on a loaded machine

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "init", timed_out)
    with pytest.raises(RayStartError) as caught:
        start_ray(None)
    line = describe_failure(caught.value)
    assert line.startswith("could not start a local Ray on this machine (Exception: The current node timed out")
    assert "nothing of the study ran" in line and "ray start --head" in line and "RAY_ADDRESS=auto" in line

    def unreachable(**options):
        assert options == {"address": "10.0.0.9:6379"}  # a cluster: its own dashboard
        raise ConnectionError("no Ray at 10.0.0.9:6379")

    monkeypatch.setattr(ray, "init", unreachable)
    with pytest.raises(RayStartError, match=r"could not reach the Ray cluster at 10.0.0.9:6379 \(ConnectionError"):
        start_ray("10.0.0.9:6379")
