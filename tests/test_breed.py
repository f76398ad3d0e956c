"""Breeding rounds (ifn.breed) and the real-image evaluation helpers (ifn.evaluate_real, ifn.evaluate.photo_errors).

The whole round (photos -> refine -> render -> fine-tune) runs end to end in tests/test_smoke.py (dvc repro on
smoke.yaml); here: the pieces, the round chaining, and closed-form checks of the real-image metrics.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ifn.breed import ConcatSamples, MixedSampler, perturb, round_seed, sample_photos
from ifn.config import ParamsError, PerturbConfig, load_params
from ifn.evaluate import face_triangles, photo_errors
from ifn.evaluate_real import benchmark_subset, guided_networks, variant_networks
from ifn.model.layout import ParamLayout
from ifn.paths import project_root

ROOT = project_root()


# -- perturbation ---------------------------------------------------------------------------------------------
def test_perturb_keeps_first_copy_and_has_the_configured_spread():
    layout = ParamLayout(6, 5, 4)
    g0 = torch.Generator().manual_seed(0)
    base = torch.randn(1, layout.size, generator=g0)
    base[:, layout["expression"]] = 0.5
    cfg = PerturbConfig(shape=0.3, expression=0.1, reflectance=0.2, illumination=0.15, rotation_deg=5.0,
                        translation_cm=0.5)
    n = 4000
    out = perturb(base, layout, cfg, n, torch.Generator().manual_seed(1))
    assert out.shape == (n, layout.size)
    assert torch.equal(out[0], base[0])                       # variant 0 is the estimate itself
    d = layout.split(out[1:] - base)
    assert d["shape"].std().item() == pytest.approx(0.3, rel=0.05)
    assert d["reflectance"].std().item() == pytest.approx(0.2, rel=0.05)
    assert d["expression"].std().item() == pytest.approx(0.1, rel=0.05)   # 5 std from the bounds: no clamping
    assert torch.rad2deg(d["rotation"]).std().item() == pytest.approx(5.0, rel=0.05)
    assert d["translation"].std().item() == pytest.approx(0.5, rel=0.05)
    rel = layout.split(out[1:])["illumination"] / layout.split(base)["illumination"] - 1
    assert rel.std().item() == pytest.approx(0.15, rel=0.05)
    # Expression stays a valid blendshape weight; same generator seed -> same samples.
    wide = perturb(base, layout, PerturbConfig(expression=1.0), 50, torch.Generator().manual_seed(2))
    e = layout.split(wide)["expression"]
    assert e.min() >= 0 and e.max() <= 1 and (e == 0).any() and (e == 1).any()
    again = perturb(base, layout, cfg, n, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_perturb_repeats_each_estimate_consecutively():
    layout = ParamLayout(2, 2, 2)
    base = torch.arange(3 * layout.size, dtype=torch.float32).reshape(3, layout.size)
    out = perturb(base, layout, PerturbConfig(shape=0, expression=0, reflectance=0, illumination=0,
                                              rotation_deg=0, translation_cm=0), 2, torch.Generator())
    expected = base.repeat_interleave(2, 0)
    expected[:, layout["expression"]] = expected[:, layout["expression"]].clamp(0, 1)
    expected[::2] = base                                      # the first copy is not even clamped
    assert torch.equal(out, expected)


# -- mixing ---------------------------------------------------------------------------------------------------
def test_mixed_sampler_fraction_determinism_and_replicas():
    s = MixedSampler(n_base=1000, n_pool=100, epoch_size=512, mix_fraction=0.25, seed=3)
    s.set_epoch(0)
    a = [i for i, _ in s]
    assert len(a) == 512
    pool = [i for i in a if i >= 1000]
    assert len(pool) == 128                                   # round(0.25 * 512) from the pool
    assert set(range(1000, 1100)) <= set(pool)                # 128 > 100: every pool sample at least once
    assert len(set(i for i in a if i < 1000)) == 384          # base drawn without replacement
    assert [i for i, _ in s] == a                             # a pure function of (seed, epoch)
    s.set_epoch(1)
    assert [i for i, _ in s] != a and all(e == 1 for _, e in s)
    # Two replicas partition the padded order.
    r0 = MixedSampler(1000, 100, 512, 0.25, 3, num_replicas=2, rank=0)
    r1 = MixedSampler(1000, 100, 512, 0.25, 3, num_replicas=2, rank=1)
    both = [i for i, _ in r0] + [i for i, _ in r1]
    assert sorted(both) == sorted(a)
    # No pool yet: everything from the base.
    assert all(i < 1000 for i, _ in MixedSampler(1000, 0, 64, 0.5, 0))


def test_concat_samples_maps_indices_to_parts():
    class Part:
        def __init__(self, tag, n):
            self.tag, self.n = tag, n

        def __len__(self):
            return self.n

        def __getitem__(self, key):
            i, epoch = key
            return {"tag": self.tag, "local": i, "epoch": epoch, "index": i}

    ds = ConcatSamples([Part("base", 5), Part("r1", 3), Part("r2", 2)])
    assert len(ds) == 10
    assert ds[(0, 7)] == {"tag": "base", "local": 0, "epoch": 7, "index": 0}
    assert ds[(5, 1)]["tag"] == "r1" and ds[(5, 1)]["local"] == 0 and ds[(5, 1)]["index"] == 5
    assert ds[(9, 0)]["tag"] == "r2" and ds[(9, 0)]["local"] == 1


def test_photo_sample_is_seeded_and_differs_between_rounds():
    class Photos:
        def __len__(self):
            return 1000
    a = sample_photos(Photos(), 50, round_seed(0, "round_1"))
    assert a == sample_photos(Photos(), 50, round_seed(0, "round_1")) and len(set(a)) == 50
    assert a != sample_photos(Photos(), 50, round_seed(0, "round_2"))
    assert sample_photos(Photos(), 5000, 1) == list(range(1000))


# -- round chaining -------------------------------------------------------------------------------------------
def test_round_chain_is_validated():
    params = load_params(ROOT / "params.yaml")
    names = params.breed.names
    assert len(names) >= 2, "the default pipeline runs at least two breeding rounds"
    assert params.breed.previous(names[0]) == f"{params.train.out_dir}/{params.train.loss}"
    for prev, cur in zip(names, names[1:]):
        assert params.breed.previous(cur) == params.breed.folder(prev)
    assert params.final_network() == f"{params.breed.folder(names[-1])}/model.pt"
    with pytest.raises(ParamsError, match="predecessor"):
        load_params(ROOT / "params.yaml", {"breed.rounds": {"round_1": "models/train/model_space",
                                                             "round_2": "models/train/model_space"}})
    with pytest.raises(ParamsError, match="first round"):
        load_params(ROOT / "params.yaml", {"breed.rounds": {"round_1": "models/train/parameter"}})
    with pytest.raises(ParamsError, match="breed.rounds"):
        load_params(ROOT / "params.yaml", {"breed.rounds": []})
    one = load_params(ROOT / "params.yaml", {"breed.rounds": {"only": "models/train/model_space"}})
    assert list(variant_networks(one)) == ["synthetic_only", "only"]


def test_guided_chain_is_validated(tmp_path):
    """breed.guided_rounds: a second chain (detector-guided refinement) beside breed.rounds, validated alike;
    evaluate_real reports its rounds only with a detector; without one a round says it was skipped."""
    from ifn.breed import breed_round

    params = load_params(ROOT / "params.yaml")
    guided = params.breed.guided_names
    assert len(guided) >= 1 and not set(guided) & set(params.breed.names)
    assert params.breed.previous(guided[0]) == f"{params.train.out_dir}/{params.train.loss}"
    assert params.breed.chain(guided[-1]) == guided and params.breed.guided(guided[0])
    assert not params.breed.guided(params.breed.names[0])
    assert list(guided_networks(params)) == list(guided)
    assert guided_networks(load_params(ROOT / "params.yaml", {"detect.detector": "none"})) == {}
    assert load_params(ROOT / "params.yaml", {"breed.guided_rounds": {}}).breed.guided_names == ()
    with pytest.raises(ParamsError, match="predecessor"):
        load_params(ROOT / "params.yaml", {"breed.guided_rounds": {"g1": "models/train/model_space",
                                                                    "g2": "models/train/model_space"}})
    with pytest.raises(ParamsError, match="also a key of breed.rounds"):
        load_params(ROOT / "params.yaml", {"breed.guided_rounds": {"round_1": "models/train/model_space"}})
    with pytest.raises(ParamsError, match="first guided round"):
        load_params(ROOT / "params.yaml", {"breed.guided_rounds": {"g1": "models/elsewhere"}})
    # Starting from a detector-free round is allowed (a guided round on top of the bred network).
    load_params(ROOT / "params.yaml", {"breed.guided_rounds": {"g1": "models/breed/round_2"}})
    out = tmp_path / "breed"
    summary = breed_round("g1", ROOT / "params.yaml", {
        "detect.detector": "none", "breed.out_dir": str(out),
        "breed.rounds": {"round_1": "models/train/model_space", "round_2": f"{out}/round_1"},
        "breed.guided_rounds": {"g1": "models/train/model_space"}}, log=lambda *_: None)
    assert summary["skipped"].startswith("skipped: detect.detector is none")
    assert (out / "g1" / "summary.json").exists() and not (out / "g1" / "model.pt").exists()


def test_dvc_stages_chain_the_rounds():
    """In the resolved dvc.yaml each round depends on the output folder of its predecessor (so DVC orders
    them), and evaluate_real on all of them."""
    from dvc.repo import Repo

    params = load_params(ROOT / "params.yaml")
    with Repo(str(ROOT)) as repo:
        stages = {s.addressing: s for s in repo.index.stages}
        outs = {a: {str(Path(o.fs_path).relative_to(ROOT)) for o in s.outs} for a, s in stages.items()}
        deps = {a: {str(Path(d.fs_path).relative_to(ROOT)) for d in s.deps if str(d.fs_path).startswith(str(ROOT))}
                for a, s in stages.items()}
        for kind, names in (("breed", params.breed.names), ("breed_guided", params.breed.guided_names)):
            previous = f"train@{params.train.loss}"
            for name in names:
                stage = f"{kind}@{name}"
                assert stage in stages, f"dvc.yaml has no stage {stage}"
                assert deps[stage] & outs[previous], f"{stage} does not depend on an output of {previous}"
                assert outs[stage] >= {params.breed.folder(name)}
                previous = stage
        assert params.breed.out_dir in deps["evaluate_real"]
        import networkx as nx
        order = list(nx.topological_sort(repo.index.graph.reverse()))
        addresses = [s.addressing for s in order if hasattr(s, "addressing")]
        pos = {a: i for i, a in enumerate(addresses)}
        chain = [f"train@{params.train.loss}", *[f"breed@{n}" for n in params.breed.names], "evaluate_real"]
        assert [pos[c] for c in chain] == sorted(pos[c] for c in chain)


# -- real-image metrics ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_renderer(constant_albedo_renderer):
    return constant_albedo_renderer(48)


def test_photo_errors_closed_form(full_renderer):
    from ifn.fit import mean_face_params
    from ifn.render.color import linear_to_srgb

    r = full_renderer
    params = mean_face_params(r, 2)
    params[1, r.layout["rotation"]] = torch.tensor([0.5, 0.1, 0.0])
    with torch.no_grad():
        out = r(params, background=0.0)
    render = linear_to_srgb(out.image)
    tri = face_triangles(r)
    assert 0 < tri.sum() < len(tri)                            # the full mesh has non-face triangles
    ptf = out.pix_to_face
    face_px = (ptf >= 0) & tri[ptf.clamp_min(0)]
    # The photo is the render itself: no error; coverage = the face pixels' share (brute force per pixel).
    e = photo_errors(r, params, render)
    assert torch.allclose(e["photometric_mae"], torch.zeros(2), atol=1e-6)
    brute = torch.tensor([sum(bool(tri[ptf[b, i, j]]) for i in range(48) for j in range(48) if ptf[b, i, j] >= 0)
                          for b in range(2)], dtype=torch.float32) / 48 ** 2
    assert torch.allclose(e["coverage"], brute)
    # Off by 0.1 on the face pixels and anything elsewhere (hair, background): the error is exactly 0.1.
    photo = torch.where(face_px[..., None], render - 0.1, torch.rand_like(render))
    assert torch.allclose(photo_errors(r, params, photo)["photometric_mae"], torch.full((2,), 0.1), atol=1e-5)
    # An estimate that shows no face explains nothing: NaN, coverage 0.
    away = params.clone()
    away[:, r.layout["translation"]] = torch.tensor([500.0, 0.0, 0.0])
    e = photo_errors(r, away, render)
    assert torch.isnan(e["photometric_mae"]).all() and (e["coverage"] == 0).all()


def test_benchmark_subset_splits_over_yaw_bins():
    yaw = np.array([5, -10, 20, 25, 1, -40, 45, 50, 70, -80, 3])  # bins: 6 x [0,30), 3 x [30,60), 2 x [60,90]
    idx = benchmark_subset(yaw, 6)
    assert len(idx) == 6 and len(set(idx)) == 6
    bins = np.digitize(np.abs(yaw[idx]), [30, 60])
    assert np.bincount(bins, minlength=3).tolist() == [2, 2, 2]
    idx = benchmark_subset(yaw, 9)                            # 3 per bin asked, the last bin has 2: topped up
    assert len(idx) == 9 and np.bincount(np.digitize(np.abs(yaw[idx]), [30, 60]), minlength=3)[2] == 2
    assert benchmark_subset(yaw, 0).tolist() == list(range(len(yaw)))
    assert math.isclose(len(benchmark_subset(yaw, 100)), len(yaw))


def test_tuning_images_are_never_reported():
    from ifn.evaluate_real import reported_indices, tuning_indices

    rng = np.random.default_rng(0)
    yaw = rng.uniform(-90, 90, 400)
    bins = np.digitize(np.abs(yaw), [30, 60])
    tune = tuning_indices(yaw, 4)
    for b in range(3):   # every 4th image of each bin, in file order
        members = np.flatnonzero(bins == b)
        assert tune[bins[tune] == b].tolist() == members[3::4].tolist()
    for n in (0, 30, 1000):
        rep = reported_indices(yaw, n, 4)
        assert not set(rep.tolist()) & set(tune.tolist())
        assert len(rep) == (400 - len(tune) if n in (0, 1000) else n)
    assert len(reported_indices(yaw, 0, 0)) == 400 and len(tuning_indices(yaw, 0)) == 0


# -- which groups breeding's refinement moves -----------------------------------------------------------------
class _ConstantNet(torch.nn.Module):
    """A stand-in network: the same parameter vector for every image."""

    def __init__(self, params: torch.Tensor):
        super().__init__()
        self.register_buffer("params", params)

    def forward(self, x):
        return self.params.expand(x.shape[0], -1)


def test_refine_groups_keep_the_network_pose(full_renderer):
    """breed.refine_groups without rotation / translation: the bred estimates keep the network's head pose
    exactly while the other groups still move; the default (all groups) moves the pose too."""
    from ifn.breed import estimate
    from ifn.fit import mean_face_params
    from ifn.render.color import linear_to_srgb

    r = full_renderer
    truth = mean_face_params(r, 1)
    truth[0, r.layout["rotation"]] = torch.tensor([0.3, 0.1, 0.05])
    with torch.no_grad():
        photo = (linear_to_srgb(r(truth, background=0.0).image) * 255).round().to(torch.uint8).numpy()
    start = mean_face_params(r, 1)[0]
    net = _ConstantNet(start)
    cfg = load_params(ROOT / "params.yaml", {"refine.fit_size": 0, "refine.fit_region": "all"}).refine
    pose = [i for g in ("rotation", "translation") for i in range(r.layout[g].start, r.layout[g].stop)]
    kept = estimate(r, net, photo, cfg, 4, log=lambda *a: None,
                    free=("shape", "expression", "reflectance", "illumination"))
    assert torch.equal(kept["refined"][0, pose], start[pose])
    assert not torch.equal(kept["refined"][0, r.layout["illumination"]], start[r.layout["illumination"]])
    moved = estimate(r, net, photo, cfg, 4, log=lambda *a: None)
    assert (moved["refined"][0, r.layout["rotation"]] - start[r.layout["rotation"]]).abs().max() > 1e-3


def test_refine_groups_are_validated():
    with pytest.raises(ParamsError, match="breed.refine_groups"):
        load_params(ROOT / "params.yaml", {"breed.refine_groups": []})
    with pytest.raises(ParamsError, match="breed.refine_groups"):
        load_params(ROOT / "params.yaml", {"breed.refine_groups": ["shape", "pose"]})
    p = load_params(ROOT / "params.yaml", {"breed.refine_groups": ["shape", "illumination"]})
    assert p.breed.refine_groups == ("shape", "illumination")


# -- plausibility of a refined fit, per-round learning rate -----------------------------------------------------
def test_landmark_shift_brute_force(full_renderer):
    """landmark_shift = mean over the 68 landmarks of the projected distance / image side (brute force via
    Camera.project of the landmark vertices); zero for identical estimates; a pure x translation of the head far
    away shifts every landmark by about the same amount."""
    from ifn.breed import landmark_shift
    from ifn.fit import mean_face_params

    r = full_renderer
    a = mean_face_params(r, 3)
    b = a.clone()
    b[:, r.layout["expression"]] = torch.rand(3, r.layout.n_expression,
                                             generator=torch.Generator().manual_seed(1))
    b[2, r.layout["translation"].start] += 1.0
    shift = landmark_shift(r, a, b)
    ids = r.face_model.landmarks
    assert (ids >= 0).any()
    brute = []
    for i in range(3):
        pa, _ = r.camera.project(r.posed(a[i:i + 1])[:, ids[ids >= 0]])
        pb, _ = r.camera.project(r.posed(b[i:i + 1])[:, ids[ids >= 0]])
        brute.append(float((pa - pb).norm(dim=-1).mean()) / r.settings.image_size)
    np.testing.assert_allclose(shift, brute, rtol=1e-5)
    assert landmark_shift(r, a, a).max() == 0
    assert shift[2] > shift[1]


def test_implausible_fits_keep_the_network_geometry():
    from ifn.breed import implausible_fits, keep_network_geometry

    layout = ParamLayout(6, 5, 4)
    shift = np.array([0.01, 0.05, 0.02])
    assert implausible_fits(shift, 0.0).tolist() == [False, False, False]     # 0: off
    rows = implausible_fits(shift, 0.03)
    assert rows.tolist() == [False, True, False]
    net = torch.randn(3, layout.size, generator=torch.Generator().manual_seed(0))
    ref = torch.randn(3, layout.size, generator=torch.Generator().manual_seed(1))
    out = keep_network_geometry(ref, net, rows, layout)
    for g in ("shape", "expression", "rotation", "translation"):
        assert torch.equal(out[1, layout[g]], net[1, layout[g]])
        assert torch.equal(out[[0, 2]][:, layout[g]], ref[[0, 2]][:, layout[g]])
    for g in ("reflectance", "illumination"):
        assert torch.equal(out[:, layout[g]], ref[:, layout[g]])
    assert torch.equal(ref, torch.randn(3, layout.size, generator=torch.Generator().manual_seed(1)))  # not in place


def test_round_learning_rate_decays_along_the_chain():
    cfg = load_params(ROOT / "params.yaml", {"breed.lr": 1e-3, "breed.lr_decay": 0.5}).breed
    assert [cfg.round_lr(k) for k in range(3)] == [1e-3, 5e-4, 2.5e-4]
    with pytest.raises(ParamsError, match="breed.lr_decay"):
        load_params(ROOT / "params.yaml", {"breed.lr_decay": 0.0})
    with pytest.raises(ParamsError, match="breed.max_landmark_shift"):
        load_params(ROOT / "params.yaml", {"breed.max_landmark_shift": -0.1})


def test_photo_samples_are_the_photos_labelled_with_the_estimates(full_renderer):
    """Self-training samples (breed.self_training_photos): the images are the photos, byte for byte; params,
    landmarks and shading Gram are the estimate's (as a synthetic render of it would carry); the masks are all
    True, so the photo-background augmentation leaves the photo alone."""
    from ifn.breed import photo_samples
    from ifn.fit import mean_face_params
    from ifn.synth import face_weights, render_batch

    r = full_renderer
    size = r.settings.image_size
    params = mean_face_params(r, 2)
    params[1, r.layout["rotation"]] = torch.tensor([0.4, -0.1, 0.2])
    crops = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    arrays = photo_samples(r, crops, params, batch=1)
    render = render_batch(r, r.layout.split(params), torch.zeros(2, size, size, 3), face_weights(r))
    assert np.array_equal(arrays["images"], crops)
    assert arrays["masks"].all() and arrays["face_masks"].all() and arrays["masks"].shape == (2, size, size)
    np.testing.assert_allclose(arrays["params"], params.numpy(), atol=1e-6)
    for key in ("landmarks", "shading_gram"):
        np.testing.assert_allclose(arrays[key], render[key], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        lm = r.landmarks(r.posed(params)).numpy()
    np.testing.assert_allclose(arrays["landmarks"], lm, atol=1e-3)
    assert not np.allclose(arrays["landmarks"][0], arrays["landmarks"][1], atol=1.0)   # per-sample labels
    with pytest.raises(ValueError, match="px"):
        photo_samples(r, crops[:, :-1], params)


def test_network_estimates_take_the_looks_of_evaluate_real(full_renderer):
    """breed.looks: the round's estimates are evaluate_real's (flip-averaged pose, then the upright passes:
    ifn.evaluate_real.tta_estimate); without it the plain forward pass."""
    from ifn.breed import estimate
    from ifn.evaluate import predict
    from ifn.evaluate_real import tta_estimate
    from ifn.fit import mean_face_params

    r = full_renderer
    size = r.settings.image_size
    start = mean_face_params(r, 1)[0]
    start[r.layout["rotation"]] = torch.tensor([0.2, 0.1, 0.3])
    net = _ConstantNet(start)
    crops = np.random.default_rng(1).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    cfg = load_params(ROOT / "params.yaml").refine

    def network_estimates(*looks):   # the round's network estimates, no refinement steps
        return estimate(r, net, crops, cfg, 0, 2, log=lambda *a: None, **({"looks": looks} if looks else {}))["network"]

    plain = network_estimates()
    assert torch.equal(plain, predict(net, crops, 2))
    looked = network_estimates(True, 1)
    assert torch.equal(looked, tta_estimate(lambda x: predict(net, x, 2), crops, r.layout, True, 1))
    # A constant network reads no tilt: the flip averages its yaw and roll away, the upright look adds the roll back.
    assert not torch.allclose(looked[:, r.layout["rotation"]], plain[:, r.layout["rotation"]])
    assert torch.equal(looked[:, r.layout["shape"]], plain[:, r.layout["shape"]])


def test_self_training_params_are_validated():
    with pytest.raises(ParamsError, match="breed.self_training_photos"):
        load_params(ROOT / "params.yaml", {"breed.self_training_photos": -1})
    with pytest.raises(ParamsError, match="breed.looks"):
        load_params(ROOT / "params.yaml", {"breed.looks": "yes"})
    assert load_params(ROOT / "params.yaml", {"breed.self_training_photos": 0}).breed.self_training_photos == 0
