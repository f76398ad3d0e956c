"""The LightningModule: InverseFaceNet + its training loss + AdamW with a cosine schedule.

train.loss = "model_space"  ModelSpaceLoss (geometry cm^2, reflectance and illumination [0,1]^2 per vertex,
                            weighted by train.w_*), over the face part (train.loss_region "face", using the
                            corpus's stored shading grams, which were computed with the same weights) or the
                            whole render mesh ("all": the grams are recomputed from the ground truth, O(V))
                            + train.w_parameter x the ParameterLoss and + train.w_reprojection x the
                            ReprojectionLoss (named extra terms; 0 = off)
train.loss = "parameter"    ParameterLoss: per-entry squared error / (train split std)^2, averaged per group,
                            summed over the six groups (each group counts the same)

Validation and test ALWAYS compute, whatever the training loss, so the ablation compares like with like:
  <stage>/loss                 the training objective (what ModelCheckpoint monitors)
  <stage>/model_space          the weighted ModelSpaceLoss (train.w_*)
  <stage>/geometry, /reflectance, /illumination   its unweighted terms (means over the samples)
  <stage>/param_loss           the standardised ParameterLoss
  <stage>/reprojection         the landmark reprojection error (ReprojectionLoss, percent of the image side,
                               squared), when the module knows the camera's field of view
  <stage>/rmse_<group>         parameter-space RMSE per group in the parameters' own units
                               (shape/reflectance: std units of the model prior, expression: blendshape weight,
                               illumination: SH coefficient, rotation: rad, translation: cm)

Per-epoch values are also kept in `history` (list of plain dicts), stored in checkpoints, so curves and the
summary survive a resumed run.
"""
from __future__ import annotations

import math
import time
from typing import Any, Mapping

import pytorch_lightning as pl
import torch

from ..config import LOSSES, TrainConfig
from ..model.layout import ParamLayout
from .losses import TERMS, ModelSpaceLoss, ParameterLoss, ReprojectionLoss
from .nets import InverseFaceNet


def plain(obj: Any) -> Any:
    """Tuples -> lists, recursively (for hparams, JSON and weights_only checkpoints)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def build_network(net: Mapping[str, Any], n_params: int) -> InverseFaceNet:
    """InverseFaceNet from a NetConfig dict (params.yaml `train.net`)."""
    net = dict(net)
    return InverseFaceNet(n_params, input_size=int(net["input_size"]), blocks=tuple(net["blocks"]),
                          widths=tuple(net["widths"]), block=net["block"], stem=net["stem"],
                          stem_width=int(net["stem_width"]), dropout=float(net["dropout"]),
                          channels_last=bool(net.get("channels_last", False)),
                          input_zoom=float(net.get("input_zoom", 1.0)))


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    """LR factor per optimiser step: linear warm-up, then cosine from 1 to 0 at total_steps."""
    total_steps, warmup_steps = max(1, int(total_steps)), max(0, int(warmup_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return factor


class InverseFaceNetModule(pl.LightningModule):
    """InverseFaceNet trained with the model-space or the parameter loss.

    config        params.yaml `train` as a plain dict (TrainConfig.to_dict(); a TrainConfig is accepted too)
    layout        {"n_shape", "n_expression", "n_reflectance"} of the corpus's ParamLayout
    distance_cm   camera distance of the corpus (render.distance_cm)
    run_key       opaque string recorded in the hyperparameters (train() uses it to decide about resuming)
    face_model, reflectance   the linear models of the corpus's renderer (ifn.synth.build_renderer)
    vertex_weights            (V,) weights of the model-space loss (face part or ones)
    fov_deg                   the corpus camera's field of view (render.fov_deg): enables the reprojection
                              metric, and is required when train.w_reprojection > 0
    param_mean, param_std     (P,) statistics of the training split (the network's output scaling; the
                              parameter loss's scales)
    Only the first four arguments and fov_deg are saved as hyperparameters (plain values); the network's weights and its
    param_mean/param_std buffers are the module's whole state_dict.
    """

    def __init__(self, config: Mapping[str, Any] | TrainConfig, layout: Mapping[str, int], distance_cm: float = 100.0,
                 run_key: str = "", *, face_model=None, reflectance=None, vertex_weights: torch.Tensor | None = None,
                 param_mean: torch.Tensor | None = None, param_std: torch.Tensor | None = None,
                 fov_deg: float | None = None):
        super().__init__()
        if isinstance(config, TrainConfig):
            config = config.to_dict()
        config = plain(config)
        layout = {k: int(layout[k]) for k in ("n_shape", "n_expression", "n_reflectance")}
        self.save_hyperparameters({"config": config, "layout": layout, "distance_cm": float(distance_cm),
                                   "run_key": str(run_key),
                                   "fov_deg": None if fov_deg is None else float(fov_deg)})
        if config["loss"] not in LOSSES:
            raise ValueError(f"unknown loss {config['loss']!r}; one of {', '.join(LOSSES)}")
        if face_model is None or reflectance is None:
            raise ValueError("face_model and reflectance are required (ifn.synth.build_renderer(params))")
        self.config = config
        self.loss_name = config["loss"]
        self.layout = ParamLayout(**layout)
        self.net = build_network(config["net"], self.layout.size)
        if param_mean is not None and param_std is not None:
            self.net.set_param_stats(torch.as_tensor(param_mean).float(), torch.as_tensor(param_std).float())
        self.w_parameter = float(config.get("w_parameter", 0.0))  # older checkpoints have no such key
        self.w_reprojection = float(config.get("w_reprojection", 0.0))
        if self.w_reprojection > 0 and fov_deg is None:
            raise ValueError("train.w_reprojection > 0 needs the camera's fov_deg")
        self.reprojection = None if fov_deg is None else ReprojectionLoss(face_model, self.layout, fov_deg,
                                                                          distance_cm)
        self.use_stored_gram = config["loss_region"] == "face"
        self.model_space = ModelSpaceLoss(face_model, reflectance, self.layout, distance_cm,
                                          vertex_weights=vertex_weights, w_geometry=config["w_geometry"],
                                          w_reflectance=config["w_reflectance"],
                                          w_illumination=config["w_illumination"])
        self._set_parameter_loss(self.net.param_std)
        self.history: list[dict] = []
        self._train_sum = self._train_n = 0.0
        self._epoch_t0 = self._train_seconds = None
        self._eval: dict[str, torch.Tensor] = {}

    def _set_parameter_loss(self, scales: torch.Tensor) -> None:
        """ParameterLoss with per-entry scales = the training split's std (the network's param_std)."""
        scales = scales.detach().float().cpu()
        self.parameter = ParameterLoss(self.layout, scales={name: scales[sl] for name, sl in
                                                             self.layout.slices.items()}).to(self.net.param_std.device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    # -- losses -------------------------------------------------------------------------------------------
    def _gram(self, batch) -> torch.Tensor | None:
        return batch["shading_gram"].float() if self.use_stored_gram else None

    def _model_space(self, pred, target, batch) -> dict[str, torch.Tensor]:
        # Always in float32, outside bf16 autocast: the closed form sums terms of very different sizes.
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self.model_space(pred.float(), target.float(), self._gram(batch))

    def _parameter(self, pred, target) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self.parameter(pred.float(), target.float())

    def _reprojection(self, pred, target) -> torch.Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self.reprojection(pred.float(), target.float())

    def objective(self, pred, target, batch) -> dict[str, torch.Tensor]:
        """The training loss dict of this module's loss ("loss" + its terms). The model-space loss plus
        train.w_parameter x the parameter loss when that weight is positive (term "parameter"): the model-space
        loss alone does not tie a geometry to one parameter vector (shape and expression modes can imitate
        small head rotations), the parameter term does. Plus train.w_reprojection x the landmark reprojection
        error (term "reprojection"): the geometry term's value is mostly the head's depth, which the image
        hardly shows; the reprojection measures what it does show."""
        if self.loss_name == "model_space":
            out = self._model_space(pred, target, batch)
            if self.w_parameter > 0:
                par = self._parameter(pred, target)["loss"]
                out = {**out, "loss": out["loss"] + self.w_parameter * par, "parameter": par.detach()}
        else:
            out = self._parameter(pred, target)
        if self.w_reprojection > 0:
            rep = self._reprojection(pred, target)
            out = {**out, "loss": out["loss"] + self.w_reprojection * rep.mean(), "reprojection": rep.detach()}
        return out

    # -- training -----------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_sum = self._train_n = 0.0
        self._epoch_t0 = time.perf_counter()
        self._train_seconds = None

    def training_step(self, batch, batch_idx):
        pred = self.net(batch["image"])
        out = self.objective(pred, batch["params"], batch)
        b = pred.shape[0]
        self.log("train/loss", out["loss"], on_step=True, on_epoch=True, batch_size=b)
        for name, value in out.items():
            if name != "loss":
                self.log(f"train/{name}", value.mean(), on_step=False, on_epoch=True, batch_size=b)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False,
                 batch_size=b)
        self._train_sum += float(out["loss"].detach()) * b
        self._train_n += b
        return out["loss"]

    # -- evaluation ---------------------------------------------------------------------------------------
    def _eval_reset(self) -> None:
        self._eval = {}

    def _eval_step(self, batch) -> None:
        target = batch["params"].float()
        pred = self.net(batch["image"]).float()
        ms = self._model_space(pred, target, batch)
        pl_ = self._parameter(pred, target)
        own = ms["loss"] + self.w_parameter * pl_["loss"] if self.loss_name == "model_space" else pl_["loss"]
        sums = {}
        if self.reprojection is not None:
            rep = self._reprojection(pred, target)
            own = own + self.w_reprojection * rep.mean()
            sums["reprojection"] = rep.detach().sum()
        sums = {**sums, "n": torch.tensor(float(pred.shape[0])),
                "loss": own.detach() * pred.shape[0],
                "model_space": ms["loss"].detach() * pred.shape[0],
                "param_loss": pl_["loss"].detach() * pred.shape[0]}
        for term in TERMS:
            sums[term] = ms[term].detach().sum()
        sq = (pred - target).detach().pow(2)
        for name, sl in self.layout.slices.items():
            sums[f"sq_{name}"] = sq[:, sl].mean(-1).sum()
        for k, v in sums.items():
            v = v.to(torch.float64).cpu()
            self._eval[k] = self._eval[k] + v if k in self._eval else v

    def _eval_metrics(self) -> dict[str, float]:
        """Reduce the accumulated sums (across processes too) -> metric name -> value."""
        if not self._eval:
            return {}
        keys = sorted(self._eval)
        sums = torch.stack([self._eval[k] for k in keys]).to(self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum") if self._trainer else sums
        s = dict(zip(keys, sums.cpu().tolist()))
        n = max(s.pop("n"), 1.0)
        out = {k: v / n for k, v in s.items() if not k.startswith("sq_")}
        out.update({f"rmse_{k[3:]}": math.sqrt(v / n) for k, v in s.items() if k.startswith("sq_")})
        return out

    def _log_eval(self, stage: str) -> dict[str, float]:
        metrics = self._eval_metrics()
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", v, on_epoch=True, prog_bar=(k == "loss"))
        return metrics

    def on_validation_epoch_start(self) -> None:
        if self._epoch_t0 is not None and self._train_seconds is None and not self.trainer.sanity_checking:
            self._train_seconds = time.perf_counter() - self._epoch_t0
        self._eval_reset()

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        metrics = self._log_eval("val")
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit" or not metrics:
            return
        entry = {"epoch": int(self.current_epoch), "step": int(self.global_step),
                 "train_loss": self._train_sum / self._train_n if self._train_n else None,
                 "train_images": int(self._train_n), "train_seconds": self._train_seconds,
                 **{f"val_{k}": v for k, v in metrics.items()}}
        self.history = [h for h in self.history if h["epoch"] != entry["epoch"]] + [entry]

    def on_test_epoch_start(self) -> None:
        self._eval_reset()

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    # -- optimiser ----------------------------------------------------------------------------------------
    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.net.parameters():
            if p.requires_grad:
                (decay if p.ndim > 1 else no_decay).append(p)   # no weight decay on biases and norms
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.config["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.config["lr"])
        total = self.trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else 10_000
        warmup = min(100, max(1, total // 30))
        # A plain closure (not a callable object): LambdaLR does not store it in checkpoints, so a resumed run
        # with a longer max_epochs stretches the cosine to the new length.
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(total, warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ifn_history"] = plain(self.history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("ifn_history", []))
        std = checkpoint.get("state_dict", {}).get("net.param_std")
        if std is not None:  # the loss scales follow the restored statistics
            self._set_parameter_loss(std)
