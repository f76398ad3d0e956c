"""What does a network get wrong on real photos? Probes on the AFLW2000-3D tuning images.

    python bench/real_probe.py NETWORK.pt [...] [--per-bin 100]

Runs after the pipeline (needs models/face_model/reflectance.npz, the benchmark and the corpus for the
expression statistics). The tuning images (bench/tuning_split.py) only; every estimate with the flip-averaged
pose (evaluate_real.flip_pose). Printed per network, never asserted:
  - the slope of the predicted on the annotated yaw per yaw bin (1 = follows it, 0 = ignores it) and the NME
    (mean and per bin) for the crops as they are and for test-time input changes: contrast around the image mean
    x 0.4 .. 0.8 and x 1.5 (PIL ImageEnhance.Contrast), a 1.1x / 1.2x zoom around the crop centre (landmarks mapped
    back), a greyscale image, and everything outside the annotated landmarks' hull (grown 1.1x) greyed out (an
    oracle mask: diagnosis only);
  - the mean vertical offset of each landmark group from the annotation (box sides; + = too low);
  - the largest mean expression weights on the photos against the corpus's, the fraction outside [0, 1], and the
    NME with the expression set to zero (an oracle of sorts) or clamped to [0, 1].
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from scipy.spatial import ConvexHull

import ifn.evaluate_real as er
from ifn.config import load_params
from ifn.corpus import Corpus
from ifn.learn.train import load_network
from ifn.nme import nme, nme_report
from ifn.paths import resolve
from ifn.synth import build_renderer
from tuning_split import tuning_indices  # bench/ (the script's folder is on sys.path)

BINS = ((0, 30), (30, 60), (60, 1000))
GROUPS = {"brows": range(17, 27), "eyes": range(36, 48), "nose": range(27, 36), "mouth": range(48, 68),
          "jaw": range(0, 17), "chin": (7, 8, 9)}


def zoom(im: Image.Image, z: float) -> Image.Image:
    s = im.size[0]
    w = s / z
    o = (s - w) / 2
    return im.transform((s, s), Image.EXTENT, (o, o, o + w, o + w), Image.BILINEAR)


def zoom_affine(z: float, s: int) -> np.ndarray:
    """(3, 3) zoomed-crop px -> crop px."""
    c = s / 2 * (1 - 1 / z)
    return np.array([[1 / z, 0, c], [0, 1 / z, c], [0, 0, 1]])


def hull_mask(points: np.ndarray, s: int, grow: float = 1.1) -> np.ndarray:
    c = points.mean(0)
    p = c + (points - c) * grow
    im = Image.new("L", (s, s), 0)
    ImageDraw.Draw(im).polygon([tuple(x) for x in p[ConvexHull(p).vertices]], fill=255)
    return np.asarray(im.filter(ImageFilter.GaussianBlur(2)), np.float32)[..., None] / 255


def fmt(r: dict) -> str:
    return (f"{100 * r['nme_mean']:6.2f} ({100 * r['nme_0_30']:.1f}/{100 * r['nme_30_60']:.1f}/"
            f"{100 * r['nme_60_90']:.1f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("networks", nargs="+")
    ap.add_argument("--per-bin", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params("params.yaml")
    corpus = Corpus.open(resolve(params.synthesize.out_dir))
    size = int(corpus.meta["image_size"])
    renderer = build_renderer(params, "models/face_model/reflectance.npz", image_size=size)
    bench = er.benchmark_crops(params, 0, size, log=lambda *a: None, indices=tuning_indices(params, args.per_bin))
    crops, affines, yaw = bench["crops"], bench["affines"], bench["yaw_deg"]
    truth = np.asarray(bench["pts68"], np.float64)                                   # (N, 68, 2) image px
    in_crop = np.stack([(np.linalg.inv(np.vstack([a, [0, 0, 1]]))[:2] @ np.c_[p, np.ones(68)].T).T
                        for a, p in zip(affines, truth)])
    rot, ex = renderer.layout["rotation"], renderer.layout["expression"]
    names = renderer.face_model.expression_names
    corpus_expr = np.asarray(corpus.load("test", "params"))[:, ex]

    def pil(f):
        return np.stack([np.asarray(f(Image.fromarray(c)).convert("RGB")) for c in crops])

    masks = np.stack([hull_mask(p, size) for p in in_crop])
    inputs = {"as is": (crops, 1.0)}
    for c in (0.4, 0.6, 0.8, 1.5):
        inputs[f"contrast x{c}"] = (pil(lambda im, c=c: ImageEnhance.Contrast(im).enhance(c)), 1.0)
    for z in (1.1, 1.2):
        inputs[f"zoom {z}x"] = (pil(lambda im, z=z: zoom(im, z)), z)
    inputs["greyscale"] = (pil(lambda im: im.convert("L")), 1.0)
    inputs["outside the hull grey (oracle)"] = ((crops * masks + 128 * (1 - masks)).astype(np.uint8), 1.0)

    def report(est, z=1.0):
        aff = np.stack([a @ zoom_affine(z, size) for a in affines])
        return nme_report(nme(er.landmarks_in_image(renderer, est, aff), bench["pts68"]), yaw)

    for path in args.networks:
        net = load_network(path)[0]
        print(f"\n{path}: {len(crops)} tuning images")
        print(f"  {'input':32s} {'yaw slope per bin':20s} NME % mean (bins)")
        for name, (images, z) in inputs.items():
            est = er.Estimator(net, flip_pose=True)(renderer, images)[0]
            pred = -np.degrees(est[:, rot].numpy())[:, 0]          # the benchmark's yaw sign is opposite to ours
            slopes = []
            for lo, hi in BINS:
                m = (np.abs(yaw) >= lo) & (np.abs(yaw) < hi)
                slopes.append(f"{np.polyfit(yaw[m], pred[m], 1)[0]:.2f}" if m.sum() > 2 else "-")
            print(f"  {name:32s} {'/'.join(slopes):20s} {fmt(report(est, z))}")
        est = er.Estimator(net, flip_pose=True)(renderer, crops)[0]
        lm = er.landmarks_in_image(renderer, est, affines)
        side = np.sqrt(np.prod(truth.max(1) - truth.min(1), 1))
        for lo, hi in BINS:
            m = (np.abs(yaw) >= lo) & (np.abs(yaw) < hi)
            dy = " ".join(f"{k} {((lm[m][:, list(v), 1] - truth[m][:, list(v), 1]).mean(1) / side[m]).mean():+.3f}"
                          for k, v in GROUPS.items())
            print(f"  vertical offset / box side, |yaw| in [{lo}, {min(hi, 90)}): {dy}")
        e = est[:, ex].numpy()
        top = np.argsort(-e.mean(0))[:8]
        print("  expression, photos (corpus):", ", ".join(f"{names[i]} {e[:, i].mean():.2f} ({corpus_expr[:, i].mean():.2f})"
                                                    for i in top))
        print(f"  weight sum {e.sum(1).mean():.2f} (corpus {corpus_expr.sum(1).mean():.2f}); outside [0, 1]: "
              f"{100 * ((e < 0) | (e > 1)).mean():.1f} %")
        for name, f in (("expression zero", lambda x: x * 0), ("expression clamped to [0, 1]", lambda x: x.clamp(0, 1))):
            p = est.clone()
            p[:, ex] = f(p[:, ex])
            print(f"  {name:32s} {'':20s} {fmt(report(p))}")


if __name__ == "__main__":
    main()
