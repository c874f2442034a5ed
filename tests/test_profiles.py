"""Chapter profiles: demo builds its data; paper explains what is missing."""

import pytest
import torch

from rdtutorial.profiles import chapter_config, data_dir, profile_from_env


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
