"""Where an edit may change a photo: weights on the face model's surface and in the image.

An edit transfers a change of the render into the photo. That is only right where the fitted face shows the
photo's skin: the inner face. The model's face part reaches further than a fit can be trusted: down the throat
under the jaw (a jaw fitted a little low puts the neck or the collar under it), up to the hairline and back to
the ears (hair, background), and round to grazing angles at the silhouette (where a misplaced outline lies over
background and the shading changes fastest). Edited there, the photo took the render's features: bands along the
chin and neck, a seam through the clothing, a rim along the head outline.

`region_weights` is a per-vertex weight in [0, 1] on the model (computed once, from the mean shape): 1 on the
inner face, fading to 0 over `fade_cm` towards the jaw contour of the 68 landmarks (0-16, closed upwards) and
towards the outer border of the face part (hairline, ears, throat). It travels with the surface, so an edit
that moves the geometry moves it too. `view_weights` fades it further towards grazing angles of a render.
`edit_weights` puts both into the image: (B, H, W) weights on the render's face pixels.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes, distance_transform_edt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from ..model.facemodel import FaceModel
from ..model.reflectance import _inside_polygon, _segments_distance
from ..render.renderer import FaceRender, Renderer
from .mesh_smooth import per_face_model

FADE_CM = 1.0                 # width of the fade to 0 at the jaw contour and the face part's outer border (cm)
JAW_MARGIN_CM = 0.3           # the jaw fade ends this far outside the jaw contour (cm)
SILHOUETTE_PX = 4.0           # fade to 0 at the render's outline over this many pixels
JAW = list(range(17))         # the jaw contour landmarks of the 68 (Multi-PIE order: 0 right ear ... 16 left ear)


def smoothstep(x: np.ndarray | torch.Tensor, lo: float, hi: float):
    """0 below lo, 1 above hi, 3t^2 - 2t^3 between (t = (x - lo) / (hi - lo)); numpy or torch."""
    t = ((x - lo) / (hi - lo)).clip(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def jaw_distance(face_model: FaceModel) -> np.ndarray:
    """(V,) signed distance (cm, mean shape seen from the front, x-y plane) to the region above the jaw contour:
    the polygon through jaw landmarks 0-16, closed by vertical lines up from 0 and 16. Positive inside.
    NaN everywhere if the model's region lacks a jaw landmark."""
    mean = face_model.mean.detach().cpu().double().numpy()
    lm = face_model.landmarks.cpu().numpy()[JAW]
    if (lm < 0).any():
        return np.full(len(mean), np.nan)
    jaw = mean[lm, :2]
    top = mean[:, 1].max() + 10.0
    poly = np.concatenate([[[jaw[0, 0], top]], jaw, [[jaw[-1, 0], top]]])
    xy = mean[:, :2]
    dist = _segments_distance(xy, poly, closed=True)
    inside = _inside_polygon(xy, poly)
    return np.where(inside, dist, -dist)


def border_distance(face_model: FaceModel) -> np.ndarray:
    """(V,) geodesic distance (cm, along the mean shape's edges) of each face-part vertex to the face part's
    outer border (the longest boundary loop: hairline, ears, throat; not the eye and mouth openings); inf off
    the face part."""
    mean = face_model.mean.detach().cpu().double().numpy()
    face = face_model.part_mask("face").cpu().numpy()
    tri = face_model.triangles.cpu().numpy()
    tri = tri[face[tri].all(1)]
    edges = np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), 1)
    unique, count = np.unique(edges, axis=0, return_counts=True)
    n = len(mean)
    border = unique[count == 1]                          # edges of exactly one face triangle
    if not len(border):
        return np.full(n, np.inf)
    graph = coo_matrix((np.ones(len(border)), (border[:, 0], border[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    on_border = np.unique(border)
    loops, sizes = np.unique(label[on_border], return_counts=True)
    outer = on_border[label[on_border] == loops[sizes.argmax()]]
    length = np.linalg.norm(mean[unique[:, 0]] - mean[unique[:, 1]], axis=1)
    graph = coo_matrix((length, (unique[:, 0], unique[:, 1])), shape=(n, n)).tocsr()
    return dijkstra(graph, directed=False, indices=outer, min_only=True)


def region_weights(face_model: FaceModel, fade_cm: float = FADE_CM, jaw_margin_cm: float = JAW_MARGIN_CM
                   ) -> torch.Tensor:
    """(V,) float64 in [0, 1]: 1 on the inner face, smoothstep fades to 0 at the jaw contour (from `fade_cm`
    inside it to `jaw_margin_cm` outside) and at the face part's outer border (within `fade_cm`); 0 off the
    face part."""
    face = face_model.part_mask("face").cpu().numpy()
    w = smoothstep(border_distance(face_model), 0.0, fade_cm)
    jaw = jaw_distance(face_model)
    if np.isfinite(jaw).all():
        w = w * smoothstep(jaw, -jaw_margin_cm, fade_cm)
    return torch.from_numpy(np.where(face, np.nan_to_num(w, nan=0.0, posinf=1.0), 0.0))


cached_region_weights = per_face_model(region_weights)   # the defaults, once per face model object


def silhouette_weights(mask: torch.Tensor, fade_px: float = SILHOUETTE_PX) -> torch.Tensor:
    """(B, H, W) bool face mask -> (B, H, W) float64: smoothstep of the Euclidean distance (px) to the nearest
    pixel outside the mask's outline (the mask with its holes -- eyes, mouth -- filled), 0 at the outline, 1 from
    `fade_px` in. The image border is not an outline (a face cut by the crop is not faded there)."""
    out = np.zeros(mask.shape)
    for b, m in enumerate(mask.cpu().numpy()):
        filled = np.pad(binary_fill_holes(m), 1, mode="edge")
        out[b] = distance_transform_edt(filled)[1:-1, 1:-1]
    return smoothstep(torch.from_numpy(out), 0.0, float(fade_px))


def edit_weights(renderer: Renderer, render: FaceRender, mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) float64 in [0, 1] on the render's face pixels `mask` (B, H, W) bool, 0 elsewhere:
    region_weights interpolated over the render's pixels times silhouette_weights."""
    w = cached_region_weights(renderer.face_model)[None].expand(mask.shape[0], -1)
    img = render.fragments.interpolate(w[..., None].to(render.image.dtype).to(render.image.device))[..., 0]
    img = img.detach().cpu().double().clamp(0.0, 1.0) * silhouette_weights(mask)
    return torch.where(mask.cpu(), img, torch.zeros(mask.shape, dtype=torch.float64))
