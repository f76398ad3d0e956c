"""Does a training setting teach the network head pose? In-domain per-axis pose and real-photo landmark NME.

    python bench/pose_ablation.py [--networks NAME=model.pt ...] [--train '{"name": {params key: value}}']
        [--loss model_space] [--scratch /tmp/pose_ablation] [--per-bin 20] [--test 256]

Runs after the pipeline (needs the corpus, models/face_model/reflectance.npz). Each network given with
--networks is evaluated as is; each entry of --train first trains a network with `ifn.learn.train.train` and
params.yaml overridden by the entry (dotted keys, e.g. {"w10": {"train.w_geometry": 10}}) into
<scratch>/<name>/<loss>/ (resumed / reused like the pipeline's own runs). Printed per network:
  - training images/s and minutes (the run's summary.json, when there is one);
  - on the first --test images of the synthetic test split: 68-landmark NME (%, ifn.evaluate), mean absolute error (deg) and slope of predicted on
    true angle for yaw / pitch / roll (ifn.evaluate.pose_axis_stats; slope 0 = the axis is ignored), the mean
    vertex error and pose-aligned shape error (mm), albedo, shading and photometric MAE (ifn.evaluate);
  - on the last --per-bin AFLW2000-3D dev images of each yaw bin that stage evaluate_real does not report
    (bench/tuning_split.py, shared with bench/refine_real_prior.py): 68-landmark NME (3DDFA protocol), mean and per yaw bin, and the
    correlation of predicted with annotated yaw (the benchmark's yaw sign is opposite to ours: a network that
    follows it has a negative correlation) and the spread (SD, deg) of the predicted pitch and roll (the
    benchmark annotates only yaw; an SD near 0 means the network ignores that axis on real photos).
Numbers are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import ifn.evaluate_real as er
from ifn.config import load_params
from ifn.corpus import Corpus
from ifn.evaluate import evaluate_variant
from ifn.learn.train import load_network, train
from ifn.nme import nme, nme_report
from ifn.paths import resolve
from ifn.synth import build_renderer
from tuning_split import tuning_indices  # bench/ (the script's folder is on sys.path)

REFLECTANCE = "models/face_model/reflectance.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="*", default=["model_space=models/train/model_space/model.pt",
                                                       "parameter=models/train/parameter/model.pt"])
    ap.add_argument("--train", default="{}", help="JSON {name: {dotted params key: value}} to train first")
    ap.add_argument("--loss", default="model_space")
    ap.add_argument("--corpus", default=None, help="corpus folder (default: synthesize.out_dir)")
    ap.add_argument("--scratch", default="/tmp/pose_ablation")
    ap.add_argument("--per-bin", type=int, default=20)
    ap.add_argument("--test", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    params = load_params("params.yaml")
    networks = dict(item.split("=", 1) for item in args.networks)
    for name, overrides in json.loads(args.train).items():
        t0 = time.perf_counter()
        out = Path(args.scratch) / name
        summary = train("params.yaml", args.loss, corpus_dir=args.corpus, out_dir=out, reflectance_path=REFLECTANCE,
                        overrides=overrides, log=lambda *a: None)
        print(f"trained {name} ({args.loss}, {overrides}): {summary['epochs']} epochs, best val loss "
              f"{summary.get('best_val_loss', float('nan')):.4g}, {time.perf_counter() - t0:.0f} s", flush=True)
        networks[name] = str(out / args.loss / "model.pt")

    corpus = Corpus.open(resolve(args.corpus or params.synthesize.out_dir))
    renderer = build_renderer(params, REFLECTANCE, image_size=corpus.meta["image_size"])
    n = min(args.test, len(corpus.load("test", "params")))
    test = {k: np.asarray(corpus.load("test", k)[:n]) for k in ("images", "params", "masks")}
    bench = er.benchmark_crops(params, 0, corpus.meta["image_size"], log=lambda *a: None,
                               indices=tuning_indices(params, args.per_bin))
    print(f"{n} synthetic test images; {len(bench['crops'])} AFLW2000-3D dev images (up to {args.per_bin} "
          f"per yaw bin, none of evaluate_real's)")
    header = (f"{'network':28s} {'img/s':>5s} {'min':>4s} | {'syn NME %':9s} {'|err| deg yaw/pitch/roll':25s} {'slope y/p/r':17s} {'vertex mm':9s}"
              f" {'shape mm':8s} {'albedo':6s} {'shading':7s} {'photo':6s}"
              f" | {'real NME % mean (0-30/30-60/60-90), plain; flip-averaged pose':60s} {'corr(yaw)':9s} SD pitch/roll")
    print(header)
    print("-" * len(header))
    rot = renderer.layout["rotation"]
    for name, path in networks.items():
        net = load_network(path)[0]
        summary, _ = evaluate_variant(renderer, net, test["images"], test["params"], test["masks"])
        est = er.Estimator(net)(renderer, bench["crops"])[0]
        rep = nme_report(nme(er.landmarks_in_image(renderer, est, bench["affines"]), bench["pts68"]),
                         bench["yaw_deg"])
        angles = np.degrees(est[:, rot].numpy())                       # (N, 3) yaw, pitch, roll
        corr = float(np.corrcoef(angles[:, 0], bench["yaw_deg"])[0, 1])
        errs = "/".join(f"{summary[f'{a}_abs_deg']:.1f}" for a in ("yaw", "pitch", "roll"))
        slopes = "/".join(f"{summary[f'{a}_slope']:.2f}" for a in ("yaw", "pitch", "roll"))
        flip = er.Estimator(net, flip_pose=True)(renderer, bench["crops"])[0]
        rep_flip = nme_report(nme(er.landmarks_in_image(renderer, flip, bench["affines"]), bench["pts68"]),
                              bench["yaw_deg"])
        nmes = " ".join(f"{100 * r['nme_mean']:.2f} ({100 * r['nme_0_30']:.1f}/{100 * r['nme_30_60']:.1f}/"
                        f"{100 * r['nme_60_90']:.1f})" for r in (rep, rep_flip))
        info = Path(path).with_name("summary.json")
        info = json.loads(info.read_text()) if info.exists() else {}
        speed, minutes = info.get("images_per_second", float("nan")), (info.get("train_seconds") or float("nan")) / 60
        syn = f"{100 * summary['landmark_nme_mean']:.2f}"
        print(f"{name:28s} {speed:5.0f} {minutes:4.1f} | {syn:9s} {errs:25s} {slopes:17s} {summary['geometry_mm_mean']:9.2f} "
              f"{summary['shape_mm_mean']:8.2f} {summary['reflectance_mae']:6.4f} {summary['shading_mae']:7.4f} "
              f"{summary['photometric_mae']:6.4f} | {nmes:60s} {corr:+9.2f} "
              f"{angles[:, 1].std():.1f}/{angles[:, 2].std():.1f}",
              flush=True)


if __name__ == "__main__":
    main()
