"""What a reconstruction gives back: `Reconstruction` (one face of one photo), `assemble` (the Reconstructions of
a batch from the render of its estimate) and the not-a-face warning.

"Not a face" heuristic: a reconstruction is flagged (`warning`, never an error) when the mean absolute sRGB
error over the rendered face pixels exceeds MAX_PHOTOMETRIC_MAE or the rendered face covers less than
MIN_COVERAGE of the crop. With the current network these catch gross mismatches only (numbers below).

Photometric MAE over the rendered face (sRGB [0, 1]): real faces, no refinement: AFLW2000 dev with roi boxes
median 0.215, 90th percentile 0.323, 99th 0.387, max 0.458 (1 % above 0.4); UTKFace / CelebA crops (100
each, ifn.real.frame_source, reframe=1) 99th percentile 0.30 / 0.26. Non-faces (64 each, 256 px,
ifn.render.backgrounds with torch.Generator().manual_seed(0), reframe=1): noise median 0.18, textures 0.20
(90th 0.30), colour gradients 0.19 (90th 0.27), 32 px checkerboards of random colours 0.28, saturated flat
colours 0.45 (all flagged). After 30 refinement steps faces give median 0.10 (max 0.29) and smooth non-faces
fit better than faces (gradients 0.03). Coverage: at least 0.53 of the crop for every input without
refinement; after refinement faces 1st percentile 0.19, non-faces ~0.2. Hence MAX_PHOTOMETRIC_MAE = 0.4
(above the 99th percentile of real faces) and MIN_COVERAGE = 0.1 (degenerate estimates only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..real import apply_affine
from .photos import _Item, valid_pixels

# Not-a-face heuristic (a warning only); the measured values behind them are in the module docstring.
MAX_PHOTOMETRIC_MAE = 0.4        # mean |render - photo| over the rendered face, sRGB in [0, 1]
MIN_COVERAGE = 0.1               # rendered face pixels / crop pixels


@dataclass
class Reconstruction:
    """The reconstruction of one photo. Failed inputs have only `source` and `error` (one line) set.

    params           {group: numpy array} of ifn.model.layout.ParamLayout: shape (n_shape,), expression
                     (n_expression,) in [0, 1], reflectance (n_reflectance,), illumination (9, 3) SH x RGB,
                     rotation (3,) yaw, pitch, roll in radians, translation (3,) cm
    vector           (P,) the same as one flat vector (layout order)
    landmarks        (68, 2) x, y in the photo FILE's pixels (continuous: pixel centres at +0.5); NaN where the
                     face model region lacks a landmark
    landmarks_crop   (68, 2) the same in crop pixels
    vertices         (V, 3) camera-space posed vertices, cm (+y up, camera at the origin looking down -z)
    triangles        (F, 3) int vertex ids
    albedo           (V, 3) per-vertex albedo, linear RGB in [0, 1]
    crop             (S, S, 3) uint8 sRGB: what the network saw
    render           (S, S, 3) uint8 sRGB: the re-render composited over the crop
    mask             (S, S) bool: crop pixels covered by the rendered face
    affine           (2, 3) crop pixels -> file pixels (ifn.real.apply_affine)
    box              (4,) x0, y0, x1, y1 file pixels of the face box used (given, or from the predicted
                     landmarks when re-framed); None for the plain centred framing
    image_size       (height, width) of the file, pixels
    framing          "box" | "detected" | "centred" | "reframed" (how the final crop was made)
    face             index of the face in its photo (0 = largest) when faces were detected
    score            the detector's confidence for that face (None without detection)
    detected         (468, 2) the detector's mesh points in file pixels (None without detection)
    photo            index of the photo in the call that produced this result
    photometric_mae  mean |render - crop| (sRGB [0, 1], channel mean) over rendered face pixels inside the photo
    coverage         rendered face pixels / crop pixels
    """

    source: str
    error: str | None = None
    warning: str | None = None
    params: dict[str, np.ndarray] | None = None
    vector: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    landmarks_crop: np.ndarray | None = None
    vertices: np.ndarray | None = None
    triangles: np.ndarray | None = None
    albedo: np.ndarray | None = None
    crop: np.ndarray | None = None
    render: np.ndarray | None = None
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None
    box: np.ndarray | None = None
    image_size: tuple[int, int] | None = None
    framing: str | None = None
    photometric_mae: float | None = None
    coverage: float | None = None
    refine_steps: int = 0
    reframes: int = 0
    checkpoint: str | None = None
    notes: list[str] = field(default_factory=list)
    face: int = 0
    score: float | None = None
    detected: np.ndarray | None = None
    photo: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: everything but the images and the mesh (lists instead of arrays)."""
        def lst(a):
            return None if a is None else np.asarray(a, dtype=np.float64).tolist()

        out: dict[str, Any] = {"source": self.source, "error": self.error, "warning": self.warning}
        if not self.ok:
            return out
        out.update({
            "params": {k: lst(v) for k, v in self.params.items()},
            "units": {"rotation": "radians (yaw, pitch, roll)", "translation": "cm",
                      "illumination": "(9, 3) SH coefficients x RGB of the incident radiance",
                      "landmarks": "file pixels x, y (pixel centres at +0.5)"},
            "landmarks": [[None if not math.isfinite(v) else v for v in p] for p in lst(self.landmarks)],
            "image_size": list(self.image_size), "crop_size": int(self.crop.shape[0]),
            "crop_affine": lst(self.affine), "box": lst(self.box), "framing": self.framing,
            "reframes": self.reframes, "refine_steps": self.refine_steps, "checkpoint": self.checkpoint,
            "face": self.face, "detector_score": self.score,
            "photometric_mae": self.photometric_mae, "coverage": self.coverage,
            "mesh": {"vertices": int(self.vertices.shape[0]), "triangles": int(self.triangles.shape[0])},
            "notes": list(self.notes),
        })
        return out


def not_a_face_warning(photometric_mae: float, coverage: float) -> str | None:
    """One line if the reconstruction does not look like a face in the photo (see the module docstring)."""
    if not math.isfinite(photometric_mae) or coverage < MIN_COVERAGE:
        return (f"the rendered face covers only {coverage:.0%} of the crop (< {MIN_COVERAGE:.0%}): "
                f"probably not a face, or badly framed")
    if photometric_mae > MAX_PHOTOMETRIC_MAE:
        return (f"photometric error {photometric_mae:.3f} > {MAX_PHOTOMETRIC_MAE} over the rendered face: "
                f"probably not a face, or badly framed")
    return None


def assemble(renderer, items: list[_Item], pred: torch.Tensor, refine_steps: Sequence[int],
             checkpoint: str | None = None) -> list[Reconstruction]:
    """The Reconstruction of each item from its estimate `pred` (N, P): the render composited over the crop,
    named parameters, landmarks in file pixels, the posed mesh, the photometric error and the not-a-face
    warning; `refine_steps` (N,) and `checkpoint` are recorded."""
    from ..render.color import linear_to_srgb

    r = renderer
    size = int(r.settings.image_size)
    with torch.no_grad():
        out = r(pred, background=0.0)
        srgb = linear_to_srgb(out.image).numpy()
    groups = r.layout.split(pred)
    triangles = r.face_model.triangles.cpu().numpy().astype(np.int64)
    results = []
    for b, it in enumerate(items):
        crop = it.crop.astype(np.float32) / 255
        mask = out.mask[b].numpy()
        inside = mask & valid_pixels(it.affine, size, it.image.shape[:2])
        err = np.abs(srgb[b] - crop).mean(-1)
        mae = float(err[inside].mean()) if inside.any() else float("nan")
        coverage = float(mask.mean())
        render = np.where(mask[..., None], srgb[b], crop)
        lm_crop = out.landmarks[b].double().numpy()
        to_file = it.affine * np.float64(it.scale)   # crop px -> loaded px -> file px
        h, w = it.image.shape[:2]
        warning = not_a_face_warning(mae, coverage)
        results.append(Reconstruction(
            source=it.source, warning=warning, face=it.face, score=it.score,
            detected=None if it.points is None else it.points * it.scale,
            params={k: v[b].detach().numpy().astype(np.float32).copy() for k, v in groups.items()},
            vector=pred[b].detach().numpy().astype(np.float32).copy(),
            landmarks=apply_affine(to_file, lm_crop), landmarks_crop=lm_crop,
            vertices=out.vertices[b].numpy().astype(np.float32), triangles=triangles,
            albedo=out.albedo[b].numpy().astype(np.float32), crop=it.crop,
            render=np.clip(np.round(render * 255), 0, 255).astype(np.uint8), mask=mask, affine=to_file,
            box=None if it.box is None else it.box * it.scale,
            image_size=(int(round(h * it.scale)), int(round(w * it.scale))), framing=it.framing,
            photometric_mae=mae, coverage=coverage, refine_steps=int(refine_steps[b]), reframes=it.reframes,
            checkpoint=checkpoint, notes=list(it.notes)))
    return results
