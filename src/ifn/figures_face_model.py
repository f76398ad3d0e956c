"""Figures of the face-model stage (notebooks/01_face_model.ipynb): albedo components, explained variance, samples.

Each function returns a matplotlib Figure (nothing is saved here). Albedo is drawn by a tiny z-buffered point
splatter (orthographic frontal view of the mean mesh, flat albedo, no shading), so these figures do not depend on
the project's differentiable renderer. Colours are linear RGB albedo converted to sRGB for display.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .model.reflectance import ReflectanceModel, albedo_regions, generate_albedo, lightness, luminance

# Parts drawn (the others are inside the head and hidden anyway).
DRAW_PARTS = ("face", "head_neck", "mouth_socket", "eyeballs")


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def splat_image(vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray, size: int = 256,
                bounds: tuple[float, float, float, float] | None = None, background=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Orthographic frontal (x-y, +z towards the viewer) z-buffered image of a mesh with per-vertex colours.

    Every triangle is sampled on a barycentric grid denser than the pixels; the nearest sample (largest z) wins
    each pixel. bounds = (x0, x1, y0, y1) in mesh units (default: the mesh's bounding box). -> (H, W, 3) floats.
    """
    v = np.asarray(vertices, dtype=np.float64)
    c = np.asarray(colors, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    x0, x1, y0, y1 = bounds or (v[:, 0].min(), v[:, 0].max(), v[:, 1].min(), v[:, 1].max())
    scale = (size - 1) / max(x1 - x0, y1 - y0)
    w = int(round((x1 - x0) * scale)) + 1
    h = int(round((y1 - y0) * scale)) + 1
    px = (v[:, 0] - x0) * scale
    py = (y1 - v[:, 1]) * scale
    p2 = np.stack([px, py], axis=1)
    edge = np.max([np.linalg.norm(p2[t[:, i]] - p2[t[:, (i + 1) % 3]], axis=1) for i in range(3)], axis=0)
    level = np.clip(np.ceil(edge / 0.5).astype(int), 1, 64)
    xs, ys, zs, cs = [], [], [], []
    for m in np.unique(level):
        tri = t[level == m]
        i, j = np.meshgrid(np.arange(m + 1), np.arange(m + 1), indexing="ij")
        keep = i + j <= m
        bary = np.stack([i[keep], j[keep], m - i[keep] - j[keep]], axis=1) / m      # (P, 3)
        xs.append((px[tri] @ bary.T).ravel())
        ys.append((py[tri] @ bary.T).ravel())
        zs.append((v[tri, 2] @ bary.T).ravel())
        cs.append(np.einsum("pk,fkc->fpc", bary, c[tri]).reshape(-1, 3))
    x = np.rint(np.concatenate(xs)).astype(np.int64)
    y = np.rint(np.concatenate(ys)).astype(np.int64)
    z = np.concatenate(zs)
    col = np.concatenate(cs)
    ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    x, y, z, col = x[ok], y[ok], z[ok], col[ok]
    pix = y * w + x
    order = np.lexsort((-z, pix))                       # per pixel, nearest first
    first = order[np.r_[True, pix[order][1:] != pix[order][:-1]]]
    img = np.empty((h * w, 3))
    img[:] = background
    img[pix[first]] = col[first]
    return img.reshape(h, w, 3)


def _drawable(face_model, reflectance_model: ReflectanceModel):
    """Vertices, triangles (visible parts only) and the reflectance model over the face model's vertices."""
    if reflectance_model.n_vertices != face_model.n_vertices:
        reflectance_model = reflectance_model.subset(face_model.source_index)
    names = [p for p in DRAW_PARTS if p in face_model.part_names]
    keep = face_model.part_mask(*names).numpy()
    tri = face_model.triangles.numpy()
    tri = tri[keep[tri].all(axis=1)]
    return face_model.mean.numpy(), tri, reflectance_model


def _bounds(vertices, y_min=-11.0):
    v = vertices[vertices[:, 1] >= y_min]
    return (float(v[:, 0].min()), float(v[:, 0].max()), y_min, float(v[:, 1].max()))


def _show(ax, vertices, triangles, albedo, size, bounds):
    ax.imshow(linear_to_srgb(splat_image(vertices, triangles, albedo, size=size, bounds=bounds)))
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def albedo_components_figure(face_model_region_mesh, reflectance_model: ReflectanceModel, n_components: int = 3,
                             size: int = 220) -> Figure:
    """Rows: the first `n_components` components; columns: mean - 3 sd, mean, mean + 3 sd (clipped for display)."""
    v, tri, model = _drawable(face_model_region_mesh, reflectance_model)
    n_components = min(n_components, model.n_components)
    mean = model.mean.numpy()
    bounds = _bounds(v)
    fig = Figure(figsize=(3 * 2.3, n_components * 2.7), constrained_layout=True)
    axes = fig.subplots(n_components, 3, squeeze=False)
    ev = model.explained_variance.numpy()
    for k in range(n_components):
        b = model.basis[k].numpy()
        panels = (("mean - 3 sd", mean - 3 * b), ("mean", mean), ("mean + 3 sd", mean + 3 * b))
        for j, (label, a) in enumerate(panels):
            ax = axes[k, j]
            _show(ax, v, tri, a, size, bounds)
            out = float(((a < 0) | (a > 1)).mean())
            ax.set_title(f"PC{k + 1} {label}" + (f"\n{out:.1%} outside [0,1]" if j != 1 else
                                                 f"\n({ev[k]:.1%} of variance)"), fontsize=8)
    fig.suptitle("Albedo model: mean and ±3 sd along the first components (sRGB display)", fontsize=10)
    return fig


def explained_variance_figure(reflectance_model: ReflectanceModel, report: dict | None = None) -> Figure:
    """Per-component and cumulative explained variance; held-out relative error if a build report is given."""
    ev = reflectance_model.explained_variance.double().numpy()
    k = np.arange(1, ev.size + 1)
    fig = Figure(figsize=(9, 3.4), constrained_layout=True)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.semilogy(k, ev, ".-", ms=3)
    ax1.set_xlabel("component")
    ax1.set_ylabel("fraction of sample variance")
    ax1.set_title("per component")
    ax1.grid(alpha=0.3)
    ax2.plot(k, np.cumsum(ev), ".-", ms=3, label="cumulative explained (training)")
    if report and "heldout_reconstruction" in report:
        ks = sorted(int(x) for x in report["heldout_reconstruction"])
        err = [report["heldout_reconstruction"][str(x)]["relative_to_deviation_mean"] for x in ks]
        ax2.plot(ks, 1 - np.square(err), "o", label="held-out: 1 - (relative error)^2")
    ax2.set_xlabel("number of components")
    ax2.set_ylim(min(0.5, float(np.cumsum(ev)[0]) - 0.05), 1.0)
    ax2.set_title("cumulative")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    return fig


def albedo_samples_figure(face_model_region_mesh, n_samples: int = 8, seed: int = 0, pool: int = 512,
                          noise_scale: float = 1.0, size: int = 200) -> Figure:
    """`n_samples` generator samples (not the PCA model) from the darkest to the lightest of a pool of `pool`.

    The face model must hold all 68 landmarks (e.g. region "full" or "all"). The samples shown are those nearest
    to evenly spaced values of plain-face-skin luminance between the pool's darkest and lightest (so the rare
    ends of the bell-shaped lightness distribution are shown, not only its middle).
    """
    fm = face_model_region_mesh
    albedo, people = generate_albedo(fm, pool, np.random.default_rng(seed), noise_scale=noise_scale,
                                     return_parameters=True)
    face_skin = albedo_regions(fm)["face_skin"]
    y = luminance(albedo[:, face_skin].mean(1))
    targets = np.linspace(y.min(), y.max(), n_samples)
    pick = np.unique(np.abs(y[None, :] - targets[:, None]).argmin(1))
    pick = pick[np.argsort(y[pick])]
    names = [p for p in DRAW_PARTS if p in fm.part_names]
    keep = fm.part_mask(*names).numpy()
    tri = fm.triangles.numpy()
    tri = tri[keep[tri].all(axis=1)]
    v = fm.mean.numpy()
    bounds = _bounds(v)
    cols = min(4, len(pick))
    rows = int(np.ceil(len(pick) / cols))
    fig = Figure(figsize=(cols * 2.3, rows * 2.8), constrained_layout=True)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel()[len(pick):]:
        ax.axis("off")
    for ax, i in zip(axes.ravel(), pick):
        _show(ax, v, tri, albedo[i], size, bounds)
        ax.set_title(f"Y={y[i]:.3f}  L*={float(lightness(y[i])):.0f}\niris: {people['iris_name'][i]}"
                     + (", beard" if people["has_beard"][i] else ""), fontsize=8)
    fig.suptitle(f"Generator samples, darkest to lightest of {pool}, evenly spaced in luminance Y "
                 f"(seed {seed}; sRGB display)",
                 fontsize=10)
    return fig
