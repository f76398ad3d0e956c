"""Fine-tuning on real photos with the face detector's landmarks (stage finetune_real; params `finetune`).

MoFA / Deep3DFaceRecon-style training on top of the paper's recipe, a detector-guided variant of its own: the
detector-free networks (synthetic_only and the breeding rounds) are never trained with it.

1. Photos: `finetune.photos` photos of the train part of data/real (never the held-out part), a seeded sample
   (seed of the stage, different from every breeding round's), plus `val_photos` others for validation. The
   detector (ifn.detect, settings of `detect`) finds the 468 face-mesh points in each crop; photos without a
   face are dropped. The points are cached in `<out_dir>/landmarks.npz` (reused while the settings match).
2. Training: the network of `finetune.init` is trained further; every step takes one augmented synthetic
   batch (train.batch_size, the model-space loss of train.loss, exact ground truth) and one real batch
   (`real_batch_size` photos) through a single forward pass. The real photos' loss:
       w_landmark * mean over photos of RMS_l |proj(v_l(p)) - x*_l| / S      (image sides, robust across photos)
     + w_shape_prior * |shape|^2 + w_expression_prior * |expression|^2   (the model's N(0, 1) / [0, 1] priors)
     + w_photo * (robust photometric + silhouette-edge terms of ifn.fit)  (optional: renders the batch)
   v_l are the model vertices of the detector's points (ifn.detect.correspondence), face-oval points weighted
   by detect.w_contour and dropped where their vertex faces away at the current estimate (ifn.landmark_fit).
3. Validation: the synthetic val split (model-space terms, comparable with every other network) and the
   validation photos' landmark RMS; val/loss = the same objective as training (what model.pt is chosen by).

Outputs in `finetune.out_dir`: model.pt, metrics.json, summary.json, curves.png, landmarks.npz, Lightning
checkpoints (an interrupted run resumes). Needs the detector: with `detect.detector: none` the stage writes
only summary.json / metrics.json saying it was skipped (no model.pt; evaluate_real then has no detector-guided
rows); a detector that does not import is an error naming the package.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .atomic import save_json, save_npz
from .config import load_params
from .learn.data import CorpusDataModule, EpochSampler
from .learn.module import InverseFaceNetModule
from .paths import resolve

REFLECTANCE_PATH = "models/face_model/reflectance.npz"
SEED_SALT = 104729   # the stage's photo sample differs from the breeding rounds' (ifn.breed.round_seed)


# ---------------------------------------------------------------------------------------------------------------
# Real photos with detector targets
# ---------------------------------------------------------------------------------------------------------------
def detect_photo_set(params, n: int, n_val: int, size: int, seed: int, log=print) -> dict[str, np.ndarray]:
    """Sample n + n_val photos of the train part of `real`, detect their face-mesh points: dict crops
    (M, S, S, 3) uint8, targets (M, 468, 2) float32 crop pixels, val (M,) bool, source (M,), name (M,) -- only
    the photos with a detected face (M <= n + n_val)."""
    from .breed import load_photos, sample_photos
    from .detect import FaceDetector, detect_crops
    from .real import RealPhotos

    photos = RealPhotos(params.real.root, params.real.sources, "train", size, params.real.heldout_fraction,
                        max_side=params.real.max_side)
    idx = sample_photos(photos, n + n_val, seed)
    g = np.random.default_rng(seed)
    is_val = np.zeros(len(idx), bool)
    is_val[g.permutation(len(idx))[:n_val]] = True
    val_of = dict(zip(idx, is_val))
    crops, records = load_photos(photos, idx, log)
    with FaceDetector(params.detect.min_confidence) as detector:
        targets = detect_crops(detector, crops)
    found = np.isfinite(targets).all((1, 2))
    sources = np.array([r["source"] for r in records])
    log(f"finetune: a face in {int(found.sum())} / {len(records)} photos ("
        + ", ".join(f"{s} {int(found[sources == s].sum())}/{int((sources == s).sum())}" for s in dict.fromkeys(sources))
        + ")")
    return {"crops": crops[found], "targets": targets[found].astype(np.float32),
            "val": np.array([val_of[r["index"]] for r in records], bool)[found],
            "source": sources[found], "name": np.array([r["name"] for r in records])[found]}


class RealLandmarks(Dataset):
    """In-memory photos with detector targets. Items ds[i] or ds[(i, epoch)] -> {"photo": (S, S, 3) float32
    sRGB in [0, 1], "targets": (L, 2) float32 crop pixels, "index", "epoch"}."""

    def __init__(self, crops: np.ndarray, targets: np.ndarray):
        if len(crops) != len(targets):
            raise ValueError(f"{len(crops)} crops but {len(targets)} target sets")
        self.crops, self.targets = crops, targets

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        photo = np.asarray(self.crops[int(index)], dtype=np.float32) * np.float32(1 / 255)
        return {"photo": torch.from_numpy(photo), "targets": torch.from_numpy(np.asarray(self.targets[int(index)])),
                "index": int(index), "epoch": int(epoch)}


class FinetuneDataModule(CorpusDataModule):
    """CorpusDataModule whose training batches are {"synthetic": augmented corpus batch, "real": photo batch}
    (an epoch = one pass over the training photos, the synthetic batches drawn from a fresh permutation each
    epoch); validation: [synthetic val split, validation photos]."""

    def __init__(self, corpus_dir, real_set: Mapping[str, np.ndarray], config, seed: int, real_batch_size: int,
                 pivot_cm: float = 0.0, real=None):
        super().__init__(corpus_dir, config, seed, pivot_cm=pivot_cm, real=real)
        val = np.asarray(real_set["val"], bool)
        self.real_train = RealLandmarks(real_set["crops"][~val], real_set["targets"][~val])
        self.real_val = RealLandmarks(real_set["crops"][val], real_set["targets"][val])
        if len(self.real_train) < real_batch_size:
            raise ValueError(f"finetune: {len(self.real_train)} training photos with a face, fewer than one batch "
                             f"of finetune.real_batch_size = {real_batch_size}")
        self.real_batch_size = int(real_batch_size)

    def train_size(self) -> int:
        return (len(self.real_train) // self.real_batch_size) * self.config.batch_size

    def _real_loader(self, ds: RealLandmarks, shuffle: bool) -> DataLoader:
        return DataLoader(ds, batch_size=self.real_batch_size, sampler=EpochSampler(len(ds), self.seed + 1, shuffle),
                          drop_last=shuffle, num_workers=0)

    def train_dataloader(self):
        from pytorch_lightning.utilities import CombinedLoader

        return CombinedLoader({"synthetic": super().train_dataloader(),
                               "real": self._real_loader(self.real_train, True)}, mode="min_size")

    def val_dataloader(self):
        loaders = [super().val_dataloader()]
        if len(self.real_val):
            loaders.append(self._real_loader(self.real_val, False))
        return loaders


# ---------------------------------------------------------------------------------------------------------------
# The LightningModule
# ---------------------------------------------------------------------------------------------------------------
class RealFinetuneModule(InverseFaceNetModule):
    """InverseFaceNetModule + the real photos' landmark loss (module docstring). `renderer` (ifn.synth
    .build_renderer at the photos' size) poses and projects the estimates; `finetune` is params.yaml's
    FinetuneConfig as a dict; `detect` its DetectConfig as a dict (w_contour, min_facing)."""

    def __init__(self, config, layout, distance_cm: float = 100.0, run_key: str = "", *, renderer=None,
                 finetune: Mapping[str, Any] | None = None, detect: Mapping[str, Any] | None = None, **kwargs):
        if renderer is not None and kwargs.get("fov_deg") is None:
            kwargs["fov_deg"] = renderer.camera.fov_deg   # the synthetic half's reprojection term
        super().__init__(config, layout, distance_cm, run_key, **kwargs)
        from .detect import correspondence
        from .landmark_fit import model_vertices

        if renderer is None:
            raise ValueError("RealFinetuneModule needs the renderer (ifn.synth.build_renderer)")
        self.renderer = renderer
        self.ft = dict(finetune or {})
        self.det = dict(detect or {})
        corr = correspondence()
        self.register_buffer("vertex_ids", model_vertices(renderer.face_model, corr), persistent=False)
        self.register_buffer("contour", torch.from_numpy(corr["contour"]), persistent=False)

    def on_fit_start(self) -> None:
        self.renderer = self.renderer.to(self.device)

    def on_validation_start(self) -> None:   # also when validating without fitting
        self.renderer = self.renderer.to(self.device)

    def real_terms(self, pred: torch.Tensor, photos: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,) terms of the real photos' loss at estimates `pred` (B, P): landmark_rms (image sides),
        shape_prior, expression_prior, photo + edge (0 unless finetune.w_photo > 0), and `loss`."""
        from .fit import energy_terms
        from .landmark_fit import visible_weights

        with torch.autocast(device_type=pred.device.type, enabled=False):
            pred = pred.float()
            weights = visible_weights(self.renderer, pred.detach(), self.vertex_ids, self.contour,
                                      float(self.det.get("w_contour", 0.5)), float(self.det.get("min_facing", 0.1)))
            w_photo = float(self.ft.get("w_photo", 0.0))
            terms = energy_terms(self.renderer, self.renderer.groups(pred), photos, landmarks=targets,
                                 landmark_vertices=self.vertex_ids, landmark_weights=weights,
                                 photometric=w_photo > 0)
            rms = (terms["landmark"] + 1e-8).sqrt()
            loss = float(self.ft.get("w_landmark", 0.0)) * rms \
                + float(self.ft.get("w_shape_prior", 0.0)) * terms["shape_prior"] \
                + float(self.ft.get("w_expression_prior", 0.0)) * terms["expression_prior"] \
                + w_photo * (terms["photo"] + terms["edge"])
        return {"loss": loss, "landmark_rms": rms.detach(), "shape_prior": terms["shape_prior"].detach(),
                "expression_prior": terms["expression_prior"].detach(), "photo": terms["photo"].detach()}

    def _net_input(self, photos: torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) photos -> (B, 3, s, s) at the network's view size (InverseFaceNet.to_view, the size of
        the augmented synthetic batches)."""
        return self.net.to_view(photos.permute(0, 3, 1, 2))

    def training_step(self, batch, batch_idx):
        syn, real = batch["synthetic"], batch["real"]
        images = syn["image"]
        x_real = self._net_input(real["photo"])
        if x_real.shape[-2:] == images.shape[-2:]:   # one forward pass: BatchNorm sees both domains
            pred = self.net(torch.cat([images, x_real]))
            pred_syn, pred_real = pred[:len(images)], pred[len(images):]
        else:
            pred_syn, pred_real = self.net(images), self.net(x_real)
        out = self.objective(pred_syn, syn["params"], syn)
        rt = self.real_terms(pred_real, real["photo"], real["targets"])
        real_loss = rt["loss"].mean()
        loss = out["loss"] + real_loss
        b = pred_syn.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=b)
        self.log("train/synthetic_loss", out["loss"].detach(), on_step=False, on_epoch=True, batch_size=b)
        for name in ("landmark_rms", "shape_prior", "expression_prior"):
            self.log(f"train/real_{name}", rt[name].mean(), on_step=False, on_epoch=True, batch_size=b)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=b)
        self._train_sum += float(loss.detach()) * b
        self._train_n += b
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        if dataloader_idx == 0:
            self._eval_step(batch)
            return
        pred = self.net(self._net_input(batch["photo"])).float()
        rt = self.real_terms(pred, batch["photo"], batch["targets"])
        sums = {"real_n": torch.tensor(float(pred.shape[0])), "real_loss": rt["loss"].detach().sum(),
                "real_landmark_rms": rt["landmark_rms"].sum()}
        for k, v in sums.items():
            v = v.to(torch.float64).cpu()
            self._eval[k] = self._eval[k] + v if k in self._eval else v

    def _eval_metrics(self) -> dict[str, float]:
        real = {k: self._eval.pop(k) for k in list(self._eval) if k.startswith("real_")}
        out = super()._eval_metrics()
        if real:
            keys = sorted(real)
            sums = torch.stack([real[k] for k in keys]).to(self.device)
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum") if self._trainer else sums
            s = dict(zip(keys, sums.cpu().tolist()))
            n = max(s.pop("real_n"), 1.0)
            out["real_landmark_rms"] = s["real_landmark_rms"] / n
            out["real_loss"] = s["real_loss"] / n
            if "loss" in out:
                out["synthetic_loss"] = out["loss"]
                out["loss"] = out["loss"] + out["real_loss"]
        self._eval.update(real)
        return out


# ---------------------------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------------------------
def finetune_real(params_file: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None,
                  reflectance_path: str | Path = REFLECTANCE_PATH, log=print) -> dict:
    """Run the stage (module docstring); returns its summary."""
    import pytorch_lightning as pl

    from .breed import _file_digest
    from .corpus import Corpus
    from .detect import DetectorUnavailable, available
    from .learn.module import plain
    from .learn.train import _digest, fit_and_export, load_network, prepare_run
    from .synth import build_renderer, face_centre, face_weights

    params = load_params(resolve(params_file), overrides)
    cfg = params.finetune
    run_dir = resolve(cfg.out_dir)
    if not params.detect.enabled:   # the detector-free configuration: nothing to train, say so
        reason = "skipped: detect.detector is none (this stage trains with the detector's landmarks)"
        log(f"finetune_real: {reason}")
        for p in (run_dir / "model.pt", run_dir / "last.ckpt", run_dir / "best.ckpt"):
            p.unlink(missing_ok=True)
        save_json(run_dir / "metrics.json", {"skipped": 1})
        save_json(run_dir / "summary.json", {"skipped": reason})
        return {"skipped": reason}
    if not available():
        raise DetectorUnavailable("finetune_real needs the face detector: pip install mediapipe==0.10.14 "
                                  "(part of `make setup`)")
    init_model = resolve(cfg.init) / "model.pt"
    if not init_model.exists():
        raise FileNotFoundError(f"{init_model} does not exist: finetune.init names the network the stage starts "
                                f"from; run `dvc repro` (it runs the stages in order)")
    run_dir.mkdir(parents=True, exist_ok=True)
    corpus_dir = resolve(params.synthesize.out_dir)
    corpus = Corpus.open(corpus_dir)
    size = int(corpus.meta["image_size"])
    if params.real.working_size(params.render.image_size) != size:
        raise ValueError(f"real.image_size differs from the corpus's {size} px: set real.image_size: 0")
    renderer = build_renderer(params, reflectance_path, image_size=size)

    train_cfg = dataclasses.replace(params.train, lr=cfg.lr, max_epochs=cfg.epochs, max_minutes=cfg.max_minutes)
    seed = (params.seed * 1_000_003 + SEED_SALT) % (2**31)
    photo_key = _digest({"seed": seed, "photos": cfg.photos, "val_photos": cfg.val_photos, "size": size,
                         "real": plain(params.real.to_dict()), "min_confidence": params.detect.min_confidence,
                         "code": [_file_digest(Path(__file__).with_name(m)) for m in ("detect.py", "real.py")]})
    train_key = {k: v for k, v in plain(train_cfg.to_dict()).items()
                 if k not in ("max_epochs", "max_minutes", "num_workers", "out_dir", "compare")}
    resume_key = _digest({"init": _file_digest(init_model), "photos": photo_key, "train": train_key,
                          "finetune": {k: v for k, v in cfg.to_dict().items() if k not in ("epochs", "max_minutes")},
                          "detect": params.detect.to_dict(), "corpus": corpus.meta.get("counts")})
    run_key = _digest({"resume": resume_key, "epochs": cfg.epochs, "minutes": cfg.max_minutes})
    finished, resume_from = prepare_run(run_dir, resume_key, run_key, cfg.epochs, "finetune_real", log)
    if finished is not None:
        return finished

    cache = run_dir / "landmarks.npz"
    real_set = None
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) == photo_key:
                real_set = {k: z[k] for k in ("crops", "targets", "val", "source", "name")}
                log(f"finetune: detector targets of {len(real_set['crops'])} photos reused from {cache}")
    if real_set is None:
        real_set = detect_photo_set(params, cfg.photos, cfg.val_photos, size, seed, log)
        save_npz(cache, key=np.array(photo_key), **real_set)

    net, info = load_network(init_model)
    pl.seed_everything(seed, workers=True, verbose=False)
    data = FinetuneDataModule(corpus_dir, real_set, train_cfg, params.seed + 101, cfg.real_batch_size,
                              pivot_cm=float(face_centre(renderer)[2]), real=params.real)
    loss = params.train.loss
    weights = face_weights(renderer) if train_cfg.loss_region == "face" else torch.ones(renderer.face_model.n_vertices)
    config = {**plain(train_cfg.to_dict()), "loss": loss, "net": info["net"]}
    module = RealFinetuneModule(config, renderer.layout.counts,
                                float(corpus.meta["render"]["distance_cm"]),
                                resume_key, renderer=renderer, finetune=cfg.to_dict(), detect=params.detect.to_dict(),
                                face_model=renderer.face_model, reflectance=renderer.reflectance,
                                vertex_weights=weights)
    module.net.load_state_dict(net.state_dict())
    module._set_parameter_loss(module.net.param_std)
    val = np.asarray(real_set["val"], bool)
    stats = {"photos_train": int((~val).sum()), "photos_val": int(val.sum()),
             "photos_sampled": int(cfg.photos + cfg.val_photos)}
    out_info = {**info, "loss": loss, "weights": "best val/loss", "finetune": "real photos, detector landmarks",
                "init": str(cfg.init)}
    extra = {"init": cfg.init, "loss": loss, "seed": params.seed, "resume_key": resume_key, "run_key": run_key,
             "photos": stats}
    return fit_and_export(module, data, run_dir, train_cfg, out_info, extra, resume_from=resume_from,
                          name="finetune_real", title="InverseFaceNet, fine-tuned on real photos (detector landmarks)",
                          extra_metrics={f"finetune_{k}": v for k, v in stats.items()}, log=log)


def main(argv=None) -> int:
    import argparse

    import yaml

    ap = argparse.ArgumentParser(description="Fine-tune InverseFaceNet on real photos (ifn.finetune.finetune_real)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    summary = finetune_real(args.params, overrides)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
