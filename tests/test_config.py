"""Strict config loading: every bad input names the file, line, key, value and what is allowed."""

import dataclasses

import pytest
import yaml
from helpers import REPO, TINY_CONFIG

from bench.cli import main
from bench.config import (
    ConfigError,
    DatasetConfig,
    ModelConfig,
    config_to_dict,
    is_study_file,
    load_config,
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
