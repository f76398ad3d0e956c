"""Figure functions of the `figures` stage: the paper-style summary figures.

Every function returns a `matplotlib.figure.Figure` built without pyplot (backend-independent, no global
state) and never saves: the caller writes PNG and PDF atomically. Inputs are plain dicts, numpy arrays,
parameter tensors and a `Renderer`, so each function can be tested on tiny inputs.

Units: images are sRGB in [0, 1] (float) or uint8 unless stated; NME values in the metrics files are fractions
of the bounding-box size and are drawn in %; photometric errors are mean absolute sRGB errors in [0, 1].
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from .evaluate import face_triangles
from .real import UTK_GENDERS, UTK_RACES, utk_attributes
from .render.color import linear_to_srgb
from .render.renderer import Renderer, composite
from .render.shading import AMBIENT_WHITE, directional_light_sh, sh_shading

__all__ = [
    "AGE_BINS", "GEOMETRY_GREY", "frontal_light", "sphere_light_image", "overlay", "face_mask",
    "qualitative_grid", "loss_ablation_figure", "rounds_figure", "nme_yaw_figure", "fairness_table",
    "fairness_figure", "edit_grid",
]

GEOMETRY_GREY = 0.7                       # linear albedo of the "shaded geometry" panel
AGE_BINS = ("0-19", "20-39", "40-59", "60+")  # 20-year bins, the last open-ended
QUALITATIVE_COLUMNS = ("input", "overlay", "geometry", "albedo", "light", "re-render")


def _colors(n: int) -> np.ndarray:
    return matplotlib.colormaps["tab10"](np.arange(n) % 10)


def _value(metrics: Mapping[str, Any], key: str) -> float:
    """metrics[key] as float; NaN when missing or None (JSON null)."""
    v = metrics.get(key)
    return float("nan") if v is None else float(v)


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _as_image(image) -> np.ndarray:
    """(H, W, 3) uint8 or float image (numpy or torch) -> something imshow draws faithfully."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    return a if a.dtype == np.uint8 else np.clip(a.astype(np.float32), 0.0, 1.0)


def _legend_once(axes, **kwargs) -> None:
    """A legend on the first panel that has labelled artists (the panels share their styles)."""
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(**kwargs)
            return


def _image_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# -- light on a sphere ------------------------------------------------------------------------------------------
def frontal_light() -> torch.Tensor:
    """(9, 3) fixed white light for the shaded-geometry panel: ambient plus a light from the camera, slightly
    from above (so relief reads), scaled so the brightest normal gets shading ~1."""
    gamma = directional_light_sh(torch.tensor([0.0, 0.3, 1.0]), intensity=1.6)[:, None].repeat(1, 3)
    gamma[0] += AMBIENT_WHITE * 0.45
    return gamma


def sphere_light_image(illumination, size: int = 64, background: float = 1.0) -> np.ndarray:
    """The SH light (9, 3) (tensor or array, incident radiance coefficients per RGB channel) on a diffuse white
    sphere seen orthographically by the camera: (size, size, 3) float32 sRGB in [0, 1].

    The pixel centre at disc coordinates (x, y) (+x right, +y up, so image row 0 is the top) shows the
    camera-space normal (x, y, sqrt(1 - x^2 - y^2)) with shading `sh_shading` (irradiance / pi: the uniform
    white radiance AMBIENT_WHITE gives 1), converted linear -> sRGB and clipped. Pixels whose centre lies
    outside the unit disc get `background` (a value in [0, 1], drawn as is).
    """
    if isinstance(illumination, torch.Tensor):
        illumination = illumination.detach().cpu().numpy()
    gamma = torch.from_numpy(np.asarray(illumination, dtype=np.float64).reshape(9, 3))
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0       # pixel centres in [-1, 1]
    x, y = np.meshgrid(c, -c)                             # row 0 is the top: y decreases down the rows
    r2 = x * x + y * y
    inside = r2 <= 1.0
    normals = torch.from_numpy(np.stack([x, y, np.sqrt(np.clip(1.0 - r2, 0.0, None))], -1).reshape(1, -1, 3))
    shade = linear_to_srgb(sh_shading(normals, gamma[None]))[0].reshape(size, size, 3).numpy()
    return np.where(inside[..., None], shade, background).astype(np.float32)


# -- qualitative results ----------------------------------------------------------------------------------------
def overlay(photo: np.ndarray, render: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The render composited over the photo where `mask` is set, the photo elsewhere (exactly).

    photo (H, W, 3) uint8 or float in [0, 1]; render (H, W, 3) float sRGB in [0, 1]; mask (H, W) bool.
    Returns the photo's dtype: for uint8 the render is rounded to uint8 (so unmasked pixels are bit-identical).
    """
    photo = np.asarray(photo)
    render = np.clip(np.asarray(render, dtype=np.float64), 0.0, 1.0)
    if photo.dtype == np.uint8:
        render = np.round(render * 255.0).astype(np.uint8)
    else:
        render = render.astype(photo.dtype)
    return np.where(np.asarray(mask, dtype=bool)[..., None], render, photo)


def face_mask(renderer: Renderer, pix_to_face: torch.Tensor) -> torch.Tensor:
    """(B, H, W) triangle ids (-1 = background) -> (B, H, W) bool: pixels where the model's face part is
    visible (as in ifn.evaluate.photo_errors: no hair, neck, eyeballs or mouth socket)."""
    tri = face_triangles(renderer).to(pix_to_face.device)
    return (pix_to_face >= 0) & tri[pix_to_face.clamp_min(0)]


@torch.no_grad()
def qualitative_grid(renderer: Renderer, crops: np.ndarray, params: torch.Tensor, n: int = 6) -> Figure:
    """One row per photo (the first n), columns: input; overlay (the re-render over the photo on the visible
    face part); shaded geometry (the estimate's geometry, grey albedo GEOMETRY_GREY under `frontal_light`);
    albedo (the estimate's per-vertex albedo, unlit); light (the estimated SH light on a sphere); re-render.

    crops (N, S, S, 3) uint8 sRGB photos at the renderer's size S; params (N, P) estimates.
    Model panels are drawn over white. The three renders share one rasterization (same visibility).
    """
    n = min(n, len(crops))
    size = renderer.settings.image_size
    if tuple(crops.shape[1:3]) != (size, size):
        raise ValueError(f"crops are {tuple(crops.shape[1:3])} pixels, the renderer draws {size} x {size}")
    p = params[:n].detach().to(renderer.face_model.mean.device, renderer.face_model.mean.dtype)
    out = renderer(p, background=0.0)
    # Colours interpolated over the re-render's own fragments = render_mesh on the same posed vertices.
    grey = GEOMETRY_GREY * sh_shading(out.normals, frontal_light().to(out.normals)[None].expand(n, 9, 3))

    def draw(colors: torch.Tensor) -> np.ndarray:
        image = composite(out.fragments.interpolate(colors), out.mask, 1.0)
        return linear_to_srgb(image).cpu().numpy()

    renders = linear_to_srgb(out.image).cpu().numpy()
    masks = face_mask(renderer, out.pix_to_face).cpu().numpy()
    panels = {
        "input": [np.asarray(c) for c in crops[:n]],
        "overlay": [overlay(crops[i], renders[i], masks[i]) for i in range(n)],
        "geometry": list(draw(grey)),
        "albedo": list(draw(out.albedo)),
        "light": [sphere_light_image(g) for g in renderer.groups(p)["illumination"]],
        "re-render": list(linear_to_srgb(composite(out.image, out.mask, 1.0)).cpu().numpy()),
    }
    fig = Figure(figsize=(1.5 * len(panels), 1.5 * max(n, 1) + 0.3))
    axes = fig.subplots(max(n, 1), len(panels), squeeze=False)
    for j, (title, images) in enumerate(panels.items()):
        axes[0, j].set_title(title, fontsize=9)
        for i in range(n):
            axes[i, j].imshow(_as_image(images[i]))
            if title == "light":  # outline: a bright sphere on the white background is otherwise invisible
                s = images[i].shape[0]
                axes[i, j].add_patch(Circle(((s - 1) / 2, (s - 1) / 2), s / 2, fill=False, lw=0.6, color="0.6"))
        for i in range(max(n, 1)):
            _image_axes(axes[i, j])
    fig.tight_layout(pad=0.3)
    return fig


# -- synthetic ablation -----------------------------------------------------------------------------------------
ABLATION_METRICS = {
    "landmark_nme_mean": "68-landmark NME (fraction)",
    "geometry_mm_mean": "geometry error (mm)",
    "shape_mm_mean": "shape error, pose-aligned (mm)",
    "reflectance_mae_mean": "albedo MAE",
    "shading_mae_mean": "shading MAE",
    "rotation_deg_mean": "rotation error (deg)",
    "photometric_mae_mean": "photometric MAE",
}


def loss_ablation_figure(metrics: Mapping[str, Mapping[str, float]]) -> Figure:
    """The loss ablation on the synthetic test split (metrics/evaluate_synthetic.json: {variant: {metric: value}},
    e.g. "model_space" and "parameter"): one panel per metric of ABLATION_METRICS present in some variant, one
    bar per variant with its mean written on it, and a whisker from the median (dot) to the 90th percentile
    (cap) where `<metric>_p50` / `<metric>_p90` are given."""
    variants = list(metrics)
    names = [k for k in ABLATION_METRICS if any(k in metrics[v] for v in variants)]
    colors = _colors(len(variants))
    fig = Figure(figsize=(2.3 * max(len(names), 1) + 0.4, 3.0))
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    x = np.arange(len(variants))
    for ax, name in zip(axes, names):
        base = name[:-len("_mean")]
        means = np.array([_value(metrics[v], name) for v in variants])
        bars = ax.bar(x, means, color=colors, width=0.7)
        ax.bar_label(bars, labels=["" if not math.isfinite(m) else f"{m:.3g}" for m in means],
                     label_type="center", fontsize=7, color="white", fontweight="bold")
        p50 = np.array([_value(metrics[v], f"{base}_p50") for v in variants])
        p90 = np.array([_value(metrics[v], f"{base}_p90") for v in variants])
        ok = np.isfinite(p50) & np.isfinite(p90)
        if ok.any():
            ax.vlines(x[ok], p50[ok], p90[ok], color="k", lw=1)
            ax.plot(x[ok], p50[ok], "o", color="k", ms=3, label="median")
            ax.plot(x[ok], p90[ok], "_", color="k", ms=10, mew=1.5, label="90th percentile")
        ax.set_xticks(x, [_pretty(v) for v in variants], rotation=20, ha="right", fontsize=8)
        ax.set_title(ABLATION_METRICS[name], fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes:                      # one figure-level legend: inside a panel it hides bars
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="upper right", ncols=2, fontsize=7, frameon=False)
            break
    fig.suptitle("loss ablation (synthetic test split): mean, median and 90th percentile", fontsize=10,
                 x=0.01, ha="left")
    fig.tight_layout()
    return fig


# -- real images ------------------------------------------------------------------------------------------------
REAL_PANELS = (("photometric_mae", "photometric MAE (held-out photos)", 1.0),
               ("nme_mean", "NME (AFLW2000-3D dev), %", 100.0))
REFERENCE_STYLES = {"refined": "C1", "optimization_only": "C3"}


def rounds_figure(metrics_real: Mapping[str, Mapping[str, float]], rounds: Sequence[str],
                  guided: Sequence[str] = ()) -> Figure:
    """Error against bootstrapping round (metrics/evaluate_real.json): x = synthetic_only then each round,
    panels photometric MAE and NME (%), lines with markers (missing / NaN values leave gaps); the detector-guided
    chain `guided` (breed.guided_rounds, also from synthetic_only) as a second line where it was evaluated;
    dashed horizontal lines for "refined" (final network + refinement) and "optimization_only" where present."""
    guided = [g for g in guided if g in metrics_real]
    n = 1 + max(len(rounds), len(guided))
    chains = [("network, breeding", "C0", ["synthetic_only", *rounds])]
    if guided:
        chains.append(("network, detector-guided breeding", "C2", ["synthetic_only", *guided]))
    fig = Figure(figsize=(8.5, 3.2))
    axes = fig.subplots(1, len(REAL_PANELS))
    for ax, (key, title, scale) in zip(axes, REAL_PANELS):
        for label, color, xs in chains:
            ys = np.array([_value(metrics_real.get(v, {}), key) for v in xs]) * scale
            ax.plot(np.arange(len(xs)), ys, "o-", color=color, label=label if guided else "network")
        for variant, color in REFERENCE_STYLES.items():
            y = _value(metrics_real.get(variant, {}), key) * scale
            if math.isfinite(y):
                ax.axhline(y, ls="--", color=color, label=_pretty(variant))
        ticks = [_pretty("synthetic_only")] + [" / ".join(_pretty(c[k]) for c in (rounds, guided) if k < len(c))
                                               for k in range(n - 1)]
        ax.set_xticks(np.arange(n), ticks, fontsize=7)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    _legend_once(axes, fontsize=7)
    fig.tight_layout()
    return fig


YAW_BINS = (("nme_0_30", "[0, 30)"), ("nme_30_60", "[30, 60)"), ("nme_60_90", "[60, 90]"), ("nme_mean", "mean"))


def nme_yaw_figure(metrics_real: Mapping[str, Mapping[str, float]]) -> Figure:
    """NME (%) per yaw bin (degrees) and the mean over bins: grouped bars, one bar per variant with any NME
    value (metrics/evaluate_real.json); missing / NaN values draw no bar."""
    variants = [v for v in metrics_real if any(math.isfinite(_value(metrics_real[v], k)) for k, _ in YAW_BINS)]
    colors = _colors(len(variants))
    width = 0.8 / max(len(variants), 1)
    fig = Figure(figsize=(7.0, 3.2))
    ax = fig.subplots()
    x = np.arange(len(YAW_BINS))
    for i, v in enumerate(variants):
        ys = np.array([_value(metrics_real[v], k) for k, _ in YAW_BINS]) * 100.0
        ok = np.isfinite(ys)
        ax.bar(x[ok] + (i - (len(variants) - 1) / 2) * width, ys[ok], width, color=colors[i], label=_pretty(v))
    ax.set_xticks(x, [label for _, label in YAW_BINS])
    ax.set_xlabel("absolute yaw (deg)")
    ax.set_ylabel("NME (%)")
    ax.set_title("68-landmark NME on AFLW2000-3D dev by yaw", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if variants:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# -- fairness ---------------------------------------------------------------------------------------------------
def _age_bin(age: int) -> str:
    return AGE_BINS[min(age // 20, len(AGE_BINS) - 1)]


def _mean_ci(values: np.ndarray) -> dict:
    """{"photometric_mae": mean, "ci95": 1.96 s / sqrt(n) (NaN for n < 2), "n": n} of (n,) values."""
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    ci = float(1.96 * values.std(ddof=1) / math.sqrt(n)) if n >= 2 else float("nan")
    return {"photometric_mae": mean, "ci95": ci, "n": int(n)}


def fairness_table(photometric_mae, names: Sequence[str]) -> dict:
    """Photometric error per demographic group of UTKFace photos.

    photometric_mae (N,) per-photo masked photometric MAE; names (N,) UTKFace file names (paths allowed),
    parsed by ifn.real.utk_attributes. Returns
    {"gender": {group: {"photometric_mae": mean, "ci95": h, "n": count}, ..., "all": {...}}, "race": {...},
     "age": {...}, "skipped": {"malformed_name": count, "nan_error": count}}
    Groups in the order UTK_GENDERS / UTK_RACES / AGE_BINS (ages 0-19, 20-39, 40-59, 60+), only non-empty ones;
    "all" is over every counted photo (NaN mean if none). Photos whose name does not parse and photos with a
    NaN error (the estimate covers no face pixel) are left out of every group and only counted under "skipped".
    h is the half-width of the normal-approximation 95 % interval of the mean, 1.96 s / sqrt(n) with s the
    sample standard deviation (NaN for n < 2): group differences smaller than the intervals are not evidence.
    """
    mae = np.asarray(photometric_mae, dtype=np.float64).reshape(-1)
    names = [str(n) for n in names]
    if len(names) != len(mae):
        raise ValueError(f"{len(mae)} errors but {len(names)} names")
    labels: dict[str, list[str]] = {"gender": [], "race": [], "age": []}
    values: list[float] = []
    malformed = nan_error = 0
    for value, name in zip(mae, names):
        a = utk_attributes(name)
        if a is None:
            malformed += 1
            continue
        if not math.isfinite(value):
            nan_error += 1
            continue
        values.append(float(value))
        labels["gender"].append(UTK_GENDERS[a["gender"]])
        labels["race"].append(UTK_RACES[a["race"]])
        labels["age"].append(_age_bin(a["age"]))
    vals = np.array(values)
    table: dict = {}
    for attr, order in (("gender", UTK_GENDERS), ("race", UTK_RACES), ("age", AGE_BINS)):
        lab = np.array(labels[attr], dtype=object)
        groups = {}
        for group in order:
            sel = vals[lab == group] if len(vals) else vals
            if len(sel):
                groups[group] = _mean_ci(sel)
        groups["all"] = _mean_ci(vals)
        table[attr] = groups
    table["skipped"] = {"malformed_name": malformed, "nan_error": nan_error}
    return table


def _is_attribute(groups: Any) -> bool:
    return isinstance(groups, Mapping) and all(isinstance(g, Mapping) for g in groups.values())


def fairness_figure(groups: Mapping[str, Mapping[str, Mapping[str, float]]]) -> Figure:
    """Photometric MAE per demographic group (the output of `fairness_table`): one panel per attribute, one bar
    per group with its 95 % interval (ci95, if given) and its photo count n written above it, a dashed line at
    groups[attr]["all"] (overall mean) if given. Top-level entries that are not {group: {...}} dicts (e.g. "skipped") are ignored."""
    attributes = [a for a, g in groups.items() if _is_attribute(g)]
    widths = [max(len([k for k in groups[a] if k != "all"]), 1) for a in attributes]
    fig = Figure(figsize=(1.5 + 0.65 * sum(widths) + 0.6 * len(attributes), 3.2))
    axes = fig.subplots(1, max(len(attributes), 1), squeeze=False, width_ratios=widths or None)[0]
    for ax, attr in zip(axes, attributes):
        labels = [k for k in groups[attr] if k != "all"]
        ys = np.array([_value(groups[attr][k], "photometric_mae") for k in labels])
        ci = np.array([_value(groups[attr][k], "ci95") for k in labels])
        bars = ax.bar(np.arange(len(labels)), ys, color=_colors(len(labels)), width=0.7)
        if np.isfinite(ci).any():   # 95 % intervals of the means (a collection, not lines)
            ax.errorbar(np.arange(len(labels)), ys, yerr=np.nan_to_num(ci), fmt="none", ecolor="k", lw=1,
                        capsize=0)
        ax.bar_label(bars, labels=[f"n={groups[attr][k].get('n', '?')}" for k in labels], fontsize=7,
                     padding=2)
        overall = _value(groups[attr].get("all", {}), "photometric_mae")
        if math.isfinite(overall):
            ax.axhline(overall, ls="--", color="k", lw=1, label="all photos")
        ax.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(attr, fontsize=9)
        tops = ys + np.nan_to_num(ci)
        ax.set_ylim(0, 1.18 * max([*tops[np.isfinite(tops)], overall if math.isfinite(overall) else 0, 1e-6]))
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("photometric MAE (sRGB)")
    _legend_once(axes, fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


# -- edits ------------------------------------------------------------------------------------------------------
def edit_grid(rows: Sequence[tuple[str, Sequence[Any]]], columns: Sequence[str] = ()) -> Figure:
    """A before/after image grid: rows = (label, images) per photo, images (S, S, 3) uint8 or float sRGB in
    [0, 1] (numpy or torch); `columns` titles the top row (e.g. "input", "relit: left", "albedo +", "smile").
    Rows may differ in length: missing cells stay blank."""
    n_cols = max([len(images) for _, images in rows] + [len(columns), 1])
    n_rows = max(len(rows), 1)
    fig = Figure(figsize=(1.5 * n_cols + 0.3, 1.5 * n_rows + 0.3))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j, image in enumerate(images):
            axes[i, j].imshow(_as_image(image))
        axes[i, 0].set_ylabel(label, fontsize=8)
    for j, title in enumerate(columns):
        axes[0, j].set_title(title, fontsize=9)
    for ax in axes.flat:
        _image_axes(ax)
    fig.tight_layout(pad=0.3)
    return fig
