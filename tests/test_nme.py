"""The 3DDFA NME protocol (ifn.nme) and the real-photo loading/cropping it relies on (ifn.real).

Tests that read data/ fail with the `dvc pull` message when it is missing.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ifn.nme import load_aflw2000_dev, nme, nme_report, yaw_bins
from ifn.real import (BadImageError, RealConfig, RealPhotos, SOURCE_FRAMING, apply_affine, collate_skip_bad,
                      crop_box, crop_square, frame_source, heldout_score, invert_affine, is_heldout, load_image,
                      utk_attributes)


# ---------------------------------------------------------------------------------------------------------------
# NME
# ---------------------------------------------------------------------------------------------------------------
def box_points(w=100.0, h=64.0, n=68, seed=0):
    """68 points spanning exactly a w x h box (corners included)."""
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(0, w, n), rng.uniform(0, h, n)])
    pts[:4] = [[0, 0], [w, 0], [0, h], [w, h]]
    return pts + [20.0, 30.0]


def test_nme_hand_computed():
    gt = np.stack([box_points(seed=s) for s in range(3)])
    pred = gt + [3.0, 4.0]  # 5 px everywhere, box sqrt(100 * 64) = 80
    np.testing.assert_allclose(nme(pred, gt), [0.0625] * 3)
    pred2 = gt.copy()
    pred2[1, :34] += [0.0, 8.0]  # half the points 8 px off: mean 4 px -> 0.05
    np.testing.assert_allclose(nme(pred2, gt), [0.0, 0.05, 0.0])
    with pytest.raises(ValueError):
        nme(pred[:, :, :1], gt)
    with pytest.raises(ValueError):
        nme(pred[:2], gt)


def test_yaw_bins_edges():
    np.testing.assert_array_equal(yaw_bins([0, 29.99, 30, 59.99, 60, 90, -30, -61, 104.6]),
                                  [0, 0, 1, 1, 2, 2, 1, 2, 2])


def test_nme_mean_is_mean_of_bin_means():
    values = np.array([0.01, 0.01, 0.01, 0.01, 0.04, 0.07])
    yaws = np.array([0, 10, 20, -25, 45, 75])
    rep = nme_report(values, yaws)
    assert rep["counts"] == {"0_30": 4, "30_60": 1, "60_90": 1}
    assert rep["nme_0_30"] == pytest.approx(0.01) and rep["nme_30_60"] == pytest.approx(0.04)
    assert rep["nme_60_90"] == pytest.approx(0.07)
    assert rep["nme_mean"] == pytest.approx(0.04)            # (0.01 + 0.04 + 0.07) / 3
    assert rep["nme_all"] == pytest.approx(0.15 / 6)         # not the headline number
    empty = nme_report([0.02, 0.03], [5, 10])
    assert np.isnan(empty["nme_30_60"]) and empty["nme_mean"] == pytest.approx(0.025)


def test_load_aflw2000_dev_shapes():
    d = load_aflw2000_dev()
    n = len(d["names"])
    assert n == 400 and len(d["paths"]) == n and d["paths"][0].exists()
    assert d["pts68"].shape == (n, 68, 2) and d["roi_box"].shape == (n, 4) and d["yaw_deg"].shape == (n,)
    assert d["pts68_reannotated"].shape == (n, 68, 2)
    # the roi box is the landmark box squared (side sqrt(2) * max(w, h)), centred on it (clipped at the border)
    p, rb = d["pts68"], d["roi_box"]
    centre = (p.min(1) + p.max(1)) / 2
    ok = np.abs((rb[:, 2] - rb[:, 0]) - (rb[:, 3] - rb[:, 1])) < 1
    np.testing.assert_allclose(((rb[:, :2] + rb[:, 2:]) / 2)[ok], centre[ok], atol=1.5)
    assert nme(p, p).max() == 0


# ---------------------------------------------------------------------------------------------------------------
# Real photos: loading
# ---------------------------------------------------------------------------------------------------------------
def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def gradient(w=64, h=48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8)


def test_load_image_modes(tmp_path):
    rgb = gradient()
    out = load_image(save(Image.fromarray(rgb), tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3) and np.array_equal(out, rgb)
    grey = load_image(save(Image.fromarray(rgb[..., 0]), tmp_path / "l.png"))
    assert grey.shape == (48, 64, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    cmyk = load_image(save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "c.jpg"))
    assert cmyk.shape == (48, 64, 3)
    pal = load_image(save(Image.fromarray(rgb).convert("P"), tmp_path / "p.png"))
    assert pal.shape == (48, 64, 3)
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], -1)
    rgba[:, :32, 3] = 255  # left half opaque, right half transparent -> grey
    a = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"))
    assert np.array_equal(a[:, :32], rgb[:, :32]) and (a[:, 32:] == 128).all()
    deep = (rgb[..., 1].astype(np.uint16) * 257)
    d16 = load_image(save(Image.fromarray(deep), tmp_path / "d16.png"))
    assert np.abs(d16[..., 0].astype(int) - rgb[..., 1]).max() <= 1


def test_load_image_rejects_bad_files(tmp_path):
    def reason(path, **kw):
        with pytest.raises(BadImageError) as e:
            load_image(path, **kw)
        assert str(path) in str(e.value) and "\n" not in e.value.reason
        return e.value.reason

    assert "not found" in reason(tmp_path / "missing.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    assert "not an image" in reason(tmp_path / "junk.jpg")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    assert "truncated" in reason(tmp_path / "trunc.jpg")
    assert "too small" in reason(save(Image.fromarray(gradient(20, 40)), tmp_path / "tiny.png"))
    assert "blank" in reason(save(Image.new("RGB", (64, 64), (10, 20, 30)), tmp_path / "blank.png"))
    assert "too large" in reason(save(Image.fromarray(gradient(300, 200)), tmp_path / "big.png"), max_pixels=50_000)


def test_load_image_downscales_huge(tmp_path):
    path = save(Image.fromarray(gradient(400, 100)), tmp_path / "wide.png")
    img, scale = load_image(path, max_side=200, return_scale=True)
    assert img.shape == (50, 200, 3) and scale == pytest.approx(2.0)


def test_load_image_applies_exif_orientation(tmp_path):
    im = Image.fromarray(gradient(64, 48))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    im.save(path, exif=exif.tobytes())
    assert load_image(path).shape == (64, 48, 3)


# ---------------------------------------------------------------------------------------------------------------
# Real photos: cropping and framing
# ---------------------------------------------------------------------------------------------------------------
def test_crop_square_affine_maps_pixels_back():
    img = np.zeros((100, 120, 3), np.uint8)
    img[40, 70] = 255  # pixel centre (70.5, 40.5)
    crop, a = crop_square(img, (60.0, 50.0), 40.0, 80)  # 2x zoom
    assert crop.shape == (80, 80, 3)
    r, c = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    back = apply_affine(a, [c + 1.0, r + 1.0])  # the bright 2x2 block's corner ~ the pixel centre
    np.testing.assert_allclose(back, [70.5, 40.5], atol=0.5)
    np.testing.assert_allclose(apply_affine(invert_affine(a), apply_affine(a, [[3.0, 7.0]])), [[3.0, 7.0]])


def test_crop_box_pads_with_edge_pixels():
    img = np.zeros((50, 50, 3), np.uint8)
    img[:, :25] = 200
    crop, a = crop_box(img, (-20, 0, 30, 50), scale=1.0, size=50, shift=(0.0, 0.0))
    assert (crop[:, :10] > 190).all()              # left of the image: the edge column (200), not black
    np.testing.assert_allclose(apply_affine(a, [[0.0, 0.0], [50.0, 50.0]]), [[-20, 0], [30, 50]])
    crop2, a2 = crop_box(img, (10, 10, 30, 20), scale=1.5, size=64, shift=(0.0, -0.1))
    side = 1.5 * 20
    np.testing.assert_allclose(apply_affine(a2, [32.0, 32.0]), [20, 15 - 0.1 * side])
    assert a2[0, 0] == pytest.approx(side / 64)


def test_roi_crop_matches_synthetic_framing():
    """AFLW2000 crops with the default ROI rule put the landmark box where synthetic renders have it."""
    d = load_aflw2000_dev()
    sizes, cys = [], []
    for i in range(0, 400, 40):
        img = load_image(d["paths"][i])
        crop, a = crop_box(img, d["roi_box"][i], size=128)
        pts = apply_affine(invert_affine(a), d["pts68"][i]) / 128
        wh = pts.max(0) - pts.min(0)
        sizes.append(np.sqrt(wh[0] * wh[1]))
        cys.append((pts[:, 1].min() + pts[:, 1].max()) / 2)
    assert 0.6 < np.mean(sizes) < 0.75 and 0.51 < np.mean(cys) < 0.56  # synthetic: 0.67 and 0.53


def test_source_framing_and_utk_attributes():
    assert set(SOURCE_FRAMING) == {"aflw", "utkface", "celeba"}
    crop, a = frame_source(np.full((109, 89, 3), 100, np.uint8) + gradient(89, 109) // 4, "celeba", 128)
    assert crop.shape == (128, 128, 3)
    f = SOURCE_FRAMING["celeba"]
    np.testing.assert_allclose(apply_affine(a, [64.0, 64.0]), [f.cx * 89, f.cy * 109])
    assert utk_attributes("26_1_2_20170116172853925.jpg.chip.jpg") == {"age": 26, "gender": 1, "race": 2}
    assert utk_attributes("/x/y/100_0_0_20170112213500903.jpg.chip.jpg")["age"] == 100
    for bad in ("61_1_20170109142408075.jpg.chip.jpg", "a_b_c_d.jpg", "26_3_2_2017.jpg", "26_1_7_2017.jpg", ""):
        assert utk_attributes(bad) is None


def test_heldout_split_is_fixed():
    assert heldout_score("utkface", "x.jpg") == heldout_score("utkface", "x.jpg")
    names = [f"{i:06d}.jpg" for i in range(4000)]
    frac = np.mean([is_heldout("celeba", n, 0.05) for n in names])
    assert 0.04 < frac < 0.06


def test_real_photos_dataset(tmp_path):
    root = tmp_path / "real"
    (root / "aflw").mkdir(parents=True)
    (root / "utkface").mkdir()
    for i in range(6):
        Image.fromarray(gradient(120, 120)).save(root / "aflw" / f"img{i}.jpg")
    Image.fromarray(gradient(200, 200)).save(root / "utkface" / "30_0_1_2017.jpg.chip.jpg")
    (root / "utkface" / "31_1_0_2017.jpg.chip.jpg").write_bytes(b"corrupt")
    all_ = RealPhotos(root, sources=("aflw", "utkface"), split="all", image_size=32)
    train = RealPhotos(root, sources=("aflw", "utkface"), split="train", image_size=32, heldout_fraction=0.3)
    held = RealPhotos(root, sources=("aflw", "utkface"), split="heldout", image_size=32, heldout_fraction=0.3)
    assert len(all_) == 8 and len(train) + len(held) == 8
    assert not set(train.items) & set(held.items)
    item = all_[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1 and item["source"] == "aflw"
    bad = [i for i, (s, n) in enumerate(all_.items) if n.startswith("31_")][0]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert all_[bad] is None
    assert any("31_1_0" in str(x.message) for x in w) and bad in all_.bad
    loader = torch.utils.data.DataLoader(all_, batch_size=8, collate_fn=all_.collate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = next(iter(loader))
    assert batch["image"].shape == (7, 3, 32, 32) and len(batch["name"]) == 7
    assert collate_skip_bad([None, None]) is None
    assert all_.collate([None])["image"].shape == (0, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match="dvc pull"):
        RealPhotos(tmp_path / "nowhere")


def test_background_bank_uses_only_the_training_part(tmp_path):
    """Seeded, skips corrupt files, never a held-out photo (here: each photo a distinct grey level + noise)."""
    from ifn.real import background_bank, is_heldout

    root = tmp_path / "real"
    (root / "aflw").mkdir(parents=True)
    for i in range(12):
        noise = np.random.default_rng(i).integers(-4, 5, (120, 120, 3))
        Image.fromarray((10 + 20 * i + noise).astype(np.uint8)).save(root / "aflw" / f"img{i:02d}.png")
    (root / "aflw" / "img99.png").write_bytes(b"corrupt")
    cfg = RealConfig.from_dict({"root": str(root), "sources": ["aflw"], "heldout_fraction": 0.3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bank = background_bank(cfg, 20, 32, seed=3)
        again = background_bank(cfg, 20, 32, seed=3)
    train = {10 + 20 * i for i in range(12) if not is_heldout("aflw", f"img{i:02d}.png", 0.3)}
    assert bank.dtype == np.uint8 and bank.shape[1:] == (32, 32, 3) and len(bank) == len(train) > 0
    assert {int(np.median(b)) for b in bank} == train and np.array_equal(bank, again)
    assert len(background_bank(cfg, 2, 32, seed=3)) == 2


def test_real_config_section():
    c = RealConfig.from_dict({"sources": ["aflw", "celeba"], "heldout_fraction": 0.05, "image_size": 0})
    assert c.sources == ("aflw", "celeba") and c.working_size(128) == 128
    from ifn.config import ParamsError
    with pytest.raises(ParamsError, match="real.sources"):
        RealConfig.from_dict({"sources": ["ffhq"]})
    with pytest.raises(ParamsError, match="image_size"):
        RealConfig.from_dict({"image_size": 8})


def test_real_photos_on_project_data():
    ds = RealPhotos(split="heldout", image_size=64)
    counts = ds.counts()
    assert set(counts) == {"aflw", "utkface", "celeba"}
    assert all(300 < n < 700 for n in counts.values()), counts  # ~5 % of ~10,000 each
    item = ds[0]
    assert item["image"].shape == (3, 64, 64)
