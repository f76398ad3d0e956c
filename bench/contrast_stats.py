"""How flat are the renders next to the photos? Luma statistics of real crops against synthetic images.

    python bench/contrast_stats.py [--corpus DIR ...] [--per-bin 100] [--n 512] [--augment KEY=VALUE ...]

Runs after the pipeline (needs the corpus; the real crops are the AFLW2000-3D tuning images of
bench/tuning_split.py, cropped like stage evaluate_real's). For each image set, the mean over images of:
  - luma mean and SD over the whole crop;
  - luma mean and SD over its central 3/8 x 3/8 window (mostly face in both domains);
  - mean absolute horizontal luma difference of neighbouring pixels in that window (detail: edges, texture);
each at the corpus size (128 px by default). The synthetic rows are the first --n test images of each corpus as
rendered, and (with --augment) after the training augmentation of params.yaml `train.augment` with the given
overrides (e.g. contrast_boost=3), at the corpus size, backgrounds composited where the corpus has masks.
Printed, never asserted.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import ifn.evaluate_real as er
from ifn.config import load_params
from ifn.corpus import Corpus
from ifn.learn.data import Augment, batch_generator
from ifn.paths import resolve
from ifn.real import background_bank
from tuning_split import tuning_indices  # bench/ (the script's folder is on sys.path)

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def stats(images: np.ndarray) -> dict[str, float]:
    """(N, S, S, 3) uint8 or float in [0, 1] -> the printed statistics."""
    x = images.astype(np.float32)
    x = (x / 255 if images.dtype == np.uint8 else x) @ LUMA
    s = x.shape[1]
    c = slice(int(round(s * 5 / 16)), int(round(s * 11 / 16)))
    centre = x[:, c, c]
    return {"mean": float(x.mean()), "sd": float(x.std((1, 2)).mean()), "centre_mean": float(centre.mean()),
            "centre_sd": float(centre.std((1, 2)).mean()),
            "detail": float(np.abs(np.diff(centre, axis=2)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", nargs="*", default=None, help="corpus folders (default: synthesize.out_dir)")
    ap.add_argument("--per-bin", type=int, default=100)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--augment", nargs="*", default=None, help="train.augment overrides KEY=VALUE ('' for none)")
    args = ap.parse_args()
    params = load_params("params.yaml")
    corpora = args.corpus or [params.synthesize.out_dir]
    size = Corpus.open(resolve(corpora[0])).meta["image_size"]
    bench = er.benchmark_crops(params, 0, size, log=lambda *a: None, indices=tuning_indices(params, args.per_bin))
    rows = [(f"real: {len(bench['crops'])} tuning crops", stats(bench["crops"]))]
    for folder in corpora:
        corpus = Corpus.open(resolve(folder))
        n = min(args.n, len(corpus.load("test", "params")))
        images = np.asarray(corpus.load("test", "images")[:n])
        rows.append((f"synthetic: {folder}, {n} test images", stats(images)))
        if args.augment is not None:
            overrides = {f"train.augment.{k}": float(v) for k, v in (a.split("=", 1) for a in args.augment if a)}
            cfg = load_params("params.yaml", overrides).train.augment
            bank = (background_bank(params.real, cfg.background_photos, size, params.seed)
                    if cfg.photo_background_prob > 0 else None)
            aug = Augment.from_config(cfg, corpus.meta, backgrounds=bank)
            masks = torch.from_numpy(np.asarray(corpus.load("test", "masks")[:n]))
            face = (torch.from_numpy(np.asarray(corpus.load("test", "face_masks")[:n]))
                    if cfg.face_only_prob > 0 else None)
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
            p = torch.from_numpy(np.asarray(corpus.load("test", "params")[:n]))
            out, _ = aug(x, p, batch_generator(0, 0, 0), masks, face)
            rows.append((f"  ... augmented ({' '.join(args.augment) or 'params.yaml'})",
                         stats(out.permute(0, 2, 3, 1).numpy())))
    print(f"{'images':60s} {'mean':>6s} {'SD':>6s} {'centre mean':>11s} {'centre SD':>9s} {'detail':>7s}")
    for name, r in rows:
        print(f"{name:60s} {r['mean']:6.3f} {r['sd']:6.3f} {r['centre_mean']:11.3f} {r['centre_sd']:9.3f} "
              f"{r['detail']:7.4f}")


if __name__ == "__main__":
    main()
