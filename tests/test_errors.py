"""One error policy: every input error is a :class:`bench.errors.InputError`, and every command exits 2 on one.

The walk below gives each command of ``python -m bench`` one bad input and checks exit code 2, one message naming
the file or key, and no traceback. The command list is read from the parser, so a new command without a bad input
here fails :func:`test_every_command_has_a_bad_input_below`.
"""

import argparse
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, TINY_CONFIG
from PIL import Image, UnidentifiedImageError

import bench
from bench.commands import cli
from bench.commands.cli import main
from bench.data.samples import DatasetFormatError, Sample
from bench.errors import InputError, OutputsExistError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# Each command's bad input: (argv, what the message must name). Everything lives under tmp_path; none of them
# needs a dataset, a trained run or the network, so each is refused before any real work.
def bad_run(tmp: Path):
    config = write(tmp / "exp.yaml", f"results_dir: {tmp / 'results'}\nmodel:\n  pooling: avg\n")
    return ["run", str(config)], [f"{config}, line 3", "'model.pooling' is 'avg'"]


def bad_report(tmp: Path):
    return (["report", str(TINY_CONFIG), f"results_dir={tmp / 'results'}"],
            [f"{tmp / 'results' / 'tiny'} holds no finished run"])


def bad_data(tmp: Path):
    write(tmp / "data" / "data.csv", "image,label,split,x0,y0,x1,y1\na.png,cat,dev,0,0,4,4\n")
    return (["data", str(TINY_CONFIG), f"data_root={tmp / 'data'}", "dataset.name=csv", "dataset.path=data.csv"],
            [f"{tmp / 'data' / 'data.csv'}, line 2: split 'dev' is not one of"])


def bad_show_config(tmp: Path):
    config = write(tmp / "empty.yaml", "")
    return ["show-config", str(config)], [f"{config}: the config file is empty"]


def bad_evaluate_maps(tmp: Path):
    out = write(tmp / "scores.json", "{}\n")
    (tmp / "maps").mkdir()
    return (["evaluate-maps", "--maps", str(tmp / "maps"), "--dataset-config", str(TINY_CONFIG), "--out", str(out)],
            [f"{out} already exists"])


def bad_export_wsol(tmp: Path):
    return (["export-wsol", str(TINY_CONFIG), str(tmp / "metadata"), f"data_root={tmp}", "dataset.name=wsol",
             "dataset.path=nowhere"], [str(tmp / "nowhere")])


def bad_cam(tmp: Path):
    image, out = tmp / "cat.png", write(tmp / "out.txt", "a file where the output folder goes\n")
    Image.new("RGB", (8, 8)).save(image)
    return ["cam", str(image), "--out", str(out)], [f"--out {out}: {out} is an existing file, not a folder"]


def bad_methods(tmp: Path):
    (tmp / "run").mkdir()
    return ["methods", str(tmp / "run")], [f"{tmp / 'run'} holds no finished run"]


def bad_rescore(tmp: Path):
    (tmp / "run").mkdir()
    return ["rescore", str(tmp / "run")], [f"{tmp / 'run'} holds no finished run"]


BAD_INPUTS = {"run": bad_run, "report": bad_report, "data": bad_data, "show-config": bad_show_config,
              "evaluate-maps": bad_evaluate_maps, "export-wsol": bad_export_wsol, "cam": bad_cam,
              "methods": bad_methods, "rescore": bad_rescore}


def parser_commands() -> set[str]:
    subparsers = next(action for action in cli._parser()._actions if isinstance(action, argparse._SubParsersAction))
    return set(subparsers.choices)


def test_every_command_has_a_bad_input_below():
    assert parser_commands() == set(BAD_INPUTS)


@pytest.mark.parametrize("command", sorted(BAD_INPUTS))
def test_every_command_exits_2_naming_the_bad_file_or_key(command, tmp_path, capsys):
    argv, named = BAD_INPUTS[command](tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert err.count("\n") == 1 and err.startswith(("error: ", "config error: ")), err  # one line
    for name in named:
        assert name in err, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    config = write(tmp_path / "empty.yaml", "# nothing here\n")
    finished = subprocess.run([sys.executable, "-m", "bench", "show-config", str(config)], capture_output=True,
                              text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert finished.returncode == 2 and finished.stdout == ""
    assert finished.stderr == f"config error: {config}: the config file is empty (or holds only comments); give the " \
                              "keys of the run, e.g. start from a copy of configs/gap.yaml\n"


# ----------------------------------------------------------------------------- every error class is classified


# The exceptions of the package that are not the input's fault: exit 1 with one line, or a bug's traceback.
NOT_INPUT_ERRORS = {"NonFiniteLossError", "DiskFullError", "RunsFailedError", "BrowserError", "RankDiedError",
                    "RayStartError"}


def package_exceptions() -> dict[str, type]:
    found = {}
    for module in pkgutil.walk_packages(bench.__path__, "bench."):
        if module.name.endswith("__main__"):
            continue
        for name, value in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.name:
                found[name] = value
    return found


def test_every_exception_of_the_package_is_an_input_error_or_listed_as_not_one():
    exceptions = package_exceptions()
    assert NOT_INPUT_ERRORS <= set(exceptions)
    inputs = {name for name, cls in exceptions.items() if issubclass(cls, InputError)}
    assert inputs | NOT_INPUT_ERRORS == set(exceptions)
    assert not inputs & NOT_INPUT_ERRORS
    assert {"ConfigError", "DatasetFormatError", "DatasetNotFoundError", "MissingWeightsError", "ScoreMapError",
            "MethodError", "RunExistsError", "ResumeError", "StudyError", "SharedFolderError", "CamCommandError",
            "MethodsFolderError", "OutputsExistError", "MissingInputError", "RescoreError"} <= inputs
    # Each keeps the built-in type it had, so `except ValueError` / `except FileNotFoundError` still hold.
    assert issubclass(exceptions["ConfigError"], ValueError)
    assert issubclass(exceptions["DatasetNotFoundError"], FileNotFoundError)
    assert issubclass(exceptions["RunExistsError"], FileExistsError)


# ----------------------------------------------------------------------------- input read below the commands


def test_a_mask_pil_cannot_read_is_a_dataset_error_naming_the_file(tmp_path):
    from bench.data.images import read_mask

    path = write(tmp_path / "mask.png", "not a PNG")
    with pytest.raises(DatasetFormatError) as error:
        read_mask(path)
    assert str(error.value).startswith(f"{path}: cannot read this mask image (UnidentifiedImageError: ")
    assert isinstance(error.value, InputError) and isinstance(error.value.__cause__, UnidentifiedImageError)


def test_a_mask_opencv_cannot_read_is_a_dataset_error_naming_the_file(tmp_path):
    from bench.scoring.wsolevaluation_rules import masks_in_frame

    good, bad = tmp_path / "good.png", write(tmp_path / "bad.png", "not a PNG")
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(good)
    with pytest.raises(DatasetFormatError, match=f"{bad}: OpenCV cannot read this mask image"):
        masks_in_frame((good,), bad)


def test_a_foreign_folder_where_the_synthetic_dataset_goes_is_a_dataset_error(tmp_path):
    from bench.data.generator import ensure_synthetic_dataset, synthetic_dataset_dir

    arguments = dict(variant="parts", seed=0, num_train=2, num_val=1, num_test=1, image_size=32, object_scale="cub")
    root = synthetic_dataset_dir(tmp_path, **arguments)
    write(root / "dataset.json", "{not json")  # cut short, or not ours: it used to raise JSONDecodeError
    with pytest.raises(DatasetFormatError, match=f"{root} exists but has no dataset.json with parameters"):
        ensure_synthetic_dataset(tmp_path, progress=False, **arguments)
    write(root / "dataset.json", "[1, 2]\n")
    with pytest.raises(DatasetFormatError, match="delete it to regenerate"):
        ensure_synthetic_dataset(tmp_path, progress=False, **arguments)


def test_an_image_id_the_metadata_cannot_hold_is_a_dataset_error_naming_the_image(tmp_path):
    from bench.data.wsol_layout import write_metadata

    image = tmp_path / "images" / "a,b.png"
    sample = Sample("a,b.png", image, 0, np.zeros((0, 4), np.float32), (4, 4), ())
    with pytest.raises(DatasetFormatError, match=f"image id 'a,b.png' contains a comma.*image {image}"):
        write_metadata(tmp_path / "meta", [sample], tmp_path / "images", None)
    outside = Sample("c.png", tmp_path / "elsewhere" / "c.png", 0, np.zeros((0, 4), np.float32), (4, 4), ())
    with pytest.raises(DatasetFormatError, match=f"image {tmp_path / 'elsewhere' / 'c.png'} is not under"):
        write_metadata(tmp_path / "meta", [outside], tmp_path / "images", None)


def test_export_over_existing_splits_is_an_outputs_exist_error(tmp_path):
    from bench.data.samples import DatasetSplits
    from bench.data.wsol_layout import write_wsol

    train, test = (Sample(name, tmp_path / name, 0, np.array([[0, 0, 2, 2]], np.float32), (4, 4), ())
                   for name in ("a.png", "b.png"))
    splits = DatasetSplits(["cat"], {"train": [train], "val": [], "test": [test]}, "two images")
    (tmp_path / "meta" / "val").mkdir(parents=True)
    with pytest.raises(OutputsExistError, match=f"{tmp_path / 'meta'} already holds split folder\\(s\\) val"):
        write_wsol(splits, tmp_path / "meta", tmp_path)
    assert sorted(p.name for p in (tmp_path / "meta").iterdir()) == ["val"]


# ----------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("argv, hint", [
    (["run", str(TINY_CONFIG)], "; continue the run with --resume"),
    (["run", str(TINY_CONFIG), "train.mode=head"], "; train.mode head does not resume: run the same command with "
                                                   "--overwrite (make benchmark ... OVERWRITE=1) to start it again"),
    (["run", str(REPO / "configs" / "missing.yaml")], ""),  # Ctrl-C before the config was read: nothing to continue
    (["run", str(REPO / "configs" / "paper.yaml")], "; run the same command again to continue: the study resumes "
                                                     "its interrupted runs"),
    (["data", str(TINY_CONFIG)], ""),
    (["report", str(TINY_CONFIG)], ""),
    (["cam", "x.png"], ""),
    (["methods", "results/tiny"], ""),
])
def test_an_interrupt_suggests_resume_only_where_resuming_exists(argv, hint):
    assert cli._resume_hint(cli._parser().parse_args(argv)) == hint


def test_an_interrupt_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_dispatch", interrupted)  # Ctrl-C at any point of the command
    assert main(["data", str(TINY_CONFIG)]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_evaluate_maps_refuses_an_out_file_in_a_missing_folder_before_scoring(tmp_path, capsys):
    (tmp_path / "maps").mkdir()
    out = tmp_path / "none" / "scores.json"
    assert main(["evaluate-maps", "--maps", str(tmp_path / "maps"), "--dataset-config", str(TINY_CONFIG),
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --out {out}: folder {tmp_path / 'none'} not found; create it first\n"
