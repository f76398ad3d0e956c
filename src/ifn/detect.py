"""Face and landmark detection with MediaPipe's face mesh, whose weights ship inside the `mediapipe` wheel.

    from ifn.detect import FaceDetector
    faces = FaceDetector()(photo)          # photo (H, W, 3) uint8 RGB; [] when no face is found
    f = faces[0]; f.box, f.score, f.points (468, 2), f.landmarks68 (68, 2) -- image pixels

Nothing is downloaded: `mediapipe==0.10.14` carries face_detection_short_range.tflite and face_landmark.tflite,
used through `mp.solutions` (removed from mediapipe 0.10.30 on; 0.10.14 installs beside numpy 2.4 and the
project's other pins). Licence: Apache-2.0 (code and models).

What a result means
- `points`: the 468 face-mesh points (x, y image pixels) of one face; `depth` their relative depth (MediaPipe's
  z, in the same pixel units, smaller = nearer the camera).
- `score`: the confidence of the face detector (BlazeFace short range) for the box the mesh was computed in;
  faces below `min_confidence` are not returned. No face -> an empty list, never a guess.
- `landmarks68`: the 68 landmarks of the 3DDFA / AFLW2000-3D convention as fixed linear combinations of mesh
  points (`MP68`, calibrated on AFLW2000-3D tuning images only, see bench/calibrate_detector.py).
- `box`: the 3DDFA roi box of those 68 points (their bounding square enlarged by sqrt(2)), the framing the
  network's crops use (`ifn.real.crop_box`).
- `vertices`: the model vertices the 468 points correspond to (`correspondence()`, built by rendering the
  face model and back-projecting the detected points, `bench/calibrate_detector.py`), -1 where none.

Known weakness: profiles. Measured on the 400 AFLW2000-3D dev photos (whole 450 px photos), a face is found in
272 / 272 images of |yaw| in [0, 30), 69 / 76 in [30, 60) and 33 / 52 in [60, 90] at min_confidence 0.5 (the
default; 0.3: 272 / 70 / 34, 0.7: 270 / 67 / 30). Its 68-landmark NME per yaw bin: README and stage
evaluate_real (variant `detector`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .real import roi_box  # noqa: F401  (the 3DDFA roi box of 68 landmarks; re-exported)

DATA = Path(__file__).with_name("data")
MP68_PATH = DATA / "mediapipe_68.json"
CORRESPONDENCE_PATH = DATA / "mediapipe_ict.json"
N_MESH = 468
MEDIAPIPE_VERSION = "0.10.14"


class DetectorUnavailable(RuntimeError):
    """mediapipe is not installed (or cannot be imported): the detector-free path still works."""


def _import_mediapipe():
    try:
        import mediapipe as mp  # noqa: F401
        from mediapipe.python.solutions import face_detection, face_mesh
    except Exception as e:  # ImportError, or a binary that does not load
        raise DetectorUnavailable(
            f"the face detector needs mediapipe=={MEDIAPIPE_VERSION} (`pip install mediapipe=={MEDIAPIPE_VERSION}`, "
            f"part of `make setup`); it could not be imported: {e}. Pass face boxes (--boxes) or use the "
            "detector-free path (--no-detect).") from None
    return face_detection, face_mesh


def available() -> bool:
    """True when mediapipe imports."""
    try:
        _import_mediapipe()
        return True
    except DetectorUnavailable:
        return False


@lru_cache(maxsize=None)
def mp68_weights() -> np.ndarray:
    """(68, 468) fixed weights: landmarks68 = W @ points (each row sums to 1)."""
    spec = json.loads(MP68_PATH.read_text())
    w = np.zeros((68, N_MESH))
    for j, entry in enumerate(spec["landmarks"]):
        for idx, weight in zip(entry["points"], entry["weights"]):
            w[j, idx] = weight
    return w


@lru_cache(maxsize=None)
def correspondence() -> dict:
    """The detector-to-model correspondence: dict `source_vertices` (468,) int64 vertex ids of the face model's
    source mesh (-1: no reliable vertex), `spread_cm` (468,) how far the back-projected points scattered around
    that vertex over the calibration renders (cm), `contour` (468,) bool (points of the face oval, whose vertex
    depends on the view)."""
    spec = json.loads(CORRESPONDENCE_PATH.read_text())
    return {"source_vertices": np.asarray(spec["source_vertices"], dtype=np.int64),
            "spread_cm": np.asarray(spec["spread_cm"], dtype=np.float64),
            "contour": np.asarray(spec["contour"], dtype=bool),
            "meta": spec.get("meta", {})}


@dataclass
class Face:
    """One detected face, image pixels of the photo given to the detector (see the module docstring)."""

    points: np.ndarray            # (468, 2)
    depth: np.ndarray             # (468,)
    score: float
    detection_box: np.ndarray     # (4,) x0, y0, x1, y1 of the face detector

    @property
    def landmarks68(self) -> np.ndarray:
        """(68, 2) the AFLW2000-3D landmarks (`mp68_weights`)."""
        return mp68_weights() @ self.points

    @property
    def box(self) -> np.ndarray:
        """(4,) the 3DDFA roi box of `landmarks68`."""
        return roi_box(self.landmarks68)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.detection_box
        return float(max(x1 - x0, 0) * max(y1 - y0, 0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(x1 - x0, 0) * max(y1 - y0, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class FaceDetector:
    """Photo (H, W, 3) uint8 RGB -> list of `Face`, largest first.

    min_confidence  detector score below which a face is not reported (0..1)
    max_faces       most faces meshed per photo
    Keeps the MediaPipe graphs open between calls (`close()` or use as a context manager).
    """

    def __init__(self, min_confidence: float = 0.5, max_faces: int = 4):
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence = {min_confidence}: must lie in [0, 1]")
        if max_faces < 1:
            raise ValueError(f"max_faces = {max_faces}: must be >= 1")
        face_detection, face_mesh = _import_mediapipe()
        self.min_confidence = float(min_confidence)
        self._det = face_detection.FaceDetection(model_selection=0, min_detection_confidence=self.min_confidence)
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=int(max_faces),
                                        refine_landmarks=False, min_detection_confidence=self.min_confidence)

    def close(self) -> None:
        self._det.close()
        self._mesh.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, image: np.ndarray) -> list[Face]:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        image = np.ascontiguousarray(image)
        dets = []
        for d in (self._det.process(image).detections or []):
            r = d.location_data.relative_bounding_box
            dets.append((float(d.score[0]), np.array([r.xmin * w, r.ymin * h, (r.xmin + r.width) * w,
                                                      (r.ymin + r.height) * h])))
        faces = []
        for lm in (self._mesh.process(image).multi_face_landmarks or []):
            pts = np.array([[p.x * w, p.y * h, p.z * w] for p in lm.landmark], dtype=np.float64)[:N_MESH]
            lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
            mesh_box = np.concatenate([lo, hi])
            # The mesh ran in a box of the same (short range) detector: take the score of the detection that
            # overlaps it most. A mesh without such a detection is not reported (no silent guess).
            match = max(dets, key=lambda d: _iou(d[1], mesh_box), default=None)
            if match is None or _iou(match[1], mesh_box) < 0.2 or match[0] < self.min_confidence:
                continue
            faces.append(Face(points=pts[:, :2], depth=pts[:, 2], score=match[0], detection_box=match[1]))
        faces.sort(key=lambda f: -f.area)
        return faces


def detect_crops(detector: FaceDetector, crops: np.ndarray, upsample: int = 2) -> np.ndarray:
    """(N, S, S, 3) uint8 face crops -> (N, 468, 2) mesh points of the largest face in each, crop pixels; NaN
    rows where none is found. The crops are enlarged `upsample` x (bicubic) first: the detector wants more
    pixels than a 128 px crop has."""
    from PIL import Image

    out = np.full((len(crops), N_MESH, 2), np.nan)
    for k, crop in enumerate(crops):
        big = crop if upsample == 1 else np.asarray(
            Image.fromarray(crop).resize((upsample * crop.shape[1], upsample * crop.shape[0]), Image.BICUBIC))
        faces = detector(big)
        if faces:
            out[k] = faces[0].points / upsample
    return out
