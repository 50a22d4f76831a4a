"""``python -m bench cam``: real photos named and boxed, unreadable files, no silent overwrite, checkpoints."""

import contextlib
import csv
import io
import json

import pytest
from PIL import Image
from skimage import data as skimage_data

from bench.commands.cli import main
from bench.run.pipeline import prepare_dataset, run

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def inside(box, x, y) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= x < x1 and y0 <= y < y1


@pytest.fixture(scope="module")
def photos_run(tmp_path_factory):
    """One ``bench cam`` call on chelsea, coffee and a broken file, in batches of 2."""
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.chelsea()).save(folder / "chelsea.png")  # 451 x 300 (W x H)
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.jpg")  # 600 x 400
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = folder / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["cam", str(folder), "--topk", "3", "--out", str(out), "--batch-size", "2"])
    return folder, out, code, stdout.getvalue(), stderr.getvalue()


def test_cat_and_espresso_are_named_and_boxed(photos_run):
    _, out, *_ = photos_run
    chelsea = json.loads((out / "chelsea.png.json").read_text())
    assert chelsea["size_hw"] == [300, 451] and len(chelsea["predictions"]) == 3
    top1 = chelsea["predictions"][0]
    assert top1["class_name"] in CAT_CLASSES and top1["probability"] > 0.3
    # The face fills the photo: the box must hold both eyes and the nose (hand-read from the photo).
    assert all(inside(top1["box"], x, y) for x, y in [(170, 130), (320, 140), (265, 240)])

    coffee = json.loads((out / "coffee.jpg.json").read_text())
    top1 = coffee["predictions"][0]
    assert top1["class_name"] in {"espresso", "cup", "coffee mug"}
    x0, y0, x1, y1 = top1["box"]
    assert inside(top1["box"], 280, 120)  # the cup's centre
    assert 150 <= (x0 + x1) / 2 <= 420 and 60 <= (y0 + y1) / 2 <= 260  # centred on the cup, not the table
    assert (x1 - x0) * (y1 - y0) < 0.8 * 600 * 400  # not the whole photo
    probabilities = [p["probability"] for p in coffee["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_overlays_keep_the_original_resolution(photos_run):
    _, out, *_ = photos_run
    with Image.open(out / "chelsea.png.cam.png") as overlay:
        width, height = overlay.size
    assert width == 3 * 451 and 300 < height < 360  # 3 panels of 451 x 300 under a title strip


def test_unreadable_files_are_named_skipped_and_give_exit_code_3(photos_run):
    folder, out, code, stdout, stderr = photos_run
    assert code == 3
    assert f"1 file(s) skipped (unreadable): {folder / 'broken.jpg'}; exit code 3" in stderr
    assert "UnidentifiedImageError" in stdout and "Egyptian cat" in stdout
    assert not (out / "broken.jpg.json").exists() and (out / "coffee.jpg.json").exists()


def test_outputs_state_the_papers_rule_and_leave_no_temporary_file(photos_run):
    _, out, _, stdout, _ = photos_run
    assert sorted(path.name for path in out.iterdir()) == ["chelsea.png.cam.png", "chelsea.png.json",
                                                          "coffee.jpg.cam.png", "coffee.jpg.json"]
    record = json.loads((out / "coffee.jpg.json").read_text())
    assert record["tau"] == 0.2 and record["normalization"] == "max" and "paper" in record["box_rule_from"]
    assert "boxes: fixed tau=0.2 on 'max'-normalized CAMs, largest connected component (8-connected)" in stdout


def test_existing_outputs_are_not_overwritten_silently(photos_run, capsys):
    folder, out, *_ = photos_run
    record = out / "coffee.jpg.json"
    before = record.stat().st_mtime_ns
    assert main(["cam", str(folder / "coffee.jpg"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "coffee.jpg.cam.png and 1 more already exist" in error and "--overwrite" in error
    assert record.stat().st_mtime_ns == before
    assert main(["cam", str(folder / "coffee.jpg"), "--out", str(out), "--overwrite"]) == 0
    assert record.stat().st_mtime_ns > before


def test_missing_input_and_duplicate_names_are_reported(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "x.png")
    assert main(["cam", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "--out", str(tmp_path)]) == 2
    assert "same file name" in capsys.readouterr().err
    assert main(["cam", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "none.pt not found" in capsys.readouterr().err
    # A folder that is not a run: it holds no checkpoint.pt.
    assert main(["cam", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "b"), "--out", str(tmp_path / "o")]) == 2
    assert f"--checkpoint {tmp_path / 'b'}: the folder holds no checkpoint.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_path_that_does_not_exist_is_bad_input_and_nothing_is_written(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    out = tmp_path / "out"
    missing = [tmp_path / "typo.png", tmp_path / "no_folder"]
    assert main(["cam", str(tmp_path / "x.png"), *map(str, missing), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error == f"error: no such file or folder: {missing[0]}, {missing[1]}; check the path(s) (nothing was written)\n"
    assert not out.exists()  # not even the output folder


def test_help_says_a_checkpoint_brings_the_runs_box_rule(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal's width, hyphens included
    with pytest.raises(SystemExit) as stopped:
        main(["cam", "--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert ("with --checkpoint, the run's own eval.tau on eval.normalization-normalized CAMs (read from its "
            "config.yaml); without one, the CAM paper's tau = 0.2 of the max") in text
    assert "--checkpoint CHECKPOINT a run's folder (results/<run>: its checkpoint.pt) or a checkpoint file" in text


def test_checkpoint_gives_the_runs_own_predictions(tiny_run, tmp_path):
    config = tiny_run.config
    with (config.run_dir / "predictions.csv").open() as handle:
        row = next(csv.DictReader(handle))
    # The evaluated split's image by its id: its file name alone (000000.jpg) is in every split.
    evaluated = prepare_dataset(config, progress=False).splits[config.eval.split]
    image = next(sample.image_path for sample in evaluated if sample.image_id == row["image_id"])
    out = tmp_path / "cam"
    assert main(["cam", str(image), "--checkpoint", str(config.run_dir / "checkpoint.pt"), "--out", str(out)]) == 0
    record = json.loads((out / f"{image.name}.json").read_text())
    # The run folder itself is the same checkpoint: the same record, box rule and its source included.
    assert main(["cam", str(image), "--checkpoint", str(config.run_dir), "--out", str(tmp_path / "by_folder")]) == 0
    assert json.loads((tmp_path / "by_folder" / f"{image.name}.json").read_text()) == record
    assert record["box_rule_from"] == f"{config.run_dir / 'config.yaml'} (eval.tau, eval.normalization)"
    class_names = [line.split(",", 1)[1] for line in (config.run_dir / "classes.txt").read_text().splitlines()]
    assert [p["class_name"] for p in record["predictions"]] == [class_names[int(c)]
                                                              for c in row["top5_classes"].split()]
    assert record["predictions"][0]["probability"] == pytest.approx(float(row["top5_probs"].split()[0]), abs=1e-4)


def test_checkpoint_boxes_use_the_runs_tau_and_normalization(tiny_config, tmp_path):
    # A run whose protocol is far from the paper's (tau 0.2 of the max): bench cam must box as the run did.
    config = tiny_config("train.mode=head", "eval.tau=0.8", "eval.normalization=minmax", "eval.frame=original")
    run(config, log=lambda message: None)
    with (config.run_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))[:4]
    by_id = {sample.image_id: sample.image_path
             for sample in prepare_dataset(config, progress=False).splits[config.eval.split]}
    images = [by_id[row["image_id"]] for row in rows]  # by id: file names repeat across splits
    out = tmp_path / "cam"
    assert main(["cam", *map(str, images), "--checkpoint", str(config.run_dir / "checkpoint.pt"),
                 "--out", str(out)]) == 0
    for image, row in zip(images, rows):
        record = json.loads((out / f"{image.name}.json").read_text())
        # The run scored its boxes in the original frame, so its top-1 box is the one bench cam must give.
        assert record["predictions"][0]["box"] == [float(v) for v in row["top1_box"].split()]
        assert record["tau"] == 0.8 and record["normalization"] == "minmax"
        assert "tau=0.8 on 'minmax'-normalized CAMs" in record["box_rule"]
        assert record["box_rule_from"] == f"{config.run_dir / 'config.yaml'} (eval.tau, eval.normalization)"
