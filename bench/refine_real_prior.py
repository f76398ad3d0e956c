"""Refinement on real photos: landmark NME and photometric error for settings of the translation prior.

    python bench/refine_real_prior.py [--network models/train/model_space/model.pt] [--per-bin 20]
        [--configs '{"name": {refine keyword: value, ...}, ...}']

Runs after the pipeline (needs models/face_model/reflectance.npz and a trained network). The images are the
last `per-bin` AFLW2000-3D dev images of each yaw bin (file order) that stage evaluate_real does not report
(bench/tuning_split.py; the [60, 90] bin has only 12 such images), so settings tuned here are not tuned on the
reported subset. Each setting refines the network's estimates for 30 steps with params.yaml's
`refine` section overridden by the setting; printed: NME (mean and per yaw bin), photometric MAE over the
visible face part and its coverage of the crop, wall seconds. Numbers are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import ifn.evaluate_real as er
from ifn.config import load_params
from ifn.evaluate import photo_errors
from ifn.fit import refine
from ifn.learn.train import load_network
from ifn.nme import nme, nme_report
from ifn.synth import build_renderer
from tuning_split import tuning_indices  # bench/ (the script's folder is on sys.path)

DEFAULT_CONFIGS = {
    "centre 0.001 (old default)": {"w_translation_prior": 0.001, "anchor_translation": False},
    "anchored 0.1 (default)": {"w_translation_prior": 0.1, "anchor_translation": True},
    "anchored 0.3": {"w_translation_prior": 0.3, "anchor_translation": True},
    "anchored 1.0": {"w_translation_prior": 1.0, "anchor_translation": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="models/train/model_space/model.pt")
    ap.add_argument("--per-bin", type=int, default=20)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default=json.dumps(DEFAULT_CONFIGS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    params = load_params("params.yaml")
    tuning = tuning_indices(params, args.per_bin)  # not evaluate_real's images
    renderer = build_renderer(params, "models/face_model/reflectance.npz", image_size=params.render.image_size)
    bench = er.benchmark_crops(params, 0, params.render.image_size, log=lambda *a: None, indices=tuning)
    net = load_network(args.network)[0]
    init = er.Estimator(net)(renderer, bench["crops"])[0]
    images = torch.from_numpy(bench["crops"]).float() / 255

    def report(est: torch.Tensor, name: str, seconds: float = 0.0) -> None:
        rep = nme_report(nme(er.landmarks_in_image(renderer, est, bench["affines"]), bench["pts68"]),
                         bench["yaw_deg"])
        pe = photo_errors(renderer, est, images)
        print(f"{name:28s} NME {100 * rep['nme_mean']:5.2f} % (bins {100 * rep['nme_0_30']:.1f} / "
              f"{100 * rep['nme_30_60']:.1f} / {100 * rep['nme_60_90']:.1f})  photometric MAE "
              f"{float(pe['photometric_mae'].nanmean()):.4f}  coverage {float(pe['coverage'].mean()):.3f}  "
              f"{seconds:.0f} s", flush=True)

    print(f"{len(images)} AFLW2000-3D dev images, network {args.network}, {args.steps} refinement steps")
    report(init, "network (no refinement)")
    for name, override in json.loads(args.configs).items():
        kwargs = {**params.refine.refine_kwargs(), "steps": args.steps, **override}
        t0 = time.perf_counter()
        out = [refine(renderer, images[s:s + params.refine.batch_size], init[s:s + params.refine.batch_size],
                      **kwargs)[0] for s in range(0, len(images), params.refine.batch_size)]
        report(torch.cat(out), name, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
