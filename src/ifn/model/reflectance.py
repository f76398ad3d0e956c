"""The project's own linear skin reflectance (albedo) model.

albedo(beta) = mean + sum_k beta_k * basis_k, beta ~ N(0, I), per-vertex linear RGB in [0, 1].
No open albedo PCA exists, so ifn builds one by PCA over samples of a physically motivated skin generator
(see `generate_albedo` and `build_reflectance_model`). The model is stored over all vertices of the source
mesh; `subset` selects the vertices of a FaceModel region via `FaceModel.source_index`.

The generator (`generate_albedo`)
--------------------------------
Skin colour follows the optical-density (Beer-Lambert) chromophore model of Tsumura et al. (2003): per vertex and
linear-RGB channel

    density     = BASE_DENSITY + c_mel * SIGMA_MELANIN + c_hb * SIGMA_HAEMOGLOBIN + c_car * SIGMA_CAROTENE
    reflectance = SURFACE_REFLECTANCE + (1 - SURFACE_REFLECTANCE) * exp(-density)

Melanin absorbs blue most, haemoglobin green most, carotene (a small yellowness term) blue only. The nearly flat
SURFACE_REFLECTANCE (light scattered back by the surface and the upper epidermis) keeps very dark skin from
becoming implausibly saturated.

Per person the generator draws:
  * melanin such that the mean of the green and blue reflectance of the nominal skin follows an Irwin-Hall(3)
    distribution (mean of three uniforms: bell-shaped, bounded, its ends exactly at mean +- 3 sd) between the
    darkest skin (c_mel = MELANIN_RANGE[1]) and the lightest (MELANIN_RANGE[0]);
  * haemoglobin and carotene (normal, clipped);
  * regional offsets on soft region weights computed on the mean mesh from distances to landmark vertices
    (`albedo_regions`): lips (more haemoglobin, less melanin), cheeks (blush), nose, ears, eye surround
    (more melanin, a little more haemoglobin), forehead (tanning), brows (the person's hair colour blended in),
    the beard/stubble area (40 % of people: the lower face darkened, slightly blue-grey);
  * low-frequency noise: two random smooth fields on the skin (melanin, relative; haemoglobin, absolute), each a
    random N(0, 1) combination of N_NOISE_ANCHORS Gaussian bumps (radius NOISE_RADIUS_CM) centred on
    farthest-point-sampled skin vertices, scaled by `noise_scale`;
  * non-skin parts: eyeballs (sclera; an iris disc of the person's eye colour -- dark brown / brown / hazel /
    green / blue / grey, dark more likely for darker skin -- with a darker limbal ring and a black pupil, at the
    front (+z) of each eyeball), teeth (off-white, per-person shade), gums/tongue and mouth socket (mucosa: the
    same density model with much more haemoglobin and less melanin; the mouth socket blends from the lip colour
    at the lip line to a darker red inside), eye sockets (darker mucosa), eyelashes (dark hair colour), the other
    eye overlays of ICT (lacrimal fluid, eye blend, eye occlusion: between skin and mucosa; they are meant to be
    transparent, so renderers should leave them out -- region "full" does).
  The head and neck are skin (SCALP_HAIR = "none"; "shadow" darkens the scalp of half of the people like short
  hair, but this breaks the mean - 3 sd bound of the first component, see below).

Why these choices: a linear model can only be kept inside [0, 1] at mean +- 3 sd if the sample distribution is
close to linear and bell-shaped in every channel. Reflectance is a convex function of melanin, most strongly in
blue; a bell on luminance leaves blue right-skewed and mean - 3 sd of the first component below zero. Putting the
bell on (G + B) / 2, keeping the melanin absorption ratios moderate (1 : 1.2 : 1.4) and bounding the distribution
at +- 3 sd keeps the first components inside [0, 1] -- at the price of a thin tail of very dark skin (see the
build report: face-skin lightness and ITA classes).

The PCA (`build_reflectance_model`) is weighted by vertex area (the surface L2 metric), so the densely meshed
eyeballs and teeth count by their area, not their vertex count.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from scipy.special import expit

from ..atomic import save_npz
from ..paths import resolve

# ---------------------------------------------------------------------------------------------------------------
# Constants of the skin generator (linear RGB).
# ---------------------------------------------------------------------------------------------------------------
SIGMA_MELANIN = np.array([1.0, 1.2, 1.4]) * 0.8        # optical density per unit melanin: blue most
SIGMA_HAEMOGLOBIN = np.array([0.06, 0.60, 0.33])        # per unit haemoglobin: green most, blue some, red little
SIGMA_CAROTENE = np.array([0.0, 0.06, 0.40])            # per unit carotene/bilirubin: blue (yellowness)
BASE_DENSITY = np.array([0.10, 0.30, 0.62])             # the other absorbers of dermis and epidermis
SURFACE_REFLECTANCE = np.array([0.040, 0.033, 0.031])  # surface / upper-epidermis scattering, nearly flat
MELANIN_RANGE = (0.12, 5.0)                             # lightest .. darkest skin
NOMINAL_HAEMOGLOBIN = 0.6
NOMINAL_CAROTENE = 0.5
N_NOISE_ANCHORS = 40
NOISE_RADIUS_CM = 3.5
NOISE_MELANIN = 0.10      # relative melanin variation of the noise field (x noise_scale)
NOISE_HAEMOGLOBIN = 0.10  # absolute haemoglobin variation of the noise field (x noise_scale)

LUMINANCE = np.array([0.2126, 0.7152, 0.0722])          # Rec. 709 / sRGB luminance weights (linear RGB)
LIGHTNESS_WEIGHTS = np.array([0.0, 0.5, 0.5])           # the channel mix whose distribution is bell-shaped

# ICT-FaceKit: the eyelashes are the last vertices of the `eye_misc` part (upstream README vertex table:
# lacrimal fluid [24591, 24999), eye blend [24999, 25047), eye occlusion [25047, 25351), eyelashes [25351, 26719)).
ICT_EYELASHES_START = 25351

# Eye colours (linear RGB iris albedo) and hair colours (black .. blond), see `_person_parameters`.
IRIS_COLOURS = {
    "dark brown": (0.040, 0.022, 0.016),
    "brown": (0.095, 0.050, 0.026),
    "hazel": (0.150, 0.105, 0.045),
    "green": (0.100, 0.140, 0.075),
    "blue": (0.115, 0.180, 0.260),
    "grey": (0.180, 0.200, 0.215),
}
HAIR_COLOURS = np.array([  # along hair lightness 0 .. 1
    (0.018, 0.016, 0.015),   # black
    (0.045, 0.030, 0.020),   # dark brown
    (0.110, 0.070, 0.040),   # brown
    (0.220, 0.150, 0.080),   # light brown
    (0.420, 0.320, 0.180),   # blond
])
RED_HAIR = np.array([0.28, 0.09, 0.035])
SCLERA = np.array([0.70, 0.64, 0.60])
PUPIL = np.array([0.012, 0.012, 0.012])
TEETH = np.array([0.66, 0.60, 0.48])
HAIR_DENSITY = (0.2, 0.55)
SCALP_HAIR = "none"       # "none" (bald: skin) or "shadow" (short hair darkening the scalp of half the people)
IRIS_ANGLE_DEG = 24.0     # angular radius of the iris seen from the eyeball centre (eyeball radius ~1.5 cm)
PUPIL_ANGLE_DEG = 8.0


def _skin_reflectance(c_mel, c_hb, c_car):
    """Broadcasting arrays of concentrations -> reflectance (..., 3) by the optical-density model."""
    c_mel, c_hb, c_car = (np.asarray(c, dtype=np.float32)[..., None] for c in (c_mel, c_hb, c_car))
    density = (BASE_DENSITY.astype(np.float32) + c_mel * SIGMA_MELANIN.astype(np.float32)
               + c_hb * SIGMA_HAEMOGLOBIN.astype(np.float32) + c_car * SIGMA_CAROTENE.astype(np.float32))
    floor = SURFACE_REFLECTANCE.astype(np.float32)
    return floor + (1.0 - floor) * np.exp(-density)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Linear RGB (..., 3) -> relative luminance Y (...)."""
    return np.asarray(rgb) @ LUMINANCE.astype(np.asarray(rgb).dtype)


def lightness(y: np.ndarray) -> np.ndarray:
    """Relative luminance Y in [0, 1] -> CIE L* in [0, 100]."""
    y = np.asarray(y, dtype=np.float64)
    f = np.where(y > (6 / 29) ** 3, np.cbrt(y), y / (3 * (6 / 29) ** 2) + 4 / 29)
    return 116 * f - 16


_RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
# Individual typology angle classes (Chardon et al. 1991; Del Bino et al. 2006): lower bound in degrees.
ITA_CLASSES = (("very light", 55.0), ("light", 41.0), ("intermediate", 28.0), ("tan", 10.0), ("brown", -30.0),
               ("dark", -np.inf))


def linear_rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """Linear sRGB (..., 3) -> CIE L*a*b* (D65) (..., 3)."""
    xyz = np.asarray(rgb, dtype=np.float64) @ _RGB_TO_XYZ.T / _WHITE_D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ita_degrees(rgb: np.ndarray) -> np.ndarray:
    """Individual typology angle arctan((L* - 50) / b*) in degrees of linear sRGB colours (..., 3)."""
    lab = linear_rgb_to_lab(rgb)
    return np.degrees(np.arctan2(lab[..., 0] - 50, lab[..., 2]))


def ita_class(ita: np.ndarray) -> np.ndarray:
    """ITA degrees -> class names (very light, light, intermediate, tan, brown, dark)."""
    ita = np.asarray(ita)
    out = np.full(ita.shape, "dark", dtype=object)
    for name, lo in reversed(ITA_CLASSES):
        out[ita > lo] = name
    return out


# ---------------------------------------------------------------------------------------------------------------
# Region weights on the mean mesh.
# ---------------------------------------------------------------------------------------------------------------
def _segments_distance(points: np.ndarray, polyline: np.ndarray, closed: bool = False) -> np.ndarray:
    """(V, D) points, (M, D) polyline -> (V,) distance to the nearest segment."""
    a = polyline if closed else polyline[:-1]
    b = np.roll(polyline, -1, axis=0) if closed else polyline[1:]
    best = np.full(points.shape[0], np.inf)
    for p, q in zip(a, b):
        d = q - p
        t = np.clip((points - p) @ d / max(float(d @ d), 1e-12), 0.0, 1.0)
        best = np.minimum(best, np.linalg.norm(points - (p + t[:, None] * d), axis=1))
    return best


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: (V, 2) points inside the closed (M, 2) polygon."""
    x, y = points[:, 0], points[:, 1]
    inside = np.zeros(points.shape[0], dtype=bool)
    for p, q in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (p[1] > y) != (q[1] > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = p[0] + (y - p[1]) * (q[0] - p[0]) / (q[1] - p[1])
        inside ^= crosses & (x < xc)
    return inside


def _gauss(d: np.ndarray, radius: float) -> np.ndarray:
    return np.exp(-0.5 * (d / radius) ** 2)


def _farthest_points(points: np.ndarray, k: int, start: int) -> np.ndarray:
    chosen = [start]
    dist = np.linalg.norm(points - points[start], axis=1)
    for _ in range(k - 1):
        chosen.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.array(chosen)


def _fit_sphere(x: np.ndarray) -> tuple[np.ndarray, float]:
    a = np.c_[2 * x, np.ones(len(x))]
    s = np.linalg.lstsq(a, (x ** 2).sum(1), rcond=None)[0]
    c = s[:3]
    return c, float(np.sqrt(s[3] + c @ c))


def _snap_front(v: np.ndarray, candidates: np.ndarray, xy: np.ndarray, tol: float = 0.5) -> np.ndarray:
    """The frontmost (largest z) candidate vertex within `tol` cm of `xy` in the x-y plane."""
    near = candidates[np.linalg.norm(v[candidates, :2] - xy, axis=1) < tol]
    if near.size == 0:
        near = candidates[[np.argmin(np.linalg.norm(v[candidates, :2] - xy, axis=1))]]
    return v[near[np.argmax(v[near, 2])]]


def albedo_regions(face_model) -> dict[str, np.ndarray]:
    """Soft per-vertex weights in [0, 1] (V,) of the regions the generator varies, from the mean mesh.

    Keys: lips, cheeks, nose, nose_tip, brows, eye_surround, forehead, beard, scalp, ears, mucosa, interior_dark,
    skin (face/head/neck skin), face_skin (plain face skin: for lightness statistics), eyeball_iris,
    eyeball_pupil, eyeball_limbus, plus boolean masks teeth, eyeballs, eyelashes.
    """
    v = face_model.mean.detach().cpu().numpy().astype(np.float64)
    nv = v.shape[0]
    names = face_model.part_names
    parts = face_model.parts.cpu().numpy()

    def part(name):
        return parts == names.index(name) if name in names else np.zeros(nv, dtype=bool)

    lm_ids = face_model.landmarks.cpu().numpy()
    if (lm_ids < 0).any():
        raise ValueError("the albedo generator needs all 68 landmarks in the region (use region 'all' or 'full')")
    lm = v[lm_ids]
    face, head = part("face"), part("head_neck")
    skin = face | head
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    src = face_model.source_index.cpu().numpy()

    # Lips: inside the outer lip contour (x-y) near the lips, soft edge ~1 mm.
    outer = lm[48:60]
    near_lips = _segments_distance(v, outer, closed=True) < 1.2
    d2 = _segments_distance(v[:, :2], outer[:, :2], closed=True)
    sd = np.where(_inside_polygon(v[:, :2], outer[:, :2]), d2, -d2)
    lips = expit(sd / 0.08) * (face & near_lips)

    # Cheeks: Gaussian blobs (3D) around a point below the outer eye, towards the jaw.
    front_face = np.flatnonzero(face & (z > 3))
    cheeks = np.zeros(nv)
    for eye_low, jaw, mouth in ((41, 2, 48), (46, 14, 54)):
        target = 0.45 * lm[eye_low] + 0.35 * lm[jaw] + 0.20 * lm[mouth]
        c = _snap_front(v, front_face, target[:2])
        cheeks = np.maximum(cheeks, _gauss(np.linalg.norm(v - c, axis=1), 1.8))
    cheeks *= skin

    # Nose: the bridge (27-30) and the nostrils (31-35 through the tip).
    nose_line = _segments_distance(v, lm[27:31])
    nostrils = _segments_distance(v, lm[[31, 32, 33, 34, 35]])
    nose = np.maximum(_gauss(nose_line, 0.7), _gauss(nostrils, 0.5)) * face
    nose_tip = _gauss(np.linalg.norm(v - lm[30], axis=1), 0.9) * face

    # Brows: a band below the brow landmarks (they follow the upper edge), thinning laterally.
    brows = np.zeros(nv)
    for lo, hi, medial, lateral in ((17, 22, 21, 17), (22, 27, 22, 26)):
        line = lm[lo:hi].copy()
        line[:, 1] -= 0.35
        d = _segments_distance(v, line)
        # the medial end is thicker than the lateral tail
        span = max(abs(lm[lateral, 0] - lm[medial, 0]), 1e-6)
        t = np.clip(np.abs(x - lm[medial, 0]) / span, 0, 1)
        half = 0.5 - 0.22 * t
        brows = np.maximum(brows, expit((half - d) / 0.1))
    brows *= face & (z > 5)

    # Eye surround: distance to each closed eye contour.
    eye_d = np.minimum(_segments_distance(v, lm[36:42], closed=True),
                       _segments_distance(v, lm[42:48], closed=True))
    eye_surround = _gauss(eye_d, 1.0) * face

    # Forehead: above the brows.
    brow_top = lm[17:27, 1].max()
    forehead = expit((y - (brow_top + 1.0)) / 0.6) * expit((z - 3.0) / 1.5) * skin

    # Ears: lateral, behind the cheek.
    ears = expit((np.abs(x) - 7.1) / 0.25) * expit((2.8 - z) / 0.4) * expit((y + 2.5) / 0.4) \
        * expit((7.5 - y) / 0.4) * skin

    # Beard / stubble: below a parabola from under the nose up to the sideburns, above the upper neck; not lips.
    y_top = lm[33, 1] - 0.25 + 0.11 * x ** 2
    beard = (expit((y_top - y) / 0.35) * expit((y - (lm[8, 1] - 2.2)) / 0.5)
             * (1 - expit((sd + 0.1) / 0.06) * near_lips) * (1 - ears) * face * (z > 1.0))
    beard *= expit((z - 1.5) / 0.5)  # fades out behind the jaw line / in front of the ear

    # Scalp hair: above a hairline that descends from the forehead over the temples to the nape.
    y_hair = np.interp(z, [-10, -5, -1, 2, 5, 8, 14], [-5.5, -4.5, 3.0, 6.5, 8.5, 10.3, 10.3])
    scalp = expit((y - y_hair) / 0.4) * (1 - ears) * skin

    # Interior parts.
    mouth_socket, gums = part("mouth_socket"), part("gums_tongue")
    eye_sockets, eye_misc = part("eye_sockets"), part("eye_misc")
    eyelashes = eye_misc & (src >= ICT_EYELASHES_START)
    inner_d = _segments_distance(v, lm[60:68], closed=True)
    socket_lip = np.exp(-inner_d / 0.35) * mouth_socket       # inner lip surface continues the lips
    lips = np.maximum(lips, socket_lip)
    mucosa = (gums * 1.0 + mouth_socket * (1 - socket_lip) + eye_sockets * 0.8
              + (eye_misc & ~eyelashes) * 0.5)
    interior_dark = mouth_socket * (1 - socket_lip) * 0.5 + eye_sockets * 0.35 + gums * 0.1

    # Eyeballs: angle from +z around each eyeball's centre (fitted sphere), split by the sign of x.
    eyeballs = part("eyeballs")
    iris = np.zeros(nv)
    pupil = np.zeros(nv)
    limbus = np.zeros(nv)
    for side in (x > 0, x <= 0):
        ids = np.flatnonzero(eyeballs & side)
        if ids.size < 10:
            continue
        c, _ = _fit_sphere(v[ids])
        d = v[ids] - c
        ang = np.degrees(np.arccos(np.clip(d[:, 2] / np.linalg.norm(d, axis=1), -1, 1)))
        iris[ids] = expit((IRIS_ANGLE_DEG - ang) / 0.6)
        pupil[ids] = expit((PUPIL_ANGLE_DEG - ang) / 0.5)
        limbus[ids] = _gauss(ang - IRIS_ANGLE_DEG, 2.0)

    face_skin = (face & (z > 4) & (lips < 0.05) & (brows < 0.05) & (beard < 0.05) & (eye_surround < 0.3)
                 & (nose < 0.3) & (forehead < 0.5) & (scalp < 0.05) & (ears < 0.05))
    f = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return {
        "lips": f(lips), "cheeks": f(cheeks), "nose": f(nose), "nose_tip": f(nose_tip), "brows": f(brows),
        "eye_surround": f(eye_surround), "forehead": f(forehead), "beard": f(beard), "scalp": f(scalp),
        "ears": f(ears), "mucosa": f(np.clip(mucosa, 0, 1)), "interior_dark": f(interior_dark),
        "skin": f(skin | eye_misc & ~eyelashes), "face_skin": face_skin,
        "eyeball_iris": f(iris), "eyeball_pupil": f(pupil), "eyeball_limbus": f(limbus),
        "teeth": part("teeth"), "eyeballs": eyeballs, "eyelashes": eyelashes,
    }


def _noise_basis(face_model, regions) -> np.ndarray:
    """(N_NOISE_ANCHORS, V) fixed smooth bumps on the skin; a N(0, I) combination has unit variance per vertex."""
    v = face_model.mean.detach().cpu().numpy().astype(np.float64)
    skin = np.flatnonzero(regions["skin"] > 0)
    start = skin[np.argmax(v[skin, 2])]                           # the nose tip: deterministic
    anchors = v[skin[_farthest_points(v[skin], N_NOISE_ANCHORS, int(np.flatnonzero(skin == start)[0]))]]
    d2 = ((v[None, :, :] - anchors[:, None, :]) ** 2).sum(-1)
    phi = np.exp(-0.5 * d2 / NOISE_RADIUS_CM ** 2)
    phi /= np.sqrt((phi ** 2).sum(0, keepdims=True)) + 1e-12
    return (phi * regions["skin"]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Per-person parameters.
# ---------------------------------------------------------------------------------------------------------------
def _irwin_hall3(rng: np.random.Generator, n: int) -> np.ndarray:
    """Bell-shaped on [0, 1]: mean of three uniforms (its ends are exactly mean +- 3 sd)."""
    return rng.random((n, 3)).mean(1)


def _melanin_from_lightness(t: np.ndarray) -> np.ndarray:
    """t in [0, 1] (0 darkest, 1 lightest) -> melanin; t is linear in the LIGHTNESS_WEIGHTS mix of the channels
    of the nominal skin (haemoglobin, carotene at their nominal values) between MELANIN_RANGE's two ends."""
    grid = np.linspace(MELANIN_RANGE[0], MELANIN_RANGE[1], 4001)
    lum = _skin_reflectance(grid, NOMINAL_HAEMOGLOBIN, NOMINAL_CAROTENE).astype(np.float64) @ LIGHTNESS_WEIGHTS
    target = lum[-1] + t * (lum[0] - lum[-1])
    return np.interp(target, lum[::-1], grid[::-1])


def _hair_colour(lightness_: np.ndarray, redness: np.ndarray) -> np.ndarray:
    """(n,) hair lightness in [0, 1], redness in [0, 1] -> (n, 3) linear RGB."""
    pos = np.linspace(0, 1, len(HAIR_COLOURS))
    base = np.stack([np.interp(lightness_, pos, HAIR_COLOURS[:, c]) for c in range(3)], axis=1)
    return base * (1 - redness[:, None]) + RED_HAIR * redness[:, None]


def _person_parameters(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw every per-person random quantity up front (so chunked evaluation cannot change the result)."""
    t = _irwin_hall3(rng, n)
    darkness = 1.0 - t
    p = {
        "lightness": t,
        "melanin": _melanin_from_lightness(t),
        "haemoglobin": np.clip(rng.normal(NOMINAL_HAEMOGLOBIN, 0.12, n), 0.25, 1.0),
        "carotene": np.clip(rng.normal(NOMINAL_CAROTENE, 0.15, n), 0.1, 0.9),
        # regional offsets
        "lip_hb": rng.uniform(0.5, 1.1, n),
        "lip_mel": rng.uniform(-0.4, 0.05, n),        # relative melanin change on the lips
        "blush": np.abs(rng.normal(0, 0.25, n)),
        "nose_hb": np.abs(rng.normal(0, 0.12, n)),
        "nose_tip_hb": np.abs(rng.normal(0, 0.18, n)),
        "ear_hb": rng.uniform(0.1, 0.35, n),
        "eye_mel": rng.uniform(0.0, 0.3, n),
        "eye_hb": rng.uniform(0.0, 0.25, n),
        "forehead_mel": rng.normal(0.0, 0.08, n),
        "mucosa_hb": rng.uniform(0.9, 1.5, n),
        "mucosa_mel": rng.uniform(-0.85, -0.6, n),
        # hair: darker skin -> darker hair
        "hair_lightness": np.clip(rng.beta(0.9, 2.2, n) * (1 - darkness) ** 1.5, 0, 1),
        "hair_redness": np.where(rng.random(n) < 0.06 * (1 - darkness), rng.uniform(0.4, 0.9, n), 0.0),
        "brow_density": rng.uniform(0.35, 0.85, n),
        "has_beard": rng.random(n) < 0.4,
        "beard_strength": rng.uniform(0.1, 0.45, n),
        "has_hair": rng.random(n) < 0.5,
        "hair_density": rng.uniform(HAIR_DENSITY[0], HAIR_DENSITY[1], n),
        # noise field coefficients
        "noise_mel": rng.standard_normal((n, N_NOISE_ANCHORS)),
        "noise_hb": rng.standard_normal((n, N_NOISE_ANCHORS)),
        # eyes, teeth
        "sclera_brightness": rng.uniform(0.88, 1.04, n),
        "sclera_redness": rng.uniform(0.0, 0.12, n),
        "iris_jitter": np.exp(rng.normal(0, 0.12, (n, 3))),
        "teeth_brightness": rng.uniform(0.85, 1.03, n),
        "teeth_yellowness": rng.uniform(0.0, 0.25, n),
    }
    names = list(IRIS_COLOURS)
    # eye colour probabilities: (almost) linear in the skin lightness t, so that the mean iris colour is a linear
    # function of it (a steeper dependence bends the iris below zero at mean - 3 sd of the first component)
    weights = np.stack([0.3 + 0.5 * darkness, np.full(n, 0.25), 0.1 * t, 0.07 * t, 0.2 * t, 0.04 * t], axis=1)
    weights /= weights.sum(1, keepdims=True)
    choice = (rng.random(n)[:, None] > np.cumsum(weights, axis=1)).sum(1).clip(0, len(names) - 1)
    p["iris_colour"] = np.array([IRIS_COLOURS[names[i]] for i in choice]) * p["iris_jitter"]
    p["iris_name"] = np.array(names)[choice]
    brow_hair = _hair_colour(p["hair_lightness"] * 0.8, p["hair_redness"])
    p["brow_colour"] = brow_hair
    p["hair_colour"] = _hair_colour(p["hair_lightness"], p["hair_redness"])
    p["lash_colour"] = 0.4 * brow_hair + 0.6 * HAIR_COLOURS[0]
    return p


# ---------------------------------------------------------------------------------------------------------------
# The generator.
# ---------------------------------------------------------------------------------------------------------------
def generate_albedo(face_model, n: int, rng: np.random.Generator, noise_scale: float = 1.0,
                    chunk: int = 128, return_parameters: bool = False):
    """`n` random per-vertex albedos (n, V, 3) float32 in [0, 1], linear RGB, over the vertices of `face_model`.

    `face_model` is an ifn FaceModel with all 68 landmarks (ICT region "all" -- what the reflectance model is
    built on -- or "full"). Every random number is drawn from `rng` before evaluation, so the result depends
    only on the generator state, not on `chunk` (samples evaluated at a time, bounds the memory) -- up to float32
    rounding (~1e-7) of the matrix products, which BLAS blocks differently for different batch sizes.
    With `return_parameters`, also returns the dict of per-person parameters (e.g. "lightness", "iris_name").
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    regions = albedo_regions(face_model)
    noise = _noise_basis(face_model, regions)
    p = _person_parameters(n, rng)
    nv = face_model.n_vertices

    # Melanin (relative to the person's level) and haemoglobin (absolute) as linear combinations of spatial maps.
    r = regions
    ones = np.ones(nv, dtype=np.float32)
    mel_maps = np.vstack([ones, r["lips"], r["eye_surround"], r["forehead"], r["mucosa"], noise])
    hb_maps = np.vstack([ones, r["lips"], r["cheeks"], r["nose"], r["nose_tip"], r["ears"], r["eye_surround"],
                         r["mucosa"], noise])
    ns = float(noise_scale)
    mel_coef = np.hstack([np.ones((n, 1)), p["lip_mel"][:, None], p["eye_mel"][:, None],
                          p["forehead_mel"][:, None], p["mucosa_mel"][:, None],
                          NOISE_MELANIN * ns * p["noise_mel"]]).astype(np.float32)
    hb_coef = np.hstack([p["haemoglobin"][:, None], p["lip_hb"][:, None], p["blush"][:, None],
                         p["nose_hb"][:, None], p["nose_tip_hb"][:, None], p["ear_hb"][:, None],
                         p["eye_hb"][:, None], p["mucosa_hb"][:, None],
                         NOISE_HAEMOGLOBIN * ns * p["noise_hb"]]).astype(np.float32)

    out = np.empty((n, nv, 3), dtype=np.float32)
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    teeth, eyeballs, lashes = r["teeth"], r["eyeballs"], r["eyelashes"]
    iris, pupil, limbus = (r[k][eyeballs][None, :, None] for k in ("eyeball_iris", "eyeball_pupil",
                                                                   "eyeball_limbus"))
    for lo in range(0, n, chunk):
        s = slice(lo, min(lo + chunk, n))
        c_mel = np.clip(f32(p["melanin"][s])[:, None] * (mel_coef[s] @ mel_maps), 0, None)
        c_hb = np.clip(hb_coef[s] @ hb_maps, 0, None)
        a = _skin_reflectance(c_mel, c_hb, f32(p["carotene"][s])[:, None])
        a *= (1 - r["interior_dark"])[None, :, None]
        # brows: blend towards the hair colour
        alpha = f32(p["brow_density"][s])[:, None, None] * r["brows"][None, :, None]
        a += alpha * (f32(p["brow_colour"][s])[:, None, :] - a)
        # optional scalp hair (short / cropped): darkens the scalp of half of the people
        if SCALP_HAIR == "shadow":
            strength = p["has_hair"][s] * p["hair_density"][s]
            a *= 1 - f32(strength)[:, None, None] * r["scalp"][None, :, None] * f32([1.0, 0.97, 0.92])
        # beard / stubble shadow: darker, slightly blue-grey; weaker for light hair
        strength = p["has_beard"][s] * p["beard_strength"][s] * (1 - 0.7 * p["hair_lightness"][s])
        tint = f32([1.0, 0.97, 0.8])
        a *= 1 - f32(strength)[:, None, None] * r["beard"][None, :, None] * tint
        # teeth
        yellowing = 1 - np.outer(p["teeth_yellowness"][s], [0, 0.08, 0.3])
        shade = p["teeth_brightness"][s][:, None] * TEETH * yellowing
        a[:, teeth] = f32(shade)[:, None, :]
        # eyeballs: sclera, iris (darker limbal ring), pupil
        sclera = (p["sclera_brightness"][s][:, None] * SCLERA
                  * (1 - np.outer(p["sclera_redness"][s], [0.0, 0.5, 0.6])))
        iris_rgb = f32(p["iris_colour"][s])[:, None, :] * (1 - 0.5 * limbus)
        eye = f32(sclera)[:, None, :] * (1 - iris) + iris_rgb * iris
        eye += pupil * (f32(PUPIL) - eye)
        a[:, eyeballs] = eye
        a[:, lashes] = f32(p["lash_colour"][s])[:, None, :]
        out[s] = np.clip(a, 0.0, 1.0)
    if return_parameters:
        return out, p
    return out


# ---------------------------------------------------------------------------------------------------------------
# The linear model.
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class ReflectanceModel:
    """Linear per-vertex albedo model.

    mean                (V, 3) float32, linear RGB albedo in [0, 1]
    basis               (K, V, 3) float32, scaled by the component's standard deviation (weights ~ N(0, 1))
    explained_variance  (K,) float32, fraction of the sample variance each component explains (for models built by
                        `build_reflectance_model`: variance in the vertex-area weighted metric)
    meta                provenance (seed, sample counts, ...); saved as JSON
    """

    mean: torch.Tensor
    basis: torch.Tensor
    explained_variance: torch.Tensor
    meta: dict = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return self.basis.shape[0]

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    def albedo(self, beta: torch.Tensor) -> torch.Tensor:
        """(B, K') weights, K' <= K -> (B, V, 3) albedo (not clamped)."""
        k = beta.shape[-1]
        if k > self.n_components:
            raise ValueError(f"{k} reflectance weights given, the model has {self.n_components} components")
        dtype = beta.dtype
        return self.mean.to(dtype) + torch.einsum("bk,kvc->bvc", beta, self.basis[:k].to(dtype))

    def subset(self, vertex_index: torch.Tensor) -> "ReflectanceModel":
        """Keep the vertices `vertex_index` (V',) (e.g. FaceModel.source_index)."""
        return ReflectanceModel(self.mean[vertex_index], self.basis[:, vertex_index],
                                self.explained_variance, dict(self.meta))

    def truncate(self, n_components: int) -> "ReflectanceModel":
        if n_components > self.n_components:
            raise ValueError(f"asked for {n_components} components, the model has {self.n_components}")
        return ReflectanceModel(self.mean, self.basis[:n_components],
                                self.explained_variance[:n_components], dict(self.meta))

    def to(self, device=None, dtype=None) -> "ReflectanceModel":
        return ReflectanceModel(self.mean.to(device, dtype), self.basis.to(device, dtype),
                                self.explained_variance, dict(self.meta))

    def save(self, path: str | Path) -> Path:
        """Write an npz (mean, basis, explained_variance as float32; meta as a JSON string), atomically."""
        return save_npz(path, mean=self.mean.detach().cpu().numpy().astype(np.float32),
                        basis=self.basis.detach().cpu().numpy().astype(np.float32),
                        explained_variance=self.explained_variance.detach().cpu().numpy().astype(np.float32),
                        meta=np.array(json.dumps(self.meta, sort_keys=True, default=str)))

    @classmethod
    def load(cls, path: str | Path) -> "ReflectanceModel":
        path = resolve(path)
        if not path.exists():
            raise FileNotFoundError(
                f"reflectance model not found: {path}\nIt is built by the first pipeline stage: "
                f"run `dvc pull` (inputs) and then `dvc repro face_model`.")
        with np.load(path) as z:
            meta = {}
            if "meta" in z.files:
                try:
                    meta = json.loads(str(z["meta"]))
                except json.JSONDecodeError:
                    meta = {}
            return cls(torch.from_numpy(z["mean"]), torch.from_numpy(z["basis"]),
                       torch.from_numpy(z["explained_variance"]), meta)


def vertex_areas(face_model) -> np.ndarray:
    """(V,) float64: a third of the area (cm^2) of every triangle touching each vertex, on the mean mesh."""
    v = face_model.mean.detach().cpu().numpy().astype(np.float64)
    t = face_model.triangles.cpu().numpy()
    area = 0.5 * np.linalg.norm(np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]]), axis=1)
    out = np.zeros(v.shape[0])
    np.add.at(out, t.ravel(), np.repeat(area / 3, 3))
    return out


def _pca(x: torch.Tensor, k: int, weight: torch.Tensor | None = None):
    """(n, D) samples -> mean (D,), directions (k, D), variances (k,), total variance; via the n x n Gram matrix.

    `weight` (D,) > 0 defines the metric <a, b> = sum_d weight_d a_d b_d (e.g. vertex areas): the directions are
    orthonormal in it and maximise the weighted variance. Signs are fixed so that each direction sums to a
    positive value (for the first component: + = lighter).
    """
    mean = x.mean(0)
    xc = x - mean
    sw = weight.sqrt().to(x.dtype) if weight is not None else torch.ones_like(mean)
    xw = xc * sw
    del xc
    gram = (xw @ xw.T).double().numpy()
    n = x.shape[0]
    # only the k largest eigenpairs (LAPACK ?syevx): much faster than a full eigendecomposition
    evals, evecs = scipy.linalg.eigh(gram, subset_by_index=[n - k, n - 1], driver="evx")
    evals = torch.from_numpy(evals[::-1].copy()).clamp_min(0)
    evecs = torch.from_numpy(evecs[:, ::-1].copy())
    dirs_w = (evecs.T.to(x.dtype) @ xw) / evals.sqrt().clamp_min(1e-12).to(x.dtype)[:, None]
    dirs_w = dirs_w / dirs_w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    dirs = dirs_w / sw
    sign = torch.where(dirs.sum(1) < 0, -1.0, 1.0).to(x.dtype)
    dirs = dirs * sign[:, None]
    total = float(np.trace(gram)) / (n - 1)
    return mean, dirs, (evals / (n - 1)).to(x.dtype), total


def _summary(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, [0, 1, 5, 25, 50, 75, 95, 99, 100])
    keys = ("min", "p1", "p5", "p25", "p50", "p75", "p95", "p99", "max")
    return {k: round(float(x), 5) for k, x in zip(keys, q)} | {"mean": round(float(np.mean(values)), 5)}


def build_reflectance_model(face_model, config, seed: int) -> tuple[ReflectanceModel, dict]:
    """Generate `config.n_samples` albedos, hold out `config.heldout_fraction`, PCA on the rest.

    Returns the model (over the vertices of `face_model`; components scaled by their standard deviation) and a
    JSON-serialisable report: explained variance, held-out reconstruction error, sample lightness range, the range
    of mean +- 3 sd along the first components, timings. Deterministic for a given seed.
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    samples, people = generate_albedo(face_model, config.n_samples, rng, noise_scale=config.noise_scale,
                                      return_parameters=True)
    t_gen = time.perf_counter() - t0
    n, nv, _ = samples.shape
    n_held = max(1, int(round(n * config.heldout_fraction)))
    order = rng.permutation(n)
    held_idx, train_idx = np.sort(order[:n_held]), np.sort(order[n_held:])
    k = int(config.n_components)
    if k >= train_idx.size:
        raise ValueError(f"n_components = {k} must be below the number of training samples ({train_idx.size})")

    x = torch.from_numpy(samples.reshape(n, -1))
    # PCA in the surface L2 metric: every value weighted by its vertex's area (normalised to mean 1), so that
    # densely meshed small parts (eyeballs, teeth) count by their area, not by their vertex count.
    area = vertex_areas(face_model)
    weight = torch.from_numpy(np.repeat(area / area.mean(), 3).astype(np.float32))
    t1 = time.perf_counter()
    mean, dirs, var, total_var = _pca(x[train_idx], k, weight)
    t_pca = time.perf_counter() - t1
    std = var.sqrt()
    basis = (dirs * std[:, None]).reshape(k, nv, 3).contiguous()
    ratio = (var / total_var).float()
    model = ReflectanceModel(
        mean=mean.reshape(nv, 3).contiguous(), basis=basis, explained_variance=ratio,
        meta={"seed": int(seed), "n_samples": int(n), "n_train": int(train_idx.size), "n_heldout": int(n_held),
              "n_components": k, "noise_scale": float(config.noise_scale), "source": "ifn.model.reflectance",
              "pca_metric": "vertex area", "n_vertices": int(nv)})

    # Held-out reconstruction: orthogonal projection (in the area metric) on the first kk components.
    held = x[held_idx]
    dev = held - mean
    proj = (dev * weight) @ dirs.T
    cum = ratio.double().cumsum(0).numpy()
    recon_err = {}

    def wnorm(a):
        return (a.pow(2) * weight).sum(-1).sqrt()

    for kk in sorted({1, 10, 20, 40, 80, k} & set(range(1, k + 1))):
        resid = dev - proj[:, :kk] @ dirs[:kk]
        rel = (wnorm(resid) / wnorm(dev).clamp_min(1e-12)).numpy()
        rel_plain = (resid.norm(dim=1) / dev.norm(dim=1).clamp_min(1e-12)).numpy()
        recon_err[str(kk)] = {
            "rmse": round(float(resid.pow(2).mean().sqrt()), 6),
            "rmse_area_weighted": round(float((resid.pow(2) * weight).mean().sqrt()), 6),
            "relative_to_deviation_mean": round(float(rel.mean()), 5),
            "relative_to_deviation_max": round(float(rel.max()), 5),
            "relative_to_deviation_unweighted_mean": round(float(rel_plain.mean()), 5),
            "relative_to_signal": round(float(wnorm(resid).norm() / wnorm(held).norm()), 6)}
    held_beta = (proj / std).numpy()

    # Lightness of the samples over plain face skin.
    regions = albedo_regions(face_model)
    face_skin = regions["face_skin"]
    skin_rgb = samples[:, face_skin].mean(1)
    y = luminance(skin_rgb)
    ita = ita_degrees(skin_rgb)
    classes = ita_class(ita)
    # Random model albedos: beta ~ N(0, I) clipped to [-3, 3].
    beta = torch.from_numpy(np.clip(rng.standard_normal((200, k)), -3, 3).astype(np.float32))
    random_albedo = model.albedo(beta)
    random_inside = float(((random_albedo >= 0) & (random_albedo <= 1)).float().mean())
    del random_albedo
    # Mean +- 3 sd along each of the first components.
    m = model.mean.numpy()
    ranges = []
    for i in range(min(10, k)):
        b = model.basis[i].numpy()
        lo, hi = np.minimum(m - 3 * b, m + 3 * b), np.maximum(m - 3 * b, m + 3 * b)
        ranges.append({"component": i, "min": round(float(lo.min()), 5), "max": round(float(hi.max()), 5),
                       "face_skin_min": round(float(lo[face_skin].min()), 5),
                       "face_skin_max": round(float(hi[face_skin].max()), 5)})
    iris_names, iris_counts = np.unique(people["iris_name"], return_counts=True)
    report = {
        "seed": int(seed),
        "n_samples": int(n), "n_train": int(train_idx.size), "n_heldout": int(n_held),
        "n_vertices": int(nv), "n_components": k, "noise_scale": float(config.noise_scale),
        "explained_variance_cumulative": {str(c): round(float(cum[c - 1]), 6)
                                          for c in (1, 2, 3, 5, 10, 20, 40, 80) if c <= k},
        "explained_variance_first10": [round(float(r), 6) for r in ratio[:10]],
        "heldout_reconstruction": recon_err,
        "heldout_beta_std": round(float(held_beta.std()), 4),
        "sample_albedo_range": [round(float(samples.min()), 5), round(float(samples.max()), 5)],
        "face_skin_luminance": _summary(y),
        "face_skin_lightness_Lstar": _summary(lightness(y)),
        "face_skin_ita_degrees": _summary(ita),
        "face_skin_ita_classes": {name: int((classes == name).sum()) for name, _ in ITA_CLASSES},
        "face_skin_vertices": int(face_skin.sum()),
        "random_beta_fraction_inside_01": round(random_inside, 6),
        "mean_pm_3sd": ranges,
        "mean_pm_3sd_first10_range": [min(r["min"] for r in ranges), max(r["max"] for r in ranges)],
        "people": {"beard_fraction": round(float(people["has_beard"].mean()), 4),
                   "scalp_hair": SCALP_HAIR,
                   "scalp_hair_fraction": (round(float(people["has_hair"].mean()), 4)
                                           if SCALP_HAIR != "none" else 0.0),
                   "iris_colours": {str(a): int(b) for a, b in zip(iris_names, iris_counts)}},
        "seconds": {"generate": round(t_gen, 2), "pca": round(t_pca, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }
    return model, report
