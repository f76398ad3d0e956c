"""`ifn relight` and `ifn edit`: real photos reconstructed by an untrained tiny network (the `project` fixture of
tests/test_reconstruct.py: 32 px crops, the small reflectance model of conftest), edited, pasted back into the
full-resolution photo; bad files, usage errors.

Fast and independent of pipeline outputs: every command runs in-process through ifn.cli.main.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ifn.cli import LIGHT_PRESETS, main
from ifn.apps.edit import PRESETS
from ifn.nme import load_aflw2000_dev
from ifn.real import load_image
from test_reconstruct import project  # noqa: F401  (fixture: a tiny params.yaml + model.pt)

pytestmark = pytest.mark.usefixtures("one_thread")

CROP = 32   # TINY render.image_size of test_reconstruct


def run(project, command, *args):
    tmp, refl = project
    return main(["--params", str(tmp / "params.yaml"), command, *map(str, args), "--checkpoint",
                 str(tmp / "model.pt"), "--reflectance", str(refl)])


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two AFLW2000-3D dev photos, their roi boxes and a box file naming them."""
    dev = load_aflw2000_dev()
    tmp = tmp_path_factory.mktemp("photos")
    boxes = tmp / "boxes.txt"
    boxes.write_text("".join(f"{dev['paths'][i].name} " + " ".join(map(str, dev["roi_box"][i])) + "\n"
                             for i in (0, 1)))
    return [dev["paths"][0], dev["paths"][1]], [np.asarray(dev["roi_box"][i], float) for i in (0, 1)], boxes


def far_from(box, shape, factor=1.15):
    """(H, W) bool: pixels outside the box enlarged `factor` times about its centre (the crop is the box, shifted
    up by 3 % of its side: real.roi_scale 1, real.roi_shift_y -0.03)."""
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, factor * max(x1 - x0, y1 - y0) / 2
    ys, xs = np.mgrid[:shape[0], :shape[1]] + 0.5
    return (np.abs(xs - cx) > half) | (np.abs(ys - cy) > half)


def inside(box, shape, factor=0.5):
    return ~far_from(box, shape, factor)


def check_outputs(out, photo, stem_suffix):
    """Both files exist; the full photo has the original's size, the side-by-side crop is (S, 2S)."""
    full, side = out / f"{photo.stem}_{stem_suffix}.png", out / f"{photo.stem}_{stem_suffix}_crop.png"
    assert full.is_file() and side.is_file()
    original = load_image(photo)
    edited = np.asarray(Image.open(full))
    assert edited.shape == original.shape
    assert Image.open(side).size == (2 * CROP, CROP)
    return original, edited


def test_light_presets_are_the_edit_presets():
    assert set(LIGHT_PRESETS) == set(PRESETS)


def test_relight_preset_real_photo_and_bad_files(project, photos, tmp_path, capsys):
    (photo, _), (box, _), boxes = photos
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(photo.read_bytes()[:300])          # a truncated JPEG
    out = tmp_path / "out"
    rc = run(project, "relight", photo, corrupt, "--light", "left", "--strength", "1.2", "--boxes", boxes,
             "--out", out)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    original, relit = check_outputs(out, photo, "relit")
    far = far_from(box, original.shape[:2])
    assert far.mean() > 0.15
    np.testing.assert_array_equal(relit[far], original[far])          # bit-for-bit away from the face
    changed = (relit != original).any(-1)
    assert changed[inside(box, original.shape[:2])].mean() > 0.5      # the face is relit
    assert f"ifn: skipping {corrupt}" in captured.err and not list(out.glob("broken*"))
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and str(photo) in lines[0] and "light left x1.2" in lines[0]

    rc = run(project, "relight", corrupt, tmp_path / "missing.jpg", "--light", "front", "--out", tmp_path / "o2")
    assert rc == 1 and "none of the 2 images" in capsys.readouterr().err


def test_relight_with_the_light_of_a_reconstruct_json_or_photo(project, photos, tmp_path, capsys):
    (photo, other), (box, _), boxes = photos
    rec_dir = tmp_path / "rec"
    assert run(project, "reconstruct", photo, "--boxes", boxes, "--out", rec_dir) == 0
    summary = json.loads((rec_dir / f"{photo.stem}.json").read_text())
    # its own estimated light: nothing changes (the ratio image is 1)
    rc = run(project, "relight", photo, "--light-from", rec_dir / f"{photo.stem}.json", "--boxes", boxes,
             "--out", tmp_path / "same")
    assert rc == 0, capsys.readouterr().err
    original, same = check_outputs(tmp_path / "same", photo, "relit")
    assert np.abs(same.astype(int) - original).max() <= 1
    # half the light (from an edited JSON): the face gets darker, the rest stays
    summary["params"]["illumination"] = (0.5 * np.array(summary["params"]["illumination"])).tolist()
    (tmp_path / "dark.json").write_text(json.dumps(summary))
    rc = run(project, "relight", photo, "--light-from", tmp_path / "dark.json", "--boxes", boxes,
             "--out", tmp_path / "dark")
    assert rc == 0, capsys.readouterr().err
    _, dark = check_outputs(tmp_path / "dark", photo, "relit")
    face = inside(box, original.shape[:2])
    assert dark[face].astype(float).mean() < original[face].astype(float).mean() - 20
    np.testing.assert_array_equal(dark[far_from(box, dark.shape[:2])], original[far_from(box, dark.shape[:2])])
    # --keep-exposure: the same light at half the strength is scaled back, so nothing changes
    rc = run(project, "relight", photo, "--light-from", tmp_path / "dark.json", "--keep-exposure", "--boxes", boxes,
             "--out", tmp_path / "kept")
    assert rc == 0, capsys.readouterr().err
    _, kept = check_outputs(tmp_path / "kept", photo, "relit")
    assert np.abs(kept.astype(int) - original).max() <= 1
    # the light estimated from another photo (plumbing only: the untrained tiny network predicts the same light
    # for every photo, so nothing changes here)
    rc = run(project, "relight", photo, "--light-from", other, "--boxes", boxes, "--out", tmp_path / "other")
    assert rc == 0, capsys.readouterr().err
    check_outputs(tmp_path / "other", photo, "relit")
    # unusable light sources are usage errors
    capsys.readouterr()
    (tmp_path / "failed.json").write_text(json.dumps({"source": "x", "error": "blank image", "warning": None}))
    for source in (tmp_path / "failed.json", tmp_path / "missing.json", tmp_path / "missing.jpg"):
        assert run(project, "relight", photo, "--light-from", source, "--out", tmp_path / "bad") == 2
        assert f"--light-from {source}" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_edit_albedo_and_expression(project, photos, tmp_path, capsys):
    (photo, other), (box, box2), boxes = photos
    out = tmp_path / "out"
    rc = run(project, "edit", photo, "--albedo-delta", "0=2", "--boxes", boxes, "--out", out)
    assert rc == 0, capsys.readouterr().err
    original, edited = check_outputs(out, photo, "edited")
    changed = (edited != original).any(-1)
    assert changed[inside(box, original.shape[:2])].mean() > 0.5
    far = far_from(box, original.shape[:2])
    np.testing.assert_array_equal(edited[far], original[far])
    # expressions by name and by index (jawOpen is ICT blendshape 26), set and delta
    rc = run(project, "edit", other, "--expression", "jawOpen=1", "--expression-delta", "45=0.5",
             "--albedo", "1=-1", "--boxes", boxes, "--out", out)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    original, edited = check_outputs(out, other, "edited")
    assert (edited != original).any(-1)[inside(box2, original.shape[:2])].mean() > 0.3
    assert str(other) in captured.out and "_edited.png" in captured.out


def test_edit_usage_errors(project, photos, tmp_path, capsys):
    (photo, _), _, _ = photos
    assert run(project, "edit", photo, "--out", tmp_path / "o") == 2
    assert "at least one edit" in capsys.readouterr().err
    assert run(project, "edit", photo, "--expression", "jawOpn=0.5", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "unknown expression name 'jawOpn'" in err and "jawOpen" in err and "browDown_L" in err
    assert run(project, "edit", photo, "--albedo", "99=1", "--out", tmp_path / "o") == 2
    assert "outside 0..7" in capsys.readouterr().err
    assert run(project, "edit", photo, "--expression", "jawOpen=2", "--out", tmp_path / "o") == 2
    assert "outside [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    for argv in (["--albedo", "0:2"], ["--albedo", "0=nan"]):
        with pytest.raises(SystemExit) as exc:
            run(project, "edit", photo, *argv, "--out", tmp_path / "o")
        assert exc.value.code == 2
    for argv in ([], ["--light", "left", "--light-from", "x.json"], ["--light", "sunset"],
                 ["--light", "left", "--strength", "-1"]):
        with pytest.raises(SystemExit) as exc:
            run(project, "relight", photo, *argv, "--out", tmp_path / "o")
        assert exc.value.code == 2
    capsys.readouterr()
