"""Fine-tuning on real photos with detector landmarks (ifn.finetune): the real loss's closed forms, training on
consistent targets lowers it, the batches mix both domains, the stage is skipped (and says so) without a
detector."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("pytorch_lightning")

from ifn.config import load_params  # noqa: E402
from ifn.corpus import Corpus  # noqa: E402
from ifn.fit import posed_subset  # noqa: E402
from ifn.synth import build_renderer, face_weights, synthesize  # noqa: E402
from test_train import OVERRIDES as TRAIN_OVERRIDES  # noqa: E402  (tests/ is on sys.path, as for test_cli_edit)

ROOT = Path(__file__).resolve().parents[1]
# test_train's tiny problem, without the photo backgrounds (not what is tested here), a smaller corpus and
# small real batches.
OVERRIDES = {
    **{k: v for k, v in TRAIN_OVERRIDES.items() if not k.startswith("train.augment.")},
    "synthesize.n_train": 96, "train.augment.photo_background_prob": 0.0,
    "finetune.real_batch_size": 8, "finetune.w_landmark": 1000.0,
}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_reflectance_path):
    tmp = tmp_path_factory.mktemp("finetune")
    (tmp / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp / "reflectance.npz").write_bytes(small_reflectance_path.read_bytes())
    synthesize(tmp / "params.yaml", tmp / "corpus", tmp / "reflectance.npz", overrides=OVERRIDES, log=lambda s: None)
    params = load_params(tmp / "params.yaml", OVERRIDES)
    renderer = build_renderer(params, tmp / "reflectance.npz", image_size=32)
    return tmp, params, renderer


def _module(setup, lr: float = 0.003, **finetune):
    from ifn.finetune import RealFinetuneModule
    from ifn.learn.data import CorpusDataModule

    tmp, params, renderer = setup
    data = CorpusDataModule(tmp / "corpus", params.train, 0)
    mean, std = data.param_stats()
    lay = renderer.layout
    # the synthetic half's landmark reprojection term off: these tests measure the real photos' terms
    config = {**params.train.to_dict(), "loss": "model_space", "lr": lr, "w_reprojection": 0.0}
    torch.manual_seed(0)
    return RealFinetuneModule(config, {"n_shape": lay.n_shape, "n_expression": lay.n_expression,
                                       "n_reflectance": lay.n_reflectance}, params.render.distance_cm, "k",
                              renderer=renderer, finetune={**params.finetune.to_dict(), **finetune},
                              detect=params.detect.to_dict(), face_model=renderer.face_model,
                              reflectance=renderer.reflectance, vertex_weights=face_weights(renderer),
                              param_mean=mean, param_std=std)


def _targets(module, params: torch.Tensor) -> torch.Tensor:
    """(B, 468, 2) render-pixel projections of the detector points' vertices at `params` (NaN: no vertex)."""
    r = module.renderer
    ids = module.vertex_ids
    with torch.no_grad():
        xy, _ = r.camera.project(posed_subset(r, r.groups(params), ids.clamp_min(0)))
    return torch.where((ids >= 0)[None, :, None], xy, torch.full_like(xy, float("nan")))


def test_real_loss_closed_forms(setup):
    tmp, params, renderer = setup
    module = _module(setup, w_shape_prior=0.5, w_expression_prior=2.0)
    corpus = Corpus.open(tmp / "corpus")
    p = torch.from_numpy(np.array(corpus.load("train", "params")[:3])).float()
    photos = torch.zeros(3, 32, 32, 3)
    exact = module.real_terms(p, photos, _targets(module, p))
    assert (exact["landmark_rms"] < 2e-4).all()              # sqrt(0 + 1e-8): the truth costs nothing
    shift = torch.tensor([1.5, -2.0])                           # every point 2.5 px off -> RMS 2.5 / 32 sides
    shifted = module.real_terms(p, photos, _targets(module, p) + shift)
    np.testing.assert_allclose(shifted["landmark_rms"].numpy(), 2.5 / 32, rtol=1e-4)
    g = renderer.layout.split(p)
    expected = 1000.0 * shifted["landmark_rms"] + 0.5 * g["shape"].pow(2).sum(-1) + 2.0 * g["expression"].pow(2).sum(-1)
    np.testing.assert_allclose(shifted["loss"].detach().numpy(), expected.numpy(), rtol=1e-5)
    # A point whose target is unknown (NaN, no detection) does not count.
    t = _targets(module, p) + shift
    t[:, :100] = float("nan")
    np.testing.assert_allclose(module.real_terms(p, photos, t)["landmark_rms"].numpy(), 2.5 / 32, rtol=1e-4)


def test_training_on_consistent_targets_lowers_the_real_loss(setup):
    """Corpus renders as 'real photos' with exact targets. The same short fine-tuning with and without the
    landmark term: with it, the photos' landmark RMS ends clearly lower on the photos trained on; every training batch carries both domains; val/loss is synthetic + real loss."""
    import pytorch_lightning as pl

    from ifn.finetune import FinetuneDataModule

    tmp, params, renderer = setup
    corpus = Corpus.open(tmp / "corpus")
    crops = np.array(corpus.load("train", "images"))[:48]       # 24 to train on, 24 to validate
    truth = torch.from_numpy(np.array(corpus.load("train", "params"))[:48]).float()
    val = np.zeros(len(crops), bool)
    val[-24:] = True
    photos = torch.from_numpy(crops[~val]).float() / 255
    results = {}
    for w in (0.0, 1000.0):
        module = _module(setup, lr=0.01, w_landmark=w)
        targets = _targets(module, truth).numpy().astype(np.float32)
        cfg = dataclasses.replace(params.train, max_epochs=20, max_minutes=2.0)
        data = FinetuneDataModule(tmp / "corpus", {"crops": crops, "targets": targets, "val": val}, cfg, 0, 8)
        if w:
            batch, _, _ = next(iter(data.train_dataloader()))   # CombinedLoader: (batch, index, loader)
            assert set(batch) == {"synthetic", "real"}
            assert batch["real"]["photo"].shape == (8, 32, 32, 3) and batch["real"]["targets"].shape == (8, 468, 2)
            assert batch["synthetic"]["image"].shape[0] == cfg.batch_size
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(max_epochs=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False)
        trainer.fit(module, datamodule=data)
        after = trainer.validate(module, datamodule=data, verbose=False)[0]
        module.eval()
        with torch.no_grad():
            pred = module.net(module._net_input(photos))
        rms = float(module.real_terms(pred, photos, torch.from_numpy(targets[~val]))["landmark_rms"].mean())
        results[w] = (rms, after["val/real_landmark_rms"])
        assert after["val/loss"] == pytest.approx(after["val/synthetic_loss"] + after["val/real_loss"], rel=1e-5)
    (rms_off, val_off), (rms_on, val_on) = results[0.0], results[1000.0]
    assert math.isfinite(rms_on) and rms_on < 0.8 * rms_off, results
    assert math.isfinite(val_on) and math.isfinite(val_off)


def test_stage_without_detector_is_skipped_and_says_so(tmp_path):
    from ifn.finetune import finetune_real

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "ft"
    (out).mkdir()
    (out / "model.pt").write_bytes(b"stale")
    logs = []
    summary = finetune_real(tmp_path / "params.yaml", {"detect.detector": "none", "finetune.out_dir": str(out)},
                            log=logs.append)
    assert "detect.detector is none" in summary["skipped"] and any("skipped" in s for s in logs)
    assert json.loads((out / "summary.json").read_text())["skipped"] == summary["skipped"]
    assert not (out / "model.pt").exists()                  # nothing that looks like a fine-tuned network
