"""Shared fixtures. Tests that need data/ fail with the `dvc pull` message if it is missing."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def face_model_full():
    from ifn.config import FaceModelConfig
    from ifn.model.facemodel import load_ict

    return load_ict(FaceModelConfig(region="full", n_shape=20, n_expression=53))


@pytest.fixture(scope="session")
def small_reflectance_path(tmp_path_factory):
    """A real (small) reflectance model built by the project's generator + PCA: 100 samples, 8 components.

    Tests must not depend on pipeline outputs (a fresh clone has none), so they build their own."""
    from ifn.config import FaceModelConfig, ReflectanceConfig
    from ifn.model.facemodel import load_ict
    from ifn.model.reflectance import build_reflectance_model

    model, _ = build_reflectance_model(load_ict(FaceModelConfig(region="all", n_shape=1, n_expression=0)),
                                       ReflectanceConfig(n_samples=100, n_components=8), seed=0)
    path = tmp_path_factory.mktemp("reflectance") / "reflectance.npz"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def constant_albedo_renderer(face_model_full):
    """Factory: a Renderer of the full ICT mesh with one constant grey albedo (a 1-component model), size px."""
    from ifn.model.layout import ParamLayout
    from ifn.model.reflectance import ReflectanceModel
    from ifn.render.renderer import Renderer, RenderSettings

    def make(size: int):
        v = face_model_full.n_vertices
        refl = ReflectanceModel(torch.full((v, 3), 0.45), torch.zeros(1, v, 3), torch.ones(1))
        layout = ParamLayout(face_model_full.n_shape, face_model_full.n_expression, 1)
        return Renderer(face_model_full, refl, layout, RenderSettings(image_size=size, fov_deg=13.0, distance_cm=100.0))
    return make


@pytest.fixture(scope="module")
def one_thread():
    """Small renders run best on one thread (with 2 threads on a busy 2-core machine, a step can take 5-7x
    longer: the threads wait for each other). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
