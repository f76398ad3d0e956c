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
