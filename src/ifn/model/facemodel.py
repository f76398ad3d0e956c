"""FaceModel: a linear geometry model (mean + identity basis + expression basis) and its loaders.

geometry(shape, expression) = mean + sum_i shape_i * shape_basis_i + sum_j expression_j * expression_basis_j,
all in centimetres, +y up, +z towards the viewer. Identity weights are N(0, 1); ICT expression weights are in
[0, 1]. Loaders return a FaceModel over the selected region, re-indexed, with `source_index` mapping each kept
vertex back to the file's vertex order (so per-vertex data built on the whole mesh, such as the reflectance
model, can be subset the same way).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import FaceModelConfig
from ..paths import require_data

# Vertex ranges of the ICT-FaceKit geometry parts (ICT-FaceKit README; see data/README.md).
ICT_PARTS: dict[str, tuple[int, int]] = {
    "face": (0, 9409),
    "head_neck": (9409, 11248),
    "mouth_socket": (11248, 13294),
    "eye_sockets": (13294, 14062),
    "gums_tongue": (14062, 17039),
    "teeth": (17039, 21451),
    "eyeballs": (21451, 24591),
    "eye_misc": (24591, 26719),  # lacrimal fluid, eye blend, eye occlusion, eyelashes
}
ICT_NARROW_FACE = (0, 6706)

# Which parts each `face_model.region` keeps.
ICT_REGIONS: dict[str, tuple[str, ...]] = {
    "face": ("face",),
    "narrow_face": ("narrow_face",),
    "full": ("face", "head_neck", "mouth_socket", "eyeballs"),
    "all": tuple(ICT_PARTS),
}

# View-dependent contour landmarks 0-7 and 9-16 replaced by fixed jawline vertices (data card).
ICT_JAWLINE = {
    **dict(zip(range(0, 8), (1278, 1272, 12, 1834, 243, 781, 2199, 1447))),
    **dict(zip(range(9, 17), (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496))),
}


@dataclass
class FaceModel:
    """A linear face geometry model over one region of a source mesh.

    Attributes (V vertices, F triangles):
      mean              (V, 3) float32, centimetres
      shape_basis       (S, V, 3) float32, cm per unit weight; weights ~ N(0, 1)
      expression_basis  (E, V, 3) float32, cm per unit weight; ICT weights in [0, 1]
      triangles         (F, 3) int64, counter-clockwise seen from outside
      landmarks         (68,) int64 vertex ids of the Multi-PIE 68 landmarks (-1 where not in the region)
      parts             (V,) int64 index into `part_names` (which anatomical part each vertex belongs to)
      source_index      (V,) int64 vertex id in the source file
    """

    mean: torch.Tensor
    shape_basis: torch.Tensor
    expression_basis: torch.Tensor
    triangles: torch.Tensor
    landmarks: torch.Tensor
    parts: torch.Tensor
    part_names: tuple[str, ...]
    source_index: torch.Tensor
    expression_names: tuple[str, ...] = ()
    name: str = "face model"
    meta: dict = field(default_factory=dict)

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_shape(self) -> int:
        return self.shape_basis.shape[0]

    @property
    def n_expression(self) -> int:
        return self.expression_basis.shape[0]

    def geometry(self, shape: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """(B, S'), (B, E') weights, S' <= S, E' <= E -> (B, V, 3) model-space vertices, centimetres."""
        s, e = shape.shape[-1], expression.shape[-1]
        if s > self.n_shape or e > self.n_expression:
            raise ValueError(f"{s} shape / {e} expression weights given; {self.name} has "
                             f"{self.n_shape} / {self.n_expression}")
        out = self.mean.to(shape) + torch.einsum("bs,svc->bvc", shape, self.shape_basis[:s].to(shape))
        if e:
            out = out + torch.einsum("be,evc->bvc", expression, self.expression_basis[:e].to(expression))
        return out

    def part_mask(self, *names: str) -> torch.Tensor:
        """(V,) bool: vertices in any of the named parts."""
        unknown = set(names) - set(self.part_names)
        if unknown:
            raise KeyError(f"unknown part(s) {sorted(unknown)}; parts: {self.part_names}")
        ids = torch.tensor([self.part_names.index(n) for n in names])
        return torch.isin(self.parts, ids)

    def subset(self, vertex_keep: torch.Tensor) -> tuple["FaceModel", torch.Tensor]:
        """The model on the vertices where `vertex_keep` (V,) bool is set, with the triangles whose three corners
        are kept. Returns (model, new_id (V,) int64: each old vertex's id in it, -1 where dropped); landmarks
        on dropped vertices become -1."""
        keep = vertex_keep.detach().cpu().numpy().astype(bool)
        kept, tri = select_region(keep, self.triangles.cpu().numpy())
        new_id = torch.full((self.n_vertices,), -1, dtype=torch.int64)
        new_id[torch.from_numpy(kept)] = torch.arange(len(kept))
        ids = torch.from_numpy(kept).to(self.mean.device)
        lm = self.landmarks.cpu()
        landmarks = torch.where(lm >= 0, new_id[lm.clamp_min(0)], lm).to(self.landmarks.device)
        sub = FaceModel(mean=self.mean[ids], shape_basis=self.shape_basis[:, ids],
                        expression_basis=self.expression_basis[:, ids],
                        triangles=torch.from_numpy(tri).to(self.triangles.device), landmarks=landmarks,
                        parts=self.parts[ids.to(self.parts.device)], part_names=self.part_names,
                        source_index=self.source_index[ids.to(self.source_index.device)],
                        expression_names=self.expression_names, name=f"{self.name} (subset)", meta=dict(self.meta))
        return sub, new_id.to(self.landmarks.device)

    def to(self, device=None, dtype=None) -> "FaceModel":
        def conv(t):
            return t.to(device=device, dtype=dtype if t.is_floating_point() and dtype else None)
        return FaceModel(
            **{k: (conv(v) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})


def select_region(vertex_keep: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the triangles whose three corners are all kept; re-index them to the kept vertices.

    vertex_keep (V,) bool; triangles (F, 3) int -> (kept vertex ids (V',), re-indexed triangles (F', 3)).
    """
    kept = np.flatnonzero(vertex_keep)
    new_id = np.full(vertex_keep.shape[0], -1, dtype=np.int64)
    new_id[kept] = np.arange(kept.size)
    tri = new_id[triangles]
    tri = tri[(tri >= 0).all(axis=1)]
    return kept, tri


CALIBRATED_LANDMARKS = Path(__file__).resolve().parents[1] / "data" / "ict_landmarks68.json"


def ict_landmarks(config_json: dict, definition: str = "calibrated") -> list[int]:
    """68 source-mesh vertex ids of the landmarks. "ict": ICT-FaceKit's own Multi-PIE vertices with the contour
    landmarks replaced by fixed jawline vertices (ICT_JAWLINE); "calibrated": each landmark moved to the vertex
    (within 3 cm) that best matches the AFLW2000-3D annotation convention on the tuning images
    (bench/calibrate_detector.py --only landmarks; on detector-guided fits of the reported dev images the
    68-landmark NME drops from 5.86 % to 5.38 %, [0, 30) 3.66 -> 2.51 %)."""
    if definition == "calibrated":
        return list(json.loads(CALIBRATED_LANDMARKS.read_text())["source_vertices"])
    if definition != "ict":
        raise ValueError(f"face_model.landmarks = {definition!r}: one of calibrated, ict")
    out = list(config_json["idx_to_landmark_verts"])
    for i, v in ICT_JAWLINE.items():
        out[i] = v
    return out


def load_ict(config: FaceModelConfig | None = None) -> FaceModel:
    """Load ICT-FaceKit Light (data/face_model/ict_face_light.npz) for `config.region`."""
    config = config or FaceModelConfig()
    path = require_data(config.path, "face model")
    with np.load(path) as z:
        data = {k: z[k] for k in ("vertices", "triangles", "identity_modes", "expression_modes",
                                  "expression_names", "config_json")}
    n_src = data["vertices"].shape[0]
    part_names = tuple(ICT_PARTS)
    parts_all = np.zeros(n_src, dtype=np.int64)
    for i, (lo, hi) in enumerate(ICT_PARTS.values()):
        parts_all[lo:hi] = i

    keep = np.zeros(n_src, dtype=bool)
    for part in ICT_REGIONS[config.region]:
        lo, hi = ICT_NARROW_FACE if part == "narrow_face" else ICT_PARTS[part]
        keep[lo:hi] = True
    kept, tri = select_region(keep, data["triangles"].astype(np.int64))

    landmarks_src = ict_landmarks(json.loads(str(data["config_json"])), config.landmarks)
    new_id = np.full(n_src, -1, dtype=np.int64)
    new_id[kept] = np.arange(kept.size)
    landmarks = new_id[np.asarray(landmarks_src)]

    t = torch.from_numpy
    return FaceModel(
        mean=t(data["vertices"][kept].astype(np.float32)),
        shape_basis=t(np.ascontiguousarray(data["identity_modes"][: config.n_shape, kept], dtype=np.float32)),
        expression_basis=t(np.ascontiguousarray(
            data["expression_modes"][: config.n_expression, kept], dtype=np.float32)),
        triangles=t(tri),
        landmarks=t(landmarks),
        parts=t(parts_all[kept]),
        part_names=part_names,
        source_index=t(kept),
        expression_names=tuple(str(n) for n in data["expression_names"][: config.n_expression]),
        name=f"ICT-FaceKit Light ({config.region})",
        meta={"path": str(path), "region": config.region, "n_source_vertices": n_src},
    )
