"""CAM-family methods (bench.scoring.map_methods, ``bench methods``): invariants, hand-made answers, the command's files."""

import contextlib
import csv
import dataclasses
import io
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_CONFIG

from bench.commands.cli import _parser, main
from bench.commands.compare_methods import method_names
from bench.config import ConfigError, ModelConfig, load_config, load_study
from bench.model.cam import class_activation_maps
from bench.model.camnet import CamNet, build_model
from bench.run.method_comparison import ScoredImages, describe_estimate, images_seen
from bench.scoring.center_baseline import center_map
from bench.scoring.map_methods import DEFAULT_METHODS, METHODS, MethodError, check_methods, map_method
from bench.scoring.prediction import localize_batch, predict
from bench.study.methods_table import ensure_methods
from bench.study.runner import run_study

TINY_GAP = ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8, pooling="gap", input_size=64)


@pytest.fixture(scope="module")
def gap_network():
    """A random tiny GAP network with 3 classes and a feature scale other than 1 (CAMs use classifier / scale)."""
    torch.manual_seed(0)
    network = build_model(TINY_GAP, num_classes=3).eval()
    network.feature_scale.fill_(2.5)
    return network


def test_gradcam_is_the_cam_over_h_times_w_on_a_gap_network(gap_network):
    # GAP + linear head: dS_c / dA_k(x, y) = W[c, k] / (h w) / scale at every position, so Grad-CAM's channel
    # weights (the mean gradient) are the CAM weights / (h w): Grad-CAM = CAM / (h w), a positive constant.
    # Our maps are taken before the library's ReLU, so the equality holds for the negative values too.
    images = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        features = gap_network.features(images)  # (4, 64, 8, 8)
    classes = torch.tensor([[0, 2], [1, 1], [2, 0], [0, 1]])
    ours = class_activation_maps(features, gap_network.cam_weight, classes)  # (4, 2, 8, 8)
    assert (ours < 0).any() and (ours > 0).any()  # both signs: the ReLU is really left out
    gradcam = map_method("gradcam", gap_network)(images, features, classes)
    torch.testing.assert_close(gradcam, ours / 64, rtol=1e-4, atol=1e-6)
    # XGrad-CAM's weights sum_xy(g A) / sum_xy(A) equal the constant gradient too: the same map.
    xgradcam = map_method("xgradcam", gap_network)(images, features, classes)
    torch.testing.assert_close(xgradcam, ours / 64, rtol=1e-4, atol=1e-6)


def test_gradcam_is_the_cam_over_h_times_w_on_a_gmp_network_too():
    # GMP: dS_c / dA_k is W[c, k] / scale at the channel's maximum and 0 elsewhere, so its mean over the h w
    # positions (Grad-CAM's channel weight) is W[c, k] / (scale h w), as with GAP. XGrad-CAM's is not.
    torch.manual_seed(0)
    network = build_model(dataclasses.replace(TINY_GAP, pooling="gmp"), num_classes=3).eval()
    network.feature_scale.fill_(2.5)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = network.features(images)  # (2, 64, 8, 8)
    classes = torch.tensor([[0, 2], [1, 1]])
    ours = class_activation_maps(features, network.cam_weight, classes)
    torch.testing.assert_close(map_method("gradcam", network)(images, features, classes), ours / 64, rtol=1e-4,
                               atol=1e-6)
    assert not torch.allclose(map_method("xgradcam", network)(images, features, classes), ours / 64, rtol=1e-2)


def test_a_method_replaces_only_the_maps_of_the_evaluation_path(gap_network):
    images, labels = torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2])
    cam_path = predict(gap_network, images, 5, labels)  # top-3 CAMs then the GT class's
    gradcam = predict(gap_network, images, 5, labels, map_method("gradcam", gap_network), mapped=(0, -1))
    assert torch.equal(gradcam.topk_classes, cam_path.topk_classes)
    torch.testing.assert_close(gradcam.cams, cam_path.cams[:, [0, -1]] / 64, rtol=1e-4, atol=1e-6)
    # A positive constant leaves max-normalized boxes as they are.
    sizes = [(64, 64)] * 3
    cam_boxes = localize_batch(gap_network, images, sizes, 5, 0.2, "max", labels, boxed=(0, -1)).boxes
    method_boxes = localize_batch(gap_network, images, sizes, 5, 0.2, "max", labels, boxed=(0, -1),
                                  method=map_method("gradcam", gap_network)).boxes
    np.testing.assert_array_equal(method_boxes, cam_boxes)


def hand_made_network() -> CamNet:
    """Identity backbone (the input *is* the 1-channel feature map), GAP, class 0 weight +1, class 1 weight -1."""
    network = CamNet(torch.nn.Identity(), 1, 2, TINY_GAP, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)).eval()
    with torch.no_grad():
        network.classifier.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        network.classifier.bias.zero_()
    return network


def test_every_method_on_a_hand_made_feature_map_gives_the_computed_map():
    # One channel, 5x5: a hot spot of 1 at (1, 3), a weaker one of 0.5 at (3, 0); sum S = 1.5, mean 0.06.
    # Class 0 (weight +1): gradient g = 1/25 everywhere; class 1 (weight -1): g = -1/25.
    spot = torch.zeros(1, 1, 5, 5)
    spot[0, 0, 1, 3], spot[0, 0, 3, 0] = 1.0, 0.5
    network = hand_made_network()
    classes = torch.tensor([[0, 1]])
    f = spot[0, 0]
    expected = {
        "gradcam": (f / 25, -f / 25),  # mean gradient x A
        "xgradcam": (f / 25, -f / 25),  # sum(g A) / sum(A) = g
        "layercam": (f / 25, 0 * f),  # relu(g) x A: nothing for the negative weight
        # Grad-CAM++: alpha = g^2 / (2 g^2 + S g^3 + 1e-6) at each of the 25 positions (the library's eps),
        # weight relu(g) * 25 alpha = 0.0016 / (0.0032 + 0.000096 + 0.000001); zero for a negative gradient.
        "gradcampp": (f * 0.0016 / 0.003297, 0 * f),
        "scorecam": (f, f),  # one channel: the softmax over channels is 1 whatever the class score
        "eigencam": (f - 0.06, f - 0.06),  # the centred map projected on its one component; class-agnostic
        # The center baseline ignores the features: exp(-d^2 / (2 (1/6)^2)), d from the grid's centre in
        # units of the side; at the centre cell 1, at (1, 3) d^2 = 0.2^2 + 0.2^2 = 0.08 -> exp(-1.44).
        "center": (torch.from_numpy(center_map(5, 5)),) * 2,
    }
    assert set(expected) == set(METHODS) - {"cam"}
    for name, (class_0, class_1) in expected.items():
        maps = map_method(name, network)(spot, spot, classes)  # (1, 2, 5, 5)
        torch.testing.assert_close(maps[0, 0], class_0, rtol=1e-5, atol=1e-6, msg=f"{name}, class 0")
        torch.testing.assert_close(maps[0, 1], class_1, rtol=1e-5, atol=1e-6, msg=f"{name}, class 1")
        peak = (2, 2) if name == "center" else (1, 3)  # every method peaks at the hot spot, but the fixed map
        assert divmod(int(maps[0, 0].argmax()), 5) == peak, name
    center = map_method("center", network)(spot, spot, classes)[0, 0]
    assert float(center[2, 2]) == 1.0 and float(center[1, 3]) == pytest.approx(math.exp(-1.44), rel=1e-6)


def test_method_names_are_checked():
    assert check_methods(["gradcam", "cam", "gradcam"]) == ("gradcam", "cam")
    with pytest.raises(MethodError, match="allowed: cam, gradcam, gradcampp, xgradcam, layercam, scorecam, eigencam"):
        check_methods(["gradcam", "gradcam+"])


def test_study_methods_are_validated_naming_the_key(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(f"study:\n  base: {tmp_path / 'missing.yaml'}\n  grid:\n    seed: [0]\n"
                    f"  methods: [cam, gradcam++]\n")
    with pytest.raises(ConfigError, match=r"study\.methods.*'gradcam\+\+'.*expected one of: cam, gradcam, gradcampp"):
        load_study(path)


# ----------------------------------------------------------------------------- the command on a finished run


@pytest.fixture(scope="module")
def methods_run(tiny_run, tmp_path_factory):
    """A copy of the shared tiny run (never written into) with ``bench methods`` run on three methods."""
    run_dir = tmp_path_factory.mktemp("methods") / "tiny"
    shutil.copytree(tiny_run.config.run_dir, run_dir)
    code = main(["methods", str(run_dir), "--methods", "cam,gradcam,scorecam", "--timing-batches", "1"])
    assert code == 0
    return run_dir


def copy_without_methods(run_dir, tmp_path):
    """A copy of the finished run ``run_dir`` in ``tmp_path / "run"`` without its ``methods/``: a run not scored yet."""
    fresh = tmp_path / "run"
    shutil.copytree(run_dir, fresh, ignore=shutil.ignore_patterns("methods"))
    return fresh


def read_rows(run_dir):
    with (run_dir / "methods" / "methods.csv").open() as handle:
        return {row.pop("method"): {key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)}


def test_methods_writes_one_row_per_method_and_the_cam_row_is_the_run_itself(methods_run):
    folder = methods_run / "methods"
    assert {path.name for path in folder.iterdir()} == {
        "methods.csv", "methods.md", "methods.png", "predictions_cam.csv", "predictions_gradcam.csv",
        "predictions_scorecam.csv", "faithfulness_cam.csv", "faithfulness_gradcam.csv", "faithfulness_scorecam.csv",
        "pointing_cam.csv", "pointing_gradcam.csv", "pointing_scorecam.csv"}
    rows = read_rows(methods_run)
    # The pointing rows per image give the table's numbers: hit rate per class, averaged; the mean energy share.
    for name in ("cam", "scorecam"):
        pointing = pd.read_csv(folder / f"pointing_{name}.csv")
        with (folder / f"predictions_{name}.csv").open() as handle:
            assert list(pointing["image_id"]) == [row["image_id"] for row in csv.DictReader(handle)]
        assert set(pointing["hit"]) <= {0, 1}
        assert rows[name]["pointing_game"] == pytest.approx(100 * pointing.groupby("gt_class")["hit"].mean().mean())
        assert rows[name]["energy_pointing_game"] == pytest.approx(100 * pointing["energy_share"].mean(), abs=1e-3)
    assert list(rows) == ["cam", "gradcam", "scorecam"]
    metrics = json.loads((methods_run / "metrics.json").read_text())
    cam = rows["cam"]
    for key in ("top1_cls_error", "top1_loc_error", "top5_loc_error", "gt_known_loc_acc", "mean_iou"):
        assert cam[key] == pytest.approx(metrics[key], abs=1e-4), key
    assert cam["max_box_acc"] == pytest.approx(metrics["sweep"]["max_box_acc"]["value"], abs=1e-4)
    assert cam["max_box_acc_v2"] == pytest.approx(metrics["sweep"]["max_box_acc_v2"]["value"], abs=1e-4)
    assert cam["val_tau"] == pytest.approx(metrics["sweep"]["calibrated"]["tau"])
    assert cam["top1_loc_error_val_tau"] == pytest.approx(metrics["sweep"]["calibrated"]["top1_loc_error"], abs=1e-4)
    # The tiny run is GAP: Grad-CAM is the CAM times a positive constant, so every box and number is the same.
    # The same map order and maximum: the same pointing and faithfulness numbers too.
    for key in ("top1_loc_error", "gt_known_loc_acc", "mean_iou", "max_box_acc", "max_box_acc_v2", "pointing_game",
                "energy_pointing_game", "deletion_auc", "insertion_auc", "average_drop", "average_increase",
                "road_morf", "road_lerf"):
        assert rows["gradcam"][key] == pytest.approx(cam[key], abs=1e-3), key
    assert all(row["ms_per_image"] > 0 and row["overhead"] > 0 for row in rows.values())
    # Every image of the split and of val: the run's own counts (tiny: 24 and 24), all_images 1.
    num_val = load_config(methods_run / "config.yaml").dataset.num_val
    assert {(row["images"], row["val_images"], row["all_images"], row["faithfulness_images"])
            for row in rows.values()} == {(metrics["num_images"], num_val, 1, 8)}
    assert (folder / "predictions_gradcam.csv").read_text().count("\n") == metrics["num_images"] + 1
    table = (folder / "methods.md").read_text()
    assert "| gradcam | GradCAM |" in table and "| scorecam | ScoreCAM |" in table and "x forward" in table
    assert (folder / "methods.png").stat().st_size > 10_000
    assert f"Images: all {metrics['num_images']} test images; tau from val on all {num_val} val images." in table
    assert "Pointing columns (test images scored" in table and "of the object (masks)" in table
    assert "Faithfulness columns: the top-1 class's map upsampled to the 64x64 input, raw, on the first 8" in table
    assert "| pointing game (%) | energy PG (%) | deletion AUC | insertion AUC |" in table


def test_the_faithfulness_file_holds_each_images_values_and_the_table_their_means(methods_run):
    rows = read_rows(methods_run)
    with (methods_run / "predictions.csv").open() as handle:
        predictions = list(csv.DictReader(handle))[:8]
    for name in ("cam", "gradcam", "scorecam"):
        with (methods_run / "methods" / f"faithfulness_{name}.csv").open() as handle:
            images = list(csv.DictReader(handle))
        # The first 8 test images, each explained for its top-1 class, at the probability the run recorded.
        assert [row["image_id"] for row in images] == [row["image_id"] for row in predictions], name
        assert [row["top1_class"] for row in images] == [row["top5_classes"].split()[0] for row in predictions]
        for image, prediction in zip(images, predictions):
            assert float(image["probability"]) == pytest.approx(float(prediction["top5_probs"].split()[0]),
                                                                abs=6e-5)
        column = {key: np.array([float(row[key]) for row in images]) for key in images[0] if key not in (
            "image_id", "top1_class")}
        row = rows[name]
        assert row["deletion_auc"] == pytest.approx(column["deletion_auc"].mean(), abs=1e-5)
        assert row["insertion_auc"] == pytest.approx(column["insertion_auc"].mean(), abs=1e-5)
        assert row["average_drop"] == pytest.approx(100 * column["drop"].mean(), abs=1e-3)
        assert row["average_increase"] == pytest.approx(100 * column["increase"].mean(), abs=1e-3)
        assert row["road_morf"] == pytest.approx(column["road_morf"].mean(), abs=1e-5)
        assert row["road_lerf"] == pytest.approx(column["road_lerf"].mean(), abs=1e-5)
        assert 0 <= row["pointing_game"] <= 100 and 0 < row["energy_pointing_game"] <= 100


def test_methods_refuses_to_overwrite_bad_names_and_missing_runs(methods_run, tmp_path, capsys):
    before = (methods_run / "methods" / "methods.csv").read_text()
    assert main(["methods", str(methods_run), "--methods", "cam"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (methods_run / "methods" / "methods.csv").read_text() == before

    fresh = copy_without_methods(methods_run, tmp_path)
    assert main(["methods", str(fresh), "--methods", "cam,gradcamm"]) == 2
    assert "'gradcamm'" in capsys.readouterr().err and not (fresh / "methods").exists()
    assert main(["methods", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_study_with_methods_writes_the_pooling_by_method_table(tmp_path, tiny_data_dir):
    path = tmp_path / "methods_study.yaml"
    path.write_text(f"""\
study:
  base: {TINY_CONFIG}
  grid:
    model.pooling: [gap, gmp]
  set:
    data_root: {tiny_data_dir}
    results_dir: {tmp_path / 'results'}
    train.epochs: 1
    train.validate: false
  methods: [cam, gradcam]
""")
    study, runs = load_study(path)
    assert study.methods == ("cam", "gradcam")
    folder = run_study(study, runs, log=lambda message: None)
    with (folder / "methods_table.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [(row["model.pooling"], row["method"], row["seeds"]) for row in table] == [
        ("gap", "cam", "1"), ("gap", "gradcam", "1"), ("gmp", "cam", "1"), ("gmp", "gradcam", "1")]
    for row in table:
        run_dir = next(run.run_dir for run in runs if run.model.pooling == row["model.pooling"])
        expected = read_rows(run_dir)[row["method"]]
        assert float(row["gt_known_loc_acc"]) == pytest.approx(expected["gt_known_loc_acc"])
        assert float(row["max_box_acc_v2"]) == pytest.approx(expected["max_box_acc_v2"])
        # the pointing and faithfulness columns beside localization, as the run's methods.csv has them
        assert float(row["pointing_game"]) == pytest.approx(expected["pointing_game"])
        assert float(row["deletion_auc"]) == pytest.approx(expected["deletion_auc"])
        assert 0.0 <= float(row["deletion_auc"]) <= 1.0 and float(row["road_morf"]) == pytest.approx(expected["road_morf"])
    assert "Map methods: model.pooling x method" in (folder / "table.md").read_text()
    markdown = (folder / "methods_table.md").read_text()
    assert "| deletion AUC |" in markdown and "| pointing game (%) |" in markdown
    assert "Faithfulness columns (deletion ... ROAD LeRF): the first 8 images of each run's split" in markdown


# ----------------------------------------------------------------------------- --images, the estimate, the default


def test_the_default_methods_leave_out_the_slow_ones_and_all_names_every_method():
    assert DEFAULT_METHODS == ("cam", "gradcam", "gradcampp", "xgradcam", "layercam", "center")
    assert _parser().parse_args(["methods", "results/gap"]).methods == ",".join(DEFAULT_METHODS)
    assert method_names("all") == list(METHODS) and method_names(" cam, center ,") == ["cam", "center"]


def test_images_seen_counts_the_scoring_the_val_sweep_and_the_timing_pass():
    every = ScoredImages("test", list(range(24)), 24, list(range(12)), 12)  # the tiny run's splits
    first_five = every.first(5)
    assert first_five.samples == [0, 1, 2, 3, 4] and first_five.val_samples == [0, 1, 2, 3, 4]
    # The tiny run (eval.batch_size 16, 3 timing batches): 24 + 12, then a warm-up batch of 16 and 24 timed.
    assert images_seen(every, timing_batches=3, batch_size=16) == 24 + 12 + 16 + 24
    assert images_seen(first_five, timing_batches=3, batch_size=16) == 5 + 5 + 5 + 5
    assert every.all_images and not first_five.all_images and every.first(30).all_images
    assert first_five.describe() == ("the first 5 of the 24 test images; tau from val on the first 5 of the "
                                     "12 val images (--images 5)")
    assert every.first(12).describe() == ("the first 12 of the 24 test images; tau from val on all 12 val images "
                                          "(--images 12)")
    assert every.first(30).describe() == "all 24 test images; tau from val on all 12 val images"


def test_the_estimate_is_the_time_per_image_times_the_images_each_method_sees():
    per_image = dict.fromkeys(METHODS, 0.5) | {"scorecam": 30.0, "eigencam": 2.0}  # seconds per image
    every = ScoredImages("test", list(range(24)), 24, list(range(12)), 12)  # 76 images seen per method
    limited = every.first(5)  # 20 per method
    lines = describe_estimate(per_image, ["cam", "center"], limited, every, 3, 16).splitlines()
    assert lines[0] == ("estimated time: about 20 s for 2 method(s) on the first 5 of the 24 test images; tau from "
                        "val on the first 5 of the 12 val images (--images 5): cam 10 s, center 10 s")
    assert lines[1].startswith("  (each method's path timed here: the forward pass on a batch of 5 test images, "
                               "the maps and boxes on the first 2; times the 20 images it goes through: ")
    # Not asked, on the same 20 images: 4 methods at 10 s, Score-CAM 600 s, EigenCAM 40 s.
    assert lines[2] == ("  not asked: gradcam (about 10 s), gradcampp (about 10 s), xgradcam (about 10 s), layercam "
                        "(about 10 s), scorecam (about 10 min 00 s), eigencam (about 40 s); name them in --methods, "
                        "or --methods all")
    # Every method on every image: (6 x 0.5 + 30 + 2) s x 76 images = 2660 s.
    assert lines[3] == ("  every method on every image (--methods all, no --images) would take about 44 min 20 s; "
                        "--images N scores the first N images only")
    # The full call says nothing of other calls.
    assert len(describe_estimate(per_image, METHODS, every, every, 3, 16).splitlines()) == 2
    # The faithfulness metrics: 2 s an image on the first 5 images, each method's map on top (0.5 s): cam and
    # center 10 + 5 x 2.5 = 22.5 s each.
    faithful = describe_estimate(per_image, ["cam", "center"], limited, every, 3, 16, 2.0, 5).splitlines()
    assert faithful[0].startswith("estimated time: about 45 s for 2 method(s) ") and faithful[0].endswith(
        ": cam 22 s, center 22 s")
    assert faithful[2].startswith("  of which the faithfulness metrics on the first 5 test images: about 25 s, "
                                  "2 s per image and method (all of them, timed on one image with its CAM: 52 "
                                  "forward passes")
    # Under half a second: said so, not 'about 0 s'.
    quick = describe_estimate(dict.fromkeys(METHODS, 0.001), ["cam"], limited, every, 3, 16).splitlines()
    assert quick[0].startswith("estimated time: under 1 s for 1 method(s) on the first 5 ") and quick[0].endswith(
        "(--images 5): cam <1 s")


@pytest.fixture(scope="module")
def first_images_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run (folder named ``tiny``, as its config) with ``bench methods --images 5``: its stdout."""
    run_dir = tmp_path_factory.mktemp("first_images") / "tiny"
    shutil.copytree(tiny_run.config.run_dir, run_dir, ignore=shutil.ignore_patterns("methods"))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["methods", str(run_dir), "--methods", "cam,center", "--images", "5", "--timing-batches", "1"])
    assert code == 0
    return run_dir, stdout.getvalue()


def test_images_scores_the_first_n_images_of_the_split_and_says_so(first_images_run, tiny_run):
    run_dir, stdout = first_images_run
    with (tiny_run.config.run_dir / "predictions.csv").open() as handle:
        first_five = [row["image_id"] for row in csv.DictReader(handle)][:5]
    for name in ("cam", "center"):
        with (run_dir / "methods" / f"predictions_{name}.csv").open() as handle:
            assert [row["image_id"] for row in csv.DictReader(handle)] == first_five, name
    rows = read_rows(run_dir)
    assert {(row["images"], row["val_images"], row["all_images"], row["faithfulness_images"])
            for row in rows.values()} == {(5, 5, 0, 5)}  # the faithfulness metrics on the first 8 of those 5
    dataset = tiny_run.config.dataset
    images = (f"the first 5 of the {dataset.num_test} test images; tau from val on the first 5 of the "
              f"{dataset.num_val} val images (--images 5)")
    assert f"Images: {images}." in (run_dir / "methods" / "methods.md").read_text()
    # The estimate comes first, before any method is scored, for this call and for the full one.
    estimate = stdout.index("estimated time: ")
    assert estimate < stdout.index("cam: scoring 5 test images and sweeping 5 val images")
    assert f"for 2 method(s) on {images}: cam " in stdout
    assert "times the 20 images it goes through" in stdout  # 5 + 5 + a warm-up of 5 + 5 timed
    assert "  of which the faithfulness metrics on the first 5 test images: " in stdout
    assert "  not asked: gradcam (" in stdout and ", scorecam (" in stdout  # 'about 2 s' or 'under 1 s'
    assert "every method on every image (--methods all, no --images) would take " in stdout


def test_a_study_scores_again_a_methods_folder_made_on_the_first_images(first_images_run, tmp_path):
    run_dir = tmp_path / "tiny"
    shutil.copytree(first_images_run[0], run_dir)
    config = load_config(run_dir / "config.yaml", [f"results_dir={tmp_path}"])
    assert config.run_dir == run_dir
    ensure_methods(config, ["center"], log=lambda message: None)  # center is there, but on 5 images only
    rows = read_rows(run_dir)
    assert list(rows) == ["cam", "center"]  # the methods it had, now on every image
    assert {(row["images"], row["all_images"]) for row in rows.values()} == {(24, 1)}


def test_no_faithfulness_images_leaves_the_columns_empty_and_a_bad_count_is_refused(methods_run, tmp_path,
                                                                                     capsys):
    fresh = copy_without_methods(methods_run, tmp_path)
    assert main(["methods", str(fresh), "--faithfulness-images", "-1"]) == 2
    assert "--faithfulness-images -1: expected a whole number of images >= 0" in capsys.readouterr().err
    assert not (fresh / "methods").exists()
    assert main(["methods", str(fresh), "--methods", "center", "--images", "3", "--faithfulness-images", "0",
                 "--timing-batches", "1"]) == 0
    row = read_rows(fresh)["center"]
    assert row["faithfulness_images"] == 0 and math.isnan(row["deletion_auc"]) and math.isnan(row["road_lerf"])
    assert not math.isnan(row["pointing_game"])
    assert not (fresh / "methods" / "faithfulness_center.csv").exists()
    assert "Faithfulness columns: not scored (--faithfulness-images 0)." in (fresh / "methods" / "methods.md").read_text()


def test_deletion_steps_sets_both_curves_the_estimate_and_the_protocol_line(methods_run, tmp_path, capsys):
    fresh = copy_without_methods(methods_run, tmp_path)
    assert main(["methods", str(fresh), "--deletion-steps", "0"]) == 2
    assert "--deletion-steps 0: expected a whole number of steps >= 1" in capsys.readouterr().err
    assert not (fresh / "methods").exists()
    assert main(["methods", str(fresh), "--methods", "center", "--images", "3", "--faithfulness-images", "2",
                 "--deletion-steps", "4", "--timing-batches", "1"]) == 0
    # 1 probability + deletion and insertion at 4 + 1 images each + the masked image + ROAD: 2 orders x 4 percentiles x 2
    assert "its CAM: 28 forward passes" in capsys.readouterr().out
    protocol = (fresh / "methods" / "methods.md").read_text()
    assert "mean colour (0 of the normalized input) in 4 equal steps" in protocol
    assert "sigma 5) in 4 equal steps" in protocol and "in 16 equal steps" not in protocol


@pytest.mark.parametrize("value", ["0", "-3"])
def test_images_below_one_is_refused_naming_the_option(methods_run, tmp_path, capsys, value):
    fresh = copy_without_methods(methods_run, tmp_path)
    assert main(["methods", str(fresh), "--images", value]) == 2
    error = capsys.readouterr().err
    assert f"--images {value}: expected a whole number of images >= 1" in error
    assert not (fresh / "methods").exists() and not (fresh / "methods.tmp").exists()


def test_images_that_is_not_a_number_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["methods", "results/gap", "--images", "ten"])
    assert stopped.value.code == 2
    assert "argument --images: invalid int value: 'ten'" in capsys.readouterr().err
