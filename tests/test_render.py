"""Maths of image formation: camera, SH shading, rasterizer, renderer."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ifn.model.facemodel import FaceModel
from ifn.model.layout import ParamLayout
from ifn.model.reflectance import ReflectanceModel
from ifn.render.camera import Camera, euler_to_matrix, matrix_to_euler
from ifn.render.primitives import icosphere
from ifn.render.raster import RasterSettings, rasterize
from ifn.render.renderer import Renderer, RenderSettings, render_mesh
from ifn.render.shading import (AMBIENT_WHITE, directional_light_sh, sh_basis, sh_shading, vertex_normals)

GOLDEN = Path(__file__).parent / "golden"


def closed_form_directional(cos_theta: torch.Tensor, intensity: float = 1.0) -> torch.Tensor:
    """Shading (irradiance / pi) of a 3-band SH-projected point light, by the addition theorem:
    E(n) = I sum_l A_l (2l + 1) / (4 pi) P_l(n . d)."""
    c = cos_theta
    p = (torch.ones_like(c), c, 0.5 * (3 * c * c - 1))
    a = (math.pi, 2 * math.pi / 3, math.pi / 4)
    return intensity * sum(a[l] * (2 * l + 1) / (4 * math.pi) * p[l] for l in range(3)) / math.pi


# ----------------------------------------------------------------------------------------------- camera
def test_euler_roundtrip_and_orthonormal():
    torch.manual_seed(0)
    angles = (torch.rand(100, 3, dtype=torch.float64) - 0.5) * torch.tensor([3.0, 2.5, 3.0], dtype=torch.float64)
    r = euler_to_matrix(angles)
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    assert torch.allclose(r @ r.transpose(-1, -2), eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(100, dtype=torch.float64))
    assert torch.allclose(matrix_to_euler(r), angles, atol=1e-9)


def test_yaw_turns_face_towards_plus_x():
    nose = torch.tensor([[0.0, 0.0, 1.0]])
    r = euler_to_matrix(torch.tensor([0.3, 0.0, 0.0]))
    assert (r @ nose.T)[0, 0] > 0.29


def test_projection_of_known_points():
    cam = Camera(image_size=100, fov_deg=90.0, distance_cm=50.0)
    assert cam.focal_px == pytest.approx(50.0)
    pts = torch.tensor([[[0.0, 0.0, -50.0], [50.0, 0.0, -50.0], [0.0, 25.0, -50.0]]])
    xy, depth = cam.project(pts)
    assert torch.allclose(xy, torch.tensor([[[50.0, 50.0], [100.0, 50.0], [50.0, 25.0]]]))
    assert torch.allclose(depth, torch.full((1, 3), 50.0))


# ---------------------------------------------------------------------------------------------- shading
def test_sh_basis_is_orthonormal_on_the_sphere():
    # Fibonacci sphere quadrature: mean over uniform directions of Y_i Y_j * 4 pi = delta_ij.
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = torch.sqrt(1 - z * z)
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)
    y = sh_basis(dirs)
    gram = 4 * math.pi * y.T @ y / n
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=2e-3)


def test_sh_shading_matches_closed_form_directional_light():
    torch.manual_seed(1)
    d = torch.nn.functional.normalize(torch.randn(3, dtype=torch.float64), dim=0)
    n = torch.nn.functional.normalize(torch.randn(1, 500, 3, dtype=torch.float64), dim=-1)
    gamma = directional_light_sh(d, 2.0)[:, None].expand(9, 3)[None]
    got = sh_shading(n, gamma)
    want = closed_form_directional(n[0] @ d, 2.0)
    for c in range(3):
        assert torch.allclose(got[0, :, c], want, atol=1e-12)


def test_uniform_white_light_gives_unit_shading():
    n = torch.nn.functional.normalize(torch.randn(1, 50, 3, dtype=torch.float64), dim=-1)
    gamma = torch.zeros(1, 9, 3, dtype=torch.float64)
    gamma[:, 0] = AMBIENT_WHITE
    assert torch.allclose(sh_shading(n, gamma), torch.ones(1, 50, 3, dtype=torch.float64))


def test_vertex_normals_of_sphere_are_radial():
    v, f = icosphere(3)
    n = vertex_normals(v[None], f)[0]
    assert (n * v).sum(-1).min() > 0.999


# ------------------------------------------------------------------------------------------- rasterizer
def reference_rasterize(xy, depth, tri, size, cull=True):
    """Brute force in float64: every pixel centre against every triangle. Returns face ids, barycentrics,
    depth, and a mask of pixels whose centre lies within 1e-6 of an edge (ambiguous ties)."""
    face = -np.ones((size, size), dtype=np.int64)
    bary = np.zeros((size, size, 3))
    zbuf = np.full((size, size), np.inf)
    ambiguous = np.zeros((size, size), dtype=bool)
    for i in range(size):
        for j in range(size):
            px, py = j + 0.5, i + 0.5
            for t, (a, b, c) in enumerate(tri):
                (x0, y0), (x1, y1), (x2, y2) = xy[a], xy[b], xy[c]
                area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                if abs(area) < 1e-12 or (cull and area >= 0):
                    continue
                w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
                w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
                w2 = 1 - w0 - w1
                w = np.array([w0, w1, w2])
                if w.min() < -1e-6:
                    continue
                if w.min() < 1e-6:
                    ambiguous[i, j] = True
                persp = w / depth[[a, b, c]]
                z = 1 / persp.sum()
                if z < zbuf[i, j]:
                    zbuf[i, j], face[i, j], bary[i, j] = z, t, persp * z
    return face, bary, zbuf, ambiguous


def random_scene(seed, n_tri=8, size=16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(n_tri, 1, 2, generator=g, dtype=torch.float64) * size
    xy = (centres + (torch.rand(n_tri, 3, 2, generator=g, dtype=torch.float64) - 0.5) * size * 0.8)
    xy = xy.reshape(-1, 2)
    depth = 5 + 5 * torch.rand(n_tri * 3, generator=g, dtype=torch.float64)
    tri = torch.arange(n_tri * 3).reshape(n_tri, 3)
    x = xy[tri]
    area = (x[:, 1, 0] - x[:, 0, 0]) * (x[:, 2, 1] - x[:, 0, 1]) - (x[:, 2, 0] - x[:, 0, 0]) * (x[:, 1, 1] - x[:, 0, 1])
    flip = (area > 0) == (torch.arange(n_tri) % 2 == 0)  # alternate front- and back-facing triangles
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return xy, depth, tri


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cull", [True, False])
@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_rasterizer_matches_brute_force(seed, cull, backend):
    size = 16
    xy, depth, tri = random_scene(seed, size=size)
    frags = rasterize(xy[None], depth[None], tri, RasterSettings(size, cull_backfaces=cull, near=0.1,
                                                                 backend=backend))
    face, bary, zbuf, amb = reference_rasterize(xy.numpy(), depth.numpy(), tri.numpy(), size, cull)
    got = frags.pix_to_face[0].numpy()
    clear = ~amb
    assert (got[clear] == face[clear]).all()
    assert (face >= 0).sum() > 5  # the scene is not empty
    covered = torch.zeros(size * size, 3, dtype=torch.float64).index_put((frags.pixel,), frags.bary)
    covered = covered.reshape(size, size, 3).numpy()
    ok = clear & (face >= 0)
    assert np.allclose(covered[ok], bary[ok], atol=1e-9)
    assert np.allclose(frags.depth_image()[0].numpy()[ok], zbuf[ok], atol=1e-9)


def test_rasterizer_large_triangle_and_clipping_to_image():
    # One triangle much larger than the image: every pixel centre inside is covered.
    xy = torch.tensor([[[-50.0, -50.0], [-50.0, 100.0], [100.0, -50.0]]], dtype=torch.float64)
    depth = torch.full((1, 3), 3.0, dtype=torch.float64)
    frags = rasterize(xy, depth, torch.tensor([[0, 1, 2]]), RasterSettings(20, cull_backfaces=False))
    ii, jj = torch.meshgrid(torch.arange(20) + 0.5, torch.arange(20) + 0.5, indexing="ij")
    assert torch.equal(frags.mask[0], (ii + jj) <= 50)


def test_near_plane_and_empty_batch():
    xy, depth, tri = random_scene(0)
    frags = rasterize(xy[None], torch.full_like(depth, 0.5)[None], tri, RasterSettings(16, near=1.0))
    assert not frags.mask.any() and frags.pixel.numel() == 0


def test_batch_of_8_equals_batch_of_1():
    scenes = [random_scene(s) for s in range(8)]
    xy = torch.stack([s[0] for s in scenes]).float()
    depth = torch.stack([s[1] for s in scenes]).float()
    colors = torch.rand(8, xy.shape[1], 3)
    tri = scenes[0][2]
    settings = RasterSettings(16, cull_backfaces=False)
    batched = rasterize(xy, depth, tri, settings).interpolate(colors)
    for i in range(8):
        single = rasterize(xy[i:i + 1], depth[i:i + 1], tri, settings).interpolate(colors[i:i + 1])
        assert torch.equal(batched[i], single[0])


def test_interpolation_gradients_float64():
    size = 12
    xy, depth, tri = random_scene(3, n_tri=4, size=size)
    colors = torch.rand(1, xy.shape[0], 2, dtype=torch.float64)
    settings = RasterSettings(size, cull_backfaces=False, near=0.1)

    def image(xy_, depth_, colors_):
        return rasterize(xy_, depth_, tri, settings).interpolate(colors_)

    inputs = (xy[None].clone().requires_grad_(), depth[None].clone().requires_grad_(), colors.requires_grad_())
    assert torch.autograd.gradcheck(image, inputs, eps=1e-7, atol=1e-5)


# ---------------------------------------------------------------------------------------------- renderer
def sphere_render(size=64, subdivisions=4, direction=(0.3, 0.5, 1.0)):
    v, f = icosphere(subdivisions)
    cam = Camera(size, fov_deg=30.0, distance_cm=100.0)
    radius = 15.0
    verts = (v * radius + torch.tensor([0.0, 0.0, -100.0], dtype=torch.float64))[None]
    d = torch.nn.functional.normalize(torch.tensor(direction, dtype=torch.float64), dim=0)
    gamma = directional_light_sh(d)[None, :, None].expand(1, 9, 3)
    colors = sh_shading(vertex_normals(verts, f), gamma)
    return render_mesh(verts, f, colors, cam, RasterSettings(size)), cam, radius, d


def test_sphere_under_directional_light_matches_closed_form():
    out, cam, radius, d = sphere_render()
    size = cam.image_size
    # Exact normal at each pixel: intersect the pixel's ray with the true sphere.
    ii, jj = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5,
                            torch.arange(size, dtype=torch.float64) + 0.5, indexing="ij")
    ray = torch.stack([(jj - size / 2) / cam.focal_px, -(ii - size / 2) / cam.focal_px,
                       -torch.ones_like(ii)], -1)
    ray = ray / ray.norm(dim=-1, keepdim=True)
    centre = torch.tensor([0.0, 0.0, -100.0], dtype=torch.float64)
    b = (ray * centre).sum(-1)
    disc = b * b - (centre @ centre - radius ** 2)
    hit = disc > 0
    t = b - torch.sqrt(disc.clamp(min=0))
    normal = (ray * t[..., None] - centre) / radius
    want = closed_form_directional(normal @ d)
    inner = hit & (disc > 0.05 * radius ** 2)  # away from the silhouette, where facets differ from the sphere
    got = out.image[0, ..., 0]
    assert out.mask[0][inner].all()
    err = (got - want)[inner].abs()
    assert err.mean() < 3e-3 and err.max() < 2e-2, (err.mean(), err.max())
    # The silhouette agrees with the true sphere except within a pixel of it.
    assert (out.mask[0] != hit).sum() < 0.05 * hit.sum()


def test_golden_sphere_image():
    out, *_ = sphere_render(size=32, subdivisions=3)
    golden = np.load(GOLDEN / "sphere32.npy")
    assert np.abs(out.image[0].float().numpy() - golden).max() < 1e-4


def tiny_face_model(dtype=torch.float64):
    v, f = icosphere(1, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    n = v.shape[0]
    fm = FaceModel(mean=v * 10, shape_basis=torch.randn(3, n, 3, generator=g, dtype=dtype) * 0.3,
                   expression_basis=torch.randn(2, n, 3, generator=g, dtype=dtype) * 0.3, triangles=f,
                   landmarks=torch.full((68,), -1, dtype=torch.int64), parts=torch.zeros(n, dtype=torch.int64),
                   part_names=("face",), source_index=torch.arange(n))
    refl = ReflectanceModel(torch.full((n, 3), 0.5, dtype=dtype),
                            torch.randn(2, n, 3, generator=g, dtype=dtype) * 0.05, torch.ones(2))
    return fm, refl


def test_renderer_gradients_wrt_all_parameters_float64():
    fm, refl = tiny_face_model()
    layout = ParamLayout(3, 2, 2)
    renderer = Renderer(fm, refl, layout, RenderSettings(image_size=16, fov_deg=20.0, distance_cm=60.0,
                                                         clamp_albedo=False))
    g = layout.zeros(1, dtype=torch.float64)
    g["illumination"][0, 0] = AMBIENT_WHITE * 0.7
    g["illumination"][0, 3] = 0.8
    base = layout.join(g)
    torch.manual_seed(0)
    params = (base + 0.05 * torch.randn_like(base)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: renderer(p).image, (params,), eps=1e-6, atol=1e-5)


def test_renderer_image_is_albedo_times_shading_and_landmarks_project(face_model_full):
    fm = face_model_full
    n = fm.n_vertices
    refl = ReflectanceModel(torch.full((n, 3), 0.5), torch.zeros(1, n, 3), torch.ones(1))
    layout = ParamLayout(10, 5, 1)
    renderer = Renderer(fm, refl, layout, RenderSettings(image_size=64))
    g = layout.zeros(1)
    g["illumination"][0, 0] = AMBIENT_WHITE
    out = renderer(layout.join(g))
    face = out.mask[0]
    assert torch.allclose(out.image[0][face], torch.full_like(out.image[0][face], 0.5), atol=1e-5)
    assert 0.2 < face.float().mean() < 0.9
    lm = out.landmarks[0]
    assert torch.isfinite(lm).all()
    ij = lm.round().long().clamp(0, 63)
    assert face[ij[:, 1], ij[:, 0]].float().mean() > 0.9  # landmarks fall on the rendered face
    assert abs(lm[30, 0].item() - 32) < 1.0  # nose tip on the vertical midline when frontal


def test_compiled_visibility_pass_equals_eager():
    scenes = [random_scene(s, n_tri=12, size=24) for s in range(3)]
    xy = torch.stack([s[0] for s in scenes]).float()
    depth = torch.stack([s[1] for s in scenes]).float()
    tri = scenes[0][2]
    eager = rasterize(xy, depth, tri, RasterSettings(24, cull_backfaces=False, backend="torch"))
    compiled = rasterize(xy, depth, tri, RasterSettings(24, cull_backfaces=False, compile=True, backend="torch"))
    assert torch.equal(eager.pix_to_face, compiled.pix_to_face)
    assert torch.equal(eager.bary, compiled.bary)
