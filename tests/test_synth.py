"""Corpus synthesis: priors, byte-identical shards for a seed, atomic corpus folder, readable format."""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ifn.config import PriorConfig
from ifn.corpus import ARRAYS, Corpus
from ifn.model.layout import ParamLayout
from ifn.model.priors import sample_parameters
from ifn.model.reflectance import ReflectanceModel
from ifn.synth import synthesize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A params file for a 24-image corpus at 32 px and a small random reflectance model over all vertices."""
    tmp = tmp_path_factory.mktemp("synth")
    g = torch.Generator().manual_seed(0)
    n_src = 26719
    refl = ReflectanceModel(torch.full((n_src, 3), 0.5), torch.randn(4, n_src, 3, generator=g) * 0.02,
                            torch.ones(4) / 4)
    refl.save(tmp / "reflectance.npz")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["face_model"].update(n_shape=10, n_expression=53)
    raw["reflectance"].update(n_components=4, n_samples=100)
    raw["render"]["image_size"] = 32
    raw["synthesize"].update(n_train=12, n_val=6, n_test=6, shard_size=8, render_batch=5)
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_shards(tiny_setup):
    a = synthesize(tiny_setup / "params.yaml", tiny_setup / "a", tiny_setup / "reflectance.npz", log=lambda s: None)
    synthesize(tiny_setup / "params.yaml", tiny_setup / "b", tiny_setup / "reflectance.npz", log=lambda s: None)
    da, db = digest(tiny_setup / "a"), digest(tiny_setup / "b")
    assert da == db and len(da) == 1 + len(ARRAYS) * (2 + 1 + 1)
    synthesize(tiny_setup / "params.yaml", tiny_setup / "c", tiny_setup / "reflectance.npz",
               overrides={"seed": 1}, log=lambda s: None)
    dc = digest(tiny_setup / "c")
    assert dc["train/shard_0000/images.npy"] != da["train/shard_0000/images.npy"]
    corpus = Corpus.open(tiny_setup / "a")
    assert corpus.meta["counts"] == {"train": 12, "val": 6, "test": 6} == a["counts"]
    images = corpus.load("train", "images")
    params = corpus.load("train", "params")
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    assert params.shape == (12, ParamLayout(10, 53, 4).size) and params.dtype == np.float32
    masks = corpus.load("train", "masks")
    assert 0.1 < masks.mean() < 0.95  # faces are in the picture, not filling it
    face = corpus.load("train", "face_masks")
    assert face.dtype == bool and not (face & ~masks).any()         # the face part lies within the render
    assert 0.2 < face.sum() / masks.sum() <= 1.0                     # (this tiny model renders little besides)
    gram = corpus.load("test", "shading_gram")
    assert np.allclose(gram, np.swapaxes(gram, 1, 2), atol=1e-6)
    assert (np.linalg.eigvalsh(gram.astype(np.float64)) > -1e-6).all()  # a Gram matrix is PSD


def test_interrupted_synthesis_leaves_no_corpus(tiny_setup, monkeypatch):
    import ifn.synth as synth

    calls = {"n": 0}
    real = synth.write_shard

    def crash_on_second(folder, arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("interrupted")
        real(folder, arrays)

    monkeypatch.setattr(synth, "write_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tiny_setup / "params.yaml", tiny_setup / "crashed", tiny_setup / "reflectance.npz",
                   log=lambda s: None)
    assert not (tiny_setup / "crashed").exists()
    assert not [p for p in tiny_setup.iterdir() if p.name.startswith(".crashed")]
    with pytest.raises(FileNotFoundError, match="dvc repro synthesize"):
        Corpus.open(tiny_setup / "crashed")


def test_priors_follow_their_documented_ranges():
    layout = ParamLayout(20, 53, 10)
    prior = PriorConfig()
    names = tuple(f"e{i}" for i in range(52)) + ("jawOpen",)
    g = torch.Generator().manual_seed(0)
    p = sample_parameters(4000, layout, prior, g, names)
    assert abs(p["shape"].std().item() - 1.0) < 0.03
    assert p["reflectance"].abs().max() <= 3.0
    e = p["expression"]
    assert e.min() >= 0 and e.max() <= 1
    assert abs((e[:, :52] > 0).float().mean().item() - prior.expression_active_prob) < 0.01
    assert abs((e[:, 52] > 0.15).float().mean().item() - prior.jaw_open_prob) < 0.05
    deg = p["rotation"] * 180 / math.pi
    assert deg[:, 0].abs().max() <= prior.yaw_max_deg and deg[:, 0].abs().max() > prior.yaw_max_deg - 2
    assert deg[:, 1].abs().max() <= prior.pitch_max_deg and deg[:, 2].abs().max() <= prior.roll_max_deg
    assert p["translation"][:, 2].abs().max() <= prior.translate_z_cm
    # Ambient term: gamma_0 = sqrt(4 pi) * ambient radiance, positive for every sample and channel.
    assert (p["illumination"][:, 0] > 0).all()


def test_paint_hair_only_above_the_hairline(constant_albedo_renderer):
    """Hair is painted on the head/neck part and the top of the face part only, never on the eyes, nose or mouth
    region; prob 0 changes nothing, prob 1 paints every sample; same generator seed, same hair."""
    from ifn.nuisance import HAIR_SIDE_CM, HAIRLINE_CM, paint_hair

    renderer = constant_albedo_renderer(32)
    fm = renderer.face_model
    albedo = torch.full((6, fm.n_vertices, 3), 0.45)
    assert torch.equal(paint_hair(renderer, albedo, 0.0, torch.Generator().manual_seed(0)), albedo)
    a = paint_hair(renderer, albedo, 1.0, torch.Generator().manual_seed(0))
    b = paint_hair(renderer, albedo, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    changed = (a != albedo).any(-1)                                       # (6, V)
    y = fm.mean[:, 1]
    face, head = fm.part_mask("face"), fm.part_mask("head_neck")
    assert changed.any(1).all()                                           # every sample has hair
    assert not changed[:, ~(face | head)].any()                           # eyeballs, mouth socket, teeth: never
    assert not changed[:, face & (y < HAIRLINE_CM[0])].any()              # the face below the lowest hairline
    assert not changed[:, head & (y < HAIR_SIDE_CM[0])].any()             # the neck
    assert changed[:, head & (y > HAIR_SIDE_CM[1])].all()                 # the top of the skull: always
    some = paint_hair(renderer, albedo, 0.5, torch.Generator().manual_seed(1))
    assert 0 < (some != albedo).any(-1).any(1).sum() < 6
    low = (paint_hair(renderer, albedo, 1.0, torch.Generator().manual_seed(0), low_cm=-8.0) != albedo).any(-1)
    assert not low[:, head & (y < -8.0)].any() and low[:, head & (y > 1.0)].all()   # the range moved down
    assert low[:, head].sum() > changed[:, head].sum()


def test_renderer_albedo_override(constant_albedo_renderer):
    """An albedo passed to the renderer replaces the model's: twice the albedo, twice the linear image."""
    renderer = constant_albedo_renderer(32)
    groups = renderer.layout.zeros(1)
    groups["illumination"][:, 0, :] = 3.0
    base = renderer(groups)
    doubled = renderer(groups, albedo=2 * renderer.albedo(groups))
    assert base.mask.any() and torch.allclose(doubled.image, 2 * base.image, atol=1e-6)
