"""The calibration split of the training normals and the run's calibration.json."""

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from rdtutorial.calibration import (CALIBRATION_NAME, CalibrationError, calibration_split, held_out_count,
                                    load_calibration, save_calibration)
from rdtutorial.checkpoint import check_resumable
from rdtutorial.cli import _train_overrides, build_parser
from rdtutorial.config import legacy_values, preset
from rdtutorial.data import MVTecAD
from rdtutorial.errors import CheckpointError, ConfigError
from rdtutorial.evaluate import predict_maps
from rdtutorial.profiles import quick_config
from rdtutorial.threshold import Calibration, calibrate, false_alarm_interval, min_normal_count
from rdtutorial.train import build_datasets, load_trained, train


@pytest.fixture
def train_set(tiny_root):
    return MVTecAD(tiny_root, "brick", "train", image_size=64)


def _paths(dataset) -> list[str]:
    return [str(s.image) for s in dataset.samples]


def test_fraction_zero_trains_on_the_very_train_set(tiny_config, train_set):
    training, held_out = calibration_split(tiny_config(calibration_fraction=0), train_set)
    assert training is train_set and held_out is None


def test_held_out_files_are_disjoint_from_the_training_files_and_fixed_by_the_seed(tiny_config, train_set):
    cfg = tiny_config(calibration_fraction=0.5, calibration_fpr=0.25)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    training, held_out = calibration_split(cfg, train_set)
    assert torch.equal(torch.get_rng_state(), before)  # torch's stream is untouched
    assert len(held_out) == 4 and len(training) == 4
    assert set(_paths(training)).isdisjoint(_paths(held_out))
    assert sorted(_paths(training) + _paths(held_out)) == sorted(_paths(train_set))
    assert _paths(held_out) == sorted(_paths(held_out))  # path order
    assert _paths(training) == [p for p in _paths(train_set) if p in _paths(training)]  # the set's own order
    torch.manual_seed(2)  # another global stream: the same split
    again = calibration_split(cfg, train_set)
    assert (_paths(again[0]), _paths(again[1])) == (_paths(training), _paths(held_out))
    others = {tuple(_paths(calibration_split(cfg.replace(seed=s), train_set)[1])) for s in range(6)}
    assert len(others) > 1  # the seed chooses them


def test_the_split_does_not_depend_on_the_order_the_files_were_listed_in(tiny_config, train_set):
    cfg = tiny_config(calibration_fraction=0.5, calibration_fpr=0.25)
    shuffled = train_set.subset(len(train_set))
    shuffled.samples = shuffled.samples[::-1]
    assert _paths(calibration_split(cfg, shuffled)[1]) == _paths(calibration_split(cfg, train_set)[1])


def test_too_few_held_out_images_are_refused_naming_the_numbers(tiny_config, train_set):
    with pytest.raises(ConfigError, match=r"holds out 2 of the 8 training images, but a false-alarm rate of 0.1 "
                                          r"needs at least 9: raise --calibration-fraction"):
        calibration_split(tiny_config(calibration_fraction=0.2), train_set)
    with pytest.raises(ConfigError, match="TensorDataset.*does not list its files"):
        calibration_split(tiny_config(calibration_fraction=0.5), TensorDataset(torch.zeros(8, 3)))


def test_the_defaults_hold_out_enough_of_the_demo_sets_60_normals():
    cfg = preset("demo")
    n = held_out_count(60, cfg.calibration_fraction)
    assert n == 12 and n >= min_normal_count(cfg.calibration_fpr) == 9
    assert held_out_count(60, 0.1) < min_normal_count(cfg.calibration_fpr)  # why the default is not 0.1
    quick = quick_config(cfg)
    assert held_out_count(8, quick.calibration_fraction) >= min_normal_count(quick.calibration_fpr)
    assert quick_config(cfg.replace(calibration_fraction=0)).calibration_fraction == 0


def test_bad_values_and_the_train_options(tmp_path):
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="calibration_fraction"):
            preset("demo", calibration_fraction=bad)
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match="calibration_fpr"):
            preset("demo", calibration_fpr=bad)
    args = build_parser().parse_args(["train", "--calibration-fraction", "0.3", "--calibration-fpr", "0.05"])
    assert _train_overrides(args) == {"calibration_fraction": 0.3, "calibration_fpr": 0.05, "progress": True}


def test_a_checkpoint_from_before_the_split_resumes_only_without_it():
    old = preset("demo").to_dict()
    del old["calibration_fraction"], old["calibration_fpr"]
    state = {"config": old, "epoch": 1}
    assert legacy_values() == {"calibration_fraction": 0.0}
    check_resumable(state, preset("demo", calibration_fraction=0).to_dict(), "ckpt.pt")
    with pytest.raises(CheckpointError, match="calibration_fraction 0.0 -> 0.2"):
        check_resumable(state, preset("demo").to_dict(), "ckpt.pt")


def test_calibration_json_round_trips_and_a_damaged_one_is_named(tmp_path):
    calibration = calibrate([0.1, 0.4, 0.2, 0.3], maps=torch.rand(4, 8, 8), target=0.25)
    save_calibration(tmp_path, calibration, ["a.png", "b.png", "c.png", "d.png"], [0.1, 0.4, 0.2, 0.3])
    loaded, record = load_calibration(tmp_path)
    assert loaded == calibration and loaded.threshold == 0.4
    assert record["false_alarm_interval"] == {"confidence": 0.95, "low": false_alarm_interval(4, 0.25)[0],
                                              "high": false_alarm_interval(4, 0.25)[1]}
    assert [i["path"] for i in record["images"]] == ["a.png", "b.png", "c.png", "d.png"]
    assert load_calibration(tmp_path / "elsewhere") is None
    (tmp_path / CALIBRATION_NAME).write_text('{"method": "fpr"}')
    with pytest.raises(CalibrationError, match=f"{tmp_path / CALIBRATION_NAME} is not a calibration"):
        load_calibration(tmp_path)


@pytest.mark.slow
def test_train_writes_the_calibration_of_the_held_out_normals_and_resume_keeps_it(tiny_config, tmp_path):
    cfg = tiny_config(calibration_fraction=0.5, calibration_fpr=0.25, epochs=1, out_dir=str(tmp_path / "run"))
    train(cfg)
    record = json.loads((tmp_path / "run" / CALIBRATION_NAME).read_text())
    calibration = Calibration.from_dict(record)
    assert (calibration.method, calibration.target, calibration.n_normal, calibration.n_defective) == ("fpr", 0.25, 4, 0)
    scores = [i["score"] for i in record["images"]]
    assert calibration.threshold == max(scores)  # rank ceil(5 * 0.75) = 4 of 4
    assert calibration.image(calibration.threshold) == 0.5 and calibration.pixel_threshold > 0
    low, high = false_alarm_interval(4, 0.25)
    assert (record["false_alarm_interval"]["low"], record["false_alarm_interval"]["high"]) == (low, high)
    training, held_out = calibration_split(cfg, build_datasets(cfg)[0])
    assert [i["path"] for i in record["images"]] == _paths(held_out)
    assert set(_paths(held_out)).isdisjoint(_paths(training))
    model, _ = load_trained(tmp_path / "run" / "checkpoint.pt")
    images = torch.stack([held_out[i]["image"] for i in range(len(held_out))])
    again = predict_maps(model, images).flatten(1).amax(1)
    torch.testing.assert_close(again, torch.tensor(scores), atol=1e-5, rtol=1e-5)  # the trained model's scores
    train(cfg.replace(resume=True))  # finished: re-read, and the same calibration written again
    assert json.loads((tmp_path / "run" / CALIBRATION_NAME).read_text()) == record
    train(cfg.replace(calibration_fraction=0, out_dir=str(tmp_path / "all")))
    assert not (tmp_path / "all" / CALIBRATION_NAME).exists()
