"""Does the synthetic framing teach a false pose cue? A corpus framed like the real crops, for bench/pose_ablation.py.

    python bench/framing_ablation.py --out /tmp/corpus_framed [--size 0.683] [--size-jitter 0.03] [--centre-y 0.03]
        [--centre-jitter 0.03]
    python bench/pose_ablation.py --corpus /tmp/corpus_framed --train '{"framed": {}}' --networks base=... --per-bin 100

Real crops (AFLW2000-3D roi boxes, the real photos' per-source rules, the detector's boxes) are framed by the box of
the face's 68 landmarks: on the tuning images that box is centred (x offset, signed towards the face's side, +0.00
/ +0.00 / +0.01 of the crop side per yaw bin) and of the same size at every yaw (sqrt(w h) / side 0.686 / 0.681 /
0.677). The synthetic corpus centres the rotated 3D landmark centroid instead, so its landmark box moves sideways
with yaw (-0.07 / -0.14 / -0.12 of the side) and shrinks (0.676 / 0.644 / 0.598): a cue "face off-centre and
small = turned" that real crops never show. This script writes the default corpus of params.yaml (the same
sampled shape, expression, albedo, light and rotation: the sampler's random stream is untouched) with each
sample's translation changed so that its projected 68-landmark box has side `size` x U(1 -+ size_jitter) of the
image and its centre sits at (0, centre_y) + U(-+centre_jitter) of the side. Printed, never asserted; an
experiment, not (yet) a pipeline option.
"""
from __future__ import annotations

import argparse
import math

import torch

import ifn.synth as synth
from ifn.config import load_params
from ifn.paths import resolve


def reframe(renderer, groups: dict[str, torch.Tensor], g: torch.Generator, size: float, size_jitter: float,
            centre_y: float, centre_jitter: float) -> dict[str, torch.Tensor]:
    """Change groups["translation"] (B, 3) so the projected 68-landmark box has the drawn size and centre."""
    s = renderer.settings
    px = s.image_size
    focal = (px / 2) / math.tan(math.radians(s.fov_deg) / 2)
    b = groups["translation"].shape[0]
    want = size * (1 + size_jitter * (2 * torch.rand(b, generator=g) - 1))
    cx = centre_jitter * (2 * torch.rand(b, generator=g) - 1)
    cy = centre_y + centre_jitter * (2 * torch.rand(b, generator=g) - 1)
    t = groups["translation"].clone()
    for _ in range(3):   # perspective: a few fixed-point steps (each one near-exact at 13 degrees of view)
        lm = renderer.landmarks(renderer.posed({**groups, "translation": t}))          # (B, 68, 2) px
        lo, hi = lm.amin(1), lm.amax(1)
        have = (hi - lo).prod(-1).sqrt() / px
        depth = s.distance_cm - t[:, 2]
        t[:, 2] = s.distance_cm - depth * have / want                                    # scale by depth
        depth = s.distance_cm - t[:, 2]
        centre = (lo + hi) / 2 / px - 0.5                                                # (B, 2) of the side
        # image x right = camera +x; image y down = camera -y; 1 px at depth d is d / focal cm
        t[:, 0] += (cx - centre[:, 0] * have / want) * px * depth / focal
        t[:, 1] -= (cy - centre[:, 1] * have / want) * px * depth / focal
    return {**groups, "translation": t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=float, default=0.683)
    ap.add_argument("--size-jitter", type=float, default=0.03)
    ap.add_argument("--centre-y", type=float, default=0.03)
    ap.add_argument("--centre-jitter", type=float, default=0.03)
    args = ap.parse_args()
    params = load_params(resolve("params.yaml"))
    renderer = synth.build_renderer(params)
    sample = synth.sample_parameters
    g = torch.Generator().manual_seed(params.seed + 7919)

    def framed(*a, **k):
        return reframe(renderer, sample(*a, **k), g, args.size, args.size_jitter, args.centre_y, args.centre_jitter)

    synth.sample_parameters = framed
    synth.build_renderer = lambda *a, **k: renderer
    meta = synth.synthesize(out_dir=args.out, log=lambda *a: None)
    print(f"corpus with landmark-box framing: {meta['counts']} in {meta['seconds']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
