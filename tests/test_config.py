"""Strict config loading: every bad input names the file, line, key, value and what is allowed."""

import dataclasses
import typing

import pytest
import yaml
from helpers import REPO, TINY_CONFIG

from bench.commands.cli import main
from bench.config import (
    ConfigError,
    DatasetConfig,
    ModelConfig,
    RunConfig,
    check_model,
    config_to_dict,
    is_study_file,
    load_config,
    load_study,
    save_config,
)


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_name_from_file_stem(tmp_path):
    config = load_config(write(tmp_path, "model:\n  pooling: gmp\n"))
    assert config.name == "exp"
    assert config.model == ModelConfig(pooling="gmp")
    assert config.dataset == DatasetConfig()
    assert config.eval.tau == 0.2 and config.eval.normalization == "max"


def test_unknown_key_names_file_line_key_and_suggestion(tmp_path):
    path = write(tmp_path, "seed: 1\nmodel:\n  poling: gap\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"{path}, line 3" in message
    assert "unknown key 'model.poling'" in message
    assert "Did you mean 'pooling'?" in message
    assert "backbone" in message  # lists the allowed keys


def test_bad_choice_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"line 2: 'model.pooling' is 'avg'; expected one of: gap, gmp, lse, gem"):
        load_config(write(tmp_path, "model:\n  pooling: avg\n"))


@pytest.mark.parametrize("text, fragment", [
    ("train:\n  epochs: three\n", "'train.epochs' is 'three' (str); expected an integer"),
    ("train:\n  epochs: 2.5\n", "'train.epochs' is 2.5 (float); expected an integer"),
    ("model:\n  pretrained: 1\n", "'model.pretrained' is 1 (int); expected true or false"),
    ("eval:\n  tau: 1.5\n", "'eval.tau' is 1.5; expected a number in [0, 1]"),
    ("train:\n  augment:\n    crop_scale: [0.9, 0.5]\n", "expected two numbers 0 < low <= high <= 1"),
    ("train:\n  augment:\n    crop_scale: 0.5\n", "expected a list of 2 numbers"),
    ("model: gap\n", "'model' must be a mapping of keys"),
    ("model:\n  backbone: tiny_cnn\n  pretrained: false\n  feature_stride: 32\n", "tiny_cnn supports: 8, 16"),
    ("model:\n  backbone: tiny_cnn\n  feature_stride: 8\n", "has no pretrained weights"),
])
def test_bad_values_are_rejected_with_the_key(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert fragment in str(error.value)


def test_int_is_accepted_where_a_number_is_expected(tmp_path):
    assert load_config(write(tmp_path, "train:\n  lr: 1\n")).train.lr == 1.0


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    path = write(tmp_path, "model:\n  pooling: gap\n")
    config = load_config(path, ["model.pooling=gmp", "train.epochs=7", "train.augment.crop_scale=[0.3, 1]", "name=x"])
    assert (config.model.pooling, config.train.epochs, config.train.augment.crop_scale, config.name) == (
        "gmp", 7, (0.3, 1.0), "x")
    with pytest.raises(ConfigError, match="unknown key 'train.epoch'"):
        load_config(path, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(path, ["train.epochs"])


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_loads_back_identically(tmp_path):
    config = load_config(TINY_CONFIG, ["model.pooling=gmp"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config_to_dict(config)


def test_loaded_config_is_frozen():
    # What was saved in the run folder is what ran: nothing may change a config after loading.
    config = load_config(TINY_CONFIG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.pooling = "gmp"  # type: ignore[misc]


def test_cli_config_error_exits_2_and_writes_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    path = write(tmp_path, f"results_dir: {results}\nmodel:\n  pooling: avg\n")
    assert main(["run", str(path)]) == 2
    assert "'model.pooling' is 'avg'" in capsys.readouterr().err
    assert not results.exists()
    assert main(["run", str(path), "model.pooling=gap", "train.epochs=0"]) == 2
    assert "'train.epochs' is 0; expected an integer >= 1" in capsys.readouterr().err
    assert not results.exists()


def test_cli_show_config_prints_resolved_config(capsys):
    assert main(["show-config", str(TINY_CONFIG), "model.pooling=gmp"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["pooling"] == "gmp" and shown["name"] == "tiny" and shown["eval"]["tau"] == 0.2


RUN_CONFIGS = sorted(path for path in (REPO / "configs").glob("*.yaml") if not is_study_file(path))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_run_config_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


# ----------------------------------------------------------------------------- bounds, non-finite numbers


@pytest.mark.parametrize("text, fragment", [
    ("seed: -1\n", "line 1: 'seed' is -1; expected an integer in [0, 2**32)"),
    ("seed: 4294967296\n", "line 1: 'seed' is 4294967296; expected an integer in [0, 2**32)"),
    ("dataset:\n  seed: -1\n", "line 2: 'dataset.seed' is -1; expected an integer in [0, 2**32)"),
    ("dataset:\n  num_val: 0\n", "line 2: 'dataset.num_val' is 0; expected an integer >= 1"),
    ("dataset:\n  image_size: 4097\n", "line 2: 'dataset.image_size' is 4097; expected an integer in [32, 4096]"),
])
def test_seeds_and_generator_sizes_are_bounded_where_the_config_is_read(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert fragment in str(error.value)


def test_largest_seed_is_accepted(tmp_path):
    config = load_config(write(tmp_path, "seed: 4294967295\ndataset:\n  seed: 4294967295\n  image_size: 4096\n"))
    assert (config.seed, config.dataset.seed, config.dataset.image_size) == (2**32 - 1, 2**32 - 1, 4096)


def test_cli_refuses_a_negative_seed_before_creating_the_run_folder(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["run", str(TINY_CONFIG), f"results_dir={results}", f"data_root={tmp_path / 'data'}", "seed=-1"]) == 2
    assert "'seed' is -1; expected an integer in [0, 2**32)" in capsys.readouterr().err
    assert not results.exists() and not (tmp_path / "data").exists()


def float_keys(cls, prefix=""):
    """Every dotted key of a float field (tuples of floats included) under config dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        hint = hints[spec.name]
        if dataclasses.is_dataclass(hint):
            yield from float_keys(hint, f"{prefix}{spec.name}.")
        elif hint is float or float in typing.get_args(hint):
            yield prefix + spec.name


FLOAT_KEYS = list(float_keys(RunConfig))


def test_float_keys_are_found():
    assert {"train.lr", "eval.tau", "model.lse_r", "train.augment.crop_scale",
            "dataset.object_scale_range"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("number", [".inf", "-.inf", ".nan"])
def test_every_float_key_refuses_non_finite_numbers(tmp_path, key, number):
    pairs = ("train.augment.crop_scale", "dataset.object_scale_range",  # (low, high) keys
             "wsol.spg_threshold_1", "wsol.spg_threshold_2", "wsol.spg_threshold_3")  # (high, low) keys
    value = f"[0.5, {number}]" if key in pairs else number
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "seed: 1\n"), [f"{key}={value}"])
    assert f"'{key}' is {float(number.replace('.', ''))!r}; expected a finite number" in str(error.value)


def test_non_finite_number_in_a_file_names_its_line(tmp_path):
    with pytest.raises(ConfigError, match=r"exp.yaml, line 3: 'train.lr' is inf; expected a finite number"):
        load_config(write(tmp_path, "seed: 1\ntrain:\n  lr: .inf\n"))


# ----------------------------------------------------------------------------- duplicate keys, encoding


@pytest.mark.parametrize("text, fragment", [
    ("seed: 1\ntrain:\n  lr: 0.1\nmodel:\n  pooling: gmp\ntrain:\n  epochs: 2\n",
     "line 6: duplicate key 'train' (first at line 2)"),
    ("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", "line 4: duplicate key 'train.lr' (first at line 2)"),
    ("model: {pooling: gap, pooling: gmp}\n", "line 1: duplicate key 'model.pooling' (first at line 1)"),
])
def test_duplicate_keys_are_refused_naming_both_lines(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f"{path}, {fragment}" in str(error.value)


def test_duplicate_keys_in_a_study_file_are_refused(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG.read_text())
    path = write(tmp_path, "study:\n  base: tiny.yaml\n  grid:\n    seed: [0, 1]\n  set: {}\n  grid:\n"
                           "    model.pooling: [gap]\n", "study.yaml")
    with pytest.raises(ConfigError) as error:
        load_study(path)
    assert f"{path}, line 6: duplicate key 'study.grid' (first at line 3)" in str(error.value)


def test_a_config_that_is_not_utf8_is_a_config_error_naming_the_file(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("seed: 1\n# caf\u00e9\nmodel:\n  pooling: gap\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml, line 2: not UTF-8 text \(byte 0xe9\); save"):
        load_config(path)
    assert main(["show-config", str(path)]) == 2
    assert f"{path}, line 2: not UTF-8" in capsys.readouterr().err


def test_a_study_file_or_its_base_that_is_not_utf8_exits_2(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_bytes("study:\n  base: base.yaml\n  grid: {seed: [0]}\n  # \u00e9\n".encode("latin-1"))
    assert main(["run", str(study)]) == 2
    assert f"{study}, line 4: not UTF-8" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="line 4: not UTF-8"):
        load_study(study)
    study.write_text("study:\n  base: base.yaml\n  grid: {seed: [0]}\n")
    (tmp_path / "base.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert main(["show-config", str(study)]) == 2
    assert f"{tmp_path / 'base.yaml'}, line 1: not UTF-8" in capsys.readouterr().err


# ----------------------------------------------------------------------------- errors name the override


@pytest.mark.parametrize("override, fragment", [
    ("=gmp", "override '=gmp': expected key.sub=value with a key before '='"),
    ("model..pooling=gmp", "override 'model..pooling=gmp': expected key.sub=value"),
    ("foo.bar=1", "override 'foo.bar=1': unknown key 'foo'. Allowed keys in top level: name, seed"),
    ("model.poling=gmp", "override 'model.poling=gmp': unknown key 'model.poling'."),
    ("train.lr=-1", "override 'train.lr=-1': 'train.lr' is -1; expected a number > 0"),
    ("train={lr: 0}", "override 'train={lr: 0}': 'train.lr' is 0; expected a number > 0"),
    ("seed.x=1", "override 'seed.x=1': 'seed' is not a section"),
])
def test_override_errors_name_the_override_not_the_file(tmp_path, override, fragment):
    path = write(tmp_path, "seed: 1\ntrain:\n  lr: 0.1\n", "base.yaml")
    with pytest.raises(ConfigError) as error:
        load_config(path, ["model.pooling=gap", override])
    assert str(error.value).startswith(fragment) and "base.yaml" not in str(error.value)


def test_file_errors_still_name_the_file_line_when_overrides_are_given(tmp_path):
    path = write(tmp_path, "seed: 1\ntrain:\n  lr: -1\n", "base.yaml")
    with pytest.raises(ConfigError, match=r"base.yaml, line 3: 'train.lr' is -1"):
        load_config(path, ["train.epochs=2", "model.pooling=gmp"])
    # An override that fixes the key takes the blame away from the file.
    assert load_config(path, ["train.lr=0.5"]).train.lr == 0.5


def study_file(tmp_path, body):
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG.read_text())
    return write(tmp_path, "study:\n  base: tiny.yaml\n" + body, "study.yaml")


def test_study_overrides_are_named_in_errors(tmp_path):
    path = study_file(tmp_path, "  grid:\n    model.pooling: [gap, gmp]\n")
    with pytest.raises(ConfigError) as error:
        load_study(path, overrides=["foo.bar=1"])
    assert str(error.value).startswith("override 'foo.bar=1': unknown key 'foo'")
    with pytest.raises(ConfigError, match="^override '=3': expected key.sub=value"):
        load_study(path, overrides=["=3"])


@pytest.mark.parametrize("body, fragment", [
    ("  grid:\n    model.pooling: [gap]\n    model.poling: [gap]\n",
     "study run pooling-gap_poling-gap: {path}, line 5: unknown key 'model.poling'"),
    ("  grid:\n    model.pooling: [gap]\n  set:\n    train.lr: .inf\n",
     "{path}, line 6: 'train.lr' is inf; expected a finite number"),
    ("  grid:\n    seed: [0, -1]\n", "study run seed--1: {path}, line 4: 'seed' is -1"),
    ("  grid:\n    seed: [0]\n  quick:\n    set:\n      dataset.num_val: 0\n",
     "{path}, line 7: 'dataset.num_val' is 0"),
])
def test_study_grid_and_set_errors_name_their_line_in_the_study_file(tmp_path, body, fragment):
    path = study_file(tmp_path, body)
    with pytest.raises(ConfigError) as error:
        load_study(path, quick=True)
    assert fragment.format(path=path) in str(error.value)


@pytest.mark.parametrize("body, fragment", [
    ("  grid: {seed: [0]}\n  confidence: .nan\n", "line 4: 'study.confidence' is nan; expected a finite number"),
    ("  grid: {seed: [0]}\n  confidence: 1\n", "line 4: 'study.confidence' is 1; expected a number in [0.5, 1)"),
    ("  grid: {seed: [0]}\n  bootstrap: true\n", "line 4: 'study.bootstrap' is True (bool); expected an integer"),
    ("  grid: {model.pooling: [gap, gmp]}\n  compare: [avg]\n",
     "line 4: 'study.compare' is ['avg']; every entry must be a value of study.grid.model.pooling other than the "
     "reference gap"),
    ("  grid: {seed: [0]}\n  quick: {grids: {seed: [1]}}\n",
     "line 4: unknown key 'study.quick.grids'. Allowed keys in study.quick: grid, set. Did you mean 'grid'?"),
    ("  grid: [seed]\n", "line 3: 'study.grid' must be a mapping of dotted config keys, got ['seed']"),
])
def test_study_keys_go_through_the_run_config_checks(tmp_path, body, fragment):
    path = study_file(tmp_path, body)
    with pytest.raises(ConfigError) as error:
        load_study(path)
    assert f"{path}, {fragment}" in str(error.value)


# ----------------------------------------------------------------------------- hostile inputs (issue 22, section 5)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_config_file_is_refused_naming_the_file(tmp_path, capsys, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="the config file is empty") as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ")
    assert main(["show-config", str(path)]) == 2  # it used to print every default and exit 0
    assert f"{path}: the config file is empty" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["results_dir", "data_root"])
def test_a_folder_key_naming_an_existing_file_is_refused_by_show_config(tmp_path, capsys, key):
    plain = tmp_path / "notes.txt"
    plain.write_text("a file, not a folder\n")
    path = write(tmp_path, f"{key}: {plain}\n")
    assert main(["show-config", str(path)]) == 2
    error = capsys.readouterr().err
    assert f"{path}, line 1: '{key}' is '{plain}', but {plain} is an existing file, not a folder" in error
    # A file higher up on the path blocks the folder just the same; an override is named as the user typed it.
    with pytest.raises(ConfigError, match=rf"override '{key}={plain}/sub': .* but {plain} is an existing file"):
        load_config(TINY_CONFIG, [f"{key}={plain}/sub"])
    assert plain.read_text() == "a file, not a folder\n"


def test_a_folder_that_does_not_exist_yet_is_accepted(tmp_path):
    config = load_config(TINY_CONFIG, [f"results_dir={tmp_path / 'new' / 'results'}", f"data_root={tmp_path / 'd'}"])
    assert config.run_dir == tmp_path / "new" / "results" / "tiny" and not (tmp_path / "new").exists()


def test_an_input_size_that_is_not_a_multiple_of_the_stride_is_refused_naming_both_keys(tmp_path):
    path = write(tmp_path, "model:\n  backbone: tiny_cnn\n  pretrained: false\n  feature_stride: 8\n"
                           "  input_size: 100\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"{path}, line 5: 'model.input_size' is 100, not a multiple of 'model.feature_stride' (8), so the CAM's "
        "cells would not tile the input; use a multiple of 8, e.g. 96 or 104")
    assert load_config(path, ["model.input_size=104"]).model.input_size == 104  # 13 cells of 8 px
    # A model config built in code (bench.model.camnet.build_model checks it) follows the same rule.
    with pytest.raises(ConfigError, match="'model.input_size' is 40, not a multiple of 'model.feature_stride' "
                                          r"\(16\).*e\.g\. 32 or 48"):
        check_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=16, input_size=40))


def test_every_shipped_config_and_study_run_has_an_input_size_the_stride_divides():
    configs = [load_config(path) for path in RUN_CONFIGS]
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if is_study_file(path):
            configs += load_study(path)[1] + load_study(path, quick=True)[1]
    assert len(configs) > len(RUN_CONFIGS)
    for config in configs:
        assert config.model.input_size % config.model.feature_stride == 0, config.name
