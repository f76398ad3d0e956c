"""params.yaml is loaded into validated, typed sections; bad values fail with one clear line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ifn.config import FaceModelConfig, ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_load():
    p = load_params(ROOT / "params.yaml")
    assert p.face_model.region in ("face", "narrow_face", "full", "all")
    assert p.render.image_size == 128


def test_every_params_value_is_commented():
    for line in (ROOT / "params.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            assert "#" in stripped, f"uncommented params.yaml line: {line!r}"


@pytest.mark.parametrize("key, value, message", [
    ("face_model.n_shape", 500, "params.yaml: face_model.n_shape = 500 is invalid: an integer in [1, 100]"),
    ("face_model.n_shape", 2.5, "face_model.n_shape = 2.5 is invalid: an integer"),
    ("face_model.region", "ears", "face_model.region = 'ears' is invalid: one of face | narrow_face | full | all"),
    ("render.fov_deg", -3, "render.fov_deg = -3 is invalid: a number in [1.0, 90.0]"),
    ("render.image_size", "big", "render.image_size = 'big' is invalid"),
    ("render.cull_backfaces", "yes", "render.cull_backfaces = 'yes' is invalid: one of True | False"),
    ("reflectance.n_components", 2000, "reflectance.n_components = 2000 is invalid"),
    ("seed", -1, "params.yaml: seed = -1 is invalid"),
])
def test_invalid_values_name_key_and_range(key, value, message):
    with pytest.raises(ParamsError) as err:
        load_params(ROOT / "params.yaml", overrides={key: value})
    text = str(err.value)
    assert message in text and "\n" not in text


def test_unknown_key_is_an_error(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["render"]["imagesize"] = 64
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match="unknown key render.imagesize"):
        load_params(path)


def test_n_components_must_be_below_training_samples():
    with pytest.raises(ParamsError, match="below the number of training samples"):
        load_params(ROOT / "params.yaml", overrides={"reflectance.n_samples": 100,
                                                     "reflectance.n_components": 95})


def test_defaults_are_valid():
    assert FaceModelConfig.from_dict({}) == FaceModelConfig()
