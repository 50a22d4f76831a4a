"""A study's runs as Ray tasks, in parallel over the CPUs and GPUs of a Ray cluster (``--executor ray``).

Ray (https://docs.ray.io) is an optional dependency: ``pip install -e '.[ray]'``.
Each pending run of the grid becomes one Ray task that asks for
:class:`RunResources` (``--run-resources cpu=2,gpu=1``); the run inside it uses
as many torch threads as it was given CPUs (``threads``, a speed-only key, so a
finished run is still reused) and the GPUs Ray assigned it (Ray sets
``CUDA_VISIBLE_DEVICES``). With ``nproc`` > 1 the task starts ``torchrun`` for
its run, ``nproc`` processes sharing the task's CPUs and GPUs.

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
from bench.run.folder import INTERRUPTED, MANIFEST_FILE
from bench.study.results import StudyError
from bench.study.runner import PendingRun, run_pending, run_state

MARKER_FILE = ".ray-shared-folder-check"
LOGS_DIR = "logs"
# Test hook, read by the driver: "<run name>" SIGKILLs that run's worker after the first epoch it trains (and
# saves), on every attempt; "<run name>@<file>" only while <file> does not exist (the first attempt creates it).
KILL_HOOK = "WSOL_BENCH_TEST_KILL_AFTER_CHECKPOINT"


class SharedFolderError(StudyError):
    """A Ray worker cannot see the study folder the driver wrote (no shared filesystem)."""


@dataclass(frozen=True)
class RunResources:
    """What each run's Ray task asks for: CPUs (= torch threads per run) and GPUs."""

    cpus: float = 1.0
    gpus: float = 0.0

    @property
    def threads(self) -> int:
        return max(1, math.floor(self.cpus))


def parse_resources(text: str) -> RunResources:
    """``"cpu=2,gpu=1"`` -> ``RunResources(2, 1)``; a missing key keeps its default (cpu=1, gpu=0)."""
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
    resources = RunResources(values.get("cpu", 1.0), values.get("gpu", 0.0))
    if resources.cpus < 1:
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

    ``address``: a running cluster (``auto``, ``host:6379``; default ``RAY_ADDRESS``, else a Ray
    started on this machine for the study). ``nproc``: processes per run (torchrun inside the task).
    """

    def __init__(self, resources: RunResources = RunResources(), address: str | None = None,
                 max_retries: int = 2, nproc: int = 1, poll_seconds: float = 0.5) -> None:
        if max_retries < 0 or nproc < 1:
            raise ConfigError(f"--max-retries must be >= 0 and --nproc >= 1, got {max_retries} and {nproc}")
        self.resources, self.address = resources, address
        self.max_retries, self.nproc, self.poll_seconds = max_retries, nproc, poll_seconds

    def __call__(self, study: StudyConfig, pending: list[PendingRun], log: Callable[[str], None]) -> dict[str, str]:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            options = {} if self.address or os.environ.get("RAY_ADDRESS") else {"include_dashboard": False}
            ray.init(address=self.address, **options)
        study = dataclasses.replace(study, results_dir=str(Path(study.results_dir).resolve()))  # workers' cwd differs
        marker = study.study_dir / MARKER_FILE
        try:
            token = _write_marker(marker)
            pending = [dataclasses.replace(item, config=_for_task(item.config, self.resources, self.nproc))
                       for item in pending]
            _prepare_datasets(pending)
            _check_every_node(marker, token, [item.config for item in pending])
            return _Driver(self, study, marker, token, log).run(pending)
        finally:
            marker.unlink(missing_ok=True)
            if started_here:
                ray.shutdown()


def _for_task(config: RunConfig, resources: RunResources, nproc: int) -> RunConfig:
    """The run's config as a task runs it: absolute paths (workers' folders differ), threads = its CPUs."""
    return dataclasses.replace(config, threads=max(1, resources.threads // nproc),
                               results_dir=str(Path(config.results_dir).resolve()),
                               data_root=str(Path(config.data_root).resolve()))


def _prepare_datasets(pending: list[PendingRun]) -> None:
    """Generate (or index) each dataset once, here, before parallel tasks would race to generate it."""
    from bench.run.pipeline import prepare_dataset

    seen = set()
    for item in pending:
        key = (item.config.dataset, item.config.data_root)
        if key not in seen:
            seen.add(key)
            prepare_dataset(item.config)


def _write_marker(marker: Path) -> str:
    token = secrets.token_hex(8)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text(marker, token + "\n")
    return token


def check_marker(marker: Path, token: str) -> None:
    """Raise :class:`SharedFolderError` unless this process reads ``token`` from ``marker``."""
    try:
        seen = marker.read_text().strip()
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

    def __init__(self, executor: RayExecutor, study: StudyConfig, marker: Path, token: str,
                 log: Callable[[str], None]) -> None:
        self.executor, self.study, self.marker, self.token, self.log = executor, study, marker, token, log
        self.logs = study.study_dir / LOGS_DIR
        self.failed: dict[str, str] = {}
        self.done = 0
        self.total = 0

    def run(self, pending: list[PendingRun]) -> dict[str, str]:
        import ray

        self.logs.mkdir(parents=True, exist_ok=True)
        self.total = len(pending)
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
        resources = self.executor.resources
        gpus = f", {resources.gpus:g} GPU" if resources.gpus else ""
        procs = f", {self.executor.nproc} processes" if self.executor.nproc > 1 else ""
        return f"{resources.cpus:g} CPU{gpus}{procs}"

    def _submit(self, task: _Task):
        import ray

        resources = self.executor.resources
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
            return self._fail(task, f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}",
                              tasks)
        except ray.exceptions.RayError as error:  # the worker died (killed, out of memory, node lost)
            reason = type(error).__name__
            if task.attempt <= self.executor.max_retries:
                self.say(f"{name}: its worker died ({reason}) after {took}; retrying from its last checkpoint"
                         f"{_attempt(task.attempt + 1, self.executor.max_retries + 1)}")
                return _Task(task.item, task.attempt + 1)
            return self._fail(task, f"its worker died {task.attempt} time(s) ({reason})", tasks)
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {name} finished in {took} ({self._counts(tasks.values())})")
        return None

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
        return path.read_text(errors="replace")
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
    with open(log_path, "a", buffering=1) as log_file, contextlib.redirect_stdout(log_file), \
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


def _state_after_death(config: RunConfig) -> str:
    """The run's state after its previous worker died: a ``running`` manifest names that dead process."""
    state = run_state(config)
    if state != "running":
        return state
    path = config.run_dir / MANIFEST_FILE  # on another host, so run_state could not see the process is gone
    manifest = json.loads(path.read_text())
    manifest.update(status=INTERRUPTED, pid=None)
    write_text(path, json.dumps(manifest, indent=2) + "\n")
    return "interrupted"


def _run_with_torchrun(config: RunConfig, state: str, nproc: int, log_path: Path, log_file) -> None:
    """``torchrun --standalone`` with ``nproc`` processes on this node, for the run ``config`` (saved next to the log)."""
    config_path = log_path.with_suffix(".yaml")
    save_config(config, config_path)
    flags = {"partial": ["--overwrite"], "different": ["--overwrite"], "interrupted": ["--resume"]}.get(state, [])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "bench", "run", str(config_path), *flags]
    log_file.flush()
    finished = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                              env={**os.environ, "TQDM_DISABLE": "1"})
    if finished.returncode != 0:
        raise RuntimeError(f"torchrun exited with code {finished.returncode}: {' '.join(command)}")


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
