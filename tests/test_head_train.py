"""Head-only training: the backbone stays frozen, the head learns from cached maps, the pipeline runs it."""

import json

import pytest
import torch

from bench.config import ConfigError, ModelConfig, TrainConfig
from bench.model.camnet import CamNet, build_model
from bench.run.pipeline import RunExistsError, run
from bench.training.head_only import FeatureCache, cache_backbone_features, fit_head, pool_cache


def separable_cache(pooling_friendly: str) -> FeatureCache:
    """24 maps (64 channels, 4x4): class k lights channel k (k < 3) at one random position, plus noise."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % 3
    maps = 0.1 * torch.rand(24, 64, 4, 4, generator=generator)
    positions = torch.randint(0, 16, (24,), generator=generator)
    for i, (label, position) in enumerate(zip(labels, positions)):
        maps[i, label].view(-1)[position] += 4.0 if pooling_friendly == "gmp" else 16.0
    return FeatureCache(maps.half(), labels)


@pytest.mark.parametrize("pooling", ["gap", "gmp"])
def test_head_learns_from_cached_maps_and_the_backbone_is_untouched(pooling, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=16, pooling=pooling), 3)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    config = TrainConfig(epochs=15, batch_size=8, lr=0.1, head_lr_mult=1.0, warmup_epochs=0)
    history = fit_head(model, separable_cache(pooling), config, torch.device("cpu"), tmp_path / "c.pt", log=print)
    assert history[0]["accuracy"] < 80.0  # starts near chance (33 %) ...
    assert history[-1]["accuracy"] == 100.0  # ... ends separating the three classes
    assert history[-1]["loss"] < history[0]["loss"] / 3
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, before[key])  # weights and BN statistics
    assert all(not p.requires_grad for p in model.backbone.parameters())
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert saved["epoch"] == 15
    torch.testing.assert_close(saved["model"]["classifier.weight"], model.classifier.weight)


def test_cache_holds_the_backbone_maps_in_float16():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8), 3)
    images = torch.randn(5, 3, 32, 32)
    loader = [{"image": images[:3], "label": torch.tensor([0, 1, 2])},
              {"image": images[3:], "label": torch.tensor([2, 0])}]
    cache = cache_backbone_features(model, loader, torch.device("cpu"))
    assert cache.maps.dtype == torch.float16 and cache.maps.shape == (5, 64, 4, 4)
    assert cache.labels.tolist() == [0, 1, 2, 2, 0]
    with torch.no_grad():
        expected = model.eval().backbone(images)
    torch.testing.assert_close(cache.maps.float(), expected, atol=1e-2, rtol=1e-3)


def test_head_mode_run_end_to_end(tiny_config):
    config = tiny_config("train.mode=head", "model.head_input_energy=100")
    torch.manual_seed(config.seed)
    initial = build_model(config.model, num_classes=12).backbone.state_dict()
    run(config, log=lambda message: None)
    manifest = json.loads((config.run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["timings_s"]["cache"] > 0
    saved = torch.load(config.run_dir / "checkpoint.pt", weights_only=True)["model"]
    for key, value in initial.items():
        torch.testing.assert_close(saved[f"backbone.{key}"], value)  # frozen, BN statistics included
    assert float(saved["feature_scale"]) != 1.0  # the head-input calibration ran


def test_added_layers_train_on_the_maps_with_the_classifier(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=16, pooling="gap")
    tiny = build_model(config, 3)
    added = torch.nn.Sequential(torch.nn.Conv2d(64, 16, 3, padding=1), torch.nn.ReLU())
    model = CamNet(tiny.backbone, 16, 3, config, tiny.mean, tiny.std, added=added)
    conv_before = added[0].weight.detach().clone()
    train = TrainConfig(epochs=15, batch_size=8, lr=0.1, head_lr_mult=1.0, warmup_epochs=0)
    history = fit_head(model, separable_cache("gap"), train, torch.device("cpu"), tmp_path / "c.pt", log=print)
    assert history[-1]["accuracy"] == 100.0
    assert not torch.allclose(added[0].weight, conv_before)  # the added conv learned too


@pytest.mark.parametrize("pooling", ["gap", "gmp", "lse"])
def test_pooled_cache_gives_the_heads_logits(pooling):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=16, pooling=pooling), 3)
    model.feature_scale.fill_(2.0)
    cache = separable_cache("gap")
    pooled = pool_cache(model, cache, chunk=5)
    assert pooled.maps.shape == (24, 64) and torch.equal(pooled.labels, cache.labels)
    with torch.no_grad():
        torch.testing.assert_close(model.classify_pooled(pooled.maps), model.head(cache.maps.float()))


def test_head_mode_refuses_resume_before_any_work(tiny_config):
    config = tiny_config("train.mode=head")
    with pytest.raises(ConfigError, match="'train.mode' is 'head', which runs in one process and does not resume"):
        run(config, resume=True, log=lambda message: None)
    assert not config.run_dir.exists()


def test_an_interrupted_head_mode_run_is_started_again_not_resumed(tiny_config):
    config = tiny_config("train.mode=head")
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "manifest.json").write_text(json.dumps({"status": "interrupted"}), encoding="utf-8")
    with pytest.raises(RunExistsError) as refused:
        run(config, log=lambda message: None)
    assert str(refused.value) == (
        f"run folder {config.run_dir} already exists; it holds an unfinished run (status: interrupted) in "
        "train.mode head, which does not resume but starts again; choose another name (name=... on the command "
        "line) or pass --overwrite (make benchmark ... OVERWRITE=1) to replace it")
    assert sorted(path.name for path in config.run_dir.iterdir()) == ["manifest.json"]  # nothing written
