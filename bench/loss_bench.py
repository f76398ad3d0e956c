"""Model-space loss: closed form vs brute force, ms per batch on this machine.

    python bench/loss_bench.py [--json] [--batch 64] [--repeats 7] [--threads 2] [--region full]

Times, for the default region with 80 shape / 53 expression / 80 reflectance parameters (a random reflectance
basis), float32:
  closed (gram given)   ModelSpaceLoss with the targets' (B, 9, 9) shading grams passed in (the training case:
                        the synthesis stage stores them), O(K^2) per sample
  closed (gram from GT) ModelSpaceLoss computing the grams from the ground-truth parameters (posed normals, O(V))
  brute force           brute_force_model_space: posed meshes, albedos, GT normals, per-vertex differences
each forward only and forward + backward (gradient w.r.t. the prediction). Reported: the median and the best of
`repeats` runs, and the brute force / closed form ratio of the medians. Numbers are printed, never asserted: they
depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from ifn.config import FaceModelConfig
from ifn.learn.losses import ModelSpaceLoss, brute_force_model_space
from ifn.model.facemodel import load_ict
from ifn.model.layout import ParamLayout
from ifn.model.reflectance import ReflectanceModel
from ifn.render.camera import Camera
from ifn.render.shading import AMBIENT_WHITE


def timings(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - t))
    return out


def random_params(layout: ParamLayout, batch: int, gen: torch.Generator) -> torch.Tensor:
    g = layout.zeros(batch)
    g["shape"] = torch.randn(batch, layout.n_shape, generator=gen)
    g["expression"] = torch.rand(batch, layout.n_expression, generator=gen)
    g["reflectance"] = torch.randn(batch, layout.n_reflectance, generator=gen)
    g["illumination"] = 0.3 * torch.randn(batch, 9, 3, generator=gen)
    g["illumination"][:, 0] += 0.8 * AMBIENT_WHITE
    g["rotation"] = (2 * torch.rand(batch, 3, generator=gen) - 1) * torch.tensor([math.radians(60), 0.4, 0.25])
    g["translation"] = 3 * torch.randn(batch, 3, generator=gen)
    return layout.join(g)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON list of rows instead of a table")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--region", default="full")
    ap.add_argument("--n-shape", type=int, default=80)
    ap.add_argument("--n-expression", type=int, default=53)
    ap.add_argument("--n-reflectance", type=int, default=80)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    fm = load_ict(FaceModelConfig(region=args.region, n_shape=args.n_shape, n_expression=args.n_expression))
    gen = torch.Generator().manual_seed(0)
    n = fm.n_vertices
    refl = ReflectanceModel(0.25 + 0.5 * torch.rand(n, 3, generator=gen),
                            0.02 * torch.randn(args.n_reflectance, n, 3, generator=gen), torch.ones(args.n_reflectance))
    layout = ParamLayout(args.n_shape, args.n_expression, args.n_reflectance)
    weights = fm.part_mask("face").float() + 0.1  # non-uniform, as in training (face-heavy)
    camera = Camera()

    t0 = time.perf_counter()
    loss = ModelSpaceLoss(fm, refl, layout, camera.distance_cm, vertex_weights=weights)
    build_ms = 1e3 * (time.perf_counter() - t0)
    pred0, target = random_params(layout, args.batch, gen), random_params(layout, args.batch, gen)
    with torch.no_grad():
        gram = loss.target_shading_gram(target)
    gram_ms = statistics.median(timings(lambda: loss.target_shading_gram(target), args.repeats))

    methods = {
        "closed (gram given)": lambda p: loss(p, target, shading_gram=gram)["loss"],
        "closed (gram from GT)": lambda p: loss(p, target)["loss"],
        "brute force": lambda p: brute_force_model_space(p, target, fm, refl, layout, camera, weights)["loss"],
    }

    def forward(fn):
        with torch.no_grad():
            fn(pred0)

    def forward_backward(fn):
        p = pred0.clone().requires_grad_()
        fn(p).backward()

    rows = []
    for method, fn in methods.items():
        for name, run in (("forward", forward), ("forward+backward", forward_backward)):
            t = timings(lambda: run(fn), args.repeats)
            rows.append({"method": method, "pass": name, "ms_median": round(statistics.median(t), 3),
                         "ms_best": round(min(t), 3), "batch": args.batch, "threads": args.threads,
                         "dtype": "float32", "region": args.region, "n_vertices": n,
                         "n_shape": args.n_shape, "n_expression": args.n_expression,
                         "n_reflectance": args.n_reflectance})
    brute = {r["pass"]: r["ms_median"] for r in rows if r["method"] == "brute force"}
    for r in rows:
        r["brute_over_this"] = round(brute[r["pass"]] / max(r["ms_median"], 1e-9), 1)

    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"model-space loss, region {args.region} ({n} vertices), K = {args.n_shape}+{args.n_expression} "
          f"geometry + {args.n_reflectance} reflectance, batch {args.batch}, float32, {args.threads} threads")
    print(f"precompute (constructor): {build_ms:.0f} ms; GT shading gram for the batch: {gram_ms:.1f} ms")
    print(f"{'method':<24}{'forward ms':>22}{'forward+backward ms':>26}   (median / best of {args.repeats})")
    for method in methods:
        cells = []
        for name in ("forward", "forward+backward"):
            r = next(r for r in rows if r["method"] == method and r["pass"] == name)
            cells.append(f"{r['ms_median']:9.2f} / {r['ms_best']:8.2f}")
        print(f"{method:<24}{cells[0]:>22}{cells[1]:>26}")
    for method in list(methods)[:2]:
        ratio = [next(r["brute_over_this"] for r in rows if r["method"] == method and r["pass"] == p)
                 for p in ("forward", "forward+backward")]
        print(f"brute force / {method}: forward x{ratio[0]}, forward+backward x{ratio[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
