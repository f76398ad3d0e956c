"""Compositing a render's change into a photo: face masks, feathering, trust, holes, ratio and difference.

Compositing: only the face part (`ifn.evaluate.face_triangles`) of the render counts; its mask is feathered
by a separable tent blur of radius `feather` px, and the per-pixel change (ratio or difference) is extended
into the feather ring by normalised convolution. Pixels farther than `feather` px (Chebyshev distance) from the
face mask (its holes filled, when `holes` > 0) are returned bit-for-bit unchanged.

Trust (`agreement`): the fitted face often covers pixels it does not explain: a hand or hair in front of the
face, the neck under a jaw fitted too low, background beyond a misplaced outline. Edited there, the photo took
the render's features. So an edit can apply by how well the fit explains the photo locally: the local-mean
luminance ratio photo / render (TRUST_PX), relative to its median over the face (a light off by a constant
factor still agrees), gives weight 1 within TRUST_STOPS[0] stops and 0 beyond TRUST_STOPS[1].

All arithmetic is in linear RGB; photos are (B, S, S, 3) uint8 sRGB.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_fill_holes

from ..evaluate import face_triangles
from ..render.color import linear_to_srgb, srgb_to_linear
from ..render.renderer import FaceRender, Renderer

FEATHER_PX = 2           # radius of the mask feather (tent blur), pixels of the crop
RATIO_EPS = 1e-3         # linear RGB added to both sides of a ratio (stabilises near-black pixels)
MAX_RATIO = 8.0          # clamp of a ratio (3 stops brighter at most)
LUMINANCE = (0.2126, 0.7152, 0.0722)  # Rec. 709 relative luminance of linear R, G, B
TRUST_PX = 3             # agreement of photo and fit: radius of the local means compared (px)
TRUST_STOPS = (0.6, 1.4) # ... |log2 luminance ratio| (relative to the face's median) below which the edit applies
                         # fully and above which not at all (stops; linear fade between)
MODES = ("ratio", "difference")


def face_mask(renderer: Renderer, render: FaceRender) -> torch.Tensor:
    """(B, H, W) bool: pixels where `render` shows a triangle of the model's face part."""
    ptf = render.pix_to_face
    tri = face_triangles(renderer).to(ptf.device)
    return (ptf >= 0) & tri[ptf.clamp_min(0)]


def tent_blur(x: torch.Tensor, radius: int, pad: str = "constant") -> torch.Tensor:
    """(B, H, W, C) -> separable normalised tent blur of `radius` px; outside the image x is 0 ("constant") or
    its edge value ("replicate"). The support is exactly the (2 radius + 1)^2 square (edge values included), so
    the result is exactly 0 where x is 0 on that whole square."""
    if radius <= 0:
        return x
    k = (radius + 1 - torch.arange(-radius, radius + 1).abs()).to(x.dtype)
    k = k / k.sum()
    b, h, w, c = x.shape
    y = x.permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode=pad), k.reshape(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode=pad), k.reshape(1, 1, -1, 1))
    return y.reshape(b, c, h, w).permute(0, 2, 3, 1)


def feather_mask(mask: torch.Tensor, radius: int = FEATHER_PX) -> torch.Tensor:
    """(B, H, W) bool -> (B, H, W) float64 alpha in [0, 1]: the tent-blurred mask. Exactly 1 where the whole
    (2 radius + 1)^2 neighbourhood inside the image is in the mask, exactly 0 farther than `radius` px
    (Chebyshev) from it. The image border is not a mask edge (a face cut by the crop is not faded out there)."""
    b = tent_blur(mask.to(torch.float64)[..., None], int(radius), "replicate")[..., 0]
    return torch.where(b >= 1 - 1e-9, torch.ones_like(b), b.clamp(0.0, 1.0))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, radius: int, fallback: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> the tent-weighted mean of x over the `mask` (B, H, W) pixels within `radius` px
    (normalised convolution; `fallback` (broadcastable) where no mask pixel is that close)."""
    m = mask.to(x.dtype)[..., None]
    num, den = tent_blur(x * m, radius), tent_blur(m, radius)
    return torch.where(den > 0, num / den.clamp_min(1e-12), fallback)


def extend(change: torch.Tensor, mask: torch.Tensor, radius: int, neutral: float) -> torch.Tensor:
    """(B, H, W, C) change defined on `mask` (B, H, W) -> the same inside the mask, the mask-weighted local mean
    (`radius` px) in the ring around it, `neutral` elsewhere."""
    ring = masked_mean(change, mask, radius, torch.full_like(change, neutral))
    return torch.where(mask[..., None], change, ring)


def agreement(photo_linear: torch.Tensor, render: torch.Tensor, mask: torch.Tensor, radius: int = TRUST_PX,
              stops: tuple[float, float] = TRUST_STOPS) -> torch.Tensor:
    """How well the fit explains the photo, per pixel: (B, H, W) weights in [0, 1] (0 outside `mask`).

    photo_linear, render  (B, H, W, 3) linear RGB (the photo and the render of its estimate)
    mask                  (B, H, W) bool, the render's face pixels

    d = |log2(Y_photo / Y_render) - median over the mask|, Y the luminance of the local means (`radius` px,
    over the mask), so a fit whose light is off by a constant factor still agrees everywhere; weight 1 for
    d <= stops[0], 0 for d >= stops[1], linear between. Where the fitted face covers something else (the neck
    under a jaw fitted too low, a hand or hair in front of the face, background beyond the outline), the photo is
    several stops darker or brighter than the render and the edit should leave it alone; where the model
    explains the photo exactly the weight is 1.
    """
    lo, hi = float(stops[0]), float(stops[1])
    if not 0 <= lo < hi:
        raise ValueError(f"agreement stops must be 0 <= lo < hi, got {stops}")
    luma = torch.tensor(LUMINANCE, dtype=torch.float64)
    photo_linear, render = photo_linear.double(), render.detach().cpu().double().clamp_min(0)
    p = masked_mean(photo_linear, mask, radius, photo_linear) @ luma
    r = masked_mean(render, mask, radius, render) @ luma
    d = torch.log2((p + RATIO_EPS) / (r + RATIO_EPS))
    out = torch.zeros_like(d)
    for b in range(d.shape[0]):
        m = mask[b]
        if m.any():
            dev = (d[b] - d[b][m].median()).abs()
            out[b] = torch.where(m, ((hi - dev) / (hi - lo)).clamp(0.0, 1.0), torch.zeros_like(dev))
    return out


def fill_holes(values: Sequence[tuple[torch.Tensor | None, float]], mask: torch.Tensor, radius: int
               ) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """Extend per-pixel values on `mask` (B, H, W) bool into the mask's holes (enclosed non-mask pixels: eyes,
    nostrils, an open mouth). values: [(x (B, H, W, C) or None, neutral)]. Returns (the x with hole pixels set
    to the mask-weighted local mean within `radius` px, or `neutral` where no mask pixel is that close; the
    mask with its holes filled)."""
    filled = torch.from_numpy(np.stack([binary_fill_holes(m) for m in mask.cpu().numpy()])) if len(mask) else mask
    hole = (filled & ~mask.cpu())[..., None]
    out = []
    for x, neutral in values:
        if x is None:
            out.append(None)
            continue
        mean = masked_mean(x, mask.cpu(), radius, torch.full_like(x, neutral))
        out.append(torch.where(hole, mean, x))
    return out, filled


def to_uint8(linear: torch.Tensor) -> np.ndarray:
    return torch.round(linear_to_srgb(linear) * 255.0).to(torch.uint8).cpu().numpy()


def photo_linear(photo: np.ndarray) -> torch.Tensor:
    """(..., 3) uint8 sRGB -> float64 linear RGB (a copy: arrays from PIL are read-only)."""
    return srgb_to_linear(torch.from_numpy(np.array(photo, dtype=np.float64)) / 255.0)


def composite(photo: np.ndarray, old_render: torch.Tensor, new_render: torch.Tensor, mask: torch.Tensor,
              mode: str = "ratio", feather: int = FEATHER_PX, residual: torch.Tensor | None = None,
              smooth: int = 0, trust: torch.Tensor | None = None, holes: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """Transfer the change old_render -> new_render into `photo` inside `mask`.

    photo       (B, S, S, 3) uint8 sRGB
    old_render  (B, S, S, 3) linear RGB render of the estimate (the photo's explanation)
    new_render  (B, S, S, 3) linear RGB render of the edited parameters
    mask        (B, S, S) bool, where the edit applies (the face part of the render that defines the edit)
    mode        "ratio": edited = photo * clamp((new + eps) / (old + eps), 0, MAX_RATIO);
                "difference": edited = new + residual, residual (B, S, S, 3) linear defaulting to photo - old
    feather     radius of the mask feather, px (0: hard mask)
    smooth      ratio mode: new and old are replaced by their local means over `mask` (normalised tent blur of
                this radius, px; 0: per pixel) before the ratio is taken
    trust       optional (B, S, S) weights in [0, 1] on `mask` (e.g. `agreement`): the edit applies by this much
                (the photo stays where it is 0); extended into the feather ring like the change
    holes       > 0: the mask's holes (eyes, nostrils, mouth: parts the face part does not cover) are edited
                too, with the change and trust of the mask pixels within this many px (`fill_holes`); an
                unedited hole in an edited face shows as a spot of the old colour

    Returns (edited (B, S, S, 3) uint8 sRGB, alpha (B, S, S) float64 feathered weights). Pixels with alpha 0
    (farther than `feather` px from the mask) are copied bit-for-bit from `photo`.
    """
    if mode not in MODES:
        raise ValueError(f"composite mode {mode!r}: one of {', '.join(MODES)}")
    photo = np.asarray(photo)
    shape = tuple(photo.shape)
    for name, t in (("old_render", old_render), ("new_render", new_render)):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, the photo {shape}")
    if tuple(mask.shape) != shape[:-1]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {shape[:-1]}")
    if residual is not None and tuple(residual.shape) != shape:
        raise ValueError(f"residual has shape {tuple(residual.shape)}, the photo {shape}")
    feather = int(feather)
    if feather < 0:
        raise ValueError(f"feather must be >= 0 px, got {feather}")
    lin = photo_linear(photo)
    old, new = old_render.detach().cpu().double(), new_render.detach().cpu().double()
    mask = mask.cpu()
    if int(smooth) < 0:
        raise ValueError(f"smooth must be >= 0 px, got {smooth}")
    if trust is not None:
        if tuple(trust.shape) != shape[:-1]:
            raise ValueError(f"trust has shape {tuple(trust.shape)}, expected {shape[:-1]}")
        trust = trust.detach().cpu().double()[..., None]
    if mode == "ratio":
        if smooth:
            new, old = masked_mean(new, mask, int(smooth), new), masked_mean(old, mask, int(smooth), old)
        change = ((new.clamp_min(0) + RATIO_EPS) / (old.clamp_min(0) + RATIO_EPS)).clamp(0.0, MAX_RATIO)
    else:
        res = lin - old if residual is None else residual.detach().cpu().double()
        change = new + res - lin
    neutral = 1.0 if mode == "ratio" else 0.0
    if holes:
        (change, trust), mask = fill_holes([(change, neutral), (trust, 0.0)], mask, int(holes))
    change = extend(change, mask, feather, neutral)
    target = lin * change if mode == "ratio" else lin + change
    alpha = feather_mask(mask, feather)
    if trust is not None:
        alpha = alpha * extend(trust, mask, feather, 0.0)[..., 0]
    out = to_uint8(lin + alpha[..., None] * (target - lin))
    keep = (alpha <= 0).numpy()[..., None]
    return np.where(keep, photo, out), alpha
