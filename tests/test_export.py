"""ONNX export (ifn.apps.export, `ifn export --onnx`) and onnxruntime inference (`ifn reconstruct --checkpoint x.onnx`):
outputs equal PyTorch's, dynamic batch, metadata round trip, a failing check raises, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ifn.apps.checkpoint import load_checkpoint  # noqa: E402
from ifn.apps.export import OnnxPredictor, export_onnx  # noqa: E402
from ifn.apps.reconstruct import Reconstructor  # noqa: E402
from ifn.evaluate import predict  # noqa: E402
from ifn.nme import load_aflw2000_dev  # noqa: E402
from test_reconstruct import project  # noqa: E402,F401  (fixture: a tiny params.yaml + model.pt)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(project, tmp_path_factory):
    tmp, _ = project
    path = tmp_path_factory.mktemp("onnx") / "net.onnx"
    net, info = load_checkpoint(tmp / "model.pt")
    with torch.no_grad():   # a non-trivial network: random head weights instead of the (near-)zero init
        net.head.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    report = export_onnx((net, info), path)
    return path, net, info, report


def test_onnx_matches_pytorch(exported):
    path, net, info, report = exported
    assert report["max_abs_diff"] <= 1e-4 and report["outputs"] == net.head.out_features
    ort = OnnxPredictor(path, threads=1, batch_size=3)
    assert ort.info["layout"] == {k: int(v) for k, v in info["layout"].items()} and ort.image_size == 32
    crops = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    got, ref = ort(crops), predict(net, crops)          # batches of 3 and 2: the batch axis is dynamic
    assert got.shape == ref.shape == (5, net.head.out_features)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-4)
    assert (ref.std(0) > 1e-3).any()                    # the outputs depend on the image (not a constant)
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        ort(crops[:, :16])


def test_a_failing_check_raises(exported, tmp_path):
    _, net, info, _ = exported
    with pytest.raises(ValueError, match="differ"):
        export_onnx((net, info), tmp_path / "strict.onnx", atol=-1.0)


@pytest.mark.parametrize("upright_passes, atol", [(0, 0.05), (1, 0.5)])
def test_reconstruct_with_an_onnx_checkpoint(project, exported, upright_passes, atol):
    """The ONNX predictor reconstructs as PyTorch does. With the upright pass the turned crop is rounded to
    uint8, so the two runtimes' ~1e-5 differences in the first roll can flip a few pixels' rounding: a looser
    bound there (0.5 px in the photo)."""
    tmp, refl = project
    path, net, _, _ = exported
    photo = load_aflw2000_dev()["paths"][0]
    kw = {"reflectance_path": refl, "detect": False, "overrides": {"evaluate_real.upright_passes": upright_passes}}
    torch_rec = Reconstructor.from_params(tmp / "params.yaml", tmp / "model.pt", **kw)
    torch_rec.predictor = lambda crops: predict(net, crops)       # the same (perturbed) network under PyTorch
    onnx_rec = Reconstructor.from_params(tmp / "params.yaml", path, **kw)
    assert torch_rec.upright_passes == onnx_rec.upright_passes == upright_passes
    a, b = torch_rec([photo], refine_steps=0)[0], onnx_rec([photo], refine_steps=0)[0]
    assert a.ok and b.ok and b.checkpoint == str(path)
    np.testing.assert_allclose(b.landmarks, a.landmarks, atol=atol)


def test_cli_export_and_errors(project, tmp_path, capsys):
    from ifn.cli import main

    tmp, _ = project
    out = tmp_path / "cli.onnx"
    rc = main(["--params", str(tmp / "params.yaml"), "export", "--onnx", str(out), "--checkpoint",
               str(tmp / "model.pt")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert out.is_file() and "max |diff|" in captured.out
    rc = main(["--params", str(tmp / "params.yaml"), "export", "--onnx", str(tmp_path / "x.onnx"), "--checkpoint",
               str(tmp_path / "nope.pt")])
    assert rc == 2 and "checkpoint not found" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    rc = main(["--params", str(tmp / "params.yaml"), "reconstruct", str(load_aflw2000_dev()["paths"][0]), "--out",
               str(tmp_path / "o"), "--checkpoint", str(bogus), "--no-detect"])
    assert rc == 2 and "not a readable ONNX network" in capsys.readouterr().err
