"""Rigid pose and the perspective pinhole camera.

Conventions: model and camera space are right-handed, +x right, +y up, +z towards the viewer, centimetres.
The camera sits at the origin looking down -z; the head's default position is (0, 0, -distance_cm) and the
`translation` parameters are an offset from it. Image coordinates are pixels, u to the right, v downwards,
pixel (row i, column j) covers [j, j+1) x [i, i+1), so its centre is (j + 0.5, i + 0.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) yaw, pitch, roll in radians -> (..., 3, 3) rotation R = Rz(roll) @ Rx(pitch) @ Ry(yaw).

    Yaw turns the head about the vertical axis (positive: the face turns towards +x), pitch about x
    (positive: chin up), roll about the viewing axis.
    """
    yaw, pitch, roll = angles.unbind(-1)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*yaw.shape, 3, 3)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(*yaw.shape, 3, 3)
    rz = torch.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(*yaw.shape, 3, 3)
    return rz @ rx @ ry


def matrix_to_euler(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of `euler_to_matrix` for |pitch| < 90 deg: (..., 3, 3) -> (..., 3) yaw, pitch, roll."""
    # R = Rz Rx Ry: R[2,1] = sin(pitch); R[2,0] = -cos(p) sin(yaw); R[2,2] = cos(p) cos(yaw);
    # R[0,1] = -sin(roll) cos(p); R[1,1] = cos(roll) cos(p).
    pitch = torch.asin(matrix[..., 2, 1].clamp(-1, 1))
    yaw = torch.atan2(-matrix[..., 2, 0], matrix[..., 2, 2])
    roll = torch.atan2(-matrix[..., 0, 1], matrix[..., 1, 1])
    return torch.stack([yaw, pitch, roll], -1)


@dataclass(frozen=True)
class Camera:
    """Fixed intrinsics of a square image.

    image_size   pixels (width = height)
    fov_deg      full horizontal field of view, degrees
    distance_cm  default distance from the camera to the model origin, centimetres
    """

    image_size: int = 128
    fov_deg: float = 16.0
    distance_cm: float = 100.0

    @property
    def focal_px(self) -> float:
        return 0.5 * self.image_size / math.tan(math.radians(self.fov_deg) / 2)

    def pose(self, vertices: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) model-space cm, (B, 3) yaw/pitch/roll rad, (B, 3) cm offset -> (B, V, 3) camera space."""
        r = euler_to_matrix(rotation)
        offset = translation + translation.new_tensor([0.0, 0.0, -self.distance_cm])
        return vertices @ r.transpose(-1, -2) + offset[:, None, :]

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V, 3) camera space -> ((B, V, 2) pixel u, v; (B, V) depth in cm, positive in front)."""
        depth = -points[..., 2]
        f, c = self.focal_px, 0.5 * self.image_size
        safe = torch.where(depth.abs() > 1e-6, depth, torch.full_like(depth, 1e-6))
        u = c + f * points[..., 0] / safe
        v = c - f * points[..., 1] / safe
        return torch.stack([u, v], -1), depth
