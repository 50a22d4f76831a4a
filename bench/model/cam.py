"""Class Activation Maps (Zhou et al., CVPR 2016) as pure tensor functions.

``M_c(x, y) = sum_k W[c, k] * f_k(x, y)``: the classifier weights applied at
every position of the feature map, without the bias. With GAP the class logit
is exactly ``mean_{x,y} M_c + b_c``; the same map is used for every pooling.

Upsampling is linear, so the small ``(h, w)`` map is upsampled, never the C
feature maps (the same result for C times less work).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """CAMs of chosen classes, batched.

    Args:
        features: ``(B, C, h, w)`` feature maps.
        weight: ``(num_classes, C)`` linear classifier weights.
        classes: ``(B, K)`` int64, the K classes wanted for each image.

    Returns:
        ``(B, K, h, w)``, same dtype as ``features``.
    """
    if classes.dim() != 2 or classes.shape[0] != features.shape[0]:
        raise ValueError(f"classes must be (B, K) with B = {features.shape[0]}, got {tuple(classes.shape)}")
    class_weights = weight[classes]  # (B, K, C)
    return torch.einsum("bkc,bchw->bkhw", class_weights, features)


def upsample_cams(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling ``(B, K, h, w) -> (B, K, H, W)`` to ``size = (H, W)`` (align_corners=False)."""
    return F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
