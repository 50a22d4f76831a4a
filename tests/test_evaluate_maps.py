"""python -m bench evaluate-maps: scoring saved heat maps, and the messages for bad files."""

import io
import json

import numpy as np
import pytest
from helpers import TINY_CONFIG
from PIL import Image

from bench.commands.cli import main
from bench.run.pipeline import prepare_dataset
from bench.scoring.saved_maps import check_score_map, resize_to_frame


def _write_mask_maps(config, folder):
    """Each test image's own object mask, at a quarter of its resolution: a near-perfect score map."""
    samples = prepare_dataset(config, progress=False).splits["test"]
    for sample in samples:
        with Image.open(sample.mask_paths[0]) as mask:
            score = np.asarray(mask.convert("L"), dtype=np.float32)[::4, ::4] / 255.0
        path = folder / f"{sample.image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, score)
    return samples


def test_masks_as_maps_score_near_perfectly(tiny_config, tiny_data_dir, tmp_path, capsys):
    samples = _write_mask_maps(tiny_config(), tmp_path / "maps")
    out = tmp_path / "scores.json"
    code = main(["evaluate-maps", "--maps", str(tmp_path / "maps"), "--dataset-config", str(TINY_CONFIG),
                 "--out", str(out), f"data_root={tiny_data_dir}"])
    assert code == 0
    scores = json.loads(out.read_text())
    assert scores["num_images"] == len(samples)
    assert scores["gt_known_loc_acc"]["value"] == 100.0
    assert scores["gt_known_loc_acc"]["protocol"] == (
        "test split, fixed tau=0.2 on 'max'-normalized maps, largest connected component, IoU >= 0.5, "
        "boxes in the 64x64 input frame")
    assert scores["sweep"]["max_box_acc"]["value"] == 100.0
    assert scores["sweep"]["pxap"]["value"] > 90.0
    # Each map's maximum lies on its own mask: every point a hit; the mass sits in the box but for the upsampling's
    # blur at the mask's edge.
    assert scores["pointing_game"]["value"] == 100.0
    assert scores["energy_pointing_game"]["value"] > 90.0
    assert "within 3 % of the 64-px longest side, 1.92 px" in scores["pointing_game"]["protocol"]
    assert "of the object (masks)" in scores["pointing_game"]["protocol"]
    # --out never overwrites.
    assert main(["evaluate-maps", "--maps", str(tmp_path / "maps"), "--dataset-config", str(TINY_CONFIG),
                 "--out", str(out), f"data_root={tiny_data_dir}"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_constant_maps_are_refused_by_the_pointing_game_naming_each_image(tiny_config, tiny_data_dir, tmp_path,
                                                                          capsys):
    folder = tmp_path / "maps"
    samples = _write_mask_maps(tiny_config(), folder)
    for sample in samples[:2]:
        np.save(folder / f"{sample.image_id}.npy", np.full((4, 4), 0.5, dtype=np.float32))
    out = tmp_path / "scores.json"
    assert main(["evaluate-maps", "--maps", str(folder), "--dataset-config", str(TINY_CONFIG), "--out", str(out),
                 f"data_root={tiny_data_dir}"]) == 2
    error = capsys.readouterr().err
    assert f"2 of {len(samples)} maps cannot be scored by the pointing game" in error
    assert f"image {samples[0].image_id}: constant map (every value 0.5)" in error
    assert f"image {samples[1].image_id}: constant map" in error and not out.exists()


def test_bad_score_map_files_are_reported_with_their_names(tiny_config, tiny_data_dir, tmp_path, capsys):
    folder = tmp_path / "maps"
    samples = _write_mask_maps(tiny_config(), folder)
    np.save(folder / f"{samples[0].image_id}.npy", np.full((4, 4), np.nan, dtype=np.float32))
    np.save(folder / f"{samples[1].image_id}.npy", np.zeros((1, 4, 4)))
    np.save(folder / f"{samples[2].image_id}.npy", np.full((4, 4), 3.0))
    (folder / f"{samples[3].image_id}.npy").unlink()
    (folder / f"{samples[4].image_id}.npy").write_text("not numpy")
    code = main(["evaluate-maps", "--maps", str(folder), "--dataset-config", str(TINY_CONFIG),
                 f"data_root={tiny_data_dir}"])
    assert code == 2
    error = capsys.readouterr().err
    assert f"5 of {len(samples)} score maps" in error
    assert f"{samples[0].image_id}.npy: 16 NaN or inf value(s) out of 16" in error
    assert f"{samples[1].image_id}.npy: expected a 2-D (H, W) map, got shape (1, 4, 4)" in error
    assert f"{samples[2].image_id}.npy: values outside [0, 1]: min 3, max 3" in error
    assert f"{samples[3].image_id}.npy: missing" in error
    assert f"{samples[4].image_id}.npy: not a readable .npy array" in error
    # --any-range accepts the map of 3s (normalization rescales it) but not the others.
    main(["evaluate-maps", "--maps", str(folder), "--dataset-config", str(TINY_CONFIG), "--any-range",
          f"data_root={tiny_data_dir}"])
    assert f"4 of {len(samples)} score maps" in capsys.readouterr().err


def test_unreadable_map_files_join_the_list_of_bad_files(tiny_config, tiny_data_dir, tmp_path, capsys):
    folder = tmp_path / "maps"
    samples = _write_mask_maps(tiny_config(), folder)
    paths = [folder / f"{sample.image_id}.npy" for sample in samples]
    paths[0].write_bytes(b"")  # 0 bytes
    paths[1].write_bytes(paths[1].read_bytes()[:-10])  # truncated data
    paths[2].write_bytes(paths[2].read_bytes()[:20])  # truncated header
    np.save(paths[3], np.array([[None, 1.0]], dtype=object), allow_pickle=True)  # pickled object array
    with paths[4].open("wb") as handle:  # an .npz archive under the .npy name
        np.savez(handle, map=np.zeros((4, 4)))
    np.save(paths[5], np.ones((4, 4), dtype=complex))  # wrong dtype
    np.save(paths[6], np.ones((4, 4), dtype=bool))
    # A header announcing 10^10 values with 64 bytes behind it: refused without allocating 75 GB.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000)})
    paths[7].write_bytes(header.getvalue() + bytes(64))
    code = main(["evaluate-maps", "--maps", str(folder), "--dataset-config", str(TINY_CONFIG),
                 f"data_root={tiny_data_dir}"])
    assert code == 2
    error = capsys.readouterr().err
    assert f"8 of {len(samples)} score maps" in error
    for path in paths[:5] + paths[7:8]:
        assert f"{path}: not a readable .npy array" in error
    assert "an .npz archive" in error
    assert f"{paths[5]}: expected real numbers, got dtype complex128" in error
    assert f"{paths[6]}: expected real numbers, got dtype bool" in error
    assert not any(line.startswith("Traceback") for line in error.splitlines())


def test_resize_rule_is_bilinear_and_keeps_same_size_maps():
    small = np.array([[0.0, 1.0]], dtype=np.float32)
    assert resize_to_frame(small, (1, 2)) is not small and resize_to_frame(small, (1, 2)).tolist() == [[0.0, 1.0]]
    # align_corners=False: 2 -> 4 columns gives 0, 0.25, 0.75, 1.
    assert resize_to_frame(small, (1, 4)).tolist() == [[0.0, 0.25, 0.75, 1.0]]
    assert check_score_map(np.array([["a"]])) == "expected real numbers, got dtype <U1"
    assert check_score_map(np.zeros((0, 3))) == "empty map, shape (0, 3)"


def test_a_broken_train_image_does_not_stop_scoring_the_test_split(tiny_config, tmp_path, capsys):
    # evaluate-maps never reads the train images, so it neither decodes them nor stops on a broken one.
    data_root = tmp_path / "data"  # this test's own copy of the tiny dataset: one train image gets truncated
    config = tiny_config(f"data_root={data_root}")
    samples = _write_mask_maps(config, tmp_path / "maps")
    train_image = prepare_dataset(config, progress=False).splits["train"][0].image_path
    train_image.write_bytes(train_image.read_bytes()[:40])
    out = tmp_path / "scores.json"
    code = main(["evaluate-maps", "--maps", str(tmp_path / "maps"), "--dataset-config", str(TINY_CONFIG),
                 "--out", str(out), f"data_root={data_root}"])
    assert code == 0, capsys.readouterr().err  # was 2: "1 of 48 images have problems: ... train ..."
    assert json.loads(out.read_text())["num_images"] == len(samples)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("scores")] == ["scores.json"]  # no .tmp left


# ----------------------------------------------------------------------------- --maps checked before the dataset


def test_a_missing_maps_folder_is_refused_before_the_dataset_is_generated(tmp_path, capsys):
    data_root = tmp_path / "data"  # empty: any dataset read would generate the tiny one here
    for maps, found in [(tmp_path / "nowhere", "not found"), (TINY_CONFIG, "is a file, not a folder")]:
        code = main(["evaluate-maps", "--maps", str(maps), "--dataset-config", str(TINY_CONFIG),
                     f"data_root={data_root}"])
        assert code == 2
        assert capsys.readouterr().err == (f"error: --maps {maps}: {found}; give the folder of <image_id>.npy score "
                                           f"maps, one per image of the config's eval.split\n")
    assert not data_root.exists()


def test_a_run_folder_as_maps_says_where_its_cams_are(tiny_run, tmp_path, capsys):
    run_dir = tiny_run.config.run_dir
    data_root = tmp_path / "data"
    for maps, says in [(run_dir, "a run folder; its CAMs are in"), (run_dir / "cams.npz", "this is")]:
        code = main(["evaluate-maps", "--maps", str(maps), "--dataset-config", str(TINY_CONFIG),
                     f"data_root={data_root}"])
        assert code == 2
        error = capsys.readouterr().err
        assert f"--maps {maps}: {says} {run_dir / 'cams.npz'}, the run's own CAMs (arrays image_ids, top1, " in error
        assert "docs/metrics.md" in error
    assert not data_root.exists()


def test_a_runs_cams_saved_as_npy_files_score_as_the_run_did(tiny_run, tmp_path, capsys):
    # docs/metrics.md's recipe: each gt_class CAM of cams.npz as <image_id>.npy, scored with --any-range.
    config = tiny_run.config
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    cams = np.load(config.run_dir / "cams.npz")
    for image_id, cam in zip(cams["image_ids"], cams["gt_class"]):
        path = tmp_path / "maps" / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, cam.astype(np.float32))
    out = tmp_path / "scores.json"
    assert main(["evaluate-maps", "--maps", str(tmp_path / "maps"), "--dataset-config",
                 str(config.run_dir / "config.yaml"), "--any-range", "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert scores["num_images"] == metrics["num_images"]
    # The same boxes at every threshold; PxAP pools pixels, and cams.npz's float16 moves a few across thresholds.
    assert scores["gt_known_loc_acc"]["value"] == metrics["gt_known_loc_acc"]
    for key in ("max_box_acc", "max_box_acc_v2"):
        assert scores["sweep"][key]["value"] == metrics["sweep"][key]["value"], key
    assert scores["sweep"]["pxap"]["value"] == pytest.approx(metrics["sweep"]["pxap"]["value"], abs=0.01)
