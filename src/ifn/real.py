"""Real photos: robust loading, framing to what the network expects, a torch Dataset with a fixed held-out split.

Framing
-------
The network is trained on synthetic renders (ifn.synth) in which the face's 68-landmark centroid sits at the image
centre. Measured over the synthetic prior at the project's camera (fov 13 deg, 100 cm; `calibration` below), the
box the 68 landmarks span has, as fractions of the image side S:

    sqrt(w * h) = 0.67 (frontal, |yaw| < 30: 0.69; |yaw| > 60: 0.62),  max(w, h) = 0.70,
    box centre y = 0.53 (the landmark centroid is above the box centre: eyes and brows are dense),
    mean face, frontal, zero translation: eyes at y = 0.334, inter-ocular distance 0.315, inner lips at
    y = 0.667, box [0.163, 0.196] - [0.837, 0.871].

A real photo is mapped onto that framing by a square crop (centre, side) resized to the working size:

- `crop_box(image, box, scale, shift)`: photos with a face box (the 3DDFA protocol's roi_box). The crop is
  centred on the box, moved by `shift` (fractions of the crop side), side = scale * max(box w, box h). On the
  AFLW2000-3D dev fifth (400 images, pts68 + roi_box; a roi_box is the landmark box squared and enlarged by
  sqrt(2), centred on it) ROI_SCALE = 1.0, ROI_SHIFT = (0, -0.03) reproduce the synthetic statistics:
  landmark-box sqrt(w h) 0.683 of the crop vs 0.675 synthetic at the same yaw mix (-> scale 1.01); on frontal
  faces eyes/inner lips at crop y 0.310/0.626 with inter-ocular 0.311 vs synthetic 0.334/0.667/0.315
  (-> scale 0.98); landmark-box centre y 0.501 vs 0.532 synthetic (-> shift -0.031).
- `SOURCE_FRAMING`: the three datasets of data/real are already face crops with a fixed alignment, so one crop
  rule per source (fractions of the source image) does it. Chosen from the positions of the eyes and the lip line
  in each source's mean image (3000 images; aligned crops give a sharp mean face), matched to the synthetic mean
  face (scale from inter-ocular and eye-to-mouth distances, position from the eye/mouth midpoint), then checked
  by eye (mean crops next to the mean synthetic render).

Mapping landmarks back: every crop function returns a 2x3 affine `A` (crop pixels -> source pixels,
continuous coordinates with pixel centres at +0.5, as the renderer's camera uses): `apply_affine(A, pts)`.
"""
from __future__ import annotations

import hashlib
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import REAL_SOURCES, RealConfig  # noqa: F401  (RealConfig: section `real`, re-exported)
from .paths import require_data

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
MIN_SIDE = 32               # reject smaller images: too little detail for a 128 px face
MAX_SIDE = 4096             # downscale larger images (aspect kept) after decoding
MAX_PIXELS = 50_000_000     # reject larger images before decoding (memory)
COMPOSITE_GREY = 128        # transparent pixels are composited over this sRGB grey


class BadImageError(ValueError):
    """An image that cannot be used; `reason` is one line."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def _scale_to_uint8(a: np.ndarray) -> np.ndarray:
    """Integer/float greyscale of any depth -> uint8."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64))
        hi = float(a.max()) if a.size else 0.0
        a = a * 255.0 if hi <= 1.0 else a
        return np.clip(np.round(a), 0, 255).astype(np.uint8)
    hi = int(a.max()) if a.size else 0
    if hi <= 255:
        return np.clip(a, 0, 255).astype(np.uint8)
    if hi <= 65535:  # 16-bit
        return np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
    return np.clip(np.round(a * (255.0 / hi)), 0, 255).astype(np.uint8)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB; transparency composited over grey."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        grey = _scale_to_uint8(np.asarray(im))
        return np.repeat(grey[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + COMPOSITE_GREY * (1.0 - alpha)
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    if mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX
    return np.asarray(im, dtype=np.uint8)


def load_image(path, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS,
               return_scale: bool = False):
    """Read a photo as (H, W, 3) uint8 RGB, upright (EXIF orientation applied).

    Greyscale, palette, CMYK, 16-bit and alpha images are converted (alpha composited over grey). Images with
    a side above `max_side` are downscaled (aspect kept); with `return_scale` the result is (array, scale) where
    scale = source pixels per returned pixel. Raises BadImageError (one-line reason) for missing, unreadable,
    corrupt or truncated files, images with a side below `min_side`, above `max_pixels` pixels, or blank.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            im = Image.open(path)
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except IsADirectoryError:
        raise BadImageError(path, "is a directory") from None
    except Image.DecompressionBombError as e:
        raise BadImageError(path, f"too large to decode safely ({e})") from None
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image Pillow can read (unknown format or corrupt header)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImageError(path, f"cannot open: {e}") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise BadImageError(path, f"too large: {w}x{h} = {w * h / 1e6:.0f} Mpx > {max_pixels / 1e6:.0f} Mpx limit")
        if min(w, h) < min_side:
            raise BadImageError(path, f"too small: {w}x{h}, needs at least {min_side} px per side")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im.load()
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
            raise BadImageError(path, f"truncated or corrupt image data ({e})") from None
        try:
            up = ImageOps.exif_transpose(im)
        except Exception:  # malformed EXIF: keep the stored orientation
            up = im
        try:
            rgb = _to_rgb(up)
        except (OSError, ValueError) as e:
            raise BadImageError(path, f"cannot convert {im.mode} to RGB ({e})") from None
    scale = 1.0
    full = max(rgb.shape[:2])
    if full > max_side:
        k = full / max_side
        new = (max(1, round(rgb.shape[1] / k)), max(1, round(rgb.shape[0] / k)))
        rgb = np.asarray(Image.fromarray(rgb).resize(new, Image.BICUBIC, reducing_gap=3.0))
        scale = full / max(new)  # source pixels per returned pixel
    if (rgb.reshape(-1, 3).max(0).astype(int) - rgb.reshape(-1, 3).min(0)).max() < 2:
        raise BadImageError(path, "blank image (a single colour)")
    return (rgb, scale) if return_scale else rgb


# ---------------------------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Framing:
    """A square crop as fractions of the source image.

    cx, cy  crop centre, fractions of the image width / height
    side    crop side, fraction of the image's shorter side (> 1: zoom out, padded with edge pixels)
    """

    cx: float = 0.5
    cy: float = 0.5
    side: float = 1.0


SOURCE_FRAMING: dict[str, Framing] = {
    # AFLW 120x120 3DDFA-style crops (the roi_box rule of AFLW2000-3D): the same correction as ROI_SHIFT, i.e.
    # the crop moves up 3 % of its side; scale as is. Check: over side 0.9..1.1 and cy 0.44..0.53, the mean of
    # 1500 of these crops correlates best (r = 0.992) with the mean of the AFLW2000 dev crops made by
    # crop_box(ROI_SCALE, ROI_SHIFT) at side 1.0, cy 0.47.
    "aflw": Framing(cx=0.5, cy=0.47, side=1.0),
    # UTKFace aligned 200x200: a tight crop (eyes at y 0.287, x 0.292 / 0.698, lip line at y 0.688, so
    # inter-ocular 0.406 and eye-mouth 0.401 of the side) -> zoom out: a 250 px crop, padded at top and bottom.
    "utkface": Framing(cx=0.495, cy=0.4875, side=1.25),
    # CelebA aligned, downsized to 89x109: the face is small and BELOW the image centre (eyes at y 0.509 (55.5 px),
    # x 0.388 / 0.612 (19.9 px apart), lip line at y 0.702 (76.5 px)) -> zoom in: a 63 px crop centred 66 px down.
    "celeba": Framing(cx=0.5, cy=0.605, side=0.71),
}
DEFAULT_FRAMING = Framing()

ROI_SCALE = 1.0            # crop side = ROI_SCALE * max(roi_box w, h)
ROI_ENLARGE = math.sqrt(2.0)  # 3DDFA roi_box: the squared landmark box enlarged by sqrt(2) about its centre
ROI_SHIFT = (0.0, -0.03)   # crop centre = roi_box centre + ROI_SHIFT * side (x right, y down)


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2, 3) affine, (..., 2) points -> (..., 2) mapped points."""
    a = np.asarray(affine, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ a[:, :2].T + a[:, 2]


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine (e.g. source px -> crop px)."""
    a = np.asarray(affine, dtype=np.float64)
    m = np.linalg.inv(a[:, :2])
    return np.concatenate([m, -(m @ a[:, 2])[:, None]], axis=1)


def roi_box(landmarks: np.ndarray, enlarge: float = ROI_ENLARGE) -> np.ndarray | None:
    """(68, 2) landmarks -> (4,) x0, y0, x1, y1 3DDFA-style roi box: the landmark box squared to its larger
    side and enlarged by `enlarge` about its centre. None if fewer than 3 landmarks are finite."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) < 3:
        return None
    lo, hi = pts.min(0), pts.max(0)
    centre, half = (lo + hi) / 2, enlarge * (hi - lo).max() / 2
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half])


def crop_square(image: np.ndarray, centre: Sequence[float], side: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square crop of (H, W, 3) uint8 `image` centred at `centre` (x, y source pixels, continuous: pixel centres
    at +0.5), `side` source pixels, resized to (size, size) (bicubic, antialiased when shrinking). Outside the
    image it is padded with edge pixels. Returns (crop (size, size, 3) uint8, affine (2, 3) crop px -> source px).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    side = float(side)
    if not (side > 0 and math.isfinite(side)):
        raise ValueError(f"crop side must be positive, got {side}")
    h, w = image.shape[:2]
    x0, y0 = float(centre[0]) - side / 2, float(centre[1]) - side / 2
    x1, y1 = x0 + side, y0 + side
    left, top = max(0, math.ceil(-x0)), max(0, math.ceil(-y0))
    right, bottom = max(0, math.ceil(x1 - w)), max(0, math.ceil(y1 - h))
    if left or top or right or bottom:
        image = np.pad(image, ((top, bottom), (left, right), (0, 0)), mode="edge")
    crop = Image.fromarray(np.ascontiguousarray(image)).resize(
        (size, size), Image.BICUBIC, box=(x0 + left, y0 + top, x1 + left, y1 + top))
    k = side / size
    affine = np.array([[k, 0.0, x0], [0.0, k, y0]])
    return np.asarray(crop), affine


def crop_box(image: np.ndarray, box: Sequence[float], scale: float = ROI_SCALE, size: int = 128,
             shift: Sequence[float] = ROI_SHIFT) -> tuple[np.ndarray, np.ndarray]:
    """Crop around a face box (x0, y0, x1, y1) source px: a square of side scale * max(w, h), centred on the
    box moved by shift * side. Returns (crop (size, size, 3) uint8, affine crop px -> source px)."""
    bx0, by0, bx1, by1 = (float(v) for v in box)
    bw, bh = bx1 - bx0, by1 - by0
    if not (bw > 0 and bh > 0):
        raise ValueError(f"face box {tuple(box)} is empty")
    side = scale * max(bw, bh)
    centre = ((bx0 + bx1) / 2 + shift[0] * side, (by0 + by1) / 2 + shift[1] * side)
    return crop_square(image, centre, side, size)


def frame(image: np.ndarray, framing: Framing = DEFAULT_FRAMING, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Crop by a per-source `Framing` (fractions of the image). Returns (crop, affine crop px -> source px)."""
    h, w = np.asarray(image).shape[:2]
    return crop_square(image, (framing.cx * w, framing.cy * h), framing.side * min(w, h), size)


def frame_source(image: np.ndarray, source: str, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """`frame` with SOURCE_FRAMING[source] (unknown sources: the centred square of the shorter side)."""
    return frame(image, SOURCE_FRAMING.get(source, DEFAULT_FRAMING), size)


# ---------------------------------------------------------------------------------------------------------------
# UTKFace attributes
# ---------------------------------------------------------------------------------------------------------------
UTK_GENDERS = ("male", "female")
UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")


def utk_attributes(name: str) -> dict | None:
    """UTKFace file name `age_gender_race_datetime.jpg[.chip.jpg]` -> dict(age, gender, race) as ints
    (gender 0 male, 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others), None if malformed
    (e.g. the two files of the release without the race field)."""
    parts = Path(str(name)).name.split("_")
    if len(parts) != 4:
        return None
    try:
        age, gender, race = (int(p) for p in parts[:3])
    except ValueError:
        return None
    if not (0 <= age <= 130 and gender in (0, 1) and 0 <= race <= 4):
        return None
    return {"age": age, "gender": gender, "race": race}


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------
SOURCES = REAL_SOURCES
assert tuple(SOURCE_FRAMING) == SOURCES, "every source of ifn.config.REAL_SOURCES needs a framing"
SPLITS = ("train", "heldout", "all")


def heldout_score(source: str, name: str) -> float:
    """Deterministic uniform [0, 1) number from the file's identity (independent of listing order and machine)."""
    digest = hashlib.sha256(f"{source}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def is_heldout(source: str, name: str, fraction: float) -> bool:
    """True for the fixed held-out part of a source (never used for bootstrapping)."""
    return heldout_score(source, name) < fraction


def list_images(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS) and not p.name.startswith("."))


class RealPhotos(torch.utils.data.Dataset):
    """Real photos of data/real/<source>/, framed per source and resized to `image_size`.

    split            "train" (everything but the held-out part), "heldout", or "all"
    heldout_fraction fraction of each source held out, chosen by a hash of source/name (fixed across runs)
    max_per_source   keep only the first n files (sorted by name) of each source after the split (quick runs)

    Items: dict image (3, S, S) float32 sRGB in [0, 1], source, name, index. An unusable image gives None and a
    warning (once per file); use `collate` (or `collate_skip_bad`) as the DataLoader's collate_fn to drop them.
    """

    def __init__(self, root="data/real", sources: Sequence[str] = SOURCES, split: str = "train",
                 image_size: int = 128, heldout_fraction: float = 0.05, max_per_source: int | None = None,
                 framing: Mapping[str, Framing] | None = None, max_side: int = MAX_SIDE):
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: one of {', '.join(SPLITS)}")
        if not 0.0 <= heldout_fraction <= 1.0:
            raise ValueError(f"heldout_fraction {heldout_fraction} outside [0, 1]")
        self.root = require_data(root, "real photos folder")
        self.sources = tuple(sources)
        self.split = split
        self.image_size = int(image_size)
        self.heldout_fraction = float(heldout_fraction)
        self.framing = dict(SOURCE_FRAMING if framing is None else framing)
        self.max_side = max_side
        self.items: list[tuple[str, str]] = []
        for source in self.sources:
            folder = require_data(Path(self.root) / source, f"real photos of source {source!r}")
            names = list_images(folder)
            if split != "all":
                want = split == "heldout"
                names = [n for n in names if is_heldout(source, n, self.heldout_fraction) == want]
            if max_per_source is not None:
                names = names[:max_per_source]
            self.items.extend((source, n) for n in names)
        self.bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.items)

    def path(self, index: int) -> Path:
        source, name = self.items[index]
        return Path(self.root) / source / name

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in self.sources}
        for s, _ in self.items:
            out[s] += 1
        return out

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(crop (S, S, 3) uint8, affine crop px -> source px) of item `index`; raises BadImageError."""
        source, _ = self.items[index]
        path = self.path(index)
        image, scale = load_image(path, max_side=self.max_side, return_scale=True)
        crop, affine = frame(image, self.framing.get(source, DEFAULT_FRAMING), self.image_size)
        return crop, affine * np.float64(scale)  # back to the file's own pixel grid

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        source, name = self.items[index]
        if index in self.bad:
            return None
        try:
            crop, _ = self.load(index)
        except Exception as e:  # a bad file must never kill a batch
            reason = e.reason if isinstance(e, BadImageError) else f"unexpected {type(e).__name__}: {e}"
            self.bad[index] = reason
            log.warning("skipping %s/%s: %s", source, name, reason)
            warnings.warn(f"skipping real photo {source}/{name}: {reason}", RuntimeWarning, stacklevel=2)
            return None
        image = torch.from_numpy(np.array(crop, copy=True)).permute(2, 0, 1).float() / 255.0
        return {"image": image, "source": source, "name": name, "index": index}

    def collate(self, batch):
        """collate_fn dropping None items; an all-bad batch gives an empty batch (image (0, 3, S, S))."""
        out = collate_skip_bad(batch)
        if out is None:
            s = self.image_size
            out = {"image": torch.zeros(0, 3, s, s), "source": [], "name": [],
                   "index": torch.zeros(0, dtype=torch.long)}
        return out


def collate_skip_bad(batch):
    """collate_fn for RealPhotos: drops None (bad) items; returns None if nothing is left."""
    items = [b for b in batch if b is not None]
    if not items:
        return None
    return {
        "image": torch.stack([b["image"] for b in items]),
        "source": [b["source"] for b in items],
        "name": [b["name"] for b in items],
        "index": torch.tensor([b["index"] for b in items], dtype=torch.long),
    }


def background_bank(config: RealConfig, n: int, size: int, seed: int = 0) -> np.ndarray:
    """(K, size, size, 3) uint8: up to n real photos for the training augmentation's backgrounds (ifn.learn.data:
    real hair, clothes and clutter around the rendered head). A seeded random sample of the training part of
    `config` (params.yaml `real`; the held-out part, which evaluate_real reports on, is never used), framed per
    source like every real crop; unusable files are skipped. Raises FileNotFoundError (run `dvc pull`) if the
    photos are missing, ValueError if none is usable."""
    photos = RealPhotos(config.root, config.sources, "train", size, config.heldout_fraction,
                        max_side=config.max_side)
    g = torch.Generator().manual_seed(int(seed) * 7 + 12345)
    out = []
    for i in torch.randperm(len(photos), generator=g).tolist():
        if len(out) >= n:
            break
        try:
            out.append(photos.load(i)[0])
        except BadImageError:
            continue
    if not out:
        raise ValueError(f"no usable real photo under {config.root} for the background bank")
    return np.stack(out)
