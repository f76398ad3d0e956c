"""Detector-guided analysis-by-synthesis: refinement anchored by the face detector's landmarks (ifn.detect).

The photometric energy alone has minima the model's face does not belong in (hair, shadows: heads pitch back,
jaws open; see ifn.fit). Classic analysis-by-synthesis (Garrido et al., Face2Face) anchors the fit with sparse
detected landmarks. Here the targets are MediaPipe's 468 mesh points, each tied to a vertex of the face model
(`ifn.detect.correspondence`), fitted coarse to fine:

1. `coarse_steps` landmark-only steps (nothing rendered, fast) on pose, shape and expression;
2. `steps` steps of the usual refinement (ifn.fit.refine: robust photometric term, silhouette edges, priors)
   with the landmark term kept on, on every parameter group.

Points of the face oval (`contour`) have no fixed vertex: the silhouette slides over the cheek as the head
turns. They are weighted by `w_contour` and, per image, dropped where their vertex faces away from the camera
at the current estimate (`visible_weights`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from .fit import refine
from .real import apply_affine, invert_affine
from .render.renderer import Renderer
from .render.shading import vertex_normals


@dataclass(frozen=True)
class LandmarkFitSettings:
    """w_landmark: weight of the landmark term (mean squared distance in image sides, ~1e-4 at a 1 % error);
    coarse_steps / steps: landmark-only, then photometric + landmark steps; coarse_lr: the landmark-only
    stage's step size (the photometric stage uses refine's `lr`); w_contour: weight of face-oval
    points relative to the interior ones; min_facing: a point counts only where its vertex normal's z (towards
    the camera) is above this at the start of each stage; max_yaw_deg: a face whose starting estimate is turned
    further than this (|yaw|, degrees) keeps its start: the detector is weakest at profiles."""

    w_landmark: float = 100.0
    coarse_steps: int = 80
    coarse_lr: float = 0.1
    steps: int = 30
    w_contour: float = 0.5
    min_facing: float = 0.1
    max_yaw_deg: float = 90.0     # (params.yaml's detect.max_yaw_deg: 40)

    @classmethod
    def from_config(cls, config) -> "LandmarkFitSettings":
        """From params.yaml section `detect` (ifn.config.DetectConfig)."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__})


def model_vertices(face_model, correspondence: Mapping) -> torch.Tensor:
    """(468,) vertex ids of `face_model`'s region for the detector's points (-1 where the region lacks the
    source vertex or the correspondence has none)."""
    source = np.asarray(correspondence["source_vertices"], dtype=np.int64)
    region = face_model.source_index.cpu().numpy()
    lookup = np.full(max(int(region.max()), int(source.max())) + 1, -1, dtype=np.int64)
    lookup[region] = np.arange(len(region))
    ids = np.where(source >= 0, lookup[np.maximum(source, 0)], -1)
    return torch.from_numpy(ids)


def to_crop(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(L, 2) photo pixels -> crop pixels, for a crop whose `affine` (2, 3) maps crop px to photo px."""
    return apply_affine(invert_affine(affine), points)


def visible_weights(renderer: Renderer, params: torch.Tensor, vertex_ids: torch.Tensor, contour: torch.Tensor,
                    w_contour: float, min_facing: float) -> torch.Tensor:
    """(B, L) per-point weights at `params`: 0 where the point has no vertex or its vertex faces away (normal z
    <= min_facing), w_contour on contour points, 1 elsewhere."""
    with torch.no_grad():
        verts = renderer.posed(params)
        normals = vertex_normals(verts, renderer.face_model.triangles.to(verts.device))
        ids = vertex_ids.to(verts.device)
        facing = normals[:, ids.clamp_min(0), 2] > min_facing
        w = torch.where(contour.to(verts.device), torch.as_tensor(w_contour), torch.as_tensor(1.0)).to(verts)
        return w[None] * (facing & (ids >= 0)[None]).to(verts)


def fit_with_landmarks(renderer: Renderer, crops: torch.Tensor, init: torch.Tensor, targets: torch.Tensor,
                       vertex_ids: torch.Tensor, contour: torch.Tensor,
                       settings: LandmarkFitSettings = LandmarkFitSettings(), image_mask: torch.Tensor | None = None,
                       **refine_kwargs) -> tuple[torch.Tensor, dict]:
    """Fit parameters (B, P) from `init` to sRGB crops (B, S, S, 3) and detector targets (B, L, 2) crop pixels
    (NaN rows: no detection -> that image's landmark term is 0) of the model vertices `vertex_ids` (L,).
    refine_kwargs go to both stages of ifn.fit.refine (w_*_prior, lr, robust, ...). Returns (params,
    {"coarse": history, "fine": history})."""
    kw = dict(refine_kwargs)
    kw.pop("w_landmark", None)
    kw.pop("steps", None)
    weights = visible_weights(renderer, init, vertex_ids, contour, settings.w_contour, settings.min_facing)
    params, coarse = init, None
    if settings.coarse_steps > 0:
        coarse_kw = {**kw, "w_photo": 0.0, "lr": settings.coarse_lr}
        params, coarse = refine(renderer, crops, init, steps=settings.coarse_steps, w_landmark=settings.w_landmark,
                                landmarks=targets, landmark_vertices=vertex_ids, landmark_weights=weights,
                                free=("shape", "expression", "rotation", "translation"), image_mask=image_mask,
                                **coarse_kw)
        weights = visible_weights(renderer, params, vertex_ids, contour, settings.w_contour, settings.min_facing)
    fine = None
    if settings.steps > 0:
        params, fine = refine(renderer, crops, params, steps=settings.steps, w_landmark=settings.w_landmark,
                              landmarks=targets, landmark_vertices=vertex_ids, landmark_weights=weights,
                              image_mask=image_mask, **kw)
    return params, {"coarse": coarse, "fine": fine}


def fit_detected(renderer: Renderer, crops: np.ndarray, init: torch.Tensor, targets: np.ndarray,
                 settings: LandmarkFitSettings, batch_size: int, image_mask: torch.Tensor | None = None,
                 **refine_kwargs) -> tuple[torch.Tensor, np.ndarray]:
    """`fit_with_landmarks` over many crops, the detector's points tied to their model vertices
    (ifn.detect.correspondence): (N, S, S, 3) uint8 crops, (N, P) starts, (N, 468, 2) detector targets in crop
    pixels (NaN rows: no face -- those keep their start, as do starts turned beyond settings.max_yaw_deg),
    batches of `batch_size`, optional (N, S, S) image mask.
    Returns (params (N, P), guided (N,) bool: the images that were fitted)."""
    from .detect import correspondence

    corr = correspondence()
    vids, contour = model_vertices(renderer.face_model, corr), torch.from_numpy(corr["contour"])
    guided = np.isfinite(targets).all((1, 2))
    yaw = init[:, renderer.layout["rotation"]][:, 0].detach().abs().cpu().numpy()
    guided &= np.degrees(yaw) <= settings.max_yaw_deg
    out = init.clone()
    idx = np.flatnonzero(guided)
    for start in range(0, len(idx), batch_size):
        sel = idx[start:start + batch_size]
        images = torch.from_numpy(np.ascontiguousarray(crops[sel])).float() / 255
        out[sel], _ = fit_with_landmarks(renderer, images, init[sel], torch.from_numpy(targets[sel]).float(), vids,
                                         contour, settings, None if image_mask is None else image_mask[sel],
                                         **{**refine_kwargs, "log_every": 0})
    return out, guided