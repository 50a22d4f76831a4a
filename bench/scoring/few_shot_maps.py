"""The few-shot baseline's foreground map as a map method: scored in place of the CAM, like any other map.

The baseline's network (:class:`bench.model.foreground_head.ForegroundNet`,
trained by :mod:`bench.training.few_shot`) gives one class-agnostic map per
image, ``sigmoid`` of its head's logit at each cell of the ``(h, w)`` grid.
:func:`foreground_maps` hands that map to :mod:`bench.scoring.prediction` for
every class asked (the top-1 and the GT class get the same map), so it is
upsampled, normalized (``eval.normalization``) and boxed by exactly the code
that boxes a CAM, and its MaxBoxAcc, MaxBoxAccV2, PxAP and GT-known loc come
from the same meters. The map is a probability in (0, 1); normalizing by its
maximum (``max``) keeps its zero, as for a non-negative CAM.
"""

from __future__ import annotations

import torch

from bench.model.foreground_head import ForegroundNet
from bench.scoring.prediction import MapMethod


def foreground_maps(network: ForegroundNet) -> MapMethod:
    """A :data:`bench.scoring.prediction.MapMethod` giving ``network``'s foreground map for every class.

    The maker reads the ``images (B, 3, S, S)``, normalized as the scored run's network expects (the same
    backbone, so the same normalization), and ignores the scored network's ``features``, except for their
    ``(h, w)``, which its map must match. Returns ``(B, M, h, w)`` float32 for ``classes (B, M)``.
    """
    def make_maps(images: torch.Tensor, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = network.foreground(images).float()  # (B, h, w)
        if maps.shape[1:] != features.shape[2:]:
            raise ValueError(f"foreground_maps: the baseline's grid {tuple(maps.shape[1:])} is not the scored "
                             f"network's {tuple(features.shape[2:])}; build it with the run's model config")
        return maps[:, None].expand(-1, classes.shape[1], -1, -1).contiguous()  # (B, M, h, w)

    return make_maps
