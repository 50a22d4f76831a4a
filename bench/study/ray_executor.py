"""A study's runs as Ray tasks, in parallel over the CPUs and GPUs of a Ray cluster (``--executor ray``).

Ray (https://docs.ray.io) is an optional dependency: ``pip install -e '.[ray]'``.
Each pending run of the grid becomes one Ray task that asks for
:class:`RunResources` (``--run-resources cpu=2,gpu=1``; by default as many CPUs
as the run has torch threads, :func:`default_resources`); the run inside it uses
the torch threads a sequential study of the same file uses (:func:`task_threads`:
``threads``, a speed-only key, so a finished run is still reused) and the GPUs
Ray assigned it (Ray sets ``CUDA_VISIBLE_DEVICES``). With ``nproc`` > 1 the task
starts ``torchrun`` for its run, ``nproc`` processes sharing the task's CPUs and GPUs.
:meth:`RayExecutor.plan` checks all this before Ray is imported or anything written.

Every task writes the run folder exactly as a sequential study does, so the
folders and the report are the same; each run's output goes to
``<study>/logs/<run>.log`` instead of the terminal, and the driver prints one
line per run as it starts, finishes or fails. A **shared filesystem** is
assumed: the driver and every node see ``results_dir`` and ``data_root`` at
the same paths. Before any run the driver writes a marker file into the study
folder and refuses to start unless a task on every node reads it back.

A task whose worker process dies (killed, out of memory, node lost) is
submitted again, up to ``max_retries`` times, and continues the run from its
last checkpoint. A run that raises an error fails for good at once (the same
config would raise it again). The study then names the failed runs and writes
the report for the others (:func:`bench.study.runner.run_study`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.atomic_files import write_text
from bench.config import ConfigError, RunConfig, StudyConfig, save_config
from bench.run.folder import INTERRUPTED, MANIFEST_FILE, running_process
from bench.study.results import StudyError
from bench.study.runner import PendingRun, run_pending, run_state

MARKER_FILE = ".ray-shared-folder-check"
LOGS_DIR = "logs"
# Test hook, read by the driver: "<run name>" SIGKILLs that run's worker after the first epoch it trains (and
# saves), on every attempt; "<run name>@<file>" only while <file> does not exist (the first attempt creates it).
KILL_HOOK = "WSOL_BENCH_TEST_KILL_AFTER_CHECKPOINT"


class RankDiedError(RuntimeError):
    """A torchrun rank (or torchrun itself) was killed by a signal: retried like a dead Ray worker."""


class SharedFolderError(StudyError):
    """A Ray worker cannot see the study folder the driver wrote (no shared filesystem)."""


class RayStartError(RuntimeError):
    """``ray.init`` failed (a local Ray that timed out starting, a cluster not reachable): nothing of the study ran."""


def start_ray(address: str | None) -> None:
    """``ray.init`` for a study: a local Ray without its dashboard, or the cluster at ``address`` / $RAY_ADDRESS.

    Its failure becomes one :class:`RayStartError` line that says what to do (exit code 1): a local Ray can time out
    starting on a loaded machine ("node timed out during startup"), which retrying or a Ray started by hand fixes.
    """
    import ray

    where = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address, **({} if where else {"include_dashboard": False}))
    except Exception as error:  # noqa: BLE001 - whatever Ray raised, said in one line with the way out
        what = f"reach the Ray cluster at {where}" if where else "start a local Ray on this machine"
        hint = ("check that the cluster is up (ray status) and the address" if where else
                "a loaded machine can make it time out: run again when the load falls, or start Ray yourself "
                "(ray start --head) and pass RAY_ADDRESS=auto")
        raise RayStartError(f"could not {what} ({type(error).__name__}: {error}); nothing of the study ran; "
                            f"{hint}") from error


@dataclass(frozen=True)
class RunResources:
    """What each run's Ray task asks for (``--run-resources cpu=N,gpu=G``): CPUs and GPUs.

    ``cpus`` None: one per torch thread of the run's processes, as a sequential study runs them
    (:func:`default_resources` resolves it).
    """

    cpus: float | None = None
    gpus: float = 0.0


def parse_resources(text: str) -> RunResources:
    """``"cpu=2,gpu=1"`` -> ``RunResources(2, 1)``; a missing key keeps its default (``gpu=1``: CPUs as
    :func:`default_resources` says, and one GPU)."""
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if key not in ("cpu", "gpu") or key in values or not (number >= 0 and math.isfinite(number)):
            raise ConfigError(f"--run-resources: '{item}' in '{text}' is not valid; expected cpu=N and/or gpu=N, "
                              f"each once, N a number >= 0 (e.g. --run-resources cpu=2,gpu=1)")
        values[key] = number
    resources = RunResources(values.get("cpu"), values.get("gpu", 0.0))
    if resources.cpus is not None and resources.cpus < 1:
        raise ConfigError(f"--run-resources: cpu={resources.cpus:g} in '{text}'; a run needs at least 1 CPU")
    return resources


@dataclass
class _Task:
    """One run while the driver waits for it."""

    item: PendingRun
    attempt: int = 1
    started: float | None = None  # driver's clock when the task's log said it started


class RayExecutor:
    """``executor(study, pending, log)`` for :func:`bench.study.runner.run_study`: the runs as Ray tasks.

    ``resources``: what each task asks for (``--run-resources``); without CPUs (the default), as many
    CPUs as the run's processes have threads in a sequential study (:func:`default_resources`).
    ``address``: a running cluster (``auto``, ``host:6379``; default ``RAY_ADDRESS``, else a Ray
    started on this machine for the study). ``nproc``: processes per run (torchrun inside the task).
    """

    def __init__(self, resources: RunResources = RunResources(), address: str | None = None,
                 max_retries: int = 2, nproc: int = 1, poll_seconds: float = 0.5) -> None:
        if max_retries < 0 or nproc < 1:
            raise ConfigError(f"--max-retries must be >= 0 and --nproc >= 1, got {max_retries} and {nproc}")
        check_gpus_per_process(resources, nproc)
        self.resources, self.address = resources, address
        self.max_retries, self.nproc, self.poll_seconds = max_retries, nproc, poll_seconds

    def plan(self, configs: list[RunConfig], default_threads: int | None = None) -> RunResources:
        """What each task of ``configs`` asks for, its CPUs resolved; :class:`ConfigError` if a run could not
        keep its thread count.

        ``default_threads``: torch's default thread count of a sequential study here (default: this
        process's). Needs no Ray and writes nothing: the command line calls it before Ray is installed
        (``make``) or started.
        """
        if default_threads is None:
            import torch

            default_threads = torch.get_num_threads()
        resources = default_resources(self.resources, configs, self.nproc, default_threads)
        for config in configs:
            task_threads(config.threads, self.nproc, resources, default_threads)
        return resources

    def __call__(self, study: StudyConfig, pending: list[PendingRun], log: Callable[[str], None]) -> dict[str, str]:
        import torch

        default_threads = torch.get_num_threads()
        resources = self.plan([item.config for item in pending], default_threads)  # before Ray or any folder
        pending = [dataclasses.replace(item, config=_for_task(item.config, resources, self.nproc, default_threads))
                   for item in pending]
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            start_ray(self.address)
        study = dataclasses.replace(study, results_dir=str(Path(study.results_dir).resolve()))  # workers' cwd differs
        token = secrets.token_hex(8)
        marker = marker_path(study.study_dir, token)  # one per driver: a second driver never removes ours
        created = _missing_folders(study.study_dir)
        try:
            check_feasible(resources, [node["Resources"] for node in ray.nodes() if node["Alive"]],
                           given=self.resources.cpus is not None)
            _write_marker(marker, token)
            _prepare_datasets(pending)
            _check_every_node(marker, token, [item.config for item in pending])
            return _Driver(self, resources, study, marker, token, log).run(pending)
        finally:
            marker.unlink(missing_ok=True)
            _remove_if_empty(created)  # a study refused here leaves no empty results/<study>/
            if started_here:
                ray.shutdown()


def check_gpus_per_process(resources: RunResources, nproc: int) -> None:
    """With ``nproc`` > 1 every process needs a GPU of its own (or none): each rank uses ``cuda:<local rank>``."""
    if nproc > 1 and resources.gpus and (resources.gpus < nproc or not float(resources.gpus).is_integer()):
        raise ConfigError(f"--nproc {nproc} with --run-resources gpu={resources.gpus:g}: each of the {nproc} "
                          f"processes of a run uses a GPU of its own (cuda:<local rank>), so they would share or "
                          f"miss one; ask for gpu={nproc} (one per process) or gpu=0 (CPU)")


def check_feasible(resources: RunResources, nodes: list[dict], given: bool = True) -> None:
    """Refuse a request no node of the cluster can meet (``nodes``: each alive node's Ray resources).

    Ray would keep such a task pending for ever without a word. ``given``: the user asked for
    their CPUs (``--run-resources cpu=N``); else they are :func:`default_resources`, and the message says so.
    """
    if any(node.get("CPU", 0) >= resources.cpus and node.get("GPU", 0) >= resources.gpus for node in nodes):
        return
    largest = ", ".join(f"{node.get('CPU', 0):g} CPU / {node.get('GPU', 0):g} GPU" for node in nodes) or "no node"
    asked = f"--run-resources cpu={resources.cpus:g},gpu={resources.gpus:g}"
    if given:
        raise ConfigError(f"{asked}: no node of the Ray cluster has that much (nodes: {largest}); ask for less, or "
                          f"add a node that has it")
    raise ConfigError(f"{asked}, the CPUs by default (one per torch thread of a run's processes, as a sequential "
                      f"study here runs them): no node of the Ray cluster has that much (nodes: {largest}). Set "
                      f"threads=N in the study (N at most a node's CPUs; the same for both executors), or give "
                      f"--run-resources cpu=N")


def sequential_threads(threads: int, nproc: int, default_threads: int) -> int:
    """The torch threads per process of a run in a sequential study of the same file on this machine.

    ``threads`` > 0 (set in the config) is kept; 0 means torch's default, ``default_threads`` here, and 1
    per process under torchrun (``nproc`` > 1), which sets OMP_NUM_THREADS=1.
    """
    return threads or (1 if nproc > 1 else default_threads)


def default_resources(given: RunResources, configs: list[RunConfig], nproc: int,
                      default_threads: int) -> RunResources:
    """``given`` with its CPUs filled in where ``--run-resources`` named none: one CPU per torch thread of
    the run's processes (:func:`sequential_threads` times ``nproc``, the largest over ``configs``).

    So a study's default settings give the sequential study's thread counts, hence its tables.
    """
    if given.cpus is not None:
        return given
    threads = max((sequential_threads(config.threads, nproc, default_threads) for config in configs), default=1)
    return dataclasses.replace(given, cpus=float(threads * nproc))


def task_threads(threads: int, nproc: int, resources: RunResources, default_threads: int) -> int:
    """The torch threads per process of a run's task: those a sequential study of the same file would use.

    ``threads`` > 0 (set in the config) is kept. ``threads`` 0 means torch's default, which a sequential
    study takes from this machine (:func:`sequential_threads`); the task pins that count, since another one
    sums in another order and changes the numbers. A task too small for it is refused: a study file gives
    one table whatever the executor.
    """
    if threads:
        return threads
    same = sequential_threads(threads, nproc, default_threads)
    if same * nproc > resources.cpus:
        raise ConfigError(f"'threads' is 0 (torch's default), which is {same} thread(s) per process here, as a "
                          f"sequential study runs it; a Ray task of cpu={resources.cpus:g} with {nproc} process(es) "
                          f"would run fewer, and another thread count gives other numbers. Set threads=N in the "
                          f"study (the same for both executors; e.g. threads=1), or ask for "
                          f"--run-resources cpu={same * nproc} (what leaving --run-resources out gives)")
    return same


def task_num_workers(num_workers: int, resources: RunResources, nproc: int) -> int:
    """``train.num_workers`` within the task's CPUs: one CPU per process trains, the rest may load data."""
    return min(num_workers, max(0, math.floor(resources.cpus / nproc) - 1))


def marker_path(study_dir: Path, token: str) -> Path:
    """This driver's shared-folder marker in the study folder (its own name: drivers never remove each other's)."""
    return Path(study_dir) / f"{MARKER_FILE}-{token}"


def _for_task(config: RunConfig, resources: RunResources, nproc: int, default_threads: int) -> RunConfig:
    """The run's config as a task runs it: absolute paths (workers' folders differ), threads and loader workers
    as :func:`task_threads` and :func:`task_num_workers` say (speed-only keys: finished runs are still reused)."""
    train = dataclasses.replace(config.train, num_workers=task_num_workers(config.train.num_workers, resources, nproc))
    return dataclasses.replace(config, threads=task_threads(config.threads, nproc, resources, default_threads),
                               train=train, results_dir=str(Path(config.results_dir).resolve()),
                               data_root=str(Path(config.data_root).resolve()))


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty: what a refused study created and left bare."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the study ran), or already gone
            return


def _prepare_datasets(pending: list[PendingRun]) -> None:
    """Generate (or index) each dataset once, here, before parallel tasks would race to generate it."""
    from bench.run.pipeline import prepare_dataset

    seen = set()
    for item in pending:
        key = (item.config.dataset, item.config.data_root)
        if key not in seen:
            seen.add(key)
            prepare_dataset(item.config)


def _write_marker(marker: Path, token: str) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text(marker, token + "\n")


def check_marker(marker: Path, token: str) -> None:
    """Raise :class:`SharedFolderError` unless this process reads ``token`` from ``marker``."""
    try:
        seen = marker.read_text(encoding="utf-8").strip()
    except OSError:
        seen = None
    if seen != token:
        what = "is missing" if seen is None else "holds another study's token"
        raise SharedFolderError(
            f"Ray worker on host {socket.gethostname()}: {marker} {what}; the driver wrote it just before. A Ray "
            f"study needs its results folder on a filesystem every node mounts at the same path (NFS, Lustre, "
            f"...): set results_dir=/shared/path (and data_root) to such a folder, or run without --executor ray")


def _node_check(marker: str, token: str, dataset_paths: list[str]) -> str:
    """On one node: the marker is there and every dataset path exists; returns the host name."""
    check_marker(Path(marker), token)
    missing = [path for path in dataset_paths if not Path(path).exists()]
    if missing:
        raise SharedFolderError(f"Ray worker on host {socket.gethostname()}: the dataset path(s) "
                                f"{', '.join(missing)} do not exist there; put data_root on a shared filesystem")
    return socket.gethostname()


def _check_every_node(marker: Path, token: str, configs: list[RunConfig]) -> None:
    """Run :func:`_node_check` once on every alive node; raise its error (the first) before any run starts."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    paths = sorted({str(config.dataset_path) for config in configs})
    check = ray.remote(_node_check)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    refs = [check.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            .remote(str(marker), token, paths) for node in nodes]
    try:
        ray.get(refs)
    except ray.exceptions.RayTaskError as error:
        raise _cause(error) from None


def _cause(error: BaseException) -> BaseException:
    """The exception a Ray task raised (``RayTaskError.cause``), else ``error`` itself."""
    return getattr(error, "cause", None) or error


class _Driver:
    """Submits the tasks, prints one line per event, resubmits the ones whose worker died."""

    def __init__(self, executor: RayExecutor, resources: RunResources, study: StudyConfig, marker: Path, token: str,
                 log: Callable[[str], None]) -> None:
        self.executor, self.resources, self.study, self.log = executor, resources, study, log
        self.marker, self.token = marker, token
        self.logs = study.study_dir / LOGS_DIR
        self.failed: dict[str, str] = {}
        self.done = 0
        self.total = 0

    def run(self, pending: list[PendingRun]) -> dict[str, str]:
        import ray

        self.logs.mkdir(parents=True, exist_ok=True)
        self.total = len(pending)
        for item in pending:  # this invocation's log: an old "attempt 1 started" line would read as a start
            write_text(self.logs / f"{item.config.name}.log", "")
        self.say(f"{self.total} run(s) as Ray tasks of {self._resources()} each on "
                 f"{_cluster(ray.cluster_resources())}; each run's output in {self.logs}/")
        tasks = {self._submit(task): task for task in map(_Task, pending)}
        try:
            while tasks:
                ready, _ = ray.wait(list(tasks), num_returns=1, timeout=self.executor.poll_seconds)
                self._notice_starts(tasks.values())
                for ref in ready:
                    task = tasks.pop(ref)
                    retry = self._collect(ref, task, tasks)
                    if retry is not None:
                        tasks[self._submit(retry)] = retry
        except KeyboardInterrupt:
            for ref in tasks:
                ray.cancel(ref)  # KeyboardInterrupt in the task: the run records itself as interrupted
            raise
        finished = self.total - len(self.failed)
        self.say(f"{finished} of {self.total} run(s) finished" + (f", {len(self.failed)} failed for good: "
                                                                 f"{', '.join(self.failed)}" if self.failed else ""))
        return self.failed

    def say(self, message: str) -> None:
        self.log(f"study {self.study.name}: {message}")

    def _resources(self) -> str:
        resources = self.resources
        gpus = f", {resources.gpus:g} GPU" if resources.gpus else ""
        procs = f", {self.executor.nproc} processes" if self.executor.nproc > 1 else ""
        return f"{resources.cpus:g} CPU{gpus}{procs}"

    def _submit(self, task: _Task):
        import ray

        resources = self.resources
        # No bars in the run logs: TQDM_DISABLE in the worker's environment (tqdm reads it on import) covers
        # the torchrun processes of --nproc too, which bench.progress.show_progress could not reach.
        remote = ray.remote(_run_task).options(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0,
                                               runtime_env={"env_vars": {"TQDM_DISABLE": "1"}})
        return remote.remote(task.item, task.attempt, str(self.marker), self.token,
                             str(self._log_path(task)), self.executor.nproc, os.environ.get(KILL_HOOK, ""))

    def _log_path(self, task: _Task) -> Path:
        return self.logs / f"{task.item.config.name}.log"

    def _notice_starts(self, tasks) -> None:
        """A task has started once its log holds its attempt's first line (shared filesystem)."""
        for task in tasks:
            if task.started is None and _attempt_line(task.attempt) in _read(self._log_path(task)):
                task.started = time.monotonic()
                self.say(f"{task.item.config.name} started{_attempt(task.attempt)} ({self._counts(tasks)})")

    def _counts(self, tasks) -> str:
        tasks = list(tasks)
        running = sum(task.started is not None for task in tasks)
        return f"{running} running, {len(tasks) - running} waiting"

    def _collect(self, ref, task: _Task, tasks: dict) -> _Task | None:
        """Record a task that ended; returns the task to submit again when its worker died and retries are left."""
        import ray

        name = task.item.config.name
        took = _duration(time.monotonic() - task.started) if task.started is not None else "?"
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # the run raised: the same config would raise again
            cause = _cause(error)
            if isinstance(cause, RankDiedError):  # ... unless a torchrun rank was killed: retried as a dead worker
                return self._retry_or_fail(task, tasks, "a rank was killed", took)
            return self._fail(task, f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}",
                              tasks)
        except ray.exceptions.RayError as error:  # the worker died (killed, out of memory, node lost)
            return self._retry_or_fail(task, tasks, type(error).__name__, took)
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {name} finished in {took} ({self._counts(tasks.values())})")
        return None

    def _retry_or_fail(self, task: _Task, tasks: dict, reason: str, took: str) -> _Task | None:
        name = task.item.config.name
        if task.attempt <= self.executor.max_retries:
            self.say(f"{name}: its worker died ({reason}) after {took}; retrying from its last checkpoint"
                     f"{_attempt(task.attempt + 1, self.executor.max_retries + 1)}")
            return _Task(task.item, task.attempt + 1)
        return self._fail(task, f"its worker died {task.attempt} time(s) ({reason})", tasks)

    def _fail(self, task: _Task, why: str, tasks: dict) -> None:
        self.done += 1
        name = task.item.config.name
        self.failed[name] = f"{why} (log: {self._log_path(task)})"
        self.say(f"[{self.done}/{self.total}] {name} FAILED: {self.failed[name]} ({self._counts(tasks.values())})")


def _attempt(attempt: int, of: int | None = None) -> str:
    if attempt == 1:
        return ""
    return f" (attempt {attempt} of {of})" if of else f" (attempt {attempt})"


def _attempt_line(attempt: int) -> str:
    return f"=== attempt {attempt} started on "


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _duration(seconds: float) -> str:
    """6m12s, 45s, 1h03m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _cluster(resources: dict) -> str:
    gpus = f", {resources['GPU']:g} GPUs" if resources.get("GPU") else ""
    return f"a Ray cluster of {resources.get('CPU', 0):g} CPUs{gpus}"


# ----------------------------------------------------------------------------- inside the task


def _run_task(item: PendingRun, attempt: int, marker: str, token: str, log_path: str, nproc: int,
              kill_hook: str = "") -> None:
    """One run in a Ray worker: check the shared folder, then run (or continue) it, its output to ``log_path``."""
    check_marker(Path(marker), token)
    config = item.config
    state = item.state if attempt == 1 else _state_after_death(config)
    with open(log_path, "a", buffering=1, encoding="utf-8") as log_file, contextlib.redirect_stdout(log_file), \
            contextlib.redirect_stderr(log_file):
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        print(f"{_attempt_line(attempt)}{socket.gethostname()} (pid {os.getpid()}, {config.threads} threads per "
              f"process, {nproc} process(es), GPUs: {gpus or 'none'}); run state: {state}")
        if state == "complete":
            return  # the previous attempt finished the run and died just after
        if nproc > 1:
            _run_with_torchrun(config, state, nproc, Path(log_path), log_file)
        else:
            run_pending(config, state, _with_kill_hook(config, print, kill_hook))


def _state_after_death(config: RunConfig, wait_seconds: float = 30.0) -> str:
    """The run's state after its previous worker died: a ``running`` manifest names that (dead) process.

    On this host the process is checked: one still alive (a torchrun launcher finishing its SIGTERM) is given
    ``wait_seconds`` to exit, and then the retry is refused rather than run beside it. On another host it
    cannot be checked; Ray reported the worker dead, so the manifest is rewritten to ``interrupted``.
    """
    deadline = time.monotonic() + wait_seconds
    state = run_state(config)
    while state == "running" and _runs_here(config) and time.monotonic() < deadline:
        time.sleep(0.5)
        state = run_state(config)  # run_status rereads the manifest and sees the process gone
    if state != "running":
        return state
    if _runs_here(config):
        raise StudyError(f"{config.name}: the previous attempt's {running_process(config.run_dir)} is still alive "
                         f"{wait_seconds:g} s after its Ray worker died; stop it, then run the study again")
    path = config.run_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.update(status=INTERRUPTED, pid=None)
    write_text(path, json.dumps(manifest, indent=2) + "\n")
    return "interrupted"


def _runs_here(config: RunConfig) -> bool:
    try:
        manifest = json.loads((config.run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        return manifest.get("host") == socket.gethostname()
    except (OSError, ValueError, AttributeError):
        return False


def _run_with_torchrun(config: RunConfig, state: str, nproc: int, log_path: Path, log_file) -> None:
    """``torchrun --standalone`` with ``nproc`` processes on this node, for the run ``config`` (saved next to the log)."""
    config_path = log_path.with_suffix(".yaml")
    save_config(config, config_path)
    flags = {"partial": ["--overwrite"], "different": ["--overwrite"], "interrupted": ["--resume"]}.get(state, [])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "bench", "run", str(config_path), *flags]
    log_file.flush()
    launcher = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                env={**os.environ, "TQDM_DISABLE": "1"})
    try:
        returncode = launcher.wait()
    except BaseException:  # cancelled (KeyboardInterrupt): SIGTERM, which torchrun passes on to its ranks
        stop_launcher(launcher)
        raise
    if returncode != 0:
        error = RankDiedError if torchrun_was_killed(returncode, _read(log_path)) else RuntimeError
        raise error(f"torchrun exited with code {returncode}: {' '.join(command)}")


def stop_launcher(launcher: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM ``launcher`` (torchrun forwards it to its ranks, which run in sessions of their own), SIGKILL later.

    A SIGKILL straight away, as ``subprocess.run`` sends on an exception, would leave the ranks orphaned.
    """
    launcher.terminate()
    try:
        launcher.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.wait()


def torchrun_was_killed(returncode: int, log_text: str) -> bool:
    """Whether a failed torchrun died of a signal (itself, or a rank: its report says ``exitcode : -N``)."""
    last_attempt = log_text.rsplit("=== attempt ", 1)[-1]  # this attempt's part of the run's log
    return returncode < 0 or re.search(r"exitcode\s*:\s*-\d+", last_attempt) is not None


def _die_with_parent() -> None:
    """In the torchrun launcher: SIGTERM it when the Ray worker dies, so a retry never runs beside it (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: a killed worker's torchrun finishes its run on its own


def _with_kill_hook(config: RunConfig, log: Callable[[str], None], hook: str) -> Callable[[str], None]:
    """``log``, which (tests only, :data:`KILL_HOOK`) SIGKILLs this worker once an epoch is trained and saved."""
    name, _, once = hook.partition("@")
    if name != config.name:
        return log

    def log_and_maybe_die(message: str) -> None:
        log(message)
        if not message.startswith("epoch "):  # train.fit logs "epoch N/M: ..." right after saving the checkpoint
            return
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)

    return log_and_maybe_die
