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
