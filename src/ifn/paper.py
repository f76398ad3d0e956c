"""Stage `figures`: the paper-style figures of the study, the fairness check and the editing examples.

Reads what earlier stages wrote (metrics JSON files, outputs/evaluate_synthetic/vertex_error_mm.npz,
outputs/evaluate_real/{estimates.npz, accuracy_vs_time.json}, the networks) and writes to `out_dir`, each
figure as PNG and PDF:

  qualitative.*       held-out real photos: input, overlay, shaded geometry, albedo, light on a sphere, re-render
                      (estimates of the fine-tuned network + detector-guided refinement, variant `refined_landmarks`
                      of evaluate_real; without a detector, or as qualitative_detector_free.*: variant `refined`)
  loss_ablation.*     model-space versus parameter loss on the synthetic test split
  rounds.*            synthetic-only versus each breeding round: photometric error and NME
  accuracy_vs_time.*  network alone, network + k refinement steps, optimisation-only from the mean face
  nme_yaw.*           NME per yaw bin on the AFLW2000-3D dev part, every variant
  error_maps.*        mean per-vertex geometry error on the mean face (synthetic test split)
  fairness.*          photometric error per UTKFace age / gender / race group (also metrics/fairness.json)
  edits.*             relighting and appearance edits of held-out photos, before/after (the same estimates;
                      edits_detector_free.*: from variant `refined`)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import save_figure, save_json
from .config import load_params
from .paths import resolve

REFLECTANCE_PATH = "models/face_model/reflectance.npz"


def save_both(fig, out_dir: Path, name: str) -> list[Path]:
    """Save a figure as PNG and PDF (atomically)."""
    return [save_figure(fig, out_dir / f"{name}.png"), save_figure(fig, out_dir / f"{name}.pdf")]


def _json(path: str):
    p = resolve(path)
    if not p.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first (`dvc repro`)")
    return json.loads(p.read_text())


def smile_expression(renderer, strength: float = 0.8) -> dict[str, float]:
    """{name: strength} for the model's mouthSmile blendshapes (a symmetric smile; `edit_appearance` sets these
    and keeps the estimate's other expression weights, e.g. an open jaw)."""
    names = [n for n in renderer.face_model.expression_names[:renderer.layout.n_expression] if "smile" in n.lower()]
    if not names:
        raise ValueError(f"no smile blendshape among {list(renderer.face_model.expression_names)[:8]}...")
    return {n: float(strength) for n in names}


def _edits_figure(renderer, crops: np.ndarray, records: list, estimates: torch.Tensor, picks):
    """Relit left/right, albedo PC1 +2 sd and a smile, one row per held-out photo of `picks`."""
    from . import figures_paper as fp
    from .apps.edit import edit_appearance, relight

    delta = torch.zeros(renderer.layout.n_reflectance)
    delta[0] = 2.0
    edits = [("relit: left", lambda p, photo: relight(renderer, p, photo, "left", keep_exposure=True)),
             ("relit: right", lambda p, photo: relight(renderer, p, photo, "right", keep_exposure=True)),
             ("albedo: PC1 +2 sd", lambda p, photo: edit_appearance(renderer, p, photo, reflectance_delta=delta)),
             ("expression: smile", lambda p, photo: edit_appearance(renderer, p, photo,
                                                                     expression=smile_expression(renderer)))]
    columns = ["input"] + [label for label, _ in edits]
    rows = [(f"{records[i]['source']}", [crops[i], *(fn(estimates[i], crops[i]).edited for _, fn in edits)])
            for i in picks]
    return fp.edit_grid(rows, columns)


def make_figures(params_file: str | Path = "params.yaml", out_dir: str | Path = "outputs/figures/07_figures",
                 fairness_path: str | Path = "metrics/fairness.json", reflectance_path=REFLECTANCE_PATH,
                 n_edits: int = 4, overrides=None, log=print) -> dict[str, Any]:
    """Write every figure of the module docstring; returns {"figures": [paths], "fairness": table}."""
    from . import figures_paper as fp
    from .evaluate_real import accuracy_time_figure, heldout_photos
    from .fairness import utk_photometric
    from .figures import error_maps_figure
    from .learn.train import load_network
    from .synth import build_renderer

    params = load_params(resolve(params_file), overrides)
    out = Path(resolve(out_dir))
    size = params.real.working_size(params.render.image_size)
    renderer = build_renderer(params, reflectance_path, image_size=size)
    written: list[Path] = []

    synthetic = _json("metrics/evaluate_synthetic.json")
    real = _json("metrics/evaluate_real.json")
    curves = _json("outputs/evaluate_real/accuracy_vs_time.json")
    rounds = list(params.breed.names)
    written += save_both(fp.loss_ablation_figure(synthetic), out, "loss_ablation")
    written += save_both(fp.rounds_figure(real, rounds, params.breed.guided_names), out, "rounds")
    written += save_both(accuracy_time_figure(curves), out, "accuracy_vs_time")
    written += save_both(fp.nme_yaw_figure(real), out, "nme_yaw")
    maps = np.load(resolve("outputs/evaluate_synthetic/vertex_error_mm.npz"))
    written += save_both(error_maps_figure(renderer, {k: maps[k] for k in maps.files}), out, "error_maps")

    # Qualitative results and edits on held-out photos: the estimates evaluate_real made -- the detector-guided
    # variant `refined_landmarks` where it was run (qualitative.png, edits.png), and the detector-free `refined`
    # (qualitative_detector_free.png, edits_detector_free.png; the only ones without a detector).
    est = np.load(resolve("outputs/evaluate_real/estimates.npz"))
    crops, records = heldout_photos(params, params.evaluate_real.photos, size, log)
    names = [r["name"] for r in records]
    if names != [str(n) for n in est["photos__name"]]:
        raise RuntimeError("the held-out photos differ from those of evaluate_real: rerun `dvc repro`")
    variants = {"": "refined"}
    if "refined_landmarks__photos" in est.files:
        variants = {"": "refined_landmarks", "_detector_free": "refined"}
    # Spread the examples over the sources: every k-th photo.
    pick = np.linspace(0, len(crops) - 1, min(6, len(crops))).round().astype(int)
    for suffix, variant in variants.items():
        refined = torch.from_numpy(est[f"{variant}__photos"]).float()
        written += save_both(fp.qualitative_grid(renderer, crops[pick], refined[pick], n=len(pick)), out,
                             f"qualitative{suffix}")
        written += save_both(_edits_figure(renderer, crops, records, refined, pick[:n_edits]), out, f"edits{suffix}")


    # Fairness: the final network alone on every held-out UTKFace photo.
    net, _ = load_network(resolve(params.final_network()))
    errors, utk_names = utk_photometric(params, renderer, net, params.evaluate_real.batch_size, log=log)
    fairness = fp.fairness_table(errors, utk_names)
    save_json(resolve(fairness_path), fairness)
    written += save_both(fp.fairness_figure(fairness), out, "fairness")
    log(f"figures: {len(written)} files in {out}; fairness over {len(utk_names)} held-out UTKFace photos")
    return {"figures": [str(p) for p in written], "fairness": fairness}
