"""Stage evaluate_real: every variant on the same real images.

Variants (one metrics object each in metrics/evaluate_real.json):
  synthetic_only      the network of train.loss trained on the synthetic corpus only (models/train/<loss>)
  <round>             the network after each breeding round of breed.rounds (round_1, round_2, ...)
  refined             the final network + `evaluate_real.refine_steps` steps of analysis-by-synthesis refinement
  optimization_only   refinement from the mean face (refine.baseline_steps), no network (ifn.fit.fit_from_mean)
With a detector (params `detect.detector`, default mediapipe), the detector-guided path beside them:
  <guided round>                the network after each round of breed.guided_rounds (guided_1, ...): breeding
                                whose refinement the detector's landmarks anchor (ifn.breed), network only
  real_finetuned                the network of stage finetune_real (`finetune.init` fine-tuned on real photos
                                with the detector's landmarks, ifn.finetune), network only: no detector at
                                test time
  refined_landmarks             real_finetuned + detector-guided refinement (ifn.landmark_fit: landmark-only
                                steps, then photometric + landmark steps, settings of `detect`)
  optimization_only_landmarks   the same fit from the mean face, no network
  detector                      the detector's own 68 landmarks (ifn.detect.Face.landmarks68), NME over the
                                images where it found a face (n_detected; benchmark_counts are all images)
  Images where the detector finds no face keep their start (the network's estimate, or the mean face), so
  every variant's NME is over the same images; n_detected says how many were fitted.

Images (the same for every variant):
  held-out photos     `evaluate_real.photos` photos of the held-out part of data/real (never used for breeding),
                      split evenly over real.sources, chosen by a fixed hash order of their file names.
                      Metric: photometric_mae = mean absolute sRGB error over the pixels where the estimate's
                      face part is visible (ifn.evaluate.photo_errors), coverage = the fraction of the crop
                      those pixels cover; also per source.
  AFLW2000-3D dev     the dev images that are not tuning images (`tuning_indices`: every
                      `evaluate_real.tuning_every`-th image of each yaw bin, kept for the bench scripts and the
                      calibrations and never reported), all of them (`evaluate_real.benchmark_images` 0) or that
                      many split evenly over the yaw bins; cropped from roi_box (real.roi_scale / roi_shift_y).
                      Metric: 68-point NME, 3DDFA protocol
                      (ifn.nme): the model's landmark vertices projected with the estimated pose and camera, mapped
                      back to image pixels through the crop.
  seconds_per_image   wall time of estimation (network forward and/or refinement) over both sets / images.

Network estimates (the network-only variants and every refinement's start) average the head pose of each crop
with that of its horizontal mirror image mapped back (`evaluate_real.flip_pose`, `network_estimate`): a
test-time augmentation that uses no detector and no label; then (`evaluate_real.upright_passes`) the network looks
again at each crop turned upright by its own roll estimate, mapped back exactly (ifn.upright): the networks
under-read in-plane tilt on photos. Neither uses a detector, a landmark or an optimisation.

Per-image estimates are saved to outputs/evaluate_real/estimates.npz for later figures.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .config import Params, load_params
from .paths import resolve
from .real import BadImageError, RealPhotos, apply_affine, crop_box, heldout_score, load_image

REFLECTANCE_PATH = "models/face_model/reflectance.npz"
METRIC_NAMES = ("photometric_mae", "nme_mean", "nme_0_30", "nme_30_60", "nme_60_90", "seconds_per_image")


def variant_networks(params: Params) -> dict[str, str]:
    """Variant name -> model.pt path (project-relative) of the detector-free network variants, in pipeline
    order (the last one is the final network)."""
    out = {"synthetic_only": f"{params.train.out_dir}/{params.train.loss}/model.pt"}
    for name in params.breed.names:
        out[name] = f"{params.breed.folder(name)}/model.pt"
    return out


def guided_networks(params: Params) -> dict[str, str]:
    """Variant name -> model.pt path of the detector-guided breeding rounds (none without a detector)."""
    if not params.detect.enabled:
        return {}
    return {name: f"{params.breed.folder(name)}/model.pt" for name in params.breed.guided_names}


def heldout_photos(params: Params, n: int, size: int, log=print) -> tuple[np.ndarray, list[dict]]:
    """n held-out photos split evenly over real.sources (the first by heldout_score order within each source):
    ((N, S, S, 3) uint8 crops, records {source, name})."""
    photos = RealPhotos(params.real.root, params.real.sources, "heldout", size, params.real.heldout_fraction,
                        max_side=params.real.max_side)
    by_source: dict[str, list[int]] = {}
    for i, (source, name) in enumerate(photos.items):
        by_source.setdefault(source, []).append(i)
    sources = list(params.real.sources)
    crops, records = [], []
    for k, source in enumerate(sources):
        want = n // len(sources) + (1 if k < n % len(sources) else 0)
        order = sorted(by_source.get(source, []), key=lambda i: heldout_score("order", photos.items[i][1]))
        for i in order:
            if sum(r["source"] == source for r in records) >= want:
                break
            try:
                crop, _ = photos.load(i)
            except BadImageError as e:
                log(f"skipping held-out photo {source}/{photos.items[i][1]}: {e.reason}")
                continue
            crops.append(crop)
            records.append({"source": source, "name": photos.items[i][1]})
    size_ = photos.image_size
    return (np.stack(crops) if crops else np.zeros((0, size_, size_, 3), np.uint8)), records


def benchmark_subset(yaw_deg: np.ndarray, n: int) -> np.ndarray:
    """Indices of n images split evenly over the 3DDFA yaw bins (in file order within a bin; a short bin is
    topped up from the others); n = 0 or >= len: all."""
    from .nme import yaw_bins

    total = len(yaw_deg)
    if n <= 0 or n >= total:
        return np.arange(total)
    bins = yaw_bins(yaw_deg)
    chosen: list[int] = []
    members = [list(np.flatnonzero(bins == b)) for b in range(3)]
    share = [n // 3 + (1 if b < n % 3 else 0) for b in range(3)]
    for b in range(3):
        chosen += members[b][:share[b]]
    rest = [i for b in range(3) for i in members[b][share[b]:]]
    chosen += rest[:n - len(chosen)]
    return np.array(sorted(chosen))


def tuning_indices(yaw_deg: np.ndarray, every: int) -> np.ndarray:
    """The tuning images of the benchmark: in each 3DDFA yaw bin (file order), the every-th image (ranks
    every - 1, 2 every - 1, ...; every = 0: none). With 4 on the 400 dev images: 68 / 19 / 13 per bin, the
    other 300 (204 / 57 / 39) are the ones stage evaluate_real reports."""
    from .nme import yaw_bins

    if every <= 0:
        return np.zeros(0, dtype=np.int64)
    bins = yaw_bins(yaw_deg)
    out = [np.flatnonzero(bins == b)[every - 1::every] for b in range(3)]
    return np.sort(np.concatenate(out)).astype(np.int64)


def reported_indices(yaw_deg: np.ndarray, n: int, every: int) -> np.ndarray:
    """The benchmark images stage evaluate_real reports: the non-tuning images (`tuning_indices`), all of them
    (n = 0) or `benchmark_subset` of n of them."""
    free = np.setdiff1d(np.arange(len(yaw_deg)), tuning_indices(yaw_deg, every))
    return free[benchmark_subset(yaw_deg[free], n)]


def benchmark_crops(params: Params, n: int, size: int, log=print, indices: Sequence[int] | None = None
                    ) -> dict[str, Any]:
    """AFLW2000-3D dev images cropped from roi_box: dict crops (N, S, S, 3) uint8, affines (N, 2, 3) crop px ->
    image px, pts68 (N, 68, 2), yaw_deg (N,), names (N,). The images: `reported_indices(yaw, n,
    evaluate_real.tuning_every)`, or `indices` into the benchmark's file order when given (n is then ignored)."""
    from .nme import load_aflw2000_dev

    bench = load_aflw2000_dev(resolve(params.evaluate_real.benchmark))
    idx = (reported_indices(bench["yaw_deg"], n, params.evaluate_real.tuning_every) if indices is None
           else np.asarray(indices, dtype=np.int64))
    crops, affines, keep = [], [], []
    for i in idx:
        try:
            image, scale = load_image(bench["paths"][i], max_side=params.real.max_side, return_scale=True)
        except BadImageError as e:
            log(f"skipping benchmark image {bench['names'][i]}: {e.reason}")
            continue
        crop, affine = crop_box(image, bench["roi_box"][i] / scale, params.real.roi_scale, size,
                                (0.0, params.real.roi_shift_y))
        crops.append(crop)
        affines.append(affine * scale)
        keep.append(i)
    keep = np.array(keep, dtype=np.int64)
    return {"crops": np.stack(crops), "affines": np.stack(affines), "pts68": bench["pts68"][keep],
            "yaw_deg": bench["yaw_deg"][keep], "names": bench["names"][keep]}


def landmarks_in_image(renderer, params: torch.Tensor, affines: np.ndarray) -> np.ndarray:
    """(N, P) estimates + (N, 2, 3) crop->image affines -> (N, 68, 2) landmarks in image pixels."""
    with torch.no_grad():
        lm = renderer.landmarks(renderer.posed(params)).double().numpy()
    return np.stack([apply_affine(a, p) for a, p in zip(affines, lm)])


def curve_steps(steps: int, points: Sequence[int] = (0, 5, 10, 20, 50)) -> list[int]:
    """Steps at which accuracy-versus-time curves are sampled: the given points up to `steps`, and `steps`."""
    return sorted({k for k in points if k <= steps} | {steps})


def _crop_batches(crops: np.ndarray, batch: int):
    for start in range(0, len(crops), batch):
        yield slice(start, start + batch), torch.from_numpy(np.ascontiguousarray(crops[start:start + batch])).float() / 255


MIRROR_ROTATION = (-1.0, 1.0, -1.0)     # yaw, pitch, roll of a horizontally mirrored head
MIRROR_TRANSLATION = (-1.0, 1.0, 1.0)  # x, y, z


def mirror_pose(params: torch.Tensor, layout) -> torch.Tensor:
    """(N, P) estimates -> (N, P) with the pose of the horizontally mirrored head (other groups as they are).

    Mirroring x -> -x about the camera axis (the crop's centre column) maps a rotation R to M R M with
    M = diag(-1, 1, 1): for rotations about y (yaw) and z (roll) the angle changes sign, about x (pitch) it
    stays, so R(yaw, pitch, roll) -> R(-yaw, pitch, -roll) in any Euler order; the translation's x changes
    sign. Identity, expression and albedo modes are not mirror images of each other mode by mode, so those
    groups are not mirrored.
    """
    out = params.clone()
    rot, tr = layout["rotation"], layout["translation"]
    out[:, rot] = params[:, rot] * params.new_tensor(MIRROR_ROTATION)
    out[:, tr] = params[:, tr] * params.new_tensor(MIRROR_TRANSLATION)
    return out


def network_estimate(net, crops: np.ndarray, layout, batch_size: int = 64, flip_pose: bool = True,
                     upright_passes: int = 0) -> torch.Tensor:
    """(N, S, S, 3) uint8 crops -> (N, P) network estimates; with `flip_pose` the pose (rotation, translation)
    is the mean of the crop's and its mirror image's mapped back (`mirror_pose`), the other groups the crop's.
    A network whose pose errors are the same on a photo and its mirror image (a bias towards one side, a tilt)
    has them cancelled; a mirror-consistent network is unchanged. With `upright_passes` > 0 the network looks
    again at each crop turned upright by its own roll estimate, that many times (ifn.upright.upright_estimate)."""
    from .evaluate import predict

    def run(images: np.ndarray) -> torch.Tensor:
        return predict(net, images, batch_size)

    return tta_estimate(run, crops, layout, flip_pose, upright_passes)


def tta_estimate(predict_fn, crops: np.ndarray, layout, flip_pose: bool, upright_passes: int
                       ) -> torch.Tensor:
    """`predict_fn` ((N, S, S, 3) uint8 -> (N, P) tensor) on `crops` with the test-time looks of stage
    evaluate_real: the pose flip-averaged (`flip_averaged`) when `flip_pose`, then `upright_passes` looks at the
    crops turned upright (ifn.upright.upright_estimate); shared by `network_estimate` and ifn.apps.reconstruct."""
    from .upright import upright_estimate

    def estimate(images: np.ndarray) -> torch.Tensor:
        return flip_averaged(predict_fn, images, layout) if flip_pose else predict_fn(images)

    return upright_estimate(estimate, crops, layout, upright_passes)


def flip_averaged(predict_fn, crops: np.ndarray, layout) -> torch.Tensor:
    """`predict_fn` ((N, S, S, 3) uint8 -> (N, P) tensor) on `crops`, its pose averaged with that of the mirror
    images mapped back (`mirror_pose`)."""
    est = predict_fn(crops).clone()
    back = mirror_pose(predict_fn(np.ascontiguousarray(crops[:, :, ::-1])), layout)
    for group in ("rotation", "translation"):
        sl = layout[group]
        est[:, sl] = (est[:, sl] + back[:, sl]) / 2
    return est


class Estimator:
    """One variant's way to estimate parameters of (N, S, S, 3) uint8 crops. __call__ returns
    (params (N, P), snapshots {steps: (N, P)} for the accuracy-versus-time curve, timing {network_seconds,
    optimisation_seconds, steps})."""

    def __init__(self, net=None, refine_cfg=None, steps: int = 0, from_mean: bool = False, batch_size: int = 64,
                 flip_pose: bool = False, upright_passes: int = 0):
        self.net, self.refine_cfg, self.steps, self.from_mean, self.batch_size, self.flip_pose = \
            net, refine_cfg, int(steps), from_mean, batch_size, bool(flip_pose)
        self.upright_passes = int(upright_passes)

    def start(self, renderer, crops: np.ndarray) -> torch.Tensor | None:
        """The network's (N, P) estimates of `crops` (`network_estimate`), None without a network."""
        if self.net is None:
            return None
        return network_estimate(self.net, crops, renderer.layout, self.batch_size, self.flip_pose,
                                self.upright_passes)

    def __call__(self, renderer, crops: np.ndarray, targets: np.ndarray | None = None):
        from .fit import fit_from_mean, refine

        n = len(crops)
        t0 = time.perf_counter()
        init = self.start(renderer, crops)
        t1 = time.perf_counter()
        snaps: dict[int, list] = {}
        if self.from_mean:
            points = curve_steps(self.steps)
            out = torch.zeros(n, renderer.layout.size)
            for sl, images in _crop_batches(crops, self.refine_cfg.batch_size):
                out[sl], hist = fit_from_mean(renderer, images, **{**self.refine_cfg.baseline_kwargs(),
                                                                  "steps": self.steps, "snapshots": points})
                for k, v in hist["snapshots"].items():
                    snaps.setdefault(k, []).append(v)
        elif self.steps > 0:
            points = curve_steps(self.steps)
            out = init.clone()
            for sl, images in _crop_batches(crops, self.refine_cfg.batch_size):
                out[sl], hist = refine(renderer, images, init[sl], snapshots=points,
                                       **{**self.refine_cfg.refine_kwargs(), "steps": self.steps})
                for k, v in hist["snapshots"].items():
                    snaps.setdefault(k, []).append(v)
        else:
            out = init
            snaps = {0: [init]}
        t2 = time.perf_counter()
        return out, {k: torch.cat(v) for k, v in snaps.items()}, \
            {"network_seconds": t1 - t0, "optimisation_seconds": t2 - t1, "steps": self.steps}


class LandmarkEstimator(Estimator):
    """Detector-guided refinement (ifn.landmark_fit) from the network's estimate, or from the mean face
    (net None). __call__(renderer, crops, targets (N, 468, 2) crop pixels, NaN rows where no face was found:
    those images keep their start)."""

    def __init__(self, net, refine_cfg, settings, batch_size: int = 64, flip_pose: bool = False,
                 upright_passes: int = 0):
        super().__init__(net, refine_cfg, 0, net is None, batch_size, flip_pose, upright_passes)
        self.settings = settings

    def __call__(self, renderer, crops: np.ndarray, targets: np.ndarray | None = None):
        from .fit import mean_face_params
        from .landmark_fit import fit_detected

        n = len(crops)
        t0 = time.perf_counter()
        init = mean_face_params(renderer, n) if self.net is None else self.start(renderer, crops)
        t1 = time.perf_counter()
        if targets is None:
            targets = np.full((n, 1, 2), np.nan)
        out, found = fit_detected(renderer, crops, init, targets, self.settings, self.refine_cfg.batch_size,
                                  **self.refine_cfg.refine_kwargs())
        t2 = time.perf_counter()
        return out, {0: out}, {"network_seconds": t1 - t0, "optimisation_seconds": t2 - t1, "steps": 0,
                               "detected": int(found.sum())}


def detect_targets(params: Params, bench: Mapping[str, Any], photos: np.ndarray, log=print
                   ) -> dict[str, np.ndarray]:
    """The detector on every evaluation image: dict bench (N, 468, 2) mesh points in crop pixels (detected on
    the whole dev photo, mapped through the crop), bench68 (N, 68, 2) the detector's 68 landmarks in photo
    pixels, photos (M, 468, 2) crop pixels (detected on the crop itself, upsampled 2x); NaN where no face."""
    from .detect import FaceDetector, detect_crops
    from .landmark_fit import to_crop

    root = Path(resolve(params.evaluate_real.benchmark)) / "images"
    n = len(bench["names"])
    out = {"bench": np.full((n, 468, 2), np.nan), "bench68": np.full((n, 68, 2), np.nan),
           "photos": np.full((len(photos), 468, 2), np.nan)}
    with FaceDetector(params.detect.min_confidence) as detector:
        for k, name in enumerate(bench["names"]):
            image, scale = load_image(root / str(name), max_side=params.real.max_side, return_scale=True)
            faces = detector(image)
            if faces:
                out["bench"][k] = to_crop(faces[0].points * scale, bench["affines"][k])
                out["bench68"][k] = faces[0].landmarks68 * scale
        if len(photos):
            out["photos"] = detect_crops(detector, photos)
    log(f"detector: a face in {int(np.isfinite(out['bench']).all((1, 2)).sum())} / {n} AFLW2000-3D images, "
        f"{int(np.isfinite(out['photos']).all((1, 2)).sum())} / {len(photos)} held-out photos")
    return out


def detector_metrics(bench: Mapping[str, Any], bench68: np.ndarray, seconds: float) -> dict[str, Any]:
    """The detector's own 68-landmark NME, over the images where it found a face (n_detected per bin)."""
    from .nme import nme, nme_report, yaw_bins

    found = np.isfinite(bench68).all((1, 2))
    out: dict[str, Any] = {}
    if found.any():
        report = nme_report(nme(bench68[found], bench["pts68"][found]), bench["yaw_deg"][found])
        out.update({k: v for k, v in report.items() if k != "counts"})
        out["detected_counts"] = report["counts"]
    bins = yaw_bins(bench["yaw_deg"])
    out["benchmark_counts"] = {name: int((bins == b).sum()) for b, name in enumerate(("0_30", "30_60", "60_90"))}
    out["n_detected"] = int(found.sum())
    out["n_benchmark"] = int(len(found))
    out["seconds_per_image"] = seconds / max(len(found), 1)
    return out


def evaluate_estimates(renderer, photos: np.ndarray, photo_records: list[dict], bench: Mapping[str, Any],
                       est_photos: torch.Tensor, est_bench: torch.Tensor, seconds: float) -> dict[str, Any]:
    """Metrics of one variant's estimates (see the module docstring)."""
    from .evaluate import photo_errors
    from .nme import nme, nme_report

    out: dict[str, Any] = {}
    if len(photos):
        images = torch.from_numpy(photos).float() / 255
        pe = photo_errors(renderer, est_photos, images)
        mae, cov = pe["photometric_mae"].numpy(), pe["coverage"].numpy()
        out["photometric_mae"] = float(np.nanmean(mae))
        out["photometric_p90"] = float(np.nanpercentile(mae, 90))
        out["coverage"] = float(cov.mean())
        sources = np.array([r["source"] for r in photo_records])
        for s in dict.fromkeys(sources):
            out[f"photometric_mae_{s}"] = float(np.nanmean(mae[sources == s]))
        out["n_photos"] = int(len(photos))
    if len(bench["crops"]):
        lm = landmarks_in_image(renderer, est_bench, bench["affines"])
        report = nme_report(nme(lm, bench["pts68"]), bench["yaw_deg"])
        out.update({k: v for k, v in report.items() if k != "counts"})
        out["n_benchmark"] = int(len(bench["crops"]))
        out["benchmark_counts"] = report["counts"]
    n = len(photos) + len(bench["crops"])
    out["seconds_per_image"] = seconds / max(n, 1)
    return out


def evaluate_real(params_file="params.yaml", reflectance_path=REFLECTANCE_PATH,
                  metrics_path="metrics/evaluate_real.json", figures_dir="outputs/figures/06_evaluate_real",
                  estimates_path="outputs/evaluate_real/estimates.npz", overrides=None, log=print) -> dict:
    """Evaluate every variant (module docstring); write metrics, figures and estimates; return the metrics."""
    from .atomic import save_figure, save_json, save_npz
    from .figures import metric_bars_figure
    from .learn.train import load_network
    from .synth import build_renderer

    params = load_params(resolve(params_file), overrides)
    cfg = params.evaluate_real
    size = params.real.working_size(params.render.image_size)
    renderer = build_renderer(params, reflectance_path, image_size=size)
    photos, records = heldout_photos(params, cfg.photos, size, log)
    bench = benchmark_crops(params, cfg.benchmark_images, size, log)
    log(f"evaluate_real: {len(photos)} held-out photos, {len(bench['crops'])} AFLW2000-3D dev images")

    def load_variant(path: str):
        net, info = load_network(resolve(path))
        if int(info["image_size"]) != size:
            raise ValueError(f"{path} was trained on {info['image_size']} px images, real crops are {size} px")
        return net

    networks = {variant: load_variant(path) for variant, path in variant_networks(params).items()}
    final = list(networks)[-1]
    look = {"batch_size": cfg.batch_size, "flip_pose": cfg.flip_pose, "upright_passes": cfg.upright_passes}
    estimators = {v: Estimator(net, **look) for v, net in networks.items()}
    estimators["refined"] = Estimator(networks[final], params.refine, cfg.refine_steps, **look)
    estimators["optimization_only"] = Estimator(None, params.refine, params.refine.baseline_steps, from_mean=True)
    targets = {"photos": None, "bench": None}
    if params.detect.enabled:   # the detector-guided path, measured beside (never inside) the detector-free one
        from .landmark_fit import LandmarkFitSettings

        t0 = time.perf_counter()
        targets = detect_targets(params, bench, photos, log)
        detector_seconds = time.perf_counter() - t0
        settings = LandmarkFitSettings.from_config(params.detect)
        for variant, path in guided_networks(params).items():
            estimators[variant] = Estimator(load_variant(path), **look)
        ft_net = load_variant(f"{params.finetune.out_dir}/model.pt")
        estimators["real_finetuned"] = Estimator(ft_net, **look)
        # The detector-guided path's own network is the start: on the tuning images it leaves the fit less to
        # do where the detector finds no face (bench/landmark_fit.py, README).
        estimators["refined_landmarks"] = LandmarkEstimator(ft_net, params.refine, settings, **look)
        estimators["optimization_only_landmarks"] = LandmarkEstimator(None, params.refine, settings, cfg.batch_size)

    metrics, estimates, curves = {}, {}, {}
    n_images = len(photos) + len(bench["crops"])
    for variant, run in estimators.items():
        torch.manual_seed(params.seed)
        empty = (torch.zeros(0, renderer.layout.size), {}, {"network_seconds": 0.0, "optimisation_seconds": 0.0})
        est_p, snap_p, time_p = run(renderer, photos, targets["photos"]) if len(photos) else empty
        est_b, snap_b, time_b = run(renderer, bench["crops"], targets["bench"])
        net_s = time_p["network_seconds"] + time_b["network_seconds"]
        opt_s = time_p["optimisation_seconds"] + time_b["optimisation_seconds"]
        metrics[variant] = evaluate_estimates(renderer, photos, records, bench, est_p, est_b, net_s + opt_s)
        if "detected" in time_b:
            metrics[variant]["n_detected"] = time_b["detected"]
        estimates[f"{variant}/photos"] = est_p.numpy()
        estimates[f"{variant}/benchmark"] = est_b.numpy()
        if run.steps > 0:   # accuracy versus time: the same run, stopped after k steps (time ~ linear in k)
            curves[variant] = []
            for k in sorted(snap_b):
                point = evaluate_estimates(renderer, photos, records, bench,
                                           snap_p.get(k, est_p), snap_b[k], net_s + opt_s * k / run.steps)
                curves[variant].append({"steps": k, **{m: point.get(m) for m in (
                    "photometric_mae", "nme_mean", "seconds_per_image")}})
        m = metrics[variant]
        log(f"{variant}: photometric {m.get('photometric_mae', float('nan')):.4f}, NME "
            f"{100 * m.get('nme_mean', float('nan')):.2f} % (bins {100 * m.get('nme_0_30', float('nan')):.2f} / "
            f"{100 * m.get('nme_30_60', float('nan')):.2f} / {100 * m.get('nme_60_90', float('nan')):.2f}), "
            f"{m['seconds_per_image']:.3f} s/image")
    if params.detect.enabled:
        metrics["detector"] = detector_metrics(bench, targets["bench68"], detector_seconds)
        log(f"detector (own 68 landmarks, {metrics['detector']['n_detected']} images with a face): NME "
            f"{100 * metrics['detector'].get('nme_mean', float('nan')):.2f} %")
    curves["network"] = [{"steps": 0, **{m: metrics[final].get(m) for m in (
        "photometric_mae", "nme_mean", "seconds_per_image")}}]
    log(f"evaluate_real: {n_images} images per variant")
    save_npz(resolve(estimates_path), **{
        **{k.replace("/", "__"): v for k, v in estimates.items()},
        "photos__source": np.array([r["source"] for r in records]),
        "photos__name": np.array([r["name"] for r in records]),
        "benchmark__name": bench["names"], "benchmark__yaw_deg": bench["yaw_deg"],
        "benchmark__affine": bench["affines"], "benchmark__pts68": bench["pts68"]})
    save_json(resolve(metrics_path), metrics)
    save_json(Path(resolve(estimates_path)).parent / "accuracy_vs_time.json", curves)
    figs = Path(resolve(figures_dir))
    save_figure(accuracy_time_figure(curves), figs / "accuracy_vs_time.png")
    for name in METRIC_NAMES:
        save_figure(metric_bars_figure(metrics, [name], f"real images: {name}"), figs / f"{name}.png")
    save_figure(landmarks_figure(bench, {v: landmarks_in_image(renderer, torch.from_numpy(estimates[f"{v}/benchmark"]),
                                                               bench["affines"])
                                         for v in ("synthetic_only", final, "refined", "optimization_only",
                                                   "real_finetuned", "refined_landmarks") if f"{v}/benchmark" in estimates}),
                figs / "landmarks.png")
    return metrics


def landmarks_figure(bench: Mapping[str, Any], landmarks: Mapping[str, np.ndarray], n: int = 6):
    """Benchmark crops (one per column, spread over yaw) with the ground-truth (white) and each variant's
    68 landmarks (one row per variant), in crop pixels."""
    from matplotlib.figure import Figure

    from .real import invert_affine

    order = np.argsort(np.abs(bench["yaw_deg"]))
    cols = order[np.linspace(0, len(order) - 1, min(n, len(order))).round().astype(int)] if len(order) else []
    fig = Figure(figsize=(1.8 * max(len(cols), 1), 1.9 * len(landmarks)))
    axes = fig.subplots(len(landmarks), max(len(cols), 1), squeeze=False)
    for r, (variant, lm) in enumerate(landmarks.items()):
        for c, i in enumerate(cols):
            ax = axes[r, c]
            inv = invert_affine(bench["affines"][i])
            gt, pr = apply_affine(inv, bench["pts68"][i]), apply_affine(inv, lm[i])
            ax.imshow(bench["crops"][i])
            ax.scatter(gt[:, 0], gt[:, 1], s=3, c="white")
            ax.scatter(pr[:, 0], pr[:, 1], s=3, c="red")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"yaw {bench['yaw_deg'][i]:.0f}", fontsize=8)
        axes[r, 0].set_ylabel(variant, fontsize=8)
    fig.tight_layout()
    return fig


TIME_FLOOR_S = 1e-3  # accuracy-versus-time plots draw faster points (the mean face: no work at all) here


def accuracy_time_figure(curves: Mapping[str, list]):
    """Photometric error and NME against seconds per image (log x) for the network alone, the network +
    k refinement steps and the optimisation from the mean face (points labelled with k). Points faster than
    TIME_FLOOR_S are drawn at it (else the mean face's ~0 s stretches the log axis over many decades)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    styles = {"network": ("C0", "o"), "refined": ("C1", "s-"), "optimization_only": ("C3", "^-")}
    for ax, metric, label in ((axes[0], "photometric_mae", "photometric MAE (held-out photos)"),
                              (axes[1], "nme_mean", "NME (AFLW2000-3D dev), %")):
        for variant, points in curves.items():
            color, marker = styles.get(variant, ("C2", "x-"))
            xs = [max(p["seconds_per_image"], TIME_FLOOR_S) for p in points if p.get(metric) is not None]
            ys = [p[metric] * (100 if metric == "nme_mean" else 1) for p in points if p.get(metric) is not None]
            ax.plot(xs, ys, marker, color=color, label=variant)
            for p, x, y in zip(points, xs, ys):
                if variant != "network":
                    ax.annotate(str(p["steps"]), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        ax.set_xscale("log")
        ax.set_xlabel(f"seconds per image (this CPU; < {TIME_FLOOR_S:g} s drawn at {TIME_FLOOR_S:g})")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
