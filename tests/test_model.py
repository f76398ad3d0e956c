"""Face model loading, region selection, landmarks and the parameter layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ifn.config import FaceModelConfig
from ifn.model.facemodel import ICT_JAWLINE, load_ict, select_region
from ifn.model.layout import ParamLayout
from ifn.paths import DataMissingError


def test_layout_is_derived_from_config_and_round_trips():
    layout = ParamLayout(n_shape=80, n_expression=64, n_reflectance=80)
    assert layout.size == 80 + 64 + 80 + 27 + 3 + 3 == 257  # Deep3DFaceRecon's vector
    assert layout["rotation"] == slice(251, 254)
    v = torch.randn(5, layout.size)
    g = layout.split(v)
    assert g["illumination"].shape == (5, 9, 3)
    assert torch.equal(layout.join(g), v)
    small = ParamLayout(10, 5, 8)
    assert small["illumination"].start == 23 and small.size == 10 + 5 + 8 + 33


def test_layout_errors():
    layout = ParamLayout(2, 2, 2)
    with pytest.raises(ValueError, match="expects 39"):
        layout.split(torch.zeros(3, 40))
    with pytest.raises(KeyError, match="no parameter group 'pose'"):
        layout["pose"]
    g = layout.zeros(1)
    del g["shape"]
    with pytest.raises(KeyError, match="missing parameter groups: shape"):
        layout.join(g)


def test_select_region_reindexes():
    keep = np.array([True, False, True, True])
    tri = np.array([[0, 2, 3], [0, 1, 2], [3, 2, 0]])
    kept, new = select_region(keep, tri)
    assert kept.tolist() == [0, 2, 3]
    assert new.tolist() == [[0, 1, 2], [2, 1, 0]]


@pytest.mark.parametrize("region, n_vertices", [("face", 9409), ("narrow_face", 6706), ("full", 16434),
                                                 ("all", 26719)])
def test_ict_regions(region, n_vertices):
    fm = load_ict(FaceModelConfig(region=region, n_shape=5, n_expression=3))
    assert fm.n_vertices == n_vertices and fm.n_shape == 5 and fm.n_expression == 3
    assert fm.triangles.min() >= 0 and fm.triangles.max() < n_vertices
    assert fm.shape_basis.shape == (5, n_vertices, 3)
    # Source indices map kept vertices back to the file's order.
    full = load_ict(FaceModelConfig(region="all", n_shape=5, n_expression=3))
    assert torch.equal(full.mean[fm.source_index], fm.mean)
    assert torch.equal(full.shape_basis[:, fm.source_index], fm.shape_basis)


def test_landmarks_use_jawline_substitutes():
    fm = load_ict(FaceModelConfig(region="full", n_shape=1, n_expression=0, landmarks="ict"))
    assert fm.landmarks.shape == (68,) and (fm.landmarks >= 0).all()
    for i, src in ICT_JAWLINE.items():
        assert fm.source_index[fm.landmarks[i]] == src
    lm = fm.mean[fm.landmarks]
    assert lm[30, 2] == lm[:, 2].max()  # the nose tip is the most forward landmark
    assert (lm[0:8, 0] < 0).all() and (lm[9:17, 0] > 0).all()  # right jaw at -x, left jaw at +x


def test_calibrated_landmarks_stay_near_ict_and_keep_the_layout(face_model_full):
    """The calibrated definition (default, bench/calibrate_detector.py) moves each landmark by at most its 3 cm
    search radius, within the face part, and keeps the 68-point layout (jaw sides, eyes, mouth corners)."""
    ict = load_ict(FaceModelConfig(region="full", n_shape=1, n_expression=0, landmarks="ict"))
    fm = face_model_full
    assert fm.landmarks.shape == (68,) and (fm.landmarks >= 0).all()
    moved = (fm.mean[fm.landmarks] - ict.mean[ict.landmarks]).norm(dim=-1)
    assert moved.max() <= 3.0 + 1e-4 and moved.mean() < 1.0
    assert fm.part_mask("face")[fm.landmarks].all()
    lm = fm.mean[fm.landmarks]
    assert (lm[0:8, 0] < 0).all() and (lm[9:17, 0] > 0).all()
    assert lm[36:42, 0].mean() < 0 < lm[42:48, 0].mean() and lm[48, 0] < lm[54, 0]
    from ifn.config import ParamsError
    with pytest.raises(ParamsError, match="face_model.landmarks"):
        FaceModelConfig.from_dict({"landmarks": "nope"})


def test_geometry_is_linear(face_model_full):
    fm = face_model_full
    g = torch.Generator().manual_seed(0)
    s, e = torch.randn(2, 20, generator=g), torch.rand(2, 53, generator=g)
    v = fm.geometry(s, e)
    want = fm.mean + torch.einsum("s,svc->vc", s[1], fm.shape_basis) + torch.einsum("e,evc->vc", e[1],
                                                                                      fm.expression_basis)
    assert torch.allclose(v[1], want, atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        fm.geometry(torch.zeros(1, 21), torch.zeros(1, 53))


def test_missing_model_file_tells_user_to_dvc_pull(tmp_path):
    with pytest.raises(DataMissingError, match="dvc pull"):
        load_ict(FaceModelConfig(path=str(tmp_path / "nope" / "ict_face_light.npz")))
