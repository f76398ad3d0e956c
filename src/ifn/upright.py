"""Test-time in-plane re-alignment: the network looks again at its crop turned upright by its own roll estimate.

On photos the networks under-read in-plane tilt: on the AFLW2000-3D tuning images the eye line of round_2's
landmarks follows the annotation's at slope 0.58 for faces within 30 degrees of frontal (bench/upright.py), the
way a regressor shrinks towards the mean of its training distribution. Rotating the crop about its centre by
minus the estimated roll shows the network a face near the upright pose it places best; its estimate on that
crop is mapped back exactly:

A crop rotated by `angle` (output pixel offset p from the centre samples the input at Rimg(angle) p, image axes
x right, y down) shows the same scene as a camera turned about its optical axis (the principal point is the
crop centre). With camera space +y up (ifn.render.camera), a camera-space rotation Rz(a) turns image vectors by
Rimg(-a), so an estimate (R2, t2) on the rotated crop is (Rz(-angle) R2, Rz(-angle) t2) on the crop itself;
with R = Rz(roll) Rx(pitch) Ry(yaw) that is roll - angle, yaw and pitch unchanged, and the translation's x, y
turned by -angle (the default distance lies on the axis, so the offset turns alone).

Detector-free: only the network's own output steers the second look (no landmark, no optimisation).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def rotate_images(images: np.ndarray, angles: np.ndarray | torch.Tensor) -> np.ndarray:
    """(N, S, S, 3) uint8 images, (N,) angles in radians -> (N, S, S, 3) uint8, each turned about its centre:
    output pixel offset p (from the centre, x right, y down) takes the input at Rimg(angle) p with
    Rimg(a) = [[cos a, -sin a], [sin a, cos a]] (bilinear; outside the input the nearest edge pixel).
    A positive angle turns the content counter-clockwise on screen."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected (N, S, S, 3) images, got shape {images.shape}")
    a = torch.as_tensor(np.asarray(angles, dtype=np.float64)).reshape(-1)
    if len(a) != len(images):
        raise ValueError(f"{len(a)} angles for {len(images)} images")
    if len(images) == 0:
        return images.copy()
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).double()
    c, s, z = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def unrotate_estimate(params: torch.Tensor, angles: np.ndarray | torch.Tensor, layout) -> torch.Tensor:
    """(N, P) estimates on crops rotated by `rotate_images(crops, angles)` -> (N, P) estimates on the crops
    themselves: roll - angle, translation x, y turned by -angle (module docstring); other groups unchanged."""
    out = params.clone()
    a = torch.as_tensor(np.asarray(angles, dtype=np.float64)).reshape(-1).to(out)
    rot, tr = layout["rotation"], layout["translation"]
    out[:, rot.start + 2] = params[:, rot.start + 2] - a
    tx, ty = params[:, tr.start], params[:, tr.start + 1]
    c, s = torch.cos(a), torch.sin(a)       # Rz(-a) = [[c, s], [-s, c]] on (x, y)
    out[:, tr.start] = c * tx + s * ty
    out[:, tr.start + 1] = -s * tx + c * ty
    return out


def upright_estimate(estimate: Callable[[np.ndarray], torch.Tensor], crops: np.ndarray, layout,
                     passes: int = 1) -> torch.Tensor:
    """`estimate` ((N, S, S, 3) uint8 -> (N, P)) on `crops`, then `passes` times again on the crops turned
    upright by the current estimate's roll (`rotate_images` by -roll), each mapped back to the crops
    (`unrotate_estimate`). passes 0: `estimate(crops)` as it is."""
    est = estimate(crops)
    roll = layout["rotation"].start + 2
    for _ in range(int(passes)):
        angles = -est[:, roll].detach().double().cpu().numpy()
        est = unrotate_estimate(estimate(rotate_images(crops, angles)), angles, layout)
    return est
