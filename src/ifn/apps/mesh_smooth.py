"""Low-pass filtering of per-vertex fields over the face mesh (neighbour averaging).

Used by relighting (ifn.apps.edit) to take the shading change from the head's coarse shape only: smoothed
normals keep the forehead, cheeks and the nose's bulk but lose the model's fine relief (eye sockets, nostrils,
lip and eyelid creases), which a fit a few pixels off would otherwise print onto the photo as ghost features.
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import numpy as np
import torch
from scipy.sparse import coo_matrix, csr_matrix, diags

from ..model.facemodel import FaceModel

T = TypeVar("T")

def per_face_model(fn: Callable[[FaceModel], T]) -> Callable[[FaceModel], T]:
    """Cache fn(face_model) once per face model object (keyed by identity: the model is not hashable)."""
    cache: dict[int, tuple[FaceModel, T]] = {}

    @functools.wraps(fn)
    def cached(face_model: FaceModel) -> T:
        hit = cache.get(id(face_model))
        if hit is None or hit[0] is not face_model:
            hit = cache[id(face_model)] = (face_model, fn(face_model))
        return hit[1]
    return cached


@per_face_model
def neighbour_mean(face_model: FaceModel) -> csr_matrix:
    """(V, V) sparse row-stochastic matrix: each vertex's mean over itself and its edge neighbours (computed once
    per face model object)."""
    tri = face_model.triangles.cpu().numpy()
    n = face_model.n_vertices
    i = np.concatenate([tri[:, [0, 1, 2, 1, 2, 0]].ravel(), np.arange(n)])
    j = np.concatenate([tri[:, [1, 2, 0, 0, 1, 2]].ravel(), np.arange(n)])
    a = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    a.data[:] = 1.0                                        # an edge shared by two triangles counts once
    return diags(1.0 / np.asarray(a.sum(1)).ravel()) @ a


def smooth_field(face_model: FaceModel, field: torch.Tensor, iterations: int) -> torch.Tensor:
    """(B, V, C) per-vertex values -> (B, V, C) float64 after `iterations` neighbour means (0: unchanged)."""
    x = field.detach().cpu().double()
    if iterations <= 0:
        return x
    b, v, c = x.shape
    m = neighbour_mean(face_model)
    y = x.permute(1, 0, 2).reshape(v, b * c).numpy()
    for _ in range(int(iterations)):
        y = m @ y
    return torch.from_numpy(np.ascontiguousarray(y)).reshape(v, b, c).permute(1, 0, 2)


def smooth_normals(face_model: FaceModel, normals: torch.Tensor, iterations: int) -> torch.Tensor:
    """(B, V, 3) unit normals -> (B, V, 3) float64 unit normals of the smoothed field."""
    n = smooth_field(face_model, normals, iterations)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
