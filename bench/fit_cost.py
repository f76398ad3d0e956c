"""Cost settings of the analysis-by-synthesis fits (`refine.fit_size`, `refine.fit_region`): accuracy and time of
every fitted variant of stage evaluate_real at several fit sizes and mesh regions, on tuning images only.

Images: the 100 AFLW2000-3D tuning images (`evaluate_real.tuning_indices`, never reported by evaluate_real) for
NME, and held-out photos that evaluate_real does not use (ranks `evaluate_real.photos` .. 2x of the same hash
order) for the photometric error. The fits run at each setting; every metric is computed at the working size
(128 px by default) as evaluate_real does. Networks: the pipeline's (run `make repro` or `dvc pull` first).

    python bench/fit_cost.py --settings all:0 face:0 face:64 [--variants refined ...] [--json out.json]

(region:size, size 0 = the working size.) Prints one row per (variant, setting): NME mean and per yaw bin (%),
photometric MAE, seconds per image and the speed-up over the first setting. Run it alone on the machine (the times are wall-clock).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from ifn.config import load_params
from ifn.evaluate_real import (Estimator, LandmarkEstimator, benchmark_crops, detect_targets, evaluate_estimates,
                               heldout_photos, tuning_indices, variant_networks)
from ifn.learn.train import load_network
from ifn.landmark_fit import LandmarkFitSettings
from ifn.nme import load_aflw2000_dev
from ifn.paths import resolve
from ifn.synth import build_renderer

VARIANTS = ("refined", "optimization_only", "refined_landmarks", "optimization_only_landmarks")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=["all:0", "face:0", "face:64"],
                    help="region:size pairs (refine.fit_region : refine.fit_size, 0 = the working size)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(2)

    params = load_params(resolve("params.yaml"))
    cfg = params.evaluate_real
    size = params.real.working_size(params.render.image_size)
    renderer = build_renderer(params, "models/face_model/reflectance.npz", image_size=size)
    yaw = load_aflw2000_dev(resolve(cfg.benchmark))["yaw_deg"]
    bench = benchmark_crops(params, 0, size, indices=tuning_indices(yaw, cfg.tuning_every))
    reported = {r["name"] for r in heldout_photos(params, cfg.photos, size, log=lambda *_: None)[1]}
    photos, records = heldout_photos(params, 2 * cfg.photos, size, log=lambda *_: None)
    keep = [i for i, r in enumerate(records) if r["name"] not in reported]
    photos, records = photos[keep], [records[i] for i in keep]
    print(f"{len(bench['crops'])} tuning images, {len(photos)} held-out photos (not evaluate_real's)")

    nets = variant_networks(params)
    final, _ = load_network(resolve(list(nets.values())[-1]))
    targets = {"photos": None, "bench": None}
    if any(v.endswith("_landmarks") for v in args.variants):
        targets = detect_targets(params, bench, photos)
        ft_net, _ = load_network(resolve(f"{params.finetune.out_dir}/model.pt"))
        settings = LandmarkFitSettings.from_config(params.detect)

    rows = []
    for variant in args.variants:
        base_seconds = None
        for setting in args.settings:
            region, fit_size = setting.split(":")
            fit_size = int(fit_size)
            refine_cfg = params.refine.__class__(**{**params.refine.to_dict(), "fit_size": fit_size,
                                                    "fit_region": region})
            run = {"refined": lambda: Estimator(final, refine_cfg, cfg.refine_steps, batch_size=cfg.batch_size),
                   "optimization_only": lambda: Estimator(None, refine_cfg, refine_cfg.baseline_steps, from_mean=True),
                   "refined_landmarks": lambda: LandmarkEstimator(ft_net, refine_cfg, settings, cfg.batch_size),
                   "optimization_only_landmarks": lambda: LandmarkEstimator(None, refine_cfg, settings,
                                                                            cfg.batch_size)}[variant]()
            torch.manual_seed(params.seed)
            t0 = time.perf_counter()
            est_p, _, _ = run(renderer, photos, targets["photos"])
            est_b, _, _ = run(renderer, bench["crops"], targets["bench"])
            seconds = time.perf_counter() - t0
            m = evaluate_estimates(renderer, photos, records, bench, est_p, est_b, seconds)
            base_seconds = base_seconds or m["seconds_per_image"]
            row = {"variant": variant, "fit_region": region, "fit_size": fit_size or size, **{k: m[k] for k in (
                "nme_mean", "nme_0_30", "nme_30_60", "nme_60_90", "photometric_mae", "seconds_per_image")},
                   "speedup": base_seconds / m["seconds_per_image"]}
            rows.append(row)
            print(f"{variant:28s} {region:4s} {row['fit_size']:4d} px: NME {100 * row['nme_mean']:6.2f} % "
                  f"({100 * row['nme_0_30']:.2f} / {100 * row['nme_30_60']:.2f} / {100 * row['nme_60_90']:.2f}), "
                  f"photometric {row['photometric_mae']:.4f}, {row['seconds_per_image']:.3f} s/image "
                  f"({row['speedup']:.2f}x)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
