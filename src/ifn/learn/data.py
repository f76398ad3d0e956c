"""Training data: the synthetic corpus as a torch Dataset, training-time augmentation, the LightningDataModule.

SyntheticDataset   one split of a corpus (ifn.corpus): memory-mapped shards, one sample =
                   {"image": (3, H, W) float32 sRGB in [0, 1], "params": (P,) float32, "shading_gram": (9, 9)}
Augment            training-only augmentation of a batch (real-photo backgrounds behind the rendered head,
                   colour jitter, greyscale, blur, noise, a small crop/shift, black bands of crops beyond a
                   photo's edge)
AugmentCollate     the training DataLoader's collate_fn: stack, then Augment the batch
EpochSampler       seeded shuffling; yields (index, epoch) so a batch and its augmentation are a pure function
                   of (seed, epoch, position): the same with any number of workers and after resuming a run
CorpusDataModule   train / val / test DataLoaders from params.yaml `train` and `param_stats()` for the network

About the crop/shift augmentation: a crop moves and scales the face in the image, and the targets DO depend
on the framing (translation, and through it the camera-space geometry term). So Augment does not leave the
targets alone: it changes `translation` to the head position that produces (to first order) the cropped
image -- a zoom by k is the head at 1/k of its depth, a shift of the crop window is a sideways/vertical move
of the head at its depth; exact for a pivot point `pivot_cm` in front of the model origin (train() uses the
face centre, ~9 cm). What is left over is perspective: the 68 landmarks of the re-rendered, adjusted
parameters land on average 0.13 px (worst of 16 samples: 0.19 px, 128 px images) from where the crop puts
them at the default 4 % jitter (0.32 / 0.6 px with the pivot at the origin), and the view direction changes
by < 0.6 deg (rotation is not adjusted).
Neither normals (hence the stored shading gram) nor shape/expression/reflectance/illumination change. Keep
`crop_jitter` small (<= ~0.05); 0 disables it. Landmarks and masks are not returned, so they need no update.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..config import AugmentConfig, TrainConfig
from ..corpus import Corpus
from ..model.layout import ParamLayout
from .nets import view_size

try:  # the DataModule needs Lightning; the Dataset and Augment do not
    import pytorch_lightning as pl
    _DataModuleBase = pl.LightningDataModule
except ImportError:  # pragma: no cover
    _DataModuleBase = object


LUMA = (0.299, 0.587, 0.114)   # ITU-R BT.601 luma weights of R, G, B (greyscale and saturation jitter)


def layout_of(meta: dict) -> ParamLayout:
    """The ParamLayout a corpus was written with (meta.json "layout")."""
    sizes = meta["layout"]
    return ParamLayout(int(sizes["shape"]), int(sizes["expression"]), int(sizes["reflectance"]))


def batch_generator(seed: int, epoch: int, first_index: int) -> torch.Generator:
    """The random stream of one training batch's augmentation. The batch's contents are fixed by
    (seed, epoch) through EpochSampler, so (seed, epoch, its first sample's index) fixes everything."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 10_007 + first_index) % (2**63 - 1))


# -- augmentation ---------------------------------------------------------------------------------------------

def _blur_matrices(sigma: torch.Tensor, n: int, radius: int) -> torch.Tensor:
    """(B,) sigmas -> (B, n, n) matrices of a 1D Gaussian blur with reflect padding (rows sum to 1)."""
    b = sigma.shape[0]
    offsets = torch.arange(-radius, radius + 1)
    k = torch.exp(-0.5 * (offsets.to(sigma.dtype)[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    k = torch.where((sigma > 0)[:, None], k, (offsets[None] == 0).to(k.dtype))  # delta kernel: no blur
    k = k / k.sum(-1, keepdim=True)                                             # (B, T)
    idx = torch.arange(n)[:, None] + offsets[None]                              # (n, T)
    idx = torch.where(idx < 0, -idx, idx)
    idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)                      # reflect (no edge repeat)
    m = torch.zeros(b, n, n, dtype=sigma.dtype)
    return m.scatter_add_(2, idx[None].expand(b, -1, -1), k[:, None, :].expand(-1, n, -1))


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """(B, C, H, W) separable Gaussian blur with one sigma per image ((B,) px; <= 0: unchanged), reflect
    padding (as F.pad(mode="reflect")). Two batched matrix products: Kh @ image @ Kw^T."""
    b, _, h, w = images.shape
    sigma = torch.as_tensor(sigma, dtype=images.dtype).reshape(-1).expand(b)
    radius = min(max(1, int(math.ceil(2.5 * float(sigma.max())))) if b else 1, min(h, w) - 1)
    kh = _blur_matrices(sigma, h, radius)
    kw = kh if w == h else _blur_matrices(sigma, w, radius)
    return torch.matmul(torch.matmul(kh[:, None], images), kw.transpose(-1, -2)[:, None])


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation of a batch: (images (B, 3, H, W) in [0, 1], params (B, P), generator) ->
    (images, params), vectorised over the batch (a single (3, H, W) image with (P,) params works too).
    See the module docstring for the crop's target adjustment.

    color_jitter  brightness, contrast and saturation factors ~ U(1 - c, 1 + c) each, per image
    contrast_boost  the contrast factor is further multiplied by a log-uniform factor in [1, this] (1: off): the
                  renders are flat next to photos (luma SD inside the face 0.05 vs 0.15, mean absolute pixel
                  gradient 4x lower; bench/contrast_stats.py)
    blur_prob     probability of a Gaussian blur with sigma ~ U(0.3, 1.0) px (at the corpus resolution)
    noise_std     std of additive Gaussian pixel noise
    crop_jitter   crop window side ~ U(1 - c, 1) of the image and its centre shifted by up to c of the side in
                  x and y; resized back to the full image (bilinear, border pixels extended where needed)
    fov_deg, distance_cm, translation   camera of the corpus and the translation slice of the parameter vector
                  (for the crop's target adjustment; translation None = params left as they are)
    pivot_cm      the crop is made exact for the point this far in front of the model origin (along the
                  camera axis; the face centre's model-space z is a good choice)
    photo_background_prob  probability that the pixels outside the render mask are replaced by a real photo
                  from `backgrounds` (K, 3, H, W) uint8 (from_config takes ifn.real.background_bank's
                  (K, H, W, 3)): whole face crops, so real hair, clothes and clutter surround the rendered head;
                  a corner window of side U(0.4, 0.55)
                  (away from the photo's own face), mirrored half of the time; needs the batch's masks (B, H, W)
    face_only_prob  probability that the photo replaces everything but the face part (face, eyeballs, mouth
                  socket: the batch's face masks (B, H, W), dilated by a blur of sigma U(0, 3) px at the corpus
                  size thresholded at U(0.1, 0.5)) of an image that gets a photo background (so the fraction of
                  all images is photo_background_prob x this): scalp, ears and neck go, and with them the head
                  outline, which a network otherwise reads head pose from (real heads' outline is hair)
    gray_prob     probability that an image is made greyscale (many benchmark photos are)
    border_prob   probability of a black band (U(5 %, 30 %) of the side, one random edge), what a face crop
                  reaching beyond its photo's edge looks like (ifn.real.crop_square pads with black)
    The three are drawn from a second stream only when one of them is on, so settings without them give the
    same batches as before they existed; face_only_prob draws from a third one, only when it is on.
    out_size      resize the batch (antialiased bilinear, masks too) to this side first and augment there: the
                  network's view size (ifn.learn.nets.view_size of train.net.input_size and input_zoom), which it
                  would resize to anyway; at 64 px this
                  makes augmentation ~5x cheaper than at the corpus's 128 px. Blur sigmas stay in corpus pixels.
                  None: augment at the corpus size.
    """

    color_jitter: float = 0.15
    blur_prob: float = 0.3
    noise_std: float = 0.02
    crop_jitter: float = 0.04
    fov_deg: float = 13.0
    distance_cm: float = 100.0
    translation: slice | None = None
    pivot_cm: float = 0.0
    photo_background_prob: float = 0.0
    gray_prob: float = 0.0
    border_prob: float = 0.0
    backgrounds: torch.Tensor | None = field(default=None, compare=False, repr=False)
    out_size: int | None = None
    face_only_prob: float = 0.0
    contrast_boost: float = 1.0

    @classmethod
    def from_config(cls, config: AugmentConfig, meta: dict, pivot_cm: float = 0.0,
                    backgrounds: np.ndarray | torch.Tensor | None = None, out_size: int | None = None) -> "Augment":
        """From params.yaml `train.augment`, a corpus's meta.json (camera, layout), the background photos
        (K, H, W, 3) uint8 (needed when photo_background_prob > 0) and the side to augment at."""
        render = meta.get("render", {})
        if config.photo_background_prob > 0 and (backgrounds is None or len(backgrounds) == 0):
            raise ValueError("train.augment.photo_background_prob > 0 needs background photos "
                             "(ifn.real.background_bank)")
        return cls(config.color_jitter, config.blur_prob, config.noise_std, config.crop_jitter,
                   float(render.get("fov_deg", 13.0)), float(render.get("distance_cm", 100.0)),
                   layout_of(meta)["translation"], float(pivot_cm), config.photo_background_prob,
                   config.gray_prob, config.border_prob,
                   None if backgrounds is None else
                   torch.as_tensor(np.asarray(backgrounds)).permute(0, 3, 1, 2).contiguous(),
                   None if out_size is None else int(out_size), config.face_only_prob, config.contrast_boost)

    def composite(self, images: torch.Tensor, masks: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Real photos behind the rendered heads: images (B, 3, H, W), masks (B, H, W), draws v (B, 6) in
        [0, 1): which photo, window side, left/right corner, top/bottom corner, mirror. Returns new images (render where the mask is set)."""
        bank = self.backgrounds
        b, _, h, w = images.shape
        k = (v[:, 1] * len(bank)).long().clamp_max(len(bank) - 1)
        bg = bank[k].to(images.dtype).div_(255)                                # (B, 3, Hb, Wb)
        # A corner window (side 40-55 % of the photo): hair, clothes and background, not the photo's own face
        # (which fills the middle of a face crop and would teach the network to ignore real faces).
        side = 0.4 + 0.15 * v[:, 2]
        cx = (1 - side) * torch.where(v[:, 3] < 0.5, -1.0, 1.0).to(side)
        cy = (1 - side) * torch.where(v[:, 4] < 0.5, -1.0, 1.0).to(side)
        sx = torch.where(v[:, 5] < 0.5, -side, side)                             # mirrored half of the time
        theta = torch.zeros(b, 2, 3, dtype=images.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = sx.to(images.dtype), cx.to(images.dtype)
        theta[:, 1, 1], theta[:, 1, 2] = side.to(images.dtype), cy.to(images.dtype)
        grid = F.affine_grid(theta, (b, 3, h, w), align_corners=False)
        bg = F.grid_sample(bg, grid, mode="bilinear", padding_mode="border", align_corners=False)
        m = masks.to(images.dtype)[:, None]
        return m * images + (1 - m) * bg

    @staticmethod
    def black_band(images: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Zero a band along one edge of each image: v (B, 2) in [0, 1): which edge, width U(5 %, 30 %)."""
        b, _, h, w = images.shape
        edge = (v[:, 0] * 4).long().clamp_max(3)
        width = 0.05 + 0.25 * v[:, 1]
        ys = (torch.arange(h, dtype=images.dtype) + 0.5) / h
        xs = (torch.arange(w, dtype=images.dtype) + 0.5) / w
        wd = width.to(images.dtype)[:, None, None]
        y, x = ys[None, :, None], xs[None, None, :]
        band = torch.stack([(y < wd).expand(b, h, w), (y > 1 - wd).expand(b, h, w),
                            (x < wd).expand(b, h, w), (x > 1 - wd).expand(b, h, w)], 1)   # (B, 4, H, W)
        band = band[torch.arange(b), edge]
        return images.masked_fill(band[:, None], 0.0)

    def crop(self, images: torch.Tensor, params: torch.Tensor, u: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop with uniform draws u (B, 3) in [0, 1): side, x and y of the window."""
        c = self.crop_jitter
        s = 1.0 - c * u[:, 0]                                    # crop side / image side (zoom k = 1/s)
        tx, ty = 2 * c * (2 * u[:, 1] - 1), 2 * c * (2 * u[:, 2] - 1)  # window centre, normalised [-1, 1]
        h, w = images.shape[-2:]
        # The sampling grid of F.affine_grid([[s, 0, tx], [0, s, ty]]) (align_corners=False), built directly.
        gx = (torch.arange(w, dtype=images.dtype) * 2 + 1) / w - 1
        gy = (torch.arange(h, dtype=images.dtype) * 2 + 1) / h - 1
        sd, txd, tyd = (v.to(images.dtype)[:, None, None] for v in (s, tx, ty))
        grid = torch.stack([(sd * gx[None, None, :] + txd).expand(-1, h, w),
                            (sd * gy[None, :, None] + tyd).expand(-1, h, w)], -1)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.translation is not None:
            # Normalised image coords of a camera-space point: x_n = f_n X / d, y_n = -f_n Y / d, d = depth.
            # After the crop: x_n' = (x_n - tx) / s. The pivot at depth s d, moved by (-tx d / f_n, ty d / f_n),
            # projects exactly there.
            f_n = 1.0 / math.tan(math.radians(self.fov_deg) / 2)
            params = params.clone()
            t = params[:, self.translation].double()
            depth = self.distance_cm - t[:, 2] - self.pivot_cm                 # depth of the pivot
            t[:, 0] -= tx.double() * depth / f_n
            t[:, 1] += ty.double() * depth / f_n
            t[:, 2] = self.distance_cm - self.pivot_cm - s.double() * depth
            params[:, self.translation] = t.to(params.dtype)
        return images, params

    def face_only(self, masks: torch.Tensor, face_masks: torch.Tensor, w: torch.Tensor, scale: float
                  ) -> torch.Tensor:
        """(B, H, W) render masks, face masks and draws w (B, 3) in [0, 1) -> the masks of face_only_prob:
        where w[:, 0] < face_only_prob the face mask dilated (blur sigma 3 w[:, 1] corpus px, threshold
        0.1 + 0.4 w[:, 2]) within the render mask, elsewhere the render mask."""
        m = masks.to(w.dtype if masks.dtype == torch.bool else masks.dtype)
        grown = gaussian_blur(face_masks.to(m.dtype)[:, None], (3.0 * scale * w[:, 1]).to(m.dtype))[:, 0]
        grown = (grown > (0.1 + 0.4 * w[:, 2]).to(m.dtype)[:, None, None]).to(m.dtype) * m
        return torch.where((w[:, 0] < self.face_only_prob)[:, None, None], grown, m)

    def __call__(self, images: torch.Tensor, params: torch.Tensor, g: torch.Generator,
                 masks: torch.Tensor | None = None, face_masks: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        single = images.ndim == 3
        if single:
            images, params = images[None], params[None]
            masks = None if masks is None else masks[None]
            face_masks = None if face_masks is None else face_masks[None]
        b = images.shape[0]
        blur_scale = 1.0
        if self.out_size is not None and images.shape[-1] != self.out_size:
            blur_scale = self.out_size / images.shape[-1]
            size = (self.out_size, self.out_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
            if masks is not None and self.photo_background_prob > 0:   # masks serve only the backgrounds
                masks = F.interpolate(masks[:, None].to(images.dtype), size=size, mode="bilinear",
                                      align_corners=False, antialias=True)[:, 0]
                if face_masks is not None and self.face_only_prob > 0:
                    face_masks = F.interpolate(face_masks[:, None].to(images.dtype), size=size, mode="bilinear",
                                               align_corners=False, antialias=True)[:, 0]
        u = torch.rand(b, 8, generator=g, dtype=torch.float64)   # all per-image draws at once
        extra = self.photo_background_prob > 0 or self.gray_prob > 0 or self.border_prob > 0
        v = torch.rand(b, 10, generator=g, dtype=torch.float64) if extra else None
        if self.photo_background_prob > 0:
            if masks is None or self.backgrounds is None:
                raise ValueError("photo backgrounds need the batch's render masks and background photos")
            if self.face_only_prob > 0:
                if face_masks is None:
                    raise ValueError("train.augment.face_only_prob > 0 needs the batch's face masks")
                masks = self.face_only(masks, face_masks, torch.rand(b, 3, generator=g, dtype=torch.float64),
                                       blur_scale)
            sel = torch.nonzero(v[:, 0] < self.photo_background_prob).flatten()
            if len(sel):
                images = images.clone()
                images[sel] = self.composite(images[sel], masks[sel], v[sel, :6])
        if self.crop_jitter > 0:
            images, params = self.crop(images, params, u[:, :3])
        if self.gray_prob > 0:
            sel = torch.nonzero(v[:, 6] < self.gray_prob).flatten()
            if len(sel):
                gray = torch.einsum("bchw,c->bhw", images[sel], images.new_tensor(LUMA))
                images = images.clone()
                images[sel] = gray[:, None].expand(-1, 3, -1, -1)
        if self.color_jitter > 0 or self.contrast_boost > 1:
            # brightness b: x1 = b x; saturation s: x2 = g1 + s (x1 - g1), g1 = b gray(x); contrast c:
            # x3 = m + c (x2 - m), m = mean(x2). All linear: x3 = c b s x + c b (1 - s) gray(x) + (1 - c) m.
            j = self.color_jitter
            b_, c_, s_ = (1 - j + 2 * j * u[:, 3:6]).to(images.dtype).unbind(-1)
            if self.contrast_boost > 1:
                k = torch.rand(b, generator=g, dtype=torch.float64)
                c_ = c_ * torch.exp(math.log(self.contrast_boost) * k).to(images.dtype)
            gray = torch.einsum("bchw,c->bhw", images, images.new_tensor(LUMA))[:, None]
            m = b_ * (s_ * images.mean((1, 2, 3)) + (1 - s_) * gray.mean((1, 2, 3)))
            images = torch.addcmul((c_ * b_ * (1 - s_))[:, None, None, None] * gray,
                                   (c_ * b_ * s_)[:, None, None, None], images) \
                + ((1 - c_) * m)[:, None, None, None]
        if self.blur_prob > 0:
            blur = torch.nonzero(u[:, 6] < self.blur_prob).flatten()
            if len(blur):
                images = images.clone()
                images[blur] = gaussian_blur(images[blur], (blur_scale * (0.3 + 0.7 * u[blur, 7])).to(images.dtype))
        if self.noise_std > 0:
            images = images + self.noise_std * torch.randn(images.shape, generator=g, dtype=images.dtype)
        if self.border_prob > 0:
            sel = torch.nonzero(v[:, 7] < self.border_prob).flatten()
            if len(sel):
                images = images.clone()
                images[sel] = self.black_band(images[sel], v[sel, 8:10])
        images = images.clamp(0.0, 1.0)
        return (images[0], params[0]) if single else (images, params)


class AugmentCollate:
    """collate_fn of the training DataLoader: stack the samples, then augment the batch with
    batch_generator(seed, epoch, first index) -- whole-batch tensor ops (fast with multi-threaded torch,
    where many small per-sample ops stall) and reproducible with any number of workers and after resuming."""

    def __init__(self, augment: Augment | None, seed: int = 0):
        self.augment, self.seed = augment, int(seed)

    def __call__(self, samples: list[dict]) -> dict:
        batch = default_collate(samples)
        if self.augment is not None:
            g = batch_generator(self.seed, int(batch["epoch"][0]), int(batch["index"][0]))
            batch["image"], batch["params"] = self.augment(batch["image"], batch["params"], g, batch.get("mask"),
                                                           batch.get("face_mask"))
        return batch


# -- dataset ------------------------------------------------------------------------------------------------

class SyntheticDataset(Dataset):
    """One split of a synthetic corpus, read from memory-mapped shards (no shard is loaded whole).

    Items: `ds[i]` or `ds[(i, epoch)]` (what EpochSampler yields) -> {"image": (3, H, W) float32 in [0, 1],
    "mask": (H, W) bool render coverage (only with masks=True; all True for shards without masks),
    "face_mask": (H, W) bool coverage by the face part (only with face_masks=True too; the render coverage for
    older shards),
    "params": (P,) float32,
    "shading_gram": (9, 9) float32, "index": int, "epoch": int}. Unaugmented: the
    training DataLoader augments whole batches (AugmentCollate). Per-sample work is numpy only (single
    threaded; small multi-threaded torch ops stall when the CPU is shared).
    """

    def __init__(self, corpus: Corpus | str | Path, split: str = "train", masks: bool = True,
                 face_masks: bool = False):
        self.corpus = corpus if isinstance(corpus, Corpus) else Corpus.open(corpus)
        self.split = split
        self.masks = bool(masks)
        self.face_masks = self.masks and bool(face_masks)
        self.shards = self.corpus.shards(split)
        if not self.shards:
            raise FileNotFoundError(f"corpus {self.corpus.root} has no {split} shards")
        self._arrays: list[dict[str, np.ndarray]] | None = None
        sizes = [np.load(s / "params.npy", mmap_mode="r").shape[0] for s in self.shards]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.layout = layout_of(self.corpus.meta)

    def _open(self) -> list[dict[str, np.ndarray]]:
        # Opened lazily, so that each DataLoader worker maps the files itself.
        if self._arrays is None:
            self._arrays = [{name: np.load(s / f"{name}.npy", mmap_mode="r")
                             for name in ("images", "params", "shading_gram", "masks", "face_masks")
                             if name not in ("masks", "face_masks")
                             or (getattr(self, name) and (s / f"{name}.npy").exists())}
                            for s in self.shards]
        return self._arrays

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def params(self) -> np.ndarray:
        """(N, P) float32 parameters of the whole split (loaded)."""
        return np.concatenate([np.asarray(a["params"]) for a in self._open()])

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} {self.split} samples")
        shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
        arrays = self._open()[shard]
        i = index - int(self.offsets[shard])
        image = np.asarray(arrays["images"][i]).transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
        item = {"image": torch.from_numpy(image),
                "params": torch.from_numpy(np.array(arrays["params"][i], dtype=np.float32)),
                "shading_gram": torch.from_numpy(np.array(arrays["shading_gram"][i], dtype=np.float32)),
                "index": index, "epoch": int(epoch)}
        if self.masks:
            mask = np.array(arrays["masks"][i], dtype=bool) if "masks" in arrays else np.ones(image.shape[1:], bool)
            item["mask"] = torch.from_numpy(mask)
        if self.face_masks:
            item["face_mask"] = (torch.from_numpy(np.array(arrays["face_masks"][i], dtype=bool))
                                 if "face_masks" in arrays else item["mask"])
        return item


class EpochSampler(Sampler):
    """Indices of a dataset of size n as (index, epoch) pairs: a permutation drawn from (seed, epoch) when
    `shuffle`, else in order. Lightning calls `set_epoch` at the start of every epoch (also after resuming),
    so the order and the augmentation of each epoch do not depend on how the run was interrupted.
    With num_replicas > 1 (multi-device training), replica `rank` takes every num_replicas-th entry of the
    (padded) order, like torch's DistributedSampler (train() sets use_distributed_sampler=False)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0):
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), shuffle, 0
        self.num_replicas, self.rank = max(1, int(num_replicas)), int(rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.n // self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.num_replicas > 1 and order:
            order = (order * self.num_replicas)[:len(self) * self.num_replicas][self.rank::self.num_replicas]
        return iter([(i, self.epoch) for i in order])


def param_stats(params: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P) parameters -> (mean (P,), std (P,)) float32; entries that never vary get std 1 (not 0), so
    they can serve as loss scales."""
    p = torch.as_tensor(np.asarray(params), dtype=torch.float64)
    mean = p.mean(0)
    std = p.std(0, unbiased=False) if p.shape[0] > 1 else torch.ones(p.shape[1], dtype=p.dtype)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float()


class CorpusDataModule(_DataModuleBase):
    """train / val / test DataLoaders over a corpus folder, configured by params.yaml `train`.

    The training loader shuffles with EpochSampler(seed) and augments (train.augment); val and test are in
    order and unaugmented. Batches are dicts of stacked tensors (see SyntheticDataset). The last incomplete
    training batch is dropped (BatchNorm), unless the split is smaller than one batch.
    """

    def __init__(self, corpus_dir: str | Path, config: TrainConfig | None = None, seed: int = 0,
                 augment: bool = True, pivot_cm: float = 0.0, real=None):
        super().__init__()
        self.real = real   # params.yaml `real` (RealConfig): where the background photos come from
        self.pivot_cm = float(pivot_cm)
        self.corpus_dir = Path(corpus_dir)
        self.config = config or TrainConfig()
        self.seed = int(seed)
        self.augment = augment
        self.corpus = Corpus.open(self.corpus_dir)
        self.layout = layout_of(self.corpus.meta)
        self.image_size = int(self.corpus.meta["image_size"])
        self._datasets: dict[str, SyntheticDataset] = {}
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self._backgrounds: np.ndarray | None = None

    def backgrounds(self) -> np.ndarray | None:
        """(K, S, S, 3) uint8 real photos for train.augment.photo_background_prob (None when it is 0): the
        first train.augment.background_photos of a seeded sample of the training part of params `real`
        (never its held-out part), framed per source at the corpus's image size; built once."""
        aug = self.config.augment
        if aug.photo_background_prob <= 0:
            return None
        if self._backgrounds is None:
            if self.real is None:
                raise ValueError("train.augment.photo_background_prob > 0 needs params.yaml `real` (the photos)")
            from ..real import background_bank
            self._backgrounds = background_bank(self.real, aug.background_photos, self.image_size, self.seed)
        return self._backgrounds

    def train_augment(self) -> "Augment | None":
        """The training batches' Augment (None with augment=False)."""
        if not self.augment:
            return None
        size = view_size(self.config.net.input_size, self.config.net.input_zoom)
        return Augment.from_config(self.config.augment, self.corpus.meta, self.pivot_cm, self.backgrounds(),
                                   size if size < self.image_size else None)

    def needs_masks(self, split: str) -> bool:
        """Render masks are read only where the augmentation composites photo backgrounds (train split)."""
        return split == "train" and self.augment and self.config.augment.photo_background_prob > 0

    def mask_kwargs(self, split: str) -> dict[str, bool]:
        """SyntheticDataset's masks / face_masks flags for a split: each read only where the augmentation uses it."""
        masks = self.needs_masks(split)
        return {"masks": masks, "face_masks": masks and self.config.augment.face_only_prob > 0}

    def dataset(self, split: str) -> SyntheticDataset:
        if split not in self._datasets:
            self._datasets[split] = SyntheticDataset(self.corpus, split, **self.mask_kwargs(split))
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val"))
        for split in splits:
            self.dataset(split)

    def train_size(self) -> int:
        """Samples per training epoch."""
        return len(self.dataset("train"))

    def param_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the training split's parameter vectors (for InverseFaceNet.set_param_stats and the
        parameter loss's scales)."""
        if self._stats is None:
            p = self.dataset("train").params()          # read once for the stats and the range
            self._stats = param_stats(p)
            self._range = tuple(torch.from_numpy(r).float() for r in (p.min(0), p.max(0)))
        return self._stats

    def param_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min (P,), max (P,)) float32 of the training split's parameter vectors (InverseFaceNet.set_param_range)."""
        self.param_stats()
        return self._range

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        workers = self.config.num_workers
        bs = self.config.batch_size
        augment = self.train_augment() if shuffle else None
        return DataLoader(ds, batch_size=bs, sampler=EpochSampler(len(ds), self.seed, shuffle, replicas, rank),
                          collate_fn=AugmentCollate(augment, self.seed),
                          drop_last=shuffle and len(ds) >= bs, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


__all__: Sequence[str] = ("SyntheticDataset", "Augment", "AugmentCollate", "EpochSampler", "CorpusDataModule",
                          "param_stats", "layout_of", "gaussian_blur", "batch_generator")
