"""Which breeding setting lowers real-photo NME? Detector-free breeding chains trained side by side, one table.

    python bench/breed_ablation.py [--variants '{"name": {dotted params key: value}}'] [--rounds 2]
        [--start models/train/model_space] [--networks NAME=model.pt ...] [--scratch /tmp/breed_ablation]
        [--per-bin 100]

Runs after the pipeline's train stage (needs the corpus, models/face_model/reflectance.npz, the start network).
Each entry of --variants runs `--rounds` rounds of the detector-free chain (ifn.breed.breed_round) from --start
with params.yaml overridden by the entry (dotted keys, e.g. {"pose_kept": {"breed.refine_groups": ["shape",
"expression", "reflectance", "illumination"]}}, {"no_refine": {"breed.refine_steps": 0}}) into
<scratch>/<name>/round_<k> (breed.out_dir and breed.rounds overridden, breed.guided_rounds {}; a finished round
is reused like the pipeline's). Networks given with --networks (e.g. the pipeline's models/breed/round_1) are
evaluated as they are. Printed per network, on the last --per-bin AFLW2000-3D dev images of each yaw bin that
stage evaluate_real does not report (bench/tuning_split.py): 68-landmark NME (3DDFA protocol), mean and per yaw
bin, of the network's plain estimates, with the pose flip-averaged (ifn.evaluate_real.network_estimate) and with
stage evaluate_real's looks (params evaluate_real.flip_pose, upright_passes), and the correlation of predicted
with annotated yaw (the benchmark's yaw sign is opposite to ours); for a bred round also the photometric MAE of its
breeding photos before and after refinement, and its minutes.
Numbers are printed, never asserted; run it on an otherwise idle machine (the rounds' fine-tuning has a time
budget, breed.max_minutes).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import ifn.evaluate_real as er
from ifn.breed import breed_round
from ifn.config import load_params
from ifn.learn.train import load_network
from ifn.nme import nme, nme_report
from ifn.synth import build_renderer
from tuning_split import tuning_indices  # bench/ (the script's folder is on sys.path)

REFLECTANCE = "models/face_model/reflectance.npz"


def chain_overrides(scratch: Path, start: str, rounds: int, extra: dict) -> dict:
    """params overrides of one variant: its own breed.out_dir and a chain of `rounds` rounds from `start`."""
    chain = {f"round_{k + 1}": start if k == 0 else f"{scratch}/round_{k}" for k in range(rounds)}
    return {**extra, "breed.out_dir": str(scratch), "breed.rounds": chain, "breed.guided_rounds": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="{}", help="JSON {name: {dotted params key: value}} to breed")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--start", default="models/train/model_space", help="folder of the network round 1 tunes")
    ap.add_argument("--networks", nargs="*", default=[], help="NAME=model.pt evaluated as they are")
    ap.add_argument("--scratch", default="/tmp/breed_ablation")
    ap.add_argument("--per-bin", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    networks = {"start": f"{args.start}/model.pt", **dict(item.split("=", 1) for item in args.networks)}
    for name, extra in json.loads(args.variants).items():
        scratch = Path(args.scratch).resolve() / name
        overrides = chain_overrides(scratch, args.start, args.rounds, extra)
        for k in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            breed_round(f"round_{k}", overrides=overrides, reflectance_path=REFLECTANCE, log=lambda *a: None)
            print(f"bred {name}/round_{k} ({extra}): {time.perf_counter() - t0:.0f} s", flush=True)
            networks[f"{name}/round_{k}"] = str(scratch / f"round_{k}" / "model.pt")

    params = load_params("params.yaml")
    size = params.real.working_size(params.render.image_size)
    renderer = build_renderer(params, REFLECTANCE, image_size=size)
    bench = er.benchmark_crops(params, 0, size, log=lambda *a: None, indices=tuning_indices(params, args.per_bin))
    print(f"{len(bench['crops'])} AFLW2000-3D dev images (up to {args.per_bin} per yaw bin, none of evaluate_real's)")
    header = (f"{'network':28s} | {'real NME % mean (0-30/30-60/60-90)':36s} {'corr(yaw)':9s} | "
              f"{'with flip_pose':36s} | {'with flip + upright (evaluate_real)':36s} | "
              f"{'bred photos MAE network -> refined':34s} {'min':>4s}")
    print(header)
    print("-" * len(header))
    rot = renderer.layout["rotation"]
    for name, path in networks.items():
        net = load_network(path)[0]
        cells = []
        looks = ((False, 0), (True, 0), (params.evaluate_real.flip_pose, params.evaluate_real.upright_passes))
        for flip, passes in looks:
            est = er.network_estimate(net, bench["crops"], renderer.layout, flip_pose=flip, upright_passes=passes)
            rep = nme_report(nme(er.landmarks_in_image(renderer, est, bench["affines"]), bench["pts68"]),
                             bench["yaw_deg"])
            cells.append(f"{100 * rep['nme_mean']:.2f} ({100 * rep['nme_0_30']:.1f}/{100 * rep['nme_30_60']:.1f}/"
                         f"{100 * rep['nme_60_90']:.1f})")
            if not flip:
                corr = float(np.corrcoef(np.degrees(est[:, rot][:, 0].numpy()), bench["yaw_deg"])[0, 1])
        info = Path(path).with_name("summary.json")
        info = json.loads(info.read_text()) if info.exists() else {}
        bred = info.get("breeding", {})
        photo = (f"{bred['photometric_network']:.4f} -> {bred['photometric_refined']:.4f}" if bred else "")
        minutes = (info.get("train_seconds") or float("nan")) / 60 + bred.get("bred_seconds", 0.0) / 60
        print(f"{name:28s} | {cells[0]:36s} {corr:+9.2f} | {cells[1]:36s} | {cells[2]:36s} | {photo:34s} "
              f"{minutes:4.1f}", flush=True)


if __name__ == "__main__":
    main()
