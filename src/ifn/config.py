"""Typed, validated views of params.yaml.

Each stage reads its own section into a frozen dataclass. Every field carries its allowed range or choices
in its metadata, so an invalid value fails with one line naming the key and what is allowed, e.g.

    ifn.config.ParamsError: params.yaml: face_model.n_shape = 500 is invalid: an integer in [1, 100]

Unknown keys are errors too (a typo in params.yaml must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml


class ParamsError(ValueError):
    """A params.yaml value is missing, unknown or out of range."""


def _num(lo=-math.inf, hi=math.inf, *, integer=False, doc=""):
    return {"lo": lo, "hi": hi, "integer": integer, "doc": doc}


def _choice(*choices, doc=""):
    return {"choices": choices, "doc": doc}


def param(default, **meta):
    """A dataclass field with validation metadata (see `_num`, `_choice`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check(section: str, name: str, value: Any, meta: Mapping[str, Any]) -> Any:
    key = f"{section}.{name}" if section else name
    if "choices" in meta:
        if value not in meta["choices"]:
            allowed = " | ".join(map(str, meta["choices"]))
            raise ParamsError(f"params.yaml: {key} = {value!r} is invalid: one of {allowed}")
        return value
    if "lo" in meta:
        lo, hi, integer = meta["lo"], meta["hi"], meta["integer"]
        kind = "an integer" if integer else "a number"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and integer:
            ok = float(value).is_integer()
        if ok:
            ok = lo <= value <= hi and math.isfinite(float(value))
        if not ok:
            raise ParamsError(f"params.yaml: {key} = {value!r} is invalid: {kind} in [{lo}, {hi}]")
        return int(value) if integer else float(value)
    if "list_of" in meta:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"params.yaml: {key} = {value!r} is invalid: a list")
        return tuple(_check(section, f"{name}[{i}]", v, meta["list_of"]) for i, v in enumerate(value))
    return value


class Section:
    """Mixin: build a validated dataclass from a mapping."""

    SECTION = ""

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, section: str | None = None):
        section = cls.SECTION if section is None else section
        raw = dict(raw or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ParamsError(
                f"params.yaml: unknown key {section}.{unknown[0]} (known: {', '.join(sorted(known))})")
        values = {}
        for name, f in known.items():
            if name in raw:
                values[name] = _check(section, name, raw[name], f.metadata)
        obj = cls(**values)
        obj.validate()
        return obj

    def validate(self) -> None:  # cross-field checks; override where needed
        pass

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


REGIONS = ("face", "narrow_face", "full", "all")


@dataclass(frozen=True)
class FaceModelConfig(Section):
    """Section `face_model`: which geometry model and which part of it."""

    SECTION = "face_model"
    path: str = param("data/face_model/ict_face_light.npz", doc="model file, relative to the project root")
    region: str = param("full", **_choice(*REGIONS))
    n_shape: int = param(80, **_num(1, 100, integer=True))
    n_expression: int = param(53, **_num(0, 53, integer=True))
    landmarks: str = param("calibrated", **_choice("calibrated", "ict"))


@dataclass(frozen=True)
class ReflectanceConfig(Section):
    """Section `reflectance`: the project's own skin albedo PCA model (see ifn.model.reflectance)."""

    SECTION = "reflectance"
    n_samples: int = param(1500, **_num(100, 100000, integer=True))
    n_components: int = param(80, **_num(1, 500, integer=True))
    heldout_fraction: float = param(0.1, **_num(0.01, 0.5))
    noise_scale: float = param(1.0, **_num(0.0, 5.0))

    def validate(self):
        n_train = int(round(self.n_samples * (1 - self.heldout_fraction)))
        if self.n_components >= n_train:
            raise ParamsError(
                f"params.yaml: reflectance.n_components = {self.n_components} is invalid: "
                f"must be below the number of training samples ({n_train})")


@dataclass(frozen=True)
class RenderConfig(Section):
    """Section `render`: camera intrinsics and image size shared by every stage."""

    SECTION = "render"
    image_size: int = param(128, **_num(16, 1024, integer=True))
    fov_deg: float = param(13.0, **_num(1.0, 90.0))
    distance_cm: float = param(100.0, **_num(10.0, 1000.0))
    cull_backfaces: bool = param(True, **_choice(True, False))
    clamp_albedo: bool = param(True, **_choice(True, False))
    compile: bool = param(True, **_choice(True, False))
    backend: str = param("auto", **_choice("auto", "numba", "torch"))


@dataclass(frozen=True)
class PriorConfig(Section):
    """Section `synthesize.prior`: the distributions synthetic parameters are drawn from (ifn.model.priors)."""

    SECTION = "synthesize.prior"
    shape_sigma: float = param(1.0, **_num(0.0, 3.0))
    reflectance_sigma: float = param(1.0, **_num(0.0, 3.0))
    expression_active_prob: float = param(0.08, **_num(0.0, 1.0))
    expression_max: float = param(0.8, **_num(0.0, 1.0))
    jaw_open_prob: float = param(0.35, **_num(0.0, 1.0))
    ambient_mean: float = param(0.75, **_num(0.0, 3.0))
    ambient_std: float = param(0.2, **_num(0.0, 1.0))
    light_strength_max: float = param(2.5, **_num(0.0, 10.0))
    harsh_light_prob: float = param(0.15, **_num(0.0, 1.0))
    light_tint_std: float = param(0.08, **_num(0.0, 0.5))
    yaw_max_deg: float = param(80.0, **_num(0.0, 90.0))
    pitch_std_deg: float = param(12.0, **_num(0.0, 45.0))
    pitch_max_deg: float = param(35.0, **_num(0.0, 89.0))
    roll_std_deg: float = param(10.0, **_num(0.0, 45.0))
    roll_max_deg: float = param(25.0, **_num(0.0, 89.0))
    translate_xy_cm: float = param(1.5, **_num(0.0, 20.0))
    translate_z_cm: float = param(10.0, **_num(0.0, 50.0))
    hair_prob: float = param(0.0, **_num(0.0, 1.0))
    hair_low_cm: float = param(-5.0, **_num(-20.0, 10.0))
    brow_prob: float = param(0.0, **_num(0.0, 1.0))
    long_hair_prob: float = param(0.0, **_num(0.0, 1.0))


FRAMINGS = ("landmark_box", "centroid")


@dataclass(frozen=True)
class FramingConfig(Section):
    """Section `synthesize.framing`: where the face sits in a synthetic image (ifn.framing)."""

    SECTION = "synthesize.framing"
    mode: str = param("centroid", **_choice(*FRAMINGS))
    size: float = param(0.683, **_num(0.05, 2.0))
    size_jitter: float = param(0.03, **_num(0.0, 0.5))
    centre_y: float = param(0.03, **_num(-0.5, 0.5))
    centre_jitter: float = param(0.03, **_num(0.0, 0.5))


BACKGROUNDS = ("solid", "gradient", "noise", "texture")


@dataclass(frozen=True)
class SynthesizeConfig(Section):
    """Section `synthesize`: the synthetic training corpus (ifn.synth)."""

    SECTION = "synthesize"
    n_train: int = param(8000, **_num(1, 10_000_000, integer=True))
    n_val: int = param(512, **_num(1, 1_000_000, integer=True))
    n_test: int = param(512, **_num(1, 1_000_000, integer=True))
    shard_size: int = param(1024, **_num(1, 100_000, integer=True))
    render_batch: int = param(64, **_num(1, 4096, integer=True))
    backgrounds: tuple = param(list(BACKGROUNDS), list_of=_choice(*BACKGROUNDS))
    out_dir: str = param("outputs/corpus")
    prior: PriorConfig = param(PriorConfig())
    framing: FramingConfig = param(FramingConfig())

    @classmethod
    def from_dict(cls, raw, section=None):
        raw = dict(raw or {})
        prior = PriorConfig.from_dict(raw.pop("prior", None))
        framing = FramingConfig.from_dict(raw.pop("framing", None))
        obj = super().from_dict(raw, section)
        return dataclasses.replace(obj, prior=prior, framing=framing)

    def validate(self):
        if not self.backgrounds:
            raise ParamsError("params.yaml: synthesize.backgrounds is invalid: at least one of "
                              + " | ".join(BACKGROUNDS))


LOSSES = ("model_space", "parameter")


@dataclass(frozen=True)
class NetConfig(Section):
    """Section `train.net`: the encoder (ifn.learn.nets.InverseFaceNet)."""

    SECTION = "train.net"
    input_size: int = param(96, **_num(32, 512, integer=True))
    blocks: tuple = param([1, 1, 1, 1], list_of=_num(1, 64, integer=True))
    widths: tuple = param([32, 64, 128, 256], list_of=_num(4, 4096, integer=True))
    block: str = param("basic", **_choice("basic", "bottleneck"))
    stem: str = param("small", **_choice("small", "imagenet"))
    stem_width: int = param(32, **_num(4, 512, integer=True))
    dropout: float = param(0.0, **_num(0.0, 0.9))
    channels_last: bool = param(True, **_choice(True, False))
    input_zoom: float = param(1.0, **_num(1.0, 2.0))

    def validate(self):
        if len(self.blocks) != len(self.widths):
            raise ParamsError(f"params.yaml: train.net.blocks has {len(self.blocks)} entries but "
                              f"train.net.widths has {len(self.widths)}: they must match")


@dataclass(frozen=True)
class AugmentConfig(Section):
    """Section `train.augment`: image augmentation of synthetic training samples (ifn.learn.data)."""

    SECTION = "train.augment"
    color_jitter: float = param(0.15, **_num(0.0, 1.0))
    blur_prob: float = param(0.3, **_num(0.0, 1.0))
    noise_std: float = param(0.02, **_num(0.0, 0.5))
    crop_jitter: float = param(0.04, **_num(0.0, 0.3))
    photo_background_prob: float = param(0.0, **_num(0.0, 1.0))
    background_photos: int = param(1024, **_num(1, 100000, integer=True))
    gray_prob: float = param(0.0, **_num(0.0, 1.0))
    border_prob: float = param(0.0, **_num(0.0, 1.0))
    face_only_prob: float = param(0.0, **_num(0.0, 1.0))
    contrast_boost: float = param(1.0, **_num(1.0, 10.0))


@dataclass(frozen=True)
class TrainConfig(Section):
    """Section `train`: the LightningModule, its losses and the Lightning Trainer (ifn.learn)."""

    SECTION = "train"
    loss: str = param("model_space", **_choice(*LOSSES))
    compare: tuple = param(list(LOSSES), list_of=_choice(*LOSSES))
    loss_region: str = param("face", **_choice("face", "all"))
    w_geometry: float = param(10.0, **_num(0.0, 1e6))
    w_reflectance: float = param(3000.0, **_num(0.0, 1e6))
    w_illumination: float = param(300.0, **_num(0.0, 1e6))
    w_parameter: float = param(0.0, **_num(0.0, 1e6))
    w_reprojection: float = param(0.0, **_num(0.0, 1e6))
    batch_size: int = param(64, **_num(1, 4096, integer=True))
    lr: float = param(2e-3, **_num(1e-7, 1.0))
    weight_decay: float = param(1e-4, **_num(0.0, 1.0))
    max_epochs: int = param(6, **_num(1, 10000, integer=True))
    max_minutes: float = param(14.0, **_num(0.1, 100000.0))
    accelerator: str = param("auto", **_choice("auto", "cpu", "gpu", "cuda", "mps"))
    devices: Any = param("auto")
    strategy: str = param("auto", **_choice("auto", "ddp", "ddp_spawn", "fsdp", "deepspeed", "single_device"))
    precision: str = param("32", **_choice("32", "32-true", "bf16-mixed", "16-mixed", "64"))
    num_workers: int = param(0, **_num(0, 64, integer=True))
    out_dir: str = param("models/train")
    net: NetConfig = param(NetConfig())
    augment: AugmentConfig = param(AugmentConfig())

    @classmethod
    def from_dict(cls, raw, section=None):
        raw = dict(raw or {})
        if isinstance(raw.get("precision"), int) and not isinstance(raw.get("precision"), bool):
            raw["precision"] = str(raw["precision"])  # YAML reads `precision: 32` as a number
        net = NetConfig.from_dict(raw.pop("net", None))
        augment = AugmentConfig.from_dict(raw.pop("augment", None))
        return dataclasses.replace(super().from_dict(raw, section), net=net, augment=augment)

    def validate(self):
        ok = self.devices == "auto" or (isinstance(self.devices, int) and not isinstance(self.devices, bool)
                                         and self.devices >= 1) or (
            isinstance(self.devices, (list, tuple)) and all(isinstance(d, int) for d in self.devices))
        if not ok:
            raise ParamsError(f"params.yaml: train.devices = {self.devices!r} is invalid: auto, a count >= 1 "
                              f"or a list of device ids")
        if not self.compare:
            raise ParamsError("params.yaml: train.compare is invalid: list at least one loss")


# -- real photos, refinement, breeding, real-image evaluation (issue 4) ---------------------------------------

REAL_SOURCES = ("aflw", "utkface", "celeba")   # folders of data/real (framing per source: ifn.real)
ROBUST = ("huber", "l1", "l2")                 # robust penalties of the refinement's photometric term
FIT_GROUPS = ("shape", "expression", "reflectance", "illumination", "rotation", "translation")  # ifn.fit.GROUPS


@dataclass(frozen=True)
class RealConfig(Section):
    """Section `real`: the unlabelled real photos (ifn.real); framing constants are documented there."""

    SECTION = "real"
    root: str = param("data/real")
    sources: tuple = param(list(REAL_SOURCES), list_of=_choice(*REAL_SOURCES))
    heldout_fraction: float = param(0.05, **_num(0.0, 0.5))
    image_size: int = param(0, **_num(0, 1024, integer=True))
    max_side: int = param(4096, **_num(64, 65536, integer=True))
    roi_scale: float = param(1.0, **_num(0.3, 4.0))
    roi_shift_y: float = param(-0.03, **_num(-0.5, 0.5))

    def validate(self):
        if not self.sources:
            raise ParamsError("params.yaml: real.sources is invalid: at least one of " + " | ".join(REAL_SOURCES))
        if 0 < self.image_size < 16:
            raise ParamsError(f"params.yaml: real.image_size = {self.image_size} is invalid: 0 (= render.image_size) "
                              f"or an integer in [16, 1024]")

    def working_size(self, render_image_size: int) -> int:
        return self.image_size or render_image_size


@dataclass(frozen=True)
class RefineConfig(Section):
    """Section `refine`: analysis-by-synthesis refinement of network predictions and the optimisation-only
    baseline (ifn.fit)."""

    SECTION = "refine"
    steps: int = param(30, **_num(0, 100000, integer=True))
    lr: float = param(0.04, **_num(1e-6, 1.0))
    w_photo: float = param(1.0, **_num(0.0, 1e6))
    w_landmark: float = param(0.0, **_num(0.0, 1e6))
    w_shape_prior: float = param(1e-4, **_num(0.0, 1e6))
    w_reflectance_prior: float = param(1e-4, **_num(0.0, 1e6))
    w_expression_prior: float = param(1e-3, **_num(0.0, 1e6))
    robust: str = param("huber", **_choice(*ROBUST))
    huber_delta: float = param(0.1, **_num(1e-4, 1.0))
    w_edge: float = param(1.0, **_num(0.0, 1e6))
    w_translation_prior: float = param(0.1, **_num(0.0, 1e6))
    anchor_translation: bool = param(True, **_choice(True, False))
    baseline_steps: int = param(100, **_num(0, 100000, integer=True))
    baseline_coarse_fraction: float = param(0.3, **_num(0.0, 1.0))
    batch_size: int = param(16, **_num(1, 4096, integer=True))
    fit_size: int = param(0, **_num(0, 1024, integer=True))
    fit_region: str = param("all", **_choice("all", "face"))

    def validate(self):
        if 0 < self.fit_size < 16:
            raise ParamsError(f"params.yaml: refine.fit_size = {self.fit_size} is invalid: 0 (= the photos' size) "
                              f"or an integer in [16, 1024]")

    def refine_kwargs(self) -> dict:
        """Keyword arguments of ifn.fit.refine."""
        return {k: getattr(self, k) for k in (
            "steps", "lr", "w_photo", "w_landmark", "w_shape_prior", "w_reflectance_prior", "w_expression_prior",
            "w_translation_prior", "anchor_translation", "robust", "huber_delta", "w_edge", "fit_size", "fit_region")}

    def baseline_kwargs(self) -> dict:
        """Keyword arguments of ifn.fit.fit_from_mean (the optimisation-only baseline)."""
        return {**self.refine_kwargs(), "steps": self.baseline_steps,
                "coarse_fraction": self.baseline_coarse_fraction}


@dataclass(frozen=True)
class PerturbConfig(Section):
    """Section `breed.perturb`: std of the Gaussian perturbation of each group of a refined real-photo estimate
    before it is re-rendered as a new training sample (ifn.breed)."""

    SECTION = "breed.perturb"
    shape: float = param(0.3, **_num(0.0, 3.0))            # identity weights, prior std units
    expression: float = param(0.1, **_num(0.0, 1.0))       # blendshape weights (then clamped to [0, 1])
    reflectance: float = param(0.3, **_num(0.0, 3.0))      # albedo weights, prior std units
    illumination: float = param(0.15, **_num(0.0, 2.0))    # relative: SH coefficients x (1 + N(0, this))
    rotation_deg: float = param(5.0, **_num(0.0, 45.0))    # yaw, pitch, roll, degrees
    translation_cm: float = param(0.5, **_num(0.0, 10.0))  # x, y, z, centimetres


@dataclass(frozen=True)
class BreedConfig(Section):
    """Section `breed`: self-supervised bootstrapping rounds on real photos (ifn.breed, stages breed@<round>)."""

    SECTION = "breed"
    rounds: Any = param({"round_1": "models/train/model_space", "round_2": "models/breed/round_1"})
    guided_rounds: Any = param({"guided_1": "models/train/model_space", "guided_2": "models/breed/guided_1"})
    out_dir: str = param("models/breed")
    photos_per_round: int = param(256, **_num(1, 10_000_000, integer=True))
    refine_steps: int = param(30, **_num(0, 100000, integer=True))
    refine_groups: tuple = param(["shape", "expression", "reflectance", "illumination"], list_of=_choice(*FIT_GROUPS))
    variants_per_photo: int = param(4, **_num(1, 1000, integer=True))
    mix_fraction: float = param(0.5, **_num(0.0, 1.0))
    epoch_size: int = param(4096, **_num(1, 10_000_000, integer=True))
    finetune_epochs: int = param(2, **_num(1, 10000, integer=True))
    lr: float = param(5e-4, **_num(1e-7, 1.0))
    lr_decay: float = param(0.5, **_num(1e-3, 1.0))
    max_landmark_shift: float = param(0.0, **_num(0.0, 1.0))
    max_minutes: float = param(5.0, **_num(0.1, 100000.0))
    landmarks: str = param("none", **_choice("none", "mediapipe"))
    looks: bool = param(True, **_choice(True, False))
    self_training_photos: int = param(2048, **_num(0, 10_000_000, integer=True))
    perturb: PerturbConfig = param(PerturbConfig())

    @classmethod
    def from_dict(cls, raw, section=None):
        raw = dict(raw or {})
        perturb = PerturbConfig.from_dict(raw.pop("perturb", None))
        return dataclasses.replace(super().from_dict(raw, section), perturb=perturb)

    def validate(self):
        if not self.refine_groups:
            raise ParamsError("params.yaml: breed.refine_groups is invalid: at least one of "
                              f"{', '.join(FIT_GROUPS)} (refine_steps: 0 switches refinement off)")
        rounds = self.rounds
        if not isinstance(rounds, Mapping) or not rounds:
            raise ParamsError(f"params.yaml: breed.rounds = {rounds!r} is invalid: a mapping round name -> folder "
                              f"of the network it fine-tunes (e.g. round_1: models/train/model_space)")
        if not isinstance(self.guided_rounds, Mapping):
            raise ParamsError(f"params.yaml: breed.guided_rounds = {self.guided_rounds!r} is invalid: a mapping "
                              f"round name -> folder of the network it fine-tunes ({{}}: none)")
        for key, chain in (("rounds", rounds), ("guided_rounds", self.guided_rounds)):
            names = list(chain)
            for i, (name, previous) in enumerate(chain.items()):
                if not isinstance(name, str) or not name.replace("_", "").isalnum():
                    raise ParamsError(f"params.yaml: breed.{key} key {name!r} is invalid: letters, digits and _")
                if i and previous != f"{self.out_dir}/{names[i - 1]}":
                    raise ParamsError(f"params.yaml: breed.{key}.{name} = {previous!r} is invalid: round {i + 1} "
                                      f"must start from its predecessor, {self.out_dir}/{names[i - 1]}")
        both = sorted(set(rounds) & set(self.guided_rounds))
        if both:
            raise ParamsError(f"params.yaml: breed.guided_rounds.{both[0]} is invalid: also a key of breed.rounds "
                              f"(the two chains write different folders)")

    @property
    def names(self) -> tuple[str, ...]:
        """The detector-free chain (breed.rounds), in order."""
        return tuple(self.rounds)

    @property
    def guided_names(self) -> tuple[str, ...]:
        """The detector-guided chain (breed.guided_rounds), in order."""
        return tuple(self.guided_rounds)

    def chain(self, name: str) -> tuple[str, ...]:
        """The rounds of the chain that round `name` belongs to, in order."""
        for names in (self.names, self.guided_names):
            if name in names:
                return names
        raise ParamsError(f"params.yaml: breed.rounds / breed.guided_rounds have no round {name!r} (rounds: "
                          f"{', '.join(self.names + self.guided_names)})")

    def guided(self, name: str) -> bool:
        """Whether round `name` is of the detector-guided chain."""
        self.chain(name)
        return name in self.guided_rounds

    def previous(self, name: str) -> str:
        """Folder of the network round `name` starts from (its model.pt)."""
        self.chain(name)
        return {**self.rounds, **self.guided_rounds}[name]

    def folder(self, name: str) -> str:
        return f"{self.out_dir}/{name}"

    def round_lr(self, position: int) -> float:
        """Fine-tuning learning rate of the round at `position` (0-based) of its chain: lr * lr_decay^position."""
        return self.lr * self.lr_decay ** int(position)


@dataclass(frozen=True)
class DetectConfig(Section):
    """Section `detect`: the face/landmark detector (ifn.detect) and detector-guided refinement
    (ifn.landmark_fit), a path separate from the detector-free one."""

    SECTION = "detect"
    detector: str = param("mediapipe", **_choice("mediapipe", "none"))
    min_confidence: float = param(0.5, **_num(0.0, 1.0))
    w_landmark: float = param(100.0, **_num(0.0, 1e9))
    coarse_steps: int = param(80, **_num(0, 100000, integer=True))
    coarse_lr: float = param(0.1, **_num(1e-6, 1.0))
    steps: int = param(30, **_num(0, 100000, integer=True))
    w_contour: float = param(0.5, **_num(0.0, 1e3))
    min_facing: float = param(0.1, **_num(-1.0, 1.0))
    max_yaw_deg: float = param(40.0, **_num(0.0, 180.0))

    @property
    def enabled(self) -> bool:
        return self.detector != "none"


@dataclass(frozen=True)
class FinetuneConfig(Section):
    """Section `finetune`: fine-tuning on real photos with the detector's landmarks (ifn.finetune, stage
    finetune_real), a detector-guided variant beside the detector-free networks."""

    SECTION = "finetune"
    init: str = param("models/breed/round_2")
    out_dir: str = param("models/finetune_real")
    photos: int = param(8000, **_num(1, 10_000_000, integer=True))
    val_photos: int = param(256, **_num(0, 1_000_000, integer=True))
    real_batch_size: int = param(32, **_num(1, 4096, integer=True))
    epochs: int = param(4, **_num(1, 10000, integer=True))
    lr: float = param(5e-4, **_num(1e-7, 1.0))
    max_minutes: float = param(8.0, **_num(0.1, 100000.0))
    w_landmark: float = param(3000.0, **_num(0.0, 1e9))
    w_photo: float = param(0.0, **_num(0.0, 1e9))
    w_shape_prior: float = param(0.01, **_num(0.0, 1e6))
    w_expression_prior: float = param(0.1, **_num(0.0, 1e6))


@dataclass(frozen=True)
class EvaluateRealConfig(Section):
    """Section `evaluate_real`: the real-image evaluation (ifn.evaluate_real)."""

    SECTION = "evaluate_real"
    photos: int = param(96, **_num(0, 1_000_000, integer=True))
    benchmark_images: int = param(0, **_num(0, 1_000_000, integer=True))
    tuning_every: int = param(4, **_num(0, 1_000_000, integer=True))
    benchmark: str = param("data/benchmark/aflw2000_dev")
    refine_steps: int = param(30, **_num(0, 100000, integer=True))
    batch_size: int = param(64, **_num(1, 4096, integer=True))
    flip_pose: bool = param(True, **_choice(True, False))
    upright_passes: int = param(1, **_num(0, 10, integer=True))


@dataclass(frozen=True)
class Params:
    """All of params.yaml, validated."""

    seed: int
    face_model: FaceModelConfig
    reflectance: ReflectanceConfig
    render: RenderConfig
    synthesize: SynthesizeConfig
    train: TrainConfig
    real: RealConfig
    refine: RefineConfig
    breed: BreedConfig
    evaluate_real: EvaluateRealConfig
    detect: DetectConfig
    finetune: FinetuneConfig
    raw: Mapping[str, Any]

    SECTIONS = {
        "face_model": FaceModelConfig,
        "reflectance": ReflectanceConfig,
        "render": RenderConfig,
        "synthesize": SynthesizeConfig,
        "train": TrainConfig,
        "real": RealConfig,
        "refine": RefineConfig,
        "breed": BreedConfig,
        "evaluate_real": EvaluateRealConfig,
        "detect": DetectConfig,
        "finetune": FinetuneConfig,
    }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Params":
        raw = dict(raw or {})
        seed = _check("", "seed", raw.get("seed", 0), _num(0, 2**31 - 1, integer=True))
        sections = {name: kind.from_dict(raw.get(name)) for name, kind in cls.SECTIONS.items()}
        unknown = sorted(set(raw) - set(cls.SECTIONS) - {"seed"})
        if unknown:
            raise ParamsError(f"params.yaml: unknown section {unknown[0]} (sections: seed, {', '.join(cls.SECTIONS)})")
        out = cls(seed=seed, raw=raw, **sections)
        out.validate()
        return out

    def validate(self) -> None:
        first = self.breed.previous(self.breed.names[0])
        expected = f"{self.train.out_dir}/{self.train.loss}"
        if first != expected:
            raise ParamsError(f"params.yaml: breed.rounds.{self.breed.names[0]} = {first!r} is invalid: the first "
                              f"round starts from the network of train.loss = {self.train.loss}, {expected}")
        if self.train.loss not in self.train.compare:
            raise ParamsError(f"params.yaml: train.loss = {self.train.loss} is not trained: add it to train.compare")
        if self.breed.guided_names:
            first = self.breed.previous(self.breed.guided_names[0])
            starts = {expected} | {self.breed.folder(n) for n in self.breed.names}
            if first not in starts:
                raise ParamsError(f"params.yaml: breed.guided_rounds.{self.breed.guided_names[0]} = {first!r} is "
                                  f"invalid: the first guided round starts from {expected} or a breed.rounds folder")

    def final_network(self) -> str:
        """Path (relative to the project root) of the pipeline's final network: the last breeding round's."""
        return f"{self.breed.folder(self.breed.names[-1])}/model.pt"


def load_params(path: str | Path = "params.yaml", overrides: Mapping[str, Any] | None = None) -> Params:
    """Read and validate params.yaml. `overrides` maps dotted keys ("render.image_size") to values."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file not found: {path}")
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return Params.from_dict(raw)
