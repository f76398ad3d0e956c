"""Synthetic-split metrics (ifn.evaluate) that need no renderer."""
from __future__ import annotations

import math

import numpy as np

from ifn.evaluate import pose_axis_stats


def test_pose_axis_stats_hand_computed():
    """yaw predicted exactly, pitch a constant guess, roll half of the truth plus 2 degrees."""
    true = np.radians(np.array([[-30.0, -10.0, -8.0], [0.0, 0.0, 0.0], [30.0, 10.0, 8.0], [60.0, 20.0, 16.0]]))
    pred = true.copy()
    pred[:, 1] = math.radians(3.0)
    pred[:, 2] = 0.5 * true[:, 2] + math.radians(2.0)
    s = pose_axis_stats(pred, true)
    assert math.isclose(s["yaw_slope"], 1.0, abs_tol=1e-9) and s["yaw_abs_deg"] < 1e-9
    assert abs(s["pitch_slope"]) < 1e-9
    assert math.isclose(s["pitch_abs_deg"], np.mean([13.0, 3.0, 7.0, 17.0]), rel_tol=1e-6)
    assert math.isclose(s["roll_slope"], 0.5, rel_tol=1e-6)
    # |0.5 r + 2 - r| = |2 - 0.5 r| for r = -8, 0, 8, 16
    assert math.isclose(s["roll_abs_deg"], np.mean([6.0, 2.0, 2.0, 6.0]), rel_tol=1e-6)
    flat = pose_axis_stats(pred, np.zeros_like(true))
    assert math.isnan(flat["yaw_slope"])


def test_landmark_nme_of_reconstruction_errors(constant_albedo_renderer):
    """Synthetic-split NME: 0 for the truth itself; a pure sideways shift of the head moves every projected
    landmark by nearly the same image offset, so NME = that offset / the landmark box (closed form check)."""
    import torch

    from ifn.evaluate import reconstruction_errors
    from ifn.nme import gt_box_size

    renderer = constant_albedo_renderer(64)
    layout = renderer.layout
    g = layout.zeros(2)
    g["rotation"] = torch.tensor([[0.3, 0.1, 0.0], [-0.4, 0.0, 0.1]])
    true = layout.join(g)
    assert torch.allclose(reconstruction_errors(renderer, true, true)["landmark_nme"], torch.zeros(2, dtype=torch.float64))
    g["translation"] = g["translation"] + torch.tensor([0.5, 0.0, 0.0])
    pred = layout.join(g)
    errs = reconstruction_errors(renderer, pred, true)["landmark_nme"].numpy()
    with torch.no_grad():
        lm_t = renderer.landmarks(renderer.posed(renderer.groups(true))).double().numpy()
        lm_p = renderer.landmarks(renderer.posed(renderer.groups(pred))).double().numpy()
    shift = np.linalg.norm(lm_p - lm_t, axis=-1)
    assert shift.std(1).max() < 0.05 * shift.mean()                   # nearly a uniform shift
    np.testing.assert_allclose(errs, shift.mean(1) / gt_box_size(lm_t), rtol=1e-9)
    assert (errs > 0.005).all()


def test_mirror_pose_is_the_mirrored_rotation():
    """R(mirror_pose(p)) = M R(p) M with M = diag(-1, 1, 1) for random angles (float64), the translation's x
    flips, the other groups stay, and mirroring twice is the identity."""
    import torch

    from ifn.evaluate_real import mirror_pose
    from ifn.model.layout import ParamLayout
    from ifn.render.camera import euler_to_matrix

    layout = ParamLayout(n_shape=3, n_expression=2, n_reflectance=2)
    g = torch.Generator().manual_seed(0)
    p = torch.randn(16, layout.size, generator=g, dtype=torch.float64)
    m = mirror_pose(p, layout)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    rot, tr = layout["rotation"], layout["translation"]
    assert torch.allclose(euler_to_matrix(m[:, rot]), mirror @ euler_to_matrix(p[:, rot]) @ mirror, atol=1e-12)
    assert torch.equal(m[:, tr], p[:, tr] * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.equal(m[:, :rot.start], p[:, :rot.start])
    assert torch.equal(mirror_pose(m, layout), p)


def test_flip_pose_cancels_a_bias_the_mirror_image_shares():
    """A stand-in network reads yaw and x from the image's left-right asymmetry (mirror-equivariant) plus a
    constant bias (the same on the mirror image): flip-averaging removes the bias exactly and leaves the
    equivariant part; without the bias it changes nothing; flip_pose=False is the plain forward pass."""
    import torch

    from ifn.evaluate import predict
    from ifn.evaluate_real import network_estimate
    from ifn.model.layout import ParamLayout

    layout = ParamLayout(n_shape=3, n_expression=2, n_reflectance=2)
    rot, tr = layout["rotation"], layout["translation"]

    class Net(torch.nn.Module):
        def __init__(self, bias: float):
            super().__init__()
            self.bias = bias

        def forward(self, x):                           # (B, 3, H, W) in [0, 1]
            w = x.shape[-1]
            asym = x[..., : w // 2].mean((1, 2, 3)) - x[..., w - w // 2:].mean((1, 2, 3))
            out = torch.zeros(len(x), layout.size)
            out[:, rot.start] = asym + self.bias        # yaw
            out[:, rot.start + 1] = 0.1 + self.bias     # pitch: mirror-invariant, kept
            out[:, rot.start + 2] = self.bias           # roll: pure bias
            out[:, tr.start] = 2 * asym                 # x
            out[:, 0] = x.mean((1, 2, 3))               # a shape weight: the crop's own
            return out

    crops = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    biased, clean = Net(0.3), Net(0.0)
    est = network_estimate(biased, crops, layout, batch_size=2)
    ref = predict(clean, crops)
    assert torch.allclose(est[:, rot.start], ref[:, rot.start], atol=1e-6)
    assert torch.allclose(est[:, rot.start + 1], ref[:, rot.start + 1] + 0.3, atol=1e-6)
    assert torch.allclose(est[:, rot.start + 2], torch.zeros(5), atol=1e-6)
    assert torch.allclose(est[:, tr.start], ref[:, tr.start], atol=1e-6) and ref[:, tr.start].abs().max() > 1e-3
    assert torch.equal(est[:, 0], predict(biased, crops)[:, 0])
    assert torch.allclose(network_estimate(clean, crops, layout), ref, atol=1e-6)
    assert torch.equal(network_estimate(biased, crops, layout, flip_pose=False), predict(biased, crops))
