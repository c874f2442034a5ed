"""ONNX export of the inference path: ONNX Runtime agrees with PyTorch and evaluation, dynamic batch, metadata,
errors. Small models: EfficientNet-Lite0 (packaged ImageNet weights) at 64 px, RD and RD++."""

import re

import onnx
import onnxruntime as ort
import pytest
import torch

from rdtutorial.anomaly_map import image_scores
from rdtutorial.evaluate import predict_maps
from rdtutorial.export import InferenceModel, export_onnx, read_metadata, verify_onnx
from rdtutorial.models import RDPlusPlus, ReverseDistillation, build_teacher

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
