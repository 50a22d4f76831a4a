"""Training: the learning-rate schedule on hand-computed steps, frozen stages, the precision choice."""

import math

import pytest
import torch
import torch.nn.functional as F

from bench.config import ModelConfig, TrainConfig
from bench.model.camnet import build_model
from bench.run.pipeline import ResumeError, check_world_size
from bench.training.distributed import Context
from bench.training.loop import learning_rate_factor, make_optimizer, resolve_precision, warmup_cosine_schedule


def test_warmup_then_cosine_factors():
    # 2 warmup steps of 6: 1/2, 2/2, then cosine over the 4 remaining steps.
    factors = [learning_rate_factor(step, warmup_steps=2, total_steps=6) for step in range(7)]
    expected = [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0]
    assert factors == pytest.approx(expected)
    assert learning_rate_factor(0, warmup_steps=0, total_steps=4) == 1.0


def test_schedule_scales_both_groups_and_keeps_the_head_multiplier():
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8), num_classes=3)
    optimizer = make_optimizer(model, TrainConfig(lr=0.1, head_lr_mult=10.0))
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=4, total_steps=8)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.025, 0.25])
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.1, 1.0])


def test_frozen_stages_keep_weights_and_statistics_and_get_no_gradient():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8), num_classes=3)
    # tiny_cnn's stages: conv, BN, ReLU per block; freezing 2 freezes the first conv and its BN.
    model.freeze_stages(2)
    first_conv, first_norm, second_conv = model.backbone[0], model.backbone[1], model.backbone[3]
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    optimizer = make_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.1))
    assert all(p.requires_grad for group in optimizer.param_groups for p in group["params"])
    model.train()
    assert not first_norm.training and model.backbone[4].training  # frozen BN stays in eval mode
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert first_conv.weight.grad is None and second_conv.weight.grad is not None
    optimizer.step()
    after = model.state_dict()
    for name in ("backbone.0.weight", "backbone.1.weight", "backbone.1.running_mean", "backbone.1.running_var"):
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["backbone.3.weight"], before["backbone.3.weight"])
    assert not torch.equal(after["backbone.4.running_mean"], before["backbone.4.running_mean"])
    with pytest.raises(ValueError, match="train.frozen_stages is 99; this backbone has 9 stages"):
        model.freeze_stages(99)


def test_efficientnet_stages_are_stem_seven_block_stages_and_head():
    from bench.model.backbones import backbone_stages

    model = build_model(ModelConfig(backbone="efficientnet_lite0", pretrained=False, feature_stride=16),
                        num_classes=3)
    stages = backbone_stages(model.backbone)
    assert len(stages) == 9
    # After the stem and blocks[0..3] (5 stages) the map is at stride 16 with 80 channels.
    features = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for stage in stages[:5]:
            features = stage(features)
    assert features.shape == (1, 80, 4, 4)


def test_auto_precision_is_fp32_on_every_cpu_and_bf16_on_a_cuda_device_that_has_it(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    for native in (False, True):  # whatever the CPU computes natively
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
        assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_precision("auto", cuda) == "fp32"


def test_resume_with_another_number_of_processes_is_refused():
    check_world_size({"world_size": 2}, Context(rank=0, world_size=2))
    check_world_size(None, Context())  # nothing trained yet: any size
    with pytest.raises(ResumeError, match=r"trained in 2 process\(es\) and this job has 1.*NPROC=2"):
        check_world_size({"world_size": 2}, Context())
    check_world_size({}, Context())  # checkpoints from before world_size was saved: one process


def test_forced_bf16_autocast_stays_within_bf16_rounding_of_fp32_on_any_cpu():
    # CI exercises the bf16 path whatever CPU it lands on: autocast runs (emulated where the CPU has no bf16).
    # bf16 keeps 8 significant bits (relative rounding 2^-8 = 0.0039 per value); through a few conv layers the
    # logits may drift by a few of those, far less than the spread between two trained seeds.
    from bench.model.cam import class_activation_maps
    from bench.training.loop import autocast

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="tiny_cnn", pretrained=False, feature_stride=8), num_classes=5).eval()
    images = torch.rand(4, 3, 64, 64)
    cpu = torch.device("cpu")
    with torch.no_grad():
        logits32 = model(images)
        with autocast(cpu, "bf16"):
            logits16 = model(images)
            features16 = model.features(images)
        features32 = model.features(images)
    assert logits16.dtype == torch.bfloat16 and logits32.dtype == torch.float32  # autocast really ran
    scale = logits32.abs().max()
    assert (logits16.float() - logits32).abs().max() <= 0.05 * scale
    assert not torch.equal(logits16.float(), logits32)  # and really rounded: the two paths differ
    classes = torch.zeros(4, 1, dtype=torch.long)
    cams32 = class_activation_maps(features32, model.classifier.weight, classes)
    cams16 = class_activation_maps(features16.float(), model.classifier.weight, classes)
    assert (cams16 - cams32).abs().max() <= 0.05 * cams32.abs().max()
