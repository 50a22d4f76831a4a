"""The Makefile echoes each command it runs as one clean line: what a user can copy and run without make."""

import os
import shutil
import subprocess

import pytest
from helpers import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def echoed(tmp_path, *arguments: str) -> list[str]:
    """The ``python -m bench`` lines ``make -n`` prints for ``arguments`` (VENV in ``tmp_path``: nothing runs)."""
    venv = tmp_path / "venv"
    # Not the variables of a make that runs this test (CI's `make test EXECUTOR=ray` passes EXECUTOR on in MAKEFLAGS).
    environment = {key: value for key, value in os.environ.items()
                   if key not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "EXECUTOR", "NPROC", "QUICK",
                                  "CONFIG", "ARGS", "OVERWRITE", "RESUME", "DATA_ROOT", "RUN_RESOURCES",
                                  "RAY_ADDRESS"}}
    result = subprocess.run(["make", "-n", "--no-print-directory", f"VENV={venv}", *arguments], cwd=REPO,
                            capture_output=True, text=True, encoding="utf-8", timeout=60, check=True,
                            env=environment)
    return [line.replace(str(venv), "VENV") for line in result.stdout.splitlines() if " -m bench " in line]


@pytest.mark.parametrize("arguments, command", [
    (["benchmark", "CONFIG=configs/tiny.yaml", "ARGS=train.epochs=1"],
     "VENV/bin/python -m bench run configs/tiny.yaml train.epochs=1"),
    (["benchmark", "OVERWRITE=1", "QUICK=1", "DATA_ROOT=/datasets", "EXECUTOR=ray", "RUN_RESOURCES=cpu=2"],
     "VENV/bin/python -m bench run configs/paper.yaml data_root=/datasets --overwrite --quick --executor ray "
     "--run-resources cpu=2"),
    (["benchmark", "NPROC=2", "RESUME=1", "CONFIG=configs/gap.yaml"],
     "VENV/bin/python -m torch.distributed.run --standalone --nproc-per-node=2 -m bench run configs/gap.yaml "
     "--resume"),
    (["report", "CONFIG=configs/tiny.yaml"], "VENV/bin/python -m bench report configs/tiny.yaml"),
    (["data", "CONFIG=configs/tiny.yaml"], "VENV/bin/python -m bench data configs/tiny.yaml"),
])
def test_make_echoes_one_clean_command_line(tmp_path, arguments, command):
    # no dangling "\", no runs of blanks; with Ray, the study is checked first (--check) before Ray is installed
    checked = [f"{command.split(' --executor')[0]} --executor ray --run-resources cpu=2 --check"]
    assert echoed(tmp_path, *arguments) == (checked if "EXECUTOR=ray" in arguments else []) + [command]
