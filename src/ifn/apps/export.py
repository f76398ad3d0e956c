"""ONNX export of the network and onnxruntime inference (`ifn export --onnx`, `ifn reconstruct --backend`).

    from ifn.apps.export import export_onnx, OnnxPredictor
    report = export_onnx("models/finetune_real/model.pt", "net.onnx")   # checked against PyTorch
    predict = OnnxPredictor("net.onnx")             # (N, S, S, 3) uint8 crops -> (N, P) torch.float32

The exported graph is the whole network of a model.pt: input `images` (N, 3, S, S) float32 sRGB in [0, 1] at the
crop size S it was trained on (the resize to train.net.input_size is inside the graph, as in PyTorch), output
`params` (N, P) float32 in the layout's order (ifn.model.layout.ParamLayout); N is dynamic. The model.pt's
info (layout, image_size, net) is stored as ONNX metadata (key `ifn`, JSON), so a predictor can check crops.

Export uses torch.onnx (the dynamo exporter, onnxscript); inference uses onnxruntime's CPU provider. Both are
pinned in requirements.txt; when they are missing the functions raise OnnxUnavailable naming the packages, and
the PyTorch path is unaffected.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

PACKAGES = "onnx==1.18.0 onnxruntime==1.32.0 onnxscript==0.7.2"
OPSET = 18


class OnnxUnavailable(RuntimeError):
    """onnx / onnxruntime / onnxscript are not installed."""


def _require(*modules: str):
    import importlib

    out = []
    for name in modules:
        try:
            out.append(importlib.import_module(name))
        except Exception as e:   # ImportError or a binary that does not load
            raise OnnxUnavailable(f"ONNX needs {PACKAGES} (`pip install {PACKAGES}`, part of `make setup`); "
                                  f"{name} could not be imported: {e}") from None
    return out


def export_onnx(checkpoint, path, *, check: bool = True, n_check: int = 4, seed: int = 0,
                atol: float = 1e-4) -> dict[str, Any]:
    """Export a model.pt (path, or a (network, info) pair as ifn.learn.train.load_network returns) to ONNX at
    `path` (written atomically). With `check`, `n_check` random crops are run through PyTorch and onnxruntime
    (and a batch of 1, to exercise the dynamic batch axis); a larger max |difference| than `atol` raises
    ValueError. Returns {"path", "image_size", "outputs", "max_abs_diff", "opset"}."""
    from ..atomic import atomic_path
    from ..learn.module import plain

    _require("onnx", "onnxscript")
    if isinstance(checkpoint, (str, Path)):
        from ..learn.train import load_network
        net, info = load_network(checkpoint)
    else:
        net, info = checkpoint
    net = net.eval()
    size = int(info["image_size"])
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (example,), dynamo=True, opset_version=OPSET, input_names=["images"],
                                    output_names=["params"], dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                                    verbose=False)
        model = program.model_proto
        import onnx

        entry = model.metadata_props.add()
        entry.key, entry.value = "ifn", json.dumps(plain(info), sort_keys=True)
        onnx.save_model(model, str(tmp))
    out = {"path": str(path), "image_size": size, "outputs": int(net.head.out_features), "opset": OPSET}
    if check:
        g = torch.Generator().manual_seed(seed + 1)
        x = torch.rand(n_check, 3, size, size, generator=g)
        predictor = OnnxPredictor(path)
        diffs = []
        for batch in (x, x[:1]):
            with torch.no_grad():
                ref = net(batch).numpy()
            got = predictor.run(batch.numpy())
            diffs.append(float(np.abs(got - ref).max()))
        out["max_abs_diff"] = max(diffs)
        if not out["max_abs_diff"] <= atol:
            raise ValueError(f"{path}: onnxruntime and PyTorch differ by {out['max_abs_diff']:.3g} (> {atol})")
    return out


class OnnxPredictor:
    """An exported network under onnxruntime, as an ifn.apps.checkpoint Predictor: __call__((N, S, S, 3) uint8 crops)
    -> (N, P) torch.float32, in batches of `batch_size`; `run((N, 3, S, S) float32)` -> numpy. `threads`: the
    session's intra-op threads (0: onnxruntime's default). `info`: the model.pt info stored at export."""

    def __init__(self, path, threads: int = 0, batch_size: int = 64):
        (ort,) = _require("onnxruntime")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        self.path = str(path)
        self.session = ort.InferenceSession(self.path, opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = json.loads(meta["ifn"]) if "ifn" in meta else {}
        self.image_size = int(self.info.get("image_size", self.session.get_inputs()[0].shape[-1]))
        self.batch_size = max(1, int(batch_size))

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["params"], {"images": np.ascontiguousarray(images, dtype=np.float32)})[0]

    def __call__(self, crops: np.ndarray) -> torch.Tensor:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"crops must be (N, {self.image_size}, {self.image_size}, 3) uint8, got {crops.shape}")
        outs = [self.run(crops[s:s + self.batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255)
                for s in range(0, len(crops), self.batch_size)]
        return torch.from_numpy(np.concatenate(outs)) if outs else torch.zeros(0, 0)
