"""ifn.upright: the crop turned about its centre, the estimate mapped back, the second look converging."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifn.model.layout import ParamLayout
from ifn.render.camera import Camera
from ifn.upright import rotate_images, unrotate_estimate, upright_estimate


def blob(size: int, angle_deg: float, centre=(0.0, 0.0), sx: float = 9.0, sy: float = 3.0) -> np.ndarray:
    """(size, size, 3) uint8: a dark elliptical Gaussian on white, its long axis at `angle_deg` on screen
    (image axes x right, y down), centred `centre` px from the image centre."""
    yy, xx = np.mgrid[:size, :size] + 0.5 - size / 2
    xx, yy = xx - centre[0], yy - centre[1]
    a = math.radians(angle_deg)
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    dark = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return np.repeat(np.round(255 * (1 - 0.9 * dark)).astype(np.uint8)[..., None], 3, -1)


def moments(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Darkness-weighted centroid (x, y from the image centre, px) and long-axis angle (deg, y down)."""
    w = 255.0 - image[..., 0].astype(np.float64)
    s = image.shape[0]
    yy, xx = np.mgrid[:s, :s] + 0.5 - s / 2
    m = w.sum()
    cx, cy = (w * xx).sum() / m, (w * yy).sum() / m
    cxx = (w * (xx - cx) ** 2).sum() / m
    cyy = (w * (yy - cy) ** 2).sum() / m
    cxy = (w * (xx - cx) * (yy - cy)).sum() / m
    return np.array([cx, cy]), math.degrees(0.5 * math.atan2(2 * cxy, cxx - cyy))


def test_rotate_images_zero_angle_is_the_identity_and_checks_shapes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    assert np.array_equal(rotate_images(images, np.zeros(3)), images)
    with pytest.raises(ValueError, match="angles"):
        rotate_images(images, np.zeros(2))
    with pytest.raises(ValueError, match="images"):
        rotate_images(images[:, :8], np.zeros(3))


@pytest.mark.parametrize("angle_deg", [-25.0, 10.0, 40.0])
def test_rotate_images_moves_content_by_the_documented_rotation(angle_deg):
    """Output offset p samples the input at Rimg(a) p: content at input offset d appears at Rimg(-a) d, and a
    long axis at angle b (y down) comes out at b - a."""
    a = math.radians(angle_deg)
    d = np.array([10.0, -6.0])
    image = blob(96, 20.0, centre=d)
    out = rotate_images(image[None], np.array([a]))[0]
    (c_in, b_in), (c_out, b_out) = moments(image), moments(out)
    expected = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) @ c_in   # Rimg(-a) d
    np.testing.assert_allclose(c_out, expected, atol=0.05)
    assert abs(b_out - (b_in - angle_deg)) < 0.3


def test_unrotate_estimate_projects_like_the_rotated_crop():
    """float64: the landmarks of unrotate_estimate(e2, a) on the crop are those of e2 on the rotated crop,
    turned by Rimg(a) about the centre (the principal point), for random poses, offsets and angles."""
    layout = ParamLayout(n_shape=3, n_expression=2, n_reflectance=2)
    cam = Camera(image_size=128, fov_deg=13.0, distance_cm=100.0)
    g = torch.Generator().manual_seed(1)
    n = 12
    e2 = torch.randn(n, layout.size, generator=g, dtype=torch.float64)
    e2[:, layout["rotation"]] *= 0.5
    e2[:, layout["translation"]] *= 3.0
    angles = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 2.0
    verts = torch.randn(n, 30, 3, generator=g, dtype=torch.float64) * 8.0
    e0 = unrotate_estimate(e2, angles.numpy(), layout)

    def project(e):
        uv, _ = cam.project(cam.pose(verts, e[:, layout["rotation"]], e[:, layout["translation"]]))
        return uv - cam.image_size / 2

    c, s = torch.cos(angles), torch.sin(angles)
    rimg = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], 1)
    assert torch.allclose(project(e0), project(e2) @ rimg.transpose(1, 2), atol=1e-9)
    rot = layout["rotation"]
    assert torch.equal(e0[:, :rot.start], e2[:, :rot.start])
    assert torch.equal(e0[:, rot.start:rot.start + 2], e2[:, rot.start:rot.start + 2])
    assert torch.allclose(unrotate_estimate(e0, (-angles).numpy(), layout), e2, atol=1e-12)


def test_upright_estimate_converges_for_a_network_that_under_reads_tilt():
    """A stand-in network reads the roll of a blob (roll = -its long axis's angle on screen, the camera's
    convention) at a fraction k of the truth: the first look gives k r, each upright pass leaves (1 - k) of
    the rest; an exact reader is a fixed point; passes 0 is the plain estimate."""
    layout = ParamLayout(n_shape=3, n_expression=2, n_reflectance=2)
    roll = layout["rotation"].start + 2
    truth = np.array([-20.0, -8.0, 12.0, 25.0])
    crops = np.stack([blob(96, -r) for r in truth])

    def reader(k):
        def estimate(images):
            out = torch.zeros(len(images), layout.size, dtype=torch.float64)
            out[:, roll] = torch.tensor([-k * math.radians(moments(im)[1]) for im in images])
            return out
        return estimate

    for k in (0.5, 1.0):
        for passes in (0, 1, 2):
            est = np.degrees(upright_estimate(reader(k), crops, layout, passes)[:, roll].numpy())
            np.testing.assert_allclose(est, truth * (1 - (1 - k) ** (passes + 1)), atol=0.4)
