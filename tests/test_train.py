"""The learning-rate schedule on hand-computed steps."""

import math

import pytest

from bench.config import ModelConfig, TrainConfig
from bench.models import build_model
from bench.train import learning_rate_factor, make_optimizer, warmup_cosine_schedule


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
