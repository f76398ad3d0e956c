"""The trained network of a reconstruction: which checkpoint (`default_checkpoint`), loading it safely
(`load_checkpoint`, weights-only) and running it as a Predictor (`network_predictor`; `load_predictor` also takes
an exported .onnx network, run by onnxruntime through ifn.apps.export).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..paths import resolve

Predictor = Callable[[np.ndarray], torch.Tensor]   # (N, S, S, 3) uint8 sRGB crops -> (N, P) parameters


class CheckpointError(RuntimeError):
    """A network checkpoint that cannot be used (refused by weights_only loading, or not matching params)."""


class CheckpointMissingError(CheckpointError, FileNotFoundError):
    """No trained network: the pipeline has not been run (or the given path does not exist)."""


def _user_path(path) -> Path:
    """A path the user typed: as given (relative to the working directory) if it exists, else relative to the
    project root (ifn.paths.resolve)."""
    p = Path(path).expanduser()
    return p.resolve() if p.exists() else resolve(p)


def default_checkpoint(params) -> Path:
    """The pipeline's best network on real photos: the one fine-tuned on real photos (finetune.out_dir/model.pt,
    stage finetune_real; it needs no detector at test time), else the final detector-free network
    (params.final_network(), the last breeding round), else the trained network of train.loss
    (train.out_dir/<loss>/model.pt). Raises CheckpointMissingError if none exists."""
    candidates = [resolve(params.finetune.out_dir) / "model.pt", resolve(params.final_network()),
                  resolve(params.train.out_dir) / params.train.loss / "model.pt"]
    for path in candidates:
        if path.exists():
            return path
    raise CheckpointMissingError(
        f"no trained network: none of {', '.join(str(c) for c in candidates)} exists. Run the pipeline first: "
        f"`dvc repro` (or `make repro`) from the project root, or give a checkpoint (--checkpoint PATH)")


def load_checkpoint(path) -> tuple[torch.nn.Module, dict]:
    """model.pt -> (network in eval mode, info) via ifn.learn.train.load_network, which loads with
    torch.load(weights_only=True): a file holding arbitrary pickled objects is refused (CheckpointError)."""
    from ..learn.train import load_network

    path = _user_path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"checkpoint not found: {path} (train one with `dvc repro` or `make repro`)")
    try:
        return load_network(path)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused: not a plain weights-only model.pt ({first})") from None
    except (KeyError, TypeError, ValueError, RuntimeError, EOFError, OSError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not an ifn model.pt ({type(e).__name__}: {first})") from None


def network_predictor(net: torch.nn.Module, batch_size: int = 64) -> Predictor:
    """The network as a Predictor (ifn.evaluate.predict: uint8 crops -> parameters, no gradients)."""
    from ..evaluate import predict

    return lambda crops: predict(net, crops, batch_size)


def load_predictor(path: Path, batch_size: int = 64) -> tuple[Predictor, dict]:
    """A checkpoint `path` (model.pt, or an .onnx written by `ifn export --onnx`, run with onnxruntime) ->
    (Predictor, the model.pt info). Raises CheckpointError / CheckpointMissingError, ifn.apps.export.OnnxUnavailable
    (an .onnx without onnxruntime)."""
    if path.suffix.lower() == ".onnx":   # an exported network (ifn export --onnx): onnxruntime inference
        from .export import OnnxPredictor, OnnxUnavailable

        if not path.is_file():
            raise CheckpointMissingError(f"ONNX file not found: {path} (write one with `ifn export --onnx`)")
        try:
            predictor = OnnxPredictor(path, batch_size=batch_size)
        except OnnxUnavailable:
            raise
        except Exception as e:
            raise CheckpointError(f"{path}: not a readable ONNX network ({type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
        info = predictor.info
        if "layout" not in info:
            raise CheckpointError(f"{path}: no ifn metadata (not written by `ifn export --onnx`)")
    else:
        net, info = load_checkpoint(path)
        predictor = network_predictor(net, batch_size)
    return predictor, info
