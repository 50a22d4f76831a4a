"""The synthetic "birds" generator: determinism, geometry, class design, on-disk dataset."""

import colorsys
import json
from collections import Counter

import numpy as np
import pytest
from helpers import TINY_CONFIG
from PIL import Image

from bench.config import ConfigError, load_config
from bench.data import generator as synthetic
from bench.data.boxes import box_area, mask_to_box
from bench.data.generator import (
    CLASS_DESIGNS,
    NUM_CLASSES,
    ensure_synthetic_dataset,
    image_rng,
    render_sample,
    split_labels,
    synthetic_dataset_dir,
)
from bench.data.wsol_layout import read_class_names, read_split

TINY = dict(variant="parts", seed=3, num_train=24, num_val=12, num_test=12, image_size=64, object_scale="cub")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return ensure_synthetic_dataset(tmp_path_factory.mktemp("data"), progress=False, **TINY)


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("variant", synthetic.VARIANTS)
def test_render_is_deterministic_for_a_seed_and_differs_across_seeds(variant):
    image_a, mask_a = render_sample(np.random.default_rng(7), 4, variant, 96, "cub")
    image_b, mask_b = render_sample(np.random.default_rng(7), 4, variant, 96, "cub")
    image_c, mask_c = render_sample(np.random.default_rng(8), 4, variant, 96, "cub")
    np.testing.assert_array_equal(image_a, image_b)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert image_a.shape == (96, 96, 3) and image_a.dtype == np.uint8
    assert mask_a.shape == (96, 96) and mask_a.dtype == bool
    assert np.mean(image_a != image_c) > 0.5
    assert not np.array_equal(mask_a, mask_c)


def test_small_object_scale_box_area_fraction_in_range_and_varied():
    fractions, centres = [], []
    for seed in range(60):
        _, mask = render_sample(np.random.default_rng(seed), seed % NUM_CLASSES, "parts", 224, "small")
        box = mask_to_box(mask)
        assert 0 <= box[0] < box[2] <= 224 and 0 <= box[1] < box[3] <= 224
        fractions.append(box_area(box) / 224**2)
        centres.append(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
    fractions = np.array(fractions)
    assert fractions.min() >= 0.05 and fractions.max() <= 0.60
    # log-uniform over [0.05, 0.6]: the median is near sqrt(0.05 * 0.6) = 0.17, both ends are reached
    assert fractions.min() < 0.08 and fractions.max() > 0.35
    assert 0.10 < np.median(fractions) < 0.28
    assert np.std(np.array(centres), axis=0).min() > 15  # positions vary in x and y


# The published quantiles (p5 ... p95) each preset must reproduce in the rasterized boxes of 2,000 objects.
@pytest.mark.parametrize("preset", ["cub", "imagenet"])
def test_preset_object_scales_match_the_published_quantiles(preset):
    size = 64  # small images keep the test fast; the scale refinement keeps pixel rounding small even here
    fractions = np.array([
        box_area(mask_to_box(synthetic._sample_object(np.random.default_rng([9, index]), size, preset).mask(size)))
        / size**2 for index in range(2000)])
    probabilities, published = zip(*synthetic.OBJECT_SCALE_QUANTILES[preset])
    measured = np.quantile(fractions, probabilities)
    np.testing.assert_allclose(measured, published, atol=0.02)
    assert 0 < fractions.min() and fractions.max() <= 1


def test_inverse_cdf_extends_the_outer_segments_and_clamps():
    # CUB: p0 = 0.111 - 0.05 * (0.138 - 0.111) / 0.05 = 0.084; p100 = 0.681 + 0.05 * (0.681 - 0.588) / 0.05 = 0.774.
    probabilities, fractions = synthetic.scale_inverse_cdf(synthetic.OBJECT_SCALE_QUANTILES["cub"])
    assert probabilities[0] == 0 and probabilities[-1] == 1
    assert fractions[0] == pytest.approx(0.084) and fractions[-1] == pytest.approx(0.774)
    # ImageNet: p0 would be 0.035 - 0.037 < 0 (clamped to 0.01); p100 would be 1.057 (clamped to 1).
    _, fractions = synthetic.scale_inverse_cdf(synthetic.OBJECT_SCALE_QUANTILES["imagenet"])
    assert fractions[0] == synthetic.SMALLEST_OBJECT_FRACTION and fractions[-1] == 1.0
    assert np.all(np.diff(fractions) > 0)


def test_an_object_larger_than_the_frame_is_cropped_with_exact_ground_truth(monkeypatch):
    # ImageNet's top decile: boxes of 87-100 % of the frame, which most rotated birds cannot fit whole.
    size, pad, cropped = 96, 64, 0
    poses = {}
    rasterize = synthetic._rasterize_object

    def recording(pose, image_size):
        raster = rasterize(pose, image_size)
        poses[id(raster)] = pose
        return raster

    monkeypatch.setattr(synthetic, "_rasterize_object", recording)
    for index in range(300):
        raster = synthetic._sample_object(np.random.default_rng([4, index]), size, "imagenet")
        pose = poses[id(raster)]
        # The same pose on a frame padded by `pad` on every side shows the whole object.
        whole = rasterize(synthetic._Pose((pose.centre[0] + pad, pose.centre[1] + pad), pose.linear), size + 2 * pad)
        whole_mask = whole.mask(size + 2 * pad)
        if not whole_mask[pad:pad + size, pad:pad + size].any() or whole_mask.sum() == whole_mask[
                pad:pad + size, pad:pad + size].sum():
            continue  # the object lies wholly inside the frame
        cropped += 1
        # The ground truth is exactly the visible part of the object: its mask, and the box of that mask.
        np.testing.assert_array_equal(raster.mask(size), whole_mask[pad:pad + size, pad:pad + size])
        box = mask_to_box(raster.mask(size))
        assert box[0] == 0 or box[1] == 0 or box[2] == size or box[3] == size  # the frame cuts the box
    # About 30 % at ImageNet's scale: large boxes, and elongated birds whose box is wider than the frame allows.
    assert 45 <= cropped <= 135


def test_small_object_scale_renders_the_images_of_earlier_releases_byte_for_byte(tmp_path):
    # Hashes of render_sample(default_rng(11), 5, variant, 96) computed with the generator before object scale
    # was a parameter (commit 0b3daef): the `small` preset must not change a pixel of its dataset.
    import hashlib
    expected = {"parts": "502349d29eba3fe2", "uniform": "1797003a5d3ed3be"}
    for variant, digest in expected.items():
        image, mask = render_sample(np.random.default_rng(11), 5, variant, 96, "small")
        assert hashlib.sha256(image.tobytes() + mask.tobytes()).hexdigest()[:16] == digest
    # ... and keeps its folder name (the README's default dataset folder before this preset existed).
    folder = synthetic_dataset_dir(tmp_path, "parts", 0, 1500, 300, 300, 224, "small")
    assert folder.name == "synthetic-parts-188ae7de0f"


def test_an_explicit_range_bounds_the_boxes():
    fractions = [box_area(mask_to_box(render_sample(np.random.default_rng(seed), 0, "parts", 96, (0.3, 0.4))[1]))
                 / 96**2 for seed in range(20)]
    assert min(fractions) >= 0.3 and max(fractions) <= 0.4
    with pytest.raises(ValueError, match=r"object_scale=\(0.5, 0.2\) is not valid"):
        render_sample(np.random.default_rng(0), 0, "parts", 64, (0.5, 0.2))
    with pytest.raises(ValueError, match=r"object_scale='huge' is not one of \('cub', 'imagenet', 'small'\)"):
        render_sample(np.random.default_rng(0), 0, "parts", 64, "huge")


def test_config_object_scale_reaches_the_generator():
    config = load_config(TINY_CONFIG, ["dataset.object_scale=range", "dataset.object_scale_range=[0.2,0.5]"])
    assert config.dataset.generator_object_scale == (0.2, 0.5)
    assert load_config(TINY_CONFIG).dataset.generator_object_scale == "cub"  # the default
    with pytest.raises(ConfigError, match="dataset.object_scale"):
        load_config(TINY_CONFIG, ["dataset.object_scale=tiny"])


def test_head_is_five_to_ten_percent_of_the_object():
    rng = np.random.default_rng(0)
    for _ in range(20):
        raster = synthetic._rasterize_object(synthetic._sample_pose(rng, 224, synthetic.BOX_AREA_FRACTION_RANGE), 224)
        object_pixels = np.logical_or.reduce(list(raster.parts.values())).sum()
        fraction = raster.parts["head"].sum() / object_pixels
        assert 0.05 <= fraction <= 0.10, fraction  # ~0.084 by design


def test_mask_is_the_visible_object_drawn_on_top():
    """Pixels of the head show exactly the class hue: nothing covers the object."""
    design = CLASS_DESIGNS[5]
    image, mask = render_sample(np.random.default_rng(11), 5, "parts", 224, "cub")
    head_colour = np.round(design.head_rgb).astype(np.uint8)
    is_head_colour = np.all(image == head_colour, axis=-1)
    assert is_head_colour[mask].mean() > 0.04  # the head (~8 % of the object) is fully visible
    assert is_head_colour[~mask].sum() < 0.01 * (~mask).sum()


# ----------------------------------------------------------------------------- class design


def test_parts_design_body_wing_shared_by_three_classes_head_hue_unique():
    pairs = Counter((d.body_texture, d.wing_texture) for d in CLASS_DESIGNS)
    assert len(pairs) == 4 and set(pairs.values()) == {3}
    assert all(body != wing for body, wing in pairs)
    hues = sorted(d.head_hue for d in CLASS_DESIGNS)
    gaps = np.diff(hues + [hues[0] + 1.0])
    np.testing.assert_allclose(gaps, 1 / 12)  # 12 hues, 30 degrees apart
    # the three classes sharing a body/wing pair have hues 120 degrees apart
    for label in range(4):
        assert [d.head_hue for d in CLASS_DESIGNS if d.label % 4 == label] == pytest.approx(
            [label / 12, (label + 4) / 12, (label + 8) / 12]
        )
    assert len({d.name for d in CLASS_DESIGNS}) == NUM_CLASSES


def test_parts_variant_body_colours_are_class_neutral_head_is_class_hue():
    design = CLASS_DESIGNS[2]
    paints = [synthetic._object_paints(np.random.default_rng(seed), 2, "parts") for seed in range(5)]
    assert {p["body"].texture for p in paints} == {design.body_texture}
    assert {p["wing"].texture for p in paints} == {design.wing_texture}
    assert len({p["body"].light for p in paints}) == 5  # random per image
    assert {p["head"].light for p in paints} == {design.head_rgb}
    assert design.head_rgb == pytest.approx(tuple(255 * c for c in colorsys.hsv_to_rgb(2 / 12, 0.9, 0.95)))


def test_uniform_variant_paints_every_part_with_the_class_hue():
    design = CLASS_DESIGNS[9]
    paints = synthetic._object_paints(np.random.default_rng(0), 9, "uniform")
    for part in ("body", "wing", "head"):
        assert paints[part].light == design.head_rgb
    assert paints["body"].dark == pytest.approx(tuple(0.55 * c for c in design.head_rgb))


def test_textures_are_functions_of_local_coordinates():
    u = np.array([0.05, 0.3, 0.6])  # at 2 cycles per unit: phases 0.1, 0.6, 1.2
    np.testing.assert_array_equal(synthetic.texture_pattern("stripes", u, 0 * u, 2.0), [True, False, True])
    np.testing.assert_array_equal(synthetic.texture_pattern("bands", 0 * u, u, 2.0), [True, False, True])
    np.testing.assert_array_equal(synthetic.texture_pattern("checks", u, 0 * u, 2.0), [False, False, True])
    np.testing.assert_array_equal(synthetic.texture_pattern("stripes", u, 0 * u, 2.0, (0.5, 0.0)), [False, True, False])
    assert not synthetic.texture_pattern("plain", u, u, 2.0).any()
    with pytest.raises(ValueError, match="'zebra'"):
        synthetic.texture_pattern("zebra", u, u, 2.0)


# ----------------------------------------------------------------------------- validation and naming


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variant="birds"), r"variant='birds' is not one of \('parts', 'uniform'\)"),
        (dict(image_size=16), r"image_size=16 .*\[32, 4096\]"),
        (dict(num_train=0), r"num_train=0 .*>= 1"),
        (dict(num_val=2.5), r"num_val=2.5"),
        (dict(seed=-1), r"seed=-1"),
    ],
)
def test_invalid_parameters_name_argument_value_and_allowed(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ensure_synthetic_dataset(tmp_path, **{**TINY, **kwargs}, progress=False)
    assert list(tmp_path.iterdir()) == []  # validated before touching the disk


@pytest.mark.parametrize("key, bad, good", [
    ("seed", -1, 0),
    ("seed", 2**32, 2**32 - 1),
    ("num_val", 0, 1),
    ("image_size", 31, 32),
    ("image_size", 4097, 4096),
])
def test_generator_and_config_accept_the_same_values(tmp_path, key, bad, good):
    # The bounds are defined once, beside the config field; the generator guards direct callers with them.
    synthetic_dataset_dir(tmp_path, **{**TINY, key: good})
    assert getattr(load_config(TINY_CONFIG, [f"dataset.{key}={good}"]).dataset, key) == good
    with pytest.raises(ValueError, match=rf"^{key}={bad} is not valid: expected ") as direct:
        synthetic_dataset_dir(tmp_path, **{**TINY, key: bad})
    with pytest.raises(ConfigError) as loaded:
        load_config(TINY_CONFIG, [f"dataset.{key}={bad}"])
    expected = str(direct.value).split(": expected ")[1]
    assert str(loaded.value).endswith(f"'dataset.{key}' is {bad}; expected {expected}")


def test_render_sample_rejects_bad_label():
    with pytest.raises(ValueError, match=r"label=12 .*\[0, 11\]"):
        render_sample(np.random.default_rng(0), 12, "parts", 64, "cub")


def test_dataset_dir_name_depends_on_every_parameter(tmp_path):
    base = synthetic_dataset_dir(tmp_path, **TINY)
    assert base.parent == tmp_path and base.name.startswith("synthetic-parts-cub-")
    assert synthetic_dataset_dir(tmp_path, **TINY) == base
    changes = dict(variant="uniform", seed=4, num_train=25, num_val=13, num_test=13, image_size=65,
                   object_scale="imagenet")
    names = {synthetic_dataset_dir(tmp_path, **{**TINY, key: value}).name for key, value in changes.items()}
    assert len(names) == len(changes) and base.name not in names


def test_split_labels_balanced_and_deterministic():
    labels = split_labels(0, "train", 30)
    assert np.bincount(labels, minlength=NUM_CLASSES).tolist() == [3] * 6 + [2] * 6
    np.testing.assert_array_equal(labels, split_labels(0, "train", 30))
    assert not np.array_equal(labels, split_labels(0, "val", 30))
    assert not np.array_equal(labels, np.arange(30) % NUM_CLASSES)  # shuffled


# ----------------------------------------------------------------------------- the dataset on disk


def test_tiny_dataset_writes_every_file_of_the_layout(tiny_dataset):
    root = tiny_dataset
    assert root.name == synthetic_dataset_dir(root.parent, **TINY).name
    description = json.loads((root / "dataset.json").read_text())
    assert description["parameters"] == {**TINY, "generator_version": synthetic.GENERATOR_VERSION}
    assert read_class_names(root) == synthetic.class_names()
    for split, count in (("train", 24), ("val", 12), ("test", 12)):
        for name in ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt", "masks.txt"):
            assert len((root / "metadata" / split / name).read_text().splitlines()) == count
        assert len(list((root / "images" / split).glob("*/*.jpg"))) == count
        assert len(list((root / "masks" / split).glob("*/*.png"))) == count
        assert sum(description["images_per_label"][split]) == count
    assert description["images_per_label"]["train"] == [2] * NUM_CLASSES
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temporary folder left


def test_tiny_dataset_reads_back_with_exact_boxes(tiny_dataset):
    samples = read_split(tiny_dataset, "val")
    assert len(samples) == 12
    assert sorted(s.label for s in samples) == list(range(NUM_CLASSES))
    for index, sample in enumerate(samples):
        assert sample.image_id == f"val/{sample.label:02d}/{index:06d}.jpg"
        assert sample.size == (64, 64)
        with Image.open(sample.image_path) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
        mask = np.asarray(Image.open(sample.mask_paths[0])) > 127
        assert sample.boxes.shape == (1, 4)
        np.testing.assert_array_equal(sample.boxes[0], mask_to_box(mask))


def test_any_image_regenerates_alone(tiny_dataset):
    sample = read_split(tiny_dataset, "test")[7]
    _, mask = render_sample(image_rng(TINY["seed"], "test", 7), sample.label, "parts", 64, "cub")
    np.testing.assert_array_equal(np.asarray(Image.open(sample.mask_paths[0])) > 127, mask)


def test_existing_dataset_is_reused_without_rewriting(tiny_dataset):
    files = [p for p in tiny_dataset.rglob("*") if p.is_file()]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = ensure_synthetic_dataset(tiny_dataset.parent, progress=False, **TINY)
    assert again == tiny_dataset
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    assert len([p for p in tiny_dataset.rglob("*") if p.is_file()]) == len(files)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_render(*args):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return render_sample(*args)

    monkeypatch.setattr(synthetic, "render_sample", failing_render)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_dataset(tmp_path, progress=False, **TINY)
    assert list(tmp_path.iterdir()) == []


def test_folder_without_dataset_json_is_refused(tmp_path):
    synthetic_dataset_dir(tmp_path, **TINY).mkdir()
    with pytest.raises(ValueError, match="delete it to regenerate"):
        ensure_synthetic_dataset(tmp_path, progress=False, **TINY)
