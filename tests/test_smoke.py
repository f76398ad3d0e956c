"""The whole pipeline (dvc.yaml, notebooks, package) on the smoke configuration, once, in a scratch folder."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ifn import smoke

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    return smoke.run(tmp_path_factory.mktemp("smoke") / "project", ROOT)


def test_smoke_pipeline_runs_every_stage(smoke_run):
    work = Path(smoke_run["workdir"])
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    expected = set()
    for name, stage in stages.items():
        if "foreach" in stage:
            expected |= {f"{name}@{item}" for item in ("model_space", "parameter")}
        else:
            expected.add(name)
    assert expected <= set(lock)
    for nb in (work / "outputs" / "notebooks").glob("*.ipynb"):
        assert not nb.name.endswith((".partial.ipynb", ".failed.ipynb"))
    assert smoke_run["seconds"] < 600


def test_smoke_metrics_have_both_variants(smoke_run):
    metrics = json.loads((Path(smoke_run["workdir"]) / "metrics" / "evaluate_synthetic.json").read_text())
    assert set(metrics) == {"model_space", "parameter"}
    for variant in metrics.values():
        for key in ("geometry_mm_mean", "shape_mm_mean", "reflectance_mae_mean", "shading_mae_mean",
                    "rotation_deg_mean", "photometric_mae_mean"):
            assert math.isfinite(variant[key]) and variant[key] >= 0
