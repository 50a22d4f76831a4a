"""Heads of the training-time WSOL methods that replace pooling + linear classifier: ACoL and SPG.

A :class:`ClassMapHead` turns the backbone's feature maps ``(B, C, h, w)``
(divided by the network's ``feature_scale``) into class maps and logits. The
network (:class:`bench.model.camnet.CamNet`) asks it for:

* :meth:`ClassMapHead.logits` ``(B, num_classes)``: classification at evaluation;
* :meth:`ClassMapHead.class_maps` ``(B, M, h, w)``: the map its method localizes with, for the classes asked;
* :meth:`ClassMapHead.training_output`: the logits the cross-entropy is taken on, and the method's
  other loss terms (a scalar tensor, or None), given the training labels.
"""

from __future__ import annotations

import torch
from torch import nn


class ClassMapHead(nn.Module):
    """The contract of a method's own head (see the module docstring); the subclasses implement it."""

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``features (B, C, h, w)`` -> class logits ``(B, num_classes)`` (evaluation)."""
        raise NotImplementedError

    def class_maps(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``features (B, C, h, w)``, ``classes (B, M)`` int64 -> the method's maps ``(B, M, h, w)`` of those classes."""
        raise NotImplementedError

    def training_output(self, features: torch.Tensor,
                        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits (B, num_classes), other loss terms (scalar) or None)`` on a training batch with ``labels (B,)``."""
        raise NotImplementedError


def build_head(method: str, body: nn.Module, channels: int, num_classes: int, wsol, pool) -> ClassMapHead | None:
    """The head of ``method`` (None for the methods that keep pooling + linear classifier).

    ``body``: the backbone (a head may hook its intermediate layers); ``channels``: C of its feature maps;
    ``wsol``: the run's :class:`bench.config.WsolConfig`; ``pool(maps (B, K, h, w)) -> (B, K)``: the run's pooling.
    """
    if method in ("acol", "spg"):
        raise NotImplementedError(f"wsol.method {method!r}: its head is not built yet")
    return None
