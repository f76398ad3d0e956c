"""The face detector (ifn.detect), its correspondence to the face model, and detector-guided refinement
(ifn.landmark_fit): the landmark term's maths, recovery on renders with known parameters, no-face behaviour."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifn import detect
from ifn.fit import landmark_term, posed_subset
from ifn.landmark_fit import LandmarkFitSettings, fit_with_landmarks, model_vertices, visible_weights
from ifn.render.color import linear_to_srgb
from ifn.render.shading import AMBIENT_WHITE

pytestmark = pytest.mark.usefixtures("one_thread")
needs_detector = pytest.mark.skipif(not detect.available(), reason="mediapipe is not installed")


@pytest.fixture(scope="module")
def renderer256(face_model_full, small_reflectance_path):
    from ifn.model.layout import ParamLayout
    from ifn.model.reflectance import ReflectanceModel
    from ifn.render.renderer import Renderer, RenderSettings

    refl = ReflectanceModel.load(small_reflectance_path)
    layout = ParamLayout(face_model_full.n_shape, face_model_full.n_expression, refl.n_components)
    return Renderer(face_model_full, refl, layout, RenderSettings(image_size=256))


def _groups(renderer, yaws_deg, seed=0):
    g = renderer.layout.zeros(len(yaws_deg))
    gen = torch.Generator().manual_seed(seed)
    g["shape"] = 0.7 * torch.randn(g["shape"].shape, generator=gen)
    g["illumination"][:, 0, :] = AMBIENT_WHITE * 0.8
    g["illumination"][:, 2, :] = 0.8
    g["rotation"][:, 0] = torch.tensor([math.radians(y) for y in yaws_deg])
    return g


def _render(renderer, groups):
    with torch.no_grad():
        out = renderer(groups, background=0.25)
    return (linear_to_srgb(out.image) * 255).round().to(torch.uint8).numpy(), out


def test_tables_are_consistent():
    w = detect.mp68_weights()
    assert w.shape == (68, detect.N_MESH)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-4)          # affine combinations: move with the face
    corr = detect.correspondence()
    assert corr["source_vertices"].shape == (detect.N_MESH,) and (corr["source_vertices"] >= 0).all()
    assert corr["contour"].sum() == 36                               # MediaPipe's face oval


def test_roi_box_is_the_enlarged_square():
    pts = np.array([[10.0, 20.0], [30.0, 60.0]]).repeat(34, 0)
    box = detect.roi_box(pts)
    side = 40 * math.sqrt(2)
    np.testing.assert_allclose(box, [20 - side / 2, 40 - side / 2, 20 + side / 2, 40 + side / 2])


def test_model_vertices_follow_the_region(face_model_full):
    corr = detect.correspondence()
    ids = model_vertices(face_model_full, corr).numpy()
    ok = ids >= 0
    assert ok.all()   # every source vertex lies in the face part, which the full region keeps
    np.testing.assert_array_equal(face_model_full.source_index.numpy()[ids[ok]], corr["source_vertices"][ok])


def test_posed_subset_equals_the_whole_mesh(renderer256):
    g = _groups(renderer256, [0.0, 35.0], seed=3)
    g["expression"][:, 5] = 0.6
    g["translation"] = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -4.0]])
    ids = torch.tensor([0, 17, 4000, 9000])
    torch.testing.assert_close(posed_subset(renderer256, g, ids), renderer256.posed(g)[:, ids])


def test_landmark_term_value_and_gradient(renderer256):
    """Closed form on a hand-made case, and a float64 gradient check against the vertices."""
    v = torch.zeros(1, 3, 3, dtype=torch.float64)
    v[..., 2] = -100.0
    xy, _ = renderer256.camera.project(v)
    targets = xy.clone()
    targets[0, 0, 0] += 2.56   # 1 % of the side
    targets[0, 1, 1] = float("nan")   # unknown: ignored
    w = torch.tensor([1.0, 5.0, 3.0], dtype=torch.float64)
    val = landmark_term(renderer256, v, targets, torch.arange(3), w)
    torch.testing.assert_close(val, torch.tensor([1e-4 * 1.0 / (1.0 + 3.0)], dtype=torch.float64))
    x = (torch.randn(2, 5, 3, dtype=torch.float64) + torch.tensor([0.0, 0.0, -100.0], dtype=torch.float64))
    x.requires_grad_(True)
    tgt = torch.rand(2, 4, 2, dtype=torch.float64) * 256
    ids = torch.tensor([4, 0, -1, 2])
    wt = torch.rand(2, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: landmark_term(renderer256, p, tgt, ids, wt), (x,))


def test_visible_weights_drop_points_that_face_away(renderer256):
    corr = detect.correspondence()
    ids = model_vertices(renderer256.face_model, corr)
    contour = torch.from_numpy(corr["contour"])
    g = _groups(renderer256, [0.0, 80.0])
    w = visible_weights(renderer256, renderer256.layout.join(g), ids, contour, 0.5, 0.1)
    assert set(w[0].unique().tolist()) <= {0.0, 0.5, 1.0}
    assert (w[0] > 0).sum() > 400            # frontal: nearly every point counts
    assert (w[1] > 0).sum() < (w[0] > 0).sum() - 50   # profile: the far side drops out


@needs_detector
def test_correspondence_on_rendered_faces(renderer256):
    """On renders of the model the detector's points land near the projections of their model vertices, and
    its 68 landmarks near the model's landmark vertices (face box ~150 px: tolerances ~2-3 % of it)."""
    images, out = _render(renderer256, _groups(renderer256, [0.0, 20.0, -20.0]))
    corr = detect.correspondence()
    ids = model_vertices(renderer256.face_model, corr)
    with detect.FaceDetector(0.5) as det:
        for i in range(len(images)):
            faces = det(images[i])
            assert len(faces) == 1 and faces[0].score > 0.8
            f = faces[0]
            xy, _ = renderer256.camera.project(out.vertices[i:i + 1, ids])
            err = np.linalg.norm(xy[0].numpy() - f.points, axis=1)
            assert np.median(err[~corr["contour"]]) < 3.0
            assert np.median(err[corr["contour"]]) < 8.0
            e68 = np.linalg.norm(out.landmarks[i].numpy() - f.landmarks68, axis=1)
            assert np.median(e68) < 4.0
            x0, y0, x1, y1 = f.box
            assert x0 < f.landmarks68[:, 0].min() and x1 > f.landmarks68[:, 0].max()


@needs_detector
def test_no_face_is_an_empty_result():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:300, 0:400]
    landscape = np.stack([xx * 0.3 + 60, 150 - yy * 0.2 + 0 * xx, 200 - yy * 0.5], -1).clip(0, 255).astype(np.uint8)
    with detect.FaceDetector() as det:
        assert det(noise) == []
        assert det(landscape) == []
        with pytest.raises(ValueError, match="uint8"):
            det(noise.astype(np.float32))


def test_missing_detector_is_a_clear_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("mediapipe"):
            raise ImportError("No module named 'mediapipe'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    assert not detect.available()
    with pytest.raises(detect.DetectorUnavailable, match="pip install mediapipe==0.10.14"):
        detect.FaceDetector()


def _exact_targets(renderer, g):
    """Frame groups `g` like a crop (the face centre, not the head's origin, at the image centre, as ifn.synth
    does) -> (true params, exact projections (B, 468, 2) of the correspondence vertices, their ids, the
    correspondence)."""
    from ifn.fit import face_pivot, to_pivot

    g["translation"] = -(to_pivot(g["translation"], g["rotation"], face_pivot(renderer)) * torch.tensor([1, 1, 0]))
    true = renderer.layout.join(g)
    corr = detect.correspondence()
    ids = model_vertices(renderer.face_model, corr)
    with torch.no_grad():
        xy, _ = renderer.camera.project(renderer.posed(true)[:, ids])
    return true, xy, ids, corr


def test_fit_with_landmarks_recovers_pose_from_the_mean_face(renderer256):
    """Targets = exact projections of the correspondence vertices of a known face (yaw 35 deg, identity,
    expression): the landmark-only stage from the mean face recovers the rotation to ~1 deg and the 68
    landmarks to < 1 % of the image side."""
    from ifn.fit import mean_face_params

    g = _groups(renderer256, [35.0, -15.0], seed=1)
    g["rotation"][:, 1] = torch.tensor([0.12, -0.08])
    g["expression"][:, renderer256.face_model.expression_names.index("jawOpen")] = torch.tensor([0.5, 0.0])
    true, xy, ids, corr = _exact_targets(renderer256, g)
    init = mean_face_params(renderer256, 2)
    images = torch.zeros(2, 256, 256, 3)
    fit, hist = fit_with_landmarks(renderer256, images, init, xy, ids, torch.from_numpy(corr["contour"]),
                                   LandmarkFitSettings(coarse_steps=150, steps=0, w_contour=1.0),
                                   w_shape_prior=1e-5, w_expression_prior=1e-5)
    assert hist["fine"] is None and hist["coarse"]["landmark"][-1].max() < hist["coarse"]["landmark"][0].min()
    rot_err = (renderer256.layout.split(fit)["rotation"] - g["rotation"]).abs().max()
    assert math.degrees(float(rot_err)) < 2.0
    with torch.no_grad():
        lm_fit = renderer256.landmarks(renderer256.posed(fit))
        lm_true = renderer256.landmarks(renderer256.posed(true))
    assert (lm_fit - lm_true).norm(dim=-1).mean() < 0.01 * 256


def test_breeding_estimate_anchors_detected_photos(renderer256):
    """ifn.breed.estimate with detector targets: photos with a face get the detector-guided fit (their
    landmarks move to the targets), a photo without one (NaN row) gets plain refinement (0 steps: unchanged)."""
    from ifn.breed import estimate
    from ifn.config import RefineConfig
    from ifn.fit import mean_face_params

    _, xy, _, _ = _exact_targets(renderer256, _groups(renderer256, [30.0, 0.0], seed=2))
    targets = xy.double().numpy()
    targets[1] = np.nan
    start = mean_face_params(renderer256, 1)[0]

    class MeanNet(torch.nn.Module):
        def forward(self, x):
            return start.expand(x.shape[0], -1).clone()

    crops = np.zeros((2, 256, 256, 3), np.uint8)
    est = estimate(renderer256, MeanNet(), crops, RefineConfig(batch_size=4), 0, targets=targets,
                   landmark_settings=LandmarkFitSettings(coarse_steps=100, steps=0), log=lambda *_: None)
    assert est["guided"].tolist() == [True, False]
    torch.testing.assert_close(est["refined"][1], start)
    rot = renderer256.layout.split(est["refined"])["rotation"]
    assert abs(math.degrees(float(rot[0, 0])) - 30.0) < 3.0


def test_fit_detected_keeps_turned_starts(renderer256):
    """`max_yaw_deg`: a start turned further than it keeps its start exactly (not fitted, guided False) even with
    a detection; a start within it is fitted towards its targets."""
    from ifn.fit import mean_face_params
    from ifn.landmark_fit import fit_detected

    _, xy, _, _ = _exact_targets(renderer256, _groups(renderer256, [20.0, 20.0], seed=3))
    init = mean_face_params(renderer256, 2)
    init[1, renderer256.layout["rotation"]] = torch.tensor([math.radians(-50.0), 0.0, 0.0])
    crops = np.zeros((2, 256, 256, 3), np.uint8)
    settings = LandmarkFitSettings(coarse_steps=60, steps=0, max_yaw_deg=45.0)
    out, guided = fit_detected(renderer256, crops, init, xy.double().numpy(), settings, 4,
                               w_shape_prior=1e-5, w_expression_prior=1e-5)
    assert guided.tolist() == [True, False]
    torch.testing.assert_close(out[1], init[1])
    assert not torch.equal(out[0], init[0])
    out90, guided90 = fit_detected(renderer256, crops, init, xy.double().numpy(),
                                   LandmarkFitSettings(coarse_steps=60, steps=0), 4)
    assert guided90.tolist() == [True, True] and not torch.equal(out90[1], init[1])
