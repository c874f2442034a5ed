"""Chapter profiles: demo builds its data; paper explains what is missing."""

import pytest
import torch

from rdtutorial.profiles import chapter_config, data_dir, profile_from_env, quick_from_env
from rdtutorial.train import build_datasets


def test_demo_profile_builds_the_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("RDT_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    cfg = chapter_config("demo", category="grass")
    assert cfg.data_root == str(tmp_path / "demo")
    assert (tmp_path / "demo" / "grass" / "train" / "good").is_dir()
    assert cfg.teacher == "efficientnet_lite0" and cfg.category == "grass"


def test_profile_from_env(monkeypatch):
    monkeypatch.delenv("RDT_PROFILE", raising=False)
    assert profile_from_env() == "demo"
    monkeypatch.setenv("RDT_PROFILE", "paper")
    assert profile_from_env() == "paper"
    monkeypatch.setenv("RDT_PROFILE", "fast")
    with pytest.raises(ValueError, match="RDT_PROFILE='fast'"):
        profile_from_env()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_paper_profile_without_gpu_says_what_to_do():
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        chapter_config("paper")


def test_paper_profile_without_data_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("RDT_MVTEC_DIR", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="rdtutorial download"):
        chapter_config("paper")


def test_quick_mode_is_toy_scale_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RDT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RDT_QUICK", "1")
    assert quick_from_env() is True
    assert "QUICK MODE" in capsys.readouterr().out
    full = chapter_config("demo", epochs=20)
    quick = chapter_config("demo", quick=True, epochs=20)
    assert (quick.image_size, quick.epochs, quick.max_images) == (64, 2, 8)
    assert quick.batch_size <= 4 and full.max_images == 0 and full.epochs == 20
    train_set, test_set = build_datasets(quick)
    assert len(train_set) == 8 and len(test_set) == 8
    assert set(test_set.labels) == {0, 1}, "a quick test split keeps normal and defective images"
    assert len(test_set.defects) > 2, "and spreads its defective ones over the defect types"
    monkeypatch.setenv("RDT_QUICK", "yes")
    with pytest.raises(ValueError, match="RDT_QUICK='yes'"):
        quick_from_env()


def test_device_and_teacher_weights_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RDT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RDT_DEVICE", "cpu")
    monkeypatch.setenv("RDT_MVTEC_DIR", str(tmp_path / "demo"))
    chapter_config("demo")  # writes the demo data, an MVTec-layout folder
    cfg = chapter_config("paper", category="brick", epochs=1)
    assert (cfg.device, cfg.teacher, cfg.teacher_weights) == ("cpu", "wide_resnet50_2", "imagenet")
    monkeypatch.setenv("RDT_TEACHER_WEIGHTS", "random")
    with pytest.warns(UserWarning, match="UNTRAINED"):
        cfg = chapter_config("paper", category="brick", epochs=1)
    assert cfg.teacher_weights is None
    weights = tmp_path / "wrn50.pt"
    weights.write_bytes(b"")
    monkeypatch.setenv("RDT_TEACHER_WEIGHTS", str(weights))
    assert chapter_config("paper", category="brick", epochs=1).teacher_weights == str(weights)
    monkeypatch.setenv("RDT_TEACHER_WEIGHTS", str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        chapter_config("paper", category="brick", epochs=1)
    monkeypatch.delenv("RDT_TEACHER_WEIGHTS")
    monkeypatch.setenv("RDT_DEVICE", "tpu")
    with pytest.raises(ValueError, match="RDT_DEVICE='tpu'"):
        chapter_config("demo")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_asking_for_cuda_without_a_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setenv("RDT_DEVICE", "cuda:1")
    with pytest.raises(RuntimeError, match="RDT_DEVICE=cpu"):
        chapter_config("demo")
