"""Training (ifn.learn.data / module / train): fast_dev_run with both losses, a real mini training whose val
loss decreases, resuming from last.ckpt, model.pt round trip, seeded determinism, the data pipeline."""
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

from ifn.config import RenderConfig, load_params  # noqa: E402
from ifn.corpus import Corpus  # noqa: E402
from ifn.learn.data import Augment, CorpusDataModule, EpochSampler, SyntheticDataset  # noqa: E402
from ifn.learn.train import load_network, train  # noqa: E402
from ifn.synth import synthesize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"log": lambda s: None}

# A tiny problem: 32 px renders and network input, few modes, small batches, float32.
OVERRIDES = {
    "face_model.n_shape": 8, "face_model.n_expression": 53, "reflectance.n_components": 8,
    "render.image_size": 32,
    "synthesize.n_train": 128, "synthesize.n_val": 32, "synthesize.n_test": 8, "synthesize.shard_size": 64,
    "synthesize.render_batch": 64,
    "train.net.input_size": 32, "train.net.widths": [8, 16, 32, 32], "train.net.stem_width": 8,
    "train.batch_size": 16, "train.precision": "32", "train.max_epochs": 2, "train.lr": 0.003,
    "train.augment.background_photos": 24,   # the real-photo backgrounds stay on, from a small bank
}
if "compile" in {f.name for f in dataclasses.fields(RenderConfig)}:
    OVERRIDES["render.compile"] = False   # compiling the rasterizer costs more than these tiny renders


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_reflectance_path):
    tmp = tmp_path_factory.mktemp("train")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp / "reflectance.npz").write_bytes(small_reflectance_path.read_bytes())
    synthesize(tmp / "params.yaml", tmp / "corpus", tmp / "reflectance.npz", overrides=OVERRIDES,
               log=lambda s: None)
    return tmp


def run(setup, out: str, loss: str = "model_space", **kw):
    overrides = {**OVERRIDES, **kw.pop("overrides", {})}
    return train(setup / "params.yaml", loss, setup / "corpus", setup / out, setup / "reflectance.npz", overrides, **kw, **QUIET)


@pytest.fixture(scope="module")
def dev_run(setup):
    return run(setup, "fdr", fast_dev_run=True)


# -- data --------------------------------------------------------------------------------------------------

def test_dataset_and_loaders(setup):
    params = load_params(setup / "params.yaml", OVERRIDES)
    ds = SyntheticDataset(setup / "corpus", "train")
    item = ds[(70, 3)]  # second shard
    assert len(ds) == 128 and item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["params"].shape == (ds.layout.size,) and item["shading_gram"].shape == (9, 9)
    masks = Corpus.open(setup / "corpus").load("train", "masks", mmap=False)
    assert item["mask"].dtype == torch.bool and torch.equal(item["mask"], torch.from_numpy(masks[70]))
    raw = Corpus.open(setup / "corpus").load("train", "images", mmap=False)[70]
    assert torch.equal((item["image"] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(raw))

    sampler = EpochSampler(10, seed=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert [i for i, _ in first] != [i for i, _ in sampler] and sorted(i for i, _ in first) == list(range(10))
    sampler.set_epoch(0)
    assert list(sampler) == first

    with pytest.raises(ValueError, match="photo_background_prob"):
        CorpusDataModule(setup / "corpus", params.train, seed=0).train_dataloader()
    dm = CorpusDataModule(setup / "corpus", params.train, seed=0, real=params.real)
    assert dm.backgrounds().shape == (24, 32, 32, 3)
    mean, std = dm.param_stats()
    assert torch.allclose(mean, torch.from_numpy(ds.params()).mean(0), atol=1e-5) and (std > 0).all()
    a, b = next(iter(dm.train_dataloader())), next(iter(dm.train_dataloader()))
    assert a["image"].shape == (16, 3, 32, 32) and torch.equal(a["image"], b["image"])     # seeded
    plain = torch.stack([ds[int(i)]["image"] for i in a["index"]])
    assert not torch.equal(a["image"], plain)                                              # augmented
    assert "mask" in a and a["mask"].shape == (16, 32, 32)                                # for the backgrounds
    val = next(iter(dm.val_dataloader()))
    assert "mask" not in val and "mask" not in SyntheticDataset(setup / "corpus", "val", masks=False)[0]
    assert val["index"].tolist() == list(range(16))                                        # in order, as stored
    assert torch.equal(val["image"], torch.stack([SyntheticDataset(setup / "corpus", "val")[i]["image"]
                                                  for i in range(16)]))


def test_crop_adjusts_translation_consistently(setup):
    """Crop only: the adjusted parameters re-rendered put the landmarks where the crop moved them."""
    from ifn.synth import build_renderer, face_centre

    over = {k: v for k, v in OVERRIDES.items() if k.startswith(("face_model.", "reflectance.", "render."))}
    params = load_params(ROOT / "params.yaml", {**over, "render.image_size": 64})
    renderer = build_renderer(params, setup / "reflectance.npz")
    layout = renderer.layout
    groups = layout.zeros(4)
    groups["rotation"] = torch.tensor([[0.3, 0.1, 0.0], [-0.5, -0.1, 0.1], [0.0, 0.0, 0.0], [0.8, 0.2, -0.2]])
    groups["translation"] = torch.tensor([[1.0, -1.0, 5.0], [-1.0, 0.5, -8.0], [0.0, 0.0, 0.0], [0.5, 1.0, 2.0]])
    p = layout.join(groups)
    aug = Augment(0, 0, 0, 0.05, params.render.fov_deg, params.render.distance_cm, layout["translation"],
                  float(face_centre(renderer)[2]))
    u = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.9, 0.1], [0.7, 0.3, 0.6]], dtype=torch.float64)
    _, p2 = aug.crop(torch.zeros(4, 3, 64, 64), p, u)
    with torch.no_grad():
        lm1, lm2 = renderer(p).landmarks, renderer(p2).landmarks
    c = aug.crop_jitter
    s, tx, ty = 1 - c * u[:, 0], 2 * c * (2 * u[:, 1] - 1), 2 * c * (2 * u[:, 2] - 1)
    xn = lm1.double() / 32 - 1
    expected = (torch.stack([(xn[..., 0] - tx[:, None]) / s[:, None], (xn[..., 1] - ty[:, None]) / s[:, None]],
                            -1) + 1) * 32
    err = (expected - lm2.double()).norm(dim=-1)
    assert err.mean() < 0.15 and err.max() < 1.0, err.max()   # pixels at 64 px; a wrong sign gives ~6 px


def test_photo_background_gray_and_band_augmentation():
    """Backgrounds only where the mask is off (render pixels kept exactly), greyscale = equal channels of the
    luma, the black band along one edge, seeded; all three off = the batches of before they existed."""
    from ifn.learn.data import batch_generator

    g0 = lambda: batch_generator(0, 1, 2)  # noqa: E731
    images = torch.rand(6, 3, 16, 16)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    params = torch.zeros(6, 5)
    bank = torch.full((3, 3, 16, 16), 200, dtype=torch.uint8)          # uniform photos: exact expected value
    aug = Augment(0, 0, 0, 0, photo_background_prob=1.0, backgrounds=bank)
    out, _ = aug(images, params, g0(), masks)
    assert torch.equal(out[:, :, 4:12, 4:12], images[:, :, 4:12, 4:12])
    assert torch.allclose(out[:, :, :4], torch.full_like(out[:, :, :4], 200 / 255), atol=1e-6)
    with pytest.raises(ValueError, match="masks"):
        aug(images, params, g0())

    gray, _ = Augment(0, 0, 0, 0, gray_prob=1.0)(images, params, g0())
    luma = torch.einsum("bchw,c->bhw", images, torch.tensor([0.299, 0.587, 0.114]))
    assert torch.allclose(gray, luma[:, None].expand(-1, 3, -1, -1), atol=1e-6)

    band, _ = Augment(0, 0, 0, 0, border_prob=1.0)(images + 0.01, params, g0())
    zero = (band == 0).all(1)                                            # (B, H, W)
    for z in zero:
        rows, cols = z.all(1), z.all(0)
        frac = max(rows.float().mean(), cols.float().mean())
        assert z.sum() > 0 and 0.04 <= frac <= 0.31                        # one edge band of 5-30 %
        assert int(rows.sum()) * 16 + int(cols.sum()) * 16 - int((rows[:, None] & cols[None]).sum()) == int(z.sum())

    both = Augment(0.15, 0.3, 0.02, 0.04, photo_background_prob=0.5, gray_prob=0.5, border_prob=0.5, backgrounds=bank)
    a, b = both(images, params, g0(), masks), both(images, params, g0(), masks)
    assert torch.equal(a[0], b[0])
    small, _ = Augment(0, 0, 0, 0, photo_background_prob=1.0, backgrounds=bank, out_size=8)(images, params, g0(), masks)
    assert small.shape == (6, 3, 8, 8) and torch.allclose(small[:, :, :1], torch.full_like(small[:, :, :1], 200 / 255))
    assert torch.allclose(small[:, :, 3:5, 3:5], torch.nn.functional.interpolate(
        images, size=(8, 8), mode="bilinear", antialias=True)[:, :, 3:5, 3:5], atol=1e-6)   # render kept inside
    old = Augment(0.15, 0.3, 0.02, 0.04)
    off = Augment(0.15, 0.3, 0.02, 0.04, photo_background_prob=0.0, gray_prob=0.0, border_prob=0.0)
    assert torch.equal(old(images, params, g0(), masks)[0], off(images, params, g0())[0])
    assert not torch.equal(a[0], old(images, params, g0(), masks)[0])


def test_face_only_backgrounds():
    """face_only_prob 1: the photo replaces everything but the (dilated) face mask: render kept inside the face
    mask, the photo on the rest of the render mask beyond the largest dilation; 0: the batches of before."""
    from ifn.learn.data import batch_generator

    g0 = lambda: batch_generator(0, 1, 2)  # noqa: E731
    images = torch.rand(6, 3, 32, 32)
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    masks[:, 2:30, 2:30] = True
    face = torch.zeros_like(masks)
    face[:, 12:20, 12:20] = True
    params = torch.zeros(6, 5)
    bank = torch.full((3, 3, 32, 32), 200, dtype=torch.uint8)
    aug = Augment(0, 0, 0, 0, photo_background_prob=1.0, backgrounds=bank, face_only_prob=1.0)
    out, _ = aug(images, params, g0(), masks, face)
    assert torch.allclose(out[:, :, 13:19, 13:19], images[:, :, 13:19, 13:19])    # the face (1 px in from its edge)
    photo = torch.full_like(out[:, :, 2:4, 2:30], 200 / 255)
    assert torch.allclose(out[:, :, 2:4, 2:30], photo, atol=1e-6)                  # scalp/neck rows: the photo
    with pytest.raises(ValueError, match="face masks"):
        aug(images, params, g0(), masks)
    base = Augment(0.15, 0.3, 0.02, 0.04, photo_background_prob=0.5, backgrounds=bank)
    off = Augment(0.15, 0.3, 0.02, 0.04, photo_background_prob=0.5, backgrounds=bank, face_only_prob=0.0)
    assert torch.equal(base(images, params, g0(), masks)[0], off(images, params, g0(), masks, face)[0])
    half = Augment(0, 0, 0, 0, photo_background_prob=1.0, backgrounds=bank, face_only_prob=0.5)(
        images, params, g0(), masks, face)[0]
    cut = torch.isclose(half[:, :, 2:4, 2:30], photo).all(1).all(1).all(1)         # which images lost their scalp
    assert 0 < int(cut.sum()) < 6


def test_input_zoom_window():
    """input_zoom: the network sees the centre window of the image resized to view_size, the same whether it is
    given the whole image or the augmentation's batch already at view_size (what training feeds it); zoom 1 is
    the plain resize of before."""
    import torch.nn.functional as F

    from ifn.learn.nets import InverseFaceNet, view_size

    assert view_size(64, 1.0) == 64 and view_size(64, 1.1) == 70 and view_size(64, 1.25) == 80
    assert view_size(63, 1.1) == 69                                         # window centred: an even margin
    images = torch.rand(3, 3, 128, 128)
    net = InverseFaceNet(7, input_size=16, input_zoom=1.25)
    view = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(net.resize(images), view[..., 2:18, 2:18])
    assert torch.equal(net.resize(view), view[..., 2:18, 2:18])             # the augmented batch: crop only
    plain = InverseFaceNet(7, input_size=16)
    assert torch.equal(plain.resize(images), F.interpolate(images, size=(16, 16), mode="bilinear",
                                                           align_corners=False, antialias=True))
    with torch.no_grad():
        assert net(images).shape == (3, 7)


def test_output_range_clamp():
    """Eval mode clamps the outputs to the training corpus's range, training mode does not; a state dict saved
    before the range existed loads with no bounds."""
    from ifn.learn.nets import InverseFaceNet

    torch.manual_seed(0)
    net = InverseFaceNet(4, input_size=16)
    net.set_param_stats(torch.zeros(4), torch.full((4,), 100.0))          # wide outputs from small weights
    old = {k: v for k, v in net.state_dict().items() if k not in ("param_lo", "param_hi")}
    images = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        raw = net.eval()(images)                                            # no range yet: +-inf
        net.set_param_range(torch.tensor([-1.0, 0.0, -5.0, 0.0]), torch.tensor([1.0, 1.0, 5.0, 0.5]))
        out = net(images)
        trained = net.train()(images)
    assert torch.equal(out, torch.maximum(torch.minimum(raw, net.param_hi), net.param_lo))
    assert not torch.equal(out, raw) and ((out >= net.param_lo) & (out <= net.param_hi)).all()
    assert ((trained < net.param_lo) | (trained > net.param_hi)).any()     # training mode: not clamped
    fresh = InverseFaceNet(4, input_size=16)
    fresh.load_state_dict(old)
    assert torch.isinf(fresh.param_lo).all() and torch.isinf(fresh.param_hi).all()


# -- training ---------------------------------------------------------------------------------------------

def test_fast_dev_run_model_space(dev_run, setup):
    assert dev_run["fast_dev_run"] and dev_run["steps"] == 1 and math.isfinite(dev_run["train_loss"])
    val = dev_run["val"]
    for key in ("loss", "geometry", "reflectance", "illumination", "param_loss", "rmse_shape", "rmse_translation"):
        assert math.isfinite(val[key]), key
    assert not (setup / "fdr" / "model_space" / "model.pt").exists()   # a dev run writes nothing


def test_fast_dev_run_parameter(setup):
    s = run(setup, "fdr", "parameter", fast_dev_run=True, overrides={"train.w_reprojection": 0.0})
    assert s["steps"] == 1 and math.isfinite(s["train_loss"])
    # the model-space terms are computed for the parameter-loss model too (comparable ablation)
    assert all(math.isfinite(s["val"][k]) for k in ("geometry", "reflectance", "illumination", "model_space"))
    assert s["val"]["loss"] == pytest.approx(s["val"]["param_loss"])
    # the reprojection term adds to the parameter loss too
    r = run(setup, "fdr", "parameter", fast_dev_run=True, overrides={"train.w_reprojection": 2.0})
    assert r["val"]["loss"] == pytest.approx(r["val"]["param_loss"] + 2.0 * r["val"]["reprojection"], rel=1e-5)


def default_w_reprojection(setup) -> float:
    return load_params(setup / "params.yaml", OVERRIDES).train.w_reprojection


def test_model_space_plus_parameter_term(dev_run, setup):
    """train.w_parameter adds that multiple of the parameter loss to the model-space objective (val too)."""
    w_rep = default_w_reprojection(setup)
    s = run(setup, "fdr", fast_dev_run=True, overrides={"train.w_parameter": 0.5})
    val = s["val"]
    assert val["loss"] == pytest.approx(val["model_space"] + 0.5 * val["param_loss"] + w_rep * val["reprojection"],
                                        rel=1e-5)
    assert val["loss"] > val["model_space"] + w_rep * val["reprojection"]
    dev = dev_run["val"]   # w_parameter = 0: no parameter term
    assert dev["loss"] == pytest.approx(dev["model_space"] + w_rep * dev["reprojection"], rel=1e-6)
    assert s["train_loss"] != dev_run["train_loss"]


def test_model_space_plus_reprojection_term(dev_run, setup):
    """train.w_reprojection adds that multiple of the landmark reprojection error (always reported) to the
    objective; with weight 0 it is measured but not optimised."""
    assert dev_run["val"]["reprojection"] > 0
    s = run(setup, "fdr", fast_dev_run=True, overrides={"train.w_reprojection": 2.0})
    val = s["val"]
    assert val["loss"] == pytest.approx(val["model_space"] + 2.0 * val["reprojection"], rel=1e-5)
    off = run(setup, "fdr", fast_dev_run=True, overrides={"train.w_reprojection": 0.0})
    assert off["val"]["loss"] == pytest.approx(off["val"]["model_space"], rel=1e-6) and off["val"]["reprojection"] > 0
    assert len({s["train_loss"], off["train_loss"], dev_run["train_loss"]}) == 3 or default_w_reprojection(setup) in (0.0, 2.0)


def test_seeded_determinism(dev_run, setup):
    again = run(setup, "fdr", fast_dev_run=True)
    assert again["train_loss"] == dev_run["train_loss"]
    other = run(setup, "fdr", fast_dev_run=True, overrides={"seed": 1})
    assert other["train_loss"] != dev_run["train_loss"]


def test_mini_training_resume_and_export(setup):
    out = setup / "runs"
    first = run(setup, "runs", overrides={"train.max_epochs": 1})
    steps_per_epoch = 128 // 16
    assert first["epochs"] == 1 and first["steps"] == steps_per_epoch and first["resumed_from"] is None
    assert (out / "model_space" / "last.ckpt").exists()

    second = run(setup, "runs", overrides={"train.max_epochs": 2})   # continues from last.ckpt
    assert second["resumed_from"].endswith("last.ckpt")
    assert second["epochs"] == 2 and second["steps"] == 2 * steps_per_epoch
    hist = second["history"]
    assert [h["epoch"] for h in hist] == [0, 1]
    assert hist[0]["val_loss"] == pytest.approx(first["history"][0]["val_loss"])
    assert hist[1]["val_loss"] < hist[0]["val_loss"]           # it learns
    assert second["best_val_loss"] == min(h["val_loss"] for h in hist)
    for name in ("model.pt", "summary.json", "metrics.json", "curves.png", "best.ckpt"):
        assert (out / "model_space" / name).exists(), name
    assert json.loads((out / "model_space" / "summary.json").read_text())["run_key"] == second["run_key"]

    third = run(setup, "runs", overrides={"train.max_epochs": 2})   # finished, same settings: not re-run
    assert third == json.loads(json.dumps(second))

    # model.pt: weights_only, reproduces the checkpointed network's predictions
    net, info = load_network(out / "model_space" / "model.pt")
    blob = torch.load(out / "model_space" / "model.pt", weights_only=True)
    assert set(blob) >= {"state_dict", "net", "layout", "image_size", "loss"} and info["image_size"] == 32
    assert "param_mean" in blob["state_dict"] and "param_std" in blob["state_dict"]
    train_params = torch.from_numpy(np.concatenate([np.asarray(Corpus.open(setup / "corpus").load("train", "params"))]))
    assert torch.equal(blob["state_dict"]["param_lo"], train_params.min(0).values)    # the corpus's range
    assert torch.equal(blob["state_dict"]["param_hi"], train_params.max(0).values)
    from ifn.learn.module import InverseFaceNetModule
    from ifn.synth import build_renderer

    renderer = build_renderer(load_params(setup / "params.yaml", OVERRIDES), setup / "reflectance.npz")
    module = InverseFaceNetModule.load_from_checkpoint(out / "model_space" / "best.ckpt", map_location="cpu",
                                                       face_model=renderer.face_model,
                                                       reflectance=renderer.reflectance).eval()
    images = torch.from_numpy(np.array(Corpus.open(setup / "corpus").load("test", "images"))
                              ).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        assert torch.equal(net(images), module(images))
        pred = net(images)
    assert pred.shape == (8, net.head.out_features) and torch.isfinite(pred).all()
