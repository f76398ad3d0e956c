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
- reflectance edits (`edit_appearance(reflectance=...)`): edited = photo * A_new / A_old per pixel (the albedo
  ratio; relief > 0, the default), with the per-vertex change A_new - A_old low-passed over the mesh first, so
  the skin changes as a whole and the model's own nostril or lip colour is not painted where the photo's nostrils
  and lips are not; the photo's detail scales with its skin. relief = 0: difference transfer, edited = new +
  (photo - old) (exact for a photo the model explains, but it prints the render's relief and the light's shading
  of it where the fit is off).
- expression edits (`edit_appearance(expression=...)`): the geometry moves, so the photo moves with it
  (ifn.apps.surface_warp): each pixel of the new face takes the photo where the same surface point (same
  triangle and barycentrics) was in the old render, if it was visible there; the displacement is extended
  smoothly into newly visible pixels and fades to zero a few pixels beyond the face, so the photo's own lips
  become the smile's lips and nothing of the render (a second mouth, the model's nostrils) is pasted in. The
  warped photo is multiplied by the per-vertex change of the rendered radiance at the same vertex (new / old
  albedo x shading, low-passed like relighting's: the moved surface turns towards or away from the light).

Relief (`relief`, default RELIEF_ITERATIONS): the changes a relighting or reflectance edit transfers are taken
on the model's coarse shape: normals (and albedo changes) averaged over mesh neighbourhoods (ifn.apps.mesh_smooth).
The fine relief of the model -- nostrils, eye sockets, lip and eyelid creases -- changes its shading the most
under a new light, and a fit a few pixels off printed it onto the photo as ghost features (bright nostril specks,
glows beside the eyes). Relighting also keeps the light's colour change global: the ratio is the luminance ratio
of the two shadings times the ratio of their mean colours, so an estimated light whose channels point different
ways does not tint patches of the face. relief = 0 transfers the exact render ratio (closed-form tests use it).

Where the edit applies (`region`, ifn.apps.edit_region): the render's face part reaches further than a fit can be
trusted (down the throat, to the hairline and ears, round to the silhouette), so each edit applies by per-vertex
weights: 1 on the inner face, fading out towards the jaw contour of the landmarks, the face part's border and the
render's outline. The holes of the face mask (eyes, an open mouth) are relit and warped with the change around
them (HOLE_PX): a hole left as it was would show as a spot of the old light.

Trust (`trust_stops`, ifn.apps.composite.agreement): each edit also applies by how well the fit explains the
photo locally (luminance), so a dark occluder or the neck under a misplaced jaw keeps its light.

Compositing (ifn.apps.composite): only the face part (`ifn.evaluate.face_triangles`) of the render counts; its mask is feathered
by a separable tent blur of radius `feather` px, and the per-pixel change (ratio or difference) is extended
into the feather ring by normalised convolution. Pixels farther than `feather` px (Chebyshev distance) from the
face mask are returned bit-for-bit unchanged. `paste_back` carries a crop's change into the full photo
through the crop affine of ifn.real (crop px -> source px), again leaving untouched pixels bit-for-bit.

Light presets: ifn.apps.lights. Pasting a crop's change back into the full photo: ifn.apps.paste_back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import torch

from ..model.layout import N_SH
from ..render.renderer import FaceRender, Renderer
from ..render.shading import sh_shading
from .composite import (FEATHER_PX, LUMINANCE, MAX_RATIO, MODES, RATIO_EPS, TRUST_PX, TRUST_STOPS,  # noqa: F401
                        agreement, composite, extend, face_mask, feather_mask, fill_holes,
                        photo_linear, to_uint8)
from .edit_region import edit_weights
from .lights import PRESETS, Preset, preset_light  # noqa: F401  (re-exported: the edits' light presets)
from .mesh_smooth import smooth_field, smooth_normals
from .paste_back import paste_back  # noqa: F401  (re-exported)
from .surface_warp import extend_flow, surface_flow, warp_image

RATIO_SMOOTH_PX = 3      # relighting: radius of the local means the ratio is taken between (0: per pixel)
HOLE_PX = 8              # radius (px) of the change carried into the face mask's holes (eyes, nostrils, mouth)
RELIEF_ITERATIONS = 30   # neighbour means of the normals (and albedo change) the transferred change is taken on

Light = Union[str, torch.Tensor, np.ndarray]
Coefficients = Union[torch.Tensor, np.ndarray, Sequence[float], Mapping[Union[int, str], float]]


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
            smooth: int = RATIO_SMOOTH_PX, trust_stops: tuple[float, float] | None = TRUST_STOPS,
            region: bool = True, keep_exposure: bool = False, relief: int = RELIEF_ITERATIONS,
            holes: int = HOLE_PX) -> EditResult:
    """Replace the estimated SH light of `params` by `light` and relight `photo` with the ratio image.

    params  (P,) or (B, P) estimate for the photo(s), the renderer's ParamLayout
    photo   (S, S, 3) or (B, S, S, 3) uint8 sRGB crop(s), S = renderer.settings.image_size
    light   a PRESETS name, or (9, 3) / (B, 9, 3) camera-space SH coefficients (e.g. another photo's
            `layout.split(p)["illumination"]`)
    smooth  radius (px) of the local means the ratio is taken between (`composite`; 0: per pixel)
    trust_stops  the edit applies by `agreement` of photo and fit (these stops), so pixels the fitted face
            covers but does not explain keep their light; None: everywhere on the face mask
    region  the edit applies by `ifn.apps.edit_region.edit_weights` (the inner face, fading out towards the jaw
            contour, the face part's border and the render's outline); False: on the whole face mask
    keep_exposure  scale the new light per colour channel so that the face's mean rendered radiance (over the
            edit weights) stays what it was: only where the light comes from changes, not how bright or what
            colour it is on average (a preset's absolute strength can be stops away from the photo's exposure,
            and a ratio of several stops multiplies the photo's noise with it); `params` of the result hold the
            scaled light
    relief  the ratio is that of the two lights' shading on the normals smoothed by this many neighbour means
            over the mesh (ifn.apps.mesh_smooth), so the model's fine relief is not printed onto the photo; 0: the
            ratio of the two renders themselves
    """
    params, photo, single = _batched(renderer, params, photo)
    groups = dict(renderer.layout.split(params))
    groups["illumination"] = _light(light, params.shape[0], params)
    new_params = renderer.layout.join(groups)
    old, new = renderer(params, background=0.0), renderer(new_params, background=0.0)
    mask = face_mask(renderer, old)  # same geometry: the same pixels as the new render's
    trust = _trust(renderer, old, mask, photo_linear(photo), trust_stops, region)
    if keep_exposure:
        w = (mask.double() if trust is None else trust)[..., None]
        mean = lambda img: (img.detach().cpu().double().clamp_min(0) * w).sum((1, 2))   # noqa: E731  (B, 3)
        gain = torch.where(mean(new.image) > 0, mean(old.image) / mean(new.image).clamp_min(1e-12),
                           torch.ones(()).double())
        groups["illumination"] = groups["illumination"] * gain[:, None, :].to(params)
        new_params = renderer.layout.join(groups)
        new = renderer(new_params, background=0.0)
    before, after = old.image, new.image
    if relief > 0:   # the two lights' shading (no albedo: it cancels) on the smoothed normals, global colour
        before, after = (_image(old, _smooth_shading(renderer, old, renderer.layout.split(p)["illumination"],
                                                     relief)) for p in (params, new_params))
        before, after = _global_colour(before, after, mask.double() if trust is None else trust)
    edited, alpha = composite(photo, before, after, mask, "ratio", feather, smooth=smooth, trust=trust,
                              holes=holes)
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
                    trust_stops: tuple[float, float] | None = TRUST_STOPS, region: bool = True,
                    relief: int = RELIEF_ITERATIONS) -> EditResult:
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
    photo_lin = photo_linear(photo)
    if torch.equal(old.vertices, new.vertices):
        # Same geometry (a reflectance edit): the change stays where it is.
        trust = _trust(renderer, old, old_mask, photo_lin, trust_stops, region)
        if relief > 0:   # photo x low-passed albedo ratio: nothing of the render's shading or relief is printed
            before = _image(old, old.albedo.detach().cpu().double())
            after = _image(old, _albedo_change(renderer, old, new, relief))
            edited, alpha = composite(photo, before, after, new_mask, "ratio", feather, trust=trust)
            return _finish(edited, new, old, new_mask, alpha, new_params, "ratio", single)
        edited, alpha = composite(photo, old.image, new.image, new_mask, "difference", feather, trust=trust)
        return _finish(edited, new, old, new_mask, alpha, new_params, "difference", single)
    edited, alpha = _move_photo(renderer, old, new, old_mask, new_mask, photo, photo_lin, feather, trust_stops,
                                region, g["illumination"], relief, HOLE_PX)
    return _finish(edited, new, old, new_mask, alpha, new_params, "difference", single)


def _smooth_shading(renderer: Renderer, render: FaceRender, light: torch.Tensor, iterations: int) -> torch.Tensor:
    """(B, V, 3) float64 shading of the SH `light` (B, 9, 3) on `render`'s normals smoothed by `iterations`
    neighbour means (ifn.apps.mesh_smooth): the shading without the model's fine relief (nostrils, eye sockets,
    creases), which a slightly misplaced fit would print onto the photo (0: the render's own normals)."""
    normals = smooth_normals(renderer.face_model, render.normals, iterations)
    return sh_shading(normals, light.detach().cpu().double()).clamp_min(0)


def _albedo_change(renderer: Renderer, old: FaceRender, new: FaceRender, iterations: int) -> torch.Tensor:
    """(B, V, 3) float64 new albedo with the change new - old low-passed like the normals (the change of the
    skin as a whole, not of the model's nostril or lip colour where the photo's may not be)."""
    a = old.albedo.detach().cpu().double()
    return (a + smooth_field(renderer.face_model, new.albedo.detach().cpu().double() - a, iterations)).clamp_min(0)


def _image(render: FaceRender, per_vertex: torch.Tensor) -> torch.Tensor:
    """(B, V, 3) -> (B, S, S, 3) float64 interpolated over `render`'s pixels."""
    return render.fragments.interpolate(per_vertex.to(render.image)).detach().cpu().double()


def _global_colour(before: torch.Tensor, after: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """Relighting images (B, S, S, 3) -> the same with each one's colour replaced by its mean colour over
    `weights` (B, S, S) at the pixel's own luminance: the ratio then changes the light's brightness per pixel
    and its colour only as a whole (an estimated light whose channels point in different directions would
    otherwise tint patches where one channel's shading is near zero)."""
    luma = before.new_tensor(LUMINANCE)
    out = []
    for img in (before, after):
        y = img @ luma
        w = weights[..., None]
        chroma = (img * w).sum((1, 2)) / ((y[..., None] * w).sum((1, 2))).clamp_min(1e-12)   # (B, 3)
        out.append(y[..., None] * chroma[:, None, None, :])
    return out[0], out[1]


def _trust(renderer: Renderer, render: FaceRender, mask: torch.Tensor, photo_lin: torch.Tensor,
           trust_stops: tuple[float, float] | None, region: bool) -> torch.Tensor | None:
    """(B, S, S) weights an edit applies by on `mask`: `agreement` (unless trust_stops is None) times
    `edit_weights` (if region); None when neither applies."""
    trust = None if trust_stops is None else agreement(photo_lin, render.image, mask, stops=trust_stops)
    if region:
        w = edit_weights(renderer, render, mask)
        trust = w if trust is None else trust * w
    return trust


def _radiance_ratio(renderer: Renderer, old: FaceRender, new: FaceRender, light: torch.Tensor, relief: int
                    ) -> torch.Tensor:
    """(B, V, 3) float64 new / old radiance per vertex, clamped to [0, MAX_RATIO]: albedo x shading; with
    relief > 0 the shading of `light` (B, 9, 3; both renders') on smoothed normals and the albedo change
    low-passed."""
    if relief <= 0:
        before = old.albedo * old.shading
        after = new.albedo * new.shading
    else:
        before = old.albedo.detach().cpu().double() * _smooth_shading(renderer, old, light, relief)
        after = _albedo_change(renderer, old, new, relief) * _smooth_shading(renderer, new, light, relief)
    before, after = (x.detach().cpu().double().clamp_min(0) for x in (before, after))
    return ((after + RATIO_EPS) / (before + RATIO_EPS)).clamp(0.0, MAX_RATIO)


def _move_photo(renderer: Renderer, old: FaceRender, new: FaceRender, old_mask: torch.Tensor,
                new_mask: torch.Tensor, photo: np.ndarray, photo_lin: torch.Tensor, feather: int,
                trust_stops: tuple[float, float] | None, region: bool, light: torch.Tensor, relief: int,
                holes: int) -> tuple[np.ndarray, torch.Tensor]:
    """A geometry edit: the photo warped with the surface (ifn.apps.surface_warp), times the per-vertex change of
    the rendered radiance (albedo x shading, new / old at the same vertex: the shading of the moved surface, and
    an albedo edit made at the same time; both low-passed by `relief` as in relighting), the factor applied by
    the trust on the new face."""
    flow, valid = surface_flow(renderer, old, new, old_mask, new_mask)
    flow = extend_flow(flow, valid)
    warped = warp_image(photo_lin, flow, taps=old_mask.cpu(), restrict=valid)
    ratio = _image(new, _radiance_ratio(renderer, old, new, light, relief))
    nm = new_mask.cpu()
    # Trust: the old fit's agreement carried to the new pixels with the warp, times the region on the new face.
    trust = None if trust_stops is None else agreement(photo_lin, old.image, old_mask, stops=trust_stops)
    if trust is not None:
        trust = warp_image(trust[..., None], flow)[..., 0]
    if region:
        w = edit_weights(renderer, new, new_mask)
        trust = w if trust is None else trust * w
    ratio = torch.where(nm[..., None], ratio, torch.ones_like(ratio))
    trust = None if trust is None else trust[..., None]
    if holes:
        (ratio, trust), nm = fill_holes([(ratio, 1.0), (trust, 0.0)], nm, int(holes))
    factor = extend(ratio, nm, feather, 1.0)
    alpha = feather_mask(nm, feather)
    if trust is not None:
        alpha = alpha * extend(trust, nm, feather, 0.0)[..., 0]
    target = warped * (1.0 + alpha[..., None] * (factor - 1.0))
    out = to_uint8(target)
    keep = ((flow == 0).all(-1) & (alpha <= 0)).numpy()[..., None]
    return np.where(keep, photo, out), alpha
