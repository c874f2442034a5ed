"""The trainer: a real run, a kill and resume that continues bit-identically, NaN handling, configs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rdtutorial.checkpoint import load_checkpoint
from rdtutorial.config import PAPER_EPOCHS, TrainConfig, preset
from rdtutorial.evaluate import evaluate
from rdtutorial.train import NonFiniteLossError, build_datasets, build_model, load_trained, train


@pytest.mark.parametrize("method", ["rd", "rdpp"])
@pytest.mark.slow
def test_train_runs_and_evaluates(tiny_config, tmp_path, method):
    cfg = tiny_config(method=method, out_dir=str(tmp_path))
    model, history = train(cfg)
    assert [e["epoch"] for e in history.epochs] == [1, 2]
    final = history.evals[-1]
    assert final["epoch"] == 2
    if method == "rdpp":
        assert all(history.epochs[-1][k] > 0 for k in ("kd", "ssot", "recon"))
    assert json.loads((tmp_path / "metrics.json").read_text()) == final
    reloaded, cfg = load_trained(tmp_path / "checkpoint.pt")
    assert cfg.method == method
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    metrics = evaluate(reloaded, build_datasets(cfg)[1], cfg.eval_batch_size, progress=False).metrics
    assert metrics == pytest.approx({k: v for k, v in final.items() if k != "epoch"}, abs=1e-6)  # the final model's


@pytest.mark.slow
def test_training_changes_the_student_and_lowers_kd(tiny_config):
    _, history = train(tiny_config(method="rd", epochs=4, eval_every=0))
    assert history.epochs[-1]["kd"] < history.epochs[0]["kd"]


@pytest.mark.slow
def test_checkpoint_loads_with_weights_only(tiny_config, tmp_path):
    train(tiny_config(epochs=1, out_dir=str(tmp_path)))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and not any(k.startswith("teacher.") for k in state["model"])


_CHILD = """
import sys
import torch
torch.set_num_threads(int(sys.argv[3]))  # the parent's: sums over other thread counts differ in the last bits
from rdtutorial.config import preset
from rdtutorial.train import train
cfg = preset("demo", data_root=sys.argv[1], category="brick", image_size=64, batch_size=4, epochs=6,
             noise_size=(4, 12), progress=False, out_dir=sys.argv[2], checkpoint_every=1, calibration_fraction=0)
train(cfg)
"""


@pytest.mark.slow
def test_resume_after_a_kill_is_bit_identical(tiny_root, tiny_config, tmp_path):
    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tiny_root), str(killed), str(torch.get_num_threads())])
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 240
    try:
        while not ckpt.exists() and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert ckpt.exists(), "the child run wrote no checkpoint"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    done_epochs = load_checkpoint(ckpt)["epoch"]
    assert 1 <= done_epochs < 6, "the run should have been killed part-way"
    cfg = tiny_config(epochs=6, checkpoint_every=1, out_dir=str(killed))
    resumed, resumed_history = train(cfg.replace(resume=True))
    straight, straight_history = train(cfg.replace(out_dir=str(tmp_path / "straight")))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [e["total"] for e in resumed_history.epochs] == [e["total"] for e in straight_history.epochs]
    assert resumed_history.evals[-1] == straight_history.evals[-1]


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tiny_config, tmp_path, monkeypatch):
    import rdtutorial.train as train_module

    cfg = tiny_config(method="rd", epochs=3, checkpoint_every=1, out_dir=str(tmp_path))
    real_kd = train_module.kd_loss
    calls = {"n": 0}

    def kd_then_nan(t, s):
        calls["n"] += 1
        loss = real_kd(t, s)
        return loss * float("nan") if calls["n"] > 2 else loss  # 2 steps per epoch: NaN in epoch 2

    monkeypatch.setattr(train_module, "kd_loss", kd_then_nan)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 1") as err:
        train(cfg)
    assert "checkpoint.pt" in str(err.value)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_paper_profile_uses_mixed_precision_only_on_a_gpu():
    gpu = preset("paper", category="bottle")
    assert gpu.amp and gpu.channels_last and not gpu.compile
    cpu = preset("paper", category="bottle", device="cpu")
    assert not cpu.amp and not cpu.channels_last
    assert not preset("demo").amp


def test_optimizers_are_fused_on_the_cpu():
    from rdtutorial.train import build_model, build_optimizers

    cfg = preset("demo", teacher_weights=None, progress=False)
    optimizers = build_optimizers(build_model(cfg), cfg)
    assert [opt.defaults["fused"] for opt in optimizers] == [True, True]
    assert [opt.defaults["lr"] for opt in optimizers] == [cfg.lr, cfg.lr_proj]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"TrainConfig.image_size = 100"):
        TrainConfig(image_size=100)
    with pytest.raises(ValueError, match=r"TrainConfig.method = 'gan'"):
        TrainConfig(method="gan")
    with pytest.raises(ValueError, match=r"TrainConfig.amp"):
        TrainConfig(amp=True)
    with pytest.raises(ValueError, match=r"TrainConfig.out_dir"):
        TrainConfig(resume=True)
    with pytest.raises(ValueError, match=r"TrainConfig.noise_size"):
        TrainConfig(noise_size=(20, 10))
    with pytest.raises(ValueError, match="unknown fields \\['epoch'\\]"):
        preset("demo", epoch=3)
    with pytest.raises(ValueError, match="unknown profile"):
        preset("fast")


def test_presets():
    paper = preset("paper", category="screw")
    assert (paper.teacher, paper.image_size, paper.batch_size, paper.epochs) == ("wide_resnet50_2", 256, 16, 280)
    assert paper.device == "cuda" and paper.noise_size == (10, 31)
    assert len(PAPER_EPOCHS) == 15
    with pytest.raises(ValueError, match="no published epoch count for category '01'"):
        preset("paper", category="01")
    assert preset("paper", category="01", epochs=50).epochs == 50
    demo = preset("demo")
    assert demo.teacher == "efficientnet_lite0" and demo.device == "cpu"
    assert preset("demo", category="grass").category_seed() != demo.category_seed()


def test_cuda_request_without_gpu_fails_clearly(tiny_config):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        train(tiny_config(device="cuda"))


def test_build_model_leaves_the_global_random_stream_alone(tiny_config):
    cfg = tiny_config(teacher_weights=None)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = build_model(cfg)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream goes on as if no model were built
    again, other = build_model(cfg), build_model(cfg, seed=cfg.category_seed() + 1)
    weight = "decoder.stages.0.0.conv1.weight"
    assert torch.equal(first.state_dict()[weight], again.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])
