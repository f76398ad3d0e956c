"""The compiled CPU kernels (ifn.render.numba_kernels) against the tensor path and float64 gradient checks."""
from __future__ import annotations

import pytest
import torch

from ifn.render import numba_kernels, numba_shading
from ifn.render.raster import RasterSettings, rasterize
from ifn.render.renderer import RenderSettings
from ifn.render.shading import AMBIENT_WHITE, vertex_normals

pytestmark = pytest.mark.skipif(not numba_kernels.available(), reason="numba not installed")


def face_params(layout, n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    groups = layout.zeros(n)
    groups["shape"] = torch.randn(n, layout.n_shape, generator=g)
    groups["expression"] = torch.rand(n, layout.n_expression, generator=g) * 0.3
    groups["illumination"][:, 0] = 0.8 * AMBIENT_WHITE
    groups["illumination"][:, 1:4] = 0.3 * torch.randn(n, 3, 3, generator=g)
    groups["rotation"] = torch.randn(n, 3, generator=g) * torch.tensor([0.8, 0.2, 0.2])
    groups["translation"] = torch.randn(n, 3, generator=g) * 0.5
    return layout.join(groups).to(dtype)


def with_backend(renderer, backend):
    from dataclasses import replace

    from ifn.render.renderer import Renderer

    return Renderer(renderer.face_model, renderer.reflectance, renderer.layout,
                    replace(renderer.settings, backend=backend))


def test_same_triangle_ids_and_images_as_the_tensor_path(constant_albedo_renderer):
    r = constant_albedo_renderer(48)
    p = face_params(r.layout, 6)
    fast, slow = with_backend(r, "numba")(p), with_backend(r, "torch")(p)
    assert torch.equal(fast.pix_to_face, slow.pix_to_face)      # same float32 arithmetic, same tie rule
    assert fast.mask.float().mean() > 0.2
    assert torch.allclose(fast.fragments.bary, slow.fragments.bary, atol=1e-5)
    assert torch.allclose(fast.image, slow.image, atol=1e-5)
    assert torch.allclose(fast.normals, slow.normals, atol=1e-5)
    assert torch.allclose(fast.depth, slow.depth, atol=1e-4)
    assert torch.equal(fast.fragments.visible_vertices(r.face_model.n_vertices),
                       slow.fragments.visible_vertices(r.face_model.n_vertices))


def test_same_gradients_as_the_tensor_path(constant_albedo_renderer):
    r = constant_albedo_renderer(40)
    p0 = face_params(r.layout, 4, seed=1)
    target = torch.rand(4, 40, 40, 3, generator=torch.Generator().manual_seed(2))
    grads = {}
    for backend in ("numba", "torch"):
        p = p0.clone().requires_grad_()
        out = with_backend(r, backend)(p, background=0.3)
        ((out.image - target) ** 2).sum().backward()
        grads[backend] = p.grad
    scale = grads["torch"].abs().max()
    assert scale > 0
    assert torch.allclose(grads["numba"], grads["torch"], atol=1e-4 * scale, rtol=1e-3)


def small_mesh(seed=0, b=2):
    """A bumpy icosphere-like closed mesh: (B, V, 3) float64 vertices, (F, 3) triangles."""
    from ifn.render.primitives import icosphere

    verts, tri = icosphere(1)
    g = torch.Generator().manual_seed(seed)
    v = verts.double()[None].repeat(b, 1, 1)
    v = v * (1 + 0.2 * torch.rand(b, v.shape[1], 1, generator=g, dtype=torch.float64))
    return v, tri.long()


def test_vertex_normals_gradcheck_and_tensor_path():
    v, tri = small_mesh()
    assert torch.allclose(numba_shading.vertex_normals(v, tri), vertex_normals(v, tri), atol=1e-12)
    v.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: numba_shading.vertex_normals(x, tri), (v,), eps=1e-6, atol=1e-6)


def covered_pixels(size=12, seed=0):
    """float64 screen positions/depths of two random triangles per image (B = 2) and their fragments."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.tensor([[2.0, 2.0], [2.0, 10.5], [10.0, 3.0], [4.0, 9.0], [11.0, 11.0], [11.0, 1.5]],
                      dtype=torch.float64)[None].repeat(2, 1, 1)
    xy = xy + torch.rand(xy.shape, generator=g, dtype=torch.float64)
    depth = 5 + 3 * torch.rand(2, 6, generator=g, dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(xy, depth, tri, RasterSettings(size, cull_backfaces=False, backend="numba"))
    assert frags.starts is not None and len(frags.pixel) > 20
    return xy, depth, frags


def test_barycentrics_gradcheck_and_tensor_path():
    xy, depth, frags = covered_pixels()
    slow = rasterize(xy, depth, frags.triangles, RasterSettings(12, cull_backfaces=False, backend="torch"))
    assert torch.equal(frags.pixel, slow.pixel)
    assert torch.allclose(frags.bary, slow.bary, atol=1e-12)
    assert torch.allclose(frags.depth, slow.depth, atol=1e-12)
    size = 12
    rem = frags.pixel % (size * size)
    px, py = (rem % size).double() + 0.5, torch.div(rem, size, rounding_mode="floor").double() + 0.5
    flat_xy, flat_z = xy.reshape(-1, 2).clone().requires_grad_(), depth.reshape(-1).clone().requires_grad_()

    def fn(a, z):
        bary, d = numba_kernels.barycentrics(a, z, frags.corner, px, py, frags.starts)
        return bary, d

    assert torch.autograd.gradcheck(fn, (flat_xy, flat_z), eps=1e-6, atol=1e-7)


def test_interpolate_gradcheck_and_tensor_path():
    xy, depth, frags = covered_pixels(seed=3)
    g = torch.Generator().manual_seed(4)
    attr = torch.rand(2, 6, 3, generator=g, dtype=torch.float64)
    slow = rasterize(xy, depth, frags.triangles, RasterSettings(12, cull_backfaces=False, backend="torch"))
    assert torch.allclose(frags.interpolate(attr, 0.5), slow.interpolate(attr, 0.5), atol=1e-12)
    a = attr.reshape(-1, 3).clone().requires_grad_()
    bary = frags.bary.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: numba_kernels.interpolate(x, frags.corner, w, frags.starts),
                                    (a, bary), eps=1e-6, atol=1e-7)


def test_whole_render_gradcheck_float64(constant_albedo_renderer):
    """Parameters -> image through every compiled kernel, float64 finite differences (coverage fixed: the
    steps are far too small to move a silhouette)."""
    r = constant_albedo_renderer(16).to(dtype=torch.float64)
    r = with_backend(r, "numba")
    p = face_params(r.layout, 1, seed=5, dtype=torch.float64)
    free = [r.layout.slices["rotation"], r.layout.slices["illumination"]]
    idx = torch.cat([torch.arange(s.start, s.stop) for s in free])

    def fn(x):
        q = p.clone()
        q[:, idx] = x
        return r(q).image

    assert torch.autograd.gradcheck(fn, (p[:, idx].clone().requires_grad_(),), eps=1e-7, atol=1e-5, rtol=1e-3)


def test_backend_choices():
    with pytest.raises(ValueError, match="backend"):
        RasterSettings(16, backend="opengl")
    assert RenderSettings(backend="torch").raster.backend == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        from ifn.render.raster import uses_numba

        uses_numba("numba", torch.device("meta"))


def test_sh_shading_gradcheck_and_tensor_path():
    from ifn.render.shading import sh_shading

    v, tri = small_mesh(seed=2)
    normals = vertex_normals(v, tri)
    gamma = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.allclose(numba_shading.sh_shading(normals, gamma), sh_shading(normals, gamma), atol=1e-12)
    n = normals.clone().requires_grad_()
    g = gamma.clone().requires_grad_()
    assert torch.autograd.gradcheck(numba_shading.sh_shading, (n, g), eps=1e-6, atol=1e-7)
