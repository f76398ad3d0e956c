"""Random image backgrounds for synthetic renders: solid, gradient, smooth noise, textures (sRGB in [0, 1])."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _colours(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, 1, 1, 3, generator=g) * 0.9 + 0.05


def _grid(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(t, t, indexing="ij")
    return x.expand(n, size, size), y.expand(n, size, size)


def solid(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    return _colours(n, g).expand(n, size, size, 3).clone()


def gradient(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    x, y = _grid(n, size)
    angle = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
    t = (torch.cos(angle) * (x - 0.5) + torch.sin(angle) * (y - 0.5) + 0.71) / 1.42
    a, b = _colours(n, g), _colours(n, g)
    return a + (b - a) * t[..., None]


def noise(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    cells = int(torch.randint(3, 12, (1,), generator=g))
    coarse = torch.rand(n, 3, cells, cells, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    fine = 0.05 * torch.randn(n, size, size, 3, generator=g)
    return (smooth * 0.8 + 0.1 + fine).clamp(0, 1)


def texture(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Stripes or checkers of random frequency and orientation between two colours, slightly noisy."""
    x, y = _grid(n, size)
    angle = torch.rand(n, 1, 1, generator=g) * math.pi
    freq = 2 + torch.rand(n, 1, 1, generator=g) * 14
    u = torch.cos(angle) * x + torch.sin(angle) * y
    v = -torch.sin(angle) * x + torch.cos(angle) * y
    stripes = torch.sin(2 * math.pi * freq * u)
    checker = stripes * torch.sin(2 * math.pi * freq * v)
    use_checker = (torch.rand(n, 1, 1, generator=g) < 0.5)
    t = torch.sigmoid(4 * torch.where(use_checker, checker, stripes))
    a, b = _colours(n, g), _colours(n, g)
    return (a + (b - a) * t[..., None] + 0.03 * torch.randn(n, size, size, 3, generator=g)).clamp(0, 1)


KINDS = {"solid": solid, "gradient": gradient, "noise": noise, "texture": texture}


def random_backgrounds(n: int, size: int, kinds: tuple[str, ...], g: torch.Generator) -> torch.Tensor:
    """(n, size, size, 3) sRGB backgrounds, each of a kind drawn uniformly from `kinds`."""
    choice = torch.randint(len(kinds), (n,), generator=g)
    out = torch.empty(n, size, size, 3)
    for i, kind in enumerate(kinds):
        sel = (choice == i).nonzero().squeeze(1)
        if sel.numel():
            out[sel] = KINDS[kind](sel.numel(), size, g)
    return out
