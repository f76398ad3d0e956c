"""Renderer throughput on this machine: images/s for the default render mesh and the face-only region.

    python bench/render_bench.py [--json] [--batch 64] [--sizes 128 224] [--repeats 3] [--threads 2]

Each row is measured for the tensor path (`render.backend torch`) eagerly and with `render.compile`
(torch.compile of its visibility pass) and for the compiled CPU kernels (`render.backend numba`, what `auto`
picks on a CPU; ifn.render.numba_kernels); compilation is excluded by a warm-up call. `raster` times the
rasterizer alone (visibility + perspective-correct interpolation of per-vertex colours of already posed meshes);
`render` the whole image formation from a parameter vector (geometry, pose, normals, SH shading,
rasterization, compositing); `fwd+bwd` render + the backward pass of an image loss. Poses vary over the batch (yaw -75..75 deg).
Numbers are printed, never asserted: they depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from ifn.config import FaceModelConfig, load_params
from ifn.model.facemodel import load_ict
from ifn.model.layout import ParamLayout
from ifn.model.reflectance import ReflectanceModel
from ifn.render.renderer import Renderer, RenderSettings, render_mesh
from ifn.render.shading import AMBIENT_WHITE


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make_renderer(region: str, size: int, params, compile_: bool, backend: str = "auto"
                  ) -> tuple[Renderer, torch.Tensor]:
    cfg = params.face_model
    fm = load_ict(FaceModelConfig(path=cfg.path, region=region, n_shape=cfg.n_shape,
                                  n_expression=cfg.n_expression))
    n = fm.n_vertices
    refl = ReflectanceModel(torch.full((n, 3), 0.6), torch.zeros(1, n, 3), torch.ones(1))
    layout = ParamLayout(cfg.n_shape, cfg.n_expression, 1)
    settings = RenderSettings.from_config(params.render, image_size=size, compile=compile_, backend=backend)
    renderer = Renderer(fm, refl, layout, settings)
    return renderer, layout


def batch_params(layout: ParamLayout, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    groups = layout.zeros(batch)
    groups["shape"] = torch.randn(batch, layout.n_shape, generator=g)
    groups["expression"] = torch.rand(batch, layout.n_expression, generator=g) * 0.3
    groups["illumination"][:, 0] = 0.8 * AMBIENT_WHITE
    groups["illumination"][:, 3] = 1.0
    groups["rotation"][:, 0] = torch.linspace(-math.radians(75), math.radians(75), batch)
    return layout.join(groups)


BACKENDS = (("torch", False), ("torch", True), ("numba", False))  # (render.backend, render.compile)


def label(backend: str, compile_: bool) -> str:
    return "torch+compile" if compile_ else backend


def measure(mesh, region, size, backend, compile_, params, args) -> dict:
    renderer, layout = make_renderer(region, size, params, compile_, backend)
    p = batch_params(layout, args.batch)
    with torch.no_grad():
        out = renderer(p)
        colors = out.albedo * out.shading
        raster_s = best_of(lambda: render_mesh(out.vertices, renderer.face_model.triangles, colors,
                                               renderer.camera, renderer.settings.raster), args.repeats)
        render_s = best_of(lambda: renderer(p), args.repeats)
    target = out.image.detach() * 0.9 + 0.05

    def forward_backward():   # what refinement and real-photo training pay per step
        q = p.clone().requires_grad_()
        ((renderer(q, background=0.5).image - target) ** 2).mean().backward()

    train_s = best_of(forward_backward, args.repeats)
    return {"mesh": mesh, "region": region, "vertices": renderer.face_model.n_vertices,
            "triangles": int(renderer.face_model.triangles.shape[0]), "resolution": size,
            "batch": args.batch, "threads": args.threads, "backend": backend, "compile": compile_,
            "images_per_s": round(args.batch / raster_s, 1),
            "render_images_per_s": round(args.batch / render_s, 1),
            "forward_backward_images_per_s": round(args.batch / train_s, 1),
            "backward_ms_per_image": round(1000 * max(train_s - render_s, 0.0) / args.batch, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON list of rows instead of a table")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    meshes = {"default": params.face_model.region, "face": "face"}
    rows = []
    for backend, compile_ in BACKENDS:
        for mesh, region in meshes.items():
            for size in args.sizes:
                rows.append(measure(mesh, region, size, backend, compile_, params, args))
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"renderer throughput, batch {args.batch}, {args.threads} threads, best of {args.repeats} (images/s; "
          f"raster = rasterize + interpolate, render = parameters -> image, fwd+bwd = render + backward of an "
          f"image loss; backward = ms/image of the backward alone); ratios: numba / torch+compile")
    by = {(r["mesh"], r["resolution"], label(r["backend"], r["compile"])): r for r in rows}
    names = [label(b, c) for b, c in BACKENDS]
    for metric, title in (("images_per_s", "raster"), ("render_images_per_s", "render"),
                          ("forward_backward_images_per_s", "fwd+bwd"), ("backward_ms_per_image", "backward ms")):
        print(f"\n{title}")
        print(f"{'mesh':8s} {'region':6s} {'verts':>6s} {'tris':>6s} {'size':>5s} | "
              + " ".join(f"{n:>13s}" for n in names) + " |  ratio")
        for mesh, region in meshes.items():
            for size in args.sizes:
                cells = [by[(mesh, size, n)] for n in names]
                ratio = cells[-1][metric] / max(cells[1][metric], 1e-9)
                if metric == "backward_ms_per_image":
                    ratio = 1 / max(ratio, 1e-9)
                print(f"{mesh:8s} {region:6s} {cells[0]['vertices']:6d} {cells[0]['triangles']:6d} {size:5d} | "
                      + " ".join(f"{c[metric]:13.2f}" for c in cells) + f" | {ratio:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
