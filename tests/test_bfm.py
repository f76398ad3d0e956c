"""ifn.model.bfm: BFM-2009-style .mat and generic .npz linear models, on a tiny synthetic 6x6 grid model."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.io
import torch

from ifn.config import FaceModelConfig
from ifn.model.bfm import load_bfm
from ifn.model.facemodel import FaceModel
from ifn.model.loader import load_face_model
from ifn.model.reflectance import ReflectanceModel
from ifn.paths import DataMissingError

G = 6                      # grid side
N = G * G                  # vertices
K_SHAPE, K_EXPR, K_TEX = 2, 1, 2
UM_TO_CM = 1e-4


def grid_triangles() -> np.ndarray:
    """0-based, counter-clockwise seen from +z (x grows with i, y with j)."""
    tri = []
    for i in range(G - 1):
        for j in range(G - 1):
            v00, v10, v01, v11 = i * G + j, (i + 1) * G + j, i * G + j + 1, (i + 1) * G + j + 1
            tri += [(v00, v10, v11), (v00, v11, v01)]
    return np.array(tri, dtype=np.int64)


@pytest.fixture(scope="module")
def synth():
    """Ground truth in 'file units': geometry in micrometres, texture in 0..255, flat interleaved vectors."""
    rng = np.random.default_rng(7)
    i, j = np.meshgrid(np.arange(G), np.arange(G), indexing="ij")
    xyz_cm = np.stack([i.ravel() - 2.5, j.ravel() - 2.5, 0.3 * np.cos(i.ravel() + j.ravel())], axis=1)
    return {
        "mu": (xyz_cm / UM_TO_CM).reshape(-1),                  # (3N,) interleaved, micrometres
        "pc": np.linalg.qr(rng.normal(size=(3 * N, K_SHAPE)))[0],  # (3N, K) orthonormal columns
        "ev": np.array([2000.0, 500.0]),                        # std devs, micrometres
        "exp_pc": rng.normal(size=(3 * N, K_EXPR)),
        "exp_ev": np.array([300.0]),
        "tex_mu": rng.uniform(40, 220, size=3 * N),             # 0..255
        "tex_pc": np.linalg.qr(rng.normal(size=(3 * N, K_TEX)))[0],
        "tex_ev": np.array([30.0, 12.0]),
        "tri": grid_triangles(),                                # 0-based
        "lm": rng.integers(0, N, size=68),                      # 0-based
    }


def write_mat(path, s, drop=(), **extra):
    d = {"shapeMU": s["mu"][:, None], "shapePC": s["pc"], "shapeEV": s["ev"][:, None],
         "expPC": s["exp_pc"], "expEV": s["exp_ev"][:, None],
         "texMU": s["tex_mu"][:, None], "texPC": s["tex_pc"], "texEV": s["tex_ev"][:, None],
         "tl": (s["tri"] + 1).astype(np.float64),               # 1-based, double as in BFM 2009
         "landmarks": (s["lm"] + 1).astype(np.int32)}
    d.update(extra)
    for k in drop:
        d.pop(k)
    scipy.io.savemat(path, d)
    return path


def write_npz(path, s, layout="nested", drop=(), **extra):
    """Geometry in centimetres (unit_scale 1) unless overridden; texture already in [0,1]."""
    def basis(pc):  # (3N,K) flat or (K,N,3) nested
        return pc if layout == "flat" else pc.T.reshape(-1, N, 3)
    def vec(v):
        return v if layout == "flat" else v.reshape(N, 3)
    d = {"mean": vec(s["mu"] * UM_TO_CM), "shape_basis": basis(s["pc"]), "shape_std": s["ev"] * UM_TO_CM,
         "expression_basis": basis(s["exp_pc"]), "expression_std": s["exp_ev"] * UM_TO_CM,
         "triangles": s["tri"],
         "albedo_mean": vec(s["tex_mu"] / 255), "albedo_basis": basis(s["tex_pc"]),
         "albedo_std": s["tex_ev"] / 255, "landmarks": s["lm"]}
    d.update(extra)
    for k in drop:
        d.pop(k)
    np.savez(path, **d)
    return path


def expected_vertices(s, a, e):
    """Hand-computed x_n,c = (mu[3n+c] + sum_k a_k ev_k pc[3n+c,k] + sum_j e_j eev_j epc[3n+c,j]) * 1e-4 cm."""
    out = np.zeros((N, 3))
    for n in range(N):
        for c in range(3):
            r = 3 * n + c
            v = s["mu"][r]
            v += sum(a[k] * s["ev"][k] * s["pc"][r, k] for k in range(len(a)))
            v += sum(e[q] * s["exp_ev"][q] * s["exp_pc"][r, q] for q in range(len(e)))
            out[n, c] = v * UM_TO_CM
    return out


def expected_albedo(s, b):
    out = np.zeros((N, 3))
    for n in range(N):
        for c in range(3):
            r = 3 * n + c
            out[n, c] = (s["tex_mu"][r] + sum(b[k] * s["tex_ev"][k] * s["tex_pc"][r, k] for k in range(len(b)))) / 255
    return out


def close(t: torch.Tensor, ref: np.ndarray, atol=1e-6):
    np.testing.assert_allclose(t.detach().double().numpy(), ref, rtol=1e-5, atol=atol)


# ------------------------------------------------------------------------------------------------- .mat

def test_mat_round_trip(tmp_path, synth):
    s = synth
    fm, refl = load_bfm(write_mat(tmp_path / "bfm.mat", s))
    assert isinstance(fm, FaceModel) and isinstance(refl, ReflectanceModel)
    assert fm.n_vertices == N and fm.n_shape == K_SHAPE and fm.n_expression == K_EXPR
    assert fm.mean.dtype == torch.float32 and fm.triangles.dtype == torch.int64
    close(fm.mean, (s["mu"] * UM_TO_CM).reshape(N, 3))
    # Interleaved x1,y1,z1,...: vertex 5's y is row 16 of the flat vector.
    assert fm.mean[5, 1].item() == pytest.approx(s["mu"][16] * UM_TO_CM, rel=1e-6)
    for k in range(K_SHAPE):
        close(fm.shape_basis[k], (s["pc"][:, k] * s["ev"][k] * UM_TO_CM).reshape(N, 3))
    close(fm.expression_basis[0], (s["exp_pc"][:, 0] * s["exp_ev"][0] * UM_TO_CM).reshape(N, 3))
    assert torch.equal(fm.triangles, torch.from_numpy(s["tri"]))
    assert torch.equal(fm.landmarks, torch.from_numpy(s["lm"]))
    assert torch.equal(fm.parts, torch.zeros(N, dtype=torch.int64)) and fm.part_names == ("face",)
    assert torch.equal(fm.source_index, torch.arange(N))
    assert fm.meta["unit_scale"] == pytest.approx(1e-4)
    # Albedo: /255, basis scaled by its std devs; explained variance = ev^2 / sum ev^2.
    assert refl.n_components == K_TEX and refl.n_vertices == N
    close(refl.mean, (s["tex_mu"] / 255).reshape(N, 3))
    for k in range(K_TEX):
        close(refl.basis[k], (s["tex_pc"][:, k] * s["tex_ev"][k] / 255).reshape(N, 3))
    close(refl.explained_variance, s["tex_ev"] ** 2 / (s["tex_ev"] ** 2).sum())
    assert 0.15 < refl.mean.min() and refl.mean.max() < 0.9


def test_mat_geometry_and_albedo_linear_combination(tmp_path, synth):
    fm, refl = load_bfm(write_mat(tmp_path / "bfm.mat", synth))
    a, e, b = [1.5, -0.7], [0.8], [-1.2, 2.0]
    geo = fm.geometry(torch.tensor([a], dtype=torch.float64), torch.tensor([e], dtype=torch.float64))
    assert geo.shape == (1, N, 3)
    close(geo[0], expected_vertices(synth, a, e), atol=1e-5)
    close(refl.albedo(torch.tensor([b]))[0], expected_albedo(synth, b), atol=1e-5)
    # Zero weights give the mean; the std scaling matters (weights are N(0,1)).
    close(fm.geometry(torch.zeros(1, 2), torch.zeros(1, 1))[0], (synth["mu"] * UM_TO_CM).reshape(N, 3))
    assert (fm.geometry(torch.tensor([[1.0, 0]]), torch.zeros(1, 1)) - fm.mean).abs().max() > 0.05


def test_mat_truncation_and_unit_scale(tmp_path, synth):
    path = write_mat(tmp_path / "bfm.mat", synth)
    fm, _ = load_bfm(path, n_shape=1, n_expression=0)
    assert fm.shape_basis.shape == (1, N, 3) and fm.expression_basis.shape == (0, N, 3)
    close(fm.shape_basis[0], (synth["pc"][:, 0] * synth["ev"][0] * UM_TO_CM).reshape(N, 3))
    close(fm.geometry(torch.tensor([[0.5]]), torch.zeros(1, 0))[0], expected_vertices(synth, [0.5], []), atol=1e-5)
    mm, _ = load_bfm(path, unit_scale=1e-3)  # micrometres -> millimetres
    close(mm.mean, (synth["mu"] * 1e-3).reshape(N, 3), atol=1e-4)


def test_mat_optional_parts(tmp_path, synth):
    path = write_mat(tmp_path / "plain.mat", synth, drop=("expPC", "expEV", "texMU", "texPC", "texEV", "landmarks"),
                     keypoints=(synth["lm"] + 1).astype(np.float64)[None, :])  # (1,68) float, as Deep3DFaceRecon
    fm, refl = load_bfm(path, n_expression=0)
    assert refl is None and fm.n_expression == 0
    assert torch.equal(fm.landmarks, torch.from_numpy(synth["lm"]))
    with pytest.raises(ValueError, match="no expression basis.*n_expression: 0"):
        load_bfm(path, n_expression=1)
    nolm, _ = load_bfm(write_mat(tmp_path / "nolm.mat", synth, drop=("landmarks",)))
    assert torch.equal(nolm.landmarks, torch.full((68,), -1, dtype=torch.int64))


def test_too_many_components(tmp_path, synth):
    path = write_mat(tmp_path / "bfm.mat", synth)
    with pytest.raises(ValueError, match=r"asked for 3 shape components, but the model has only 2"):
        load_bfm(path, n_shape=3)
    with pytest.raises(ValueError, match=r"asked for 2 expression components, but the model has only 1"):
        load_bfm(path, n_expression=2)


def test_missing_keys_named(tmp_path, synth):
    path = write_mat(tmp_path / "broken.mat", synth, drop=("shapeEV", "tl"))
    with pytest.raises(ValueError) as err:
        load_bfm(path)
    msg = str(err.value)
    assert "shapeEV" in msg and "tl" in msg and "broken.mat" in msg and "missing" in msg
    with pytest.raises(ValueError, match=r"texEV"):
        load_bfm(write_mat(tmp_path / "tex.mat", synth, drop=("texEV",)))
    with pytest.raises(ValueError, match=r"expEV"):
        load_bfm(write_mat(tmp_path / "exp.mat", synth, drop=("expEV",)))
    with pytest.raises(ValueError, match=r"broken\.npz.*'triangles'"):
        load_bfm(write_npz(tmp_path / "broken.npz", synth, drop=("triangles",)))


def test_missing_file(tmp_path):
    with pytest.raises(DataMissingError, match="dvc pull"):
        load_bfm(tmp_path / "nope.mat")
    with pytest.raises(DataMissingError, match="nope.mat"):
        load_face_model(FaceModelConfig(path=str(tmp_path / "nope.mat"), n_shape=2, n_expression=1))


def test_triangle_range_checked(tmp_path, synth):
    zero_based = write_mat(tmp_path / "zb.mat", synth, tl=synth["tri"].astype(np.float64))
    with pytest.raises(ValueError, match="out of range.*0-based"):
        load_bfm(zero_based)
    one_based = write_npz(tmp_path / "ob.npz", synth, triangles=synth["tri"] + 1)
    with pytest.raises(ValueError, match="out of range.*1-based"):
        load_bfm(one_based)
    with pytest.raises(ValueError, match="landmarks"):
        load_bfm(write_npz(tmp_path / "lm.npz", synth, landmarks=np.full(68, N)))
    with pytest.raises(ValueError, match="unsupported"):
        load_bfm(write_npz(tmp_path / "x.npz", synth).rename(tmp_path / "x.h5"))


# ------------------------------------------------------------------------------------------------- .npz

@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_npz_round_trip(tmp_path, synth, layout):
    s = synth
    fm, refl = load_bfm(write_npz(tmp_path / "m.npz", s, layout=layout))
    assert fm.meta["unit_scale"] == 1.0
    close(fm.mean, (s["mu"] * UM_TO_CM).reshape(N, 3))
    close(fm.shape_basis, (s["pc"] * s["ev"] * UM_TO_CM).T.reshape(K_SHAPE, N, 3))
    close(fm.expression_basis, (s["exp_pc"] * s["exp_ev"] * UM_TO_CM).T.reshape(K_EXPR, N, 3))
    assert torch.equal(fm.triangles, torch.from_numpy(s["tri"]))
    assert torch.equal(fm.landmarks, torch.from_numpy(s["lm"]))
    close(refl.mean, (s["tex_mu"] / 255).reshape(N, 3))
    close(refl.basis, (s["tex_pc"] * s["tex_ev"] / 255).T.reshape(K_TEX, N, 3))
    a, e = [-0.3, 1.1], [0.4]
    close(fm.geometry(torch.tensor([a], dtype=torch.float64), torch.tensor([e], dtype=torch.float64))[0],
          expected_vertices(s, a, e), atol=1e-5)


def test_npz_defaults_and_unit_scale(tmp_path, synth):
    s = synth
    # Geometry stored in millimetres with unit_scale 0.1; no stds (ones), no landmarks, no albedo.
    path = write_npz(tmp_path / "mm.npz", s, drop=("shape_std", "expression_std", "landmarks", "albedo_mean",
                                                     "albedo_basis", "albedo_std"),
                     mean=(s["mu"] * 1e-3).reshape(N, 3), unit_scale=np.float64(0.1))
    fm, refl = load_bfm(path, n_shape=1)
    assert refl is None
    assert torch.equal(fm.landmarks, torch.full((68,), -1, dtype=torch.int64))
    close(fm.mean, (s["mu"] * UM_TO_CM).reshape(N, 3))
    close(fm.shape_basis[0], 0.1 * s["pc"][:, 0].reshape(N, 3))   # std 1, scaled to cm
    fm2, _ = load_bfm(path, unit_scale=1.0)                          # explicit argument wins
    close(fm2.mean, (s["mu"] * 1e-3).reshape(N, 3), atol=1e-5)


def test_winding_warning(tmp_path, synth):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_bfm(write_npz(tmp_path / "ok.npz", synth))
    with pytest.warns(UserWarning, match="counter-clockwise"):
        load_bfm(write_npz(tmp_path / "cw.npz", synth, triangles=synth["tri"][:, ::-1].copy()))


# ------------------------------------------------------------------------------------ load_face_model

def test_load_face_model_dispatches_mat(tmp_path, synth):
    path = write_mat(tmp_path / "01_MorphableModel.mat", synth)
    fm = load_face_model(FaceModelConfig(path=str(path), n_shape=2, n_expression=1))
    assert isinstance(fm, FaceModel) and fm.n_shape == 2 and fm.n_expression == 1
    close(fm.geometry(torch.tensor([[1.0, 2.0]]), torch.tensor([[-1.0]]))[0],
          expected_vertices(synth, [1.0, 2.0], [-1.0]), atol=1e-5)
    small = load_face_model(FaceModelConfig(path=str(path), n_shape=1, n_expression=0))
    assert small.n_shape == 1 and small.n_expression == 0
