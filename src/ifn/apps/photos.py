"""The photos a reconstruction starts from: an image file or an in-memory array with an optional face box, loaded
into the per-photo working state (`_Item`, `load_photo`), and which crop pixels lie inside the photo
(`valid_pixels`: the rest is padding).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..real import MAX_SIDE, MIN_SIDE, BadImageError, load_image


def valid_pixels(affine: np.ndarray, size: int, shape: tuple[int, int]) -> np.ndarray:
    """(size, size) bool: crop pixels whose centre maps inside the photo of `shape` (H, W) (the rest is edge
    padding and must not count as evidence)."""
    c = np.arange(size) + 0.5
    x = affine[0, 0] * c + affine[0, 2]
    y = affine[1, 1] * c + affine[1, 2]
    return ((y >= 0) & (y < shape[0]))[:, None] & ((x >= 0) & (x < shape[1]))[None, :]


def _as_image(array, min_side: int = MIN_SIDE) -> np.ndarray:
    """An in-memory image -> (H, W, 3) uint8 (greyscale repeated, alpha dropped); BadImageError if unusable."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise BadImageError("<array>", f"expected an (H, W, 3) uint8 image, got shape {a.shape}")
    if a.dtype != np.uint8:
        raise BadImageError("<array>", f"expected uint8 pixels, got {a.dtype}")
    a = np.ascontiguousarray(a[..., :3])
    if min(a.shape[:2]) < min_side:
        raise BadImageError("<array>", f"too small: {a.shape[1]}x{a.shape[0]}, needs at least {min_side} px per side")
    flat = a.reshape(-1, 3)
    if (flat.max(0).astype(int) - flat.min(0)).max() < 2:
        raise BadImageError("<array>", "blank image (a single colour)")
    return a


@dataclass
class _Item:
    """Per-photo working state (loaded-photo pixels unless named `file`)."""

    index: int
    source: str
    image: np.ndarray | None = None
    scale: float = 1.0            # file pixels per loaded pixel
    box: np.ndarray | None = None   # loaded pixels
    crop: np.ndarray | None = None
    affine: np.ndarray | None = None  # crop px -> loaded px
    framing: str = "centred"
    reframes: int = 0
    notes: list = field(default_factory=list)
    face: int = 0
    score: float | None = None
    points: np.ndarray | None = None   # (468, 2) detected mesh points, loaded pixels


def load_photo(index: int, image, box, max_side: int = MAX_SIDE) -> _Item:
    """Photo `index` of a call (a path, loaded by ifn.real.load_image downscaled to `max_side`, or an (H, W, 3)
    uint8 array) and its face box (x0, y0, x1, y1 file pixels, or None) -> _Item. Raises BadImageError."""
    if isinstance(image, (str, Path)):
        item = _Item(index, str(image))
        item.image, item.scale = load_image(image, max_side=max_side, return_scale=True)
    else:
        item = _Item(index, f"<image {index}>")
        item.image = _as_image(image)
    if box is not None:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
        if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
            raise BadImageError(item.source, f"invalid face box {np.asarray(box).tolist()}: need x0 < x1, y0 < y1")
        item.box, item.framing = b / item.scale, "box"   # file pixels -> loaded pixels
    return item
