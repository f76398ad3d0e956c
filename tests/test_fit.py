"""Analysis-by-synthesis refinement (ifn.fit): energy decreases, known parameters are recovered, baseline runs.

Small and fast: 64 px renders of the ICT model (20 identity modes) with a smooth 4-component albedo model built
here (no pipeline outputs needed).
"""
from __future__ import annotations

import math

import pytest
import torch

from ifn.config import FaceModelConfig, PriorConfig, RefineConfig
from ifn.evaluate import rotation_error_deg
from ifn.fit import (GROUPS, face_pivot, fit_from_mean, mean_face_params, refine, robust_penalty, to_pivot)
from ifn.model.facemodel import load_ict
from ifn.model.layout import ParamLayout
from ifn.model.priors import sample_parameters
from ifn.model.reflectance import ReflectanceModel
from ifn.render.color import linear_to_srgb
from ifn.render.renderer import Renderer, RenderSettings
from ifn.render.shading import sh_shading, vertex_normals

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def renderer():
    fm = load_ict(FaceModelConfig(region="face", n_shape=20, n_expression=10))  # 9409 vertices: fast
    p = fm.mean
    x, y = p[:, 0], p[:, 1]
    skin = torch.tensor([0.55, 0.40, 0.33])
    pattern = 1 + 0.15 * torch.sin(x / 2.5)[:, None] * torch.cos(y / 3.0)[:, None]
    mean = (skin * pattern).clamp(0, 1)
    basis = torch.stack([
        0.08 * mean,                                                   # brightness
        0.04 * torch.tensor([1.0, 0.0, 0.0]).expand_as(mean),          # redness
        0.05 * (y / 10)[:, None].expand_as(mean),                      # vertical gradient
        0.05 * (x / 10)[:, None].expand_as(mean),                      # horizontal gradient
    ])
    refl = ReflectanceModel(mean, basis, torch.ones(4) / 4)
    layout = ParamLayout(fm.n_shape, fm.n_expression, 4)
    return Renderer(fm, refl, layout, RenderSettings(image_size=SIZE, fov_deg=13.0, distance_cm=100.0))


def synthetic(renderer, n, seed, yaw_max=35.0):
    g = torch.Generator().manual_seed(seed)
    prior = PriorConfig(yaw_max_deg=yaw_max, harsh_light_prob=0.0, expression_active_prob=0.03, jaw_open_prob=0.0)
    gt = sample_parameters(n, renderer.layout, prior, g, renderer.face_model.expression_names,
                           face_pivot(renderer))
    with torch.no_grad():
        images = linear_to_srgb(renderer(gt, background=0.35).image)
    return gt, images, g


def perturb(renderer, gt, g, rot_deg=4.0, xy_cm=0.5, light=0.2, coeff=0.3, groups=GROUPS):
    n = gt["shape"].shape[0]
    p = {k: v.clone() for k, v in gt.items()}
    if "rotation" in groups:
        p["rotation"] += math.radians(rot_deg) * torch.randn(n, 3, generator=g)
    if "translation" in groups:
        p["translation"][:, :2] += xy_cm * torch.randn(n, 2, generator=g)
    if "illumination" in groups:
        p["illumination"] *= 1 + light * torch.randn(n, 1, 3, generator=g)
    for k in ("shape", "reflectance"):
        if k in groups:
            p[k] += coeff * torch.randn(p[k].shape, generator=g)
    return renderer.layout.join(p)


def photo_mae(renderer, params, images):
    with torch.no_grad():
        out = renderer(renderer.groups(params), background=0.35)
        return (linear_to_srgb(out.image) - images).abs().mean((1, 2, 3))


def test_robust_penalties():
    r = torch.tensor([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.3, 0.4, 0.0]])
    assert torch.allclose(robust_penalty(r, "l2"), torch.tensor([0.0, 0.0025, 0.25]))
    assert torch.allclose(robust_penalty(r, "l1"), torch.tensor([0.0, 0.05, 0.5]), atol=1e-4)
    h = robust_penalty(r, "huber", 0.1)
    assert torch.allclose(h, torch.tensor([0.0, 0.0125, 0.45]), atol=1e-6)
    at = robust_penalty(torch.tensor([[0.1 - 1e-6, 0, 0], [0.1 + 1e-6, 0, 0]]), "huber", 0.1)
    assert abs(at[0] - at[1]) < 1e-5  # continuous at delta
    with pytest.raises(ValueError, match="robust"):
        robust_penalty(r, "cauchy")


def test_energy_decreases(renderer):
    gt, images, g = synthetic(renderer, 2, seed=1)
    init = perturb(renderer, gt, g, rot_deg=5.0, xy_cm=0.7)
    params, hist = refine(renderer, images, init, steps=16, lr=0.04, snapshots=(0, 8, 16))
    e = hist["energy"]
    # Snapshots: the best parameters so far at step k (step 0: the start, the last: what refine returns).
    assert sorted(hist["snapshots"]) == [0, 8, 16]
    assert torch.equal(hist["snapshots"][16], params)
    assert torch.allclose(hist["snapshots"][0], init)
    assert not torch.equal(hist["snapshots"][8], init)
    assert e.shape == (17, 2) and hist["photo"].shape == (17, 2) and hist["step_seconds"].shape == (16,)
    assert (e[-1] < 0.5 * e[0]).all(), e[:, :].T
    assert (e[8] < e[0]).all() and (e[-4:].mean(0) < e[4:8].mean(0)).all()  # monotonic-ish
    assert params.shape == init.shape and torch.isfinite(params).all()
    # return_best: the returned parameters have the lowest energy seen
    assert (hist["energy"].gather(0, hist["best_step"][None]) <= e.min(0).values + 1e-7).all()


@pytest.mark.parametrize("w_translation_prior, anchor", [
    (1e-3, False), (RefineConfig().w_translation_prior, RefineConfig().anchor_translation)])
def test_refine_recovers_perturbed_parameters(renderer, w_translation_prior, anchor):
    """Also with the pipeline's default translation prior (params.yaml refine), which is strong on real photos."""
    gt, images, g = synthetic(renderer, 3, seed=2)
    true = renderer.layout.join(gt)
    init = perturb(renderer, gt, g)
    params, hist = refine(renderer, images, init, steps=30, lr=0.04, w_translation_prior=w_translation_prior,
                          anchor_translation=anchor)
    pg, ig = renderer.groups(params), renderer.groups(init)
    photo0, photo1 = photo_mae(renderer, init, images), photo_mae(renderer, params, images)
    assert (photo1 < 0.5 * photo0).all() and (photo1 / photo0).mean() < 0.35 and photo1.mean() < 0.015, \
        (photo0, photo1)
    rot0 = rotation_error_deg(ig["rotation"], gt["rotation"])
    rot1 = rotation_error_deg(pg["rotation"], gt["rotation"])
    assert rot1.mean() < 0.5 * rot0.mean(), (rot0, rot1)
    pivot = face_pivot(renderer)

    def face_xy_error(groups):  # where the face centre goes (the translation the image pins down)
        return (to_pivot(groups["translation"], groups["rotation"], pivot)
                - to_pivot(gt["translation"], gt["rotation"], pivot))[:, :2].norm(dim=-1)

    assert face_xy_error(pg).mean() < 0.5 * face_xy_error(ig).mean()
    assert ((params - true).abs() < 1e3).all()


def test_refine_at_half_size_recovers_and_same_size_is_the_plain_fit(renderer):
    """refine(fit_size=S/2): optimised on 2x2-averaged photos and half-size renders, judged at full size."""
    gt, images, g = synthetic(renderer, 3, seed=2)
    init = perturb(renderer, gt, g)
    params, _ = refine(renderer, images, init, steps=30, fit_size=SIZE // 2)
    photo0, photo1 = photo_mae(renderer, init, images), photo_mae(renderer, params, images)
    assert (photo1 < 0.5 * photo0).all() and photo1.mean() < 0.02, (photo0, photo1)
    rot0 = rotation_error_deg(renderer.groups(init)["rotation"], gt["rotation"])
    rot1 = rotation_error_deg(renderer.groups(params)["rotation"], gt["rotation"])
    assert rot1.mean() < 0.6 * rot0.mean(), (rot0, rot1)
    plain, _ = refine(renderer, images, init, steps=3)
    assert torch.equal(refine(renderer, images, init, steps=3, fit_size=SIZE)[0], plain)


def test_refine_recovers_illumination(renderer):
    gt, images, g = synthetic(renderer, 2, seed=3)
    init = perturb(renderer, gt, g, light=0.3, groups=("illumination",))
    params, _ = refine(renderer, images, init, steps=15, lr=0.04)

    def shading_error(p):  # on the true, visible geometry: what the photo constrains
        verts = renderer.posed(gt)
        normals = vertex_normals(verts, renderer.face_model.triangles)
        face = renderer.face_model.part_mask("face")
        front = (normals[..., 2] > 0.2) & face
        diff = sh_shading(normals, renderer.groups(p)["illumination"]) - sh_shading(normals, gt["illumination"])
        return torch.stack([diff[i][front[i]].abs().mean() for i in range(len(diff))])

    e0, e1 = shading_error(init), shading_error(params)
    assert (e1 < 0.5 * e0).all(), (e0, e1)


def test_landmark_term_and_expression_bounds(renderer):
    gt, images, g = synthetic(renderer, 2, seed=4)
    with torch.no_grad():
        target = renderer(gt).landmarks
    init = perturb(renderer, gt, g, rot_deg=6.0, xy_cm=1.0)
    init_groups = renderer.groups(init)
    init_groups["expression"][:, :2] = -0.3  # out of range: projected into [0, 1]
    init = renderer.layout.join(init_groups)
    params, hist = refine(renderer, images, init, steps=12, lr=0.04, w_photo=0.0, w_landmark=10.0,
                          landmarks=target, free=("rotation", "translation", "expression"))
    with torch.no_grad():
        before = (renderer(renderer.groups(init)).landmarks - target).norm(dim=-1).mean(1)
        after = (renderer(renderer.groups(params)).landmarks - target).norm(dim=-1).mean(1)
    assert (after < 0.5 * before).all(), (before, after)
    e = renderer.groups(params)["expression"]
    assert e.min() >= 0 and e.max() <= 1
    assert (hist["landmark"][-1] < hist["landmark"][0]).all()
    fixed = renderer.groups(params)["shape"]
    assert torch.equal(fixed, renderer.groups(init)["shape"])  # groups not in `free` stay at init


def test_fit_from_mean_baseline(renderer):
    gt, images, _ = synthetic(renderer, 2, seed=5, yaw_max=15.0)
    init = mean_face_params(renderer, 2)
    ig = renderer.groups(init)
    assert torch.equal(ig["shape"], torch.zeros_like(ig["shape"])) and ig["illumination"][:, 0].min() > 2.8
    params, hist = fit_from_mean(renderer, images, steps=16, coarse_fraction=0.5, lr=0.04, snapshots=(0, 4, 12, 16))
    assert hist["energy"].shape == (17, 2) and hist["coarse_steps"] == 8
    snaps = hist["snapshots"]   # step numbers count across both stages
    assert sorted(snaps) == [0, 4, 12, 16] and torch.allclose(snaps[0], init) and torch.equal(snaps[16], params)
    coarse_only = [n for n in renderer.layout.names if n not in ("illumination", "rotation", "translation")]
    assert all(torch.equal(renderer.groups(snaps[4])[n], ig[n]) for n in coarse_only)  # stage 1: pose + light
    assert not torch.equal(renderer.groups(snaps[12])["shape"], ig["shape"])
    assert (hist["energy"][-1] < 0.6 * hist["energy"][0]).all()
    assert (photo_mae(renderer, params, images) < 0.8 * photo_mae(renderer, init, images)).all()


def test_refine_rejects_bad_input(renderer):
    init = mean_face_params(renderer, 1)
    with pytest.raises(ValueError, match="images must be"):
        refine(renderer, torch.zeros(1, 32, 32, 3), init, steps=1)
    with pytest.raises(ValueError, match="init_params"):
        refine(renderer, torch.zeros(1, SIZE, SIZE, 3), init[:, :5], steps=1)
    with pytest.raises(ValueError, match="adam"):
        refine(renderer, torch.zeros(1, SIZE, SIZE, 3), init, steps=1, optimizer="lbfgs")


def test_translation_prior_anchor(renderer):
    """Anchored, the translation prior is 0 at the start and pulls towards the initial estimate: with a huge
    weight the face centre stays near where the estimate put it (Adam still takes steps of lr x 10 cm around it),
    off-centre; unanchored it is pulled to the centre."""
    gt, images, g = synthetic(renderer, 2, seed=5)
    gt["translation"] = gt["translation"] + torch.tensor([2.0, -1.5, 0.0])   # face centre well off the crop centre
    with torch.no_grad():
        images = linear_to_srgb(renderer(gt, background=0.35).image)
    init = renderer.layout.join(gt)
    pivot = face_pivot(renderer)
    centre = to_pivot(gt["translation"], gt["rotation"], pivot)
    _, hist = refine(renderer, images, init, steps=1, w_translation_prior=1.0, anchor_translation=True)
    assert torch.allclose(hist["translation_prior"][0], torch.zeros(2), atol=1e-9)
    expected = (centre / torch.tensor([3.0, 3.0, 10.0])).pow(2).sum(-1)
    _, hist = refine(renderer, images, init, steps=1, w_translation_prior=1.0, anchor_translation=False)
    assert torch.allclose(hist["translation_prior"][0], expected, rtol=1e-5)
    for anchor in (True, False):
        params, _ = refine(renderer, images, init, steps=10, w_translation_prior=1e4, anchor_translation=anchor,
                           free=("translation",), return_best=False)
        moved = to_pivot(renderer.groups(params)["translation"], gt["rotation"], pivot)
        if anchor:
            assert (moved - centre).norm(dim=-1).max() < 0.25, (moved, centre)
        else:
            assert (moved[:, :2].norm(dim=-1) < 0.5 * centre[:, :2].norm(dim=-1)).all(), (moved, centre)
