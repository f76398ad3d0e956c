"""The 3DDFA sparse-alignment protocol on AFLW2000-3D: NME of 68 2D landmarks, by absolute-yaw bin.

NME of one image = mean over the 68 points of the 2D distance between prediction and ground truth, divided by
sqrt(w * h) of the box the ground-truth 68 points span. Reported per |yaw| bin [0, 30), [30, 60), [60, 90]
(a few AFLW2000-3D images have |yaw| > 90: they count in the last bin) and as the mean of the three bin means
(the headline number: it weights the rare large poses like the frontal ones).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .paths import require_data

YAW_BINS = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
BIN_NAMES = ("0_30", "30_60", "60_90")
AFLW2000_DEV = "data/benchmark/aflw2000_dev"


def _as_points(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 3 or a.shape[-1] != 2:
        raise ValueError(f"{name} must be (N, K, 2) x, y points, got shape {a.shape}")
    return a


def gt_box_size(gt) -> np.ndarray:
    """(N, K, 2) ground-truth points -> (N,) sqrt(w * h) of the box they span."""
    gt = _as_points(gt, "gt")
    wh = gt.max(1) - gt.min(1)
    return np.sqrt(wh[:, 0] * wh[:, 1])


def nme(pred, gt) -> np.ndarray:
    """(N, 68, 2) predicted and ground-truth 2D landmarks (same pixel frame) -> (N,) NME (fraction, not %)."""
    pred, gt = _as_points(pred, "pred"), _as_points(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
    dist = np.linalg.norm(pred - gt, axis=-1).mean(1)
    return dist / gt_box_size(gt)


def yaw_bins(yaw_deg) -> np.ndarray:
    """(N,) yaw in degrees (signed or absolute) -> (N,) bin index 0: [0, 30), 1: [30, 60), 2: [60, 90] (and
    beyond 90)."""
    a = np.abs(np.asarray(yaw_deg, dtype=np.float64))
    if np.isnan(a).any():
        raise ValueError("yaw_deg contains NaN")
    return np.digitize(a, [YAW_BINS[1][0], YAW_BINS[2][0]]).astype(np.int64)


def nme_report(nme_values, yaw_deg) -> dict:
    """Per-image NME and yaw -> dict nme_mean (mean of the non-empty bin means), nme_0_30, nme_30_60, nme_60_90
    (NaN for an empty bin), nme_all (mean over all images), counts {bin: n}."""
    v = np.asarray(nme_values, dtype=np.float64)
    bins = yaw_bins(yaw_deg)
    if v.shape != bins.shape:
        raise ValueError(f"{v.shape[0] if v.ndim else v} NME values but {bins.shape[0]} yaw angles")
    out, means = {}, []
    counts = {}
    for i, name in enumerate(BIN_NAMES):
        sel = v[bins == i]
        counts[name] = int(sel.size)
        m = float(sel.mean()) if sel.size else float("nan")
        out[f"nme_{name}"] = m
        if sel.size:
            means.append(m)
    out["nme_mean"] = float(np.mean(means)) if means else float("nan")
    out["nme_all"] = float(v.mean()) if v.size else float("nan")
    out["counts"] = counts
    return out


def load_aflw2000_dev(root=AFLW2000_DEV) -> dict:
    """The AFLW2000-3D dev fifth: dict names (N,), paths (list of Path), pts68 (N, 68, 2) x, y pixels (the
    protocol's landmarks), pts68_reannotated (N, 68, 2), roi_box (N, 4) x0, y0, x1, y1, yaw_deg (N,) as stored
    (signed; the protocol bins |yaw|)."""
    root = require_data(root, "AFLW2000-3D dev benchmark")
    ann = np.load(require_data(Path(root) / "annotations.npz", "AFLW2000-3D annotations"))
    names = np.asarray(ann["names"]).astype(str)
    out = {
        "names": names,
        "paths": [Path(root) / "images" / n for n in names],
        "pts68": np.ascontiguousarray(ann["pts68"][:, :2, :].transpose(0, 2, 1)).astype(np.float64),
        "roi_box": np.asarray(ann["roi_box"], dtype=np.float64),
        "yaw_deg": np.asarray(ann["yaw_deg"], dtype=np.float64),
    }
    if "pts68_reannotated" in ann.files:
        out["pts68_reannotated"] = np.ascontiguousarray(
            ann["pts68_reannotated"].transpose(0, 2, 1)).astype(np.float64)
    return out
