"""Metrics of reconstructions against known ground truth (synthetic test split).

Per sample (face-part vertices, V_f of them):
- geometry_mm: mean Euclidean distance of posed camera-space vertices, millimetres
- shape_mm: the same after removing pose: model-space vertices, rigidly aligned (Kabsch) on the face part
- reflectance_mae: mean absolute error of the per-vertex albedo (clamped to [0, 1] as rendered), per channel
- shading_mae: mean absolute error of the per-vertex shading on the ground-truth normals, per channel
- rotation_deg: angle of R_hat^T R, degrees
- per Euler axis (yaw, pitch, roll): mean absolute error in degrees and the slope of predicted on true angle
  (`pose_axis_stats`; split-level, not per sample)
- photometric_mae: mean absolute sRGB error in [0, 1] over the ground-truth face mask between the photo and
  the re-rendered estimate (pixels the estimate does not cover count against it)
- landmark_nme: 68-landmark NME of the projected landmark vertices (face_model.landmarks), the 3DDFA protocol of
  ifn.nme (mean 2D distance / sqrt(w h) of the ground truth's landmark box), as a fraction; the same number
  evaluate_real reports on AFLW2000-3D, here against the exact landmarks of the synthetic ground truth
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from .nme import nme
from .render.camera import euler_to_matrix
from .render.color import linear_to_srgb
from .render.renderer import Renderer
from .render.shading import sh_shading, vertex_normals

METRICS = ("geometry_mm", "shape_mm", "reflectance_mae", "shading_mae", "rotation_deg", "photometric_mae",
           "landmark_nme")


def kabsch_align(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rigidly align (B, V, 3) `source` onto `target` (rotation + translation, weighted least squares)."""
    w = (weights / weights.sum()).to(source)[None, :, None]
    mu_s, mu_t = (source * w).sum(1, keepdim=True), (target * w).sum(1, keepdim=True)
    cov = ((source - mu_s) * w).transpose(1, 2) @ (target - mu_t)
    u, _, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u @ vt))
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rot = u @ fix @ vt
    return (source - mu_s) @ rot + mu_t


def rotation_error_deg(pred_angles: torch.Tensor, true_angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) Euler angles -> (B,) geodesic angle between the two rotations, degrees."""
    rel = euler_to_matrix(pred_angles).transpose(-1, -2) @ euler_to_matrix(true_angles)
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


@torch.no_grad()
def reconstruction_errors(renderer: Renderer, pred: torch.Tensor, true: torch.Tensor,
                          images: torch.Tensor | None = None, masks: torch.Tensor | None = None,
                          weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample errors (B,) of `pred` against `true` parameters (B, P); images (B, H, W, 3) sRGB [0, 1]
    and masks (B, H, W) of the ground truth enable photometric_mae. Also returns per-vertex geometry error
    "vertex_mm" (B, V) for error maps."""
    w = renderer.face_model.part_mask("face") if weights is None else weights > 0
    gp, gt = renderer.groups(pred), renderer.groups(true)
    posed_p, posed_t = renderer.posed(gp), renderer.posed(gt)
    vertex_mm = 10 * (posed_p - posed_t).norm(dim=-1)
    geo_p, geo_t = renderer.geometry(gp), renderer.geometry(gt)
    aligned = kabsch_align(geo_p[:, w], geo_t[:, w], torch.ones(int(w.sum())))
    out = {
        "geometry_mm": vertex_mm[:, w].mean(1),
        "shape_mm": 10 * (aligned - geo_t[:, w]).norm(dim=-1).mean(1),
        "reflectance_mae": (renderer.albedo(gp) - renderer.albedo(gt))[:, w].abs().mean((1, 2)),
        "rotation_deg": rotation_error_deg(gp["rotation"], gt["rotation"]),
        "vertex_mm": vertex_mm,
    }
    lm_p, lm_t = renderer.landmarks(posed_p), renderer.landmarks(posed_t)       # (B, 68, 2) pixels
    valid = torch.isfinite(lm_t).all(-1) & torch.isfinite(lm_p).all(-1)          # (B, 68)
    if bool(valid.all()):
        out["landmark_nme"] = torch.from_numpy(nme(lm_p.double().cpu().numpy(), lm_t.double().cpu().numpy()))
    normals = vertex_normals(posed_t, renderer.face_model.triangles)[:, w]
    out["shading_mae"] = (sh_shading(normals, gp["illumination"]) - sh_shading(normals, gt["illumination"])
                          ).abs().mean((1, 2))
    if images is not None and masks is not None:
        render = renderer(gp, background=0.0)
        est = linear_to_srgb(render.image)
        err = (est - images).abs().mean(-1) * masks
        out["photometric_mae"] = err.sum((1, 2)) / masks.sum((1, 2)).clamp_min(1)
    return out


def face_triangles(renderer: Renderer) -> torch.Tensor:
    """(F,) bool: triangles of the render mesh whose three vertices are on the model's face part (not the
    head/neck, eyeballs or mouth socket): the pixels a real photo is compared on (hair and neck excluded)."""
    face = renderer.face_model.part_mask("face")
    return face[renderer.face_model.triangles].all(-1)


@torch.no_grad()
def photo_errors(renderer: Renderer, params: torch.Tensor, images: torch.Tensor, batch_size: int = 64
                 ) -> dict[str, torch.Tensor]:
    """Masked photometric error of re-rendered estimates against photos: params (N, P), images (N, H, W, 3)
    sRGB in [0, 1] (the renderer's size). Returns photometric_mae (N,): mean absolute sRGB error per channel
    over the pixels where the estimate's face part is visible, and coverage (N,): the fraction of the image
    those pixels cover (an estimate that covers nothing has MAE NaN: it explains nothing)."""
    tri = face_triangles(renderer)
    mae, coverage = [], []
    for start in range(0, len(params), batch_size):
        p = params[start:start + batch_size]
        out = renderer(p, background=0.0)
        ptf = out.pix_to_face
        m = ((ptf >= 0) & tri.to(ptf.device)[ptf.clamp_min(0)]).float()
        err = (linear_to_srgb(out.image) - images[start:start + batch_size].to(out.image)).abs().mean(-1)
        count = m.sum((1, 2))
        mae.append(torch.where(count > 0, (err * m).sum((1, 2)) / count.clamp_min(1), torch.nan))
        coverage.append(count / m[0].numel())
    return {"photometric_mae": torch.cat(mae).cpu(), "coverage": torch.cat(coverage).cpu()}


def summarize(errors: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, float]:
    """{metric: (N,) values} -> {metric_mean, metric_p50, metric_p90} (vertex maps skipped)."""
    out = {}
    for name in METRICS:
        if name not in errors:
            continue
        v = np.asarray(errors[name], dtype=np.float64)
        out[f"{name}_mean"] = float(v.mean())
        out[f"{name}_p50"] = float(np.percentile(v, 50))
        out[f"{name}_p90"] = float(np.percentile(v, 90))
        if name.endswith("_mae"):
            out[name] = out[f"{name}_mean"]  # MAE is itself a mean: also under its plain name
    out["n"] = int(len(np.asarray(errors[METRICS[0]])))
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}


def predict(net: torch.nn.Module, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """(N, H, W, 3) uint8 sRGB images -> (N, P) parameters, in batches, no gradients."""
    net.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
            outs.append(net(x.permute(0, 3, 1, 2).float() / 255))
    return torch.cat(outs)


def evaluate_variant(renderer: Renderer, net: torch.nn.Module, images: np.ndarray, params: np.ndarray,
                     masks: np.ndarray, batch_size: int = 64) -> tuple[dict, dict]:
    """Run `net` on a test split; return (summary metrics, raw per-sample errors incl. mean vertex map)."""
    pred = predict(net, images, batch_size)
    raw: dict[str, list] = {}
    vertex_sum = None
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        img = torch.from_numpy(np.ascontiguousarray(images[sl])).float() / 255
        m = torch.from_numpy(np.ascontiguousarray(masks[sl])).float()
        errs = reconstruction_errors(renderer, pred[sl], torch.from_numpy(np.ascontiguousarray(params[sl])),
                                     img, m)
        vmm = errs.pop("vertex_mm")
        vertex_sum = vmm.sum(0) if vertex_sum is None else vertex_sum + vmm.sum(0)
        for k, v in errs.items():
            raw.setdefault(k, []).append(v)
    raw = {k: torch.cat(v).numpy() for k, v in raw.items()}
    raw["vertex_mm_mean"] = (vertex_sum / len(images)).numpy()
    raw["pred"] = pred.numpy()
    summary = summarize(raw)
    summary.update(pose_axis_stats(pred[:, renderer.layout["rotation"]].numpy(),
                                   np.asarray(params)[:, renderer.layout["rotation"]]))
    return summary, raw


def pose_axis_stats(pred_rotation: np.ndarray, true_rotation: np.ndarray) -> dict[str, float]:
    """(N, 3) predicted and true (yaw, pitch, roll), radians -> per axis the mean absolute error in degrees
    ({axis}_abs_deg) and the least-squares slope of predicted on true angle ({axis}_slope: 1 = follows the truth,
    0 = one constant guess). rotation_deg alone cannot tell a network that ignores one axis from a noisy one."""
    pred, true = np.degrees(np.asarray(pred_rotation, np.float64)), np.degrees(np.asarray(true_rotation, np.float64))
    out = {}
    for k, axis in enumerate(("yaw", "pitch", "roll")):
        t = true[:, k] - true[:, k].mean()
        out[f"{axis}_abs_deg"] = round(float(np.abs(pred[:, k] - true[:, k]).mean()), 6)
        var = float((t * t).sum())
        out[f"{axis}_slope"] = round(float((t * (pred[:, k] - pred[:, k].mean())).sum() / var), 6) if var > 0 \
            else float("nan")
    return out


def evaluate_synthetic(params_file="params.yaml", corpus_dir=None, models_dir=None,
                       reflectance_path="models/face_model/reflectance.npz",
                       metrics_path="metrics/evaluate_synthetic.json",
                       figures_dir="outputs/figures/05_evaluate_synthetic",
                       maps_path="outputs/evaluate_synthetic/vertex_error_mm.npz", overrides=None, log=print) -> dict:
    """Evaluate every trained variant (train.compare) on the synthetic test split.

    Writes one metrics object per variant to `metrics_path`, figures (ablation bars, error maps on the
    mean face, reconstructions) to `figures_dir` and the mean per-vertex geometry error of each variant, (V,) mm,
    to `maps_path` (for later figures). Returns the metrics dict.
    """
    from pathlib import Path

    from .atomic import save_figure, save_json, save_npz
    from .config import load_params
    from .corpus import Corpus
    from .figures import error_maps_figure, metric_bars_figure, reconstructions_figure, rerender
    from .learn.train import load_network
    from .paths import resolve
    from .synth import build_renderer

    params = load_params(resolve(params_file), overrides)
    corpus = Corpus.open(resolve(corpus_dir or params.synthesize.out_dir))
    renderer = build_renderer(params, reflectance_path, image_size=corpus.meta["image_size"])
    images = corpus.load("test", "images", mmap=False)
    true = corpus.load("test", "params", mmap=False)
    masks = corpus.load("test", "masks", mmap=False)
    models = resolve(models_dir or params.train.out_dir)
    metrics, maps, renders = {}, {}, {}
    for variant in params.train.compare:
        net, info = load_network(models / variant / "model.pt")
        summary, raw = evaluate_variant(renderer, net, images, true, masks, params.train.batch_size)
        metrics[variant] = summary
        maps[variant] = raw["vertex_mm_mean"]
        renders[variant] = rerender(renderer, torch.from_numpy(raw["pred"][:8]))
        log(f"{variant}: " + ", ".join(f"{k} {summary[k + '_mean']:.4g}" for k in METRICS))
    save_json(resolve(metrics_path), metrics)
    save_npz(resolve(maps_path), **{k: np.asarray(v, dtype=np.float32) for k, v in maps.items()})
    figs = Path(resolve(figures_dir))
    save_figure(metric_bars_figure(metrics, [f"{m}_mean" for m in METRICS],
                                   "synthetic test split: model-space vs parameter loss"), figs / "ablation.png")
    save_figure(error_maps_figure(renderer, maps), figs / "error_maps.png")
    save_figure(reconstructions_figure(images[:8], renders, n=8), figs / "reconstructions.png")
    return metrics
