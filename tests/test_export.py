"""ONNX export of the inference path: ONNX Runtime agrees with PyTorch and evaluation, dynamic batch, metadata,
errors, the export command on a trained run. Small models: EfficientNet-Lite0 (packaged ImageNet weights) at 64 px,
RD and RD++, and RD++ on Wide-ResNet-50-2 (random weights)."""

import importlib
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from rdtutorial.anomaly_map import image_scores
from rdtutorial.calibration import load_calibration
from rdtutorial.cli import main
from rdtutorial.config import preset
from rdtutorial.data import make_demo_dataset
from rdtutorial.evaluate import predict_maps
from rdtutorial.export import (MAP_ABS_TOL, SCORE_REL_TOL, ExportSetupError, InferenceModel, export_onnx,
                               read_metadata, verify_onnx)
from rdtutorial.models import RDPlusPlus, ReverseDistillation, build_teacher
from rdtutorial.train import build_datasets, load_trained, train

SIZE = 64
METADATA = {"threshold": 0.25, "calibration": {"method": "fpr", "target": 0.05, "n_normal": 40}}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    teacher = build_teacher("efficientnet_lite0")
    return {"rd": ReverseDistillation(teacher), "rdpp": RDPlusPlus(teacher)}


@pytest.fixture(scope="module", params=["rd", "rdpp"])
def exported(request, models, tmp_path_factory):
    model = models[request.param].train()  # export evaluates in eval mode and gives the modes back
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", SIZE, METADATA)
    assert model.decoder.training and not model.teacher.training
    return path, model


def test_inference_model_is_what_evaluation_computes(models):
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    model = models["rdpp"].eval()
    with torch.no_grad():
        maps, scores = InferenceModel(model, SIZE).eval()(images)
    expected = predict_maps(model, images)
    assert torch.equal(maps, expected) and torch.equal(scores, image_scores(expected))


@pytest.mark.slow  # each export traces the model (~20 s of CPU)
def test_onnx_runtime_matches_pytorch_with_a_dynamic_batch(exported):
    path, model = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(2)
    for batch in (1, 3):
        images = torch.rand(batch, 3, SIZE, SIZE, generator=generator)
        maps, scores = session.run(None, {"images": images.numpy()})
        assert maps.shape == (batch, 1, SIZE, SIZE) and scores.shape == (batch,)
        check = verify_onnx(path, model, images)
        assert check.map_abs < 1e-4 and check.score_rel < 1e-5, check


@pytest.mark.slow
def test_metadata_is_stored(exported):
    path, _ = exported
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["threshold"] == "0.25" and props["image_size"] == "[64, 64]"
    assert read_metadata(path) == {**METADATA, "image_size": [SIZE, SIZE], "sigma": 4.0}
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_errors_name_the_size_and_the_path(models, tmp_path):
    model = models["rd"]
    with pytest.raises(ValueError, match="image size 100 "):
        export_onnx(model, tmp_path / "m.onnx", 100, {})
    with pytest.raises(ValueError, match=r"image size \(64, 48\)"):
        InferenceModel(model, (64, 48))
    with pytest.raises(ValueError, match=r"expected images \[B, 3, 64, 64\]"):
        InferenceModel(model, SIZE)(torch.rand(1, 3, 96, 96))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for path in (blocker / "m.onnx", tmp_path):
        with pytest.raises(OSError, match=re.escape(f"cannot write the ONNX file {path}")):
            export_onnx(model, path, SIZE, {})
    with pytest.raises(ValueError, match="JSON"):
        export_onnx(model, tmp_path / "m.onnx", SIZE, {"threshold": object()})


# The export command: a trained run folder -> one ONNX file with its threshold, checked on the run's images.


def test_export_command_errors_are_one_line_before_any_work(tmp_path, capsys):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    cases = [
        (["export", str(empty), "--onnx", str(tmp_path / "m.onnx")], f"no checkpoint.pt in {empty}"),
        (["export", str(empty), "--onnx", str(tmp_path / "m.onnx"), "--image-size", "100"],
         "image size 100 is not supported: height and width must be positive multiples of 32"),
        (["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "m.onnx")], "no checkpoint or run folder"),
    ]
    for argv, named in cases:
        assert main([*argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err and err.count("\n") == 1, err


def test_export_says_what_to_install_without_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    assert main(["export", str(tmp_path), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "ONNX export needs torch 2.6 or newer (this is 2.5.1): pip install 'rdtutorial[export]'" in \
        capsys.readouterr().err
    monkeypatch.undo()
    real = importlib.import_module

    def without_onnxscript(name, *args):
        if name == "onnxscript":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_onnxscript)
    with pytest.raises(ExportSetupError, match="needs the onnxscript package, which is not installed"):
        export_onnx(torch.nn.Conv2d(3, 3, 1), tmp_path / "m.onnx", SIZE)


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """A one-epoch RD++ run on a tiny demo set (64 px), 4 of its 8 normals held out for the threshold."""
    root = tmp_path_factory.mktemp("data")
    make_demo_dataset(root, image_size=64, n_train=8, n_test_good=4, n_test_defect=2, categories=("brick",))
    run = tmp_path_factory.mktemp("run")
    cfg = preset("demo", data_root=str(root), category="brick", image_size=SIZE, batch_size=4, epochs=1,
                 noise_size=(4, 12), progress=False, calibration_fraction=0.5, calibration_fpr=0.25, out_dir=str(run))
    train(cfg)
    return run


@pytest.mark.slow
def test_export_command_writes_a_checked_graph_with_the_runs_threshold(calibrated_run, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    assert main(["export", str(calibrated_run), "--onnx", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    calibration = load_calibration(calibrated_run)[0]
    meta = read_metadata(path)
    assert meta["threshold"] == calibration.threshold and meta["image_size"] == [SIZE, SIZE]
    assert meta["normalization"]["threshold"] == calibration.threshold and meta["calibration"]["n_normal"] == 4
    assert meta["model"]["method"] == "rdpp" and meta["pixel_threshold"] == calibration.pixel_threshold
    assert f"threshold {calibration.threshold:.6g} (target false-alarm rate 0.25 on 4 held-out normal images)" in out
    measured = re.search(r"maps differ by at most (\S+) \(tolerance 0.0001\), scores by at most (\S+) relative", out)
    assert float(measured[1]) < 1e-4 and float(measured[2]) < 1e-5, out
    model, cfg = load_trained(calibrated_run / "checkpoint.pt")  # the maps, checked here too, on all test images
    test = build_datasets(cfg)[1]
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    onnx_maps, onnx_scores = ort.InferenceSession(str(path)).run(None, {"images": images.numpy()})
    maps = predict_maps(model, images)
    assert np.abs(onnx_maps - maps.numpy()).max() < 1e-4
    np.testing.assert_allclose(onnx_scores, image_scores(maps).numpy(), rtol=1e-5)
    assert main(["export", str(calibrated_run), "--onnx", str(path), "--no-progress"]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(calibrated_run), "--onnx", str(tmp_path / "no" / "m.onnx"), "--no-progress"]) == 2
    assert f"its folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err


@pytest.mark.slow  # Wide-ResNet-50-2 (random weights) traces for about a minute
def test_the_paper_teacher_exports_within_the_tolerances(tmp_path):
    torch.manual_seed(0)
    model = RDPlusPlus(build_teacher("wide_resnet50_2", weights=None))
    path = export_onnx(model, tmp_path / "wrn.onnx", SIZE)
    check = verify_onnx(path, model, torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3)))
    assert check.map_abs < MAP_ABS_TOL and check.score_rel < SCORE_REL_TOL, check
