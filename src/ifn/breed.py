"""Self-supervised bootstrapping ("breeding") on real photos: one round = stage breed@<round>.

A round (params.yaml `breed`; rounds are chained by `breed.rounds`, each naming the folder of the network it
starts from):

1. Photos: `photos_per_round` photos of the train part of data/real (never the held-out part), a fresh sample
   per round, fixed by (seed, round name); unusable files are skipped with a message.
2. Estimates: the previous network reconstructs them (with `breed.looks`, as stage evaluate_real does: the pose
   flip-averaged, then the upright passes; else one plain forward pass); analysis-by-synthesis refinement (ifn.fit.refine with
   params `refine`, `breed.refine_steps` steps) makes the estimates consistent with the photos. With
   `breed.max_landmark_shift` > 0 a fit whose projected landmarks moved farther than that from the network's
   keeps the network's geometry (`implausible_fits`; off by default: it did not lower the tuning NME).
3. New samples: every estimate is perturbed `variants_per_photo` times (`breed.perturb`; variant 0 is the
   estimate itself) and rendered over random backgrounds (synthesize.backgrounds) with exact ground truth:
   a corpus-format folder `<round>/bred/train/` (ifn.corpus), so the parameter distribution of the training
   data moves toward that of real faces.
   Self-training (`breed.self_training_photos` > 0): that many further train-part photos, labelled with the
   network's own estimates (step 2's looks, no refinement), go into `<round>/photos/` as they are: real images
   whose targets are what the network reads from them looking twice (mirrored, upright), so the fine-tuning
   teaches the single forward pass on photos what the looks add (and, through the training augmentation, to
   read the same under colour, blur, crop and flip changes). No landmark or label of any photo is used.
4. Fine-tuning (learning rate `breed.lr * breed.lr_decay^(k-1)` in round k of its chain, so later rounds move
   the network less): the previous network is trained further on a mix: each epoch has `epoch_size` samples,
   `mix_fraction` of them from the bred samples (and self-training photos) of this round and all earlier ones,
   uniformly over them, the rest from the synthetic
   train split; validation on the synthetic val split (so val numbers stay comparable across rounds).

Two chains of rounds: `breed.rounds` (detector-free: refinement as `breed.landmarks` says, none by default, the
paper's setting) and `breed.guided_rounds` (stages breed_guided@<round>: step 2's refinement is anchored by the
detector's landmarks, ifn.landmark_fit with the settings of `detect`; photos without a face get plain
refinement). Each chain mixes only its own rounds' bred samples; a guided round without a detector
(detect.detector none) writes only summary.json / metrics.json saying it was skipped.

Outputs in `breed.out_dir/<round>/`: model.pt (best by val/loss, ifn.learn.train.load_network), last.ckpt /
best.ckpt (an interrupted fine-tuning resumes), summary.json, metrics.json (refinement and fine-tuning numbers),
curves.png, photos.json (the photos used and their per-photo errors), examples.png, bred/, photos/ (with
self-training).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .atomic import atomic_path, save_figure, save_json
from .config import FIT_GROUPS, BreedConfig, PerturbConfig, load_params
from .corpus import Corpus, write_shard
from .learn.data import AugmentCollate, CorpusDataModule, SyntheticDataset
from .paths import resolve
from .real import BadImageError, RealPhotos

REFLECTANCE_PATH = "models/face_model/reflectance.npz"


# ---------------------------------------------------------------------------------------------------------------
# Steps 1-3: photos -> estimates -> perturbed, re-rendered samples
# ---------------------------------------------------------------------------------------------------------------
def round_seed(seed: int, name: str) -> int:
    """A stable integer seed per (global seed, round name)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:7], "big")


def load_photos(photos: RealPhotos, indices: Sequence[int], log=print) -> tuple[np.ndarray, list[dict]]:
    """Load framed crops of the given items: ((N, S, S, 3) uint8, one record {source, name, index} per crop).
    Unusable files are skipped with a one-line message."""
    crops, records = [], []
    for i in indices:
        source, name = photos.items[i]
        try:
            crop, _ = photos.load(int(i))
        except BadImageError as e:
            log(f"skipping real photo {source}/{name}: {e.reason}")
            continue
        crops.append(crop)
        records.append({"source": source, "name": name, "index": int(i)})
    size = photos.image_size
    return (np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)), records


def sample_photos(photos: RealPhotos, n: int, seed: int) -> list[int]:
    """n item indices of `photos`, a seeded random sample (all of them if n >= len)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(photos), generator=g).tolist()
    return sorted(order[:n])


def perturb(params: torch.Tensor, layout, cfg: PerturbConfig, variants: int, g: torch.Generator) -> torch.Tensor:
    """(N, P) estimates -> (N * variants, P): each estimate repeated `variants` times (consecutive rows), the
    first copy unchanged, the others with Gaussian noise of the stds in `cfg` (expression clamped to [0, 1],
    SH light scaled per coefficient by (1 + noise))."""
    rep = params.repeat_interleave(variants, 0).clone()
    n = rep.shape[0]
    keep = (torch.arange(n) % variants == 0)[:, None]
    groups = layout.split(rep)

    def noise(shape, std):
        return torch.randn(shape, generator=g, dtype=rep.dtype) * std

    out = {
        "shape": groups["shape"] + noise(groups["shape"].shape, cfg.shape),
        "expression": (groups["expression"] + noise(groups["expression"].shape, cfg.expression)).clamp(0, 1),
        "reflectance": groups["reflectance"] + noise(groups["reflectance"].shape, cfg.reflectance),
        "illumination": groups["illumination"] * (1 + noise(groups["illumination"].shape, cfg.illumination)),
        "rotation": groups["rotation"] + noise(groups["rotation"].shape, math.radians(cfg.rotation_deg)),
        "translation": groups["translation"] + noise(groups["translation"].shape, cfg.translation_cm),
    }
    return torch.where(keep, rep, layout.join(out))


def render_samples(renderer, params: torch.Tensor, backgrounds: Sequence[str], g: torch.Generator,
                   batch: int = 64, prior=None) -> dict[str, np.ndarray]:
    """Render (N, P) parameters over random backgrounds with the nuisances of `prior` (params.yaml
    synthesize.prior, as the synthetic corpus; see ifn.synth.render_batch) -> the arrays of a corpus shard."""
    from .render.backgrounds import random_backgrounds
    from .synth import face_weights, render_batch

    weights = face_weights(renderer)
    parts = []
    for start in range(0, params.shape[0], batch):
        p = params[start:start + batch]
        bg = random_backgrounds(p.shape[0], renderer.settings.image_size, backgrounds, g)
        parts.append(render_batch(renderer, renderer.layout.split(p), bg, weights, prior, g))
    return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}


def estimate(renderer, net, crops: np.ndarray, refine_cfg, steps: int, batch_size: int = 64, log=print,
             targets: np.ndarray | None = None, landmark_settings=None, free: Sequence[str] | None = None,
             looks: tuple[bool, int] = (False, 0)) -> dict[str, Any]:
    """Network estimates of (N, S, S, 3) uint8 crops, refined by `steps` steps of ifn.fit.refine (params
    `refine`, batches of refine.batch_size). With detector `targets` (N, 468, 2) crop pixels (NaN rows: no face)
    and `landmark_settings` (ifn.landmark_fit.LandmarkFitSettings), photos with a face get the detector-guided
    fit instead (its landmark-only steps, then `steps` photometric + landmark steps). `free`: the parameter
    groups the plain refinement optimises (default all; e.g. without rotation / translation the network's head
    pose is kept). `looks` (flip_pose, upright_passes): the network's test-time looks, as stage evaluate_real takes
    them (ifn.evaluate_real.network_estimate; (False, 0): one plain forward pass). Returns dict network
    (N, P), refined (N, P), photometric MAE and face coverage of both (N,) (ifn.evaluate.photo_errors), seconds
    of each step, guided (N,) bool."""
    from dataclasses import replace

    from .evaluate import photo_errors
    from .evaluate_real import network_estimate
    from .fit import refine

    t0 = time.perf_counter()
    net_params = network_estimate(net, crops, renderer.layout, batch_size, *looks)
    t1 = time.perf_counter()
    refined = net_params.clone()
    guided = np.zeros(len(crops), bool)
    if targets is not None:
        from .landmark_fit import fit_detected

        refined, guided = fit_detected(renderer, crops, net_params, targets, replace(landmark_settings, steps=steps),
                                       refine_cfg.batch_size, **refine_cfg.refine_kwargs())
        log(f"detector-guided fits of {int(guided.sum())}/{len(crops)} photos ({time.perf_counter() - t1:.0f} s)")
    rest = np.flatnonzero(~guided)
    if steps > 0 and len(rest):
        kwargs = {**refine_cfg.refine_kwargs(), "steps": steps, **({"free": tuple(free)} if free else {})}
        for start in range(0, len(rest), refine_cfg.batch_size):
            sl = rest[start:start + refine_cfg.batch_size]
            images = torch.from_numpy(np.ascontiguousarray(crops[sl])).float() / 255
            refined[sl], _ = refine(renderer, images, net_params[sl], **kwargs)
            log(f"refined {min(start + refine_cfg.batch_size, len(rest))}/{len(rest)} photos "
                f"({time.perf_counter() - t1:.0f} s)")
    t2 = time.perf_counter()
    images = torch.from_numpy(np.ascontiguousarray(crops)).float() / 255
    before = photo_errors(renderer, net_params, images, batch_size)
    after = photo_errors(renderer, refined, images, batch_size) if steps > 0 else before
    return {"network": net_params, "refined": refined,
            "photometric_network": before["photometric_mae"], "photometric_refined": after["photometric_mae"],
            "coverage_network": before["coverage"], "coverage_refined": after["coverage"],
            "predict_seconds": t1 - t0, "refine_seconds": t2 - t1, "guided": guided}


def photo_samples(renderer, crops: np.ndarray, params: torch.Tensor, batch: int = 64) -> dict[str, np.ndarray]:
    """Real photo crops (N, S, S, 3) uint8 labelled with parameter estimates (N, P) -> the arrays of a corpus shard
    (self-training samples): the images are the photos themselves; landmarks and the shading Gram are the
    estimate's, as a render of it would carry (ifn.synth.render_batch; nothing is rasterised); the masks are all
    True, so the training augmentation puts no photo background or face-only cut-out into a photo."""
    from .render.shading import shading_gram, vertex_normals
    from .synth import face_weights

    size = renderer.settings.image_size
    if crops.shape[1:3] != (size, size):
        raise ValueError(f"photo crops of {crops.shape[1]}x{crops.shape[2]} px, the renderer's images {size} px")
    weights = face_weights(renderer)
    triangles = renderer.face_model.triangles
    landmarks, grams = [], []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            verts = renderer.posed(params[start:start + batch])
            landmarks.append(renderer.landmarks(verts).float().numpy())
            grams.append(shading_gram(vertex_normals(verts, triangles), weights).float().numpy())
    mask = np.ones(crops.shape[:3], bool)
    return {"images": np.ascontiguousarray(crops), "params": params.float().numpy(),
            "landmarks": np.concatenate(landmarks), "shading_gram": np.concatenate(grams),
            "masks": mask, "face_masks": mask.copy()}


def write_pool(folder: Path, arrays: Mapping[str, np.ndarray], shard_size: int, meta: Mapping[str, Any]) -> None:
    """A pool of training samples (bred samples or self-training photos) as a corpus folder with only a train
    split (ifn.corpus): `arrays` in shards of `shard_size`, meta.json = `meta` (the corpus's, without its
    "seconds") with the counts; written atomically."""
    n = len(arrays["params"])
    with atomic_path(folder) as tmp:
        for i, start in enumerate(range(0, n, shard_size)):
            write_shard(tmp / "train" / f"shard_{i:04d}", {k: v[start:start + shard_size] for k, v in arrays.items()})
        meta = {k: v for k, v in meta.items() if k != "seconds"}
        meta["counts"] = {"train": int(n), "val": 0, "test": 0}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def pool_key(folder: Path) -> str | None:
    """The bred_key a pool written by `write_pool` carries (None: no finished pool there)."""
    meta = folder / "meta.json"
    return json.loads(meta.read_text()).get("bred_key") if meta.exists() else None


def landmark_shift(renderer, network: torch.Tensor, refined: torch.Tensor) -> np.ndarray:
    """(N,) mean distance between the 68 projected landmarks of the network's and the refined estimates, as a
    fraction of the image side: how far the refinement moved the face's features in the photo."""
    with torch.no_grad():
        a = renderer.landmarks(renderer.posed(network))
        b = renderer.landmarks(renderer.posed(refined))
    return ((a - b).norm(dim=-1).nanmean(-1) / renderer.settings.image_size).double().numpy()


def implausible_fits(shift: np.ndarray, max_shift: float) -> np.ndarray:
    """(N,) bool: the fits whose landmark shift (`landmark_shift`) exceeds `max_shift` (0: none). Without
    landmarks the photometric refinement explains a shadow or red lips by opening the jaw or bending the chin;
    a fit that moves the features this far from the network's estimate is not trusted for geometry."""
    return shift > max_shift if max_shift > 0 else np.zeros(len(shift), bool)


def keep_network_geometry(refined: torch.Tensor, network: torch.Tensor, rows: np.ndarray, layout) -> torch.Tensor:
    """`refined` with the geometry groups (shape, expression, rotation, translation) of `rows` taken from the
    network's estimate; their refined reflectance and illumination stay."""
    out = refined.clone()
    idx = torch.from_numpy(np.flatnonzero(rows))
    for group in ("shape", "expression", "rotation", "translation"):
        sl = layout[group]
        out[idx, sl] = network[idx, sl]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Step 4: the fine-tuning data (synthetic train split + bred pools)
# ---------------------------------------------------------------------------------------------------------------
class ConcatSamples(Dataset):
    """Several SyntheticDatasets as one, indexed by (global index, epoch) like SyntheticDataset."""

    def __init__(self, parts: Sequence[SyntheticDataset]):
        self.parts = list(parts)
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in self.parts])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        part = int(np.searchsorted(self.offsets, int(index), side="right")) - 1
        item = self.parts[part][(int(index) - int(self.offsets[part]), epoch)]
        item["index"] = int(index)
        return item


class MixedSampler(Sampler):
    """`epoch_size` (index, epoch) pairs per epoch over ConcatSamples([base, pool_1, ...]): round(mix_fraction *
    epoch_size) of them uniformly from the pools (indices >= n_base), the rest from the base, each part drawn
    without replacement as far as it goes (then again from a fresh permutation), the whole order shuffled;
    a pure function of (seed, epoch). With num_replicas > 1, replica `rank` takes every num_replicas-th entry."""

    def __init__(self, n_base: int, n_pool: int, epoch_size: int, mix_fraction: float, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        self.n_base, self.n_pool, self.epoch_size = int(n_base), int(n_pool), int(epoch_size)
        self.n_from_pool = int(round(mix_fraction * epoch_size)) if n_pool > 0 else 0
        if self.n_from_pool < epoch_size and n_base == 0:
            raise ValueError("no base samples to fill the epoch (mix_fraction < 1 needs a synthetic train split)")
        self.seed, self.epoch = int(seed), 0
        self.num_replicas, self.rank = max(1, int(num_replicas)), int(rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.epoch_size // self.num_replicas)

    @staticmethod
    def _draw(n: int, k: int, g: torch.Generator) -> torch.Tensor:
        if k <= 0:
            return torch.zeros(0, dtype=torch.long)
        reps = -(-k // n)
        return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:k]

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        pool = self._draw(self.n_pool, self.n_from_pool, g) + self.n_base
        base = self._draw(self.n_base, self.epoch_size - self.n_from_pool, g)
        both = torch.cat([base, pool])
        return both[torch.randperm(len(both), generator=g)].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order()
        if self.num_replicas > 1 and order:
            order = (order * self.num_replicas)[:len(self) * self.num_replicas][self.rank::self.num_replicas]
        return iter([(i, self.epoch) for i in order])


class BreedDataModule(CorpusDataModule):
    """CorpusDataModule whose training epochs mix the synthetic train split with bred sample folders
    (MixedSampler); val/test stay the synthetic corpus's."""

    def __init__(self, corpus_dir, pool_dirs: Sequence[str | Path], config, seed: int, mix_fraction: float,
                 epoch_size: int, pivot_cm: float = 0.0, real=None):
        super().__init__(corpus_dir, config, seed, pivot_cm=pivot_cm, real=real)
        self.pools = [SyntheticDataset(Corpus.open(p), "train", **self.mask_kwargs("train")) for p in pool_dirs]
        self.mix_fraction, self.epoch_size = float(mix_fraction), int(epoch_size)

    def train_size(self) -> int:
        return self.epoch_size

    def train_dataloader(self) -> DataLoader:
        base = self.dataset("train")
        ds = ConcatSamples([base, *self.pools])
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = MixedSampler(len(base), len(ds) - len(base), self.epoch_size, self.mix_fraction, self.seed,
                               replicas, rank)
        augment = self.train_augment()
        workers = self.config.num_workers
        return DataLoader(ds, batch_size=self.config.batch_size, sampler=sampler,
                          collate_fn=AugmentCollate(augment, self.seed), drop_last=len(sampler) >= self.config.batch_size,
                          num_workers=workers, persistent_workers=workers > 0)


# ---------------------------------------------------------------------------------------------------------------
# A whole round
# ---------------------------------------------------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def examples_figure(crops: np.ndarray, renders: Mapping[str, np.ndarray], bred: np.ndarray, n: int = 8):
    """Rows: photo crops, the re-render of each estimate (one row per entry of `renders`), bred samples."""
    from matplotlib.figure import Figure

    n = min(n, len(crops))
    rows = [("photo", crops[:n]), *[(k, v[:n]) for k, v in renders.items()], ("bred samples", bred[:n])]
    fig = Figure(figsize=(1.5 * max(n, 1), 1.6 * len(rows)))
    axes = fig.subplots(len(rows), max(n, 1), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(max(n, 1)):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c])
        axes[r, 0].set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def breed_round(name: str, params_file: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None,
                reflectance_path: str | Path = REFLECTANCE_PATH, log=print) -> dict:
    """Run breeding round `name` of breed.rounds (see the module docstring); returns its summary."""
    import pytorch_lightning as pl

    from .figures import rerender
    from .learn.module import InverseFaceNetModule, plain
    from .evaluate_real import network_estimate
    from .learn.train import _digest, fit_and_export, load_network, prepare_run
    from .synth import build_renderer, face_centre, face_weights

    params = load_params(resolve(params_file), overrides)
    cfg: BreedConfig = params.breed
    if name not in cfg.names + cfg.guided_names:
        raise ValueError(f"breeding round {name!r} is not in breed.rounds or breed.guided_rounds "
                         f"({', '.join(cfg.names + cfg.guided_names)})")
    names = list(cfg.chain(name))
    position = names.index(name)
    # The detector-free chain refines as breed.landmarks says (none: the paper's setting); the guided chain
    # always anchors its refinement with the detector's landmarks.
    landmarks = params.detect.detector if cfg.guided(name) else cfg.landmarks
    run_dir = resolve(cfg.folder(name))
    if cfg.guided(name) and landmarks == "none":   # the detector-free configuration: say so, train nothing
        reason = "skipped: detect.detector is none (a breed.guided_rounds round refines with the detector's landmarks)"
        log(f"breed[{name}]: {reason}")
        run_dir.mkdir(parents=True, exist_ok=True)
        save_json(run_dir / "metrics.json", {"skipped": 1})
        save_json(run_dir / "summary.json", {"skipped": reason})
        return {"skipped": reason}
    looks = (params.evaluate_real.flip_pose, params.evaluate_real.upright_passes) if cfg.looks else (False, 0)
    previous_dir = resolve(cfg.previous(name))
    previous_model = previous_dir / "model.pt"
    if not previous_model.exists():
        raise FileNotFoundError(f"{previous_model} does not exist: round {name} starts from it; run "
                                f"`dvc repro` (it runs the stages in order)")
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus_dir = resolve(params.synthesize.out_dir)
    corpus = Corpus.open(corpus_dir)
    renderer = build_renderer(params, reflectance_path, image_size=int(corpus.meta["image_size"]))
    size = params.real.working_size(params.render.image_size)
    if size != int(corpus.meta["image_size"]):
        raise ValueError(f"real.image_size {size} differs from the corpus's {corpus.meta['image_size']}: the "
                         f"network sees photos at the size it was trained on; set real.image_size: 0")

    # Everything this round's result depends on.
    train_cfg = dataclasses.replace(params.train, lr=cfg.round_lr(position), max_epochs=cfg.finetune_epochs,
                                    max_minutes=cfg.max_minutes)
    base = {"round": name, "position": position, "seed": params.seed, "previous": _file_digest(previous_model),
            "earlier_bred": [_digest(json.loads((resolve(cfg.folder(e)) / "bred" / "meta.json").read_text()))
                             for e in names[:position]],
            "breed": {**{k: plain(getattr(cfg, k)) if k != "perturb" else cfg.perturb.to_dict()
                         for k in ("photos_per_round", "refine_steps", "variants_per_photo", "perturb")},
                      **({"refine_groups": list(cfg.refine_groups)} if set(cfg.refine_groups) != set(FIT_GROUPS)
                         else {}),
                      **({"max_landmark_shift": cfg.max_landmark_shift} if cfg.max_landmark_shift > 0 else {}),
                      **({"looks": list(looks)} if cfg.looks else {}),
                      **({"self_training_photos": cfg.self_training_photos} if cfg.self_training_photos else {}),
                      "landmarks": landmarks},
            "detect": params.detect.to_dict() if landmarks != "none" else None,
            "backgrounds": list(params.synthesize.backgrounds), "hair_prob": params.synthesize.prior.hair_prob,
            **{k: getattr(params.synthesize.prior, k) for k in ("brow_prob", "long_hair_prob")
               if getattr(params.synthesize.prior, k) > 0},
            # The code that makes the samples: editing it (DVC then reruns the stage) must not reuse old ones.
            "code": [_file_digest(Path(__file__).with_name(m)) for m in ("breed.py", "fit.py", "real.py", "synth.py",
                                                                                   "nuisance.py")
                     + (("detect.py", "landmark_fit.py") if landmarks != "none" else ())
                     + (("evaluate_real.py", "upright.py") if cfg.looks else ())],
            "refine": params.refine.to_dict(), "real": plain(params.real.to_dict()),
            "render": params.render.to_dict(), "corpus": {k: v for k, v in corpus.meta.items() if k != "seconds"}}
    train_key = {k: v for k, v in plain(train_cfg.to_dict()).items()
                 if k not in ("max_epochs", "max_minutes", "num_workers", "out_dir", "compare")}
    bred_key = _digest(base)
    resume_key = _digest({"bred": bred_key, "train": train_key, "mix_fraction": cfg.mix_fraction,
                          "epoch_size": cfg.epoch_size, "pools": names[:position + 1]})
    run_key = _digest({"resume": resume_key, "epochs": cfg.finetune_epochs, "minutes": cfg.max_minutes})
    finished, resume_from = prepare_run(run_dir, resume_key, run_key, cfg.finetune_epochs, f"breed[{name}]", log)
    if finished is not None:
        return finished

    net, info = load_network(previous_model)
    bred_dir = run_dir / "bred"
    photos_json = run_dir / "photos.json"
    reuse = photos_json.exists() and pool_key(bred_dir) == bred_key and \
        (not cfg.self_training_photos or pool_key(run_dir / "photos") == bred_key)
    if reuse:
        log(f"breed[{name}]: bred samples with the same settings in {bred_dir}: reused")
        stats = json.loads(photos_json.read_text())["summary"]
    else:
        t0 = time.perf_counter()
        photos = RealPhotos(params.real.root, params.real.sources, "train", size, params.real.heldout_fraction,
                            max_side=params.real.max_side)
        seed = round_seed(params.seed, name)
        crops, records = load_photos(photos, sample_photos(photos, cfg.photos_per_round, seed), log)
        if not records:
            raise RuntimeError(f"breed[{name}]: none of the sampled real photos could be used")
        log(f"breed[{name}]: {len(records)} photos ({photos.counts()} available, train part)")
        targets, settings = None, None
        if landmarks != "none":   # detector-guided refinement: the bred samples carry the photos' poses
            from .detect import FaceDetector, detect_crops
            from .landmark_fit import LandmarkFitSettings

            with FaceDetector(params.detect.min_confidence) as detector:
                targets = detect_crops(detector, crops)
            settings = LandmarkFitSettings.from_config(params.detect)
        est = estimate(renderer, net, crops, params.refine, cfg.refine_steps, params.train.batch_size, log,
                       targets, settings, cfg.refine_groups, looks)
        shift = landmark_shift(renderer, est["network"], est["refined"])
        reverted = implausible_fits(shift, cfg.max_landmark_shift)
        est["refined"] = keep_network_geometry(est["refined"], est["network"], reverted, renderer.layout)
        g = torch.Generator().manual_seed(seed)
        new_params = perturb(est["refined"], renderer.layout, cfg.perturb, cfg.variants_per_photo, g)
        t_render = time.perf_counter()
        arrays = render_samples(renderer, new_params, params.synthesize.backgrounds, g,
                                params.synthesize.render_batch, params.synthesize.prior)
        render_seconds = time.perf_counter() - t_render
        write_pool(bred_dir, arrays, params.synthesize.shard_size,
                   {**corpus.meta, "bred_key": bred_key, "round": name, "photos": len(records)})
        self_seconds = 0.0
        if cfg.self_training_photos:   # further photos, labelled by the network's own estimates
            t_self = time.perf_counter()
            self_crops, self_records = load_photos(
                photos, sample_photos(photos, cfg.self_training_photos, round_seed(params.seed, f"{name}/self")), log)
            labels = network_estimate(net, self_crops, renderer.layout, params.train.batch_size, *looks)
            self_arrays = photo_samples(renderer, self_crops, labels, params.synthesize.render_batch)
            write_pool(run_dir / "photos", self_arrays, params.synthesize.shard_size,
                       {**corpus.meta, "bred_key": bred_key, "round": name, "photos": len(self_records),
                        "self_training": True})
            self_seconds = time.perf_counter() - t_self
            log(f"breed[{name}]: {len(self_records)} photos labelled by the network for self-training "
                f"({self_seconds:.0f} s)")
        n_show = min(8, len(records))
        renders = {"network": rerender(renderer, est["network"][:n_show]),
                   f"refined ({cfg.refine_steps} steps)": rerender(renderer, est["refined"][:n_show])}
        save_figure(examples_figure(crops, renders, arrays["images"][::cfg.variants_per_photo]),
                    run_dir / "examples.png")
        pn, pr = est["photometric_network"].numpy(), est["photometric_refined"].numpy()
        stats = {"photos": len(records), "photos_skipped": min(cfg.photos_per_round, len(photos)) - len(records),
                 "bred_samples": int(len(new_params)),
                 "photometric_network": float(pn.mean()), "photometric_refined": float(pr.mean()),
                 "coverage_network": float(est["coverage_network"].mean()),
                 "coverage_refined": float(est["coverage_refined"].mean()),
                 "predict_seconds": est["predict_seconds"], "refine_seconds": est["refine_seconds"],
                 "refine_seconds_per_photo": est["refine_seconds"] / len(records),
                 "render_seconds": render_seconds, "bred_seconds": time.perf_counter() - t0,
                 "photos_detector_guided": int(est["guided"].sum()),
                 "landmark_shift_mean": float(shift.mean()), "photos_geometry_kept": int(reverted.sum()),
                 **({"self_training_photos": int(len(self_records)), "self_training_seconds": self_seconds}
                    if cfg.self_training_photos else {})}
        save_json(photos_json, {"summary": stats, "photos": [
            {**r, "photometric_network": float(a), "photometric_refined": float(b), "landmark_shift": float(d),
             "geometry_kept": bool(k)} for r, a, b, d, k in zip(records, pn, pr, shift, reverted)]})
        log(f"breed[{name}]: photometric MAE {stats['photometric_network']:.4f} (network) -> "
            f"{stats['photometric_refined']:.4f} (refined, {cfg.refine_steps} steps, "
            f"{stats['refine_seconds_per_photo']:.2f} s/photo); {stats['bred_samples']} samples rendered")

    # Fine-tune the previous network on synthetic + bred samples (this round's and the earlier rounds').
    pl.seed_everything(round_seed(params.seed, name) % (2**31), workers=True, verbose=False)
    pools = [resolve(cfg.folder(e)) / "bred" for e in names[:position + 1]]
    if cfg.self_training_photos:
        pools += [resolve(cfg.folder(e)) / "photos" for e in names[:position + 1]]
    data = BreedDataModule(corpus_dir, pools, train_cfg, params.seed + position + 1, cfg.mix_fraction,
                           cfg.epoch_size, pivot_cm=float(face_centre(renderer)[2]), real=params.real)
    loss = params.train.loss
    weights = face_weights(renderer) if train_cfg.loss_region == "face" else \
        torch.ones(renderer.face_model.n_vertices)
    config = {**plain(train_cfg.to_dict()), "loss": loss, "net": info["net"]}
    module = InverseFaceNetModule(config, renderer.layout.counts,
                                  float(corpus.meta["render"]["distance_cm"]), resume_key,
                                  face_model=renderer.face_model, reflectance=renderer.reflectance,
                                  vertex_weights=weights, fov_deg=renderer.camera.fov_deg)
    module.net.load_state_dict(net.state_dict())       # weights and the output scaling of the previous network
    module._set_parameter_loss(module.net.param_std)
    out_info = {**info, "loss": loss, "weights": "best val/loss", "round": name,
                "previous": str(cfg.previous(name))}
    extra = {"round": name, "previous": cfg.previous(name), "loss": loss, "seed": params.seed,
             "resume_key": resume_key, "run_key": run_key, "breeding": stats,
             "pools": [str(p) for p in pools]}
    summary = fit_and_export(module, data, run_dir, train_cfg, out_info, extra, resume_from=resume_from,
                             name=f"breed[{name}]", title=f"InverseFaceNet, breeding {name}",
                             extra_metrics={f"breed_{k}": v for k, v in stats.items()}, log=log)
    return summary
