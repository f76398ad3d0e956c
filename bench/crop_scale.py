"""How closely to crop the face box (params.yaml `real.roi_scale` / `real.roi_shift_y`), measured on the
AFLW2000-3D tuning images (bench/tuning_split.py): 68-landmark NME per yaw bin of every network of stage
evaluate_real (flip-averaged pose and upright passes, as there) for each crop setting, and of the detector-guided fit
(ifn.landmark_fit, params `detect`) from the fine-tuned network and from the mean face.

    python bench/crop_scale.py [--scales 0.90,0.93,0.96,1.0] [--shifts -0.03,0.0] [--no-fit] [--per-bin 100]

Crop side = scale * max(roi_box w, h); the centre moves by shift * side (negative: up). Scale 1.0, shift -0.03
match the synthetic corpus's landmark box (ifn.real); a smaller scale crops closer. Needs the trained networks
(`make repro`). Run on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tuning_split import tuning_indices  # noqa: E402

from ifn.apps.checkpoint import load_checkpoint  # noqa: E402
from ifn.config import load_params  # noqa: E402
from ifn.evaluate_real import (benchmark_crops, detect_targets, guided_networks, landmarks_in_image,  # noqa: E402
                               network_estimate, variant_networks)
from ifn.fit import mean_face_params  # noqa: E402
from ifn.nme import nme, nme_report  # noqa: E402
from ifn.paths import resolve  # noqa: E402
from ifn.synth import build_renderer  # noqa: E402


def row(name, lm, gt, yaw):
    r = nme_report(nme(lm, gt), yaw)
    print(f"{name:<36} {100 * r['nme_mean']:6.2f} {100 * r['nme_0_30']:7.2f} {100 * r['nme_30_60']:8.2f} "
          f"{100 * r['nme_60_90']:8.2f}", flush=True)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=floats, default=floats("0.90,0.93,0.96,1.0"))
    ap.add_argument("--shifts", type=floats, default=floats("-0.03"))
    ap.add_argument("--no-fit", action="store_true", help="network estimates only (no detector-guided fit)")
    ap.add_argument("--per-bin", type=int, default=100)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    params = load_params(args.params)
    renderer = build_renderer(params)
    size = renderer.settings.image_size
    idx = tuning_indices(params, args.per_bin)
    paths = {**variant_networks(params), **guided_networks(params)}
    if params.detect.enabled:
        paths["real_finetuned"] = f"{params.finetune.out_dir}/model.pt"
    nets = {name: load_checkpoint(resolve(p))[0] for name, p in paths.items()}
    fit = params.detect.enabled and not args.no_fit
    print(f"{len(idx)} tuning images; NME % mean [0,30) [30,60) [60,90]")
    for scale in args.scales:
        for shift in args.shifts:
            # the crops exactly as stage evaluate_real makes them, at this setting
            at = replace(params, real=replace(params.real, roi_scale=scale, roi_shift_y=shift))
            bench = benchmark_crops(at, 0, size, indices=idx)
            crops, affines, gt, yaw = bench["crops"], bench["affines"], bench["pts68"], bench["yaw_deg"]
            print(f"scale {scale:.2f} shift {shift:+.2f}")
            starts = {}
            for name, net in nets.items():
                starts[name] = network_estimate(net, crops, renderer.layout, 64, params.evaluate_real.flip_pose,
                                                params.evaluate_real.upright_passes)
                row(f"  {name}", landmarks_in_image(renderer, starts[name], affines), gt, yaw)
            if fit:
                from ifn.landmark_fit import LandmarkFitSettings, fit_detected
                targets = detect_targets(at, bench, np.empty((0, size, size, 3), np.uint8), log=lambda *a: None)
                settings = LandmarkFitSettings.from_config(params.detect)
                kw = params.refine.refine_kwargs()
                for name, init in (("refined_landmarks", starts.get("real_finetuned")),
                                   ("optimization_only_landmarks", mean_face_params(renderer, len(crops)))):
                    if init is not None:
                        out, _ = fit_detected(renderer, crops, init, targets["bench"], settings, 16, **kw)
                        row(f"  {name}", landmarks_in_image(renderer, out, affines), gt, yaw)

if __name__ == "__main__":
    main()
