"""The whole pipeline (dvc.yaml, notebooks, package) on the smoke configuration, once, in a scratch folder."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

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
    params = yaml.safe_load((work / "params.yaml").read_text())
    items = {"train": params["train"]["compare"], "breed": list(params["breed"]["rounds"]),
             "breed_guided": list(params["breed"]["guided_rounds"])}
    expected = set()
    for name, stage in stages.items():
        if "foreach" in stage:
            expected |= {f"{name}@{item}" for item in items[name]}
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


def test_smoke_breeding_rounds_chain_and_write_their_outputs(smoke_run):
    import yaml

    work = Path(smoke_run["workdir"])
    params = yaml.safe_load((work / "params.yaml").read_text())
    for chain in ("rounds", "guided_rounds"):
        _check_chain(work, params, params["breed"][chain])


def _check_chain(work, params, rounds):
    import torch

    previous = None
    for name in rounds:
        folder = work / params["breed"]["out_dir"] / name
        for f in ("model.pt", "metrics.json", "summary.json", "photos.json", "examples.png", "bred/meta.json"):
            assert (folder / f).exists(), f"{name}: {f} missing"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["previous"] == rounds[name]
        n = list(rounds).index(name) + 1          # this round's samples and all earlier ones of its chain
        bred = [p for p in summary["pools"] if p.endswith("/bred")]
        assert bred[-1].endswith(f"{name}/bred") and len(bred) == n
        metrics = json.loads((folder / "metrics.json").read_text())
        own = [p for p in summary["pools"] if p.endswith("/photos")]   # self-training photos, labelled by the network
        assert len(own) == n and own[-1].endswith(f"{name}/photos") and len(summary["pools"]) == 2 * n
        meta = json.loads((folder / "photos" / "meta.json").read_text())
        assert meta["self_training"] and meta["counts"]["train"] == metrics["breed_self_training_photos"] == \
            params["breed"]["self_training_photos"]
        assert metrics["breed_photos"] > 0
        if name in params["breed"]["guided_rounds"]:   # the detector anchored (some of) its refinements
            assert metrics["breed_photos_detector_guided"] > 0
        assert metrics["breed_bred_samples"] == metrics["breed_photos"] * params["breed"]["variants_per_photo"]
        blob = torch.load(folder / "model.pt", weights_only=True)
        if previous is not None:   # fine-tuned: the weights moved away from the predecessor's
            moved = [not torch.equal(blob["state_dict"][k], previous[k]) for k in previous if k.endswith("weight")]
            assert any(moved)
        previous = blob["state_dict"]


def test_smoke_finetune_real_trained_on_detected_photos(smoke_run):
    import yaml

    work = Path(smoke_run["workdir"])
    params = yaml.safe_load((work / "params.yaml").read_text())
    folder = work / params["finetune"]["out_dir"]
    summary = json.loads((folder / "summary.json").read_text())
    if params.get("detect", {}).get("detector", "mediapipe") == "none":
        assert "skipped" in summary and not (folder / "model.pt").exists()
        return
    assert summary["init"] == params["finetune"]["init"]
    assert 0 < summary["photos"]["photos_train"] <= params["finetune"]["photos"] + params["finetune"]["val_photos"]
    assert "val_real_landmark_rms" in json.loads((folder / "metrics.json").read_text())
    start = torch.load(work / params["finetune"]["init"] / "model.pt", weights_only=True)["state_dict"]
    tuned = torch.load(folder / "model.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(tuned[k], start[k]) for k in start if k.endswith("weight"))


def test_smoke_real_metrics_have_every_variant(smoke_run):
    import yaml

    work = Path(smoke_run["workdir"])
    params = yaml.safe_load((work / "params.yaml").read_text())
    metrics = json.loads((work / "metrics" / "evaluate_real.json").read_text())
    variants = ["synthetic_only", *params["breed"]["rounds"], "refined", "optimization_only"]
    guided = ["refined_landmarks", "optimization_only_landmarks"]
    if params.get("detect", {}).get("detector", "mediapipe") != "none":   # the detector-guided path, beside
        variants += guided + ["real_finetuned", *params["breed"]["guided_rounds"]]
        detector = metrics.pop("detector")
        # The detector itself does not depend on the smoke sizes: a real result on the dev images.
        assert 0 < detector["n_detected"] <= detector["n_benchmark"] == params["evaluate_real"]["benchmark_images"]
        assert 0 < detector["nme_mean"] < 0.2
        for name in guided:
            assert 0 < metrics[name]["n_detected"] <= metrics[name]["n_benchmark"]
    assert set(metrics) == set(variants)
    for name, m in metrics.items():
        for key in ("photometric_mae", "nme_mean", "nme_0_30", "nme_30_60", "nme_60_90", "seconds_per_image"):
            assert math.isfinite(m[key]) and m[key] >= 0, (name, key, m.get(key))
        assert m["n_photos"] == params["evaluate_real"]["photos"]
        assert m["n_benchmark"] == params["evaluate_real"]["benchmark_images"]
    # Refinement costs time: the refined and optimisation-only variants are slower than a forward pass.
    assert metrics["refined"]["seconds_per_image"] > metrics["synthetic_only"]["seconds_per_image"]
    assert (work / "outputs" / "figures" / "06_evaluate_real" / "nme_mean.png").exists()


def test_smoke_figures_and_report(smoke_run):
    work = Path(smoke_run["workdir"])
    figs = work / "outputs" / "figures" / "07_figures"
    for name in ("qualitative", "edits", "loss_ablation", "rounds", "accuracy_vs_time", "nme_yaw", "error_maps",
                 "fairness"):
        assert (figs / f"{name}.png").stat().st_size > 1000 and (figs / f"{name}.pdf").exists(), name
    fairness = json.loads((work / "metrics" / "fairness.json").read_text())
    assert {"gender", "race", "age"} <= set(fairness)
    report = (work / "reports" / "REPORT.md").read_text()
    assert "## 6. Real images" in report and "Missing inputs" not in report
    for line in report.splitlines():            # every linked figure exists
        if line.startswith("!["):
            target = line[line.index("(") + 1:line.rindex(")")]
            assert (work / "reports" / target).resolve().exists(), target
