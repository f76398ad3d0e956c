"""Priors over face parameters: what the synthetic corpus is sampled from (section `synthesize.prior`).

- shape ~ N(0, shape_sigma^2) per identity mode; reflectance ~ N(0, reflectance_sigma^2), clipped to +-3 sigma.
- expression: each blendshape active with probability `expression_active_prob`, weight ~ U(0, expression_max);
  the jaw opens (jawOpen ~ U(0.15, 1)) with probability `jaw_open_prob`, so open mouths are common enough.
- illumination: an ambient term (radiance ~ N(ambient_mean, ambient_std), clipped to [0.1, 2]) plus a
  directional light of strength U(0, light_strength_max) from a direction in the front hemisphere; with
  probability `harsh_light_prob` a strong side light over a weak ambient. Each light has a random colour tint.
- rotation: yaw ~ U(-yaw_max, yaw_max); pitch, roll ~ truncated N(0, std) within +-max.
- translation: x, y ~ U(-translate_xy_cm, +translate_xy_cm); z ~ U(-translate_z_cm, +translate_z_cm), which
  changes the face's scale in the image like a detector's crop jitter; optionally re-centred on the face.
"""
from __future__ import annotations

import math

import torch

from ..config import PriorConfig
from ..render.camera import euler_to_matrix
from ..render.shading import AMBIENT_WHITE, sh_basis
from .layout import ParamLayout


def _truncated_normal(n: int, std: float, limit: float, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, generator=g) * std
    while True:  # resample the few outside the limit (keeps the shape of the normal inside)
        bad = x.abs() > limit
        if not bad.any():
            return x
        x[bad] = torch.randn(int(bad.sum()), generator=g) * std


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def sample_illumination(n: int, prior: PriorConfig, g: torch.Generator) -> torch.Tensor:
    """(n, 9, 3) SH coefficients of ambient + directional light (see module docstring)."""
    harsh = torch.rand(n, generator=g) < prior.harsh_light_prob
    ambient = (prior.ambient_mean + prior.ambient_std * torch.randn(n, generator=g)).clamp(0.1, 2.0)
    ambient = torch.where(harsh, ambient * 0.35, ambient)
    strength = torch.rand(n, generator=g) * prior.light_strength_max
    strength = torch.where(harsh, prior.light_strength_max * (0.8 + 0.4 * torch.rand(n, generator=g)), strength)
    direction = torch.randn(n, 3, generator=g)
    direction[:, 2] = direction[:, 2].abs() * 0.8 + 0.2  # mostly from the camera's side of the face
    side = torch.stack([torch.sign(torch.randn(n, generator=g)), 0.3 * torch.randn(n, generator=g),
                        0.4 * torch.rand(n, generator=g)], -1)
    direction = _unit(torch.where(harsh[:, None], side, direction))
    tint_a = 1 + prior.light_tint_std * torch.randn(n, 3, generator=g)
    tint_d = 1 + prior.light_tint_std * torch.randn(n, 3, generator=g)
    gamma = torch.zeros(n, 9, 3)
    gamma[:, 0, :] = (AMBIENT_WHITE * ambient)[:, None] * tint_a
    # A distant light of strength s: radiance SH = s * Y(d) (see ifn.render.shading.directional_light_sh).
    gamma += (strength[:, None] * sh_basis(direction))[:, :, None] * tint_d[:, None, :]
    return gamma


def sample_parameters(n: int, layout: ParamLayout, prior: PriorConfig, g: torch.Generator,
                      expression_names: tuple[str, ...] = (),
                      face_centre: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Draw n parameter sets as named groups (float32).

    `face_centre` (3,) model-space cm: if given, the translation also cancels the sideways and vertical
    shift that the rotation gives this point, so the face (not the head's origin) stays near the image
    centre, as in a face detector's crop.
    """
    out = {}
    out["shape"] = torch.randn(n, layout.n_shape, generator=g) * prior.shape_sigma
    out["reflectance"] = (torch.randn(n, layout.n_reflectance, generator=g).clamp(-3, 3)
                          * prior.reflectance_sigma)
    active = torch.rand(n, layout.n_expression, generator=g) < prior.expression_active_prob
    expression = torch.rand(n, layout.n_expression, generator=g) * prior.expression_max * active
    if "jawOpen" in expression_names[: layout.n_expression]:
        jaw = expression_names.index("jawOpen")
        opens = torch.rand(n, generator=g) < prior.jaw_open_prob
        expression[:, jaw] = torch.where(opens, 0.15 + 0.85 * torch.rand(n, generator=g), expression[:, jaw])
    out["expression"] = expression
    out["illumination"] = sample_illumination(n, prior, g)
    deg = math.pi / 180
    yaw = (2 * torch.rand(n, generator=g) - 1) * prior.yaw_max_deg * deg
    pitch = _truncated_normal(n, prior.pitch_std_deg * deg, prior.pitch_max_deg * deg, g)
    roll = _truncated_normal(n, prior.roll_std_deg * deg, prior.roll_max_deg * deg, g)
    out["rotation"] = torch.stack([yaw, pitch, roll], -1)
    xy = (2 * torch.rand(n, 2, generator=g) - 1) * prior.translate_xy_cm
    z = (2 * torch.rand(n, 1, generator=g) - 1) * prior.translate_z_cm
    out["translation"] = torch.cat([xy, z], -1)
    if face_centre is not None:
        moved = euler_to_matrix(out["rotation"]) @ face_centre.to(torch.float32)
        out["translation"][:, :2] -= moved[:, :2] - face_centre[:2].to(torch.float32)
    return out
