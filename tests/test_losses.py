"""Losses: the closed-form model-space loss against the brute-force computation, its properties, the baseline."""
from __future__ import annotations

import math

import pytest
import torch

from ifn.learn.losses import ModelSpaceLoss, ParameterLoss, ReprojectionLoss, brute_force_model_space, shading_gram
from ifn.model.facemodel import FaceModel
from ifn.model.layout import ParamLayout
from ifn.model.reflectance import ReflectanceModel
from ifn.render.camera import Camera
from ifn.render.shading import AMBIENT_WHITE, vertex_normals

F64 = torch.float64
TERMS = ("geometry", "reflectance", "illumination")


def random_params(layout: ParamLayout, batch: int, gen: torch.Generator, dtype=F64) -> torch.Tensor:
    """Shape ~N(0,1), expression in [0,1], reflectance N(0,1), SH around an ambient term, yaw up to +-60 deg
    (pitch +-25, roll +-15), translations of a few cm."""
    def randn(*s):
        return torch.randn(*s, generator=gen, dtype=dtype)

    def rand(*s):
        return torch.rand(*s, generator=gen, dtype=dtype)

    g = layout.zeros(batch, dtype=dtype)
    g["shape"] = randn(batch, layout.n_shape)
    g["expression"] = rand(batch, layout.n_expression)
    g["reflectance"] = randn(batch, layout.n_reflectance)
    light = 0.3 * randn(batch, 9, 3)
    light[:, 0] += 0.8 * AMBIENT_WHITE
    g["illumination"] = light
    limits = torch.tensor([math.radians(60), math.radians(25), math.radians(15)], dtype=dtype)
    g["rotation"] = (2 * rand(batch, 3) - 1) * limits
    g["translation"] = 3 * randn(batch, 3)
    return layout.join(g)


def random_reflectance(n_vertices: int, k: int, gen: torch.Generator) -> ReflectanceModel:
    return ReflectanceModel(0.25 + 0.5 * torch.rand(n_vertices, 3, generator=gen),
                            0.05 * torch.randn(k, n_vertices, 3, generator=gen), torch.ones(k))


def tiny_face_model(gen: torch.Generator, rows: int = 5, cols: int = 6, n_shape: int = 3,
                    n_expression: int = 2) -> FaceModel:
    """A bumpy rows x cols grid (30 vertices) facing +z with random bases."""
    y, x = torch.meshgrid(torch.linspace(-5, 5, rows, dtype=F64), torch.linspace(-6, 6, cols, dtype=F64),
                          indexing="ij")
    z = 2 * torch.cos(0.3 * x) * torch.cos(0.3 * y) + 0.3 * torch.rand(rows, cols, generator=gen, dtype=F64)
    mean = torch.stack([x, y, z], -1).reshape(-1, 3)
    tris = []
    for i in range(rows - 1):
        for j in range(cols - 1):
            a, b, c, d = i * cols + j, i * cols + j + 1, (i + 1) * cols + j, (i + 1) * cols + j + 1
            tris += [(a, b, d), (a, d, c)]
    n = mean.shape[0]
    return FaceModel(mean=mean, shape_basis=0.5 * torch.randn(n_shape, n, 3, generator=gen, dtype=F64),
                     expression_basis=0.5 * torch.randn(n_expression, n, 3, generator=gen, dtype=F64),
                     triangles=torch.tensor(tris), landmarks=torch.full((68,), -1),
                     parts=torch.zeros(n, dtype=torch.int64), part_names=("face",), source_index=torch.arange(n),
                     name="tiny")


@pytest.fixture(scope="module")
def ict_setup(face_model_full):
    gen = torch.Generator().manual_seed(1)
    fm = face_model_full
    refl = random_reflectance(fm.n_vertices, 12, gen)
    # non-uniform weights: random, eyeballs down-weighted, a block of vertices excluded
    w = 0.2 + torch.rand(fm.n_vertices, generator=gen)
    w[fm.part_mask("eyeballs")] *= 0.1
    w[100:600] = 0.0
    return fm, refl, w, gen


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rel: float):
    assert a.shape == b.shape
    err = ((a - b).abs() / b.abs().clamp_min(1e-300)).max()
    assert err <= rel, f"relative error {err:.3g} > {rel:g}: {a} vs {b}"


# ------------------------------------------------------------------------- closed form == brute force (ICT)
@pytest.mark.parametrize("layout_sizes", [(20, 53, 12), (13, 31, 7)])
@pytest.mark.parametrize("gram_given", [False, True])
def test_closed_form_matches_brute_force_ict(ict_setup, layout_sizes, gram_given):
    fm, refl, w, gen = ict_setup
    layout = ParamLayout(*layout_sizes)
    camera = Camera(distance_cm=90.0)
    loss = ModelSpaceLoss(fm, refl, layout, distance_cm=90.0, vertex_weights=w, w_geometry=0.7,
                          w_reflectance=3.0, w_illumination=5.0, dtype=F64)
    pred, target = random_params(layout, 5, gen), random_params(layout, 5, gen)
    gram = loss.target_shading_gram(target) if gram_given else None
    got = loss(pred, target, shading_gram=gram)
    want = brute_force_model_space(pred, target, fm, refl, layout, camera, w, (0.7, 3.0, 5.0))
    for name in TERMS:
        assert got[name].shape == (5,)
        assert (want[name] > 0).all()
        assert_close_rel(got[name], want[name], 1e-6)
    assert_close_rel(got["loss"], want["loss"], 1e-6)
    total = (0.7 * want["geometry"] + 3.0 * want["reflectance"] + 5.0 * want["illumination"]).mean()
    assert_close_rel(got["loss"], total, 1e-6)


def test_shading_gram_helper_from_renderer_normals(ict_setup):
    """The synthesis stage stores shading_gram(renderer normals, weights): it must give the same loss."""
    from ifn.render.renderer import Renderer, RenderSettings

    fm, refl, w, gen = ict_setup
    layout = ParamLayout(20, 53, 12)
    renderer = Renderer(fm.to(dtype=F64), refl.to(dtype=F64), layout, RenderSettings(distance_cm=100.0))
    target = random_params(layout, 3, gen)
    pred = random_params(layout, 3, gen)
    normals = vertex_normals(renderer.posed(target), fm.triangles)
    loss = ModelSpaceLoss(fm, refl, layout, vertex_weights=w, dtype=F64)
    gram = shading_gram(normals, w)
    assert gram.shape == (3, 9, 9)
    assert torch.allclose(gram, gram.transpose(-1, -2))
    assert torch.allclose(gram, loss.target_shading_gram(target), rtol=1e-10, atol=1e-14)
    want = brute_force_model_space(pred, target, fm, refl, layout, Camera(), w)["illumination"]
    assert_close_rel(loss(pred, target, shading_gram=gram)["illumination"], want, 1e-6)


def test_float32_close_to_float64(ict_setup):
    fm, refl, w, gen = ict_setup
    layout = ParamLayout(20, 53, 12)
    pred, target = random_params(layout, 4, gen), random_params(layout, 4, gen)
    loss32 = ModelSpaceLoss(fm, refl, layout, vertex_weights=w)
    got = loss32(pred.float(), target.float())
    want = brute_force_model_space(pred, target, fm, refl, layout, Camera(), w)
    for name in TERMS:
        assert got[name].dtype == torch.float32
        assert_close_rel(got[name].double(), want[name], 1e-4)
    # .to(float64) converts the buffers
    assert loss32.to(F64)(pred, target)["geometry"].dtype == F64


# ---------------------------------------------------------------------------------------- properties
@pytest.fixture(scope="module")
def tiny():
    gen = torch.Generator().manual_seed(2)
    fm = tiny_face_model(gen)
    refl = random_reflectance(fm.n_vertices, 4, gen).to(dtype=F64)
    layout = ParamLayout(fm.n_shape, fm.n_expression, 4)
    w = 0.5 + torch.rand(fm.n_vertices, generator=gen, dtype=F64)
    return fm, refl, layout, w, gen


def test_tiny_matches_brute_force(tiny):
    fm, refl, layout, w, gen = tiny
    loss = ModelSpaceLoss(fm, refl, layout, vertex_weights=w, dtype=F64)
    pred, target = random_params(layout, 6, gen), random_params(layout, 6, gen)
    got, want = loss(pred, target), brute_force_model_space(pred, target, fm, refl, layout, Camera(), w)
    for name in TERMS:
        assert_close_rel(got[name], want[name], 1e-9)


def test_zero_when_equal_and_symmetry(tiny):
    fm, refl, layout, w, gen = tiny
    loss = ModelSpaceLoss(fm, refl, layout, vertex_weights=w, dtype=F64)
    p, q = random_params(layout, 4, gen), random_params(layout, 4, gen)
    same = loss(p, p)
    for name in (*TERMS, "loss"):
        assert torch.all(same[name].abs() < 1e-12), name
    a, b = loss(p, q), loss(q, p)
    assert torch.allclose(a["geometry"], b["geometry"], rtol=1e-12)
    assert torch.allclose(a["reflectance"], b["reflectance"], rtol=1e-12)
    assert (a["geometry"] > 0).all() and (a["reflectance"] > 0).all()
    # illumination is measured on the ground truth's normals: symmetric when both share geometry and pose
    gq = layout.split(q.clone())
    gq_light = layout.split(p.clone())
    gq_light["illumination"] = gq["illumination"]
    q_same_geo = layout.join(gq_light)
    c, d = loss(p, q_same_geo), loss(q_same_geo, p)
    assert torch.allclose(c["illumination"], d["illumination"], rtol=1e-12)
    assert c["geometry"].abs().max() < 1e-12


@pytest.fixture
def one_thread():
    """Tiny ops: with 2 threads each MKL gemm can stall for ~16 ms when another process loads the CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_gradcheck_closed_form(tiny, one_thread):
    fm, refl, layout, w, gen = tiny
    loss = ModelSpaceLoss(fm, refl, layout, vertex_weights=w, dtype=F64)
    pred = random_params(layout, 2, gen).requires_grad_()
    target = random_params(layout, 2, gen)
    gram = loss.target_shading_gram(target)

    def terms(p, gram_given):
        out = loss(p, target, shading_gram=gram if gram_given else None)
        return torch.stack([out[name] for name in TERMS] + [out["loss"].expand(2)])

    assert torch.autograd.gradcheck(lambda p: terms(p, True), (pred,))
    assert torch.autograd.gradcheck(lambda p: terms(p, False), (pred,))
    # and through the target (the gram computed from the ground-truth normals)
    target_g = target.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: torch.stack([loss(pred.detach(), t)[n] for n in TERMS]),
                                    (target_g,), fast_mode=True)
    # the gradient equals the brute force's
    g_closed, = torch.autograd.grad(loss(pred, target)["loss"], pred)
    g_brute, = torch.autograd.grad(
        brute_force_model_space(pred, target, fm, refl, layout, Camera(), w)["loss"], pred)
    assert torch.allclose(g_closed, g_brute, rtol=1e-9, atol=1e-12)


def test_pure_translation_error_is_its_squared_norm(tiny, ict_setup):
    for fm, refl, layout, w, gen in (tiny, (ict_setup[0], ict_setup[1], ParamLayout(20, 53, 12), ict_setup[2],
                                            ict_setup[3])):
        loss = ModelSpaceLoss(fm, refl, layout, vertex_weights=w, dtype=F64)
        target = random_params(layout, 3, gen)
        g = layout.split(target.clone())
        d = torch.tensor([[1.5, -2.0, 0.5], [0.0, 0.0, 3.0], [-0.25, 0.0, 0.0]], dtype=F64)
        g["translation"] = g["translation"] + d
        out = loss(layout.join(g), target)
        assert torch.allclose(out["geometry"], (d * d).sum(-1), rtol=1e-12, atol=1e-12)
        assert torch.all(out["reflectance"] == 0) and torch.all(out["illumination"] == 0)


def test_pure_rotation_error_by_hand(tiny):
    """Target frontal; pred turned by yaw a (about y) or roll b (about z): each vertex moves on a circle,
    |R X - X|^2 = 2 (1 - cos a) (x^2 + z^2) for yaw, 2 (1 - cos b) (x^2 + y^2) for roll. Plus a translation
    added to both (it cancels)."""
    fm, refl, layout, w, gen = tiny
    loss = ModelSpaceLoss(fm, refl, layout, vertex_weights=w, dtype=F64)
    target = random_params(layout, 2, gen)
    g = layout.split(target.clone())
    g["rotation"] = torch.zeros(2, 3, dtype=F64)
    target = layout.join(g)
    x = fm.geometry(g["shape"], g["expression"])                  # (2, V, 3) model space = frontal pose
    wn = w / w.sum()
    a, b = 0.7, -0.4
    pred_g = layout.split(target.clone())
    pred_g["rotation"] = torch.tensor([[a, 0.0, 0.0], [0.0, 0.0, b]], dtype=F64)
    want = torch.stack([
        2 * (1 - math.cos(a)) * ((x[0, :, 0] ** 2 + x[0, :, 2] ** 2) * wn).sum(),
        2 * (1 - math.cos(b)) * ((x[1, :, 0] ** 2 + x[1, :, 1] ** 2) * wn).sum()])
    got = loss(layout.join(pred_g), target)["geometry"]
    assert torch.allclose(got, want, rtol=1e-12)


def test_vertex_weights_select_vertices(tiny):
    """Weights are normalised: a mask of one vertex gives that vertex's squared displacement."""
    fm, refl, layout, w, gen = tiny
    mask = torch.zeros(fm.n_vertices, dtype=torch.bool)
    mask[7] = True
    loss = ModelSpaceLoss(fm, refl, layout, vertex_weights=mask, dtype=F64)
    p, q = random_params(layout, 3, gen), random_params(layout, 3, gen)
    want = brute_force_model_space(p, q, fm, refl, layout, Camera(), mask.double())
    got = loss(p, q)
    for name in TERMS:
        assert_close_rel(got[name], want[name], 1e-9)
    gp, gq = layout.split(p), layout.split(q)
    cam = Camera()
    vp = cam.pose(fm.geometry(gp["shape"], gp["expression"]), gp["rotation"], gp["translation"])[:, 7]
    vq = cam.pose(fm.geometry(gq["shape"], gq["expression"]), gq["rotation"], gq["translation"])[:, 7]
    assert torch.allclose(got["geometry"], (vp - vq).pow(2).sum(-1), rtol=1e-10)
    with pytest.raises(ValueError):
        ModelSpaceLoss(fm, refl, layout, vertex_weights=torch.zeros(fm.n_vertices))
    with pytest.raises(ValueError):
        ModelSpaceLoss(fm, refl, layout, vertex_weights=torch.ones(3))


def test_layout_larger_than_model_is_rejected(tiny):
    fm, refl, layout, w, gen = tiny
    with pytest.raises(ValueError):
        ModelSpaceLoss(fm, refl, ParamLayout(fm.n_shape + 1, fm.n_expression, 4))
    with pytest.raises(ValueError):
        ModelSpaceLoss(fm, refl, ParamLayout(fm.n_shape, fm.n_expression, 5))


# ----------------------------------------------------------------------------------------- baseline
def test_parameter_loss_by_hand():
    layout = ParamLayout(2, 1, 1)   # sizes 2, 1, 1, 27, 3, 3 -> P = 37
    pred = torch.zeros(2, layout.size, dtype=F64)
    target = torch.zeros(2, layout.size, dtype=F64)
    g = layout.split(pred)           # views into pred
    g["shape"][0] = torch.tensor([1.0, 3.0], dtype=F64)       # sample 0: shape diffs 1, 3
    g["expression"][1] = 2.0                                  # sample 1: expression diff 2
    g["illumination"][0, 0, 0] = 6.0                          # sample 0: one of 27 entries, 6
    g["rotation"][1] = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    loss = ParameterLoss(layout, weights={"shape": 2.0, "rotation": 10.0},
                         scales={"illumination": 2.0, "rotation": torch.tensor([0.1, 0.1, 0.3])})
    out = loss(pred, target)
    assert set(out) == {"loss", *layout.names}
    # per group: mean of ((d / s)^2) over the group's entries
    assert torch.allclose(out["shape"], torch.tensor([(1 + 9) / 2, 0.0], dtype=F64))
    assert torch.allclose(out["expression"], torch.tensor([0.0, 4.0], dtype=F64))
    assert torch.allclose(out["illumination"], torch.tensor([9.0 / 27, 0.0], dtype=F64))
    assert torch.allclose(out["rotation"], torch.tensor([0.0, (1 + 4 + 1) / 3], dtype=F64))
    assert torch.all(out["reflectance"] == 0) and torch.all(out["translation"] == 0)
    sample0 = 2.0 * 5.0 + 9.0 / 27
    sample1 = 4.0 + 10.0 * 2.0
    assert out["loss"].item() == pytest.approx((sample0 + sample1) / 2, rel=1e-6)
    # dict input gives the same; unknown groups are rejected
    assert out["loss"].item() == pytest.approx(loss(layout.split(pred), layout.split(target))["loss"].item())
    with pytest.raises(KeyError):
        ParameterLoss(layout, weights={"pose": 1.0})


def test_reprojection_matches_camera_projection_of_landmarks(face_model_full):
    """Brute force: pose the whole mesh with Camera.pose, project with Camera.project (pixels), take the
    landmark vertices; the loss is their mean squared distance in percent of the image side."""
    gen = torch.Generator().manual_seed(5)
    fm = face_model_full.to(dtype=F64)
    layout = ParamLayout(fm.n_shape, fm.n_expression, 3)
    cam = Camera(image_size=200, fov_deg=13.0, distance_cm=100.0)
    loss = ReprojectionLoss(fm, layout, cam.fov_deg, cam.distance_cm, dtype=F64)
    pred, target = random_params(layout, 5, gen), random_params(layout, 5, gen)
    ids = fm.landmarks[fm.landmarks >= 0]
    assert len(ids) == 68

    def pixels(p):
        g = layout.split(p)
        uv, _ = cam.project(cam.pose(fm.geometry(g["shape"], g["expression"]), g["rotation"], g["translation"]))
        return uv[:, ids]

    want = (100.0 * (pixels(pred) - pixels(target)) / cam.image_size).pow(2).sum(-1).mean(-1)
    got = loss(pred, target)
    assert torch.allclose(got, want, rtol=1e-9)
    assert (got > 0).all() and loss(pred, pred).abs().max() < 1e-20
    # a head moved along the viewing ray of its landmarks' centre, scaled with its distance, projects the
    # same for a flat face: here only the translation part -- pushing the head 10 cm deeper shrinks the image
    g = layout.split(target.clone())
    g["translation"] = g["translation"] + torch.tensor([0.0, 0.0, -10.0], dtype=F64)
    assert (loss(layout.join(g), target) > 0).all()


def test_reprojection_gradcheck_and_module_term(tiny, one_thread):
    fm, refl, layout, w, gen = tiny
    fm = FaceModel(**{**{f: getattr(fm, f) for f in ("mean", "shape_basis", "expression_basis", "triangles",
                                                       "parts", "part_names", "source_index", "name")},
                      "landmarks": torch.cat([torch.arange(10), torch.full((58,), -1)])})
    loss = ReprojectionLoss(fm, layout, fov_deg=20.0, dtype=F64)
    pred = random_params(layout, 3, gen).requires_grad_()
    target = random_params(layout, 3, gen)
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,))
    with pytest.raises(ValueError, match="fov_deg"):
        ReprojectionLoss(fm, layout, fov_deg=0.0)
    with pytest.raises(ValueError, match="no landmark"):
        ReprojectionLoss(tiny[0], layout, fov_deg=20.0)
