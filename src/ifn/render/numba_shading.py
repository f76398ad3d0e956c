"""Vertex normals and SH shading as compiled CPU kernels (numba), image-parallel, with closed-form backward
passes: the same maths as ifn.render.shading.vertex_normals / sh_shading (tests/test_render_kernels.py
compares them and checks the gradients in float64). Conventions as ifn.render.numba_kernels."""
from __future__ import annotations

import numpy as np
import torch

from .numba_kernels import _match_threads, _np, numba
from .shading import SH_SHADING_SCALE

SH_A = np.array(SH_SHADING_SCALE)  # H_k(n) = SH_A[k] * (1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2)[k]

if numba is not None:
    @numba.njit(inline="always", cache=True)
    def _edges(verts, img, i0, i1, i2):  # pragma: no cover - compiled
        """The two edge vectors a = v1 - v0, b = v2 - v0 of triangle (i0, i1, i2) of image img."""
        return (verts[img, i1, 0] - verts[img, i0, 0], verts[img, i1, 1] - verts[img, i0, 1],
                verts[img, i1, 2] - verts[img, i0, 2], verts[img, i2, 0] - verts[img, i0, 0],
                verts[img, i2, 1] - verts[img, i0, 1], verts[img, i2, 2] - verts[img, i0, 2])

    @numba.njit(inline="always", cache=True)
    def _sh_terms(a, x, y, z):  # pragma: no cover - compiled
        return (a[0], a[1] * y, a[2] * z, a[3] * x, a[4] * x * y, a[5] * y * z, a[6] * (3 * z * z - 1),
                a[7] * x * z, a[8] * (x * x - y * y))

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _normals_forward(verts, triangles, unit, length):  # pragma: no cover - compiled
        """verts (B, V, 3), triangles (F, 3) -> unit (B, V, 3) normals, length (B, V) of the summed normal."""
        for img in numba.prange(verts.shape[0]):
            acc = np.zeros((verts.shape[1], 3), dtype=verts.dtype)
            for f in range(triangles.shape[0]):
                i0, i1, i2 = triangles[f, 0], triangles[f, 1], triangles[f, 2]
                ax, ay, az, bx, by, bz = _edges(verts, img, i0, i1, i2)
                nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
                for i in (i0, i1, i2):
                    acc[i, 0] += nx
                    acc[i, 1] += ny
                    acc[i, 2] += nz
            for v in range(verts.shape[1]):
                norm = np.sqrt(acc[v, 0] ** 2 + acc[v, 1] ** 2 + acc[v, 2] ** 2)
                length[img, v] = norm
                for k in range(3):
                    unit[img, v, k] = acc[v, k] / norm if norm > 0 else 0.0

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _normals_backward(verts, triangles, unit, length, eps, g_unit, g_verts):  # pragma: no cover - compiled
        for img in numba.prange(verts.shape[0]):
            g_sum = np.zeros((verts.shape[1], 3), dtype=verts.dtype)
            for v in range(verts.shape[1]):  # u = s / max(|s|, eps)
                norm = length[img, v]
                if norm > eps:
                    d = unit[img, v, 0] * g_unit[img, v, 0] + unit[img, v, 1] * g_unit[img, v, 1] + \
                        unit[img, v, 2] * g_unit[img, v, 2]
                    for k in range(3):
                        g_sum[v, k] = (g_unit[img, v, k] - unit[img, v, k] * d) / norm
                else:
                    for k in range(3):
                        g_sum[v, k] = g_unit[img, v, k] / eps
            for f in range(triangles.shape[0]):
                i0, i1, i2 = triangles[f, 0], triangles[f, 1], triangles[f, 2]
                gx = g_sum[i0, 0] + g_sum[i1, 0] + g_sum[i2, 0]
                gy = g_sum[i0, 1] + g_sum[i1, 1] + g_sum[i2, 1]
                gz = g_sum[i0, 2] + g_sum[i1, 2] + g_sum[i2, 2]
                ax, ay, az, bx, by, bz = _edges(verts, img, i0, i1, i2)
                # n = a x b: dL/da = b x g, dL/db = g x a
                gax, gay, gaz = by * gz - bz * gy, bz * gx - bx * gz, bx * gy - by * gx
                gbx, gby, gbz = gy * az - gz * ay, gz * ax - gx * az, gx * ay - gy * ax
                g_verts[img, i1, 0] += gax
                g_verts[img, i1, 1] += gay
                g_verts[img, i1, 2] += gaz
                g_verts[img, i2, 0] += gbx
                g_verts[img, i2, 1] += gby
                g_verts[img, i2, 2] += gbz
                g_verts[img, i0, 0] -= gax + gbx
                g_verts[img, i0, 1] -= gay + gby
                g_verts[img, i0, 2] -= gaz + gbz

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _sh_forward(normals, gamma, a, out):  # pragma: no cover - compiled
        """normals (B, V, 3), gamma (B, 9, C), a (9,) -> out (B, V, C) = H(n) @ gamma."""
        for img in numba.prange(normals.shape[0]):
            for v in range(normals.shape[1]):
                x, y, z = normals[img, v, 0], normals[img, v, 1], normals[img, v, 2]
                h = _sh_terms(a, x, y, z)
                for c in range(gamma.shape[2]):
                    acc = 0.0
                    for k in range(9):
                        acc += h[k] * gamma[img, k, c]
                    out[img, v, c] = acc

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _sh_backward(normals, gamma, a, g_out, g_normals, g_gamma):  # pragma: no cover - compiled
        for img in numba.prange(normals.shape[0]):
            for v in range(normals.shape[1]):
                x, y, z = normals[img, v, 0], normals[img, v, 1], normals[img, v, 2]
                h = _sh_terms(a, x, y, z)
                s = np.zeros(9)
                for c in range(gamma.shape[2]):
                    g = g_out[img, v, c]
                    for k in range(9):
                        g_gamma[img, k, c] += h[k] * g
                        s[k] += gamma[img, k, c] * g
                g_normals[img, v, 0] = a[3] * s[3] + a[4] * y * s[4] + a[7] * z * s[7] + 2 * a[8] * x * s[8]
                g_normals[img, v, 1] = a[1] * s[1] + a[4] * x * s[4] + a[5] * z * s[5] - 2 * a[8] * y * s[8]
                g_normals[img, v, 2] = a[2] * s[2] + a[5] * y * s[5] + 6 * a[6] * z * s[6] + a[7] * x * s[7]


class _VertexNormals(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, triangles, eps):
        unit = torch.empty_like(verts)
        length = torch.empty(verts.shape[:2], dtype=verts.dtype)
        _match_threads()
        _normals_forward(_np(verts), _np(triangles), unit.numpy(), length.numpy())
        small = length <= eps   # u = s / max(|s|, eps), as the tensor path
        if bool(small.any()):
            unit = torch.where(small[..., None], unit * (length / eps)[..., None], unit)
        ctx.save_for_backward(verts, triangles, unit, length)
        ctx.eps = eps
        return unit

    @staticmethod
    def backward(ctx, g_unit):
        verts, triangles, unit, length = ctx.saved_tensors
        g_verts = torch.zeros_like(verts)
        _match_threads()
        _normals_backward(_np(verts), _np(triangles), _np(unit), _np(length), float(ctx.eps), _np(g_unit),
                          g_verts.numpy())
        return g_verts, None, None


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, V, 3) vertices, (F, 3) counter-clockwise triangles -> (B, V, 3) unit area-weighted normals
    (= ifn.render.shading.vertex_normals), differentiable in the vertices."""
    return _VertexNormals.apply(vertices, triangles.to(torch.int64), eps)


class _SHShading(torch.autograd.Function):
    @staticmethod
    def forward(ctx, normals, gamma):
        out = torch.empty(normals.shape[0], normals.shape[1], gamma.shape[2], dtype=normals.dtype)
        _match_threads()
        _sh_forward(_np(normals), _np(gamma.to(normals.dtype)), SH_A, out.numpy())
        ctx.save_for_backward(normals, gamma)
        return out

    @staticmethod
    def backward(ctx, g_out):
        normals, gamma = ctx.saved_tensors
        g_normals = torch.empty_like(normals)
        g_gamma = torch.zeros(gamma.shape, dtype=normals.dtype)
        _match_threads()
        _sh_backward(_np(normals), _np(gamma.to(normals.dtype)), SH_A, _np(g_out.to(normals.dtype)),
                     g_normals.numpy(), g_gamma.numpy())
        return g_normals, g_gamma.to(gamma.dtype)


def sh_shading(normals: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) unit normals, (B, 9, C) SH coefficients -> (B, V, C) shading (= ifn.render.shading.sh_shading),
    differentiable in both."""
    return _SHShading.apply(normals, gamma)
