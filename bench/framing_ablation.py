"""Does the synthetic framing teach a false pose cue? Corpora of either framing, and where their landmark boxes sit.

    python bench/framing_ablation.py --out /tmp/corpus_centroid --mode centroid      # the other framing's corpus
    python bench/pose_ablation.py --corpus /tmp/corpus_centroid --train '{"centroid": {}}' --networks base=... \
        --per-bin 100
    python bench/framing_ablation.py --measure outputs/corpus [/tmp/corpus_centroid ...]

Real crops are framed by the box of the face's 68 landmarks (ifn.framing). `--out` writes the corpus of params.yaml
with `synthesize.framing.mode` set to `--mode` (everything else as params.yaml). `--measure` prints, per yaw bin, the
landmark box size sqrt(w h) / side and its centre (x signed towards the side the face turns to, y down) of the
tuning images' crops (as stage evaluate_real cuts them) and of each corpus' test split. Printed, never asserted.

Measured (README "Benchmark"): on the tuning images the box is centred (x +0.00 / +0.00 / +0.01) and of one size
(0.686 / 0.681 / 0.677); the centroid corpus' box moves (x -0.07 / -0.14 / -0.12) and shrinks (0.676 / 0.644 /
0.598), and a network trained on the landmark-box corpus reaches tuning NME 16.88 vs 18.56 % (flip-averaged pose).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

BINS = ((0, 30), (30, 60), (60, 91))


def box_stats(points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 68, 2) px -> box side sqrt(w h) / size (N,), centre offset / size (N, 2) (ifn.framing.landmark_box)."""
    from ifn.framing import landmark_box

    side, centre = landmark_box(torch.from_numpy(np.asarray(points, np.float64)), size)
    return side.numpy(), centre.numpy()


def print_bins(name: str, size: np.ndarray, centre: np.ndarray, yaw_deg: np.ndarray) -> None:
    cells = []
    for lo, hi in BINS:
        m = (np.abs(yaw_deg) >= lo) & (np.abs(yaw_deg) < hi)
        sx = centre[m, 0] * np.sign(yaw_deg[m])
        cells.append(f"[{lo},{min(hi, 90)}] n {m.sum():3d} size {size[m].mean():.3f}+-{size[m].std():.3f} "
                     f"x {sx.mean():+.3f} y {centre[m, 1].mean():+.3f}")
    print(f"{name:28s} " + " | ".join(cells))


def measure(corpora: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import ifn.evaluate_real as er
    from ifn.config import load_params
    from ifn.corpus import Corpus
    from ifn.model.layout import ParamLayout
    from ifn.paths import resolve
    from ifn.real import apply_affine, invert_affine
    from tuning_split import tuning_indices

    params = load_params(resolve("params.yaml"))
    px = params.render.image_size
    bench = er.benchmark_crops(params, 0, px, indices=tuning_indices(params, 100), log=lambda *a: None)
    pts = np.stack([apply_affine(invert_affine(a), p) for a, p in zip(bench["affines"], bench["pts68"])])
    print_bins("tuning images", *box_stats(pts, px), bench["yaw_deg"])
    for folder in corpora:
        corpus = Corpus.open(folder)
        lm = np.asarray(corpus.load("test", "landmarks"))
        p = np.asarray(corpus.load("test", "params"))
        layout = ParamLayout(*(corpus.meta["layout"][k] for k in ("shape", "expression", "reflectance")))
        yaw = np.degrees(p[:, layout["rotation"]][:, 0])
        mode = corpus.meta["synthesize"].get("framing", {}).get("mode", "centroid")
        print_bins(f"{Path(folder).name} ({mode})", *box_stats(lm, corpus.meta["image_size"]), yaw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write a corpus of params.yaml with framing --mode here")
    ap.add_argument("--mode", default="centroid", choices=("centroid", "landmark_box"))
    ap.add_argument("--measure", nargs="+", metavar="CORPUS", help="print the landmark boxes of these corpora")
    args = ap.parse_args()
    if args.out:
        from ifn.synth import synthesize

        meta = synthesize(out_dir=args.out, overrides={"synthesize.framing.mode": args.mode},
                          log=lambda *a: None)
        print(f"corpus with {args.mode} framing: {meta['counts']} in {meta['seconds']:.0f} s -> {args.out}")
    if args.measure:
        measure(args.measure)
    if not (args.out or args.measure):
        ap.error("nothing to do: --out and/or --measure")


if __name__ == "__main__":
    main()
