"""Which label-free number ranks networks like the real-photo NME? Candidates for a breeding round's acceptance test.

    python bench/label_free.py NAME=model.pt [NAME=model.pt ...] [--photos 240] [--per-bin 100]

Per network, on `--photos` held-out unlabelled real crops (ifn.evaluate_real.heldout_photos: the part of
data/real that breeding never sees, no labels):
  flip      mean distance between the 68 projected landmarks of a crop's estimate and those of its mirror
            image's estimate mirrored back (point order mirrored too), % of the crop side: a label-free
            self-consistency;
  photo     photometric MAE (sRGB) of the network's estimate over the rendered face (ifn.evaluate.photo_errors);
  shift     mean landmark movement (% of the crop side) of 30 steps of photometric refinement with the
            network's pose kept (params `refine`, groups of breed.refine_groups): how far the photos pull the fit;
and, for scale, the 68-landmark NME (%) on the AFLW2000-3D tuning images (bench/tuning_split.py), mean and
per yaw bin. Then the rank correlation (Spearman) of each label-free column with the NME over the networks.
Numbers are printed, never asserted.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import ifn.evaluate_real as er
from ifn.breed import landmark_shift
from ifn.config import load_params
from ifn.evaluate import photo_errors, predict
from ifn.fit import refine
from ifn.learn.train import load_network
from ifn.nme import nme, nme_report
from ifn.synth import build_renderer
from tuning_split import tuning_indices  # bench/ (the script's folder is on sys.path)

REFLECTANCE = "models/face_model/reflectance.npz"
# iBUG 68-point order of the horizontally mirrored face.
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


def flip_inconsistency(renderer, net, crops: np.ndarray) -> np.ndarray:
    """(N,) mean landmark distance between a crop's estimate and its mirror image's, mirrored back, / side."""
    size = crops.shape[1]
    with torch.no_grad():
        a = renderer.landmarks(renderer.posed(predict(net, crops))).double().numpy()
        b = renderer.landmarks(renderer.posed(predict(net, np.ascontiguousarray(crops[:, :, ::-1])))).double().numpy()
    b = b[:, MIRROR_68]
    b[..., 0] = size - b[..., 0]
    return np.nanmean(np.linalg.norm(a - b, axis=-1), -1) / size


def spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def main() -> None:
    assert sorted(MIRROR_68.tolist()) == list(range(68))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("networks", nargs="+", help="NAME=model.pt")
    ap.add_argument("--photos", type=int, default=240)
    ap.add_argument("--per-bin", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params("params.yaml")
    size = params.real.working_size(params.render.image_size)
    renderer = build_renderer(params, REFLECTANCE, image_size=size)
    crops, _ = er.heldout_photos(params, args.photos, size, log=lambda *a: None)
    images = torch.from_numpy(crops).float() / 255
    bench = er.benchmark_crops(params, 0, size, log=lambda *a: None, indices=tuning_indices(params, args.per_bin))
    print(f"{len(crops)} held-out unlabelled crops; {len(bench['crops'])} AFLW2000-3D tuning images")
    print(f"{'network':28s} {'flip %':>7s} {'photo':>7s} {'shift %':>8s} | NME % mean (0-30/30-60/60-90)")
    rows = []
    for item in args.networks:
        name, path = item.split("=", 1)
        net = load_network(path)[0]
        flip = flip_inconsistency(renderer, net, crops).mean()
        est = predict(net, crops)
        photo = photo_errors(renderer, est, images)["photometric_mae"].mean().item()
        kw = {**params.refine.refine_kwargs(), "steps": 30, "free": tuple(params.breed.refine_groups)}
        fitted = torch.cat([refine(renderer, images[s:s + 32], est[s:s + 32], **kw)[0] for s in range(0, len(crops), 32)])
        shift = landmark_shift(renderer, est, fitted).mean()
        b = er.network_estimate(net, bench["crops"], renderer.layout, flip_pose=False)
        rep = nme_report(nme(er.landmarks_in_image(renderer, b, bench["affines"]), bench["pts68"]), bench["yaw_deg"])
        rows.append((flip, photo, shift, rep["nme_mean"]))
        print(f"{name:28s} {100 * flip:7.3f} {photo:7.4f} {100 * shift:8.3f} | {100 * rep['nme_mean']:.2f} "
              f"({100 * rep['nme_0_30']:.1f}/{100 * rep['nme_30_60']:.1f}/{100 * rep['nme_60_90']:.1f})", flush=True)
    if len(rows) > 2:
        r = np.array(rows)
        print("Spearman with NME: " + ", ".join(f"{k} {spearman(r[:, i], r[:, 3]):+.2f}"
                                                for i, k in enumerate(("flip", "photo", "shift"))))


if __name__ == "__main__":
    main()
