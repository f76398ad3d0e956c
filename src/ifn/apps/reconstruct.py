"""Reconstruction of faces in photos with the trained network: the library behind `ifn reconstruct`.

    from ifn import reconstruct
    results = reconstruct(["photo.jpg", image_array], boxes=[(x0, y0, x1, y1), None], refine_steps=30)
    r = results[0]
    r.params["rotation"], r.landmarks, r.vertices, r.triangles, r.albedo, r.warning, r.error

`ifn.reconstruct` is this module (ifn.apps.reconstruct, imported by ifn/__init__.py on first use) made callable
(calling it calls `reconstruct`), so `from ifn import reconstruct` gives a function-like object whether or not the
module has been imported before; `Reconstructor` keeps the network and renderer loaded between calls. The parts:
ifn.apps.checkpoint (which network, loaded as a Predictor), ifn.apps.photos (the input photos and boxes),
ifn.apps.result (Reconstruction, the not-a-face warning), ifn.apps.mesh_io / ifn.apps.boxes (the outputs and
face-box files of `ifn reconstruct`).

Pipeline per photo (all crops S x S, S = real.working_size(render.image_size) = the network's image_size):

1. load: ifn.real.load_image (EXIF orientation; huge photos downscaled to real.max_side, the scale is kept so
   every output refers to the FILE's own pixel grid). A file that cannot be used gives a result with `error`
   set; the other photos go on.
2. framing: with a face box (x0, y0, x1, y1 file pixels, the 3DDFA roi_box convention: the 68-landmark box
   squared and enlarged by sqrt(2) about its centre) the crop is ifn.real.crop_box(scale=real.roi_scale,
   shift=(0, real.roi_shift_y)), calibrated on AFLW2000-3D to the synthetic framing. Without a box the photo
   is taken to be a face crop: the centred square of its shorter side (ifn.real.DEFAULT_FRAMING); then
   `reframe` passes (default 1) build a roi box from the predicted landmarks (`roi_box`), crop_box again and
   predict again, so loosely framed photos end up framed like the training renders.
3. the network's estimate; optionally `refine_steps` of analysis-by-synthesis (ifn.fit.refine, settings of
   params.yaml `refine`) from it, comparing only crop pixels that lie inside the photo (not the padding).
4. outputs: named parameters, the re-render, the 68 landmarks (renderer landmarks in crop pixels mapped through
   the crop affine to file pixels), the posed mesh with per-vertex albedo, the photometric error, and the
   "not a face" warning (ifn.apps.result: the heuristic and the measurements behind it).

Measured (2026-11-25, 2 CPU threads, render.compile false; the default checkpoint of this checkout,
models/train/model_space/model.pt: 2 epochs of the first pipeline run)
------------------------------------------------------------------------------------------------------------
68-landmark NME on the 400 AFLW2000-3D dev images (ifn.nme; mean of the |yaw| bin means, bins in brackets
[0, 30) / [30, 60) / [60, 90]; ~12 s per row):

    framing                                     NME     bins
    roi_box of the benchmark (crop_box)         0.244   0.158 / 0.278 / 0.296
    no box, reframe=0 (centred square)          0.357   0.271 / 0.385 / 0.416
    no box, reframe=1 (the default)             0.344   0.263 / 0.362 / 0.407
    no box, reframe=2                           0.394   0.309 / 0.411 / 0.464
    the mean face instead of the network,
      roi_box (ifn.fit.mean_face_params)        0.243   0.143 / 0.275 / 0.310

    python - <<'EOF'
    import numpy as np
    from ifn.nme import load_aflw2000_dev, nme, nme_report
    from ifn.apps.reconstruct import Reconstructor
    rec = Reconstructor.from_params(overrides={"render.compile": False}, batch_size=64)
    dev = load_aflw2000_dev()
    for kw in ({"boxes": list(dev["roi_box"])}, {"reframe": 0}, {"reframe": 1}, {"reframe": 2}):
        res = rec(dev["paths"], **kw)
        print(kw.keys(), nme_report(nme(np.stack([r.landmarks for r in res]), dev["pts68"]), dev["yaw_deg"]))
    EOF

So this network is no better than the mean face on real photos yet (the framing chain itself is exact, see
tests/test_reconstruct.py, and on average right: on frontal dev faces the mean face's eyes / inner lips land
at crop y 42.7 / 85.3 px vs 43.4 / 83.7 true, 128 px crops). One re-framing pass helps a little; more passes
drift, because the network underestimates the face's size (predicted / true landmark box 0.91), so every pass
zooms in further. Re-measure (and revisit `reframe`) when the network changes. 30 refinement steps (every 5th
dev image, roi boxes) lower the photometric MAE 0.206 -> 0.102 but raise the NME 0.235 -> 0.378: on real
photos the refinement shrinks (landmark box 0.79 of the truth) and moves the face to explain the skin it
covers, so refined landmarks are worse than the network's.
"""
from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..paths import resolve
from ..real import (DEFAULT_FRAMING, MAX_SIDE, ROI_ENLARGE, ROI_SCALE, ROI_SHIFT, BadImageError, apply_affine,
                    crop_box, frame, roi_box)
from .checkpoint import (CheckpointError, CheckpointMissingError, Predictor, _user_path, default_checkpoint,
                         load_checkpoint, load_predictor, network_predictor)
from .photos import _Item, load_photo, valid_pixels
from .result import MAX_PHOTOMETRIC_MAE, MIN_COVERAGE, Reconstruction, assemble, not_a_face_warning

REFLECTANCE_PATH = "models/face_model/reflectance.npz"
MIN_REFRAME_SIDE = 8.0           # px of the loaded photo: a smaller predicted landmark box is not trusted


class Reconstructor:
    """Network estimate (+ optional refinement) of face parameters for photos; see the module docstring.

    renderer        ifn.render.renderer.Renderer at the crop size S (its image_size)
    predictor       (N, S, S, 3) uint8 crops -> (N, P) parameters (`network_predictor(net)`; tests inject others)
    roi_scale, roi_shift_y   crop_box settings of face boxes (params.yaml real.roi_scale / roi_shift_y)
    max_side        photos are downscaled to this side when loaded (params.yaml real.max_side)
    refine_kwargs   keyword arguments of ifn.fit.refine (params.refine.refine_kwargs(); `steps` is set per call)
    batch_size      photos loaded, predicted and refined together
    checkpoint      recorded in the results
    params          the ifn.config.Params it was built from, if any
    detector        a face detector (ifn.detect.FaceDetector: image -> faces) for photos without a box, or None
    landmark_fit    ifn.landmark_fit.LandmarkFitSettings of the detector-guided refinement of detected faces
    flip_pose       the network's pose is averaged with that of the mirrored crop (ifn.evaluate_real.tta_estimate;
                    params.yaml evaluate_real.flip_pose, so estimates match stage evaluate_real's)
    upright_passes  times the network looks again at the crop turned upright by its own roll estimate
                    (ifn.upright; params.yaml evaluate_real.upright_passes, as in stage evaluate_real)
    """

    def __init__(self, renderer, predictor: Predictor, roi_scale: float = ROI_SCALE,
                 roi_shift_y: float = ROI_SHIFT[1], max_side: int = MAX_SIDE,
                 refine_kwargs: Mapping[str, Any] | None = None, batch_size: int = 16,
                 checkpoint: str | None = None, params=None, detector=None, landmark_fit=None,
                 flip_pose: bool = False, upright_passes: int = 0):
        self.renderer = renderer
        self.predictor = predictor
        self.flip_pose = bool(flip_pose)
        self.upright_passes = int(upright_passes)
        self.size = int(renderer.settings.image_size)
        self.roi_scale = float(roi_scale)
        self.roi_shift_y = float(roi_shift_y)
        self.max_side = int(max_side)
        self.refine_kwargs = dict(refine_kwargs or {})
        self.refine_kwargs.pop("steps", None)
        self.batch_size = max(1, int(batch_size))
        self.checkpoint = checkpoint
        self.params = params   # the ifn.config.Params it was built from (from_params), else None
        self.detector = detector
        self.landmark_fit = landmark_fit

    @classmethod
    def from_params(cls, params_file="params.yaml", checkpoint=None, overrides: Mapping[str, Any] | None = None,
                    reflectance_path=REFLECTANCE_PATH, batch_size: int = 16, detect: bool | None = None
                    ) -> "Reconstructor":
        """Load params.yaml (+ dotted-key `overrides`), the checkpoint (default: `default_checkpoint`) and the
        renderer at the network's image size; the face detector when `detect` is True, or None and params
        `detect.detector` names one that is installed (detect False: none). Raises ParamsError,
        DataMissingError, CheckpointError, ifn.detect.DetectorUnavailable (detect=True without mediapipe)."""
        from ..config import load_params
        from ..landmark_fit import LandmarkFitSettings
        from ..synth import build_renderer

        params = load_params(_user_path(params_file), overrides)
        path = _user_path(checkpoint) if checkpoint is not None else default_checkpoint(params)
        predictor, info = load_predictor(path, batch_size)
        size = params.real.working_size(params.render.image_size)
        if int(info.get("image_size", -1)) != size:
            raise CheckpointError(
                f"{path}: the network was trained on {info.get('image_size')} px renders but params give a "
                f"working size of {size} px (real.image_size / render.image_size): use the params it was trained with")
        renderer = build_renderer(params, resolve(reflectance_path), image_size=size)
        if {k: int(v) for k, v in dict(info["layout"]).items()} != dict(renderer.layout.sizes):
            raise CheckpointError(f"{path}: the network predicts parameter groups {dict(info['layout'])}, params give "
                                  f"{renderer.layout.sizes}: use the params it was trained with")
        detector = None
        if detect or (detect is None and params.detect.enabled):
            from .. import detect as detection
            if detect or detection.available():
                detector = detection.FaceDetector(params.detect.min_confidence)
        return cls(renderer, predictor, roi_scale=params.real.roi_scale,
                   roi_shift_y=params.real.roi_shift_y, max_side=params.real.max_side,
                   refine_kwargs=params.refine.refine_kwargs(), batch_size=batch_size, checkpoint=str(path),
                   params=params, detector=detector, landmark_fit=LandmarkFitSettings.from_config(params.detect),
                   flip_pose=params.evaluate_real.flip_pose, upright_passes=params.evaluate_real.upright_passes)

    def _detect(self, item: _Item, largest: bool) -> list[_Item]:
        """The faces the detector finds in a photo without a box, one item each (largest first); [] if none."""
        faces = self.detector(item.image)
        out = []
        for k, f in enumerate(faces[:1] if largest else faces):
            it = _Item(item.index, item.source, item.image, item.scale, box=f.box, framing="detected", face=k,
                       score=f.score, points=f.points)
            out.append(it)
        return out

    # -- steps ------------------------------------------------------------------------------------------------
    def _crop(self, item: _Item) -> None:
        if item.box is None:
            item.crop, item.affine = frame(item.image, DEFAULT_FRAMING, self.size)
        else:
            item.crop, item.affine = crop_box(item.image, item.box, scale=self.roi_scale, size=self.size,
                                              shift=(0.0, self.roi_shift_y))

    def _predict(self, items: list[_Item]) -> torch.Tensor:
        from ..evaluate_real import tta_estimate

        def run(crops: np.ndarray) -> torch.Tensor:
            pred = self.predictor(crops)
            return torch.as_tensor(pred, dtype=torch.float32).reshape(len(crops), self.renderer.layout.size)

        crops = np.stack([it.crop for it in items])
        return tta_estimate(run, crops, self.renderer.layout, self.flip_pose, self.upright_passes)

    def _landmarks(self, params: torch.Tensor) -> np.ndarray:
        """(N, P) -> (N, 68, 2) crop pixels (no rasterization: just the projected landmark vertices)."""
        with torch.no_grad():
            return self.renderer.landmarks(self.renderer.posed(params)).double().numpy()

    def _reframe(self, items: list[_Item], pred: torch.Tensor, passes: int) -> torch.Tensor:
        """`passes` times: crop_box around the roi box of the predicted landmarks, predict again (photos
        without a given box only)."""
        for _ in range(passes):
            todo = [i for i, it in enumerate(items) if it.framing not in ("box", "detected")]
            if not todo:
                break
            lms = self._landmarks(pred[todo])
            again = []
            for i, lm in zip(todo, lms):
                it = items[i]
                box = roi_box(apply_affine(it.affine, lm))
                side = None if box is None else box[2] - box[0]
                if side is None or not math.isfinite(side) or side / ROI_ENLARGE < MIN_REFRAME_SIDE:
                    it.notes.append("re-framing skipped: predicted landmarks unusable")
                    continue
                it.box = box
                self._crop(it)
                it.framing, it.reframes = "reframed", it.reframes + 1
                again.append(i)
            if not again:
                break
            pred = pred.clone()
            pred[again] = self._predict([items[i] for i in again])
        return pred

    def _guided(self, it: _Item, landmarks: bool) -> bool:
        return landmarks and it.points is not None and self.landmark_fit is not None

    def _refine(self, items: list[_Item], pred: torch.Tensor, steps: int, guided_steps: int | None = None,
                landmarks: bool = True) -> torch.Tensor:
        """`steps` of ifn.fit.refine; detected faces (with `landmarks`) get the detector-guided fit instead
        (ifn.landmark_fit: the landmark-only steps of `landmark_fit`, then `guided_steps` (default `steps`)
        photometric + landmark steps)."""
        guided_steps = steps if guided_steps is None else guided_steps
        from ..fit import refine

        photos = torch.from_numpy(np.stack([it.crop for it in items])).float() / 255
        valid = torch.from_numpy(np.stack([valid_pixels(it.affine, self.size, it.image.shape[:2]) for it in items]))
        guided = np.array([self._guided(it, landmarks) for it in items])
        refined = pred.clone()
        plain = np.flatnonzero(~guided)
        if len(plain) and steps > 0:
            refined[plain], _ = refine(self.renderer, photos[plain], pred[plain],
                                       **{**self.refine_kwargs, "steps": int(steps)}, image_mask=valid[plain])
        if guided.any():
            from dataclasses import replace

            from ..landmark_fit import fit_detected, to_crop

            sel = np.flatnonzero(guided)
            targets = np.full((len(items), len(items[sel[0]].points), 2), np.nan)
            for i in sel:
                targets[i] = to_crop(items[i].points, items[i].affine)
            fitted, _ = fit_detected(self.renderer, np.stack([it.crop for it in items]), pred, targets,
                                     replace(self.landmark_fit, steps=int(guided_steps)), len(items), valid,
                                     **self.refine_kwargs)
            refined[sel] = fitted[sel]
        return refined

    # -- public -----------------------------------------------------------------------------------------------
    def __call__(self, images: Sequence, boxes: Sequence | None = None, refine_steps: int | None = 0,
                 reframe: int = 1, log: Callable[[str], None] | None = None, largest: bool = False,
                 landmarks: bool = True) -> list[Reconstruction]:
        """Reconstruct each photo (path or (H, W, 3) uint8 array); `boxes`: one (x0, y0, x1, y1) file-pixel
        face box or None per photo.

        A photo with a box gives one Reconstruction. Without a box and with a detector, every face found (or
        only the largest: `largest`) gives one (`face` 0, 1, ... largest first), and a photo where none is
        found gives one with error "no face found"; without a detector the photo is taken to be a face crop
        (centred square, then `reframe` passes). Results come in photo order (failed photos with `error`).
        refine_steps: photometric refinement steps (0: none); detected faces are refined with landmarks
        (`landmarks`, ifn.landmark_fit) by default: None = the detector-guided defaults (params `detect`),
        0 = landmark-only steps."""
        images = list(images)
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} boxes for {len(images)} images: give one box (or None) per image")
        if (refine_steps is not None and refine_steps < 0) or reframe < 0:
            raise ValueError(f"refine_steps ({refine_steps}) and reframe ({reframe}) must be >= 0")
        plain_steps = 0 if refine_steps is None else int(refine_steps)
        guided_steps = (self.landmark_fit.steps if self.landmark_fit is not None else 0) \
            if refine_steps is None else int(refine_steps)
        results: list[list[Reconstruction]] = [[] for _ in images]
        for start in range(0, len(images), self.batch_size):
            items = []
            for i in range(start, min(start + self.batch_size, len(images))):
                source = str(images[i]) if isinstance(images[i], (str, Path)) else f"<image {i}>"
                try:
                    item = load_photo(i, images[i], boxes[i], self.max_side)
                    found = [item]
                    if item.box is None and self.detector is not None:
                        found = self._detect(item, largest)
                        if not found:
                            results[i].append(Reconstruction(source=item.source, error="no face found"))
                    for it in found:
                        self._crop(it)
                    items += found
                except BadImageError as e:
                    results[i].append(Reconstruction(source=source, error=e.reason))
            if not items:
                continue
            pred = self._reframe(items, self._predict(items), reframe)
            guided = [self._guided(it, landmarks) for it in items]
            if plain_steps > 0 or any(guided):
                pred = self._refine(items, pred, plain_steps, guided_steps, landmarks)
            steps = [guided_steps if g else plain_steps for g in guided]
            for it, res in zip(items, assemble(self.renderer, items, pred, steps, self.checkpoint)):
                results[it.index].append(res)
            if log:
                log(f"reconstruct: {min(start + self.batch_size, len(images))}/{len(images)} images")
        for i, per_photo in enumerate(results):
            for r in per_photo:
                r.photo = i
        return [r for per_photo in results for r in per_photo]


def reconstruct(images: Sequence, boxes: Sequence | None = None, checkpoint=None, refine_steps: int | None = None,
                params_file="params.yaml", reframe: int = 1, overrides: Mapping[str, Any] | None = None,
                reflectance_path=REFLECTANCE_PATH, batch_size: int = 16,
                log: Callable[[str], None] | None = None, detect: bool | None = None, largest: bool = False,
                landmarks: bool = True) -> list[Reconstruction]:
    """Reconstruct faces in photos with the trained network (see the module docstring).

    images        paths or (H, W, 3) uint8 arrays
    boxes         None, or one face box (x0, y0, x1, y1) in the image's (file's) pixels or None per image;
                  images without one go to the face detector (params `detect`; `detect` False: none, then the
                  image is taken to be a face crop)
    checkpoint    model.pt or an exported .onnx (onnxruntime) (default: `default_checkpoint`)
    refine_steps  steps of ifn.fit.refine from the network estimate (0: network only; None: detected faces get
                  the detector-guided refinement of params `detect`, the others none)
    reframe       re-framing passes for images without a box and without a detector
    largest       only the largest detected face of each image
    landmarks     detected faces are refined with their landmarks (ifn.landmark_fit)
    overrides     dotted params keys -> values, e.g. {"render.compile": False}

    Returns one Reconstruction per image (failed images: `error` set). Raises ParamsError, DataMissingError
    (data/ not pulled), CheckpointError / CheckpointMissingError (no network: run `dvc repro`).
    """
    rec = Reconstructor.from_params(params_file, checkpoint, overrides, reflectance_path, batch_size, detect)
    return rec(images, boxes, refine_steps=refine_steps, reframe=reframe, log=log, largest=largest,
               landmarks=landmarks)


# The writers (ifn.apps.mesh_io) and face-box files (ifn.apps.boxes) re-exported, and __all__ naming the API of
# the callable module `ifn.reconstruct` as it was before the split into ifn.apps (`from ifn import reconstruct;
# reconstruct.write_outputs(...)`, `reconstruct.CheckpointError`, ...).
from .boxes import box_for, read_boxes  # noqa: E402
from .mesh_io import MESH_HEADER, overlay_image, write_obj, write_outputs, write_ply  # noqa: E402

__all__ = ["reconstruct", "Reconstructor", "Reconstruction", "not_a_face_warning", "MAX_PHOTOMETRIC_MAE",
           "MIN_COVERAGE", "MIN_REFRAME_SIDE", "REFLECTANCE_PATH", "CheckpointError", "CheckpointMissingError",
           "Predictor", "default_checkpoint", "load_checkpoint", "load_predictor", "network_predictor",
           "valid_pixels", "box_for", "read_boxes", "MESH_HEADER", "overlay_image", "write_obj", "write_outputs",
           "write_ply"]


# `from ifn import reconstruct` gives this module (ifn/__init__.py); calling it calls `reconstruct`.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return reconstruct(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
