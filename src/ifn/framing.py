"""Framing: where the face sits in a synthetic image (params.yaml `synthesize.framing`).

Real crops are framed by the box of the face's 68 landmarks: the AFLW2000-3D roi boxes, the per-source crop rules of
`ifn.real` and the detector's boxes all put that box in the middle of the crop at the same relative size whatever
the head's yaw (on the tuning images: sqrt(w h) / side 0.686 / 0.681 / 0.677 and signed x-centre +0.00 / +0.00 /
+0.01 of the side in the yaw bins [0,30) / [30,60) / [60,90]; bench/framing_ablation.py --measure). The sampler of
`ifn.model.priors` instead keeps the rotated 3D landmark centroid near the image centre (mode `centroid`): its
landmark box then moves sideways with yaw (-0.07 / -0.14 / -0.12 of the side) and shrinks (0.676 / 0.644 / 0.598),
a pose cue ("off-centre and small = turned") that no real crop shows.

Mode `landmark_box` changes each sample's translation (nothing else) so that the projected 68-landmark box has side
sqrt(w h) = `size` x U(1 - size_jitter, 1 + size_jitter) of the image and its centre sits at
(0, centre_y) + U(-centre_jitter, centre_jitter)^2 of the side (image x right, y down). The drawn translation of the
prior (translate_xy_cm, translate_z_cm) is replaced; the face's depth scales its image size, so the box size fixes it.
"""
from __future__ import annotations

import torch

from .config import FramingConfig
from .render.renderer import Renderer

ITERATIONS = 4  # fixed-point steps; perspective makes one step inexact by ~ (face depth / distance)^2


def landmark_box(landmarks: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 68, 2) pixel landmarks (NaN rows ignored) -> box size sqrt(w h) (B,) and centre (B, 2) relative to
    the image centre, both in image sides."""
    ok = ~landmarks.isnan().any(-1, keepdim=True)
    lo = torch.where(ok, landmarks, torch.full_like(landmarks, float("inf"))).amin(1)
    hi = torch.where(ok, landmarks, torch.full_like(landmarks, float("-inf"))).amax(1)
    return (hi - lo).clamp_min(0).prod(-1).sqrt() / image_size, (lo + hi) / 2 / image_size - 0.5


def frame(renderer: Renderer, groups: dict[str, torch.Tensor], config: FramingConfig,
          g: torch.Generator) -> dict[str, torch.Tensor]:
    """Named parameter groups -> the same groups with the translation (B, 3) cm of `config.mode` (module
    docstring). Mode `centroid` returns `groups` unchanged and draws nothing from `g`; `landmark_box` draws
    3 x B uniforms (size, centre x, centre y)."""
    if config.mode == "centroid":
        return groups
    if config.mode != "landmark_box":
        raise ValueError(f"unknown framing mode {config.mode!r}")
    b = groups["translation"].shape[0]
    u = lambda: 2 * torch.rand(b, generator=g) - 1  # noqa: E731
    want = config.size * (1 + config.size_jitter * u())
    target = torch.stack([config.centre_jitter * u(), config.centre_y + config.centre_jitter * u()], -1)
    cam = renderer.camera
    px, f = cam.image_size, cam.focal_px
    ids = renderer.face_model.landmarks
    with torch.no_grad():
        points = renderer.geometry(groups)[:, ids.clamp(min=0)]          # (B, 68, 3) model space, cm
        points = torch.where((ids >= 0)[None, :, None], points, torch.full_like(points, float("nan")))
        t = groups["translation"].clone()
        for _ in range(ITERATIONS):
            posed = cam.pose(points, groups["rotation"], t)
            xy, depth = cam.project(posed)
            have, centre = landmark_box(xy, px)
            d = depth.nanmean(1)                                            # (B,) landmark depth, cm
            k = have / want                                                 # depth x k: box size x 1 / k
            t[:, 2] += d * (1 - k)
            d = d * k
            centre = centre / k[:, None]                                    # offsets shrink with the box
            # image x right = camera +x, image y down = camera -y; 1 px at depth d is d / f cm
            t[:, 0] += (target[:, 0] - centre[:, 0]) * px * d / f
            t[:, 1] -= (target[:, 1] - centre[:, 1]) * px * d / f
    return {**groups, "translation": t.to(groups["translation"].dtype)}
