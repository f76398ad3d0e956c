"""Training losses: the model-space parameter loss (closed form) and the plain parameter-space baseline.

ModelSpaceLoss measures an estimate p_hat against the ground truth p in the space of the face (PAPER.md,
"Model-space parameter loss"); per sample, each term is a weighted MEAN over the vertices (weights w_v):

  geometry      sum_v w_v |V(p_hat)_v - V(p)_v|^2 / sum_v w_v,   V = R(theta) (mean + S alpha + E delta) + t
                (camera space, cm^2; the default head offset (0, 0, -distance) cancels in the difference)
  reflectance   sum_v w_v |A(beta_hat)_v - A(beta)_v|^2 / sum_v w_v   (linear, unclamped albedo, summed over RGB)
  illumination  sum_v w_v sum_c (H(n_v) . (gamma_hat_c - gamma_c))^2 / sum_v w_v  on the ground truth's posed
                normals n_v (H = ifn.render.shading.shading_basis: shading = H @ gamma)

Closed form (w~ = w / sum w; c = [alpha, delta]; X_v(c) = m_v + B_v c with B_v the (3, K) stacked bases;
dc = c_hat - c, dR = R_hat - R, dt = t_hat - t):

  V_hat - V = R_hat B_v dc + dR X_v(c) + dt, so, summing |.|^2 with w~ (R_hat orthogonal):
  geometry = dc^T G dc + tr(dR^T dR M(c)) + |dt|^2 + 2 tr(R_hat^T dR C(c, dc)) + 2 dt . (R_hat Bbar dc)
             + 2 dt . (dR mu(c))
  with the precomputed moments  mbar = sum w~ m_v (3,),  Bbar = sum w~ B_v (3, K),  Mmm = sum w~ m_v m_v^T (3, 3),
  P[i,j,k] = sum w~ m_vi B_vjk (3, 3, K),  Q[i,j,k,l] = sum w~ B_vik B_vjl (3, 3, K, K),  G = sum_i Q[i,i] (K, K):
  T(c) = sum w~ X_v(c) B_v^T = P + Q . c (3, 3, K),  M(c) = sum w~ X_v X_v^T = Mmm + (P . c)^T + T(c) . c,
  C(c, dc) = sum w~ X_v (B_v dc)^T = T(c) . dc,  mu(c) = mbar + Bbar c.
  Written in the differences (not as |V_hat|^2 + |V|^2 - 2 V_hat.V), every term vanishes with the error itself,
  so there is no cancellation in float32. Cost O(K^2) per sample, independent of V.

  reflectance = dbeta^T G_A dbeta,  G_A = sum w~ A_v^T A_v (K_r, K_r);
  illumination = sum_c dgamma_c^T G_n dgamma_c with G_n = sum w~ H(n_v) H(n_v)^T (9, 9) of the ground truth:
  pass it as `shading_gram` (computed once at synthesis time with `shading_gram(normals, weights)` -- with the
  SAME vertex weights as the loss) or it is computed from the ground-truth parameters (O(V) per sample).

The illumination term is not symmetric in (pred, target): it is measured on the ground truth's normals.

ReprojectionLoss (a named extra term, train.w_reprojection) measures what the image shows of the geometry: the
68 landmark vertices projected by the pinhole camera under both parameter vectors, mean squared 2D distance in
percent of the image side. Unlike the geometry term it ignores how far along its viewing ray a head sits (the
depth that a landmark-box-framed image hardly shows and that dominates the geometry term's value).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import math

import torch
from torch import nn

from ..model.facemodel import FaceModel
from ..model.layout import N_SH, ParamLayout
from ..model.reflectance import ReflectanceModel
from ..render.camera import Camera, euler_to_matrix
from ..render.shading import incidence_matrix, shading_basis, shading_gram, vertex_normals

TERMS = ("geometry", "reflectance", "illumination")
Params = torch.Tensor | Mapping[str, torch.Tensor]


def _normalised_weights(weights: torch.Tensor | None, n_vertices: int, dtype=torch.float64) -> torch.Tensor:
    """(V,) non-negative weights (or a bool mask, or None = ones) -> (V,) weights summing to 1."""
    if weights is None:
        w = torch.ones(n_vertices, dtype=dtype)
    else:
        w = torch.as_tensor(weights).detach().to(dtype=dtype, device="cpu")
    if w.shape != (n_vertices,):
        raise ValueError(f"vertex_weights has shape {tuple(w.shape)}, expected ({n_vertices},)")
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError("vertex_weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError("vertex_weights are all zero")
    return w / total


def _groups(layout: ParamLayout, params: Params) -> Mapping[str, torch.Tensor]:
    return layout.split(params) if isinstance(params, torch.Tensor) else params


def _total(terms: dict[str, torch.Tensor], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    per_sample = sum(w * terms[name] for name, w in zip(TERMS, weights))
    return {"loss": per_sample.mean(), **terms}


def _check_models(face_model: FaceModel, reflectance: ReflectanceModel, layout: ParamLayout) -> ReflectanceModel:
    if reflectance.n_vertices != face_model.n_vertices:
        if reflectance.n_vertices <= int(face_model.source_index.max()):
            raise ValueError(f"reflectance model has {reflectance.n_vertices} vertices, the face model "
                             f"{face_model.n_vertices} (and they cannot be matched via source_index)")
        reflectance = reflectance.subset(face_model.source_index)
    if layout.n_shape > face_model.n_shape or layout.n_expression > face_model.n_expression:
        raise ValueError(f"layout asks for {layout.n_shape} shape / {layout.n_expression} expression modes; "
                         f"{face_model.name} has {face_model.n_shape} / {face_model.n_expression}")
    if layout.n_reflectance > reflectance.n_components:
        raise ValueError(f"layout asks for {layout.n_reflectance} reflectance components; the model has "
                         f"{reflectance.n_components}")
    return reflectance


class ModelSpaceLoss(nn.Module):
    """Model-space parameter loss in closed form (see the module docstring).

    face_model, reflectance   the linear models (reflectance over the same vertices, or over the source mesh:
                              then it is subset with face_model.source_index)
    layout                    ParamLayout of the parameter vectors (the first n_shape / n_expression /
                              n_reflectance modes of the models are used)
    distance_cm               default camera distance (only used to pose the ground truth for its normals;
                              it cancels in the geometry term)
    vertex_weights            (V,) non-negative (or bool mask); default ones
    w_geometry, w_reflectance, w_illumination   weights of the terms in "loss"
    dtype                     dtype of the precomputed buffers (computed in float64, then cast); `.to()` works

    forward(pred, target, shading_gram=None) -> {"loss": scalar (batch mean of the weighted sum),
    "geometry": (B,), "reflectance": (B,), "illumination": (B,)}; pred/target are (B, P) vectors or dicts of
    groups (ParamLayout.split).
    """

    def __init__(self, face_model: FaceModel, reflectance: ReflectanceModel, layout: ParamLayout,
                 distance_cm: float = 100.0, vertex_weights: torch.Tensor | None = None,
                 w_geometry: float = 1.0, w_reflectance: float = 1.0, w_illumination: float = 1.0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        reflectance = _check_models(face_model, reflectance, layout)
        self.layout = layout
        self.distance_cm = float(distance_cm)
        self.term_weights = (float(w_geometry), float(w_reflectance), float(w_illumination))
        n_v = face_model.n_vertices
        f64 = torch.float64
        w = _normalised_weights(vertex_weights, n_v)                          # (V,), sums to 1
        mean = face_model.mean.detach().cpu().to(f64)                         # (V, 3)
        basis = torch.cat([face_model.shape_basis[:layout.n_shape],
                           face_model.expression_basis[:layout.n_expression]]).detach().cpu().to(f64)  # (K, V, 3)
        k = basis.shape[0]
        bt = basis.permute(1, 2, 0).reshape(n_v, 3 * k)                      # (V, 3K), column i*K + k
        bw = bt * w[:, None]
        q4 = (bw.T @ bt).reshape(3, k, 3, k)                                  # Q4[i,k,j,l] = sum w B_ik B_jl
        moments = {
            "mbar": w @ mean,                                                 # (3,)
            "bbar": (w @ bt).reshape(3, k),                                   # (3, K)
            "mmm": (mean * w[:, None]).T @ mean,                              # (3, 3)
            "p": ((mean * w[:, None]).T @ bt).reshape(3, 3, k),               # P[i,j,k] = sum w m_i B_jk
            "q": q4.permute(1, 0, 2, 3).reshape(k, 9 * k),                   # [l, (i, j, k)] = sum w B_il B_jk
            "g": q4.diagonal(dim1=0, dim2=2).sum(-1),                          # (K, K)
        }
        refl = reflectance.basis[:layout.n_reflectance].detach().cpu().to(f64)  # (Kr, V, 3)
        kr = refl.shape[0]
        ar = refl.permute(1, 2, 0).reshape(n_v * 3, kr)
        moments["g_albedo"] = (ar * w.repeat_interleave(3)[:, None]).T @ ar   # (Kr, Kr)
        # Products with the target's c and with dc fused into one matrix each (fewer BLAS calls per batch):
        # c @ wc = [Q . c (9K) | (P . c)^T (9) | Bbar c (3)],  dc @ wd = [G dc (K) | Bbar dc (3)].
        moments["wc"] = torch.cat([moments["q"], moments["p"].permute(2, 1, 0).reshape(k, 9),
                                   moments["bbar"].T], 1)
        moments["wd"] = torch.cat([moments["g"], moments["bbar"].T], 1)
        del moments["q"]  # only needed inside wc (the largest buffer: 9 K^2)
        for name, value in moments.items():
            self.register_buffer(name, value.to(dtype).contiguous(), persistent=False)
        # For the ground-truth shading gram when it is not given.
        self.register_buffer("weights", w.to(dtype), persistent=False)
        self.register_buffer("mean", mean.to(dtype), persistent=False)
        self.register_buffer("basis", basis.to(dtype).contiguous(), persistent=False)
        self.register_buffer("triangles", face_model.triangles.detach().cpu().to(torch.int64), persistent=False)
        self._incidence: dict = {}

    def extra_repr(self) -> str:
        return (f"V={self.mean.shape[0]}, K_geometry={self.basis.shape[0]}, "
                f"K_reflectance={self.g_albedo.shape[0]}, weights={self.term_weights}")

    def _buf(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return getattr(self, name).to(dtype=like.dtype, device=like.device)

    # -- ground truth shading gram -------------------------------------------------------------------------
    def posed_normals(self, target: Params) -> torch.Tensor:
        """(B, V, 3) camera-space unit vertex normals of the (ground-truth) parameters."""
        g = _groups(self.layout, target)
        c = torch.cat([g["shape"], g["expression"]], -1)
        x = self._buf("mean", c) + torch.einsum("bk,kvc->bvc", c, self._buf("basis", c))
        r = euler_to_matrix(g["rotation"])
        offset = g["translation"] + g["translation"].new_tensor([0.0, 0.0, -self.distance_cm])
        posed = x @ r.transpose(-1, -2) + offset[:, None, :]
        key = str(posed.device)
        if key not in self._incidence:
            self._incidence[key] = incidence_matrix(self.triangles.to(posed.device), posed.shape[1])
        return vertex_normals(posed, self.triangles.to(posed.device), self._incidence[key])

    def target_shading_gram(self, target: Params) -> torch.Tensor:
        """(B, 9, 9) shading gram of `target` with this loss's vertex weights (what forward computes if the
        gram is not given)."""
        normals = self.posed_normals(target)
        return shading_gram(normals, self._buf("weights", normals))

    # -- terms -------------------------------------------------------------------------------------------
    def geometry(self, pred: Params, target: Params) -> torch.Tensor:
        """(B,) weighted mean squared distance between the posed meshes, cm^2."""
        gp, gt = _groups(self.layout, pred), _groups(self.layout, target)
        c = torch.cat([gt["shape"], gt["expression"]], -1)
        dc = torch.cat([gp["shape"], gp["expression"]], -1) - c
        b, k = c.shape
        r_hat, r = euler_to_matrix(gp["rotation"]), euler_to_matrix(gt["rotation"])
        dr = r_hat - r
        dt = gp["translation"] - gt["translation"]
        cw = c @ self._buf("wc", c)                                                 # (B, 9K + 12)
        dw = dc @ self._buf("wd", c)                                                # (B, K + 3)
        t_c = self._buf("p", c) + cw[:, :9 * k].reshape(b, 3, 3, k)                 # T(c) (B, 3, 3, K)
        tcd = (t_c.reshape(b, 9, k) @ torch.stack([c, dc], -1)).reshape(b, 3, 3, 2)
        m_c = self._buf("mmm", c) + cw[:, 9 * k:9 * k + 9].reshape(b, 3, 3) + tcd[..., 0]  # M(c)
        c_cd = tcd[..., 1]                                                          # C(c, dc)
        mu = self._buf("mbar", c) + cw[:, 9 * k + 9:]                               # (B, 3)
        u = dw[:, k:]                                                               # Bbar dc (B, 3)
        quad = (dw[:, :k] * dc).sum(-1)                                             # dc^T G dc
        rot = ((dr @ m_c) * dr).sum((-1, -2))                                       # tr(dR^T dR M)
        cross = ((r_hat @ c_cd.transpose(-1, -2)) * dr).sum((-1, -2))              # tr(R_hat^T dR C)
        lin = (dt * ((r_hat @ u[..., None]).squeeze(-1) + (dr @ mu[..., None]).squeeze(-1))).sum(-1)
        return quad + rot + (dt * dt).sum(-1) + 2 * cross + 2 * lin

    def reflectance(self, pred: Params, target: Params) -> torch.Tensor:
        """(B,) weighted mean squared albedo difference (summed over RGB)."""
        db = _groups(self.layout, pred)["reflectance"] - _groups(self.layout, target)["reflectance"]
        return ((db @ self._buf("g_albedo", db)) * db).sum(-1)

    def illumination(self, pred: Params, target: Params, shading_gram: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) weighted mean squared shading difference (summed over RGB) on the ground truth's normals."""
        gp, gt = _groups(self.layout, pred), _groups(self.layout, target)
        dg = gp["illumination"] - gt["illumination"]                                # (B, 9, 3)
        if shading_gram is None:
            shading_gram = self.target_shading_gram(gt)
        elif shading_gram.shape != (dg.shape[0], N_SH, N_SH):
            raise ValueError(f"shading_gram has shape {tuple(shading_gram.shape)}, "
                             f"expected ({dg.shape[0]}, {N_SH}, {N_SH})")
        return ((shading_gram.to(dg) @ dg) * dg).sum((-1, -2))

    def forward(self, pred: Params, target: Params, shading_gram: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        gp, gt = _groups(self.layout, pred), _groups(self.layout, target)
        terms = {"geometry": self.geometry(gp, gt), "reflectance": self.reflectance(gp, gt),
                 "illumination": self.illumination(gp, gt, shading_gram)}
        return _total(terms, self.term_weights)


class ReprojectionLoss(nn.Module):
    """2D reprojection of the landmark vertices (see the module docstring).

    face_model    its `landmarks` (68,) vertex ids (-1 = not in the region: skipped) and linear bases
    layout        ParamLayout of the parameter vectors (first n_shape / n_expression modes)
    fov_deg       the camera's full horizontal field of view, degrees (ifn.render.camera.Camera)
    distance_cm   default camera distance (head origin at (0, 0, -distance) plus the translation)
    dtype         dtype of the landmark bases (taken from the float64 model, then cast)

    forward(pred, target) -> (B,) mean over the landmarks of |uv(pred) - uv(target)|^2, uv in percent of the
    image side (so 1.0 = a mean squared error of 1 % of the side); points behind the camera are not expected
    (depth is clamped at 1 cm).
    """

    def __init__(self, face_model: FaceModel, layout: ParamLayout, fov_deg: float, distance_cm: float = 100.0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        ids = face_model.landmarks.detach().cpu().long()
        ids = ids[ids >= 0]
        if ids.numel() == 0:
            raise ValueError("the face model has no landmark vertices in its region")
        if not 0.0 < float(fov_deg) < 180.0:
            raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
        self.layout = layout
        self.camera = Camera(fov_deg=float(fov_deg), distance_cm=float(distance_cm))   # its pose()
        self.focal = 0.5 / math.tan(math.radians(float(fov_deg)) / 2)        # image sides per unit x / depth
        basis = torch.cat([face_model.shape_basis[:layout.n_shape],
                           face_model.expression_basis[:layout.n_expression]])[:, ids]  # (K, L, 3)
        self.register_buffer("mean", face_model.mean.detach()[ids].cpu().to(dtype), persistent=False)  # (L, 3)
        self.register_buffer("basis", basis.detach().cpu().to(dtype).contiguous(), persistent=False)

    def project(self, params: Params) -> torch.Tensor:
        """(B, L, 2) landmark positions, percent of the image side from the image centre (v up)."""
        g = _groups(self.layout, params)
        c = torch.cat([g["shape"], g["expression"]], -1)
        mean, basis = self.mean.to(c), self.basis.to(c)
        posed = self.camera.pose(mean + torch.einsum("bk,klc->blc", c, basis), g["rotation"], g["translation"])
        depth = (-posed[..., 2:]).clamp_min(1.0)
        return 100.0 * self.focal * posed[..., :2] / depth

    def forward(self, pred: Params, target: Params) -> torch.Tensor:
        return (self.project(pred) - self.project(target)).pow(2).sum(-1).mean(-1)


def brute_force_model_space(pred: Params, target: Params, face_model: FaceModel, reflectance: ReflectanceModel,
                            layout: ParamLayout, camera: Camera | None = None,
                            vertex_weights: torch.Tensor | None = None,
                            weights: Sequence[float] | Mapping[str, float] = (1.0, 1.0, 1.0)
                            ) -> dict[str, torch.Tensor]:
    """The three ModelSpaceLoss terms the slow way (O(V K) per sample): posed meshes via FaceModel.geometry and
    camera.pose, albedo via ReflectanceModel.albedo, the ground truth's normals via vertex_normals and
    shading_basis. Same return dict as ModelSpaceLoss.forward; `weights` = (geometry, reflectance,
    illumination) or a mapping with those keys. Computed in the dtype of `pred`."""
    reflectance = _check_models(face_model, reflectance, layout)
    camera = camera or Camera()
    gp, gt = _groups(layout, pred), _groups(layout, target)
    dtype, device = gp["shape"].dtype, gp["shape"].device
    fm = face_model.to(device, dtype)
    refl = reflectance.to(device, dtype)
    w = _normalised_weights(vertex_weights, fm.n_vertices).to(device=device, dtype=dtype)
    if isinstance(weights, Mapping):
        weights = tuple(float(weights.get(name, 1.0)) for name in TERMS)

    def posed(g):
        return camera.pose(fm.geometry(g["shape"], g["expression"]), g["rotation"], g["translation"])

    v_true = posed(gt)
    geometry = ((posed(gp) - v_true).pow(2).sum(-1) * w).sum(-1)
    albedo = (refl.albedo(gp["reflectance"]) - refl.albedo(gt["reflectance"])).pow(2).sum(-1)
    normals = vertex_normals(v_true, fm.triangles)
    shading = shading_basis(normals) @ (gp["illumination"] - gt["illumination"])    # (B, V, 3)
    terms = {"geometry": geometry, "reflectance": (albedo * w).sum(-1),
             "illumination": (shading.pow(2).sum(-1) * w).sum(-1)}
    return _total(terms, weights)


class ParameterLoss(nn.Module):
    """Baseline: Euclidean loss on the parameter vector.

    loss = mean over the batch of sum_g w_g * mean over group g's entries of ((p_hat - p) / scale_g)^2.
    `weights` / `scales` map group names to a weight (default 1) / a scale (default 1; a number, or a tensor
    with one value per entry of the group, e.g. (9, 3) or (27,) for illumination).
    forward(pred, target) -> {"loss": scalar, <group>: (B,) for every group of the layout}.
    """

    def __init__(self, layout: ParamLayout, weights: Mapping[str, float] | None = None,
                 scales: Mapping[str, float | torch.Tensor] | None = None):
        super().__init__()
        weights, scales = dict(weights or {}), dict(scales or {})
        for name in (*weights, *scales):
            if name not in layout.names:
                raise KeyError(f"no parameter group {name!r}; groups are {', '.join(layout.names)}")
        self.layout = layout
        self.group_weights = {name: float(weights.get(name, 1.0)) for name in layout.names}
        inv = []
        for name, n in layout.sizes.items():
            s = torch.as_tensor(scales.get(name, 1.0), dtype=torch.float64).reshape(-1)
            if s.numel() == 1:
                s = s.expand(n)
            elif s.numel() != n:
                raise ValueError(f"scale of group {name} has {s.numel()} values, the group has {n}")
            if (s <= 0).any():
                raise ValueError(f"scales must be positive (group {name})")
            inv.append(1.0 / s)
        self.register_buffer("inv_scale", torch.cat(inv).float(), persistent=False)

    def forward(self, pred: Params, target: Params) -> dict[str, torch.Tensor]:
        if not isinstance(pred, torch.Tensor):
            pred = self.layout.join(pred)
        if not isinstance(target, torch.Tensor):
            target = self.layout.join(target)
        z = (pred - target) * self.inv_scale.to(pred)
        terms = {}
        for name, sl in self.layout.slices.items():
            part = z[..., sl]
            terms[name] = part.pow(2).mean(-1) if part.shape[-1] else z.new_zeros(z.shape[:-1])
        total = sum(self.group_weights[name] * terms[name] for name in self.layout.names)
        return {"loss": total.mean(), **terms}
