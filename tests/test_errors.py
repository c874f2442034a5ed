"""Bad input and lost work: one clear error naming what is at fault, and nothing that was there is lost.

Each test is one case of a hostile pass over the command line, the datasets,
the downloads and the checkpoints. Tiny settings (64 px, a few images, 1-2
epochs); no network (the only address is a closed port on 127.0.0.1).
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import rdtutorial.train as train_module
from rdtutorial.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rdtutorial.cli import main
from rdtutorial.config import TrainConfig, preset
from rdtutorial.data import DatasetError, make_demo_dataset
from rdtutorial.models import build_teacher
from rdtutorial.train import NonFiniteLossError, train

TINY = ["--image-size", "64", "--batch-size", "2", "--no-progress", "--calibration-fraction", "0"]
CLOSED_PORT = "http://127.0.0.1:9/mvtec.tar.xz"


def _make(root, categories=("brick",)):
    return make_demo_dataset(root, image_size=64, n_train=4, n_test_good=2, n_test_defect=1, categories=categories)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("data") / "demo", ("brick", "grass"))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A run folder (``train --epochs 2``) with brick/ trained; tests copy it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--data-root", str(data), "--category", "brick", "--epochs", "2", "--out-dir", str(run),
                 *TINY]) == 0
    return run


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


def _train(data, run, *extra):
    return main(["train", "--data-root", str(data), "--category", "brick", "--epochs", "2", "--out-dir", str(run),
                 *TINY, *extra])


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# 1. problems found only after training -------------------------------------------------------------------------


@pytest.fixture
def own_data(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    return copy


def test_a_test_mask_of_another_size_fails_before_training(own_data, tmp_path, capsys, no_training):
    mask = own_data / "brick" / "ground_truth" / "stain" / "000_mask.png"
    Image.new("L", (40, 40)).save(mask)
    assert _train(own_data, tmp_path / "out") == 2
    err = _error(capsys)
    assert str(mask) in err and "must have its image's size" in err


def test_a_test_folder_with_only_good_fails_before_training(own_data, tmp_path, capsys, no_training):
    for defect in ("scratch", "stain", "smudge"):
        shutil.rmtree(own_data / "brick" / "test" / defect)
    assert _train(own_data, tmp_path / "out") == 2
    assert "brick/test has no defective images" in _error(capsys)


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
@pytest.mark.slow
def test_an_out_dir_that_is_a_file_fails_before_any_work(command, finished, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_module, "evaluate", None)  # evaluation (and training) must not start
    in_way = tmp_path / "file"
    in_way.write_text("mine")
    argv = {"train": ["train", "--data-root", str(data), "--epochs", "1", *TINY],
            "evaluate": ["evaluate", str(finished), "--no-progress"],
            "predict": ["predict", str(finished / "brick"), str(data / "brick" / "test" / "good"), "--no-progress"]}
    assert main([*argv[command], "--out-dir", str(in_way / "out")]) == 2
    assert f"{in_way} is a file, not a folder" in _error(capsys)
    assert in_way.read_text() == "mine"


def test_a_read_only_out_dir_fails_before_training(data, tmp_path, capsys, monkeypatch, no_training):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("rdtutorial.runs.tempfile.TemporaryFile", denied)  # root may write anywhere
    assert _train(data, tmp_path / "out") == 2
    assert f"--out-dir {tmp_path / 'out'}: permission denied" in _error(capsys)


@pytest.mark.slow
def test_a_failing_final_evaluation_keeps_the_checkpoint_and_resume_finishes(data, tmp_path, monkeypatch):
    cfg = preset("demo", data_root=str(data), category="brick", image_size=64, batch_size=2, epochs=1,
                 progress=False, out_dir=str(tmp_path), calibration_fraction=0)
    real = train_module.evaluate

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(train_module, "evaluate", broken)
    with pytest.raises(OSError, match="No space left"):
        train(cfg)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # the trained model was kept
    monkeypatch.setattr(train_module, "evaluate", real)
    monkeypatch.setattr(train_module, "training_step", None)  # resuming does not train again
    _, history = train(cfg.replace(resume=True))
    assert history.evals[-1]["epoch"] == 1 and (tmp_path / "metrics.json").is_file()


# 2. runs silently overwritten or mixed ---------------------------------------------------------------------------


@pytest.mark.slow
def test_train_without_resume_into_a_finished_run_is_refused(run, data, capsys, no_training):
    before = _files(run)
    assert _train(data, run) == 2
    assert f"{run / 'brick'} already holds a run" in _error(capsys)
    assert _files(run) == before


@pytest.mark.slow
def test_a_second_category_joins_the_summary_and_other_settings_are_refused(run, data, capsys):
    assert main(["train", "--data-root", str(data), "--category", "grass", "--epochs", "2", "--out-dir", str(run),
                 *TINY]) == 0
    assert sorted(json.loads((run / "summary.json").read_text())["categories"]) == ["brick", "grass"]
    capsys.readouterr()
    before = _files(run)
    assert main(["train", "--data-root", str(data), "--category", "grass", "--epochs", "2", "--seed", "1",
                 "--out-dir", str(run), *TINY]) == 2
    err = _error(capsys)
    assert f"{run / 'summary.json'} belongs to a run with other settings (seed 0 -> 1)" in err
    assert _files(run) == before


def test_a_temporary_file_of_a_killed_write_is_removed_by_the_next(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".checkpoint.pt.tmp-{dead.pid}"
    stale.write_bytes(b"x" * 1000)
    alive = tmp_path / f".checkpoint.pt.tmp-{os.getppid()}"  # a write still in progress elsewhere
    alive.write_bytes(b"x")
    save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})
    assert not stale.exists() and alive.exists()


def test_a_failed_write_leaves_no_temporary_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})

    def full_disk(state, f):
        open(f, "wb").write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1}


# 3. --resume checks what it finds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, named", [
    ({"image_size": 96}, "image_size 64 -> 96"),
    ({"method": "rd"}, "method 'rdpp' -> 'rd'"),
    ({"teacher": "wide_resnet50_2", "teacher_weights": None}, "teacher 'efficientnet_lite0' -> 'wide_resnet50_2'"),
    ({"epochs": 1}, "it is at epoch 2, beyond epochs=1; pass --epochs 2 or more"),
])
@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_other_settings(changes, named, run, data, no_training):
    before = _files(run)
    cfg = preset("demo", **{**dict(data_root=str(data), category="brick", image_size=64, batch_size=2, epochs=2,
                                   progress=False, out_dir=str(run / "brick"), resume=True,
                                   calibration_fraction=0), **changes})
    with pytest.raises(CheckpointError, match=f"cannot resume from {run / 'brick' / 'checkpoint.pt'}: .*{re.escape(named)}"):
        train(cfg)
    assert _files(run) == before


@pytest.mark.parametrize("extra, named", [(["--image-size", "96"], "image_size 64 -> 96"),
                                          (["--epochs", "1"], "beyond epochs=1; pass --epochs 2 or more")])
@pytest.mark.slow
def test_train_resume_with_other_settings_is_refused(extra, named, run, data, capsys, no_training):
    before = _files(run)
    assert _train(data, run, "--resume", *extra) == 2
    assert named in _error(capsys)
    assert _files(run) == before


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def _corrupt(path, kind):
    good = path.read_bytes()
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "a pickled command":
        torch.save({"epoch": _Payload()}, path)
    else:
        torch.save({"weights": torch.zeros(2)}, path)


KINDS = ["zero-byte", "truncated", "random bytes", "a pickled command", "not ours"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow
def test_resume_from_a_broken_checkpoint_names_it(kind, run, data, tmp_path, capsys, no_training):
    ckpt = run / "brick" / "checkpoint.pt"
    _Payload.marker = tmp_path / "ran"
    _corrupt(ckpt, kind)
    assert _train(data, run, "--resume") == 2
    err = _error(capsys)
    assert str(ckpt) in err and "weights_only" not in err and len(err.splitlines()) == 1
    assert not _Payload.marker.exists()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.slow
def test_evaluate_a_broken_checkpoint_names_it(kind, run, tmp_path, capsys):
    ckpt = run / "brick" / "checkpoint.pt"
    _Payload.marker = tmp_path / "ran"
    _corrupt(ckpt, kind)
    assert main(["evaluate", str(ckpt), "--no-progress"]) == 2
    err = _error(capsys)
    assert str(ckpt) in err and "weights_only" not in err
    assert not _Payload.marker.exists()


# 4-6. predict, demo, download ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_predict_into_its_input_folder_is_refused(finished, data, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(data / "brick" / "test" / "good", images)
    before = _files(images)
    assert main(["predict", str(finished / "brick"), str(images), "--out-dir", str(images), "--no-progress"]) == 2
    assert f"--out-dir {images} is the folder of the input images" in _error(capsys)
    assert _files(images) == before


def test_demo_data_with_a_users_files_is_not_rebuilt(tmp_path):
    root = _make(tmp_path / "demo")
    (root / "brick" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"also files that make_demo_dataset did not write \(1, e.g. brick/notes.txt\)"):
        make_demo_dataset(root, image_size=96, n_train=4, n_test_good=2, n_test_defect=1, categories=("brick",))
    assert (root / "brick" / "notes.txt").read_text() == "mine"
    assert (root / "brick" / "train" / "good" / "000.png").is_file()


def test_demo_data_of_other_arguments_alone_is_rebuilt(tmp_path):
    root = _make(tmp_path / "demo")
    make_demo_dataset(root, image_size=96, n_train=4, n_test_good=2, n_test_defect=1, categories=("brick",))
    with Image.open(root / "brick" / "train" / "good" / "000.png") as img:
        assert img.size == (96, 96)


@pytest.mark.parametrize("argv, named", [
    (["--sha256", "not-a-hash"], "sha256 'not-a-hash' is not a SHA-256: expected 64 hexadecimal digits"),
    (["--timeout", "0"], "timeout 0.0 must be a number of seconds > 0"),
    (["--url", "ftp://example.org/a.tar.xz"], "url 'ftp://example.org/a.tar.xz' is not an http(s)://"),
])
def test_download_arguments_are_checked_before_the_network(argv, named, tmp_path, capsys):
    root = tmp_path / "mvtec"
    assert main(["download", "--root", str(root), "--category", "bottle", "--url", CLOSED_PORT, *argv]) == 2
    assert named in _error(capsys)
    assert not root.exists()


# 7. misleading messages ---------------------------------------------------------------------------------------------


def test_nan_loss_weights_fail_validation(data, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"TrainConfig.w_recon = nan: must be a finite number >= 0"):
        TrainConfig(w_recon=float("nan"))
    with pytest.raises(ValueError, match=r"TrainConfig.lr = inf"):
        TrainConfig(lr=float("inf"))
    assert _train(data, tmp_path / "out", "--w-ssot", "nan") == 2
    assert "TrainConfig.w_ssot = nan" in _error(capsys)


def test_a_diverged_run_without_checkpoint_says_so(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "kd_loss", lambda t, s: torch.tensor(float("nan")))
    cfg = preset("demo", data_root=str(data), category="brick", method="rd", image_size=64, batch_size=2,
                 epochs=1, progress=False, out_dir=str(tmp_path), calibration_fraction=0)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written") as err:
        train(cfg)
    assert "checkpoint.pt" not in str(err.value)


@pytest.mark.slow
def test_a_bad_teacher_weights_file_is_named(run, tmp_path, capsys):
    weights = tmp_path / "lite0.pth"
    weights.write_bytes(b"not weights")
    with pytest.raises(CheckpointError, match=f"teacher weights file .* {weights} is not a file of tensors"):
        build_teacher("efficientnet_lite0", weights=weights)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match=f"{other} does not hold the weights of a efficientnet_lite0"):
        build_teacher("efficientnet_lite0", weights=other)
    ckpt = run / "brick" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state["config"]["teacher_weights"] = str(weights)
    torch.save(state, ckpt)
    assert main(["evaluate", str(ckpt), "--no-progress"]) == 2
    err = _error(capsys)
    assert f"teacher weights file (TrainConfig.teacher_weights, RDT_TEACHER_WEIGHTS) {weights}" in err
    assert "checkpoint.pt" not in err


def test_a_dataloader_worker_error_is_one_line(own_data, tmp_path, capsys):
    bad = own_data / "brick" / "train" / "good" / "002.png"
    bad.write_bytes(b"not a png")
    assert _train(own_data, tmp_path / "out", "--num-workers", "1", "--epochs", "1") == 2
    err = _error(capsys)
    assert len(err.splitlines()) == 1 and f"cannot read image {bad}" in err and "(in a DataLoader worker)" in err


@pytest.mark.slow
def test_evaluate_one_category_ignores_a_broken_checkpoint_of_another(run, capsys):
    (run / "grass").mkdir()
    (run / "grass" / "checkpoint.pt").write_bytes(b"broken")
    assert main(["evaluate", str(run), "--category", "brick", "--no-progress"]) == 0
    assert list(json.loads((run / "evaluation" / "summary.json").read_text())["categories"]) == ["brick"]


@pytest.mark.slow
def test_evaluating_categories_one_by_one_keeps_each_in_the_summary(run, data, capsys):
    assert main(["train", "--data-root", str(data), "--category", "grass", "--epochs", "2", "--out-dir", str(run),
                 *TINY]) == 0
    for category in ("brick", "grass", "brick"):
        assert main(["evaluate", str(run), "--category", category, "--no-progress"]) == 0
    summary = json.loads((run / "evaluation" / "summary.json").read_text())
    assert sorted(summary["categories"]) == ["brick", "grass"]
    assert summary["mean"]["image_auroc"] == pytest.approx(
        np.mean([summary["categories"][c]["image_auroc"] for c in ("brick", "grass")]))


@pytest.mark.parametrize("argv, named", [
    (["train", "--epochs", "ten"], "argument --epochs: must be a positive integer (1, 2, ...), got 'ten'"),
    (["train", "--num-workers", "-1"], "argument --num-workers: must be a whole number (0, 1, 2, ...), got '-1'"),
    (["evaluate", "x", "--device", "gpu"], "--device 'gpu': use cpu, cuda, cuda:N or mps"),
])
def test_option_values_are_explained(argv, named, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "_positive_int" not in err and "Traceback" not in err


@pytest.mark.slow
def test_a_bug_is_not_dressed_as_an_input_error(finished, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise KeyError("a bug")
    monkeypatch.setattr("rdtutorial.categories.evaluate", bug)
    with pytest.raises(KeyError, match="a bug"):  # a traceback, not "error: ..."
        main(["evaluate", str(finished), "--out-dir", str(tmp_path / "eval"), "--no-progress"])


def test_a_value_error_inside_the_package_is_a_traceback_not_an_input_error(data, tmp_path, monkeypatch, capsys):
    def broken_loss(*args, **kwargs):
        raise ValueError("a bug deep in a loss")
    monkeypatch.setattr("rdtutorial.losses.kd_loss", broken_loss)  # called by rdpp_loss at every training step
    with pytest.raises(ValueError, match="a bug deep in a loss"):  # a traceback, not "error: ..."
        _train(data, tmp_path / "out", "--epochs", "1")
    assert "error:" not in capsys.readouterr().err


@pytest.mark.slow
def test_demo_into_a_folder_holding_a_run_is_refused_before_making_data(run, tmp_path, capsys):
    before = _files(run / "brick")
    assert main(["demo", "--data-root", str(tmp_path / "demo"), "--out-dir", str(run / "brick"), "--epochs", "1",
                 "--image-size", "64", "--no-progress"]) == 2
    err = _error(capsys)
    assert f"{run / 'brick'} already holds a run" in err and "--resume" not in err
    assert _files(run / "brick") == before and not (tmp_path / "demo").exists()
