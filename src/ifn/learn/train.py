"""Train InverseFaceNet on the synthetic corpus with one loss (stage train@<loss>).

    from ifn.learn.train import train, load_network
    summary = train("params.yaml", loss="model_space")       # -> models/train/model_space/...
    net, info = load_network("models/train/model_space/model.pt")

out_dir/<loss>/ (out_dir = train.out_dir unless given):
  last.ckpt, best.ckpt   Lightning checkpoints: the latest epoch (every epoch) and the best by val/loss
  logs/version_<n>/      CSVLogger metrics of each session (a resumed run starts a new version)
  model.pt               the best network for downstream use, a plain dict loadable with
                         torch.load(weights_only=True): state_dict (incl. the param_mean/param_std buffers),
                         net (train.net), layout (group sizes), image_size (corpus), loss, epoch
  summary.json           epochs, steps, seconds, images/s, best val loss, final val metrics, per-epoch history
                         (written last: its presence, with matching settings, marks a finished run)
  metrics.json           the flat numbers of summary.json (for `dvc metrics`): epochs, steps, train_seconds,
                         images_per_second, best_val_loss, best_epoch (0-based), val_<metric> of the last epoch
  curves.png             train/val loss and the val model-space terms per epoch

Resuming: when out_dir/<loss>/last.ckpt exists and was written with the same settings (everything except
train.max_epochs / max_minutes / num_workers / out_dir) and has not gone past max_epochs, training continues
from it (global step, optimiser,
schedule, epoch order and augmentation are restored; max_minutes counts the time of all sessions together).
Raising max_epochs of a finished run extends it the same way (the cosine is stretched to the new length from
the current step on). A finished run whose summary.json matches all settings is not re-run. A checkpoint
written with other settings is deleted and training starts afresh.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from ..atomic import atomic_path, save_figure, save_json
from ..config import LOSSES, ParamsError, load_params
from ..corpus import Corpus
from ..paths import resolve
from .module import InverseFaceNetModule, build_network, plain

REFLECTANCE_PATH = "models/face_model/reflectance.npz"
# train.* keys that do not change what is being trained (may differ when resuming).
RUN_LENGTH_KEYS = ("max_epochs", "max_minutes")
IRRELEVANT_KEYS = ("num_workers", "out_dir", "compare", "loss")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(plain(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_keys(params, loss: str, corpus_meta: Mapping[str, Any]) -> tuple[str, str]:
    """(resume_key, run_key): what must match to resume a checkpoint / to reuse a finished run."""
    cfg = plain(params.train.to_dict())
    for k in IRRELEVANT_KEYS:
        cfg.pop(k, None)
    length = {k: cfg.pop(k) for k in RUN_LENGTH_KEYS}
    base = {"loss": loss, "seed": params.seed, "train": cfg, "reflectance": params.reflectance.to_dict(),
            "corpus": {k: v for k, v in corpus_meta.items() if k != "seconds"}}
    if params.train.augment.photo_background_prob > 0:   # the background photos come from params `real`
        base["real"] = {k: v for k, v in params.real.to_dict().items() if k in ("root", "sources", "heldout_fraction",
                                                                                  "max_side")}
    resume_key = _digest(base)
    return resume_key, _digest({"resume_key": resume_key, **length})


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # older Lightning objects in the checkpoint: our own file, so a full load is fine
        return torch.load(path, map_location="cpu", weights_only=False)


def _net_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {k[len("net."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}


def load_network(path: str | Path, map_location: str | torch.device = "cpu"):
    """model.pt -> (InverseFaceNet in eval mode, info dict: net, layout, image_size, loss, epoch, ...)."""
    blob = torch.load(resolve(path), map_location=map_location, weights_only=True)
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    net = build_network(info["net"], sum(int(v) for v in info["layout"].values()))
    net.load_state_dict(blob["state_dict"])
    return net.eval(), info


def save_network(path: Path, state_dict: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Path:
    blob = {"state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()}, **plain(info)}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path:
    """curves.png: train/val loss, then val geometry / reflectance / illumination / landmark reprojection per epoch
    (log scale where a panel spans decades)."""
    from matplotlib.figure import Figure  # no pyplot: independent of the backend, safe in notebooks

    fig = Figure(figsize=(16, 3.4))
    axes = fig.subplots(1, 5)
    epochs = [h["epoch"] + 1 for h in history]

    def series(key):
        return [h.get(key) if h.get(key) is not None else float("nan") for h in history]

    def positive(values):
        return all(v > 0 for v in values if v == v)

    ax = axes[0]
    ax.plot(epochs, series("train_loss"), "o-", label="train (epoch mean)")
    ax.plot(epochs, series("val_loss"), "s-", label="val")
    ax.set_title("loss (training objective)")
    ax.legend(fontsize=8)
    panels = [("val_geometry", "val geometry (cm$^2$)"), ("val_reflectance", "val reflectance ([0,1]$^2$)"),
              ("val_illumination", "val illumination ([0,1]$^2$)"),
              ("val_reprojection", "val landmark reprojection (% of side)$^2$")]
    for ax, (key, label) in zip(axes[1:], panels):
        ax.plot(epochs, series(key), "o-", color="C2")
        ax.set_title(label)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        values = [v for ln in ax.get_lines() for v in ln.get_ydata() if v == v]
        if values and positive(values) and max(values) > 10 * min(values):   # log only when it spans decades
            ax.set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _summarise(history: list[dict]) -> dict:
    out: dict[str, Any] = {}
    secs = sum(h["train_seconds"] or 0.0 for h in history)
    imgs = sum(h["train_images"] or 0 for h in history)
    out["train_seconds"] = secs
    out["images_per_second"] = imgs / secs if secs > 0 else None
    val = [h for h in history if h.get("val_loss") is not None]
    if val:
        best = min(val, key=lambda h: h["val_loss"])
        out["best_val_loss"], out["best_epoch"] = best["val_loss"], best["epoch"]
        out["final_val"] = {k[4:]: v for k, v in val[-1].items() if k.startswith("val_")}
    return out


def train(params_file: str | Path = "params.yaml", loss: str | None = None, corpus_dir: str | Path | None = None,
          out_dir: str | Path | None = None, reflectance_path: str | Path = REFLECTANCE_PATH,
          overrides: Mapping[str, Any] | None = None, fast_dev_run: bool | int = False, log=print) -> dict:
    """Train with `loss` (default train.loss) on the corpus (default synthesize.out_dir); see the module
    docstring for outputs and resuming. `overrides` maps dotted params keys to values
    ({"train.max_epochs": 1}). fast_dev_run: one batch of training and validation through the whole code
    path, nothing written. Returns the summary (as written to summary.json)."""
    import pytorch_lightning as pl

    from ..synth import build_renderer, face_centre, face_weights
    from .data import CorpusDataModule

    params = load_params(resolve(params_file), overrides)
    cfg = params.train
    loss = loss or cfg.loss
    if loss not in LOSSES:
        raise ParamsError(f"loss = {loss!r} is invalid: one of {' | '.join(LOSSES)}")
    corpus_dir = resolve(corpus_dir or params.synthesize.out_dir)
    run_dir = resolve(out_dir or cfg.out_dir) / loss
    corpus = Corpus.open(corpus_dir)
    meta = corpus.meta

    renderer = build_renderer(params, reflectance_path)
    if dict(meta["layout"]) != dict(renderer.layout.sizes):
        raise ValueError(f"corpus {corpus_dir} has parameter layout {meta['layout']}, params.yaml gives "
                         f"{renderer.layout.sizes}: re-synthesize the corpus or use the params it was made with")
    if plain(meta.get("face_model", {})) != plain(params.face_model.to_dict()):
        raise ValueError(f"corpus {corpus_dir} was rendered with face_model {meta.get('face_model')}, "
                         f"params.yaml has {params.face_model.to_dict()}")

    resume_key, run_key = run_keys(params, loss, meta)
    resume_from = None
    if not fast_dev_run:
        finished, resume_from = prepare_run(run_dir, resume_key, run_key, cfg.max_epochs, f"train[{loss}]", log)
        if finished is not None:
            return finished

    pl.seed_everything(params.seed, workers=True, verbose=False)
    data = CorpusDataModule(corpus_dir, cfg, params.seed, pivot_cm=float(face_centre(renderer)[2]),
                            real=params.real)
    mean, std = data.param_stats()
    weights = face_weights(renderer) if cfg.loss_region == "face" else torch.ones(renderer.face_model.n_vertices)
    config = plain(cfg.to_dict())
    config["loss"] = loss
    module = InverseFaceNetModule(config, renderer.layout.counts,
                                  float(meta.get("render", {}).get("distance_cm", params.render.distance_cm)),
                                  resume_key, face_model=renderer.face_model, reflectance=renderer.reflectance,
                                  vertex_weights=weights, param_mean=mean, param_std=std, fov_deg=renderer.camera.fov_deg)
    module.net.set_param_range(*data.param_range())

    info = {"net": plain(cfg.net.to_dict()), "layout": dict(renderer.layout.sizes),
            "image_size": int(meta["image_size"]), "loss": loss, "weights": "best val/loss", "seed": params.seed}
    extra = {"loss": loss, "image_size": int(meta["image_size"]), "corpus": str(corpus_dir), "seed": params.seed,
             "resume_key": resume_key, "run_key": run_key}
    return fit_and_export(module, data, run_dir, cfg, info, extra, resume_from=resume_from,
                          fast_dev_run=fast_dev_run, name=f"train[{loss}]", title=f"InverseFaceNet, {loss} loss",
                          log=log)


def prepare_run(run_dir: Path, resume_key: str, run_key: str, max_epochs: int, name: str = "train",
                log=print) -> tuple[dict | None, Path | None]:
    """Decide what to do with an existing run folder: (summary of a finished run with the same run_key, to be
    reused as is | None, last.ckpt to resume from | None). Files of runs that cannot be continued are removed,
    and the files a finished run writes last are removed until this run finishes (see the module docstring)."""
    summary_path, last = run_dir / "summary.json", run_dir / "last.ckpt"
    if summary_path.exists() and (run_dir / "model.pt").exists():
        old = json.loads(summary_path.read_text())
        if old.get("run_key") == run_key:
            log(f"{name}: finished run with the same settings in {run_dir} (summary.json): not re-run")
            return old, None
    resume_from = None
    if last.exists():
        try:
            ck = _load_checkpoint(last)
            same = ck.get("hyper_parameters", {}).get("run_key") == resume_key
            done = int(ck.get("epoch", -1)) + 1
            where = f"{done} epochs, step {ck.get('global_step', '?')}"
            del ck
        except Exception as err:  # unreadable: start afresh
            same, done, where = False, 0, f"unreadable: {err}"
        if same and done <= max_epochs:
            resume_from = last
            log(f"{name}: resuming from {last} ({where} done)")
        elif same:
            log(f"{name}: {last} is already past max_epochs = {max_epochs} ({where}): starting afresh")
        else:
            log(f"{name}: {last} was written with other settings ({where}): starting afresh")
    if resume_from is None:  # a fresh run: nothing of an older one may be mixed in
        for p in [last, run_dir / "best.ckpt"]:
            p.unlink(missing_ok=True)
        shutil.rmtree(run_dir / "logs", ignore_errors=True)
    for p in (summary_path, run_dir / "model.pt", run_dir / "curves.png", run_dir / "metrics.json"):
        p.unlink(missing_ok=True)  # stale until this run finishes
    return None, resume_from


def fit_and_export(module, data, run_dir: Path, cfg, info: Mapping[str, Any], extra: Mapping[str, Any],
                   resume_from: Path | None = None, fast_dev_run: bool | int = False, name: str = "train",
                   title: str = "", extra_metrics: Mapping[str, Any] | None = None, log=print) -> dict:
    """Fit `module` on `data` with the Trainer settings of `cfg` (a TrainConfig: accelerator, devices, strategy,
    precision, max_epochs, max_minutes, batch_size), checkpointing into run_dir; then export model.pt (the best
    network by val/loss, with `info`), curves.png, metrics.json and summary.json (with `extra`; written last).
    Returns the summary."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    last = run_dir / "last.ckpt"
    n_train = data.train_size()
    steps_per_epoch = max(1, n_train // cfg.batch_size)
    ckpt = ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1,
                           save_last=True, every_n_epochs=1, enable_version_counter=False, auto_insert_metric_name=False)
    trainer = pl.Trainer(
        accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy, precision=cfg.precision,
        max_epochs=cfg.max_epochs, max_time={"minutes": cfg.max_minutes}, fast_dev_run=fast_dev_run,
        logger=CSVLogger(run_dir, name="logs"), callbacks=[ckpt], enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=max(1, min(50, steps_per_epoch)),
        num_sanity_val_steps=1, default_root_dir=run_dir, use_distributed_sampler=False)  # EpochSampler shards
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 with torch 2.13
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - t0
    if trainer.interrupted:
        raise RuntimeError(f"training was interrupted; run again to resume from {last}")

    history = module.history
    summary: dict[str, Any] = {
        "epochs": int(trainer.current_epoch), "max_epochs": cfg.max_epochs,
        "steps": int(trainer.global_step), "wall_seconds": wall,
        "stopped_by_time": bool(trainer.current_epoch < cfg.max_epochs and not fast_dev_run),
        "resumed_from": str(resume_from) if resume_from else None,
        **_summarise(history),
        "n_train": n_train, "precision": cfg.precision, "batch_size": cfg.batch_size,
        **plain(dict(extra)), "history": history,
    }
    if fast_dev_run:
        summary["fast_dev_run"] = True
        summary["train_loss"] = float(trainer.callback_metrics.get("train/loss_epoch", float("nan")))
        summary["val"] = {k[4:]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        return summary

    # The exported network: the best checkpoint by val/loss (the last weights if there is none).
    state, epoch = module.net.state_dict(), int(trainer.current_epoch) - 1
    best_path = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    if best_path is not None and best_path.exists():
        ck = _load_checkpoint(best_path)
        state, epoch = _net_state(ck), int(ck.get("epoch", epoch))
    save_network(run_dir / "model.pt", state, {**info, "epoch": epoch})
    summary["model_epoch"] = epoch
    if history:
        plot_curves(history, run_dir / "curves.png", title=title)
    metrics = {k: summary[k] for k in ("epochs", "steps", "train_seconds", "images_per_second", "best_val_loss",
                                       "best_epoch") if summary.get(k) is not None}
    metrics.update({f"val_{k}": v for k, v in summary.get("final_val", {}).items()})
    metrics.update(plain(dict(extra_metrics or {})))
    save_json(run_dir / "metrics.json", metrics)
    save_json(run_dir / "summary.json", summary)   # last: its presence marks a finished run
    log(f"{name}: {summary['epochs']} epochs, {summary['steps']} steps in {wall:.0f} s"
        + (f", {summary['images_per_second']:.0f} images/s" if summary.get("images_per_second") else "")
        + (f", best val loss {summary['best_val_loss']:.4g} (epoch {summary['best_epoch'] + 1})"
           if "best_val_loss" in summary else "") + f" -> {run_dir}")
    return summary


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Train InverseFaceNet (ifn.learn.train.train)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--loss", choices=LOSSES, default=None)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--reflectance", default=REFLECTANCE_PATH)
    ap.add_argument("--fast-dev-run", action="store_true")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params key, e.g. -S train.max_epochs=1 (value parsed as YAML)")
    args = ap.parse_args(argv)
    import yaml
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    summary = train(args.params, args.loss, args.corpus, args.out, args.reflectance, overrides, args.fast_dev_run)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
