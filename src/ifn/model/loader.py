"""The entry points of ifn.model that choose a model file: `load_face_model` (the face model named by
`face_model.path`: the ICT-FaceKit npz or a BFM-style / generic file) and `build_and_save` (stage face_model:
the reflectance model built over the ICT mesh and saved).

Import order inside ifn.model (tests/test_layout.py checks it is acyclic): layout, facemodel and reflectance
import nothing else from ifn.model; priors imports layout; bfm imports facemodel and reflectance; this module
imports facemodel, reflectance and bfm.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..atomic import save_json
from ..config import FaceModelConfig, load_params
from ..paths import resolve
from .bfm import load_bfm
from .facemodel import FaceModel, load_ict
from .reflectance import build_reflectance_model


def load_face_model(config: FaceModelConfig | None = None) -> FaceModel:
    """Load the model named by `config.path`: the ICT npz, or a BFM-style .mat / generic npz (ifn.model.bfm)."""
    config = config or FaceModelConfig()
    path = Path(config.path)
    if path.suffix == ".npz" and path.name.startswith("ict_"):
        return load_ict(config)
    return load_bfm(path, n_shape=config.n_shape, n_expression=config.n_expression)[0]   # a generic linear model file


def build_and_save(params_file: str = "params.yaml", out_dir: str = "models/face_model",
                   figures_dir: str = "outputs/figures/01_face_model",
                   metrics_path: str = "metrics/face_model.json") -> dict:
    """Pipeline stage body: build the reflectance model from params.yaml and save it and its report.

    Writes <out_dir>/reflectance.npz and the report JSON at `metrics_path` (paths relative to the project root).
    `figures_dir` is accepted for the stage's signature; the figures are made by the notebook
    (ifn.figures_face_model).
    """
    params = load_params(resolve(params_file))
    face_model = load_ict(replace(params.face_model, region="all"))
    model, report = build_reflectance_model(face_model, params.reflectance, params.seed)
    model.meta["face_model"] = params.face_model.path
    out = resolve(out_dir) / "reflectance.npz"
    model.save(out)
    report = {**report, "reflectance_path": str(Path(out_dir) / "reflectance.npz"),
              "face_model_path": params.face_model.path}
    save_json(resolve(metrics_path), report)
    return report
