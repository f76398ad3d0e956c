"""Detector-guided refinement (ifn.landmark_fit) on the AFLW2000-3D tuning images (bench/tuning_split.py):
68-landmark NME per yaw bin of the detector itself and of fits for settings given on the command line.

    python bench/landmark_fit.py [--per-bin 20] [--network models/train/model_space/model.pt] \
        [--variants '{"name": {"start": "mean"|"network", "coarse_steps": 80, "steps": 0, "w_landmark": 100}}']

Each variant: params `detect` (ifn.landmark_fit.LandmarkFitSettings) with the keys given replaced; other keys
go to ifn.fit.refine (e.g. "lr", "w_shape_prior").

Images where the detector finds no face keep their start (mean face or network estimate), as in stage
evaluate_real. Run on an otherwise idle machine for the timings.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tuning_split import tuning_indices  # noqa: E402

from ifn.config import load_params  # noqa: E402
from ifn.detect import FaceDetector  # noqa: E402
from ifn.evaluate_real import benchmark_crops, landmarks_in_image  # noqa: E402
from ifn.fit import mean_face_params  # noqa: E402
from ifn.landmark_fit import LandmarkFitSettings, fit_detected, to_crop  # noqa: E402
from ifn.nme import load_aflw2000_dev, nme, nme_report  # noqa: E402
from ifn.paths import resolve  # noqa: E402
from ifn.real import load_image  # noqa: E402
from ifn.synth import build_renderer  # noqa: E402

DEFAULT = {"mean face + landmark-only steps": {"start": "mean", "steps": 0},
           "mean face + params detect": {"start": "mean"}}
WITH_NETWORK = {"network + landmark-only steps": {"start": "network", "steps": 0},
                "network + params detect": {"start": "network"}}


def row(name, lm, gt, yaw, seconds=float("nan")):
    r = nme_report(nme(lm, gt), yaw)
    print(f"{name:<28} {100 * r['nme_mean']:6.2f} {100 * r['nme_0_30']:7.2f} {100 * r['nme_30_60']:8.2f} "
          f"{100 * r['nme_60_90']:8.2f} {seconds:8.3f}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-bin", type=int, default=20)
    ap.add_argument("--network", default=None)
    ap.add_argument("--variants", default=None)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    params = load_params(args.params)
    variants = json.loads(args.variants) if args.variants else {**DEFAULT, **(WITH_NETWORK if args.network else {})}
    renderer = build_renderer(params)
    size = renderer.settings.image_size
    idx = tuning_indices(params, args.per_bin)
    bench = benchmark_crops(params, 0, size, indices=idx)
    dev = load_aflw2000_dev(resolve(params.evaluate_real.benchmark))
    n = len(idx)
    targets = np.full((n, 468, 2), np.nan)
    det68 = np.full((n, 68, 2), np.nan)
    t0 = time.perf_counter()
    with FaceDetector(params.detect.min_confidence) as det:
        for k, i in enumerate(idx):
            image, scale = load_image(dev["paths"][i], max_side=params.real.max_side, return_scale=True)
            faces = det(image)
            if faces:
                targets[k] = to_crop(faces[0].points * scale, bench["affines"][k])
                det68[k] = faces[0].landmarks68 * scale
    det_s = (time.perf_counter() - t0) / n
    found = np.isfinite(det68).all((1, 2))
    print(f"{n} tuning images, detector found {found.sum()}; NME % mean [0,30) [30,60) [60,90]  s/image")
    gt, yaw = bench["pts68"], bench["yaw_deg"]
    mean = mean_face_params(renderer, n)
    row("mean face", landmarks_in_image(renderer, mean, bench["affines"]), gt, yaw)
    fallback = landmarks_in_image(renderer, mean, bench["affines"])
    row("detector (mp68; else mean)", np.where(found[:, None, None], det68, fallback), gt, yaw, det_s)
    net_init = None
    if args.network:
        from ifn.apps.checkpoint import load_checkpoint
        from ifn.evaluate_real import network_estimate
        net, _ = load_checkpoint(args.network)
        net_init = network_estimate(net, bench["crops"], renderer.layout, 64, params.evaluate_real.flip_pose,
                                    params.evaluate_real.upright_passes)
        row("network", landmarks_in_image(renderer, net_init, bench["affines"]), gt, yaw)
    kw = params.refine.refine_kwargs()
    for name, v in variants.items():
        v = dict(v)
        start = v.pop("start", "mean")
        init = mean if start == "mean" else net_init
        settings = replace(LandmarkFitSettings.from_config(params.detect),
                           **{k: v.pop(k) for k in list(v) if k in LandmarkFitSettings.__dataclass_fields__})
        t0 = time.perf_counter()
        out, _ = fit_detected(renderer, bench["crops"], init, targets, settings, 16, **{**kw, **v})
        row(name, landmarks_in_image(renderer, out, bench["affines"]), gt, yaw, (time.perf_counter() - t0) / n)


if __name__ == "__main__":
    main()
