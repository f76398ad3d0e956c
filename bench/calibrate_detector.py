"""Builds the two tables the face detector (ifn.detect) uses, and prints how well they fit.

    python bench/calibrate_detector.py            # both (needs models/face_model from the pipeline, data/)
    python bench/calibrate_detector.py --only mp68 | --only ict

1. mp68 -> src/ifn/data/mediapipe_68.json: each of the 68 AFLW2000-3D landmarks as a fixed linear combination
   (weights summing to 1) of the K mesh points nearest to it on average, least squares over the dev images
   that stage evaluate_real does not report (bench/tuning_split.py; never the reported ones). Prints the
   detector's own 68-landmark NME per yaw bin on the tuning images and on the reported ones.
2. ict -> src/ifn/data/mediapipe_ict.json: renders faces of the project's model (random identity, albedo, light,
   hair, |yaw| <= 25 deg) at 256 px, runs the detector on each render and looks up, under every detected point,
   the point of the MEAN face the renderer drew there (the rasterizer's barycentric interpolation of mean-face
   positions). Per mesh point, the vertex nearest to the median of those positions is its model vertex;
   `spread_cm` is the median distance of the samples from it. Prints the spread and, on fresh renders, the
   distance in pixels between the detected points and their vertices' projections.
3. landmarks -> src/ifn/data/ict_landmarks68.json: the 68-landmark definition of the face model (a vertex per
   landmark) calibrated to the AFLW2000-3D convention: every tuning image with a detected face is fitted to the
   detector's 468 points (ifn.landmark_fit, landmark-only, from the mean face; the 68 are not used), and each
   landmark takes the face vertex within 3 cm of its ICT vertex whose projection lies nearest the annotation on
   average (normalised as NME). Prints the fits' NME with the ICT definition and the calibrated one, on the
   tuning images and, for the record only, on the reported ones.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tuning_split import tuning_indices  # noqa: E402

from ifn.config import load_params  # noqa: E402
from ifn.detect import CORRESPONDENCE_PATH, MP68_PATH, N_MESH, FaceDetector  # noqa: E402
from ifn.nme import gt_box_size, load_aflw2000_dev, nme, nme_report  # noqa: E402
from ifn.paths import resolve  # noqa: E402
from ifn.real import load_image  # noqa: E402

PARAMS_FILE = "params.yaml"
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=0))
    tmp.replace(path)


def detect_dev(params, detector) -> tuple[np.ndarray, np.ndarray]:
    """Every dev photo through the detector: (indices found, (N, 468, 2) points in file pixels)."""
    bench = load_aflw2000_dev(resolve(params.evaluate_real.benchmark))
    found, pts = [], []
    for i, path in enumerate(bench["paths"]):
        image, scale = load_image(path, max_side=params.real.max_side, return_scale=True)
        faces = detector(image)
        if faces:
            found.append(i)
            pts.append(faces[0].points * scale)
    return np.array(found), np.stack(pts)


def calibrate_mp68(params, detector, k: int = 4) -> None:
    bench = load_aflw2000_dev(resolve(params.evaluate_real.benchmark))
    found, pts = detect_dev(params, detector)
    tune = set(tuning_indices(params, per_bin=400))
    is_tune = np.array([i in tune for i in found])
    gt = bench["pts68"][found]
    size = gt_box_size(gt)
    t_pts, t_gt, t_size = pts[is_tune], gt[is_tune], size[is_tune]
    cost = (np.linalg.norm(t_pts[:, None] - t_gt[:, :, None], axis=-1) / t_size[:, None, None]).mean(0)  # (68, 468)
    entries, w = [], np.zeros((68, N_MESH))
    for j in range(68):
        near = np.argsort(cost[j])[:k]
        # Weights summing to 1 exactly (the combination moves with the face): relative to the first point,
        # y - p0 = sum_{k>=1} w_k (p_k - p0), w_0 = 1 - sum_{k>=1} w_k; least squares over both coordinates.
        a = t_pts[:, near, :]                                               # (N, k, 2)
        rel = a[:, 1:] - a[:, :1]                                           # (N, k-1, 2)
        m = np.concatenate([rel[..., 0], rel[..., 1]], 0)
        y = np.concatenate([t_gt[:, j, 0] - a[:, 0, 0], t_gt[:, j, 1] - a[:, 0, 1]])
        rest = np.linalg.lstsq(m, y, rcond=None)[0]
        wj = np.concatenate([[1.0 - rest.sum()], rest])
        w[j, near] = wj
        entries.append({"points": near.tolist(), "weights": [float(x) for x in wj]})
    _atomic_json(MP68_PATH, {"what": "68 AFLW2000-3D landmarks = sum of weights x MediaPipe face-mesh points",
                             "built_by": "bench/calibrate_detector.py --only mp68",
                             "tuning_images": int(is_tune.sum()), "landmarks": entries})
    pred = np.einsum("jm,nmc->njc", w, pts)
    yaw = bench["yaw_deg"]
    print(f"detector found a face in {len(found)} / {len(yaw)} dev photos")
    for name, sel in (("tuning", is_tune), ("reported", ~is_tune)):
        rep = nme_report(nme(pred[sel], gt[sel]), yaw[found][sel])
        print(f"{name:>9}: NME {100 * rep['nme_mean']:.2f} %  [0,30) {100 * rep['nme_0_30']:.2f}  "
              f"[30,60) {100 * rep['nme_30_60']:.2f}  [60,90] {100 * rep['nme_60_90']:.2f}  counts {rep['counts']}")
    print(f"wrote {MP68_PATH}")


def _renders(params, n: int, seed: int, size: int = 256):
    """n synthetic faces at `size` px: (uint8 images (n, S, S, 3), mean-face position images (n, S, S, 3) with
    NaN off the mesh, renderer, groups)."""
    from ifn.model.priors import sample_parameters
    from ifn.render.backgrounds import random_backgrounds
    from ifn.render.color import linear_to_srgb, srgb_to_linear
    from ifn.render.renderer import render_mesh
    from ifn.nuisance import paint_hair
    from ifn.synth import build_renderer, face_centre

    renderer = build_renderer(params, image_size=size)
    g = torch.Generator().manual_seed(seed)
    prior = params.synthesize.prior
    groups = sample_parameters(n, renderer.layout, prior, g, renderer.face_model.expression_names,
                               face_centre(renderer))
    groups["expression"].zero_()
    groups["rotation"][:, 0] = (2 * torch.rand(n, generator=g) - 1) * np.radians(25)
    groups["rotation"][:, 1:] *= 0.5
    bg = random_backgrounds(n, size, ("gradient", "solid"), g)
    with torch.no_grad():
        albedo = paint_hair(renderer, renderer.albedo(groups), 1.0, g)
        out = renderer(groups, background=srgb_to_linear(bg), albedo=albedo)
        images = (linear_to_srgb(out.image) * 255).round().to(torch.uint8).numpy()
        mean = renderer.face_model.mean[None].expand(n, -1, -1)
        pos = render_mesh(out.vertices, renderer.face_model.triangles, mean, renderer.camera,
                          renderer.settings.raster, background=float("nan"))
    return images, pos.image.numpy(), renderer, groups, out


def calibrate_ict(params, detector, n: int = 160) -> None:
    images, pos, renderer, _, _ = _renders(params, n, seed=1234)
    size = images.shape[1]
    samples = np.full((n, N_MESH, 3), np.nan)
    detected = 0
    for i in range(n):
        faces = detector(images[i])
        if not faces:
            continue
        detected += 1
        xy = np.clip(np.round(faces[0].points - 0.5).astype(int), 0, size - 1)   # pixel centres at +0.5
        samples[i] = pos[i, xy[:, 1], xy[:, 0]]
    fm = renderer.face_model
    face = fm.part_mask("face").numpy()
    mean = fm.mean.numpy()
    candidates = np.flatnonzero(face)
    med = np.nanmedian(samples, 0)                                             # (468, 3)
    ok = np.isfinite(med).all(1) & (np.isfinite(samples).all(2).sum(0) >= max(5, detected // 4))
    vert = np.full(N_MESH, -1)
    spread = np.full(N_MESH, np.nan)
    for p in np.flatnonzero(ok):
        d = np.linalg.norm(mean[candidates] - med[p], axis=1)
        v = candidates[d.argmin()]
        vert[p] = v
        spread[p] = float(np.nanmedian(np.linalg.norm(samples[:, p] - mean[v], axis=1)))
    source = fm.source_index.numpy()[np.maximum(vert, 0)]
    source = np.where(vert >= 0, source, -1)
    contour = np.zeros(N_MESH, bool)
    contour[list(FACE_OVAL)] = True
    _atomic_json(CORRESPONDENCE_PATH, {
        "what": "MediaPipe face-mesh point -> vertex of the ICT-FaceKit source mesh (-1: none)",
        "built_by": "bench/calibrate_detector.py --only ict",
        "meta": {"renders": n, "detected": detected, "image_size": size, "max_yaw_deg": 25},
        "source_vertices": source.tolist(), "spread_cm": [None if not np.isfinite(s) else round(s, 4) for s in spread],
        "contour": contour.tolist()})
    print(f"detected {detected} / {n} renders; {int(ok.sum())} / {N_MESH} points with a vertex; spread cm "
          f"median {np.nanmedian(spread):.3f}, p90 {np.nanpercentile(spread, 90):.3f} "
          f"(interior {np.nanmedian(spread[~contour]):.3f}, oval {np.nanmedian(spread[contour]):.3f})")
    print(f"wrote {CORRESPONDENCE_PATH}")


LANDMARKS_PATH = Path(__file__).resolve().parents[1] / "src/ifn/data/ict_landmarks68.json"


def fitted_dev(params, detector, indices):
    """Landmark-only fits of the dev images `indices` with a detected face: (kept indices, renderer, params,
    affines, gt (N, 68, 2), yaw)."""
    from ifn.evaluate_real import benchmark_crops
    from ifn.fit import mean_face_params
    from ifn.landmark_fit import LandmarkFitSettings, fit_detected, to_crop
    from ifn.synth import build_renderer

    renderer = build_renderer(params)
    bench = benchmark_crops(params, 0, renderer.settings.image_size, indices=indices)
    dev = load_aflw2000_dev(resolve(params.evaluate_real.benchmark))
    keep, targets = [], []
    for k, i in enumerate(indices):
        image, scale = load_image(dev["paths"][i], max_side=params.real.max_side, return_scale=True)
        faces = detector(image)
        if faces:
            keep.append(k)
            targets.append(to_crop(faces[0].points * scale, bench["affines"][k]))
    keep = np.array(keep)
    init = mean_face_params(renderer, len(keep))
    settings = LandmarkFitSettings(coarse_steps=80, coarse_lr=0.1, steps=0)
    out, _ = fit_detected(renderer, bench["crops"][keep], init, np.stack(targets), settings, 32,
                          **params.refine.refine_kwargs())
    return (np.asarray(indices)[keep], renderer, out, bench["affines"][keep], bench["pts68"][keep],
            bench["yaw_deg"][keep])


def _projected(renderer, params, affines, ids) -> np.ndarray:
    from ifn.real import apply_affine
    with torch.no_grad():
        xy, _ = renderer.camera.project(renderer.posed(params)[:, ids])
    return np.stack([apply_affine(a, p) for a, p in zip(affines, xy.double().numpy())])


def calibrate_landmarks(params, detector, radius_cm: float = 3.0) -> None:
    from ifn.evaluate_real import reported_indices
    params = load_params(PARAMS_FILE, overrides={"face_model.landmarks": "ict"})  # start from ICT's definition
    yaw_all = load_aflw2000_dev(resolve(params.evaluate_real.benchmark))["yaw_deg"]
    tune = tuning_indices(params, per_bin=400)
    _, renderer, fit, affines, gt, yaw = fitted_dev(params, detector, tune)
    fm = renderer.face_model
    ict = fm.landmarks.numpy()
    face = np.flatnonzero(fm.part_mask("face").numpy())
    mean = fm.mean.numpy()
    proj = _projected(renderer, fit, affines, torch.from_numpy(face))            # (N, F, 2)
    size = gt_box_size(gt)
    chosen = ict.copy()
    for j in range(68):
        near = np.flatnonzero(np.linalg.norm(mean[face] - mean[ict[j]], axis=1) <= radius_cm)
        cost = (np.linalg.norm(proj[:, near] - gt[:, j][:, None], axis=-1) / size[:, None]).mean(0)
        chosen[j] = face[near[cost.argmin()]]
    source = fm.source_index.numpy()[chosen]
    _atomic_json(LANDMARKS_PATH, {
        "what": "68 AFLW2000-3D landmarks as vertices of the ICT-FaceKit source mesh (calibrated, see built_by)",
        "built_by": "bench/calibrate_detector.py --only landmarks", "tuning_images": int(len(gt)),
        "radius_cm": radius_cm, "source_vertices": source.tolist()})
    print(f"wrote {LANDMARKS_PATH}; moved {int((chosen != ict).sum())} of 68 landmarks, by "
          f"{np.linalg.norm(mean[chosen] - mean[ict], axis=1).mean():.2f} cm on average")
    reported = reported_indices(yaw_all, params.evaluate_real.benchmark_images, params.evaluate_real.tuning_every)
    rep = fitted_dev(params, detector, reported)
    for name, (ren, prm, aff, g, y) in (("tuning", (renderer, fit, affines, gt, yaw)),
                                         ("reported", rep[1:])):
        for label, ids in (("ICT definition", ict), ("calibrated", chosen)):
            r = nme_report(nme(_projected(ren, prm, aff, torch.from_numpy(ids)), g), y)
            print(f"{name:>9} {label:<15} NME {100 * r['nme_mean']:.2f} %  [0,30) {100 * r['nme_0_30']:.2f}  "
                  f"[30,60) {100 * r['nme_30_60']:.2f}  [60,90] {100 * r['nme_60_90']:.2f}  {r['counts']}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["mp68", "ict", "landmarks"])
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    global PARAMS_FILE
    PARAMS_FILE = args.params
    params = load_params(args.params)
    with FaceDetector(min_confidence=0.3) as detector:
        if args.only in (None, "mp68"):
            calibrate_mp68(params, detector)
        if args.only in (None, "ict"):
            calibrate_ict(params, detector)
        if args.only in (None, "landmarks"):
            calibrate_landmarks(params, detector)


if __name__ == "__main__":
    main()
