"""Run safety: one run per folder, a full disk, predictions never overwritten, a run too big for the memory.

Each case ends in one clear error naming the folder, process or value at fault, found before the first epoch
where it can be, and nothing the user had is lost or mixed. Tiny settings (64 px, a few images, 1-3 epochs).
"""

import contextlib
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rdtutorial.checkpoint import CHECKPOINT_NAME, load_checkpoint
from rdtutorial.cli import main
from rdtutorial.errors import MemoryLimitError, StorageError
from rdtutorial.resources import activation_bytes, device_memory
from rdtutorial.runs import LOCK_INFO_NAME, RunFolderError, run_lock
from rdtutorial.train import build_model, train

TINY = ["--image-size", "64", "--batch-size", "4", "--no-progress", "--calibration-fraction", "0"]
# What torch.save raises when the disk fills mid-write (the OSError's errno is lost in its C++ writer).
TORCH_ENOSPC = "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/3: " \
               "file write failed"
CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to " \
          "allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory)"


def _error(capsys) -> str:
    """The one error line the command printed on stderr, without ``error: ``."""
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]
    assert "Traceback" not in err and last.startswith("error: ") and err.count("error: ") == 1, err
    return last.removeprefix("error: ")


def _train_args(root, out_dir, *extra) -> list[str]:
    return ["train", "--data-root", str(root), "--category", "brick", "--out-dir", str(out_dir), *TINY, *extra]


# 1. one run per folder ----------------------------------------------------------------------------------------------


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "rdtutorial", *map(str, args)]


def _tripwired_cli(*args) -> list[str]:
    """The command line with building the data sets and training replaced by tripwires that fail loudly: a run
    refused with the lock's message through it was refused before any of that work (no timing involved)."""
    code = ("import sys\n"
            "import rdtutorial.categories as c\n"
            "def tripwire(*a, **k):\n"
            "    print('tripwire: work began before the lock was taken', flush=True)\n"
            "    raise SystemExit(3)\n"
            "c.build_datasets = c.train = c.preflight = tripwire\n"
            "from rdtutorial.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    return [sys.executable, "-c", code, *map(str, args)]


@pytest.mark.slow
def test_a_second_train_into_a_held_folder_is_refused_at_once_naming_the_holder(tiny_root, tmp_path):
    out_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    first = subprocess.Popen(_cli(*_train_args(tiny_root, out_dir, "--epochs", "2")), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out_dir / LOCK_INFO_NAME).exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # it holds the folder for as long as the second one takes
        try:
            second = subprocess.run(_tripwired_cli(*_train_args(tiny_root, out_dir, "--epochs", "1")), env=env,
                                    capture_output=True, text=True, timeout=300)
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr
        assert f"{out_dir.resolve()} is in use by another run (PID {first.pid}, started " in lines[0]
        assert second.stdout == ""  # refused at once: the tripwires (data sets, training) never fired
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert load_checkpoint(out_dir / "brick" / CHECKPOINT_NAME)["epoch"] == 2  # the first run's model, intact
    assert not (out_dir / LOCK_INFO_NAME).exists() and not (out_dir / "brick" / LOCK_INFO_NAME).exists()


def test_the_lock_info_left_by_a_killed_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info = tmp_path / LOCK_INFO_NAME
    info.write_text(json.dumps({"pid": dead.pid, "started": "2026-01-01 00:00:00", "command": "rdtutorial train"}))
    with run_lock(tmp_path):
        assert json.loads(info.read_text())["pid"] == os.getpid()
        with run_lock(tmp_path):  # the same process may nest (demo, then its train)
            pass
        assert info.exists()
    assert not info.exists()


@contextlib.contextmanager
def _held_by_another_process(folder: Path):
    """A second Python process holds ``folder``'s run lock while the block runs; yields that process."""
    code = f"from rdtutorial.runs import run_lock\nwith run_lock({str(folder)!r}):\n    print('held', flush=True)\n" \
           "    input()\n"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.communicate("\n", timeout=30)


def test_a_folder_held_by_another_process_is_refused_naming_it(tmp_path):
    with _held_by_another_process(tmp_path) as holder:
        with pytest.raises(RunFolderError, match=rf"--out-dir {tmp_path} is in use by another run "
                                                 rf"\(PID {holder.pid}, started .*\); wait for it"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released with the holder
        pass


# 2. a full disk ------------------------------------------------------------------------------------------------------


def test_a_disk_without_room_for_a_checkpoint_is_refused_before_the_first_epoch(tiny_config, tmp_path, monkeypatch,
                                                                                 no_training):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=5 * 2**20))
    with pytest.raises(StorageError, match=rf"out_dir {tmp_path / 'run'}: 5 MiB free on its disk, a checkpoint "
                                           r"needs about \d+ MiB; free some space"):
        train(tiny_config(out_dir=str(tmp_path / "run")))


@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_saves_the_weights_elsewhere(tiny_root, tmp_path,
                                                                                       monkeypatch, capsys):
    out_dir, real_save, writes = tmp_path / "run", torch.save, []

    def disk_fills_after_the_first(state, f):
        if str(out_dir) in str(f):
            writes.append(f)
            if len(writes) > 1:
                Path(f).write_bytes(b"partial")
                raise RuntimeError(TORCH_ENOSPC)
        real_save(state, f)
    monkeypatch.setattr(torch, "save", disk_fills_after_the_first)
    assert main(_train_args(tiny_root, out_dir, "--epochs", "2", "--checkpoint-every", "1")) == 2
    message = _error(capsys)
    assert message.startswith(f"cannot write {CHECKPOINT_NAME} in {out_dir / 'brick'}: the disk is full, over "
                              "quota or read-only (")
    assert f"the previous {CHECKPOINT_NAME} is intact; the trained weights are saved in " in message
    rescued = Path(message.split("saved in ")[1].split(" instead")[0])
    try:
        assert load_checkpoint(rescued)["epoch"] == 2
        assert load_checkpoint(out_dir / "brick" / CHECKPOINT_NAME)["epoch"] == 1
        assert sorted(p.name for p in (out_dir / "brick").iterdir() if not p.name.startswith(".rdtutorial")) == \
            [CHECKPOINT_NAME]
    finally:
        shutil.rmtree(rescued.parent)


# 3. predict never overwrites -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run folder's brick/ trained for 1 epoch, and its data."""
    from rdtutorial.data import make_demo_dataset
    root = make_demo_dataset(tmp_path_factory.mktemp("data") / "demo", image_size=64, n_train=4, n_test_good=2,
                             n_test_defect=1, categories=("brick",))
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--data-root", str(root), "--category", "brick", "--epochs", "1", "--out-dir", str(run),
                 "--image-size", "64", "--batch-size", "2", "--no-progress", "--calibration-fraction", "0"]) == 0
    return run / "brick", root / "brick" / "test"


@pytest.mark.slow
def test_predict_refuses_a_folder_with_predictions_and_overwrite_removes_the_old_ones(finished, tmp_path, capsys):
    checkpoint, test = finished
    out_dir = tmp_path / "pred"
    assert main(["predict", str(checkpoint), str(test / "good"), "--out-dir", str(out_dir), "--no-progress"]) == 0
    first = _listing(out_dir)
    assert main(["predict", str(checkpoint), str(test / "good"), "--out-dir", str(out_dir), "--no-progress"]) == 2
    assert _error(capsys) == (f"--out-dir {out_dir} already holds predictions ({len(first) - 1} overlays *_map.png, "
                              "scores.csv): pass --overwrite to replace them, or choose another --out-dir")
    assert _listing(out_dir) == first
    one = sorted((test / "good").iterdir())[0]
    assert main(["predict", str(checkpoint), str(one), "--out-dir", str(out_dir), "--overwrite",
                 "--no-progress"]) == 0
    assert _listing(out_dir) == sorted([f"{one.stem}_map.png", "scores.csv"])
    assert len((out_dir / "scores.csv").read_text().splitlines()) == 2


def _listing(folder: Path) -> list[str]:
    """The files of ``folder`` a user sees (not the run lock's hidden files)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.slow
def test_predict_into_a_folder_another_predict_holds_is_refused_naming_it(finished, tmp_path, capsys):
    checkpoint, test = finished
    out_dir = tmp_path / "pred"
    with _held_by_another_process(out_dir) as holder:
        assert main(["predict", str(checkpoint), str(test / "good"), "--out-dir", str(out_dir),
                     "--no-progress"]) == 2
        assert re.fullmatch(rf"--out-dir {out_dir} is in use by another run \(PID {holder.pid}, started .*\); "
                            r"wait for it to finish or choose another --out-dir", _error(capsys))
        assert _listing(out_dir) == []


# 6. resources up front -----------------------------------------------------------------------------------------------


def test_an_image_size_too_big_for_the_memory_is_refused_before_the_first_epoch(tiny_config, monkeypatch,
                                                                                 no_training):
    monkeypatch.setattr("rdtutorial.resources.device_memory", lambda device: 2**10)
    with pytest.raises(MemoryLimitError, match=r"image_size 64 with batch_size 4 needs at least \d\.\d MiB for the "
                                               r"activations alone \(the teacher's feature maps x 6\), more than "
                                               r"the 0\.0 MiB of cpu; lower --image-size or --batch-size"):
        train(tiny_config())


def test_the_memory_estimate_refuses_8192_px_but_not_the_profiles_sizes(tiny_config):
    teacher = build_model(tiny_config()).teacher
    memory = device_memory("cpu")
    assert activation_bytes(teacher, 512, 16, "cpu") < min(memory, 4 * 2**30)  # demo sizes: never refused
    assert activation_bytes(teacher, 8192, 8, "cpu") > 16 * 2**30  # what died in a raw out-of-memory error


def test_running_out_of_memory_mid_run_is_one_line(tiny_root, tmp_path, monkeypatch, capsys):
    def step(*args, **kwargs):
        raise RuntimeError(CPU_OOM)
    monkeypatch.setattr("rdtutorial.train.training_step", step)
    assert main(_train_args(tiny_root, tmp_path / "run", "--epochs", "1")) == 2
    assert _error(capsys) == "out of memory at image_size 64, batch_size 4 on cpu: lower --batch-size or " \
                             "--image-size"
