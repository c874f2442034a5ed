"""Data sets without pixel masks: image metrics only, pixel AUROC and AUPRO "not available" everywhere.

An MVTec-layout folder without ``ground_truth/`` (the tiny demo set with it
removed) and ELPV: no ``"mask"`` in the items, None for the pixel metrics in
evaluation, summaries and histories, ``n/a`` in the tables; a folder where
some defect images have masks and others do not is still an error.
"""

import json
import shutil
import warnings

import matplotlib
import pytest

matplotlib.use("Agg")

from rdtutorial.ablation import collapsed, paired, power, summarise, table  # noqa: E402
from rdtutorial.categories import resolve_categories  # noqa: E402
from rdtutorial.cli import main  # noqa: E402
from rdtutorial.data import CachedImages, DatasetError, MVTecAD, show_samples  # noqa: E402
from rdtutorial.evaluate import check_test_set, evaluate  # noqa: E402
from rdtutorial.history import History  # noqa: E402
from rdtutorial.metrics import mean_metrics  # noqa: E402
from rdtutorial.report import NOT_AVAILABLE_NOTE, anomaly_map_figure, metrics_line, metrics_table  # noqa: E402
from rdtutorial.train import build_model  # noqa: E402

NO_MASKS = "no masks: image metrics only"
TINY = ["--image-size", "64", "--epochs", "1", "--batch-size", "4", "--calibration-fraction", "0", "--no-progress"]


@pytest.fixture
def maskless(tiny_root, tmp_path):
    """The tiny demo set with its ground_truth/ folder removed."""
    root = tmp_path / "maskless"
    shutil.copytree(tiny_root, root)
    shutil.rmtree(root / "brick" / "ground_truth")
    return root


def _no_masks_warnings(record) -> list:
    return [w for w in record if NO_MASKS in str(w.message)]


def test_a_folder_without_ground_truth_has_no_masks_and_says_so_once(maskless):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        train_set = MVTecAD(maskless, "brick", split="train", image_size=64)
        test_set = MVTecAD(maskless, "brick", split="test", image_size=64)
    assert [str(w.message) for w in _no_masks_warnings(record)] == [
        f"{maskless / 'brick'} has no ground_truth/ folder, so no masks: image metrics only (pixel AUROC and AUPRO "
        "not available)"]  # the test split says it; the train split, all normal, has nothing to say
    assert not train_set.has_masks and not test_set.has_masks
    assert set(test_set.labels) == {0, 1} and test_set.defects == ["good", "scratch", "smudge", "stain"]
    for item in (train_set[0], *test_set):
        assert "mask" not in item and item["image"].shape == (3, 64, 64)
    check_test_set(test_set)  # scorable: image metrics need labels only
    cache = CachedImages(test_set)
    assert not cache.has_masks and cache.masks is None and "mask" not in cache[0]
    assert cache.labels == test_set.labels


def test_some_masks_missing_is_still_an_error_naming_the_image(tiny_root, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(tiny_root, root)
    mask = sorted((root / "brick" / "ground_truth" / "scratch").iterdir())[0]
    mask.unlink()
    image = root / "brick" / "test" / "scratch" / mask.name.replace("_mask", "")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(DatasetError, match=f"defect image {image} has no mask: expected "
                                               f"{mask.with_suffix('')}.png"):
            MVTecAD(root, "brick", split="test")
    assert _no_masks_warnings(record) == []


def test_masks_for_some_items_only_are_named(tiny_root):
    items = list(MVTecAD(tiny_root, "brick", split="test", image_size=64))
    del items[3]["mask"]
    with pytest.raises(DatasetError, match=f"item 3 of the test set \\({items[3]['path']}\\) has no mask but the "
                                           "first item has one"):
        check_test_set(items)
    with pytest.raises(DatasetError, match="item 3 of the dataset .* has no mask"):
        CachedImages(items)
    items = [{k: v for k, v in item.items() if k != "mask"} for item in items[:3]] + items[4:]
    with pytest.raises(DatasetError, match="item 3 of the test set .* has a mask but the first item has none"):
        check_test_set(items)


def test_evaluation_without_masks_reports_image_metrics_only(maskless, tiny_config):
    with pytest.warns(UserWarning, match=NO_MASKS):
        test_set = MVTecAD(maskless, "brick", split="test", image_size=64)
    model = build_model(tiny_config(method="rd"))
    result = evaluate(model, CachedImages(test_set), batch_size=8, progress=False)
    assert result.masks is None and result.maps.shape == (len(test_set), 64, 64)
    assert result.metrics["pixel_auroc"] is None and result.metrics["aupro"] is None
    assert 0.0 <= result.metrics["image_auroc"] <= 1.0
    with_masks = evaluate(model, MVTecAD(tiny_config().data_root, "brick", split="test", image_size=64),
                          batch_size=8, progress=False)
    assert with_masks.metrics["image_auroc"] == pytest.approx(result.metrics["image_auroc"], abs=0.02)
    assert isinstance(with_masks.metrics["pixel_auroc"], float)
    fig = anomaly_map_figure(model, test_set)
    assert len(fig.axes) == 2 * 4  # image and map overlay, no ground-truth column: a normal row and 3 defect types
    assert "ground truth" not in {ax.get_title() for ax in fig.axes}
    assert len(show_samples(test_set, n=4).axes) == 4


def test_pixel_metrics_not_available_show_as_n_a_and_have_no_mean():
    rows = {"a": {"image_auroc": 0.9, "pixel_auroc": None, "aupro": None},
            "b": {"image_auroc": 0.7, "pixel_auroc": 0.8, "aupro": 0.6}}
    assert mean_metrics(rows) == {"image_auroc": pytest.approx(0.8), "pixel_auroc": None, "aupro": None}
    assert mean_metrics({"b": rows["b"]}) == rows["b"]
    text = metrics_table(rows)
    assert text.splitlines()[2].split() == ["a", "90.00", "n/a", "n/a"]
    assert text.splitlines()[4].split() == ["mean", "80.00", "n/a", "n/a"]
    assert text.splitlines()[-1] == NOT_AVAILABLE_NOTE
    assert NOT_AVAILABLE_NOTE not in metrics_table({"b": rows["b"]})
    assert metrics_line(rows["a"]) == "image AUROC 0.9000, pixel AUROC n/a, AUPRO n/a"


def test_history_plot_leaves_out_metrics_that_are_not_available():
    history = History(epochs=[{"epoch": e, "total": 1.0 / e, "kd": 1.0 / e} for e in (1, 2)],
                      evals=[{"epoch": e, "image_auroc": 0.5 + 0.1 * e, "pixel_auroc": None, "aupro": None}
                             for e in (1, 2)])
    fig = history.plot()
    metrics_axis = next(ax for ax in fig.axes if ax.get_title() == "test metrics")
    assert [line.get_label() for line in metrics_axis.get_lines()] == ["image_auroc"]
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history  # None survives JSON


def test_ablation_statistics_of_runs_without_masks():
    runs = [{"config": c, "category": "mono", "seed": s, "image_auroc": a, "pixel_auroc": None, "aupro": None,
             "train_seconds": 1.0} for c, s, a in (("rd", 0, 0.8), ("rd", 1, 0.7), ("rdpp", 0, 0.9), ("rdpp", 1, 0.4))]
    assert [collapsed(r) for r in runs] == [False, False, False, True]  # image AUROC below 0.5, without masks
    summary = summarise(runs)
    assert summary[0]["image_auroc_mean"] == pytest.approx(0.75) and summary[0]["pixel_auroc_mean"] is None
    assert summary[1]["collapsed"] == 1
    difference = paired(runs)[0]
    assert difference["image_auroc"] == pytest.approx(-0.1) and difference["aupro"] is None
    assert power(runs)[0]["aupro_mde"] is None and power(runs)[0]["image_auroc_mde"] > 0
    assert "n/a" in table(summary, paired(runs))


def test_elpv_categories_resolve_and_its_options_are_checked(tmp_path, capsys, no_training):
    assert resolve_categories(["all"], "elpv", "ignored", "brick") == ["mono", "poly"]
    assert resolve_categories(["poly", "poly"], "elpv", "ignored", "brick") == ["poly"]
    elpv = ["train", "--dataset", "elpv", "--out-dir", str(tmp_path / "run"), *TINY]
    assert main(elpv) == 2
    assert capsys.readouterr().err.strip() == "error: --dataset elpv: choose --category mono, poly or all"
    assert main([*elpv, "--category", "mono", "--data-root", "data/x"]) == 2
    assert "--data-root data/x: --dataset elpv takes no data root" in capsys.readouterr().err
    assert main([*elpv, "--category", "cells"]) == 2
    assert "ELPV category must be one of ('mono', 'poly'), got 'cells'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_and_evaluates_elpv_with_image_metrics_only(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "elpv", "--category", "mono", "--method", "rd", "--max-images", "16",
                 "--out-dir", str(run), *TINY]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((run / "mono" / "metrics.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert metrics["pixel_auroc"] is None and metrics["aupro"] is None and 0 <= metrics["image_auroc"] <= 1
    assert summary["categories"]["mono"]["pixel_auroc"] is None and summary["config"]["dataset"] == "elpv"
    assert f"mono: image AUROC {metrics['image_auroc']:.4f}, pixel AUROC n/a, AUPRO n/a" in printed
    assert f"{100 * metrics['image_auroc']:.2f}" in printed and NOT_AVAILABLE_NOTE in printed
    for name in ("checkpoint.pt", "anomaly_maps.png", "history.png"):
        assert (run / "mono" / name).is_file(), name

    assert main(["evaluate", str(run), "--device", "cpu", "--no-progress"]) == 0  # the whole test split: 385 cells
    evaluated = json.loads((run / "evaluation" / "mono" / "metrics.json").read_text())
    assert evaluated["pixel_auroc"] is None and 0 <= evaluated["image_auroc"] <= 1
    assert "n/a" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data-root", str(tmp_path), "--no-progress"]) == 2
    assert "--dataset elpv takes no data root" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_a_folder_without_ground_truth_and_says_so_once(maskless, tmp_path, capsys):
    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(["train", "--data-root", str(maskless), "--category", "brick", "--out-dir", str(run), *TINY]) == 0
    assert len(_no_masks_warnings(record)) == 1
    printed = capsys.readouterr().out
    assert "pixel AUROC n/a, AUPRO n/a" in printed and NOT_AVAILABLE_NOTE in printed
    assert json.loads((run / "brick" / "metrics.json").read_text())["aupro"] is None
    history = json.loads((run / "brick" / "history.json").read_text())
    assert history["evals"][-1]["pixel_auroc"] is None
    assert (run / "brick" / "anomaly_maps.png").is_file() and (run / "brick" / "history.png").is_file()
