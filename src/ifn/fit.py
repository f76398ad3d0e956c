"""Analysis-by-synthesis refinement: optimise face parameters so the rendered face matches a photo.

Energy per image (all terms (B,)):

    E = w_photo * mean over rendered-face pixels of rho(|render_srgb - photo|)       (robust photometric term)
      + w_photo * w_edge * edge                                                      (silhouette gradients, value 0)
      + w_landmark * mean over landmarks of |l(p) - l*|^2 / S^2                       (optional 2D landmarks, px)
      + w_translation_prior * |(t_face - t_anchor) / TRANSLATION_SIGMA|^2   (t_anchor: 0, or the initial estimate)
      + w_shape_prior * |alpha|^2 + w_reflectance_prior * |beta_r|^2 + w_expression_prior * |beta_e|^2

rho acts on the per-pixel RGB residual norm (sRGB, [0, 1]): "l2" r^2, "l1" r (smoothed at 0), "huber" r^2 / (2 d)
below d = `huber_delta`, r - d / 2 above (quadratic near the optimum, L1 for outliers: hair, occluders,
background inside the rendered silhouette).

The rasterizer's coverage is a hard decision: the photometric term alone gives geometry gradients only through
the interpolated colours inside the face, nothing at its outline. `silhouette_edge_term` adds the missing
outline derivatives (OpenDR-style, linearised: covering a photo pixel costs rho(render - photo), leaving it
uncovered `edge_lambda`, by default the face's current mean pixel cost); it has value 0, so reported energies are the photometric + prior terms. On synthetic
tests it halves the remaining rotation error and photometric error of a refinement.

Adam runs on named parameter groups with per-group step sizes (`GROUP_LR` x lr, cosine-decayed to lr_final x):
the groups live in very different units (rotation in radians, translation in cm, SH light ~ 3.5 for white
ambient light). The translation is optimised as the face centre's (`to_pivot`), so a rotation turns the head
about the face instead of swinging the face sideways about the head origin 9 cm behind it; without this,
rotations of more than a few degrees are out of reach. Expression weights are projected back to [0, 1] after
every step; per image the parameters of the lowest energy seen are returned.

What to expect (synthetic 128 px renders of the full pipeline model, 30 steps, ~0.25 s/step for 6 images on one
CPU thread): from parameters perturbed like a decent network prediction (rotation error 4 deg) the photometric
MAE drops 5x (0.054 -> 0.011), rotation error to 1.3 deg, albedo error by a third; depth (translation z)
stays ambiguous with the face's size. fit_from_mean (100 steps) halves the rotation error of the frontal start
(39 -> 19 deg): good below ~35 deg of yaw, lost beyond ~45 deg.
On real photos (AFLW2000-3D dev, 60 images disjoint from the stage evaluate_real subset, the synthetic-only network
of the default pipeline, 30 steps) the photometric energy has minima the model's face does not belong in: with a
negligible translation prior (0.001, centre) the fit slid the face onto dark background and the landmark NME went
from 23.2 % to 32.2 % while the photometric MAE halved; anchoring the prior to the network's estimate
(`anchor_translation`, weight 0.1 / 0.3 / 1.0) keeps NME at 24.8 / 24.3 / 24.2 % at a photometric MAE of
0.102 / 0.104 / 0.105 (`python bench/refine_real_prior.py`). 0.3 already fails the synthetic recovery test
above; the default is 0.1.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .config import FIT_GROUPS, ROBUST, RefineConfig  # noqa: F401  (RefineConfig: section `refine`, re-exported)
from .evaluate import face_triangles
from .render.camera import euler_to_matrix
from .render.color import linear_to_srgb
from .render.renderer import Renderer
from .render.shading import AMBIENT_WHITE

GROUPS = FIT_GROUPS        # the parameter groups a fit can optimise (params: breed.refine_groups)
# Step size of each group relative to `lr` (Adam moves a coordinate by about lr * scale per step).
GROUP_LR = {
    "shape": 1.0,          # N(0, 1) weights
    "expression": 0.5,     # [0, 1] weights
    "reflectance": 1.0,    # N(0, 1) weights
    "illumination": 2.0,   # SH coefficients (white ambient of radiance 1: 3.54)
    "rotation": 1.0,       # radians (lr 0.04: 2.3 degrees per step at first)
    "translation": 10.0,   # cm, of the face centre (see `to_pivot`)
}
# Spread of the translation in normalised crops (synthetic framing: x, y within +-1.5 cm plus the pose correction,
# z within +-10 cm): the translation prior is |t / TRANSLATION_SIGMA|^2.
TRANSLATION_SIGMA = (3.0, 3.0, 10.0)
DEFAULT_AMBIENT = 0.8      # fit_from_mean's initial light: uniform white ambient of this radiance


def robust_penalty(residual: torch.Tensor, kind: str = "huber", delta: float = 0.1) -> torch.Tensor:
    """(..., C) residuals -> (...) rho(|r|) of the per-pixel residual norm (see the module docstring)."""
    sq = residual.pow(2).sum(-1)
    if kind == "l2":
        return sq
    norm = torch.sqrt(sq + 1e-8)
    if kind == "l1":
        return norm - 1e-4  # smooth at 0, exactly 0 there
    if kind == "huber":
        return torch.where(norm < delta, 0.5 * sq / delta, norm - 0.5 * delta)
    raise ValueError(f"robust = {kind!r}: one of {', '.join(ROBUST)}")


def face_pivot(renderer: Renderer) -> torch.Tensor:
    """(3,) model-space centre of the mean face's landmarks, cm (as ifn.synth.face_centre)."""
    ids = renderer.face_model.landmarks
    return renderer.face_model.mean[ids[ids >= 0]].mean(0)


def to_pivot(translation: torch.Tensor, rotation: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    """Translation of the head origin -> translation of the face centre `pivot` (t + R c - c): rotating with
    the latter fixed turns the head about the face, not about the head's origin behind it."""
    pivot = pivot.to(translation)
    return translation + euler_to_matrix(rotation) @ pivot - pivot


def from_pivot(centred: torch.Tensor, rotation: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    pivot = pivot.to(centred)
    return centred - (euler_to_matrix(rotation) @ pivot - pivot)


def energy_terms(renderer: Renderer, groups: Mapping[str, torch.Tensor], images: torch.Tensor,
                 image_mask: torch.Tensor | None = None, landmarks: torch.Tensor | None = None,
                 robust: str = "huber", huber_delta: float = 0.1, edge_lambda: float | None = None,
                 translation_anchor: torch.Tensor | None = None, landmark_vertices: torch.Tensor | None = None,
                 landmark_weights: torch.Tensor | None = None, photometric: bool = True
                 ) -> dict[str, torch.Tensor]:
    """Unweighted energy terms (B,) of named parameter groups against sRGB photos (B, H, W, 3) in [0, 1]:
    photo, edge, landmark (0 without a target), shape_prior, reflectance_prior, expression_prior; also
    coverage (rendered face pixels counted). `edge_lambda`: cost of an unexplained photo pixel for the edge term
    (default, per image: the larger of rho at a residual norm of huber_delta and the mean cost of the covered
    pixels; a photo pixel is taken into the face where the render explains it better than that).
    `translation_anchor`: (B, 3) face-centre translation (`to_pivot`, cm) the translation prior pulls towards
    (default: 0, the centre of the synthetic framing).
    Landmarks: `landmarks` (B, L, 2) render-pixel targets of the vertices `landmark_vertices` (L,) (default: the
    renderer's 68 landmark vertices, L = 68), weighted per point by `landmark_weights` ((L,) or (B, L), default
    1; NaN targets count 0): landmark = sum_l w_l |x_l - x*_l|^2 / sum_l w_l / S^2 (S = image side).
    `photometric` False: no rendering at all (photo, edge and coverage are 0), for landmark-only steps."""
    if not photometric:
        # Only the landmark vertices are posed (the term needs nothing else): ~100x cheaper than the whole mesh.
        ids = renderer.face_model.landmarks if landmark_vertices is None else landmark_vertices
        ids = ids.to(groups["shape"].device)
        verts = posed_subset(renderer, groups, ids.clamp_min(0))
        local = torch.where(ids >= 0, torch.arange(len(ids), device=ids.device), ids)
        b = verts.shape[0]
        zero = verts.new_zeros(b)
        terms = {"photo": zero, "edge": zero, "coverage": zero}
        terms.update(_landmark_and_priors(renderer, groups, verts, landmarks, local, landmark_weights,
                                          translation_anchor))
        return terms
    out = renderer(groups, background=0.0)
    render = linear_to_srgb(out.image)
    # Compare the photo only where the face part of the mesh is visible: the scalp, ears, neck and mouth socket
    # of the render mesh cover hair, background and clothes in a real photo, which the model cannot explain.
    ptf = out.pix_to_face
    mask = out.mask & face_triangles(renderer).to(ptf.device)[ptf.clamp_min(0)]
    if image_mask is not None:
        mask = mask & image_mask.bool()
    m = mask.to(render.dtype)
    count = m.sum((1, 2))
    rho = robust_penalty(render - images, robust, huber_delta)
    photo = (rho * m).sum((1, 2)) / count.clamp_min(1.0)
    b = images.shape[0]
    if edge_lambda is None:
        # Per image: the larger of rho(huber_delta) and the mean cost of the covered pixels. With a fixed small
        # cost, every real-photo pixel (residuals ~0.2-0.3, far above the synthetic ~0.02) looks better left
        # unexplained and the face shrinks (measured: -30 % coverage in 30 steps); relative to the current fit,
        # the outline moves to take in pixels explained better than the face's average.
        floor = robust_penalty(images.new_tensor([[huber_delta, 0.0, 0.0]]), robust, huber_delta)
        lam = torch.maximum(floor.expand(b), photo.detach())
    else:
        lam = images.new_full((b,), float(edge_lambda))
    edge = silhouette_edge_term(renderer, out, render, images, m, rho, robust, huber_delta, lam)
    terms = {"photo": photo, "edge": edge / count.clamp_min(1.0), "coverage": count.detach()}
    terms.update(_landmark_and_priors(renderer, groups, out.vertices, landmarks, landmark_vertices,
                                      landmark_weights, translation_anchor))
    return terms


def posed_subset(renderer: Renderer, groups: Mapping[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """(B, L, 3) camera-space positions of the vertices `ids` (L,) (= renderer.posed(groups)[:, ids])."""
    fm = renderer.face_model
    shape, expression = groups["shape"], groups["expression"]
    s, e = shape.shape[-1], expression.shape[-1]
    x = fm.mean[ids].to(shape) + torch.einsum("bs,slc->blc", shape, fm.shape_basis[:s, ids].to(shape))
    if e:
        x = x + torch.einsum("be,elc->blc", expression, fm.expression_basis[:e, ids].to(expression))
    return renderer.camera.pose(x, groups["rotation"], groups["translation"])


def landmark_term(renderer: Renderer, vertices: torch.Tensor, targets: torch.Tensor,
                  vertex_ids: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) weighted mean squared distance (in units of the image side) between the projections of camera-space
    `vertices` (B, V, 3) at `vertex_ids` (L,) (default: the 68 landmark vertices; -1 = none) and `targets`
    (B, L, 2) render pixels (NaN = unknown); `weights` (L,) or (B, L), default 1."""
    if vertex_ids is None:
        xy = renderer.landmarks(vertices)
    else:
        ids = vertex_ids.to(vertices.device)
        xy, _ = renderer.camera.project(vertices[:, ids.clamp_min(0)])
        xy = torch.where((ids >= 0)[None, :, None], xy, torch.full_like(xy, float("nan")))
    valid = torch.isfinite(targets).all(-1) & torch.isfinite(xy).all(-1)
    w = valid.to(xy.dtype)
    if weights is not None:
        w = w * weights.to(xy)
    diff = torch.where(valid[..., None], xy - torch.nan_to_num(targets), torch.zeros_like(xy))
    size = float(renderer.settings.image_size)
    return (w * diff.pow(2).sum(-1)).sum(-1) / w.sum(-1).clamp_min(1e-8) / size ** 2


def _landmark_and_priors(renderer, groups, vertices, landmarks, landmark_vertices, landmark_weights,
                         translation_anchor) -> dict[str, torch.Tensor]:
    terms = {}
    if landmarks is not None:
        terms["landmark"] = landmark_term(renderer, vertices, landmarks, landmark_vertices, landmark_weights)
    else:
        terms["landmark"] = vertices.new_zeros(vertices.shape[0])
    sigma = groups["translation"].new_tensor(TRANSLATION_SIGMA)
    centred = to_pivot(groups["translation"], groups["rotation"], face_pivot(renderer))
    if translation_anchor is not None:
        centred = centred - translation_anchor
    terms["translation_prior"] = (centred / sigma).pow(2).sum(-1)
    terms["shape_prior"] = groups["shape"].pow(2).sum(-1)
    terms["reflectance_prior"] = groups["reflectance"].pow(2).sum(-1)
    terms["expression_prior"] = groups["expression"].pow(2).sum(-1)
    return terms


def _box3(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> 3x3 neighbourhood sums (replicate padding: no edge at the image border)."""
    c = x.shape[1]
    k = x.new_ones(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def silhouette_edge_term(renderer: Renderer, out, render: torch.Tensor, images: torch.Tensor, mask: torch.Tensor,
                         rho: torch.Tensor, robust: str, delta: float, lam: torch.Tensor | float) -> torch.Tensor:
    """(B,) linearised change of a segmentation energy when the face's outline moves (gradients only; value 0).

    The rasterizer's coverage has no gradient, so a photometric term over the rendered mask cannot grow or
    shrink the silhouette. Model instead: a covered pixel costs rho(render - photo), an uncovered one `lam`.
    At an outline pixel p (covered, with uncovered 3x3 neighbours) moving the outline outwards by delta_p pixels
    covers photo pixels outside (cost change ~ delta_p * (rho_out - lam)), inwards uncovers p (~ delta_p *
    (rho_p - lam)). delta_p = n_p . (screen motion of the surface point under p), n_p the outward normal of the
    mask. The coefficients are detached; the returned sum is 0 in value and carries only that gradient (OpenDR-
    style image-space boundary derivatives).
    """
    xy, _ = renderer.camera.project(out.vertices)                      # (B, V, 2) differentiable
    u = out.fragments.interpolate(xy, bary_grad=False)                  # material point's screen motion
    motion = u - u.detach()                                             # (B, H, W, 2), value 0
    with torch.no_grad():
        m = mask[:, None]
        outside = _box3(1 - m)                                          # uncovered neighbours
        outline = (m[:, 0] > 0) & (outside[:, 0] > 0)
        mp = F.pad(m, (1, 1, 1, 1), mode="replicate")
        gx = (mp[..., 1:-1, 2:] - mp[..., 1:-1, :-2])[:, 0]
        gy = (mp[..., 2:, 1:-1] - mp[..., :-2, 1:-1])[:, 0]
        normal = -torch.stack([gx, gy], -1)                             # points out of the mask
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        photo_out = _box3(images.permute(0, 3, 1, 2) * (1 - m)) / outside.clamp_min(1e-6)
        rho_out = robust_penalty(render - photo_out.permute(0, 2, 3, 1), robust, delta)
        lam = torch.as_tensor(lam, dtype=rho.dtype, device=rho.device).reshape(-1, 1, 1)   # scalar or (B,)
        coeff = torch.where(outline, 0.5 * (rho_out + rho.detach()) - lam, torch.zeros_like(rho))
    delta_px = (motion * normal).sum(-1)
    return (coeff * delta_px).sum((1, 2))


WEIGHTED = ("photo", "edge", "landmark", "translation_prior", "shape_prior", "reflectance_prior", "expression_prior")


def refine(renderer: Renderer, images: torch.Tensor, init_params: torch.Tensor, steps: int = 30, lr: float = 0.04,
           optimizer: str = "adam", w_photo: float = 1.0, w_landmark: float = 0.0, w_shape_prior: float = 1e-4,
           w_reflectance_prior: float = 1e-4, w_expression_prior: float = 1e-3, w_translation_prior: float = 1e-3,
           anchor_translation: bool = False, robust: str = "huber", huber_delta: float = 0.1, w_edge: float = 1.0,
           edge_lambda: float | None = None,
           landmarks: torch.Tensor | None = None, image_mask: torch.Tensor | None = None,
           landmark_vertices: torch.Tensor | None = None, landmark_weights: torch.Tensor | None = None,
           free: Sequence[str] = GROUPS, group_lr: Mapping[str, float] | None = None, lr_final: float = 0.1,
           return_best: bool = True, snapshots: Sequence[int] = (), log_every: int = 0,
           log: Callable[[str], None] = print, fit_size: int = 0, fit_region: str = "all"
           ) -> tuple[torch.Tensor, dict]:
    """Refine parameters (B, P) so `renderer` reproduces `images` (B, H, W, 3) sRGB in [0, 1].

    landmarks   optional (B, L, 2) 2D targets in render pixels (NaN = unknown), used when w_landmark > 0: of the
                68 landmark vertices, or of `landmark_vertices` (L,) with per-point `landmark_weights` ((L,) or
                (B, L)); see `landmark_term`. With w_photo = 0 nothing is rendered (landmark-only steps).
    image_mask  optional (B, H, W) photo pixels to compare (e.g. not the padded border of a crop)
    free        parameter groups optimised (the others stay at init)
    group_lr    overrides of GROUP_LR (per-group step size relative to lr)
    lr_final    the step size decays (cosine) from lr to lr * lr_final over the steps
    return_best per image, return the parameters of the lowest energy seen (else those after the last step)
    snapshots   steps k (0 = init, steps = after the last update) at which to keep the parameters, lowest energy
                so far per image (as `return_best` returns them): history["snapshots"][k] (B, P), for
                accuracy-versus-time curves
    w_edge, edge_lambda  the silhouette term (see `silhouette_edge_term`); w_edge = 0 switches it off
    anchor_translation   the translation prior pulls the face centre towards where `init_params` put it (a
                network's estimate) instead of the crop centre
    fit_size    optimise at this render size (pixels; 0 = the renderer's): the photos are area-downsampled, the
                landmark targets scaled, the renderer `resized` (the camera is defined by its field of view, so
                the parameters mean the same at every size). Each step costs about (fit_size / size)^2 of the
                pixel work; the vertex work stays.
    fit_region  "all": render the whole mesh; "face": only the face part (+ the landmark vertices), the part the
                photometric term compares (`face_triangles`): the head, neck, eyeballs and mouth socket then
                no longer occlude it (rarely matters: they lie behind it), ~57 % of the vertices to pose and shade

    Returns (params (B, P) detached, history) with history[term] (steps + 1, B) for the total "energy", every
    term and "coverage", "step_seconds" (steps,) and "best_step" (B,). Runs on the device of `images`; the
    renderer must be there too (`renderer.to(device)`).
    """
    if optimizer.lower() != "adam":
        raise ValueError(f"optimizer {optimizer!r}: only 'adam' is supported")
    if robust not in ROBUST:
        raise ValueError(f"robust = {robust!r}: one of {', '.join(ROBUST)}")
    size = renderer.settings.image_size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be (B, {size}, {size}, 3) sRGB in [0, 1] (the renderer's size), "
                         f"got {tuple(images.shape)}")
    if fit_size < 0:
        raise ValueError(f"fit_size = {fit_size}: 0 (the renderer's size) or a positive number of pixels")
    if fit_region not in FIT_REGIONS:
        raise ValueError(f"fit_region = {fit_region!r}: one of {', '.join(FIT_REGIONS)}")
    # The same problem, cheaper: only the mesh the photometric term looks at and/or fewer pixels.
    if fit_region == "face":
        renderer, landmark_vertices = face_region(renderer, landmark_vertices)
    if fit_size and fit_size != size:
        renderer = renderer.resized(fit_size)
        images = downsample(images, fit_size)
        landmarks = None if landmarks is None else landmarks * (fit_size / size)
        image_mask = None if image_mask is None else downsample(image_mask.float()[..., None], fit_size)[..., 0] > 0.5
    unknown = set(free) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown parameter groups {sorted(unknown)}; groups: {', '.join(GROUPS)}")
    layout = renderer.layout
    images = images.to(torch.float32)
    init = init_params.detach().to(images.device, torch.float32)
    if init.shape != (images.shape[0], layout.size):
        raise ValueError(f"init_params must be ({images.shape[0]}, {layout.size}), got {tuple(init.shape)}")
    if landmarks is not None:
        landmarks = landmarks.to(images.device, torch.float32)
    weights = {"photo": w_photo, "edge": w_photo * w_edge, "landmark": w_landmark if landmarks is not None else 0.0,
               "translation_prior": w_translation_prior, "shape_prior": w_shape_prior,
               "reflectance_prior": w_reflectance_prior,
               "expression_prior": w_expression_prior}
    scales = {**GROUP_LR, **(group_lr or {})}

    # The translation is optimised as the face centre's (`to_pivot`): rotation and translation decouple.
    pivot = face_pivot(renderer).to(images.device, torch.float32)
    leaves = {name: t.clone().contiguous() for name, t in layout.split(init).items()}
    leaves["translation"] = to_pivot(leaves["translation"], leaves["rotation"], pivot).contiguous()
    leaves["expression"].clamp_(0.0, 1.0)
    anchor = leaves["translation"].clone() if anchor_translation else None

    def actual(detach: bool = False) -> dict[str, torch.Tensor]:
        groups = {k: (v.detach() if detach else v) for k, v in leaves.items()}
        groups["translation"] = from_pivot(groups["translation"], groups["rotation"], pivot)
        return groups

    for name in free:
        leaves[name].requires_grad_(True)
    opt = torch.optim.Adam([{"params": [leaves[n]], "lr": lr * scales[n]} for n in free if n in leaves])
    base_lrs = [grp["lr"] for grp in opt.param_groups]

    b = images.shape[0]
    best_energy = torch.full((b,), math.inf, device=images.device)
    best = init.clone()
    best_step = torch.zeros(b, dtype=torch.long)
    history: dict[str, list] = {k: [] for k in ("energy", *WEIGHTED, "coverage")}
    seconds = []
    snaps: dict[int, torch.Tensor] = {}
    for step in range(steps + 1):
        t0 = time.perf_counter()
        track = step < steps and bool(free)
        with torch.set_grad_enabled(track):
            terms = energy_terms(renderer, actual(), images, image_mask, landmarks if weights["landmark"] else None,
                                 robust, huber_delta, edge_lambda, anchor, landmark_vertices, landmark_weights,
                                 photometric=w_photo > 0)
            energy = sum(weights[k] * terms[k] for k in WEIGHTED)
        with torch.no_grad():
            e = energy.detach()
            improved = e < best_energy
            if improved.any():
                best_energy = torch.where(improved, e, best_energy)
                best[improved] = layout.join(actual(detach=True))[improved]
                best_step[improved.cpu()] = step
            history["energy"].append(e.cpu())
            for k in (*WEIGHTED, "coverage"):
                history[k].append(terms[k].detach().float().cpu())
            if step in snapshots:
                snaps[step] = best.detach().cpu().clone() if return_best else layout.join(actual(detach=True)).cpu()
        if log_every and (step % log_every == 0 or step == steps):
            log(f"refine step {step}/{steps}: energy {e.mean():.5f} photo {terms['photo'].detach().mean():.5f}")
        if not track:
            break
        opt.zero_grad(set_to_none=True)
        energy.sum().backward()
        decay = lr_final + (1 - lr_final) * 0.5 * (1 + math.cos(math.pi * step / max(steps - 1, 1)))
        for grp, base in zip(opt.param_groups, base_lrs):
            grp["lr"] = base * decay
        opt.step()
        with torch.no_grad():
            leaves["expression"].clamp_(0.0, 1.0)
        seconds.append(time.perf_counter() - t0)
    final = best if return_best else layout.join(actual(detach=True))
    hist = {k: torch.stack(v) for k, v in history.items()}
    hist["step_seconds"] = torch.tensor(seconds)
    hist["best_step"] = best_step
    hist["snapshots"] = snaps
    return final.detach(), hist


FIT_REGIONS = ("all", "face")


def face_region(renderer: Renderer, landmark_vertices: torch.Tensor | None = None
                ) -> tuple[Renderer, torch.Tensor | None]:
    """The renderer of the face part of the mesh plus the landmark vertices (the model's 68 and
    `landmark_vertices` (L,), -1 = none), and those landmark vertices' ids in it."""
    fm = renderer.face_model
    keep = fm.part_mask("face")
    for ids in (fm.landmarks, landmark_vertices):
        if ids is not None:
            ids = ids.cpu()
            keep[ids[ids >= 0]] = True
    sub, new_id = renderer.region(keep)
    if landmark_vertices is not None:
        lv = landmark_vertices.cpu()
        landmark_vertices = torch.where(lv >= 0, new_id.cpu()[lv.clamp_min(0)], lv).to(landmark_vertices.device)
    return sub, landmark_vertices


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, size, size, C) by area averaging (each output pixel the mean of the input pixels it
    covers: no aliasing when shrinking)."""
    x = images.to(torch.float32).permute(0, 3, 1, 2)
    return F.interpolate(x, size=(size, size), mode="area").permute(0, 2, 3, 1).contiguous()


def mean_face_params(renderer: Renderer, batch: int, ambient: float = DEFAULT_AMBIENT,
                     device=None) -> torch.Tensor:
    """(batch, P): mean shape/reflectance, no expression, frontal pose, zero translation (the synthetic framing
    centres the face), uniform white ambient light of radiance `ambient`."""
    groups = renderer.layout.zeros(batch)
    groups["illumination"][:, 0, :] = AMBIENT_WHITE * ambient
    return renderer.layout.join(groups).to(device)


COARSE_GROUPS = ("illumination", "rotation", "translation")


def fit_from_mean(renderer: Renderer, images: torch.Tensor, steps: int = 100, coarse_fraction: float = 0.3,
                  coarse_groups: Sequence[str] = COARSE_GROUPS, **kwargs) -> tuple[torch.Tensor, dict]:
    """The optimisation-only baseline: `refine` started from the mean face (`mean_face_params`), first
    `coarse_fraction` of the steps on pose and light only, then on everything. kwargs go to `refine`.
    Returns (params, history) with the two stages' histories concatenated (steps + 1 rows)."""
    init = mean_face_params(renderer, images.shape[0], device=images.device)
    coarse = int(round(steps * coarse_fraction))
    snapshots = tuple(kwargs.pop("snapshots", ()))
    params, h1 = refine(renderer, images, init, steps=coarse, free=coarse_groups,
                        snapshots=[k for k in snapshots if k <= coarse], **kwargs)
    if steps - coarse <= 0:
        return params, h1
    params, h2 = refine(renderer, images, params, steps=steps - coarse,
                        snapshots=[k - coarse for k in snapshots if k > coarse], **kwargs)
    hist = {k: torch.cat([h1[k][:-1], h2[k]]) for k in ("energy", *WEIGHTED, "coverage")}
    hist["step_seconds"] = torch.cat([h1["step_seconds"], h2["step_seconds"]])
    hist["best_step"] = h2["best_step"] + coarse
    hist["coarse_steps"] = coarse
    hist["snapshots"] = {**h1["snapshots"], **{k + coarse: v for k, v in h2["snapshots"].items()}}
    return params, hist
