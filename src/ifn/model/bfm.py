"""Load a Basel-Face-Model-style linear morphable model (or any generic linear model) as a FaceModel.

The project's default model is ICT-FaceKit (`ifn.model.facemodel.load_ict`); holders of a Basel Face Model
licence can swap it in by pointing `face_model.path` at their file. Two formats are read:

(a) a BFM-2009-style MATLAB ``.mat`` file (as 01_MorphableModel.mat):
      shapeMU (3N,1), shapePC (3N,K), shapeEV (K,1) standard deviations,  tl (F,3) 1-based triangles,
      optional texMU (3N,1) in 0..255, texPC (3N,K'), texEV (K',1)      -> ReflectanceModel (texture / 255),
      optional expPC (3N,E), expEV (E,1)                                  -> expression basis,
      optional landmarks or keypoints (68,) 1-based vertex ids.
    Coordinates are micrometres: the default unit_scale 1e-4 converts them to centimetres.
(b) a generic ``.npz``:
      mean (N,3) or (3N,), shape_basis (K,N,3) or (3N,K), optional shape_std (K,) (default ones),
      optional expression_basis / expression_std (same layouts), triangles (F,3) 0-based,
      optional albedo_mean (N,3) or (3N,) in [0,1], albedo_basis, albedo_std,
      optional landmarks (68,) 0-based (-1 = missing), optional unit_scale scalar (default 1.0, i.e. cm).

Flat vectors are interleaved x1,y1,z1,x2,... (BFM convention). Every basis is multiplied by its standard
deviations, so all weights (identity, expression, albedo) are N(0, 1) -- note that, unlike ICT's [0, 1]
blendshape weights, BFM-style expression weights are N(0, 1) too. The whole mesh is one part, "face".
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..paths import require_data
from .facemodel import FaceModel
from .reflectance import ReflectanceModel

MAT_DEFAULT_UNIT_SCALE = 1e-4  # BFM micrometres -> centimetres
N_LANDMARKS = 68


def load_bfm(path: str | Path, n_shape: int | None = None, n_expression: int | None = None,
             unit_scale: float | None = None) -> tuple[FaceModel, ReflectanceModel | None]:
    """Read a BFM-style ``.mat`` or generic ``.npz`` linear model -> (FaceModel, ReflectanceModel or None).

    n_shape / n_expression keep the first components (None: all; asking for more than exist is an error).
    unit_scale multiplies geometry (mean and bases) into centimetres; None uses the format's default
    (1e-4 for .mat, the file's `unit_scale` entry or 1.0 for .npz).
    """
    path = require_data(path, "face model")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        raw, landmark_base, default_scale, fmt = _read_mat(path), 1, MAT_DEFAULT_UNIT_SCALE, "bfm-mat"
    elif suffix == ".npz":
        raw, landmark_base, default_scale, fmt = _read_npz(path), 0, None, "npz"
        default_scale = raw.pop("unit_scale", 1.0)
    else:
        raise ValueError(f"{path}: unsupported face model file type {path.suffix!r}; "
                         f"expected a BFM-style .mat or a generic .npz (see ifn.model.bfm)")
    scale = float(default_scale if unit_scale is None else unit_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"{path}: unit_scale must be a positive number, got {scale!r}")

    mean = _vertices(raw["mean"], None, "mean", path)
    n_vert = mean.shape[0]
    shape_basis, shape_std = _basis(raw["shape_basis"], raw.get("shape_std"), n_vert, n_shape,
                                    "shape", raw["names"]["shape_basis"], path)
    if raw.get("expression_basis") is not None:
        expr_basis, expr_std = _basis(raw["expression_basis"], raw.get("expression_std"), n_vert,
                                      n_expression, "expression", raw["names"]["expression_basis"], path)
    else:
        if n_expression:
            raise ValueError(
                f"{path}: {n_expression} expression components asked for, but the file has no expression "
                f"basis (keys {raw['names']['expression_basis']}); set face_model.n_expression: 0")
        expr_basis, expr_std = np.zeros((0, n_vert, 3)), np.zeros(0)

    triangles = _triangles(raw["triangles"], n_vert, landmark_base, raw["names"]["triangles"], path)
    landmarks = _landmarks(raw.get("landmarks"), n_vert, landmark_base, raw["names"]["landmarks"], path)

    reflectance = None
    if raw.get("albedo_mean") is not None:
        tex_scale = 1.0 / 255.0 if fmt == "bfm-mat" else 1.0
        albedo_mean = _vertices(raw["albedo_mean"], n_vert, raw["names"]["albedo_mean"], path)
        if raw.get("albedo_basis") is not None:
            albedo_basis, albedo_std = _basis(raw["albedo_basis"], raw.get("albedo_std"), n_vert, None,
                                              "albedo", raw["names"]["albedo_basis"], path)
        else:
            albedo_basis, albedo_std = np.zeros((0, n_vert, 3)), np.zeros(0)
        var = albedo_std.astype(np.float64) ** 2
        explained = var / var.sum() if var.sum() > 0 else var
        reflectance = ReflectanceModel(
            mean=torch.from_numpy(np.ascontiguousarray(albedo_mean * tex_scale, dtype=np.float32)),
            basis=torch.from_numpy(np.ascontiguousarray(albedo_basis * tex_scale, dtype=np.float32)),
            explained_variance=torch.from_numpy(explained.astype(np.float32)),
            meta={"path": str(path), "format": fmt,
                  "explained_variance": "fraction of the model's total albedo variance (not of the data)"})

    winding = _winding(mean, triangles)
    if winding < -0.1:
        warnings.warn(f"{path}: most triangles face -z (projected-area ratio {winding:.2f}); FaceModel "
                      f"expects counter-clockwise triangles seen from outside with +z towards the viewer, "
                      f"so back-face culling may hide the face", stacklevel=2)

    t = torch.from_numpy
    f32 = lambda a: t(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    face = FaceModel(
        mean=f32(mean * scale),
        shape_basis=f32(shape_basis * scale),
        expression_basis=f32(expr_basis * scale),
        triangles=t(triangles),
        landmarks=t(landmarks),
        parts=torch.zeros(n_vert, dtype=torch.int64),
        part_names=("face",),
        source_index=torch.arange(n_vert, dtype=torch.int64),
        expression_names=tuple(f"expression_{j}" for j in range(expr_basis.shape[0])),
        name=f"{'Basel Face Model' if fmt == 'bfm-mat' else 'linear face model'} ({path.name})",
        meta={"path": str(path), "format": fmt, "unit_scale": scale, "n_source_vertices": n_vert,
              "shape_std": shape_std.tolist(), "expression_std": expr_std.tolist(),
              "expression_weights": "N(0, 1)", "winding_z": winding},
    )
    return face, reflectance


# ----------------------------------------------------------------------------------------------- readers

def _missing(path: Path, present, required) -> None:
    missing = [k for k in required if k not in present]
    if missing:
        raise ValueError(f"{path}: missing required key(s) {missing} (keys present: {sorted(present)})")


def _pair(path: Path, d: dict, data_key: str, std_key: str, std_optional: bool):
    """(data, std) for an optional basis; both absent -> (None, None); std absent -> error unless optional."""
    if data_key not in d:
        if std_key in d:
            raise ValueError(f"{path}: key {std_key!r} given without {data_key!r}")
        return None, None
    if std_key not in d and not std_optional:
        raise ValueError(f"{path}: key {data_key!r} needs {std_key!r} (its standard deviations); missing")
    return d[data_key], d.get(std_key)


def _read_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        d = loadmat(str(path))
    except NotImplementedError as e:  # MATLAB v7.3 (HDF5)
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save it in MATLAB "
                         f"with save(..., '-v7') or convert it to the generic .npz format") from e
    except Exception as e:  # noqa: BLE001 - scipy raises several types for corrupt files
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file: {e}") from e
    d = {k: v for k, v in d.items() if not k.startswith("__")}
    _missing(path, d, ("shapeMU", "shapePC", "shapeEV", "tl"))
    tex = [k for k in ("texMU", "texPC", "texEV") if k in d]
    if tex:
        _missing(path, d, ("texMU", "texPC", "texEV"))
    exp_pc, exp_ev = _pair(path, d, "expPC", "expEV", std_optional=False)
    lm_key = "landmarks" if "landmarks" in d else "keypoints" if "keypoints" in d else None
    return {
        "mean": d["shapeMU"], "shape_basis": d["shapePC"], "shape_std": d["shapeEV"],
        "expression_basis": exp_pc, "expression_std": exp_ev,
        "triangles": d["tl"],
        "albedo_mean": d.get("texMU"), "albedo_basis": d.get("texPC"), "albedo_std": d.get("texEV"),
        "landmarks": d[lm_key] if lm_key else None,
        "names": {"shape_basis": "shapePC/shapeEV", "expression_basis": "expPC/expEV", "triangles": "tl",
                  "albedo_mean": "texMU", "albedo_basis": "texPC/texEV", "landmarks": lm_key},
    }


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read as an .npz file: {e}") from e
    _missing(path, d, ("mean", "shape_basis", "triangles"))
    if "shape_std" in d and "shape_basis" not in d:
        raise ValueError(f"{path}: key 'shape_std' given without 'shape_basis'")
    exp_b, exp_s = _pair(path, d, "expression_basis", "expression_std", std_optional=True)
    alb_b, alb_s = _pair(path, d, "albedo_basis", "albedo_std", std_optional=True)
    if alb_b is not None and "albedo_mean" not in d:
        raise ValueError(f"{path}: key 'albedo_basis' given without 'albedo_mean'")
    out = {
        "mean": d["mean"], "shape_basis": d["shape_basis"], "shape_std": d.get("shape_std"),
        "expression_basis": exp_b, "expression_std": exp_s,
        "triangles": d["triangles"],
        "albedo_mean": d.get("albedo_mean"), "albedo_basis": alb_b, "albedo_std": alb_s,
        "landmarks": d.get("landmarks"),
        "names": {"shape_basis": "shape_basis/shape_std", "expression_basis": "expression_basis/expression_std",
                  "triangles": "triangles", "albedo_mean": "albedo_mean",
                  "albedo_basis": "albedo_basis/albedo_std", "landmarks": "landmarks"},
    }
    if "unit_scale" in d:
        us = np.asarray(d["unit_scale"])
        if us.size != 1 or not np.issubdtype(us.dtype, np.number):
            raise ValueError(f"{path}: 'unit_scale' must be a scalar number, got shape {us.shape} {us.dtype}")
        out["unit_scale"] = float(us.reshape(()))
    return out


# ------------------------------------------------------------------------------------------ conversions

def _as_float(a, name: str, path: Path) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{path}: {name} must be numeric, got dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: {name} contains NaN or infinite values")
    return a


def _vertices(a, n_vert: int | None, name: str, path: Path) -> np.ndarray:
    """(3N,), (3N,1), (1,3N) or (N,3) -> (N,3)."""
    a = _as_float(a, name, path)
    if a.ndim == 2 and a.shape[1] == 3 and (n_vert is None or a.shape[0] == n_vert) and a.shape != (1, 3):
        out = a
    elif a.ndim == 1 or (a.ndim == 2 and 1 in a.shape):
        flat = a.reshape(-1)
        if flat.size % 3:
            raise ValueError(f"{path}: {name} has {flat.size} values, not a multiple of 3 (x1,y1,z1,x2,...)")
        out = flat.reshape(-1, 3)
    else:
        raise ValueError(f"{path}: {name} has shape {a.shape}; expected (N,3) or (3N,)")
    if n_vert is not None and out.shape[0] != n_vert:
        raise ValueError(f"{path}: {name} has {out.shape[0]} vertices, the mean shape has {n_vert}")
    if out.shape[0] == 0:
        raise ValueError(f"{path}: {name} has no vertices")
    return out


def _basis(b, std, n_vert: int, n_keep: int | None, what: str, name: str, path: Path):
    """(K,N,3) or (3N,K) basis and (K,) std -> (n_keep,N,3) basis * std, (n_keep,) std."""
    b = np.asarray(b)
    if b.ndim == 3:
        if b.shape[1:] != (n_vert, 3):
            raise ValueError(f"{path}: {name} has shape {b.shape}; expected (K, {n_vert}, 3) or ({3 * n_vert}, K)")
        n_avail = b.shape[0]
    elif b.ndim == 2:
        if b.shape[0] != 3 * n_vert:
            raise ValueError(f"{path}: {name} has shape {b.shape}; expected ({3 * n_vert}, K) or (K, {n_vert}, 3)")
        n_avail = b.shape[1]
    else:
        raise ValueError(f"{path}: {name} has shape {b.shape}; expected (K, {n_vert}, 3) or ({3 * n_vert}, K)")
    if std is None:
        std = np.ones(n_avail)
    std = _as_float(std, f"{name} (std)", path).reshape(-1)
    if std.size != n_avail:
        raise ValueError(f"{path}: {name}: {n_avail} basis vectors but {std.size} standard deviations")
    if (std < 0).any():
        raise ValueError(f"{path}: {name}: standard deviations must be >= 0")
    k = n_avail if n_keep is None else int(n_keep)
    if k < 0:
        raise ValueError(f"{path}: n_{what} must be >= 0, got {k}")
    if k > n_avail:
        raise ValueError(f"{path}: asked for {k} {what} components, but the model has only {n_avail} "
                         f"(set face_model.n_{what} <= {n_avail})")
    # Truncate before converting, so a large BFM basis is copied only once.
    if b.ndim == 3:
        b = _as_float(b[:k], name, path)
    else:
        b = _as_float(b[:, :k], name, path).T.reshape(k, n_vert, 3)
    std = std[:k]
    return b * std[:, None, None], std


def _index_array(a, name: str, path: Path) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{path}: {name} must be numeric indices, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"{path}: {name} must hold integer vertex indices")
    return a.astype(np.int64)


def _triangles(tri, n_vert: int, base: int, name: str, path: Path) -> np.ndarray:
    tri = _index_array(tri, name, path)
    if tri.ndim == 2 and tri.shape[0] == 3 and tri.shape[1] != 3:
        tri = tri.T  # stored as (3, F)
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] == 0:
        raise ValueError(f"{path}: {name} has shape {tri.shape}; expected (F, 3) triangles")
    tri = np.ascontiguousarray(tri - base)
    lo, hi = int(tri.min()), int(tri.max())
    if lo < 0 or hi >= n_vert:
        basis = "1-based" if base else "0-based"
        hint = (" (are they 0-based? this format needs 1-based indices)" if base and lo == -1 else
                " (are they 1-based? this format needs 0-based indices)" if not base and hi == n_vert else "")
        raise ValueError(f"{path}: {name} indices out of range: {lo + base}..{hi + base} ({basis}) for "
                         f"{n_vert} vertices{hint}")
    return tri


def _landmarks(lm, n_vert: int, base: int, name: str | None, path: Path) -> np.ndarray:
    if lm is None:
        return np.full(N_LANDMARKS, -1, dtype=np.int64)
    lm = _index_array(lm, name, path).reshape(-1)
    if lm.size != N_LANDMARKS:
        raise ValueError(f"{path}: {name} has {lm.size} entries; expected {N_LANDMARKS} (Multi-PIE 68)")
    lm = lm - base  # now -1 marks a landmark not on this mesh (0 in a 1-based file, -1 in a 0-based one)
    if lm.min() < -1 or lm.max() >= n_vert:
        raise ValueError(f"{path}: {name} indices {int(lm.min()) + base}..{int(lm.max()) + base} out of range "
                         f"for {n_vert} vertices ({'1' if base else '0'}-based; {base - 1} = missing)")
    return lm


def _winding(mean: np.ndarray, tri: np.ndarray) -> float:
    """Projected area along +z over total area, in [-1, 1]: ~ +1 for a CCW face mesh facing +z."""
    v = mean.astype(np.float64)
    n = np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]])
    total = np.linalg.norm(n, axis=1).sum()
    return float(n[:, 2].sum() / total) if total > 0 else 0.0
