"""TrainConfig as the single source: a new field reaches the command line, the summary and the checkpoint check;
the paper's numbers are written once; importing the configuration loads no model code."""

import dataclasses
import json
import subprocess
import sys

import pytest

from rdtutorial import config
from rdtutorial.checkpoint import CheckpointError, check_resumable
from rdtutorial.choices import PAPER_MARGIN
from rdtutorial.cli import _train_overrides, build_parser, main
from rdtutorial.config import PAPER_RDPP, TrainConfig, preset, resumable_fields, runtime_fields, setting
from rdtutorial.errors import ConfigError, InputError
from rdtutorial.losses import PAPER_WEIGHTS
from rdtutorial.runs import RunFolderError, previous_results, write_summary

RESULTS = {"brick": {"image_auroc": 0.9, "pixel_auroc": 0.8, "aupro": 0.7}}


@pytest.fixture
def extended(monkeypatch):
    """TrainConfig with two new fields, ``tiles`` (a setting) and ``fast`` (how a process runs it), put in place
    of the real one, as if someone had added them to the class."""
    cls = dataclasses.make_dataclass("TrainConfig", [
        ("tiles", int, setting(4, "tiles per image side", check="positive")),
        ("fast", bool, setting(False, "a faster kernel", resumable=True, runtime=True)),
    ], bases=(TrainConfig,))
    monkeypatch.setattr(config, "TrainConfig", cls)
    return cls


def test_a_new_field_is_a_command_line_option_with_its_help_and_check(extended, capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--tiles TILES tiles per image side (default: 4)" in text and "--fast, --no-fast" in text
    args = build_parser().parse_args(["train", "--data-root", "x", "--tiles", "3", "--fast"])
    assert _train_overrides(args)["tiles"] == 3 and _train_overrides(args)["fast"] is True
    assert "tiles" not in _train_overrides(build_parser().parse_args(["train"]))  # left to the profile
    assert main(["train", "--tiles", "0"]) == 2
    assert "argument --tiles: must be a positive integer" in capsys.readouterr().err


def test_a_new_field_is_validated_and_set_by_the_profiles(extended):
    assert isinstance(preset("demo", tiles=2), extended) and preset("paper").tiles == 4
    with pytest.raises(ConfigError, match=r"TrainConfig.tiles = 0: must be a positive integer"):
        preset("demo", tiles=0)


def test_a_new_field_is_in_the_summary_and_the_checkpoint_check(extended, tmp_path):
    cfg = preset("demo", tiles=3, out_dir=str(tmp_path / "brick"))
    write_summary(tmp_path, "train", RESULTS, cfg)
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["tiles"] == 3
    assert previous_results(tmp_path, "train", config.shared_settings(cfg.replace(fast=True))) == RESULTS
    with pytest.raises(RunFolderError, match="tiles 3 -> 5"):
        previous_results(tmp_path, "train", config.shared_settings(cfg.replace(tiles=5)))
    state = {"config": cfg.to_dict(), "epoch": 1}
    check_resumable(state, cfg.replace(fast=True, epochs=20).to_dict(), "ckpt.pt")  # resumable: may change
    with pytest.raises(CheckpointError, match="tiles 3 -> 5"):
        check_resumable(state, cfg.replace(tiles=5).to_dict(), "ckpt.pt")
    assert runtime_fields()["fast"] is False and "tiles" not in runtime_fields()


def test_every_field_says_what_it_does_and_the_roles_are_the_published_ones():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help text (setting(default, help))"
    assert resumable_fields() == {"device", "progress", "resume", "out_dir", "data_root", "num_workers",
                                  "checkpoint_every", "eval_every", "eval_batch_size", "epochs", "diagnostics",
                                  "calibration_fpr"}
    assert runtime_fields() == {"device": "cpu", "amp": False, "channels_last": False, "resume": False}
    assert set(config.shared_settings(TrainConfig())) == {f.name for f in dataclasses.fields(TrainConfig)} - {
        "category", "out_dir", "resume", "progress"}


def test_the_papers_loss_weights_are_one_set_of_numbers():
    cfg = TrainConfig()
    assert (cfg.w_ssot, cfg.w_recon, cfg.w_con) == (PAPER_WEIGHTS.ssot, PAPER_WEIGHTS.recon, PAPER_WEIGHTS.con)
    assert PAPER_WEIGHTS.ssot == 0.2 / 1.11 and cfg.margin == PAPER_MARGIN
    assert {k: getattr(preset("paper"), k) for k in PAPER_RDPP} == PAPER_RDPP
    assert preset("demo") == TrainConfig(projection="residual")  # the demo profile: the defaults, residual P_k


def test_every_setting_is_a_train_option():
    args = build_parser().parse_args(["train", "--projection", "residual", "--betas", "0.9", "0.99",
                                      "--no-noise-correlated", "--max-images", "8", "--eval-batch-size", "4",
                                      "--teacher-weights", "w.pth", "--noise-scale", "0.1", "--compile"])
    assert _train_overrides(args) == {"projection": "residual", "betas": (0.9, 0.99), "noise_correlated": False,
                                      "max_images": 8, "eval_batch_size": 4, "teacher_weights": "w.pth",
                                      "noise_scale": 0.1, "compile": True, "progress": True}


def test_config_errors_are_input_errors_and_value_errors():
    with pytest.raises(ConfigError) as err:
        TrainConfig(method="gan")
    assert isinstance(err.value, InputError) and isinstance(err.value, ValueError)


def test_importing_the_configuration_loads_no_model_code():
    code = ("import sys, rdtutorial.config; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'geomloss') "
            "or m in ('rdtutorial.models', 'rdtutorial.losses')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
