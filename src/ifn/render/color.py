"""sRGB <-> linear RGB (IEC 61966-2-1). The renderer works in linear RGB; images on disk are sRGB."""
from __future__ import annotations

import torch


def linear_to_srgb(x: torch.Tensor) -> torch.Tensor:
    """Linear RGB in [0, 1] (values outside are clamped) -> sRGB in [0, 1]. Differentiable."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> linear RGB in [0, 1]. Differentiable."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)
