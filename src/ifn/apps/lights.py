"""Light presets for relighting: white lights given as ambient + directional shading, as SH coefficients.

Lights are in camera space (ifn.render.shading: +x right, +y up, +z towards the viewer), so a light taken
from another photo's estimate keeps its direction relative to the camera, not to the head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.layout import N_SH
from ..render.shading import AMBIENT_WHITE, SH_CONVOLUTION, sh_basis


@dataclass(frozen=True)
class Preset:
    """A white light whose shading (irradiance / pi) is ambient + directional * dot(n, direction).

    direction    (x, y, z) camera space, normalised on use ("left" = from the image's left side, -x)
    ambient      shading of the uniform part (1 = uniform white radiance 1, `AMBIENT_WHITE` in gamma[0])
    directional  shading added at a normal facing the light (and subtracted facing away)
    """

    direction: tuple[float, float, float]
    ambient: float
    directional: float


# Shading stays in [ambient - directional, ambient + directional] = [0.2, 1.0] for the directional presets:
# the band-1 term alone is a signed cosine, so directional <= ambient keeps it non-negative on every normal.
PRESETS: dict[str, Preset] = {
    "front": Preset((0.0, 0.0, 1.0), 0.6, 0.4),
    "left": Preset((-math.sqrt(3) / 2, 0.0, 0.5), 0.6, 0.4),   # 60 deg off the viewing axis
    "right": Preset((math.sqrt(3) / 2, 0.0, 0.5), 0.6, 0.4),
    "top": Preset((0.0, math.sqrt(3) / 2, 0.5), 0.6, 0.4),
    "ambient": Preset((0.0, 0.0, 1.0), 0.8, 0.0),              # uniform: ifn.fit's DEFAULT_AMBIENT
}


def preset_light(name: str, strength: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """(9, 3) SH coefficients of PRESETS[name] scaled by `strength` (a radiance multiplier, 1 = as tabulated).

    Formula (bands 0 and 1 only): gamma[0] = AMBIENT_WHITE * ambient, gamma[1:4] = directional * Y_1(d) /
    (A_1 / pi * |Y_1|^2) with Y_1(d) = c1 (d_y, d_z, d_x), c1 = sqrt(3 / (4 pi)), A_1 = 2 pi / 3, so that the
    renderer's shading H(n) @ gamma = strength * (ambient + directional * dot(n, d)) for a unit normal n.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown light preset {name!r}; presets are {', '.join(PRESETS)}")
    if not (math.isfinite(strength) and strength >= 0):
        raise ValueError(f"light strength must be finite and >= 0, got {strength}")
    p = PRESETS[name]
    d = torch.tensor(p.direction, dtype=torch.float64)
    d = d / d.norm()
    c1_sq = 3 / (4 * math.pi)
    gamma = torch.zeros(N_SH, dtype=torch.float64)
    gamma[0] = AMBIENT_WHITE * p.ambient
    # sh_basis(d)[1:4] = c1 * (y, z, x); each band-1 term contributes (A_1 / pi) c1^2 d_k n_k to the shading.
    gamma[1:4] = p.directional * sh_basis(d)[1:4] / (SH_CONVOLUTION[1] / math.pi * c1_sq)
    return (strength * gamma)[:, None].expand(N_SH, 3).to(dtype).clone()


