"""InverseFaceNet training throughput and inference latency on this machine.

    python bench/train_bench.py [--json] [--params params.yaml] [--batch 64] [--steps 6] [--threads 2]

For the network of params.yaml (`train.net`, output size from the face model / reflectance settings), fed
render.image_size images (the network resizes them to train.net.input_size, as in training):
  train <precision>   images/s of forward + backward + AdamW step at `--batch`, precision 32 and bf16-mixed
                      (torch.autocast on the CPU, as Lightning's "bf16-mixed"); MSE loss on the output
  infer <precision>   ms per image in eval mode without gradients, batch 1 and batch `--batch`
  infer onnxruntime   the same network exported to ONNX (ifn.apps.export), onnxruntime CPU with --threads threads
Median and best of the timed repeats after warm-up. Numbers are printed, never asserted: they depend on the
machine and on whatever else runs on it (2-thread OpenMP slows down badly when other processes compete).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ifn.config import load_params  # noqa: E402
from ifn.learn.module import build_network  # noqa: E402
from ifn.model.layout import ParamLayout  # noqa: E402


def autocast(precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6, help="timed training steps / inference repeats")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=None, help="epoch size for the minutes/epoch estimate "
                    "(default synthesize.n_train)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    params = load_params(args.params)
    layout = ParamLayout(params.face_model.n_shape, params.face_model.n_expression, params.reflectance.n_components)
    net_cfg = params.train.net.to_dict()
    size = params.render.image_size
    n_train = args.n_train or params.synthesize.n_train
    net = build_network(net_cfg, layout.size)
    n_weights = sum(p.numel() for p in net.parameters())
    x = torch.rand(args.batch, 3, size, size)
    y = torch.randn(args.batch, layout.size)
    result = {"net": {**{k: list(v) if isinstance(v, tuple) else v for k, v in net_cfg.items()},
                      "weights": n_weights, "outputs": layout.size},
              "image_size": size, "batch": args.batch, "threads": torch.get_num_threads(),
              "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
              "train": {}, "infer": {}}

    for precision in ("32", "bf16-mixed"):
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast(precision):
                out = net(x)
            loss = (out.float() - y).pow(2).mean()
            loss.backward()
            opt.step()

        slow = precision == "bf16-mixed"   # emulated on CPUs without AVX512-BF16/AMX: ~10x slower, time less
        times = timed(step, warmup=1 if slow else 2, repeats=min(args.steps, 3) if slow else args.steps)
        med = statistics.median(times)
        result["train"][precision] = {"images_per_s": args.batch / med, "best_images_per_s": args.batch / min(times),
                                      "ms_per_step": 1e3 * med,
                                      "minutes_per_epoch": n_train / (args.batch / med) / 60}

    net.eval()
    for precision in ("32", "bf16-mixed"):
        rows = {}
        for b in (1, args.batch):
            xb = x[:b]

            def infer():
                with torch.no_grad(), autocast(precision):
                    net(xb)

            times = timed(infer, warmup=2, repeats=max(args.steps, 10 if b == 1 else args.steps))
            rows[f"batch_{b}"] = {"ms_per_image": 1e3 * statistics.median(times) / b,
                                  "best_ms_per_image": 1e3 * min(times) / b}
        result["infer"][precision] = rows
    try:   # the same network exported to ONNX, under onnxruntime (ifn.apps.export; `ifn reconstruct --checkpoint x.onnx`)
        import tempfile

        from ifn.apps.export import OnnxPredictor, export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            info = {"net": net_cfg, "layout": layout.sizes, "image_size": size}
            report = export_onnx((net, info), Path(tmp) / "net.onnx")
            ort = OnnxPredictor(Path(tmp) / "net.onnx", threads=args.threads)
            rows = {"max_abs_diff": report["max_abs_diff"]}
            for b in (1, args.batch):
                xb = x[:b].numpy()
                times = timed(lambda: ort.run(xb), warmup=2, repeats=max(args.steps, 10 if b == 1 else args.steps))
                rows[f"batch_{b}"] = {"ms_per_image": 1e3 * statistics.median(times) / b,
                                      "best_ms_per_image": 1e3 * min(times) / b}
        result["infer"]["onnxruntime"] = rows
    except Exception as e:   # onnx / onnxruntime missing: the PyTorch rows stand alone
        result["infer_onnxruntime_error"] = f"{type(e).__name__}: {e}"
    result["load_average_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"InverseFaceNet {net_cfg['block']} blocks {list(net_cfg['blocks'])} widths {list(net_cfg['widths'])}, "
          f"input {net_cfg['input_size']} px (fed {size} px), {n_weights / 1e6:.2f} M weights, "
          f"{layout.size} outputs; {result['threads']} threads, load average {result['load_average']:.2f}")
    for precision, r in result["train"].items():
        print(f"  train {precision:>10}  batch {args.batch}: {r['images_per_s']:7.1f} images/s "
              f"(best {r['best_images_per_s']:.1f}), {r['ms_per_step']:.0f} ms/step, "
              f"{r['minutes_per_epoch']:.1f} min per {n_train}-image epoch")
    for precision, rows in result["infer"].items():
        cells = ", ".join(f"batch {k.split('_')[1]}: {v['ms_per_image']:.2f} ms/image" for k, v in rows.items()
                          if k.startswith("batch_"))
        print(f"  infer {precision:>10}  {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
