"""The renderer's hot loops as compiled CPU kernels (numba), image-parallel, each with its closed-form backward.

1. Visibility (`nearest_triangle`): the z-buffer of `ifn.render.raster._nearest_triangle`. Per image, each
   triangle is set up (culling, near test, pixel box, plane equations: the arithmetic of `_triangle_setup`)
   and its box's pixel centres are tested right away, so nothing of size (triangle, pixel pairs,) is ever
   allocated (the tensor path enumerates those pairs as tensors and reduces them with one scatter). Same
   float32 arithmetic in the same order and the same tie rule (nearer depth, then the lower triangle id):
   both paths return the same triangle ids (tests/test_render.py).
2. `barycentrics`: perspective-correct barycentrics and depth of the covered pixel centres from the screen
   positions and depths of their triangle's corners (differentiable: torch.autograd.Function).
3. `interpolate`: per-vertex attributes -> per-pixel values with those barycentrics (differentiable).
(Vertex normals and SH shading: ifn.render.numba_shading.)

Images run in parallel threads (numba `prange`). A backward pass accumulates into the rows of one image's
own vertices per thread: no races, no atomics. Kernels compile per dtype (float32 in the pipeline, float64
for the gradient checks of tests/test_render_kernels.py); `cache=True` keeps the machine code on disk
(__pycache__), so only a process on a fresh checkout pays the ~10 s of compilation.
"""
from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # pragma: no cover - numba is pinned in requirements.txt; the tensor path still works
    numba = None

EPS = np.float32(1e-5)  # = ifn.render.raster._EPS (inside-test tolerance, barycentric units)


def available() -> bool:
    """Whether numba imports (then CPU rasterization uses this module with render.backend auto)."""
    return numba is not None


if numba is not None:
    @numba.njit(parallel=True, cache=True, nogil=True)
    def _zbuffer(xy, depth, triangles, size, cull, near, out):  # pragma: no cover - compiled; tested via rasterize
        """xy (B, V, 2) float32 pixels, depth (B, V) float32 cm, triangles (F, 3) int64; cull: bool, near:
        float32 cm. out (B, size * size) int64 is filled with the nearest triangle id per pixel, -1 for none.

        Per image and triangle: the setup of `_triangle_setup` (orientation / area test, near test, pixel box,
        barycentric and inverse-depth planes), then the inside test at every pixel centre of the box."""
        n_images = xy.shape[0]
        n_faces = triangles.shape[0]
        half = np.float32(0.5)
        one = np.float32(1.0)
        tiny = np.float32(1e-12)
        for b in numba.prange(n_images):
            zbuf = np.full(size * size, np.inf, dtype=np.float32)
            best = out[b]
            best[:] = -1
            for f in range(n_faces):
                i0, i1, i2 = triangles[f, 0], triangles[f, 1], triangles[f, 2]
                x0, y0, z0 = xy[b, i0, 0], xy[b, i0, 1], depth[b, i0]
                x1, y1, z1 = xy[b, i1, 0], xy[b, i1, 1], depth[b, i1]
                x2, y2, z2 = xy[b, i2, 0], xy[b, i2, 1], depth[b, i2]
                area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                if cull:
                    if not area2 < -tiny:
                        continue
                elif not abs(area2) > tiny:
                    continue
                if not min(z0, z1, z2) > near:
                    continue
                c0 = max(np.ceil(min(x0, x1, x2) - half), np.float32(0.0))
                c1 = min(np.floor(max(x0, x1, x2) - half), np.float32(size - 1))
                r0 = max(np.ceil(min(y0, y1, y2) - half), np.float32(0.0))
                r1 = min(np.floor(max(y0, y1, y2) - half), np.float32(size - 1))
                if c1 < c0 or r1 < r0:
                    continue
                inv_area = one / area2
                p0, p1, p2 = (y1 - y2) * inv_area, (x2 - x1) * inv_area, (x1 * y2 - x2 * y1) * inv_area
                p3, p4, p5 = (y2 - y0) * inv_area, (x0 - x2) * inv_area, (x2 * y0 - x0 * y2) * inv_area
                iz2 = one / z2
                d0, d1 = one / z0 - iz2, one / z1 - iz2
                p6 = p0 * d0 + p3 * d1
                p7 = p1 * d0 + p4 * d1
                p8 = p2 * d0 + p5 * d1 + iz2
                for row in range(int(r0), int(r1) + 1):
                    py = np.float32(row) + half
                    for col in range(int(c0), int(c1) + 1):
                        px = np.float32(col) + half
                        b0 = p0 * px + p1 * py + p2
                        b1 = p3 * px + p4 * py + p5
                        inv_z = p6 * px + p7 * py + p8
                        if b0 >= -EPS and b1 >= -EPS and b0 + b1 <= one + EPS and inv_z > 0:
                            z = one / inv_z
                            k = row * size + col
                            if z < zbuf[k] or (z == zbuf[k] and f < best[k]):
                                zbuf[k] = z
                                best[k] = f


@torch.no_grad()
def nearest_triangle(xy: torch.Tensor, depth: torch.Tensor, triangles: torch.Tensor, settings) -> torch.Tensor:
    """(B, H*W) int64 nearest triangle id per pixel (-1 for none), CPU tensors only; arguments as
    `ifn.render.raster._nearest_triangle`."""
    if numba is None:
        raise RuntimeError("render.backend numba needs the numba package (pip install -r requirements.txt)")
    size = settings.image_size
    out = np.empty((xy.shape[0], size * size), dtype=np.int64)
    _match_threads()
    _zbuffer(xy.detach().float().contiguous().numpy(), depth.detach().float().contiguous().numpy(),
             triangles.to(torch.int64).contiguous().numpy(), size, bool(settings.cull_backfaces),
             np.float32(settings.near), out)
    return torch.from_numpy(out)


def image_starts(batch: torch.Tensor, n_images: int) -> np.ndarray:
    """(N,) sorted image index of each covered pixel -> (B + 1,) int64 offsets: image b owns [s[b], s[b+1])."""
    out = np.zeros(n_images + 1, dtype=np.int64)
    out[1:] = np.cumsum(np.bincount(batch.numpy(), minlength=n_images))
    return out


if numba is not None:
    @numba.njit(inline="always", cache=True)
    def _screen_weights(x0, y0, x1, y1, x2, y2, px, py):  # pragma: no cover - compiled
        """Twice the signed area and the screen-space barycentrics w0, w1 of pixel centre (px, py)."""
        area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area2
        w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area2
        return area2, w0, w1

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _bary_forward(xy, z, corner, px, py, bary, depth):  # pragma: no cover - compiled
        """xy (B*V, 2), z (B*V,), corner (N, 3) flat vertex ids, px, py (N,) -> bary (N, 3), depth (N,)."""
        for n in numba.prange(corner.shape[0]):
            a, b, c = corner[n, 0], corner[n, 1], corner[n, 2]
            x0, y0, x1, y1, x2, y2 = xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], xy[c, 0], xy[c, 1]
            _, w0, w1 = _screen_weights(x0, y0, x1, y1, x2, y2, px[n], py[n])
            q0, q1, q2 = w0 / z[a], w1 / z[b], (1.0 - w0 - w1) / z[c]
            s = q0 + q1 + q2
            bary[n, 0], bary[n, 1], bary[n, 2] = q0 / s, q1 / s, q2 / s
            depth[n] = 1.0 / s

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _bary_backward(xy, z, corner, px, py, starts, bary, depth, g_bary, g_depth, g_xy, g_z):  # pragma: no cover
        """Adds dL/dxy (B*V, 2) and dL/dz (B*V,) from dL/dbary (N, 3) and dL/ddepth (N,)."""
        for img in numba.prange(starts.shape[0] - 1):
            for n in range(starts[img], starts[img + 1]):
                a, b, c = corner[n, 0], corner[n, 1], corner[n, 2]
                x0, y0, x1, y1, x2, y2 = xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], xy[c, 0], xy[c, 1]
                za, zb, zc = z[a], z[b], z[c]
                dx0, dy0, dx1, dy1, dx2, dy2 = x0 - px[n], y0 - py[n], x1 - px[n], y1 - py[n], x2 - px[n], y2 - py[n]
                area2, w0, w1 = _screen_weights(x0, y0, x1, y1, x2, y2, px[n], py[n])
                w2 = 1.0 - w0 - w1
                s = 1.0 / depth[n]
                # bary_i = q_i / s, depth = 1 / s, s = sum q: dL/dq_j = (g_j - g . bary) / s - g_depth / s^2
                dot = g_bary[n, 0] * bary[n, 0] + g_bary[n, 1] * bary[n, 1] + g_bary[n, 2] * bary[n, 2]
                common = -dot / s - g_depth[n] / (s * s)
                gq0, gq1, gq2 = g_bary[n, 0] / s + common, g_bary[n, 1] / s + common, g_bary[n, 2] / s + common
                # q_i = w_i / z_i
                g_z[a] -= gq0 * w0 / (za * za)
                g_z[b] -= gq1 * w1 / (zb * zb)
                g_z[c] -= gq2 * w2 / (zc * zc)
                gw2 = gq2 / zc
                G0, G1 = gq0 / za - gw2, gq1 / zb - gw2  # w2 = 1 - w0 - w1
                # w0 = n0 / A, w1 = n1 / A
                gn0, gn1 = G0 / area2, G1 / area2
                gA = -(G0 * w0 + G1 * w1) / area2
                # n0 = dx1 dy2 - dx2 dy1, n1 = dx2 dy0 - dx0 dy2, A = (x1 - x0)(y2 - y0) - (x2 - x0)(y1 - y0)
                g_xy[a, 0] += -gn1 * dy2 + gA * (y1 - y2)
                g_xy[a, 1] += gn1 * dx2 + gA * (x2 - x1)
                g_xy[b, 0] += gn0 * dy2 + gA * (y2 - y0)
                g_xy[b, 1] += -gn0 * dx2 - gA * (x2 - x0)
                g_xy[c, 0] += -gn0 * dy1 + gn1 * dy0 - gA * (y1 - y0)
                g_xy[c, 1] += gn0 * dx1 - gn1 * dx0 + gA * (x1 - x0)

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _interp_forward(attr, corner, bary, out):  # pragma: no cover - compiled
        """attr (B*V, C), corner (N, 3), bary (N, 3) -> out (N, C)."""
        for n in numba.prange(corner.shape[0]):
            a, b, c = corner[n, 0], corner[n, 1], corner[n, 2]
            for k in range(attr.shape[1]):
                out[n, k] = attr[a, k] * bary[n, 0] + attr[b, k] * bary[n, 1] + attr[c, k] * bary[n, 2]

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _interp_backward(attr, corner, bary, starts, g_out, g_attr, g_bary):  # pragma: no cover - compiled
        for img in numba.prange(starts.shape[0] - 1):
            for n in range(starts[img], starts[img + 1]):
                for i in range(3):
                    v = corner[n, i]
                    acc = 0.0
                    for k in range(attr.shape[1]):
                        g_attr[v, k] += g_out[n, k] * bary[n, i]
                        acc += g_out[n, k] * attr[v, k]
                    g_bary[n, i] = acc


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _match_threads() -> None:
    """Run the kernels on as many threads as torch is allowed (torch.set_num_threads), within numba's pool."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


class _Barycentrics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xy, z, corner, px, py, starts):
        bary = torch.empty(corner.shape[0], 3, dtype=xy.dtype)
        depth = torch.empty(corner.shape[0], dtype=xy.dtype)
        _match_threads()
        _bary_forward(_np(xy), _np(z), _np(corner), _np(px), _np(py), bary.numpy(), depth.numpy())
        ctx.save_for_backward(xy, z, corner, px, py, bary, depth)
        ctx.starts = starts
        return bary, depth

    @staticmethod
    def backward(ctx, g_bary, g_depth):
        xy, z, corner, px, py, bary, depth = ctx.saved_tensors
        g_xy, g_z = torch.zeros_like(xy), torch.zeros_like(z)
        g_bary = torch.zeros_like(bary) if g_bary is None else g_bary
        g_depth = torch.zeros_like(depth) if g_depth is None else g_depth
        _match_threads()
        _bary_backward(_np(xy), _np(z), _np(corner), _np(px), _np(py), ctx.starts, _np(bary), _np(depth),
                       _np(g_bary.to(xy.dtype)), _np(g_depth.to(xy.dtype)), g_xy.numpy(), g_z.numpy())
        return g_xy, g_z, None, None, None, None


def barycentrics(xy: torch.Tensor, z: torch.Tensor, corner: torch.Tensor, px: torch.Tensor, py: torch.Tensor,
                 starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """xy (B*V, 2) pixels, z (B*V,) cm, corner (N, 3) flat vertex ids (image-major), px, py (N,) pixel
    centres, starts from `image_starts` -> (bary (N, 3) perspective-correct, depth (N,) cm), differentiable
    in xy and z."""
    return _Barycentrics.apply(xy, z, corner, px.to(xy.dtype), py.to(xy.dtype), starts)


class _Interpolate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, corner, bary, starts):
        out = torch.empty(corner.shape[0], attr.shape[1], dtype=attr.dtype)
        _match_threads()
        _interp_forward(_np(attr), _np(corner), _np(bary.to(attr.dtype)), out.numpy())
        ctx.save_for_backward(attr, corner, bary)
        ctx.starts = starts
        return out

    @staticmethod
    def backward(ctx, g_out):
        attr, corner, bary = ctx.saved_tensors
        g_attr = torch.zeros_like(attr)
        g_bary = torch.empty(bary.shape, dtype=attr.dtype)
        _match_threads()
        _interp_backward(_np(attr), _np(corner), _np(bary.to(attr.dtype)), ctx.starts, _np(g_out.to(attr.dtype)),
                         g_attr.numpy(), g_bary.numpy())
        return g_attr, None, g_bary.to(bary.dtype), None


def interpolate(attr: torch.Tensor, corner: torch.Tensor, bary: torch.Tensor, starts: np.ndarray) -> torch.Tensor:
    """attr (B*V, C), corner (N, 3) flat vertex ids (image-major), bary (N, 3) -> (N, C), differentiable in
    attr and bary."""
    return _Interpolate.apply(attr, corner, bary, starts)
