"""The calibration split of the training normals and the run's calibration.json."""

import csv
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from rdtutorial.calibration import (CALIBRATION_NAME, CalibrationError, calibration_split, held_out_count,
                                    load_calibration, save_calibration)
from rdtutorial.checkpoint import check_resumable
from rdtutorial.cli import _train_overrides, build_parser, main
from rdtutorial.config import legacy_values, preset
from rdtutorial.data import MVTecAD, make_demo_dataset
from rdtutorial.errors import CheckpointError, ConfigError
from rdtutorial.evaluate import predict_maps
from rdtutorial.predict import Predictions, decision_for, write_scores
from rdtutorial.profiles import quick_config
from rdtutorial.threshold import Calibration, calibrate, false_alarm_interval, min_normal_count
from rdtutorial.train import build_datasets, load_trained


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
    calibration = _saved_calibration(tmp_path)
    loaded, record = load_calibration(tmp_path)
    assert loaded == calibration and loaded.threshold == 0.4
    assert record["false_alarm_interval"] == {"confidence": 0.95, "low": false_alarm_interval(4, 0.25)[0],
                                              "high": false_alarm_interval(4, 0.25)[1]}
    assert [i["path"] for i in record["images"]] == ["a.png", "b.png", "c.png", "d.png"]
    assert load_calibration(tmp_path / "elsewhere") is None
    (tmp_path / CALIBRATION_NAME).write_text('{"method": "fpr"}')
    with pytest.raises(CalibrationError, match=f"{tmp_path / CALIBRATION_NAME} is not a calibration"):
        load_calibration(tmp_path)


def _saved_calibration(folder) -> Calibration:
    calibration = calibrate([0.1, 0.4, 0.2, 0.3], maps=torch.rand(4, 8, 8), target=0.25)
    save_calibration(folder, calibration, ["a.png", "b.png", "c.png", "d.png"], [0.1, 0.4, 0.2, 0.3])
    return calibration


def test_predict_applies_the_runs_calibration_unless_given_a_threshold_and_says_which(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    none = decision_for(checkpoint)
    assert none.threshold is None and none.normalization is None
    assert "no threshold" in none.source and "--calibration-fraction" in none.source and "--threshold" in none.source
    calibration = _saved_calibration(tmp_path)
    own = decision_for(checkpoint)
    assert (own.threshold, own.normalization) == (0.4, calibration.image)
    assert all(text in own.source for text in (str(tmp_path / CALIBRATION_NAME), "false-alarm rate 0.25",
                                                "4 held-out normal images", "95%"))
    given = decision_for(checkpoint, 0.3)
    assert given.threshold == 0.3 and given.normalization is None
    assert given.source == f"--threshold 0.3 (given, instead of {tmp_path / CALIBRATION_NAME}'s 0.4)"

    found = Predictions([Path("x.png"), Path("y.png"), Path("z.png")], [0.3, 0.4, 0.5], ["x", "y", "z"], 0, 1,
                        tmp_path, own)
    assert found.anomalous == [0, 1, 1]  # at or above the threshold
    write_scores(tmp_path / "scores.csv", found)
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["score_normalized"]) for r in rows] == pytest.approx([calibration.image(s) for s in found.scores],
                                                                       abs=1e-6)  # 6 decimals
    assert float(rows[1]["score_normalized"]) == pytest.approx(0.5)
    assert [r["anomalous"] for r in rows] == ["0", "1", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two one-epoch runs on a fresh tiny set: 4 of the 8 normals held out (rate 0.25) and none held out."""
    root = tmp_path_factory.mktemp("data")
    make_demo_dataset(root, image_size=64, n_train=8, n_test_good=4, n_test_defect=2, categories=("brick",))
    out = tmp_path_factory.mktemp("runs")
    common = ["train", "--data-root", str(root), "--category", "brick", "--image-size", "64", "--batch-size", "4",
              "--epochs", "1", "--noise-size", "4", "12", "--no-progress"]
    assert main([*common, "--calibration-fraction", "0.5", "--calibration-fpr", "0.25", "--out-dir",
                 str(out / "held")]) == 0
    assert main([*common, "--calibration-fraction", "0", "--out-dir", str(out / "all")]) == 0
    return root, out / "held" / "brick", out / "all" / "brick"


@pytest.mark.slow
def test_train_writes_the_calibration_of_the_held_out_normals_and_resume_keeps_it(runs, capsys):
    root, held, all_normals = runs
    record = json.loads((held / CALIBRATION_NAME).read_text())
    calibration = Calibration.from_dict(record)
    assert (calibration.method, calibration.target) == ("fpr", 0.25)
    assert (calibration.n_normal, calibration.n_defective) == (4, 0)
    scores = [i["score"] for i in record["images"]]
    assert calibration.threshold == max(scores)  # rank ceil(5 * 0.75) = 4 of 4
    assert calibration.image(calibration.threshold) == 0.5 and calibration.pixel_threshold > 0
    low, high = false_alarm_interval(4, 0.25)
    assert (record["false_alarm_interval"]["low"], record["false_alarm_interval"]["high"]) == (low, high)
    model, cfg = load_trained(held / "checkpoint.pt")
    training, held_out = calibration_split(cfg, build_datasets(cfg)[0])
    assert [i["path"] for i in record["images"]] == _paths(held_out)
    assert set(_paths(held_out)).isdisjoint(_paths(training))
    images = torch.stack([held_out[i]["image"] for i in range(len(held_out))])
    again = predict_maps(model, images).flatten(1).amax(1)
    torch.testing.assert_close(again, torch.tensor(scores), atol=1e-5, rtol=1e-5)  # the trained model's scores
    assert main(["train", "--data-root", str(root), "--category", "brick", "--image-size", "64", "--batch-size", "4",
                 "--epochs", "1", "--noise-size", "4", "12", "--no-progress", "--calibration-fraction", "0.5",
                 "--calibration-fpr", "0.25", "--out-dir", str(held.parent), "--resume"]) == 0  # finished: re-read
    assert json.loads((held / CALIBRATION_NAME).read_text()) == record
    assert not (all_normals / CALIBRATION_NAME).exists()


@pytest.mark.slow
def test_predict_on_a_calibrated_run_writes_decisions_without_threshold(runs, tmp_path, capsys):
    root, held, all_normals = runs
    images = root / "brick" / "test" / "good"
    capsys.readouterr()
    assert main(["predict", str(held), str(images), "--out-dir", str(tmp_path / "p"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    calibration = load_calibration(held)[0]
    assert f"from {held / CALIBRATION_NAME}: target false-alarm rate 0.25 on 4 held-out normal images" in out
    with open(tmp_path / "p" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["anomalous"]) for r in rows] == [int(float(r["score"]) >= calibration.threshold) for r in rows]
    assert all((float(r["score_normalized"]) >= 0.5) == (r["anomalous"] == "1") for r in rows)
    assert main(["predict", str(held), str(images), "--out-dir", str(tmp_path / "p"), "--overwrite",
                 "--threshold", "0", "--no-progress"]) == 0
    assert f"--threshold 0 (given, instead of {held / CALIBRATION_NAME}'s" in capsys.readouterr().out
    with open(tmp_path / "p" / "scores.csv") as f:
        assert {r["anomalous"] for r in csv.DictReader(f)} == {"1"}
    assert main(["predict", str(all_normals), str(images), "--out-dir", str(tmp_path / "q"), "--no-progress"]) == 0
    assert f"threshold: no threshold: {all_normals} has no {CALIBRATION_NAME}" in capsys.readouterr().out
    with open(tmp_path / "q" / "scores.csv") as f:
        assert list(csv.DictReader(f))[0].keys() == {"path", "score", "overlay"}
