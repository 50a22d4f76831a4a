"""The few-shot baseline: its targets and loss by hand, its map as a map method, and its study row and cache."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from helpers import read_rows

from bench.config import load_study
from bench.data.boxes import boxes_to_mask
from bench.data.images import object_mask
from bench.data.samples import Sample
from bench.model.foreground_head import ForegroundHead, ForegroundNet
from bench.run.few_shot_baseline import (
    KEY_FILE,
    LOSS_FILE,
    PREDICTIONS,
    ensure_few_shot,
    few_shot_key,
    key_folder,
    per_class_text,
)
from bench.scoring.few_shot_maps import foreground_maps
from bench.study.few_shot_row import CACHE_DIR, FEW_SHOT_LABEL, few_shot_baselines, few_shot_identity, stale_folders
from bench.training.few_shot import foreground_loss, foreground_targets

# ----------------------------------------------------------------------------- targets and loss by hand


def test_targets_are_each_cells_object_fraction_and_the_loss_is_their_cross_entropy():
    # A 4 x 4 mask on a 2 x 2 grid: each cell is a 2 x 2 block; object pixels 4, 2, 0 and 1 of 4.
    mask = torch.tensor([[1, 1, 1, 0],
                         [1, 1, 1, 0],
                         [0, 0, 0, 0],
                         [0, 0, 0, 1]], dtype=torch.bool)
    targets = foreground_targets(mask[None], (2, 2))
    assert targets.tolist() == [[[1.0, 0.5], [0.0, 0.25]]]
    # Logits ln 3, 0, -ln 3, 0: p = 3/4, 1/2, 1/4, 1/2. Cross-entropy per cell: -ln(3/4), ln 2, -ln(3/4), ln 2
    # (a target of 1/2 or 1/4 against p = 1/2 costs ln 2 whatever the target). Mean: (ln(4/3) + ln 2) / 2.
    logits = torch.tensor([[[math.log(3), 0.0], [-math.log(3), 0.0]]])
    assert foreground_loss(logits, targets).item() == pytest.approx(math.log(8 / 3) / 2, abs=1e-6)  # 0.4904
    # The loss is smallest where p equals the soft target: logit ln(1/3) for a quarter of a cell.
    quarter = torch.tensor([0.25])
    best = foreground_loss(torch.tensor([math.log(1 / 3)]), quarter)
    assert best < foreground_loss(torch.tensor([math.log(1 / 3) + 0.1]), quarter)
    assert best < foreground_loss(torch.tensor([math.log(1 / 3) - 0.1]), quarter)


def test_boxes_fill_the_pixels_whose_centres_they_hold(tmp_path):
    assert boxes_to_mask(np.array([[1, 0, 3, 2]]), (2, 4)).astype(int).tolist() == [[0, 1, 1, 0], [0, 1, 1, 0]]
    # Centres at 0.5, 1.5: [0.6, 0, 1.5, 1) holds column 1's centre only (1.5 < 1.5 is false: half-open).
    assert boxes_to_mask(np.array([[0.6, 0, 1.6, 1]]), (1, 3)).astype(int).tolist() == [[0, 1, 0]]
    assert not boxes_to_mask(np.zeros((0, 4)), (2, 2)).any()
    # A sample without masks: its boxes, resized with the image (8 x 4 -> 4 x 4: x halves), filled.
    sample = Sample("a", tmp_path / "a.png", 0, np.array([[2, 0, 6, 2]], np.float32), (4, 8), ())
    assert object_mask(sample, (4, 4)).astype(int).tolist() == [[0, 1, 1, 0], [0, 1, 1, 0], [0] * 4, [0] * 4]


def test_the_head_starts_at_one_half_and_the_map_is_the_same_for_every_class():
    network = ForegroundNet(torch.nn.Conv2d(3, 4, 2, stride=2), 4, (0.5,) * 3, (0.5,) * 3)
    images = torch.rand(2, 3, 6, 6)
    assert torch.equal(network.foreground(images), torch.full((2, 3, 3), 0.5))  # zero weights and bias
    with torch.no_grad():
        network.head.conv.weight.fill_(1.0)
    maps = foreground_maps(network)(images, torch.zeros(2, 8, 3, 3), torch.tensor([[0, 5], [2, 2]]))
    expected = torch.sigmoid(network.body(images).sum(dim=1))  # (2, 3, 3): the 1x1 conv with weights 1
    assert maps.shape == (2, 2, 3, 3)
    torch.testing.assert_close(maps[:, 0], expected)
    torch.testing.assert_close(maps[:, 1], expected)
    assert not any(p.requires_grad for p in network.body.parameters())  # frozen
    assert isinstance(network.head, ForegroundHead) and not network.train().body.training
    with pytest.raises(ValueError, match=r"the baseline's grid \(3, 3\) is not the scored network's \(4, 4\)"):
        foreground_maps(network)(images, torch.zeros(2, 8, 4, 4), torch.tensor([[0], [1]]))


def test_per_class_counts_are_said_in_one_phrase():
    assert per_class_text([0, 0, 1, 1, 2, 2]) == "2 per class"
    assert per_class_text([0, 1, 1, 3, 3, 3]) == "1 to 3 per class"  # class 2 has none: not counted


# ----------------------------------------------------------------------------- on the tiny study


def test_the_baseline_learns_the_tiny_data_and_ends_every_table_after_the_center_row(tiny_study):
    study, runs = tiny_study
    rows = read_rows(study.study_dir / "table.csv")
    assert [row["model.pooling"] for row in rows] == ["gap", "gmp", "center baseline", FEW_SHOT_LABEL]
    center, few_shot = rows[-2:]
    (folder,) = (study.study_dir / CACHE_DIR).iterdir()
    scores = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
    assert float(few_shot["gt_known_loc_acc_mean"]) == pytest.approx(scores["row"]["gt_known_loc_acc"])
    assert float(few_shot["sweep.max_box_acc_v2.value_mean"]) == pytest.approx(scores["row"]["max_box_acc_v2"])
    assert few_shot["seeds"] == "-" and few_shot["top1_loc_error_mean"] == few_shot["top1_cls_error_mean"] == ""
    # It learns: trained on the 24 val images (2 per class) and their mirror images, its loss falls, and it
    # localizes the 24 test images better than the fixed centred map.
    assert (scores["training"]["images"], scores["training"]["per_class"], scores["training"]["maps"]) == (
        24, "2 per class", 48)
    losses = [float(row["loss"]) for row in read_rows(folder / LOSS_FILE)]
    assert losses[-1] < 0.8 * losses[0]
    assert float(few_shot["gt_known_loc_acc_mean"]) > float(center["gt_known_loc_acc_mean"])
    assert float(few_shot["sweep.pxap.value_mean"]) > float(center["sweep.pxap.value_mean"])
    markdown = (study.study_dir / "table.md").read_text(encoding="utf-8")
    assert markdown.count(f"| {FEW_SHOT_LABEL} | - |") == 2  # both points
    assert "trained with full supervision on the 24 val images (2 per class)" in markdown
    assert "a fixed recipe (L-BFGS, at most 100 iterations, the last kept)" in markdown
    by_scale = (study.study_dir / "by_object_scale.md").read_text(encoding="utf-8")
    assert by_scale.count(f"| all runs | {FEW_SHOT_LABEL} |") == 2 * 2  # GT-known and mean IoU, at both points
    assert len(read_rows(folder / PREDICTIONS)) == len(read_rows(runs[0].run_dir / "predictions.csv"))


def test_the_cached_baseline_is_reused_and_a_stale_one_made_again(tiny_study, tmp_path):
    study, runs = tiny_study
    (source,) = (study.study_dir / CACHE_DIR).iterdir()
    cache = tmp_path / CACHE_DIR
    shutil.copytree(source, cache / source.name)
    messages = []
    folder, scores = ensure_few_shot(runs[0], cache, messages.append)
    assert folder == cache / source.name and messages == []  # reused: nothing trained or scored
    # The key: the data, grid, weights, flip, recipe and scoring keys; not the pooling, seed or batch sizes.
    key = few_shot_key(runs[0])
    assert key_folder(cache, key) == folder
    assert few_shot_key(runs[1]) == key  # GMP's run: the same baseline
    same = dataclasses.replace(runs[0], seed=3, eval=dataclasses.replace(runs[0].eval, batch_size=3))
    assert few_shot_key(same) == key and few_shot_identity(same) == few_shot_identity(runs[0])
    for changed in (dataclasses.replace(runs[0], eval=dataclasses.replace(runs[0].eval, tau=0.5)),
                    dataclasses.replace(runs[0], model=dataclasses.replace(runs[0].model, input_size=32))):
        assert key_folder(cache, few_shot_key(changed)) != folder
        assert few_shot_identity(changed) != few_shot_identity(runs[0])
    # A folder whose key file is another key's (stale) is made again, in place, from the same recipe.
    (folder / KEY_FILE).write_text('{"version": 0}\n', encoding="utf-8")
    again, rescored = ensure_few_shot(runs[0], cache, messages.append)
    assert again == folder and any("training a foreground head" in m for m in messages)
    assert json.loads((folder / KEY_FILE).read_text(encoding="utf-8")) == json.loads(json.dumps(key, default=str))
    assert rescored["row"] == pytest.approx(scores["row"], nan_ok=True)  # deterministic: the same numbers
    assert not list(cache.glob("*.tmp"))


def test_cached_folders_no_setting_uses_are_kept_and_named_in_one_line(tiny_study, tmp_path):
    study, runs = tiny_study
    (used,) = (study.study_dir / CACHE_DIR).iterdir()
    cache = tmp_path / CACHE_DIR
    shutil.copytree(used, cache / used.name)
    (cache / "0123abcd").mkdir()  # an earlier key's folder
    (cache / "4567ef01.tmp").mkdir()  # a build a kill interrupted: ensure_few_shot clears it, not named here
    assert stale_folders(cache, [cache / used.name]) == [cache / "0123abcd"]
    assert stale_folders(tmp_path / "none", []) == []
    messages = []
    baselines = few_shot_baselines(dataclasses.replace(study, results_dir=str(tmp_path.parent),
                                                       name=tmp_path.name), runs, messages.append)
    assert [baseline.folder for baseline in baselines] == [cache / used.name]  # reused
    (line,) = [m for m in messages if "no setting uses" in m]
    assert str(cache / "0123abcd") in line and ".tmp" not in line and "\n" not in line
    assert (cache / "0123abcd").is_dir()  # kept


def test_a_study_can_leave_the_few_shot_row_out(tmp_path):
    from helpers import TINY_CONFIG

    path = tmp_path / "s.yaml"
    path.write_text(f"study:\n  base: {TINY_CONFIG}\n  grid:\n    model.pooling: [gap, gmp]\n  few_shot: false\n")
    study, _ = load_study(path)
    assert study.few_shot is False
    path.write_text(f"study:\n  base: {TINY_CONFIG}\n  grid:\n    model.pooling: [gap, gmp]\n")
    assert load_study(path)[0].few_shot is True
