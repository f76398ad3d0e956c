"""Framing of the synthetic faces (ifn.framing): the projected 68-landmark box gets the size and centre asked for."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifn.config import FramingConfig, ParamsError, PriorConfig, SynthesizeConfig
from ifn.framing import frame, landmark_box
from ifn.model.priors import sample_parameters
from ifn.synth import face_centre


def _sample(renderer, n: int, seed: int = 0):
    prior = PriorConfig(yaw_max_deg=85.0, translate_xy_cm=3.0, translate_z_cm=15.0)
    g = torch.Generator().manual_seed(seed)
    groups = sample_parameters(n, renderer.layout, prior, g, renderer.face_model.expression_names,
                               face_centre(renderer))
    groups["rotation"][:4, 0] = torch.tensor([-85.0, -45.0, 45.0, 85.0]).deg2rad()   # the extremes included
    return groups


def test_landmark_box_brute_force():
    """Size sqrt(w h) and centre of the box against explicit per-sample loops; NaN landmarks are ignored."""
    g = torch.Generator().manual_seed(1)
    lm = torch.rand(3, 68, 2, generator=g) * 100
    lm[1, 5] = float("nan")
    size, centre = landmark_box(lm, 200)
    for i in range(3):
        p = lm[i][~lm[i].isnan().any(-1)]
        w, h = (p[:, 0].max() - p[:, 0].min()).item(), (p[:, 1].max() - p[:, 1].min()).item()
        assert size[i].item() == pytest.approx(math.sqrt(w * h) / 200, rel=1e-6)
        assert centre[i, 0].item() == pytest.approx((p[:, 0].max() + p[:, 0].min()).item() / 400 - 0.5, abs=1e-6)
        assert centre[i, 1].item() == pytest.approx((p[:, 1].max() + p[:, 1].min()).item() / 400 - 0.5, abs=1e-6)


@pytest.mark.parametrize("size, centre_y", [(0.683, 0.03), (0.45, -0.1)])
def test_landmark_box_framing_hits_its_target(constant_albedo_renderer, size, centre_y):
    """Without jitter every face's projected landmark box (of the rendered image too) has exactly the asked size
    and centre at every yaw, while the centroid framing's box moves and shrinks with yaw; only the translation
    changes."""
    renderer = constant_albedo_renderer(64)
    groups = _sample(renderer, 24)
    before, _ = landmark_box(renderer.landmarks(renderer.posed(groups)), 64)
    assert before.max() - before.min() > 0.1                       # the cue the framing removes
    cfg = FramingConfig(mode="landmark_box", size=size, size_jitter=0.0, centre_y=centre_y, centre_jitter=0.0)
    out = frame(renderer, groups, cfg, torch.Generator().manual_seed(0))
    for name in groups:
        if name != "translation":
            assert torch.equal(out[name], groups[name])
    have, centre = landmark_box(renderer(out).landmarks, 64)
    assert (have - size).abs().max() < 1e-4, have
    assert (centre - torch.tensor([0.0, centre_y])).abs().max() < 1e-4, centre


def test_landmark_box_jitter_and_seed(constant_albedo_renderer):
    """Jittered sizes and centres stay inside their documented intervals and fill them; the same generator seed
    gives the same translations; centroid framing draws nothing and changes nothing."""
    renderer = constant_albedo_renderer(64)
    groups = _sample(renderer, 200, seed=3)
    cfg = FramingConfig(mode="landmark_box", size=0.6, size_jitter=0.1, centre_y=0.05, centre_jitter=0.04)
    out = frame(renderer, groups, cfg, torch.Generator().manual_seed(5))
    have, centre = landmark_box(renderer.landmarks(renderer.posed(out)), 64)
    tol = 1e-4
    assert have.min() >= 0.54 - tol and have.max() <= 0.66 + tol and have.max() - have.min() > 0.1
    assert centre[:, 0].abs().max() <= 0.04 + tol and centre[:, 0].max() - centre[:, 0].min() > 0.06
    assert (centre[:, 1] - 0.05).abs().max() <= 0.04 + tol
    again = frame(renderer, groups, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(again["translation"], out["translation"])
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    same = frame(renderer, groups, FramingConfig(mode="centroid"), g)
    assert same is groups and torch.equal(g.get_state(), state)


def test_framing_params_are_validated():
    with pytest.raises(ParamsError, match=r"synthesize\.framing\.mode = 'box'"):
        SynthesizeConfig.from_dict({"framing": {"mode": "box"}})
    with pytest.raises(ParamsError, match=r"synthesize\.framing\.size = 0"):
        SynthesizeConfig.from_dict({"framing": {"size": 0}})
    with pytest.raises(ParamsError, match=r"unknown key synthesize\.framing\.sise"):
        SynthesizeConfig.from_dict({"framing": {"sise": 0.5}})
    cfg = SynthesizeConfig.from_dict({"framing": {"mode": "landmark_box", "size": 0.5}})
    assert cfg.framing == FramingConfig(mode="landmark_box", size=0.5)
    assert np.isclose(cfg.to_dict()["framing"]["size"], 0.5)
