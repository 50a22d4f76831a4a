"""The class structures of the embedded generator: the fine-grained species, the presets, birds12 unchanged."""

import colorsys
import hashlib
import itertools
import json

import numpy as np
import pytest
from helpers import REPO, TINY_CONFIG

from bench.config import SPECIES_PRESETS, ConfigError, DatasetConfig, load_config
from bench.data import generator as synthetic
from bench.data import species
from bench.data.generator import ensure_synthetic_dataset, image_rng, render_sample, split_labels
from bench.data.species import attribute_differences, species_designs
from bench.data.wsol_layout import read_class_names, read_split

# ----------------------------------------------------------------------------- the species


def test_every_attribute_combination_is_a_species_and_smaller_sets_are_prefixes():
    assert species.MAX_SPECIES == 6 * 3 * 4 * 4 == 288
    from bench import config
    assert config.MAX_SPECIES == species.MAX_SPECIES  # the config's bound is the species table's size
    every = species_designs(288)
    combinations = {(d.head_hue, d.head_pattern, d.breast, d.wing) for d in every}
    assert len(combinations) == 288 and len({d.name for d in every}) == 288
    # cub48's species are the first 48 of cub's 200, and both the first of all 288: a fixed order, not the seed's.
    assert species_designs(48) == species_designs(200)[:48] == every[:48]
    assert [d.label for d in species_designs(48)] == list(range(48))


def test_species_names_spell_their_attributes():
    design = species.SpeciesDesign(7, "", head_hue=4, head_pattern=1, breast=2, wing=1)
    assert species._species_name(7, 4, 1, 2, 1) == "s007_blue-capped-head_rufous-breast_barred-wing"
    assert species._species_name(12, 0, 0, 0, 0) == "s012_red-head_white-breast_plain-wing"
    assert design.wing_texture == "stripes" and design.head_pattern_name == "capped"


def test_closest_species_differ_in_one_attribute_as_fine_grained_classes_do():
    designs = species_designs(48)
    differences = [attribute_differences(a, b) for a, b in itertools.combinations(designs, 2)]
    assert min(differences) == 1  # no two species are alike
    # A random 48 of the 288 combinations: each has 5 + 2 + 3 + 3 = 13 one-attribute neighbours among the other
    # 287, so about 1,128 pairs x 13 / 287 = 51 one-attribute pairs are expected.
    assert 35 <= differences.count(1) <= 70
    with pytest.raises(ValueError, match=r"num_species=289 .*\[2, 288\]"):
        species_designs(289)


def test_species_colours_jitter_the_hue_by_the_given_degrees():
    design = species_designs(48)[0]
    head_hue = species.HEAD_HUES[design.head_hue][1]

    def hue_offsets(jitter):
        offsets = []
        for seed in range(400):
            rgb = species.species_colours(np.random.default_rng(seed), design, jitter)["head"]
            hue = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]
            offsets.append((hue - head_hue + 0.5) % 1.0 - 0.5)
        return 360 * np.array(offsets)

    np.testing.assert_allclose(hue_offsets(0.0), 0.0, atol=1e-9)  # saturation, value and light keep the hue
    assert np.std(hue_offsets(20.0)) == pytest.approx(20.0, rel=0.1)
    pattern = species.species_colours(np.random.default_rng(0), design, 0.0)
    assert pattern["head_pattern"] == pytest.approx(tuple(0.2 * c for c in pattern["head"]))


def test_head_patterns_cover_the_cap_or_the_stripe_of_the_head():
    # Head-local v = (v - (-0.16)) / 0.16: v = -0.16 is the head's middle, -0.24 is half a radius towards the back.
    u = np.full(3, 0.68)
    v = np.array([-0.16, -0.24, -0.08])  # head_v = 0, -0.5, +0.5
    np.testing.assert_array_equal(synthetic.head_pattern_region(u, v, "capped"), [False, True, False])
    np.testing.assert_array_equal(synthetic.head_pattern_region(u, v, "eye-striped"), [True, False, False])
    assert not synthetic.head_pattern_region(u, v, "plain").any()


# ----------------------------------------------------------------------------- rendering


def test_a_species_changes_the_paint_of_the_bird_not_its_geometry():
    birds12_image, birds12_mask = render_sample(np.random.default_rng(5), 3, "parts", 96, "cub")
    image, mask = render_sample(np.random.default_rng(5), 3, "parts", 96, "cub", num_species=48, hue_jitter=10.0)
    np.testing.assert_array_equal(mask, birds12_mask)  # the same draws place the same bird
    np.testing.assert_array_equal(image[~mask], birds12_image[~mask])  # on the same background
    assert np.mean(np.any(image[mask] != birds12_image[mask], axis=-1)) > 0.5


def test_a_species_bird_shows_its_head_colour_at_zero_jitter():
    design = species_designs(48)[3]  # red, capped
    image, mask = render_sample(image_rng(0, "train", 1), 3, "parts", 224, "cub", num_species=48, hue_jitter=0.0)
    hsv = np.array([colorsys.rgb_to_hsv(*(pixel / 255)) for pixel in image[mask].astype(float)])
    head_hue = species.HEAD_HUES[design.head_hue][1]
    near = (np.abs((hsv[:, 0] - head_hue + 0.5) % 1.0 - 0.5) < 2 / 360) & (hsv[:, 1] > 0.7) & (hsv[:, 2] > 0.5)
    # The head is ~8 % of the object and the cap darkens a third of it: the lit part is a few % of the mask.
    assert 0.015 < near.mean() < 0.08


def test_species_render_rejects_what_they_do_not_have():
    with pytest.raises(ValueError, match=r"label=48 .*\[0, 47\]"):
        render_sample(np.random.default_rng(0), 48, "parts", 64, "cub", num_species=48)
    with pytest.raises(ValueError, match="'parts' variant only"):
        render_sample(np.random.default_rng(0), 1, "uniform", 64, "cub", num_species=48)
    with pytest.raises(ValueError, match=r"hue_jitter=-1.0 .*\[0, 180\]"):
        render_sample(np.random.default_rng(0), 1, "parts", 64, "cub", num_species=48, hue_jitter=-1.0)


# ----------------------------------------------------------------------------- birds12 unchanged


def test_birds12_renders_and_writes_the_dataset_of_earlier_releases_byte_for_byte(tmp_path):
    # Digests computed with the generator before the species existed (commit c967c6f).
    expected = {("cub", "parts"): "a489834defacf84a", ("cub", "uniform"): "9ba2b8a39d5687f8",
                ("imagenet", "parts"): "24d02bb0123fefcc"}
    for (scale, variant), digest in expected.items():
        image, mask = render_sample(np.random.default_rng(11), 5, variant, 96, scale)
        assert hashlib.sha256(image.tobytes() + mask.tobytes()).hexdigest()[:16] == digest
    root = ensure_synthetic_dataset(tmp_path, "parts", 3, 24, 12, 12, 64, "cub", progress=False)
    files = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        files.update(path.relative_to(root).as_posix().encode())
        files.update(path.read_bytes())
    assert (root.name, files.hexdigest()[:16]) == ("synthetic-parts-cub-f34ffb19fc", "cabad9ed8a63cfbd")
    # ... and the default dataset of earlier releases keeps its folder (results/ of earlier runs name it).
    birds12 = load_config(TINY_CONFIG, ["dataset.classes=birds12", "dataset.variant=parts", "dataset.num_train=1500",
                                        "dataset.num_val=300", "dataset.num_test=300", "dataset.image_size=224"]).dataset
    assert birds12.species_split == (0, 1500, 300, 300)
    name = synthetic.synthetic_dataset_dir(tmp_path, birds12.variant, birds12.seed, 1500, 300, 300, 224, "cub").name
    assert name == "synthetic-parts-cub-6191d758e0"


# ----------------------------------------------------------------------------- presets and config


def test_presets_set_species_and_cub_images_per_class():
    assert SPECIES_PRESETS == {"cub48": (48, 30, 5, 29), "cub": (200, 30, 5, 29)}
    assert DatasetConfig().classes == "cub48"
    assert DatasetConfig().species_split == (48, 1440, 240, 1392)
    assert DatasetConfig(classes="cub").species_split == (200, 6000, 1000, 5800)
    custom = DatasetConfig(classes="custom", num_species=10, train_per_class=3, val_per_class=2, test_per_class=4)
    assert custom.species_split == (10, 30, 20, 40)


def test_every_species_gets_exactly_its_images_per_class():
    for split, per_class in (("train", 30), ("val", 5), ("test", 29)):
        labels = split_labels(0, split, 48 * per_class, 48)
        assert np.bincount(labels, minlength=48).tolist() == [per_class] * 48


@pytest.mark.parametrize(("overrides", "message"), [
    (["dataset.classes=cub48", "dataset.num_train=100"],
     r"dataset\.num_train = 100 is not read by dataset\.classes: cub48 \(the preset has 48 species of 30 / 5 / 29"),
    (["dataset.classes=birds12", "dataset.hue_jitter=5"], r"dataset\.hue_jitter = 5\.0 is not read by .*birds12"),
    (["dataset.classes=cub", "dataset.num_species=20"], r"dataset\.num_species = 20 is not read by .*cub"),
    (["dataset.classes=custom", "dataset.num_val=3"], r"dataset\.num_val = 3 is not read by .*custom .*per class"),
    (["dataset.classes=cub48", "dataset.variant=uniform"], r"dataset\.variant: uniform exists for "
                                                           r"dataset\.classes: birds12 only"),
    (["dataset.classes=custom", "dataset.num_species=300"], r"'dataset\.num_species' is 300; expected an integer "
                                                            r"in \[2, 288\]"),
])
def test_a_key_the_class_structure_would_ignore_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs" / "gap.yaml", overrides)


def test_a_tiny_species_dataset_on_disk_names_its_species(tmp_path):
    overrides = ["dataset.classes=custom", "dataset.num_species=4", "dataset.train_per_class=2",
                 "dataset.val_per_class=1", "dataset.test_per_class=1", "dataset.hue_jitter=10"]
    config = load_config(REPO / "configs" / "gap.yaml", overrides).dataset
    count, num_train, num_val, num_test = config.species_split
    root = ensure_synthetic_dataset(tmp_path, "parts", 0, num_train, num_val, num_test, 48, "cub", progress=False,
                                    num_species=count, hue_jitter=config.hue_jitter)
    assert root.name.startswith("synthetic-parts-cub-species4-")
    description = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert description["parameters"]["species"] == {"num_species": 4, "hue_jitter": 10.0,
                                                    "species_version": species.SPECIES_VERSION}
    assert description["images_per_label"] == {"train": [2] * 4, "val": [1] * 4, "test": [1] * 4}
    assert read_class_names(root) == [d.name for d in species_designs(4)]
    assert sorted(sample.label for sample in read_split(root, "val")) == [0, 1, 2, 3]
    other = synthetic.synthetic_dataset_dir(tmp_path, "parts", 0, num_train, num_val, num_test, 48, "cub", 4, 11.0)
    assert other.name != root.name  # the jitter is part of the dataset's identity
