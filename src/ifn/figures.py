"""Functions that return matplotlib figures (no saving: callers use ifn.atomic.save_figure)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .render.color import linear_to_srgb  # noqa: E402
from .render.renderer import Renderer, render_mesh  # noqa: E402
from .render.shading import AMBIENT_WHITE, sh_shading, vertex_normals  # noqa: E402


def frontal_vertex_map(renderer: Renderer, values: np.ndarray, vmax: float | None = None,
                       cmap: str = "magma", size: int = 256) -> np.ndarray:
    """(V,) per-vertex values drawn on the frontal mean face, lightly shaded: (size, size, 3) RGB in [0, 1]."""
    layout = renderer.layout
    g = layout.zeros(1)
    verts = renderer.camera.pose(renderer.geometry(g), g["rotation"], g["translation"])
    vmax = float(np.percentile(values, 99)) if vmax is None else vmax
    colors = torch.from_numpy(plt.get_cmap(cmap)(np.clip(values / max(vmax, 1e-9), 0, 1))[:, :3]).float()
    gamma = torch.zeros(1, 9, 3)
    gamma[:, 0] = AMBIENT_WHITE * 0.8
    gamma[:, 2] = 0.6
    shade = sh_shading(vertex_normals(verts, renderer.face_model.triangles), gamma).clamp(0.3, 1.2)
    settings = renderer.settings
    cam = type(renderer.camera)(size, settings.fov_deg, settings.distance_cm)
    raster = type(settings.raster)(size, settings.cull_backfaces, settings.near)
    out = render_mesh(verts, renderer.face_model.triangles, colors[None] * shade, cam, raster, background=1.0)
    return out.image[0].clamp(0, 1).numpy()


def error_maps_figure(renderer: Renderer, maps: Mapping[str, np.ndarray], unit: str = "mm") -> Figure:
    """One frontal mean-face error map per variant, on a shared colour scale."""
    vmax = max(float(np.percentile(m, 99)) for m in maps.values())
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps) + 0.8, 3.6), squeeze=False)
    for ax, (name, m) in zip(axes[0], maps.items()):
        ax.imshow(frontal_vertex_map(renderer, m, vmax))
        ax.set_title(f"{name}\nmean {np.mean(m):.2f} {unit}")
        ax.axis("off")
    sm = plt.cm.ScalarMappable(cmap="magma", norm=plt.Normalize(0, vmax))
    fig.colorbar(sm, ax=axes[0].tolist(), shrink=0.8, label=f"posed vertex error ({unit})")
    return fig


def reconstructions_figure(images: np.ndarray, renders: Mapping[str, np.ndarray], n: int = 6) -> Figure:
    """Rows: input, then one re-render per variant; columns: the first n samples. Arrays (N, H, W, 3)."""
    rows = 1 + len(renders)
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n, 1.7 * rows), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(images[j])
        for i, (name, r) in enumerate(renders.items(), start=1):
            axes[i, j].imshow(np.clip(r[j], 0, 1))
    for i, name in enumerate(["input", *renders]):
        axes[i, 0].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def metric_bars_figure(metrics: Mapping[str, Mapping[str, float]], names: Sequence[str],
                       title: str = "") -> Figure:
    """Grouped bars: one panel per metric name, one bar per variant (e.g. the loss ablation)."""
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.8), squeeze=False)
    variants = list(metrics)
    colors = plt.get_cmap("tab10")(np.arange(len(variants)))
    for ax, name in zip(axes[0], names):
        vals = [metrics[v].get(name, np.nan) for v in variants]
        ax.bar(range(len(variants)), vals, color=colors)
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=8)
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def rerender(renderer: Renderer, params: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """(N, P) parameters -> (N, H, W, 3) sRGB renders over black, in [0, 1]."""
    outs = []
    with torch.no_grad():
        for start in range(0, len(params), batch_size):
            outs.append(linear_to_srgb(renderer(params[start:start + batch_size]).image))
    return torch.cat(outs).numpy()


def image_grid_figure(images: np.ndarray, n: int = 32, cols: int = 8, title: str = "") -> Figure:
    """The first n images (N, H, W, 3) uint8 or float in a grid."""
    n = min(n, len(images))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images[:n]):
        ax.imshow(img)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def parameter_histograms_figure(groups: Mapping[str, np.ndarray], bins: int = 40) -> Figure:
    """Histograms of sampled parameters: pose angles in degrees, translation in cm, and pooled weights."""
    panels = []
    rot = np.degrees(groups["rotation"])
    panels += [(f"{name} (deg)", rot[:, i]) for i, name in enumerate(("yaw", "pitch", "roll"))]
    panels += [(f"translation {a} (cm)", groups["translation"][:, i]) for i, a in enumerate("xyz")]
    panels += [("shape weights", groups["shape"].ravel()), ("reflectance weights", groups["reflectance"].ravel()),
               ("active expression weights", groups["expression"][groups["expression"] > 0]),
               ("ambient SH coefficient (R)", groups["illumination"][:, 0, 0])]
    fig, axes = plt.subplots(2, 5, figsize=(15, 5))
    for ax, (name, values) in zip(axes.flat, panels):
        ax.hist(values, bins=bins, color="tab:blue")
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig
