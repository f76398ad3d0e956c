"""Synthetic-split metrics (ifn.evaluate) that need no renderer."""
from __future__ import annotations

import math

import numpy as np

from ifn.evaluate import pose_axis_stats


def test_pose_axis_stats_hand_computed():
    """yaw predicted exactly, pitch a constant guess, roll half of the truth plus 2 degrees."""
    true = np.radians(np.array([[-30.0, -10.0, -8.0], [0.0, 0.0, 0.0], [30.0, 10.0, 8.0], [60.0, 20.0, 16.0]]))
    pred = true.copy()
    pred[:, 1] = math.radians(3.0)
    pred[:, 2] = 0.5 * true[:, 2] + math.radians(2.0)
    s = pose_axis_stats(pred, true)
    assert math.isclose(s["yaw_slope"], 1.0, abs_tol=1e-9) and s["yaw_abs_deg"] < 1e-9
    assert abs(s["pitch_slope"]) < 1e-9
    assert math.isclose(s["pitch_abs_deg"], np.mean([13.0, 3.0, 7.0, 17.0]), rel_tol=1e-6)
    assert math.isclose(s["roll_slope"], 0.5, rel_tol=1e-6)
    # |0.5 r + 2 - r| = |2 - 0.5 r| for r = -8, 0, 8, 16
    assert math.isclose(s["roll_abs_deg"], np.mean([6.0, 2.0, 2.0, 6.0]), rel_tol=1e-6)
    flat = pose_axis_stats(pred, np.zeros_like(true))
    assert math.isnan(flat["yaw_slope"])


def test_landmark_nme_of_reconstruction_errors(constant_albedo_renderer):
    """Synthetic-split NME: 0 for the truth itself; a pure sideways shift of the head moves every projected
    landmark by nearly the same image offset, so NME = that offset / the landmark box (closed form check)."""
    import torch

    from ifn.evaluate import reconstruction_errors
    from ifn.nme import gt_box_size

    renderer = constant_albedo_renderer(64)
    layout = renderer.layout
    g = layout.zeros(2)
    g["rotation"] = torch.tensor([[0.3, 0.1, 0.0], [-0.4, 0.0, 0.1]])
    true = layout.join(g)
    assert torch.allclose(reconstruction_errors(renderer, true, true)["landmark_nme"], torch.zeros(2, dtype=torch.float64))
    g["translation"] = g["translation"] + torch.tensor([0.5, 0.0, 0.0])
    pred = layout.join(g)
    errs = reconstruction_errors(renderer, pred, true)["landmark_nme"].numpy()
    with torch.no_grad():
        lm_t = renderer.landmarks(renderer.posed(renderer.groups(true))).double().numpy()
        lm_p = renderer.landmarks(renderer.posed(renderer.groups(pred))).double().numpy()
    shift = np.linalg.norm(lm_p - lm_t, axis=-1)
    assert shift.std(1).max() < 0.05 * shift.mean()                   # nearly a uniform shift
    np.testing.assert_allclose(errs, shift.mean(1) / gt_box_size(lm_t), rtol=1e-9)
    assert (errs > 0.005).all()
