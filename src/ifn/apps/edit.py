"""Photo editing with estimated face parameters: relighting and appearance (reflectance, expression) edits.

Given a crop (S, S, 3) uint8 sRGB and the parameters estimated for the face in it (a flat (P,) or (B, P) vector
in the renderer's ParamLayout), an edit re-renders the face with changed parameters and transfers the change
into the photo, keeping what the model does not explain (pores, stray hair, highlights, make-up: the
*residual*). All arithmetic is in linear RGB, where light adds and reflectance multiplies.

Per edit kind:

- relighting (`relight`): ratio (quotient) image, edited = photo * new / old with new, old the two renders
  (same geometry and albedo, only the SH light differs). Light acts multiplicatively on the whole observed
  radiance, so the ratio relights the residual too (a freckle darkens with the skin around it); an additive
  transfer would keep the residual at its old brightness and make it look pasted on in a darker light. When
  the model explains the photo exactly the result is exactly the new render (up to RATIO_EPS). The ratio is
  clamped to [0, MAX_RATIO]: where the old render is near black but the photo is not (misfit, grazing normals)
  an unclamped ratio would blow up. It is taken between the two renders' local means over the face mask
  (normalised tent blur of RATIO_SMOOTH_PX): a low-order SH light changes the shading smoothly, but a per-pixel
  ratio also carries the fine relief of the model (nostrils, eyelid and lip creases, the grazing outline), and
  where the fit is not exact (a nose a few pixels off) that relief was printed onto the photo as ghost features
  (bright nostril specks, a ring around the nose, rims along the cheek). A change that is smooth already (e.g.
  the same light brighter) is transferred exactly either way.
- reflectance edits (`edit_appearance(reflectance=...)`): difference transfer, edited = new + (photo - old).
  An albedo change is not a uniform scaling of the observed radiance (a PCA step can be colour- and
  position-dependent, and can darken a bright region to black), so the quotient would distort the residual;
  the residual is kept as is.
- expression edits (`edit_appearance(expression=...)`): the geometry moves, so the residual is carried along
  with the surface, as a factor: edited = new * f, f = (photo + eps) / (old + eps) (clamped like the ratio)
  where the same surface point was in the old render. A difference (new + photo - old) went below black where
  the new shading is darker than the old one (a dark line along the lips of a smile); a factor cannot. The
  carrying: each pixel of the new render looks up, through its triangle and barycentrics, where the same
  surface point was in the old render, and samples the old residual there (bilinear over old face pixels whose depth matches that point's, so a point hidden in the old render
  takes nothing from the surface that hid it). A mole stays on the cheek as the cheek moves. New pixels whose
  point was not visible before get the locally smoothed residual (FILL_PX), which keeps the skin tone the model
  misses; with no valid residual nearby they get the plain new render. The edit covers the NEW render's face
  mask only: where the old face no longer is, the photo is left as it was (no background is inpainted; the
  inside of a newly opened mouth is not part of the model's face and is not changed either).

Trust (`agreement`): the fitted face often covers pixels it does not explain: a hand or hair in front of the
face, the neck under a jaw fitted too low, background beyond a misplaced outline. Edited there, the photo took
the render's features (a pale patch over a hand, a streak along the cheek outline, a band under the chin). So
each edit applies by how well the fit explains the photo locally: the local-mean luminance ratio photo / render
(TRUST_PX), relative to its median over the face (a light off by a constant factor still agrees), gives weight
1 within TRUST_STOPS[0] stops and 0 beyond TRUST_STOPS[1]; `trust_stops=None` edits the whole mask.

Compositing: only the face part (`ifn.evaluate.face_triangles`) of the render counts; its mask is feathered
by a separable tent blur of radius `feather` px, and the per-pixel change (ratio or difference) is extended
into the feather ring by normalised convolution. Pixels farther than `feather` px (Chebyshev distance) from the
face mask are returned bit-for-bit unchanged. `paste_back` carries a crop's change into the full photo
through the crop affine of ifn.real (crop px -> source px), again leaving untouched pixels bit-for-bit.

Lights are in camera space (ifn.render.shading: +x right, +y up, +z towards the viewer), so a light taken
from another photo's estimate keeps its direction relative to the camera, not to the head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluate import face_triangles
from ..model.layout import N_SH
from ..real import apply_affine, invert_affine
from ..render.color import linear_to_srgb, srgb_to_linear
from ..render.renderer import FaceRender, Renderer
from ..render.shading import AMBIENT_WHITE, SH_CONVOLUTION, sh_basis

FEATHER_PX = 2           # radius of the mask feather (tent blur), pixels of the crop
RATIO_SMOOTH_PX = 3      # relighting: radius of the local means the ratio is taken between (0: per pixel)
RATIO_EPS = 1e-3         # linear RGB added to both renders of the ratio (stabilises near-black pixels)
MAX_RATIO = 8.0          # clamp of the relighting ratio (3 stops brighter at most)
DEPTH_TOL_CM = 1.0       # residual warp: an old pixel shows the same surface point if depths agree this well
FILL_PX = 4              # residual warp: radius of the smoothing that fills newly visible face pixels
LUMINANCE = (0.2126, 0.7152, 0.0722)  # Rec. 709 relative luminance of linear R, G, B
TRUST_PX = 3             # agreement of photo and fit: radius of the local means compared (px)
TRUST_STOPS = (0.6, 1.4) # ... |log2 luminance ratio| (relative to the face's median) below which the edit applies
                         # fully and above which not at all (stops; linear fade between)
MODES = ("ratio", "difference")

Light = Union[str, torch.Tensor, np.ndarray]
Coefficients = Union[torch.Tensor, np.ndarray, Sequence[float], Mapping[Union[int, str], float]]


# ---------------------------------------------------------------------------------------------------------------
# Light presets
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A white light whose shading (irradiance / pi) is ambient + directional * dot(n, direction).

    direction    (x, y, z) camera space, normalised on use ("left" = from the image's left side, -x)
    ambient      shading of the uniform part (1 = uniform white radiance 1, `AMBIENT_WHITE` in gamma[0])
    directional  shading added at a normal facing the light (and subtracted facing away)
    """

    direction: tuple[float, float, float]
    ambient: float
    directional: float


# Shading stays in [ambient - directional, ambient + directional] = [0.2, 1.0] for the directional presets:
# the band-1 term alone is a signed cosine, so directional <= ambient keeps it non-negative on every normal.
PRESETS: dict[str, Preset] = {
    "front": Preset((0.0, 0.0, 1.0), 0.6, 0.4),
    "left": Preset((-math.sqrt(3) / 2, 0.0, 0.5), 0.6, 0.4),   # 60 deg off the viewing axis
    "right": Preset((math.sqrt(3) / 2, 0.0, 0.5), 0.6, 0.4),
    "top": Preset((0.0, math.sqrt(3) / 2, 0.5), 0.6, 0.4),
    "ambient": Preset((0.0, 0.0, 1.0), 0.8, 0.0),              # uniform: ifn.fit's DEFAULT_AMBIENT
}


def preset_light(name: str, strength: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """(9, 3) SH coefficients of PRESETS[name] scaled by `strength` (a radiance multiplier, 1 = as tabulated).

    Formula (bands 0 and 1 only): gamma[0] = AMBIENT_WHITE * ambient, gamma[1:4] = directional * Y_1(d) /
    (A_1 / pi * |Y_1|^2) with Y_1(d) = c1 (d_y, d_z, d_x), c1 = sqrt(3 / (4 pi)), A_1 = 2 pi / 3, so that the
    renderer's shading H(n) @ gamma = strength * (ambient + directional * dot(n, d)) for a unit normal n.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown light preset {name!r}; presets are {', '.join(PRESETS)}")
    if not (math.isfinite(strength) and strength >= 0):
        raise ValueError(f"light strength must be finite and >= 0, got {strength}")
    p = PRESETS[name]
    d = torch.tensor(p.direction, dtype=torch.float64)
    d = d / d.norm()
    c1_sq = 3 / (4 * math.pi)
    gamma = torch.zeros(N_SH, dtype=torch.float64)
    gamma[0] = AMBIENT_WHITE * p.ambient
    # sh_basis(d)[1:4] = c1 * (y, z, x); each band-1 term contributes (A_1 / pi) c1^2 d_k n_k to the shading.
    gamma[1:4] = p.directional * sh_basis(d)[1:4] / (SH_CONVOLUTION[1] / math.pi * c1_sq)
    return (strength * gamma)[:, None].expand(N_SH, 3).to(dtype).clone()


# ---------------------------------------------------------------------------------------------------------------
# Masks and compositing
# ---------------------------------------------------------------------------------------------------------------
def face_mask(renderer: Renderer, render: FaceRender) -> torch.Tensor:
    """(B, H, W) bool: pixels where `render` shows a triangle of the model's face part."""
    ptf = render.pix_to_face
    tri = face_triangles(renderer).to(ptf.device)
    return (ptf >= 0) & tri[ptf.clamp_min(0)]


def _blur(x: torch.Tensor, radius: int, pad: str = "constant") -> torch.Tensor:
    """(B, H, W, C) -> separable normalised tent blur of `radius` px; outside the image x is 0 ("constant") or
    its edge value ("replicate"). The support is exactly the (2 radius + 1)^2 square (edge values included), so
    the result is exactly 0 where x is 0 on that whole square."""
    if radius <= 0:
        return x
    k = (radius + 1 - torch.arange(-radius, radius + 1).abs()).to(x.dtype)
    k = k / k.sum()
    b, h, w, c = x.shape
    y = x.permute(0, 3, 1, 2).reshape(b * c, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode=pad), k.reshape(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode=pad), k.reshape(1, 1, -1, 1))
    return y.reshape(b, c, h, w).permute(0, 2, 3, 1)


def feather_mask(mask: torch.Tensor, radius: int = FEATHER_PX) -> torch.Tensor:
    """(B, H, W) bool -> (B, H, W) float64 alpha in [0, 1]: the tent-blurred mask. Exactly 1 where the whole
    (2 radius + 1)^2 neighbourhood inside the image is in the mask, exactly 0 farther than `radius` px
    (Chebyshev) from it. The image border is not a mask edge (a face cut by the crop is not faded out there)."""
    b = _blur(mask.to(torch.float64)[..., None], int(radius), "replicate")[..., 0]
    return torch.where(b >= 1 - 1e-9, torch.ones_like(b), b.clamp(0.0, 1.0))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, radius: int, fallback: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) -> the tent-weighted mean of x over the `mask` (B, H, W) pixels within `radius` px
    (normalised convolution; `fallback` (broadcastable) where no mask pixel is that close)."""
    m = mask.to(x.dtype)[..., None]
    num, den = _blur(x * m, radius), _blur(m, radius)
    return torch.where(den > 0, num / den.clamp_min(1e-12), fallback)


def _extend(change: torch.Tensor, mask: torch.Tensor, radius: int, neutral: float) -> torch.Tensor:
    """(B, H, W, C) change defined on `mask` (B, H, W) -> the same inside the mask, the mask-weighted local mean
    (`radius` px) in the ring around it, `neutral` elsewhere."""
    ring = _masked_mean(change, mask, radius, torch.full_like(change, neutral))
    return torch.where(mask[..., None], change, ring)


def agreement(photo_linear: torch.Tensor, render: torch.Tensor, mask: torch.Tensor, radius: int = TRUST_PX,
              stops: tuple[float, float] = TRUST_STOPS) -> torch.Tensor:
    """How well the fit explains the photo, per pixel: (B, H, W) weights in [0, 1] (0 outside `mask`).

    photo_linear, render  (B, H, W, 3) linear RGB (the photo and the render of its estimate)
    mask                  (B, H, W) bool, the render's face pixels

    d = |log2(Y_photo / Y_render) - median over the mask|, Y the luminance of the local means (`radius` px,
    over the mask), so a fit whose light is off by a constant factor still agrees everywhere; weight 1 for
    d <= stops[0], 0 for d >= stops[1], linear between. Where the fitted face covers something else (the neck
    under a jaw fitted too low, a hand or hair in front of the face, background beyond the outline), the photo is
    several stops darker or brighter than the render and the edit should leave it alone; where the model
    explains the photo exactly the weight is 1.
    """
    lo, hi = float(stops[0]), float(stops[1])
    if not 0 <= lo < hi:
        raise ValueError(f"agreement stops must be 0 <= lo < hi, got {stops}")
    luma = torch.tensor(LUMINANCE, dtype=torch.float64)
    photo_linear, render = photo_linear.double(), render.detach().cpu().double().clamp_min(0)
    p = _masked_mean(photo_linear, mask, radius, photo_linear) @ luma
    r = _masked_mean(render, mask, radius, render) @ luma
    d = torch.log2((p + RATIO_EPS) / (r + RATIO_EPS))
    out = torch.zeros_like(d)
    for b in range(d.shape[0]):
        m = mask[b]
        if m.any():
            dev = (d[b] - d[b][m].median()).abs()
            out[b] = torch.where(m, ((hi - dev) / (hi - lo)).clamp(0.0, 1.0), torch.zeros_like(dev))
    return out


def _to_uint8(linear: torch.Tensor) -> np.ndarray:
    return torch.round(linear_to_srgb(linear) * 255.0).to(torch.uint8).cpu().numpy()


def _photo_linear(photo: np.ndarray) -> torch.Tensor:
    """(..., 3) uint8 sRGB -> float64 linear RGB (a copy: arrays from PIL are read-only)."""
    return srgb_to_linear(torch.from_numpy(np.array(photo, dtype=np.float64)) / 255.0)


def composite(photo: np.ndarray, old_render: torch.Tensor, new_render: torch.Tensor, mask: torch.Tensor,
              mode: str = "ratio", feather: int = FEATHER_PX, residual: torch.Tensor | None = None,
              smooth: int = 0, trust: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Transfer the change old_render -> new_render into `photo` inside `mask`.

    photo       (B, S, S, 3) uint8 sRGB
    old_render  (B, S, S, 3) linear RGB render of the estimate (the photo's explanation)
    new_render  (B, S, S, 3) linear RGB render of the edited parameters
    mask        (B, S, S) bool, where the edit applies (the face part of the render that defines the edit)
    mode        "ratio": edited = photo * clamp((new + eps) / (old + eps), 0, MAX_RATIO);
                "difference": edited = new + residual, residual (B, S, S, 3) linear defaulting to photo - old
    feather     radius of the mask feather, px (0: hard mask)
    smooth      ratio mode: new and old are replaced by their local means over `mask` (normalised tent blur of
                this radius, px; 0: per pixel) before the ratio is taken
    trust       optional (B, S, S) weights in [0, 1] on `mask` (e.g. `agreement`): the edit applies by this much
                (the photo stays where it is 0); extended into the feather ring like the change

    Returns (edited (B, S, S, 3) uint8 sRGB, alpha (B, S, S) float64 feathered weights). Pixels with alpha 0
    (farther than `feather` px from the mask) are copied bit-for-bit from `photo`.
    """
    if mode not in MODES:
        raise ValueError(f"composite mode {mode!r}: one of {', '.join(MODES)}")
    photo = np.asarray(photo)
    shape = tuple(photo.shape)
    for name, t in (("old_render", old_render), ("new_render", new_render)):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, the photo {shape}")
    if tuple(mask.shape) != shape[:-1]:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {shape[:-1]}")
    if residual is not None and tuple(residual.shape) != shape:
        raise ValueError(f"residual has shape {tuple(residual.shape)}, the photo {shape}")
    feather = int(feather)
    if feather < 0:
        raise ValueError(f"feather must be >= 0 px, got {feather}")
    lin = _photo_linear(photo)
    old, new = old_render.detach().cpu().double(), new_render.detach().cpu().double()
    mask = mask.cpu()
    if int(smooth) < 0:
        raise ValueError(f"smooth must be >= 0 px, got {smooth}")
    if mode == "ratio":
        if smooth:
            new, old = _masked_mean(new, mask, int(smooth), new), _masked_mean(old, mask, int(smooth), old)
        ratio = ((new.clamp_min(0) + RATIO_EPS) / (old.clamp_min(0) + RATIO_EPS)).clamp(0.0, MAX_RATIO)
        target = lin * _extend(ratio, mask, feather, 1.0)
    else:
        res = lin - old if residual is None else residual.detach().cpu().double()
        target = lin + _extend(new + res - lin, mask, feather, 0.0)
    alpha = feather_mask(mask, feather)
    if trust is not None:
        if tuple(trust.shape) != shape[:-1]:
            raise ValueError(f"trust has shape {tuple(trust.shape)}, expected {shape[:-1]}")
        alpha = alpha * _extend(trust.detach().cpu().double()[..., None], mask, feather, 0.0)[..., 0]
    out = _to_uint8(lin + alpha[..., None] * (target - lin))
    keep = (alpha <= 0).numpy()[..., None]
    return np.where(keep, photo, out), alpha


# ---------------------------------------------------------------------------------------------------------------
# Residual warp for geometry-changing edits
# ---------------------------------------------------------------------------------------------------------------
def warp_residual(renderer: Renderer, old: FaceRender, new: FaceRender, residual: torch.Tensor,
                  old_mask: torch.Tensor, new_mask: torch.Tensor, fill_px: int = FILL_PX) -> torch.Tensor:
    """Carry a residual image along with the surface from the old render to the new one.

    old, new   renders of the same mesh (same triangles) with different geometry, (B, S, S) images
    residual   (B, S, S, 3) linear photo - old render, meaningful on `old_mask` (B, S, S) bool
    new_mask   (B, S, S) bool, pixels that need a residual

    Returns (B, S, S, 3) float64: at each new_mask pixel the bilinear sample of the residual where its surface
    point (same triangle and barycentrics) projects in the old render, over old-mask taps whose depth is within
    DEPTH_TOL_CM of the point's; pixels without such a tap get the `fill_px` local mean of the warped residual,
    or 0. Zero outside new_mask.
    """
    b, h, w, _ = residual.shape
    res = residual.detach().cpu().double() * old_mask.cpu()[..., None]
    src = new.fragments.interpolate(old.vertices.detach()).reshape(b, h * w, 3)
    xy, z = renderer.camera.project(src)
    u, v = xy[..., 0].cpu().double() - 0.5, xy[..., 1].cpu().double() - 0.5   # pixel-index coordinates
    z = z.cpu().double()
    old_depth = old.depth.detach().cpu().double().reshape(-1)
    flat_res, flat_mask = res.reshape(-1, 3), old_mask.cpu().reshape(-1)
    x0, y0 = torch.floor(u), torch.floor(v)
    fx, fy = u - x0, v - y0
    base = (torch.arange(b) * h * w)[:, None]
    acc, wsum = torch.zeros(b, h * w, 3, dtype=torch.float64), torch.zeros(b, h * w, dtype=torch.float64)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).long(), (y0 + dy).long()
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        idx = (base + yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).reshape(-1)
        ok = inside & flat_mask[idx].reshape(b, -1) & ((old_depth[idx].reshape(b, -1) - z).abs() < DEPTH_TOL_CM)
        wt = torch.where(ok, wt, torch.zeros_like(wt))
        acc += wt[..., None] * flat_res[idx].reshape(b, -1, 3)
        wsum += wt
    nm = new_mask.cpu()
    have = (wsum > 0).reshape(b, h, w) & nm
    warped = torch.where(have[..., None], (acc / wsum.clamp_min(1e-12)[..., None]).reshape(b, h, w, 3),
                         torch.zeros(b, h, w, 3, dtype=torch.float64))
    filled = _extend(warped, have, int(fill_px), 0.0)  # missing pixels: local mean of the warped residual
    return torch.where(nm[..., None], filled, torch.zeros_like(filled))


# ---------------------------------------------------------------------------------------------------------------
# Edits
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EditResult:
    """An edited crop. Batch dimensions follow the inputs: (S, S, ...) for an unbatched photo, else (B, S, S, ...).

    edited      (S, S, 3) uint8 sRGB, the photo with the edit composited in
    render      (S, S, 3) float32 linear RGB, the new render (background 0)
    old_render  (S, S, 3) float32 linear RGB, the render of the estimate (background 0)
    mask        (S, S) bool, the face mask the edit applies to (before feathering)
    alpha       (S, S) float64, the feathered compositing weights (0 farther than `feather` px from `mask`)
    params      (P,) the edited parameters
    mode        "ratio" or "difference": how the change was transferred (pass it on to `paste_back`)
    """

    edited: np.ndarray
    render: torch.Tensor
    old_render: torch.Tensor
    mask: torch.Tensor
    alpha: torch.Tensor
    params: torch.Tensor
    mode: str


def _batched(renderer: Renderer, params, photo) -> tuple[torch.Tensor, np.ndarray, bool]:
    """Validate and add a batch dimension: params (B, P) float, photo (B, S, S, 3) uint8, was-unbatched flag."""
    photo = np.asarray(photo.cpu().numpy() if isinstance(photo, torch.Tensor) else photo)
    s = renderer.settings.image_size
    if photo.dtype != np.uint8:
        raise ValueError(f"photo must be uint8 sRGB, got dtype {photo.dtype}")
    if photo.ndim not in (3, 4) or photo.shape[-3:] != (s, s, 3):
        raise ValueError(f"photo must be (S, S, 3) or (B, S, S, 3) with S = {s} (the renderer's image size), "
                         f"got shape {photo.shape}")
    params = torch.as_tensor(params)
    if not params.is_floating_point():
        params = params.float()
    size = renderer.layout.size
    if params.ndim not in (1, 2) or params.shape[-1] != size:
        raise ValueError(f"params must be (P,) or (B, P) with P = {size}, got shape {tuple(params.shape)}")
    single = photo.ndim == 3
    if (params.ndim == 1) != single or (not single and params.shape[0] != photo.shape[0]):
        raise ValueError(f"params {tuple(params.shape)} and photo {photo.shape} do not match (one parameter "
                         f"vector per photo, both batched or neither)")
    if not torch.isfinite(params).all():
        raise ValueError("params contain NaN or infinite values")
    return (params[None] if single else params), (photo[None] if single else photo), single


def _light(light: Light, batch: int, like: torch.Tensor) -> torch.Tensor:
    """str | (9, 3) | (B, 9, 3) -> (B, 9, 3) SH coefficients."""
    if isinstance(light, str):
        light = preset_light(light)
    t = torch.as_tensor(np.asarray(light) if isinstance(light, np.ndarray) else light)
    if t.shape[-2:] != (N_SH, 3) or t.ndim not in (2, 3) or (t.ndim == 3 and t.shape[0] != batch):
        raise ValueError(f"light must be (9, 3) or (B, 9, 3) SH coefficients (B = {batch}), "
                         f"got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("light contains NaN or infinite values")
    return t.to(like).expand(batch, N_SH, 3)


def _finish(edited, new, old, mask, alpha, params, mode, single) -> EditResult:
    pick = (lambda x: x[0]) if single else (lambda x: x)
    return EditResult(pick(edited), pick(new.image.detach()), pick(old.image.detach()), pick(mask.cpu()),
                      pick(alpha), pick(params), mode)


@torch.no_grad()
def relight(renderer: Renderer, params, photo, light: Light, feather: int = FEATHER_PX,
            smooth: int = RATIO_SMOOTH_PX, trust_stops: tuple[float, float] | None = TRUST_STOPS) -> EditResult:
    """Replace the estimated SH light of `params` by `light` and relight `photo` with the ratio image.

    params  (P,) or (B, P) estimate for the photo(s), the renderer's ParamLayout
    photo   (S, S, 3) or (B, S, S, 3) uint8 sRGB crop(s), S = renderer.settings.image_size
    light   a PRESETS name, or (9, 3) / (B, 9, 3) camera-space SH coefficients (e.g. another photo's
            `layout.split(p)["illumination"]`)
    smooth  radius (px) of the local means the ratio is taken between (`composite`; 0: per pixel)
    trust_stops  the edit applies by `agreement` of photo and fit (these stops), so pixels the fitted face
            covers but does not explain keep their light; None: everywhere on the face mask
    """
    params, photo, single = _batched(renderer, params, photo)
    groups = dict(renderer.layout.split(params))
    groups["illumination"] = _light(light, params.shape[0], params)
    new_params = renderer.layout.join(groups)
    old, new = renderer(params, background=0.0), renderer(new_params, background=0.0)
    mask = face_mask(renderer, old)  # same geometry: the same pixels as the new render's
    trust = None if trust_stops is None else agreement(_photo_linear(photo), old.image, mask, stops=trust_stops)
    edited, alpha = composite(photo, old.image, new.image, mask, "ratio", feather, smooth=smooth, trust=trust)
    return _finish(edited, new, old, mask, alpha, new_params, "ratio", single)


def _coefficients(spec: Coefficients, base: torch.Tensor, what: str, names: Sequence[str] = ()) -> torch.Tensor:
    """Values for a (B, K) group: (K,) / (B, K) array-like, or {index or name: value}. Returns (B, K), NaN where
    a mapping gives no value."""
    b, k = base.shape
    out = torch.full_like(base, float("nan"))
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if isinstance(key, str):
                if key not in names[:k]:
                    raise ValueError(f"unknown {what} name {key!r}; names are: {', '.join(names[:k]) or '(none)'}")
                key = list(names).index(key)
            if not (isinstance(key, (int, np.integer)) and 0 <= key < k):
                raise ValueError(f"{what} index {key!r} outside 0..{k - 1}")
            out[:, int(key)] = float(value)
    else:
        t = torch.as_tensor(np.asarray(spec, dtype=np.float64)).to(base)
        if t.shape not in ((k,), (b, k)):
            raise ValueError(f"{what} must have shape ({k},) or ({b}, {k}), got {tuple(t.shape)}")
        out = t.expand(b, k).clone()
        if not torch.isfinite(out).all():
            raise ValueError(f"{what} contains NaN or infinite values")
    return out


def _edit_group(base: torch.Tensor, value, delta, what: str, names: Sequence[str] = ()) -> torch.Tensor:
    out = base.clone()
    if value is not None:
        v = _coefficients(value, base, what, names)
        out = torch.where(torch.isnan(v), out, v)
    if delta is not None:
        d = _coefficients(delta, base, f"{what} delta", names)
        out = out + torch.nan_to_num(d, nan=0.0)
    return out


@torch.no_grad()
def edit_appearance(renderer: Renderer, params, photo, reflectance: Coefficients | None = None,
                    reflectance_delta: Coefficients | None = None, expression: Coefficients | None = None,
                    expression_delta: Coefficients | None = None, feather: int = FEATHER_PX,
                    trust_stops: tuple[float, float] | None = TRUST_STOPS) -> EditResult:
    """Change reflectance and/or expression weights, re-render and transfer the change by difference.

    params, photo as in `relight`. Each of the four edits is a (K,) or (B, K) array-like, or a mapping
    {index: value} (expressions also {name: value}, names from renderer.face_model.expression_names):
    `reflectance` / `expression` set weights, `*_delta` add to them (set first, then add). Reflectance weights
    are the PCA's N(0, 1) units; expression weights are ICT blendshape weights (nominally [0, 1], not clamped).
    trust_stops as in `relight`: photo pixels the old fit covers but does not explain are left alone (new face
    pixels outside the old face take the local mean of the old weights within FILL_PX, else 1).
    """
    params, photo, single = _batched(renderer, params, photo)
    g = renderer.layout.split(params)
    groups = dict(g)
    groups["reflectance"] = _edit_group(g["reflectance"], reflectance, reflectance_delta, "reflectance")
    groups["expression"] = _edit_group(g["expression"], expression, expression_delta, "expression",
                                       renderer.face_model.expression_names)
    new_params = renderer.layout.join(groups)
    old, new = renderer(params, background=0.0), renderer(new_params, background=0.0)
    old_mask, new_mask = face_mask(renderer, old), face_mask(renderer, new)
    residual = None  # same geometry: the residual stays where it is (pixel-aligned, photo - old)
    photo_lin = _photo_linear(photo)
    if not torch.equal(old.vertices, new.vertices):
        # The residual travels with the surface as a factor (photo / old): applied to the new render it stays
        # >= 0 where the new shading is darker than the old (a difference could go below black there).
        old_lin = old.image.cpu().double().clamp_min(0)
        factor = ((photo_lin + RATIO_EPS) / (old_lin + RATIO_EPS)).clamp(0.0, MAX_RATIO)
        moved = warp_residual(renderer, old, new, factor - 1, old_mask, new_mask)
        residual = new.image.cpu().double().clamp_min(0) * moved
    trust = None
    if trust_stops is not None:
        old_trust = agreement(photo_lin, old.image, old_mask, stops=trust_stops)
        trust = _extend(old_trust[..., None], old_mask.cpu(), FILL_PX, 1.0)[..., 0]
        trust = torch.where(new_mask.cpu(), trust, torch.zeros_like(trust))
    edited, alpha = composite(photo, old.image, new.image, new_mask, "difference", feather, residual, trust=trust)
    return _finish(edited, new, old, new_mask, alpha, new_params, "difference", single)


# ---------------------------------------------------------------------------------------------------------------
# Back to the full photo
# ---------------------------------------------------------------------------------------------------------------
def paste_back(photo_full, edited_crop, original_crop, affine, mode: str = "difference") -> np.ndarray:
    """Carry the change original_crop -> edited_crop into the full-resolution photo.

    photo_full     (H, W, 3) uint8 sRGB, the photo the crop was taken from
    edited_crop    (S, S, 3) uint8 sRGB, e.g. EditResult.edited
    original_crop  (S, S, 3) uint8 sRGB, the crop the edit started from
    affine         (2, 3) crop px -> photo px (what ifn.real.crop_square / crop_box / frame return; continuous
                   coordinates, pixel centres at +0.5)
    mode           "difference": photo += warp(lin(edited) - lin(original)); "ratio": photo *=
                   warp((lin(edited) + eps) / (lin(original) + eps)) (relighting: keeps the photo's full-resolution
                   detail under the new light). Linear RGB, bilinear resampling through the inverse affine.

    Returns a new (H, W, 3) uint8 array. A photo pixel changes only if the bilinear footprint of its centre in
    the crop touches a crop pixel where edited != original; every other pixel is copied bit-for-bit (an identity
    edit returns the photo unchanged). The crop knows nothing beyond its border: an edit reaching it stops there
    in the photo. In "ratio" mode the ratio comes from uint8 crops, so it is noisy where the crop is near black.
    """
    if mode not in MODES:
        raise ValueError(f"paste_back mode {mode!r}: one of {', '.join(MODES)}")
    photo_full, edited_crop, original_crop = (np.asarray(a) for a in (photo_full, edited_crop, original_crop))
    for name, a in (("photo_full", photo_full), ("edited_crop", edited_crop), ("original_crop", original_crop)):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"{name} must be an (H, W, 3) uint8 sRGB image, got {a.dtype} {a.shape}")
    if edited_crop.shape != original_crop.shape or edited_crop.shape[0] != edited_crop.shape[1]:
        raise ValueError(f"edited_crop {edited_crop.shape} and original_crop {original_crop.shape} must be the "
                         f"same square (S, S, 3) shape")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (2, 3) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:, :2])) < 1e-12:
        raise ValueError(f"affine must be a finite invertible (2, 3) matrix, got {affine.tolist()}")
    out = photo_full.copy()
    changed = (edited_crop != original_crop).any(-1)
    if not changed.any():
        return out
    s = edited_crop.shape[0]
    e, o = _photo_linear(edited_crop), _photo_linear(original_crop)
    change = e - o if mode == "difference" else (e + RATIO_EPS) / (o + RATIO_EPS) - 1.0  # 0 = no change
    change = torch.where(torch.from_numpy(changed)[..., None], change, torch.zeros_like(change))
    # Photo-pixel box that can be touched: the changed crop pixels' box, one pixel wider (bilinear footprint).
    rows, cols = np.nonzero(changed)
    corners = np.array([[c, r] for c in (cols.min() - 1, cols.max() + 2) for r in (rows.min() - 1, rows.max() + 2)],
                       dtype=np.float64)
    src = apply_affine(affine, corners)
    h, w = photo_full.shape[:2]
    x0, y0 = max(0, int(np.floor(src[:, 0].min()))), max(0, int(np.floor(src[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(src[:, 0].max())) + 1), min(h, int(np.ceil(src[:, 1].max())) + 1)
    if x0 >= x1 or y0 >= y1:
        return out
    ys, xs = np.meshgrid(np.arange(y0, y1) + 0.5, np.arange(x0, x1) + 0.5, indexing="ij")
    crop_xy = apply_affine(invert_affine(affine), np.stack([xs, ys], -1))     # continuous crop coordinates
    grid = torch.from_numpy(2.0 * crop_xy / s - 1.0)[None]                  # grid_sample, align_corners=False
    stack = torch.cat([change, torch.from_numpy(changed)[..., None].double()], -1).permute(2, 0, 1)[None]
    sampled = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    delta, touched = sampled[:3].permute(1, 2, 0), (sampled[3] > 0).numpy()
    lin = _photo_linear(photo_full[y0:y1, x0:x1])
    new = lin + delta if mode == "difference" else lin * (1.0 + delta)
    out[y0:y1, x0:x1] = np.where(touched[..., None], _to_uint8(new), photo_full[y0:y1, x0:x1])
    return out
