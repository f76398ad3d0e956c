"""How many times the network should look again at its crop turned upright by its own roll estimate (params.yaml
`evaluate_real.upright_passes`, ifn.upright), measured on the AFLW2000-3D tuning images (bench/tuning_split.py)
for every network of stage evaluate_real (flip-averaged pose, as there), and in-domain on the synthetic test split.

    python bench/upright.py [--passes 0,1,2] [--per-bin 100] [--no-synthetic]

Printed per network and number of passes: 68-landmark NME % (mean of images, and per yaw bin) and, for the faces
within 30 degrees of frontal, the slope of the eye line's angle in the estimate's landmarks on the annotation's
(1 = the network reads the in-plane tilt fully, 0 = not at all). Synthetic: the model-space network's geodesic
rotation error, per-axis errors and NME on the test split (no flip, as stage evaluate_synthetic). Needs the
trained networks (`make repro`). Run on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tuning_split import tuning_indices  # noqa: E402

from ifn.apps.checkpoint import load_checkpoint  # noqa: E402
from ifn.config import load_params  # noqa: E402
from ifn.corpus import Corpus  # noqa: E402
from ifn.evaluate import pose_axis_stats, predict, rotation_error_deg  # noqa: E402
from ifn.evaluate_real import (benchmark_crops, guided_networks, landmarks_in_image, network_estimate,  # noqa: E402
                               variant_networks)
from ifn.nme import nme, nme_report  # noqa: E402
from ifn.paths import resolve  # noqa: E402
from ifn.synth import build_renderer  # noqa: E402
from ifn.upright import upright_estimate  # noqa: E402


def eye_line_deg(points: np.ndarray) -> np.ndarray:
    """(N, 68, 2) image pixels -> (N,) angle of the line from the left eye's centre to the right eye's, degrees."""
    d = points[:, 42:48].mean(1) - points[:, 36:42].mean(1)
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", default="0,1,2", type=lambda t: [int(v) for v in t.split(",") if v.strip()])
    ap.add_argument("--per-bin", type=int, default=100)
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    params = load_params(args.params)
    renderer = build_renderer(params)
    layout = renderer.layout
    size = renderer.settings.image_size
    paths = {**variant_networks(params), **guided_networks(params)}
    if params.detect.enabled:
        paths["real_finetuned"] = f"{params.finetune.out_dir}/model.pt"
    nets = {name: load_checkpoint(resolve(p))[0] for name, p in paths.items()}
    bench = benchmark_crops(params, 0, size, indices=tuning_indices(params, args.per_bin))
    gt, yaw = bench["pts68"], bench["yaw_deg"]
    frontal = np.abs(yaw) < 30
    gt_eye = eye_line_deg(gt)[frontal]
    print(f"{len(gt)} tuning images ({int(frontal.sum())} within 30 degrees of frontal, their eye line tilted "
          f"{np.abs(gt_eye).mean():.1f} degrees on average)")
    print(f"{'network':<16} {'passes':>6} | NME % images  [0,30)  [30,60)  [60,90] | bins mean | eye-line slope [0,30)")
    for name, net in nets.items():
        for passes in args.passes:
            est = network_estimate(net, bench["crops"], layout, params.evaluate_real.batch_size,
                                   params.evaluate_real.flip_pose, passes)
            lm = landmarks_in_image(renderer, est, bench["affines"])
            err = nme(lm, gt)
            r = nme_report(err, yaw)
            slope = np.polyfit(gt_eye, eye_line_deg(lm)[frontal], 1)[0]
            print(f"{name:<16} {passes:>6} | {100 * err.mean():12.2f} {100 * r['nme_0_30']:7.2f} "
                  f"{100 * r['nme_30_60']:8.2f} {100 * r['nme_60_90']:8.2f} | {100 * r['nme_mean']:9.2f} | "
                  f"{slope:.2f}", flush=True)
    if args.no_synthetic:
        return
    corpus = Corpus.open(resolve(params.synthesize.out_dir))
    images = corpus.load("test", "images", mmap=False)
    true = torch.from_numpy(corpus.load("test", "params", mmap=False)).float()
    net = load_checkpoint(resolve(f"{params.train.out_dir}/{params.train.loss}/model.pt"))[0]
    with torch.no_grad():
        true_lm = renderer.landmarks(renderer.posed(true)).double().numpy()
    print(f"synthetic test split ({len(images)} images), {params.train.loss} network, no flip:")
    for passes in args.passes:
        est = upright_estimate(lambda x: predict(net, x, params.evaluate_real.batch_size), images, layout, passes)
        rot = rotation_error_deg(est[:, layout["rotation"]], true[:, layout["rotation"]]).numpy()
        axis = pose_axis_stats(est[:, layout["rotation"]].numpy(), true[:, layout["rotation"]].numpy())
        with torch.no_grad():
            err = nme(renderer.landmarks(renderer.posed(est)).double().numpy(), true_lm)
        print(f"  passes {passes}: rotation {rot.mean():.2f} deg (yaw / pitch / roll {axis['yaw_abs_deg']:.2f} / "
              f"{axis['pitch_abs_deg']:.2f} / {axis['roll_abs_deg']:.2f}), NME {100 * err.mean():.2f} %", flush=True)


if __name__ == "__main__":
    main()
