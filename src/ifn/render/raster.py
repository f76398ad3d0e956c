"""A batched z-buffer triangle rasterizer in plain PyTorch (CPU or CUDA).

Two steps, as in nvdiffrast:
1. `rasterize` finds, for every pixel centre, the nearest covering triangle. This step is discrete and runs
   without gradients. Every (triangle, pixel) pair inside the triangle's pixel bounding box is enumerated
   exactly (no padding), tested with precomputed edge functions, and the nearest one per pixel is found with
   a single `scatter_reduce(amin)` over int64 keys (depth bits << 32 | triangle id): positive float32 depths
   order like their bit patterns, so one reduction gives both the depth test and a deterministic tie-break.
2. `Fragments.interpolate` recomputes perspective-correct barycentrics of the covered pixels from the
   (differentiable) screen positions and depths, and interpolates vertex attributes. Gradients flow to vertex
   positions through the barycentrics and to the attributes themselves; coverage changes (silhouette edges)
   have no gradient, as in any rasterizer without antialiasing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from . import numba_kernels

_NO_HIT = torch.iinfo(torch.int64).max
BACKENDS = ("auto", "numba", "torch")


@dataclass(frozen=True)
class RasterSettings:
    """How triangles become pixels.

    image_size      output is image_size x image_size pixels
    cull_backfaces  drop triangles whose screen projection is clockwise (seen from behind); triangles are
                    counter-clockwise seen from outside
    near            triangles with a corner closer than this (cm, camera depth) are dropped
    compile         run the tensor path's visibility pass through torch.compile (the first call in a process
                    compiles for ~30-50 s, later processes reuse inductor's on-disk cache)
    backend         visibility pass: "auto" (the compiled loop of ifn.render.numba_kernels for CPU tensors
                    when numba imports, else the tensor path), "numba" (always that loop; CPU only) or
                    "torch" (the tensor path below, any device). Both give the same triangle ids.
    """

    image_size: int = 128
    cull_backfaces: bool = True
    near: float = 1.0
    compile: bool = False
    backend: str = "auto"

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"raster backend must be one of {BACKENDS}, got {self.backend!r}")


@dataclass
class Fragments:
    """Result of `rasterize` for a batch of B images of H x W pixels.

    pix_to_face  (B, H, W) int64 triangle id of the nearest triangle, -1 for background
    pixel        (N,) int64 flat index b * H * W + i * W + j of each covered pixel
    face         (N,) int64 triangle id at each covered pixel
    bary         (N, 3) perspective-correct barycentric coordinates (differentiable)
    depth        (N,) camera depth in cm at each covered pixel (differentiable)
    triangles    (F, 3) int64 the mesh's triangles
    corner       (N, 3) int64 flat vertex ids b * V + v of each covered pixel's triangle corners
    starts       (B + 1,) int64 numpy offsets of each image's pixels in `pixel` where the compiled kernels
                 interpolate (ifn.render.numba_kernels), None for the tensor path
    """

    pix_to_face: torch.Tensor
    pixel: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    triangles: torch.Tensor
    corner: torch.Tensor
    starts: np.ndarray | None = None

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: covered pixels."""
        return self.pix_to_face >= 0

    def scatter(self, values: torch.Tensor, background: float | torch.Tensor = 0.0) -> torch.Tensor:
        """(N, C) per-covered-pixel values -> (B, H, W, C) image, `background` elsewhere."""
        b, h, w = self.pix_to_face.shape
        out = values.new_zeros(b * h * w, values.shape[-1])
        if not isinstance(background, torch.Tensor) or background.ndim == 0:
            out = out + background
        else:
            out = out + background.to(values).reshape(b * h * w, -1)
        out = out.index_put((self.pixel,), values)
        return out.reshape(b, h, w, values.shape[-1])

    def interpolate(self, attributes: torch.Tensor, background: float | torch.Tensor = 0.0,
                    bary_grad: bool = True) -> torch.Tensor:
        """(B, V, C) per-vertex attributes -> (B, H, W, C) perspective-correct per-pixel values. `bary_grad`
        False: gradients flow to the attributes only (the barycentrics taken as constants)."""
        b, v, c = attributes.shape
        flat = attributes.reshape(b * v, c)
        bary = self.bary if bary_grad else self.bary.detach()
        if self.starts is not None:   # fragments of the compiled kernels
            return self.scatter(numba_kernels.interpolate(flat, self.corner, bary, self.starts), background)
        values = sum(flat.index_select(0, self.corner[:, i]) * bary[:, i:i + 1].to(flat.dtype)
                     for i in range(3))
        return self.scatter(values, background)

    def depth_image(self, background: float = 0.0) -> torch.Tensor:
        """(B, H, W) camera depth in cm, `background` where nothing is drawn."""
        return self.scatter(self.depth[:, None], background)[..., 0]

    def visible_vertices(self, n_vertices: int) -> torch.Tensor:
        """(B, V) bool: vertices that are a corner of a triangle seen at some pixel."""
        b = self.pix_to_face.shape[0]
        seen = torch.zeros(b * n_vertices, dtype=torch.bool, device=self.face.device)
        seen[self.corner.reshape(-1)] = True
        return seen.reshape(b, n_vertices)


def _triangle_setup(xy: torch.Tensor, depth: torch.Tensor, triangles: torch.Tensor, settings: RasterSettings):
    """Candidate triangles' ids, plane equations (T, 9) and pixel boxes (T, 4: col0, row0, width, height).

    Ids are flat in face-major order, f * B + b. Candidates are front-facing (when culling), non-degenerate
    and in front of the near plane; a box of width or height 0 holds no pixel centre. Corners are gathered
    from a (V, 3, B) layout (whole contiguous rows per vertex: the fastest gather on CPU); everything after
    the orientation test runs on the surviving triangles only.
    """
    b, v, _ = xy.shape
    size = settings.image_size
    rows = torch.stack([xy[..., 0], xy[..., 1], depth], 1).permute(2, 1, 0).contiguous()  # (V, 3, B)
    (x0, y0, _), (x1, y1, _), (x2, y2, _) = (
        rows.index_select(0, triangles[:, i]).unbind(1) for i in range(3))  # each (F, B)
    # Twice the signed area in (u right, v down) pixels: counter-clockwise in the y-up world is negative here.
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    keep = (area2 < -1e-12) if settings.cull_backfaces else (area2.abs() > 1e-12)
    idx = keep.reshape(-1).nonzero().squeeze(1)
    area2 = area2.reshape(-1).index_select(0, idx)
    # Corners of the kept triangles straight from `rows` (flat index (vertex * 3 + coordinate) * B + b).
    face = torch.div(idx, b, rounding_mode="floor")
    batch = idx - face * b
    flat = rows.reshape(-1)
    corner = [triangles[:, i].index_select(0, face) * (3 * b) + batch for i in range(3)]
    x0, y0, z0, x1, y1, z1, x2, y2, z2 = (
        flat.index_select(0, corner[i] + k * b) for i in range(3) for k in range(3))
    # Pixel (i, j) has its centre at (j + 0.5, i + 0.5): covered columns are ceil(min - .5) .. floor(max - .5).
    col0 = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2) - 0.5).clamp_(min=0)
    col1 = torch.floor(torch.maximum(torch.maximum(x0, x1), x2) - 0.5).clamp_(max=size - 1)
    row0 = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2) - 0.5).clamp_(min=0)
    row1 = torch.floor(torch.maximum(torch.maximum(y0, y1), y2) - 0.5).clamp_(max=size - 1)
    near = torch.minimum(torch.minimum(z0, z1), z2) > settings.near
    width = ((col1 - col0 + 1) * near).clamp_(min=0)
    height = ((row1 - row0 + 1) * near).clamp_(min=0)
    box = torch.stack([col0, row0, width, height], -1).long()
    inv_area = 1.0 / area2
    # Barycentric b_i(px, py) = a_i px + b_i py + c_i: the edge function opposite corner i over the area.
    e0 = ((y1 - y2) * inv_area, (x2 - x1) * inv_area, (x1 * y2 - x2 * y1) * inv_area)
    e1 = ((y2 - y0) * inv_area, (x0 - x2) * inv_area, (x2 * y0 - x0 * y2) * inv_area)
    # 1 / depth is affine in screen space: 1/z = sum_i b_i / z_i, with b_2 = 1 - b_0 - b_1.
    iz2 = 1.0 / z2
    d0, d1 = 1.0 / z0 - iz2, 1.0 / z1 - iz2
    plane = torch.stack([
        *e0, *e1,
        e0[0] * d0 + e1[0] * d1, e0[1] * d0 + e1[1] * d1, e0[2] * d0 + e1[2] * d1 + iz2,
    ], -1)
    return idx, plane, box


_SMALL = 4  # boxes up to 4 x 4 pixels are tested as dense blocks per (width, height) class
_EPS = 1e-5  # inside-test tolerance (barycentric units): pixel centres on a shared edge never fall in a crack


def _test_pixels(plane, col, row):
    """Inside test and inverse depth at pixel centres. plane (T, 9); col, row broadcastable int pixel ids."""
    px = col.float() + 0.5
    py = row.float() + 0.5
    p = plane.unsqueeze(-1) if col.ndim == 2 else plane
    b0 = p[:, 0] * px + p[:, 1] * py + p[:, 2]
    b1 = p[:, 3] * px + p[:, 4] * py + p[:, 5]
    inv_z = p[:, 6] * px + p[:, 7] * py + p[:, 8]
    return (b0 >= -_EPS) & (b1 >= -_EPS) & (b0 + b1 <= 1 + _EPS) & (inv_z > 0), inv_z


@torch.no_grad()
def _nearest_triangle(xy, depth, triangles, settings: RasterSettings) -> torch.Tensor:
    """(B, H*W) int64 nearest triangle id per pixel (-1 for none)."""
    b = xy.shape[0]
    size = settings.image_size
    device = xy.device
    idx, plane, box = _triangle_setup(xy.float(), depth.float(), triangles, settings)
    zbuf = torch.full((b * size * size,), _NO_HIT, dtype=torch.int64, device=device)
    if not int((box[:, 2] * box[:, 3]).sum()):
        return zbuf.reshape(b, -1).fill_(-1)
    # Most triangles cover a box of a few pixels: group them by box (width, height) and test each group as a
    # dense (T_k, width * height) block, with no per-pixel gathers. Larger boxes are enumerated exactly.
    w, h = box[:, 2], box[:, 3]
    small = (w <= _SMALL) & (h <= _SMALL)
    cls = torch.where(small, (w - 1) * _SMALL + (h - 1), torch.full_like(w, _SMALL * _SMALL))
    cls = torch.where((w == 0) | (h == 0), torch.full_like(w, -1), cls)  # empty boxes sort first, skipped
    order = torch.argsort(cls)
    counts = torch.bincount(cls + 1, minlength=_SMALL * _SMALL + 2).tolist()
    idx, plane, box = idx[order], plane[order], box[order]
    hits_tri, hits_col, hits_row, hits_invz = [], [], [], []
    start = counts[0]
    for k, n in enumerate(counts[1:]):
        if n == 0:
            continue
        sl = slice(start, start + n)
        start += n
        if k < _SMALL * _SMALL:
            bw, bh = k // _SMALL + 1, k % _SMALL + 1
            dy, dx = torch.meshgrid(torch.arange(bh, device=device), torch.arange(bw, device=device),
                                    indexing="ij")
            col = box[sl, 0:1] + dx.reshape(1, -1)
            row = box[sl, 1:2] + dy.reshape(1, -1)
            inside, inv_z = _test_pixels(plane[sl], col, row)
            t, slot = inside.nonzero(as_tuple=True)
            hits_tri.append(t + sl.start)
            hits_col.append(col[t, slot])
            hits_row.append(row[t, slot])
            hits_invz.append(inv_z[t, slot])
        else:  # enumerate every pixel of every large box, exactly
            bx = box[sl]
            count = bx[:, 2] * bx[:, 3]
            tri = torch.repeat_interleave(torch.arange(n, device=device), count)
            first = torch.cumsum(count, 0) - count
            tb = bx.index_select(0, tri)
            local = torch.arange(tri.numel(), device=device) - first.index_select(0, tri)
            drow = torch.div(local, tb[:, 2], rounding_mode="floor")
            col = tb[:, 0] + local - drow * tb[:, 2]
            row = tb[:, 1] + drow
            inside, inv_z = _test_pixels(plane[sl].index_select(0, tri), col, row)
            sel = inside.nonzero().squeeze(1)
            hits_tri.append(tri[sel] + sl.start)
            hits_col.append(col[sel])
            hits_row.append(row[sel])
            hits_invz.append(inv_z[sel])
    t_flat = idx.index_select(0, torch.cat(hits_tri))
    face = torch.div(t_flat, b, rounding_mode="floor")
    batch = t_flat - face * b
    pixel = batch * (size * size) + torch.cat(hits_row) * size + torch.cat(hits_col)
    zbits = (1.0 / torch.cat(hits_invz)).view(torch.int32).to(torch.int64)
    zbuf.scatter_reduce_(0, pixel, (zbits << 32) | face, reduce="amin", include_self=True)
    hit = zbuf != _NO_HIT
    return torch.where(hit, zbuf & 0xFFFFFFFF, torch.full_like(zbuf, -1)).reshape(b, size * size)


_COMPILED = None


def _compiled_nearest_triangle():
    global _COMPILED
    if _COMPILED is None:
        # The per-class loop needs Python ints (graph breaks by design): keep dynamo's notes out of the logs.
        logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
        _COMPILED = torch.compile(_nearest_triangle, dynamic=True)
    return _COMPILED


def uses_numba(backend: str, device: torch.device) -> bool:
    """Whether render backend `backend` runs the compiled kernels of ifn.render.numba_kernels for tensors on
    `device` (else the tensor path)."""
    if backend == "numba":
        if device.type != "cpu":
            raise ValueError(f"render backend numba runs on the CPU only (tensors on {device}): use auto or torch")
        return True
    return backend == "auto" and device.type == "cpu" and numba_kernels.available()


def rasterize(xy: torch.Tensor, depth: torch.Tensor, triangles: torch.Tensor,
              settings: RasterSettings) -> Fragments:
    """Rasterize a batch of meshes sharing one triangle list.

    xy         (B, V, 2) screen positions in pixels (u right, v down), float32 or float64
    depth      (B, V) camera depth in cm (positive in front of the camera)
    triangles  (F, 3) int64 vertex ids, counter-clockwise seen from outside
    """
    b, v, _ = xy.shape
    size = settings.image_size
    triangles = triangles.to(device=xy.device, dtype=torch.int64)
    fast = uses_numba(settings.backend, xy.device)
    if fast:
        nearest = numba_kernels.nearest_triangle(xy, depth, triangles, settings)
    else:
        visibility = _compiled_nearest_triangle() if settings.compile else _nearest_triangle
        nearest = visibility(xy.detach(), depth.detach(), triangles, settings)
    pixel = (nearest.reshape(-1) >= 0).nonzero().squeeze(1)
    face = nearest.reshape(-1)[pixel]
    batch = torch.div(pixel, size * size, rounding_mode="floor")
    rem = pixel - batch * size * size
    py = torch.div(rem, size, rounding_mode="floor").to(xy.dtype) + 0.5
    px = (rem % size).to(xy.dtype) + 0.5
    corner = triangles.index_select(0, face) + (batch * v)[:, None]  # (N, 3) flat vertex ids
    if fast:
        starts = numba_kernels.image_starts(batch, b)
        bary, pixel_depth = numba_kernels.barycentrics(xy.reshape(b * v, 2), depth.reshape(b * v), corner, px, py,
                                                       starts)
        return Fragments(nearest.reshape(b, size, size), pixel, face, bary, pixel_depth, triangles, corner, starts)
    # Differentiable barycentrics at the pixel centres (1-D index_select gathers: the cheapest on CPU, and
    # their backward is one index_add each).
    xs, ys, zs = xy[..., 0].reshape(-1), xy[..., 1].reshape(-1), depth.reshape(-1)
    x0, x1, x2 = (xs.index_select(0, corner[:, i]) for i in range(3))
    y0, y1, y2 = (ys.index_select(0, corner[:, i]) for i in range(3))
    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area2
    w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area2
    w2 = 1.0 - w0 - w1
    p0, p1, p2 = (w / zs.index_select(0, corner[:, i]) for i, w in enumerate((w0, w1, w2)))
    inv_depth = p0 + p1 + p2
    bary = torch.stack([p0, p1, p2], -1) / inv_depth[:, None]
    return Fragments(nearest.reshape(b, size, size), pixel, face, bary, 1.0 / inv_depth, triangles, corner)
