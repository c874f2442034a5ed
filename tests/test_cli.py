"""The command line, in-process through ``main([...])``: help, demo, train/evaluate/predict, bad input, download.

Tiny settings throughout (64 px, a few images, one epoch); the only server is
http.server on 127.0.0.1.
"""

import argparse
import csv
import hashlib
import io
import json
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from rdtutorial.cli import build_parser, main
from rdtutorial.data import MVTecAD

TINY = ["--image-size", "64", "--epochs", "1", "--no-progress"]

OPTIONS = {
    "demo": ["--data-root", "--category", "--method", "--epochs", "--image-size", "--eval-every", "--seed",
             "--out-dir", "--no-progress"],
    "train": ["--profile", "--dataset", "--data-root", "--category", "--method", "--teacher", "--epochs",
              "--batch-size", "--accumulate", "--image-size", "--device", "--amp", "--channels-last", "--num-workers",
              "--lr", "--lr-proj", "--w-ssot", "--w-recon", "--w-con", "--ssot-mode", "--margin", "--noise-size",
              "--out-dir", "--checkpoint-every", "--resume", "--eval-every", "--seed", "--no-progress"],
    "evaluate": ["checkpoint", "--data-root", "--category", "--batch-size", "--device", "--out-dir", "--no-progress"],
    "predict": ["checkpoint", "input", "--out-dir", "--threshold", "--vmin", "--vmax", "--batch-size", "--device",
                "--overwrite", "--no-progress"],
    "export": ["run", "--onnx", "--image-size", "--data-root", "--overwrite", "--no-progress"],
    "download": ["--root", "--category", "--url", "--sha256", "--timeout"],
}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_help_explains_every_option(command, capsys):
    assert main([command, "--help"]) == 0
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = {(a.option_strings or [a.dest])[0]: a for a in subcommands.choices[command]._actions if a.dest != "help"}
    assert set(OPTIONS[command]) <= set(actions)
    for name, action in actions.items():
        assert action.help, f"{command} {name} has no help text"
        if action.default not in (None, False):
            assert "default" in action.help, f"{command} {name} does not say its default"


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


@pytest.mark.slow
def test_demo_writes_the_report_and_prints_the_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--data-root", str(tmp_path / "demo"), "--out-dir", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == 1  # the finished run's evaluation
    for key, name in (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO")):
        assert name in printed and _percent(metrics[key]) in printed
    for figure in ("anomaly_maps.png", "history.png"):
        with Image.open(out / figure) as img:
            assert img.format == "PNG" and min(img.size) > 200
            assert np.asarray(img.convert("L")).std() > 10  # something is drawn
    assert (out / "checkpoint.pt").is_file()
    assert (tmp_path / "demo" / "gravel" / "train" / "good").is_dir()  # the whole demo set is made
    # a fresh demo run has its threshold: 12 of the 60 training normals held out at a false-alarm rate of 0.1
    assert main(["predict", str(out), str(tmp_path / "demo" / "brick" / "test" / "scratch"), "--out-dir",
                 str(tmp_path / "pred"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"from {out / 'calibration.json'}: target false-alarm rate 0.1 on 12 held-out normal images" in printed
    assert "anomalous (score >= threshold)" in printed and "anomalous" in _rows(tmp_path / "pred" / "scores.csv")[0]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_evaluate_predict_round_trip(tiny_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_root), "--category", "all", "--batch-size", "4",
                 "--calibration-fraction", "0", "--out-dir", str(run), *TINY]) == 0
    trained = json.loads((run / "brick" / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary["categories"]) == ["brick"]
    assert summary["categories"]["brick"]["aupro"] == trained["aupro"]
    assert summary["config"]["image_size"] == 64 and summary["config"]["epochs"] == 1
    for name in ("checkpoint.pt", "history.json", "anomaly_maps.png", "history.png"):
        assert (run / "brick" / name).is_file(), name
    assert _percent(trained["image_auroc"]) in capsys.readouterr().out
    history = (run / "brick" / "history.json").read_text()
    assert main(["train", "--data-root", str(tiny_root), "--category", "brick", "--batch-size", "4",
                 "--calibration-fraction", "0", "--out-dir", str(run), "--resume", *TINY]) == 0  # finished: re-read, not retrained
    assert (run / "brick" / "history.json").read_text() == history
    assert json.loads((run / "summary.json").read_text())["categories"]["brick"]["aupro"] == trained["aupro"]

    assert main(["evaluate", str(run), "--device", "cpu", "--no-progress"]) == 0
    evaluated = json.loads((run / "evaluation" / "brick" / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6)
    assert (run / "evaluation" / "summary.json").is_file() and (run / "evaluation" / "brick" / "anomaly_maps.png").is_file()

    images = tmp_path / "images"
    images.mkdir()
    for i, source in enumerate(sorted((tiny_root / "brick" / "test").glob("*/000.png"))):
        (images / f"{i}.png").write_bytes(source.read_bytes())
    with Image.open(tiny_root / "brick" / "test" / "good" / "001.png") as img:
        img.convert("RGB").resize((96, 80)).save(images / "wide.jpg")
        img.save(images / "wide.bmp")
    pred = tmp_path / "pred"
    assert main(["predict", str(run / "brick" / "checkpoint.pt"), str(images), "--out-dir", str(pred),
                 "--device", "cpu", "--no-progress"]) == 0
    rows = _rows(pred / "scores.csv")
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["0.png", "1.png", "2.png", "3.png", "wide.bmp", "wide.jpg"]
    assert "anomalous" not in rows[0]
    with Image.open(pred / "wide.jpg_map.png") as overlay:  # same stem as wide.bmp: named by the full name
        assert overlay.size == (96, 80)  # overlays keep the input image's size
    scores = [float(r["score"]) for r in rows]
    assert len(set(scores)) == len(scores)

    threshold = float(np.median(scores))
    assert main(["predict", str(run / "brick"), str(images), "--out-dir", str(pred), "--threshold", str(threshold),
                 "--overwrite", "--no-progress"]) == 0  # the same folder again: its predictions are replaced
    rows = _rows(pred / "scores.csv")
    assert [int(r["anomalous"]) for r in rows] == [int(s >= threshold) for s in scores]
    assert {int(r["anomalous"]) for r in rows} == {0, 1}


@pytest.mark.parametrize("argv, named", [
    (["train", "--data-root", "{tmp}/missing"], "missing"),
    (["train", "--data-root", "{root}", "--category", "marble"], "marble"),
    (["train", "--data-root", "{root}", "--category", "all", "--image-size", "100"], "image_size = 100"),
    (["train", "--data-root", "{root}", "--category", "brick", "--profile", "paper", "--device", "cpu"], "--epochs"),
    (["evaluate", "{root}/brick/train/good/000.png"], "000.png"),
    (["evaluate", "{tmp}"], "checkpoint.pt"),
    (["predict", "{tmp}/nothing.pt", "{root}"], "nothing.pt"),
    (["demo", "--category", "marble"], "marble"),
    (["train", "--epochs", "0"], "0"),
])
def test_bad_input_exits_2_with_a_message_naming_it(argv, named, tiny_root, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, root=tiny_root) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err
    assert "Traceback" not in err


def _tiny_mvtec_archive(path):
    """A tar.xz shaped like the real archive, with one category."""

    def add(tar, name, image):
        data = io.BytesIO()
        Image.fromarray(image).save(data, "PNG")
        info = tarfile.TarInfo(name)
        info.size = data.tell()
        data.seek(0)
        tar.addfile(info, data)

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:xz") as tar:
        for name in ("train/good/000.png", "test/good/000.png", "test/crack/000.png"):
            add(tar, f"./bottle/{name}", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        add(tar, "./bottle/ground_truth/crack/000_mask.png", np.pad(np.full((4, 4), 255, np.uint8), 6))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served_archive(tmp_path):
    """(url, sha256) of a tiny archive served on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    digest = _tiny_mvtec_archive(served / "mvtec.tar.xz")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/mvtec.tar.xz", digest
    httpd.shutdown()
    httpd.server_close()


def test_download_from_a_mirror(served_archive, tmp_path, capsys):
    url, digest = served_archive
    root = tmp_path / "mvtec"
    assert main(["download", "--root", str(root), "--category", "bottle", "--url", url, "--sha256", digest]) == 0
    assert MVTecAD(root, "bottle", "test", image_size=16).labels == [1, 0]
    assert str(root) in capsys.readouterr().out


def test_download_with_a_wrong_checksum_exits_2(served_archive, tmp_path, capsys):
    url, _ = served_archive
    assert main(["download", "--root", str(tmp_path / "mvtec"), "--category", "bottle", "--url", url,
                 "--sha256", "0" * 64]) == 2
    assert "SHA-256" in capsys.readouterr().err


def test_download_rejects_an_unknown_category(capsys):
    assert main(["download", "--category", "marble"]) == 2
    assert "marble" in capsys.readouterr().err


def test_amp_and_channels_last_can_be_switched_off_or_left_to_the_profile():
    from rdtutorial.cli import _train_overrides, build_parser

    def overrides(*flags):
        return _train_overrides(build_parser().parse_args(["train", "--data-root", "x", *flags]))

    assert "amp" not in overrides() and "channels_last" not in overrides()
    assert overrides("--no-amp", "--no-channels-last")["amp"] is False
    assert overrides("--amp", "--channels-last")["channels_last"] is True
    assert overrides("--resume")["resume"] is True and "resume" not in overrides()
