"""Paper figures (ifn.figures_paper): closed forms of the light sphere, the overlay and the fairness table; every
figure function on tiny inputs (number of panels, PNG and PDF output)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from ifn import figures_paper as fp
from ifn.model.layout import ParamLayout
from ifn.render.color import linear_to_srgb
from ifn.render.shading import AMBIENT_WHITE, directional_light_sh, sh_shading


def assert_saves(fig, tmp_path, name: str = "fig") -> None:
    assert isinstance(fig, Figure)
    for ext, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        path = tmp_path / f"{name}.{ext}"
        fig.savefig(path)
        assert path.read_bytes()[:4] == magic


def disc_xy(i: int, j: int, size: int) -> tuple[float, float]:
    """Disc coordinates of pixel (row i, column j): +x right, +y up."""
    return (j + 0.5) / size * 2 - 1, 1 - (i + 0.5) / size * 2


# -- light sphere ---------------------------------------------------------------------------------------------
def test_sphere_ambient_light_is_uniform_srgb_of_its_radiance():
    gamma = torch.zeros(9, 3)
    gamma[0] = AMBIENT_WHITE * torch.tensor([0.5, 0.2, 1.0])
    img = fp.sphere_light_image(gamma, size=32, background=0.25)
    assert img.shape == (32, 32, 3) and img.dtype == np.float32
    x, y = np.meshgrid(*[(np.arange(32) + 0.5) / 16 - 1] * 2)
    disc = x ** 2 + y ** 2 <= 1
    expected = linear_to_srgb(torch.tensor([0.5, 0.2, 1.0])).numpy()
    np.testing.assert_allclose(img[disc], np.broadcast_to(expected, img[disc].shape), atol=1e-6)
    assert np.all(img[~disc] == 0.25)
    # numpy input gives the same image
    np.testing.assert_array_equal(fp.sphere_light_image(gamma.numpy(), size=32, background=0.25), img)


def test_sphere_orientation_of_the_band_1_lights():
    size = 33                                                 # odd: a pixel at the exact centre
    for k, (bright, dim) in {2: ((16, 16), (16, 0)),          # z: centre brighter than the rim
                             1: ((2, 16), (30, 16)),          # y: top (row 0) brighter than bottom
                             3: ((16, 30), (16, 2))}.items():  # x: right brighter than left
        gamma = torch.zeros(9, 3)
        gamma[0] = 0.3 * AMBIENT_WHITE
        gamma[k] = 1.0
        img = fp.sphere_light_image(gamma, size=size)
        assert img[bright].min() > img[dim].max() + 0.1, k


def test_sphere_matches_closed_form_directional_light():
    # A point light projected on 3 SH bands, by the addition theorem: E(n)/pi = I sum_l A_l (2l+1)/(4 pi) P_l(c)/pi.
    d = torch.tensor([0.3, 0.5, 0.8])
    d = d / d.norm()
    scale = torch.tensor([1.0, 0.8, 0.6])
    gamma = (directional_light_sh(d, 2.0)[:, None] + torch.tensor([AMBIENT_WHITE * 0.2] + [0.0] * 8)[:, None]) * scale
    size = 40
    img = fp.sphere_light_image(gamma, size=size)
    a = (math.pi, 2 * math.pi / 3, math.pi / 4)
    for i, j in [(20, 20), (5, 20), (20, 35), (30, 9), (12, 27)]:
        x, y = disc_xy(i, j, size)
        n = torch.tensor([x, y, math.sqrt(1 - x * x - y * y)], dtype=torch.float64)
        c = float(n @ d.double())
        p = (1.0, c, 0.5 * (3 * c * c - 1))
        closed = sum(a[l] * (2 * l + 1) / (4 * math.pi) * p[l] for l in range(3)) / math.pi
        expected = scale.double() * (0.2 + 2.0 * closed)
        assert 0 < expected.max() < 1                      # not clipped: the check is sharp
        np.testing.assert_allclose(img[i, j], linear_to_srgb(expected).numpy(), atol=1e-5)
        direct = sh_shading(n[None, None].float(), gamma[None])[0, 0]
        np.testing.assert_allclose(img[i, j], linear_to_srgb(direct).numpy(), atol=1e-5)


# -- qualitative grid -----------------------------------------------------------------------------------------
def test_overlay_is_the_photo_outside_the_mask_and_the_render_inside():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    render = rng.random((20, 20, 3))
    mask = rng.random((20, 20)) < 0.4
    out = fp.overlay(photo, render, mask)
    assert out.dtype == np.uint8
    assert np.array_equal(out[~mask], photo[~mask])
    assert np.array_equal(out[mask], np.round(render[mask] * 255).astype(np.uint8))
    photo_f = photo / 255.0
    out_f = fp.overlay(photo_f, render, mask)
    assert np.array_equal(out_f[~mask], photo_f[~mask]) and np.array_equal(out_f[mask], render[mask])


@pytest.fixture(scope="module")
def small_renderer(constant_albedo_renderer):
    return constant_albedo_renderer(40)


def test_qualitative_grid_panels_and_overlay(small_renderer, tmp_path):
    from ifn.fit import mean_face_params

    r = small_renderer
    params = mean_face_params(r, 3)
    params[1, r.layout["rotation"]] = torch.tensor([0.5, 0.1, 0.0])
    crops = np.random.default_rng(1).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    fig = fp.qualitative_grid(r, crops, params, n=2)
    assert len(fig.axes) == 2 * len(fp.QUALITATIVE_COLUMNS)
    assert [ax.get_title() for ax in fig.axes[:6]] == list(fp.QUALITATIVE_COLUMNS)
    with torch.no_grad():
        mask = fp.face_mask(r, r(params[:2]).pix_to_face).numpy()
    for i in range(2):
        assert 0 < mask[i].sum() < mask[i].size
        shown = np.asarray(fig.axes[6 * i + 1].get_images()[0].get_array())     # the overlay panel
        assert np.array_equal(shown[~mask[i]], crops[i][~mask[i]])
        assert not np.array_equal(shown[mask[i]], crops[i][mask[i]])
    assert_saves(fig, tmp_path)
    with pytest.raises(ValueError, match="pixels"):
        fp.qualitative_grid(r, crops[:, :32, :32], params)


# -- metric figures -------------------------------------------------------------------------------------------
def test_loss_ablation_figure(tmp_path):
    a = {"geometry_mm_mean": 5.0, "geometry_mm_p50": 4.0, "geometry_mm_p90": 9.0, "shape_mm_mean": 2.0,
         "reflectance_mae_mean": 0.05, "shading_mae_mean": 0.1, "rotation_deg_mean": 3.0, "n": 8}
    b = {**a, "geometry_mm_mean": 6.0, "rotation_deg_mean": float("nan")}    # photometric missing everywhere
    fig = fp.loss_ablation_figure({"model_space": a, "parameter": b})
    assert len(fig.axes) == 5
    assert fig.axes[0].get_title() == fp.ABLATION_METRICS["geometry_mm_mean"]
    assert [round(p.get_height(), 6) for p in fig.axes[0].patches] == [5.0, 6.0]
    assert_saves(fig, tmp_path)


def real_metrics() -> dict:
    nan = float("nan")
    return {"synthetic_only": {"photometric_mae": 0.1, "nme_mean": 0.05, "nme_0_30": 0.04, "nme_30_60": 0.05,
                               "nme_60_90": 0.06, "seconds_per_image": 0.01},
            "round_1": {"photometric_mae": 0.09, "nme_mean": nan, "nme_0_30": 0.03},
            "round_2": {"photometric_mae": 0.08},
            "refined": {"photometric_mae": 0.07, "nme_mean": 0.04, "nme_0_30": 0.03, "nme_30_60": 0.04,
                        "nme_60_90": None},
            "optimization_only": {"photometric_mae": 0.2}}


def test_rounds_figure(tmp_path):
    fig = fp.rounds_figure(real_metrics(), ["round_1", "round_2", "round_3"])
    assert len(fig.axes) == 2
    photo, nme = fig.axes
    assert len(photo.lines) == 3 and len(nme.lines) == 2     # network + refined + optimization_only / + refined
    np.testing.assert_allclose(nme.lines[0].get_ydata(), [5.0, np.nan, np.nan, np.nan])
    assert_saves(fig, tmp_path)
    # The detector-guided chain: a second line from synthetic_only (rounds not evaluated are left out).
    metrics = {**real_metrics(), "guided_1": {"photometric_mae": 0.06, "nme_mean": 0.03}}
    fig = fp.rounds_figure(metrics, ["round_1", "round_2"], ["guided_1", "guided_2"])
    photo, nme = fig.axes
    assert len(photo.lines) == 4 and len(nme.lines) == 3
    np.testing.assert_allclose(nme.lines[1].get_ydata(), [5.0, 3.0])
    assert [t.get_text() for t in nme.get_xticklabels()][1].count("/") == 1


def test_nme_yaw_figure(tmp_path):
    fig = fp.nme_yaw_figure(real_metrics())
    assert len(fig.axes) == 1
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == sorted([4.0, 5.0, 6.0, 5.0, 3.0, 3.0, 4.0, 4.0])     # finite NME values, in %
    assert_saves(fig, tmp_path)


def test_accuracy_time_figure_floors_the_time_axis(tmp_path):
    from ifn.evaluate_real import TIME_FLOOR_S, accuracy_time_figure

    curves = {"network": [{"steps": 0, "seconds_per_image": 0.004, "photometric_mae": 0.15, "nme_mean": 0.22}],
              "optimization_only": [{"steps": k, "seconds_per_image": t, "photometric_mae": e, "nme_mean": n}
                                    for k, t, e, n in ((0, 7e-9, 0.2, 0.24), (5, 0.1, 0.16, 0.25))]}
    fig = accuracy_time_figure(curves)
    photo, nme = fig.axes
    for ax in (photo, nme):
        assert len(ax.lines) == 2
        np.testing.assert_allclose(ax.lines[1].get_xdata(), [TIME_FLOOR_S, 0.1])  # the mean face at the floor
        assert ax.get_xlim()[0] > TIME_FLOOR_S / 10
    np.testing.assert_allclose(nme.lines[1].get_ydata(), [24.0, 25.0])            # NME in %
    assert_saves(fig, tmp_path)


# -- fairness -------------------------------------------------------------------------------------------------
FAIRNESS_NAMES = ["25_0_0_20170116174525125.jpg.chip.jpg",   # male, White, 20-39
                  "61_1_2_x.jpg",                            # female, Asian, 60+
                  "19_0_2_x.jpg",                            # male, Asian, 0-19
                  "40_1_0_x.jpg",                            # female, White, 40-59
                  "39_1_1_x.jpg",                            # NaN error
                  "bad_name.jpg",                            # malformed
                  "20_0_3.jpg",                              # malformed: no date field
                  "data/real/utkface/0_1_4_abc.jpg"]         # female, Others, 0-19 (a path)
FAIRNESS_MAE = [0.1, 0.3, 0.2, 0.4, float("nan"), 0.9, 0.5, 0.6]


def test_fairness_table_hand_computed():
    t = fp.fairness_table(np.array(FAIRNESS_MAE), FAIRNESS_NAMES)
    expected = {
        "gender": {"male": (0.15, 2), "female": (1.3 / 3, 3), "all": (0.32, 5)},
        "race": {"White": (0.25, 2), "Asian": (0.25, 2), "Others": (0.6, 1), "all": (0.32, 5)},
        "age": {"0-19": (0.4, 2), "20-39": (0.1, 1), "40-59": (0.4, 1), "60+": (0.3, 1), "all": (0.32, 5)},
    }
    assert list(t) == ["gender", "race", "age", "skipped"]
    for attr, groups in expected.items():
        assert list(t[attr]) == list(groups), attr                   # fixed order, empty groups left out
        for g, (mae, n) in groups.items():
            assert t[attr][g]["n"] == n
            assert t[attr][g]["photometric_mae"] == pytest.approx(mae)
    assert t["skipped"] == {"malformed_name": 2, "nan_error": 1}
    with pytest.raises(ValueError):
        fp.fairness_table([0.1], FAIRNESS_NAMES)


def test_fairness_intervals_hand_computed():
    t = fp.fairness_table(np.array(FAIRNESS_MAE), FAIRNESS_NAMES)
    # male: 0.1 and 0.2 -> s = 0.1 / sqrt(2), ci = 1.96 s / sqrt(2) = 0.098; one photo: no interval
    assert t["gender"]["male"]["ci95"] == pytest.approx(0.098)
    assert math.isnan(t["race"]["Others"]["ci95"])
    # all five: 0.1, 0.3, 0.2, 0.4, 0.6 -> mean 0.32, s^2 = 0.037, ci = 1.96 sqrt(0.037 / 5)
    assert t["age"]["all"]["ci95"] == pytest.approx(1.96 * math.sqrt(0.037 / 5))


def test_fairness_figure(tmp_path):
    fig = fp.fairness_figure(fp.fairness_table(FAIRNESS_MAE, FAIRNESS_NAMES))
    assert len(fig.axes) == 3                                        # "skipped" is not a panel
    assert [len(ax.patches) for ax in fig.axes] == [2, 3, 4]         # "all" is a line, not a bar
    assert all(len(ax.lines) == 1 for ax in fig.axes)
    assert [len(ax.collections) for ax in fig.axes] == [1, 1, 1]      # the 95 % intervals
    assert_saves(fig, tmp_path)


def test_edit_grid(tmp_path):
    img8 = np.zeros((16, 16, 3), np.uint8)
    imgf = torch.rand(16, 16, 3) * 1.2                              # float out of range: clipped
    fig = fp.edit_grid([("photo 1", [img8, imgf, img8, imgf]), ("photo 2", [img8, imgf])],
                       ["input", "relit: left", "albedo +", "smile"])
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes[:4]] == ["input", "relit: left", "albedo +", "smile"]
    assert sum(len(ax.get_images()) for ax in fig.axes) == 6
    assert_saves(fig, tmp_path)
