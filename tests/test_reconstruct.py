"""Reconstruction API and CLI (ifn.reconstruct, i.e. ifn.apps.reconstruct; `ifn reconstruct`): the coordinate chain
from crop to file pixels, mesh writers, the CLI on a real photo and bad files, weights-only checkpoints, refinement.

Fast and independent of pipeline outputs: 64 px renders of the ICT face region with a 4-component albedo model
built here; the CLI runs on 32 px crops with an untrained tiny network saved on the fly.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ifn.apps.boxes import box_for, read_boxes
from ifn.apps.checkpoint import CheckpointError, CheckpointMissingError, default_checkpoint, load_checkpoint
from ifn.apps.mesh_io import _srgb_bytes, write_obj, write_ply
from ifn.apps.reconstruct import Reconstructor
from ifn.config import FaceModelConfig, NetConfig, PriorConfig, load_params
from ifn.fit import face_pivot
from ifn.model.facemodel import load_ict
from ifn.model.layout import ParamLayout
from ifn.model.priors import sample_parameters
from ifn.model.reflectance import ReflectanceModel
from ifn.nme import load_aflw2000_dev
from ifn.real import ROI_SHIFT, apply_affine, roi_box
from ifn.render.color import linear_to_srgb
from ifn.render.renderer import Renderer, RenderSettings
from ifn.render.shading import AMBIENT_WHITE

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def renderer():
    fm = load_ict(FaceModelConfig(region="face", n_shape=20, n_expression=10))
    x, y = fm.mean[:, 0], fm.mean[:, 1]
    skin = torch.tensor([0.55, 0.40, 0.33])
    mean = (skin * (1 + 0.15 * torch.sin(x / 2.5)[:, None] * torch.cos(y / 3.0)[:, None])).clamp(0, 1)
    basis = torch.stack([0.08 * mean, 0.04 * torch.tensor([1.0, 0.0, 0.0]).expand_as(mean),
                         0.05 * (y / 10)[:, None].expand_as(mean), 0.05 * (x / 10)[:, None].expand_as(mean)])
    refl = ReflectanceModel(mean, basis, torch.ones(4) / 4)
    return Renderer(fm, refl, ParamLayout(fm.n_shape, fm.n_expression, 4),
                    RenderSettings(image_size=SIZE, fov_deg=13.0, distance_cm=100.0))


@pytest.fixture(scope="module")
def scene(renderer):
    """A synthetic face: true parameters (1, P), the sRGB render (64, 64, 3) uint8 and its landmarks (68, 2)."""
    g = torch.Generator().manual_seed(3)
    prior = PriorConfig(yaw_max_deg=30.0, harsh_light_prob=0.0, expression_active_prob=0.03, jaw_open_prob=0.0)
    groups = sample_parameters(1, renderer.layout, prior, g, renderer.face_model.expression_names,
                               face_pivot(renderer))
    with torch.no_grad():
        out = renderer(groups, background=0.35)
    image = (linear_to_srgb(out.image[0]) * 255).round().to(torch.uint8).numpy()
    return renderer.layout.join(groups), image, out.landmarks[0].double().numpy()


class Recorder:
    """A predictor returning fixed parameters, remembering the crops it saw."""

    def __init__(self, params):
        self.params, self.crops = params, []

    def __call__(self, crops):
        self.crops.extend(crops)
        return self.params.expand(len(crops), -1)


def place(image, factor, offset, canvas_hw, fill=(90, 110, 70)):
    """Scale `image` by an integer factor and paste it at `offset` (x, y) into a canvas: file px = factor * render
    px + offset (continuous coordinates)."""
    s = image.shape[0]
    big = Image.fromarray(image).resize((s * factor, s * factor), Image.BICUBIC)
    canvas = Image.new("RGB", (canvas_hw[1], canvas_hw[0]), fill)
    canvas.paste(big, offset)
    return np.asarray(canvas)


def box_of_region(x0, y0, side, roi_scale=1.0, shift_y=ROI_SHIFT[1]):
    """The face box whose crop_box is the square [x0, x0 + side] x [y0, y0 + side]."""
    bside = side / roi_scale
    cx, cy = x0 + side / 2, y0 + side / 2 - shift_y * side
    return (cx - bside / 2, cy - bside / 2, cx + bside / 2, cy + bside / 2)


# -- the coordinate chain ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_file", [False, True])
def test_landmarks_map_exactly_to_file_pixels(renderer, scene, tmp_path, as_file):
    """True parameters + a known placement of the render in a larger photo: the returned landmarks are the true
    projected landmarks mapped into the photo (also through load_image's downscaling of large files)."""
    params, image, lm = scene
    factor, offset, hw = 2, (37, 21), (240, 320)
    canvas = place(image, factor, offset, hw)
    box = box_of_region(offset[0], offset[1], factor * SIZE)
    source = canvas
    max_side = 4096
    if as_file:
        source = tmp_path / "canvas.png"
        Image.fromarray(canvas).save(source)
        max_side = 160   # loaded at half size: the box and the landmarks go through the scale
    pred = Recorder(params)
    rec = Reconstructor(renderer, pred, max_side=max_side)
    (res,) = rec([source], [box])
    assert res.ok and res.framing == "box" and res.image_size == hw
    expected = factor * lm + np.array(offset)
    np.testing.assert_allclose(res.landmarks, expected, atol=1e-6)
    np.testing.assert_allclose(apply_affine(res.affine, res.landmarks_crop), res.landmarks, atol=1e-9)
    np.testing.assert_allclose(res.box, box, atol=1e-9)
    # the network saw the render (up- and down-sampled): the framing is the placement, not only the numbers
    assert np.abs(pred.crops[0].astype(float) - image).mean() < 3.0
    assert res.photometric_mae < 0.02 and res.warning is None
    assert res.params["illumination"].shape == (9, 3) and res.params["rotation"].shape == (3,)
    assert res.vertices.shape == (renderer.face_model.n_vertices, 3) and res.albedo.shape == res.vertices.shape
    assert res.triangles.shape[1] == 3 and res.crop.shape == res.render.shape == (SIZE, SIZE, 3)


def test_roi_box_is_the_3ddfa_convention():
    """roi_box of the ground-truth landmarks reproduces AFLW2000-3D's roi_box (stored rounded, and clipped to the
    image for a few faces at the border)."""
    dev = load_aflw2000_dev()
    boxes = np.stack([roi_box(p) for p in dev["pts68"]])
    err = np.abs(boxes - dev["roi_box"]).max(1)
    assert np.median(err) < 0.6 and np.mean(err < 1.0) > 0.9


def test_reframing_without_a_box(renderer, scene):
    """Without a box: the centred square, then one pass around the predicted landmarks' roi box."""
    params, image, _ = scene
    canvas = place(image, 2, (60, 10), (200, 260))
    pred = Recorder(params)
    rec = Reconstructor(renderer, pred)
    (res0,) = rec([canvas], reframe=0)
    assert res0.framing == "centred" and res0.box is None and len(pred.crops) == 1
    np.testing.assert_allclose(res0.affine, [[200 / SIZE, 0, 30], [0, 200 / SIZE, 0]])
    (res1,) = rec([canvas], reframe=1)
    assert res1.framing == "reframed" and res1.reframes == 1 and len(pred.crops) == 3
    np.testing.assert_allclose(res1.box, roi_box(res0.landmarks), atol=1e-9)


def test_bad_inputs_and_not_a_face(renderer, scene, tmp_path):
    """One result per input, in order: unusable inputs get a one-line error; a gross mismatch (a saturated flat
    colour, see ifn.apps.result's measurements) gets a warning."""
    params, image, _ = scene
    rng = np.random.default_rng(0)
    saturated = np.clip(rng.normal([0, 0, 255], 4, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)  # flat blue
    blank = np.full((80, 80, 3), 7, np.uint8)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rec = Reconstructor(renderer, Recorder(params))
    res = rec([image, blank, tmp_path / "missing.png", corrupt, saturated, np.zeros((8, 8, 3), np.uint8)],
              [box_of_region(0, 0, SIZE), None, None, None, None, None])
    assert [r.ok for r in res] == [True, False, False, False, True, False]
    assert "blank" in res[1].error and "not found" in res[2].error and "\n" not in res[3].error
    assert "too small" in res[5].error
    assert res[0].warning is None and res[4].warning and "photometric error" in res[4].warning


def test_refinement_lowers_the_photometric_error(renderer, scene):
    params, image, _ = scene
    g = torch.Generator().manual_seed(1)
    groups = {k: v.clone() for k, v in renderer.layout.split(params).items()}
    groups["rotation"] += math.radians(5.0) * torch.randn(1, 3, generator=g)
    groups["translation"][:, :2] += 0.6
    groups["illumination"] *= 1.25
    rec = Reconstructor(renderer, Recorder(renderer.layout.join(groups)))
    box = box_of_region(0, 0, SIZE)
    (plain,) = rec([image], [box], refine_steps=0)
    (refined,) = rec([image], [box], refine_steps=20)
    assert refined.refine_steps == 20
    assert refined.photometric_mae < 0.6 * plain.photometric_mae, (plain.photometric_mae, refined.photometric_mae)


# -- writers --------------------------------------------------------------------------------------------------
def _mesh():
    from ifn.render.primitives import icosphere

    v, f = icosphere(1)
    albedo = np.random.default_rng(0).uniform(0, 1, (len(v), 3)).astype(np.float32)
    return v.numpy().astype(np.float32), f.numpy(), albedo


def read_obj(path):
    v, f = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith("v "):
            v.append([float(x) for x in line.split()[1:]])
        elif line.startswith("f "):
            f.append([int(x) for x in line.split()[1:]])
    return np.array(v), np.array(f)


def read_ply(path):
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode().splitlines()
    counts = {ln.split()[1]: int(ln.split()[2]) for ln in header if ln.startswith("element")}
    nv, nf = counts["vertex"], counts["face"]
    if "format binary_little_endian 1.0" in header:
        vd = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
        fd = np.dtype([("n", "u1"), ("i", "<i4", 3)])
        vert = np.frombuffer(data, vd, nv, end)
        face = np.frombuffer(data, fd, nf, end + nv * vd.itemsize)
        assert end + nv * vd.itemsize + nf * fd.itemsize == len(data) and (face["n"] == 3).all()
        return vert["p"], vert["c"], face["i"]
    rows = data[end:].decode().splitlines()
    vert = np.array([r.split() for r in rows[:nv]], dtype=float)
    face = np.array([r.split() for r in rows[nv:]], dtype=int)
    assert len(rows) == nv + nf and (face[:, 0] == 3).all()
    return vert[:, :3], vert[:, 3:].astype(np.uint8), face[:, 1:]


def test_obj_round_trip(tmp_path):
    v, f, albedo = _mesh()
    path = write_obj(tmp_path / "m.obj", v, f, albedo, comment="test")
    text = path.read_text()
    assert "sRGB" in text.split("\nv ")[0]              # the colour space is stated in a comment
    rv, rf = read_obj(path)
    assert rv.shape == (len(v), 6) and rf.shape == f.shape
    np.testing.assert_array_equal(rf, f + 1)
    np.testing.assert_allclose(rv[:, :3], v, atol=1e-5)
    np.testing.assert_allclose(rv[:, 3:], _srgb_bytes(albedo) / 255.0, atol=1e-4)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    v, f, albedo = _mesh()
    path = write_ply(tmp_path / "m.ply", v, f, albedo, binary=binary)
    rv, rc, rf = read_ply(path)
    np.testing.assert_allclose(rv, v, atol=1e-5)
    np.testing.assert_array_equal(rc, _srgb_bytes(albedo))
    np.testing.assert_array_equal(rf, f)


def test_read_boxes(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({"a.jpg": [1, 2, 3, 4], "x/b.png": [5, 6, 7.5, 8]}))
    (tmp_path / "b.csv").write_text("name,x0,y0,x1,y1\na.jpg,1,2,3,4\n# comment\n\nmy photo.png 5 6 7.5 8\n")
    for name in ("b.json", "b.csv"):
        boxes = read_boxes(tmp_path / name)
        assert box_for(boxes, "some/dir/a.jpg") == (1, 2, 3, 4)
        assert box_for(boxes, "c.jpg") is None
    assert box_for(read_boxes(tmp_path / "b.json"), "x/b.png") == (5, 6, 7.5, 8)
    assert box_for(read_boxes(tmp_path / "b.csv"), "my photo.png") == (5, 6, 7.5, 8)
    (tmp_path / "bad.txt").write_text("a.jpg 1 2 3 4\nb.jpg 1 2 x 4\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        read_boxes(tmp_path / "bad.txt")


# -- checkpoints -----------------------------------------------------------------------------------------------
TINY = {
    "face_model.n_shape": 8, "reflectance.n_components": 8, "render.image_size": 32, "render.compile": False,
    "train.net.input_size": 32, "train.net.widths": [8, 8, 16, 16], "train.net.stem_width": 8,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory, small_reflectance_path):
    """params.yaml with the TINY settings, the small reflectance model and an untrained network's model.pt whose
    output is the mean face under white ambient light."""
    from ifn.learn.module import build_network
    from ifn.learn.train import save_network

    tmp = tmp_path_factory.mktemp("project")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp / "params.yaml")
    layout = ParamLayout(params.face_model.n_shape, params.face_model.n_expression, params.reflectance.n_components)
    net_cfg = NetConfig.from_dict(raw["train"]["net"]).to_dict()
    torch.manual_seed(0)
    net = build_network(net_cfg, layout.size)
    mean = layout.zeros(1)
    mean["illumination"][:, 0, :] = 0.8 * AMBIENT_WHITE
    net.set_param_stats(layout.join(mean)[0], torch.ones(layout.size))
    info = {"net": net_cfg, "layout": layout.sizes, "image_size": 32, "loss": "model_space", "epoch": 0}
    save_network(tmp / "model.pt", net.state_dict(), info)
    return tmp, small_reflectance_path


class Payload:
    """Unpickling this would create a file: weights_only loading must refuse it before that happens."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_is_loaded_weights_only(project, tmp_path):
    tmp, _ = project
    net, info = load_checkpoint(tmp / "model.pt")
    assert info["image_size"] == 32
    blob = torch.load(tmp / "model.pt", weights_only=True)
    blob["extra"] = Payload(tmp_path / "pwned")
    torch.save(blob, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_missing_checkpoint_says_dvc_repro(project, tmp_path):
    tmp, _ = project
    t, b, f = tmp_path / "train", tmp_path / "breed", tmp_path / "finetune"
    overrides = {"train.out_dir": str(t), "breed.out_dir": str(b), "finetune.out_dir": str(f),
                 "breed.rounds": {"round_1": f"{t}/model_space", "round_2": f"{b}/round_1"},
                 "breed.guided_rounds": {"guided_1": f"{t}/model_space", "guided_2": f"{b}/guided_1"}}
    params = load_params(tmp / "params.yaml", overrides)
    with pytest.raises(CheckpointMissingError, match="dvc repro"):
        default_checkpoint(params)
    (t / "model_space").mkdir(parents=True)
    (t / "model_space" / "model.pt").write_bytes((tmp / "model.pt").read_bytes())
    assert default_checkpoint(params) == t / "model_space" / "model.pt"      # fallback: the trained network
    (b / "round_2").mkdir(parents=True)
    (b / "round_2" / "model.pt").write_bytes((tmp / "model.pt").read_bytes())
    assert default_checkpoint(params) == b / "round_2" / "model.pt"          # the final (bred) network
    f.mkdir()
    (f / "model.pt").write_bytes((tmp / "model.pt").read_bytes())
    assert default_checkpoint(params) == f / "model.pt"                      # fine-tuned on real photos
    with pytest.raises(CheckpointMissingError, match="dvc repro"):
        load_checkpoint(tmp_path / "nope.pt")


# -- the CLI and the public API -------------------------------------------------------------------------------
def cli(project, *args):
    from ifn.cli import main

    tmp, refl = project
    return main(["--params", str(tmp / "params.yaml"), "reconstruct", *map(str, args), "--checkpoint",
                 str(tmp / "model.pt"), "--reflectance", str(refl)])


def test_cli_real_photo_and_bad_files(project, tmp_path, capsys):
    dev = load_aflw2000_dev()
    photo = dev["paths"][0]
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(photo.read_bytes()[:300])          # a truncated JPEG
    boxes = tmp_path / "boxes.txt"
    boxes.write_text(f"{photo.name} " + " ".join(map(str, dev["roi_box"][0])) + "\n")
    out = tmp_path / "out"
    rc = cli(project, photo, corrupt, tmp_path / "missing.jpg", "--boxes", boxes, "--out", out)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    stem = photo.stem
    for name in (f"{stem}.json", f"{stem}.obj", f"{stem}_overlay.png", f"{stem}_landmarks.txt"):
        assert (out / name).is_file(), name
    assert not list(out.glob("broken*")) and not list(out.glob("missing*"))
    assert f"ifn: skipping {corrupt}" in captured.err and f"ifn: skipping {tmp_path / 'missing.jpg'}" in captured.err
    assert str(photo) in captured.out and len(captured.out.strip().splitlines()) == 1
    summary = json.loads((out / f"{stem}.json").read_text())
    assert summary["framing"] == "box" and summary["box"] == pytest.approx(list(dev["roi_box"][0]))
    assert np.array(summary["params"]["illumination"]).shape == (9, 3)
    assert summary["checkpoint"].endswith("model.pt") and summary["refine_steps"] == 0
    lms = np.loadtxt(out / f"{stem}_landmarks.txt")
    assert lms.shape == (68, 2) and np.allclose(lms, summary["landmarks"], atol=1e-3)
    w, h = Image.open(photo).size
    assert Image.open(out / f"{stem}_overlay.png").size[0] > w // 2
    assert (lms[:, 0] > 0).all() and (lms[:, 0] < w).all() and (lms[:, 1] > 0).all() and (lms[:, 1] < h).all()

    rc = cli(project, corrupt, tmp_path / "missing.jpg", "--out", tmp_path / "out2")     # nothing usable
    assert rc == 1 and "none of the 2 images" in capsys.readouterr().err


def test_cli_ply_refine_and_errors(project, tmp_path, capsys):
    photo = load_aflw2000_dev()["paths"][1]
    rc = cli(project, photo, "--out", tmp_path, "--mesh-format", "ply", "--refine", "2", "--reframe", "0",
             "--no-detect")
    assert rc == 0, capsys.readouterr().err
    v, c, f = read_ply(tmp_path / f"{photo.stem}.ply")
    assert len(v) > 1000 and c.dtype == np.uint8 and f.shape[1] == 3
    summary = json.loads((tmp_path / f"{photo.stem}.json").read_text())
    assert summary["refine_steps"] == 2 and summary["framing"] == "centred"
    capsys.readouterr()
    from ifn.cli import main

    tmp, refl = project
    rc = main(["--params", str(tmp / "params.yaml"), "reconstruct", str(photo), "--checkpoint",
               str(tmp_path / "none.pt"), "--out", str(tmp_path)])
    assert rc == 2 and "dvc repro" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("ifn.detect").detect.available(), reason="mediapipe is not installed")
def test_cli_whole_photo_is_detected_and_noise_is_no_face(project, tmp_path, capsys):
    """A whole AFLW2000-3D photo without a box: the detector finds the face, its box lies near the benchmark's
    roi box, the detector-guided refinement runs; a noise image gives 'no face found' and no outputs."""
    dev = load_aflw2000_dev()
    photo = dev["paths"][3]
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (450, 450, 3), dtype=np.uint8)).save(noise)
    out = tmp_path / "out"
    rc = cli(project, photo, noise, "--out", out, "-S", "detect.coarse_steps=10", "-S", "detect.steps=2")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads((out / f"{photo.stem}.json").read_text())
    assert summary["framing"] == "detected" and summary["detector_score"] > 0.5 and summary["refine_steps"] == 2
    box, roi = np.array(summary["box"]), dev["roi_box"][3]
    side = roi[2] - roi[0]
    assert np.abs(box - roi).max() < 0.25 * side
    assert f"ifn: skipping {noise}: no face found" in captured.err
    assert not list(out.glob("noise*"))


def test_public_api_is_lazy_and_callable(project):
    code = "import sys, ifn; assert 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
    from ifn import reconstruct

    tmp, refl = project
    photo = load_aflw2000_dev()["paths"][2]
    res = reconstruct([photo, np.asarray(Image.open(photo))], checkpoint=tmp / "model.pt",
                      params_file=tmp / "params.yaml", reflectance_path=refl, reframe=0, detect=False)
    assert [r.ok for r in res] == [True, True]
    np.testing.assert_allclose(res[0].landmarks, res[1].landmarks, atol=1e-4)


def posed_recorder(renderer, scene):
    """The scene's image, its parameters with yaw / pitch / roll 0.3 / 0.2 / -0.1 rad and translation
    (1.5, -0.5, 2) cm, and a Recorder returning them for every crop."""
    params, image, _ = scene
    p = params.clone()
    p[0, renderer.layout["rotation"]] = torch.tensor([0.3, 0.2, -0.1])
    p[0, renderer.layout["translation"]] = torch.tensor([1.5, -0.5, 2.0])
    return image, p, Recorder(p)


def test_upright_pass_looks_again_at_the_crop_turned_upright(renderer, scene):
    """upright_passes 1: the predictor also sees the crop turned by minus its roll (ifn.upright.rotate_images);
    a predictor that returns the same parameters for both ends with its roll counted twice (the upright crop's
    roll added to the turn) and its translation x, y turned with the crop; the other groups kept."""
    from ifn.upright import rotate_images

    image, p, pred = posed_recorder(renderer, scene)
    (res,) = Reconstructor(renderer, pred, upright_passes=1)([image], reframe=0)
    assert len(pred.crops) == 2
    assert np.array_equal(pred.crops[1], rotate_images(pred.crops[0][None], np.array([0.1]))[0])
    as_t = lambda r, k: torch.as_tensor(np.asarray(r.params[k])).float().reshape(-1)
    assert torch.allclose(as_t(res, "rotation"), torch.tensor([0.3, 0.2, -0.2]), atol=1e-6)
    c, s = np.cos(0.1), np.sin(0.1)     # x, y turned by -angle = roll = -0.1 rad
    expected = torch.tensor([c * 1.5 + s * -0.5, -s * 1.5 + c * -0.5, 2.0], dtype=torch.float32)
    assert torch.allclose(as_t(res, "translation"), expected, atol=1e-5)
    assert torch.equal(as_t(res, "shape"), p[0, renderer.layout["shape"]])


def test_flip_pose_averages_the_mirrored_crop(renderer, scene):
    """flip_pose: the predictor also sees each crop mirrored; a predictor that returns the same parameters for
    both (a constant) gets yaw, roll and x averaged with their negatives (0), pitch and the rest kept."""
    image, p, pred = posed_recorder(renderer, scene)
    rot, tr = renderer.layout["rotation"], renderer.layout["translation"]
    (plain,) = Reconstructor(renderer, pred)([image], reframe=0)
    (res,) = Reconstructor(renderer, pred, flip_pose=True)([image], reframe=0)
    assert len(pred.crops) == 3 and np.array_equal(pred.crops[2], pred.crops[1][:, ::-1])
    as_t = lambda r, k: torch.as_tensor(np.asarray(r.params[k])).float().reshape(-1)
    assert torch.allclose(as_t(plain, "rotation"), p[0, rot]) and torch.allclose(as_t(plain, "translation"), p[0, tr])
    assert torch.allclose(as_t(res, "rotation"), torch.tensor([0.0, 0.2, 0.0]), atol=1e-6)
    assert torch.allclose(as_t(res, "translation"), torch.tensor([0.0, -0.5, 2.0]), atol=1e-6)
    assert torch.equal(as_t(res, "shape"), as_t(plain, "shape"))
