"""Normals, the real spherical-harmonics basis and Lambertian SH shading.

Illumination is the 3-band SH expansion of the incident radiance, one set of 9 coefficients per colour
channel: L(w) = sum_k gamma[k, c] Y_k(w). For a Lambertian surface with albedo a the outgoing radiance is
a * E(n) / pi with irradiance E(n) = sum_k A_l(k) gamma[k, c] Y_k(n) (Ramamoorthi & Hanrahan 2001,
A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4). We call E(n) / pi the *shading*; a uniform white radiance of 1 has
gamma[0] = sqrt(4 pi) and gives shading 1.
"""
from __future__ import annotations

import math
import warnings

import torch

# Basis order: Y00, Y1-1, Y10, Y11, Y2-2, Y2-1, Y20, Y21, Y22.
SH_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)
_A = (math.pi, 2 * math.pi / 3, math.pi / 4)
SH_CONVOLUTION = tuple(_A[band] for band in SH_BAND)
AMBIENT_WHITE = math.sqrt(4 * math.pi)  # gamma[0] of a uniform radiance 1: shading 1 everywhere


# Y_k(n) = SH_SCALE[k] * (1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2)[k]
_C0, _C1, _C2 = 0.5 / math.sqrt(math.pi), math.sqrt(3 / (4 * math.pi)), 0.5 * math.sqrt(15 / math.pi)
_C20, _C22 = 0.25 * math.sqrt(5 / math.pi), 0.25 * math.sqrt(15 / math.pi)
SH_SCALE = (_C0, _C1, _C1, _C1, _C2, _C2, _C20, _C2, _C22)
# H_k(n) = A_l(k) Y_k(n) / pi = SH_SHADING_SCALE[k] * the same monomials (`shading_basis`, `sh_shading`)
SH_SHADING_SCALE = tuple(c * a / math.pi for c, a in zip(SH_SCALE, SH_CONVOLUTION))


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit vectors -> (..., 9) real SH basis values."""
    x, y, z = normals.unbind(-1)
    return torch.stack([
        torch.full_like(x, _C0),
        _C1 * y, _C1 * z, _C1 * x,
        _C2 * x * y, _C2 * y * z, _C20 * (3 * z * z - 1), _C2 * x * z, _C22 * (x * x - y * y),
    ], -1)


def shading_basis(normals: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit normals -> (..., 9) basis H_k(n) = A_l(k) Y_k(n) / pi, so shading = H @ gamma."""
    conv = normals.new_tensor(SH_CONVOLUTION) / math.pi
    return sh_basis(normals) * conv


def sh_shading(normals: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) unit normals, (B, 9, 3) SH coefficients -> (B, V, 3) shading (irradiance / pi) per channel.

    The basis is built as (B, 9, V) (each function a contiguous row; = shading_basis transposed), which is
    2x cheaper on CPU than stacking along a last axis of 9."""
    x, y, z = normals.unbind(-1)
    k = SH_SHADING_SCALE
    basis = torch.stack([
        torch.full_like(x, k[0]),
        k[1] * y, k[2] * z, k[3] * x,
        k[4] * x * y, k[5] * y * z, k[6] * (3 * z * z - 1), k[7] * x * z, k[8] * (x * x - y * y),
    ], 1)
    return (gamma.transpose(1, 2) @ basis).transpose(1, 2)


def incidence_matrix(triangles: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """(V, F) sparse CSR matrix with a 1 where vertex v is a corner of triangle f (for `vertex_normals`)."""
    f = triangles.shape[0]
    rows = triangles.reshape(-1).to(torch.int64)
    cols = torch.arange(f, device=triangles.device).repeat_interleave(3)
    values = torch.ones(3 * f, device=triangles.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the matmul we use is stable
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n_vertices, f))
        return coo.coalesce().to_sparse_csr()


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor, incidence: torch.Tensor | None = None,
                   eps: float = 1e-12) -> torch.Tensor:
    """(B, V, 3) vertices, (F, 3) counter-clockwise triangles -> (B, V, 3) unit area-weighted normals.

    `incidence` is `incidence_matrix(triangles, V)`; pass it when calling repeatedly with the same mesh.
    Works in a (V, B*3) layout so gathers and the sparse sum run over contiguous rows (fast on CPU).
    """
    b, v, _ = vertices.shape
    f = triangles.shape[0]
    if incidence is None:
        incidence = incidence_matrix(triangles, v)
    # Coordinate-major rows (V, 3 * B): every coordinate of every corner is a contiguous (B,) slab, so the
    # cross product and the normalisation are plain elementwise ops (torch.linalg.cross and norm over a
    # strided axis cost 5-40x more on CPU).
    rows = vertices.permute(1, 2, 0).reshape(v, 3 * b)
    corners = rows.index_select(0, triangles.reshape(-1)).reshape(f, 3, 3, b)
    ax, ay, az = (corners[:, 1] - corners[:, 0]).unbind(1)
    bx, by, bz = (corners[:, 2] - corners[:, 0]).unbind(1)
    face_n = torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], 1)  # |n| = 2 x area
    summed = (incidence.to(face_n.dtype) @ face_n.reshape(f, 3 * b)).reshape(v, 3, b)
    x, y, z = summed.unbind(1)
    unit = summed * torch.rsqrt((x * x + y * y + z * z).clamp_min(eps * eps))[:, None]
    return unit.permute(2, 0, 1)


def directional_light_sh(direction: torch.Tensor, intensity: float | torch.Tensor = 1.0) -> torch.Tensor:
    """SH coefficients (9,) of a distant point light towards unit `direction` (3,): gamma_k = I Y_k(d)."""
    d = direction / direction.norm()
    return intensity * sh_basis(d)


def shading_gram(normals: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V, 3) unit normals, optional (V,) vertex weights -> (B, 9, 9) G = sum_v w_v H_v H_v^T / sum_v w_v.

    The mean squared shading difference of two SH lights on these normals is sum_c dgamma_c^T G dgamma_c.
    """
    h = shading_basis(normals)
    if weights is None:
        return h.transpose(1, 2) @ h / h.shape[1]
    w = weights.to(h)
    return (h * w[:, None]).transpose(1, 2) @ h / w.sum()
