"""Carry an edited crop's change back into the full-resolution photo it was cut from."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..real import apply_affine, invert_affine
from .composite import MODES, RATIO_EPS, photo_linear, to_uint8


def paste_back(photo_full, edited_crop, original_crop, affine, mode: str = "difference") -> np.ndarray:
    """Carry the change original_crop -> edited_crop into the full-resolution photo.

    photo_full     (H, W, 3) uint8 sRGB, the photo the crop was taken from
    edited_crop    (S, S, 3) uint8 sRGB, e.g. EditResult.edited
    original_crop  (S, S, 3) uint8 sRGB, the crop the edit started from
    affine         (2, 3) crop px -> photo px (what ifn.real.crop_square / crop_box / frame return; continuous
                   coordinates, pixel centres at +0.5)
    mode           "difference": photo += warp(lin(edited) - lin(original)); "ratio": photo *=
                   warp((lin(edited) + eps) / (lin(original) + eps)) (relighting: keeps the photo's full-resolution
                   detail under the new light). Linear RGB, bilinear resampling through the inverse affine.

    Returns a new (H, W, 3) uint8 array. A photo pixel changes only if the bilinear footprint of its centre in
    the crop touches a crop pixel where edited != original; every other pixel is copied bit-for-bit (an identity
    edit returns the photo unchanged). The crop knows nothing beyond its border: an edit reaching it stops there
    in the photo. In "ratio" mode the ratio comes from uint8 crops, so it is noisy where the crop is near black.
    """
    if mode not in MODES:
        raise ValueError(f"paste_back mode {mode!r}: one of {', '.join(MODES)}")
    photo_full, edited_crop, original_crop = (np.asarray(a) for a in (photo_full, edited_crop, original_crop))
    for name, a in (("photo_full", photo_full), ("edited_crop", edited_crop), ("original_crop", original_crop)):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"{name} must be an (H, W, 3) uint8 sRGB image, got {a.dtype} {a.shape}")
    if edited_crop.shape != original_crop.shape or edited_crop.shape[0] != edited_crop.shape[1]:
        raise ValueError(f"edited_crop {edited_crop.shape} and original_crop {original_crop.shape} must be the "
                         f"same square (S, S, 3) shape")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (2, 3) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:, :2])) < 1e-12:
        raise ValueError(f"affine must be a finite invertible (2, 3) matrix, got {affine.tolist()}")
    out = photo_full.copy()
    changed = (edited_crop != original_crop).any(-1)
    if not changed.any():
        return out
    s = edited_crop.shape[0]
    e, o = photo_linear(edited_crop), photo_linear(original_crop)
    change = e - o if mode == "difference" else (e + RATIO_EPS) / (o + RATIO_EPS) - 1.0  # 0 = no change
    change = torch.where(torch.from_numpy(changed)[..., None], change, torch.zeros_like(change))
    # Photo-pixel box that can be touched: the changed crop pixels' box, one pixel wider (bilinear footprint).
    rows, cols = np.nonzero(changed)
    corners = np.array([[c, r] for c in (cols.min() - 1, cols.max() + 2) for r in (rows.min() - 1, rows.max() + 2)],
                       dtype=np.float64)
    src = apply_affine(affine, corners)
    h, w = photo_full.shape[:2]
    x0, y0 = max(0, int(np.floor(src[:, 0].min()))), max(0, int(np.floor(src[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(src[:, 0].max())) + 1), min(h, int(np.ceil(src[:, 1].max())) + 1)
    if x0 >= x1 or y0 >= y1:
        return out
    ys, xs = np.meshgrid(np.arange(y0, y1) + 0.5, np.arange(x0, x1) + 0.5, indexing="ij")
    crop_xy = apply_affine(invert_affine(affine), np.stack([xs, ys], -1))     # continuous crop coordinates
    grid = torch.from_numpy(2.0 * crop_xy / s - 1.0)[None]                  # grid_sample, align_corners=False
    stack = torch.cat([change, torch.from_numpy(changed)[..., None].double()], -1).permute(2, 0, 1)[None]
    sampled = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    delta, touched = sampled[:3].permute(1, 2, 0), (sampled[3] > 0).numpy()
    lin = photo_linear(photo_full[y0:y1, x0:x1])
    new = lin + delta if mode == "difference" else lin * (1.0 + delta)
    out[y0:y1, x0:x1] = np.where(touched[..., None], to_uint8(new), photo_full[y0:y1, x0:x1])
    return out
