"""benchmarks/elpv.py: the epoch rule, the summaries and the power statements on made-up runs; one tiny real run."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import elpv  # noqa: E402  (the benchmark script)


def curve_run(config, seed, values, kind="mono"):
    return {"config": config, "type": kind, "seed": seed,
            "curve": [{"epoch": 5 * (i + 1), "image_auroc": v} for i, v in enumerate(values)]}


def test_the_epoch_rule_takes_the_first_evaluation_after_which_rd_gains_little():
    runs = [curve_run("rd", 0, [0.80, 0.86, 0.890, 0.893, 0.90]), curve_run("rd", 1, [0.82, 0.88, 0.900, 0.903, 0.91]),
            curve_run("rdpp", 0, [0.5, 0.5, 0.5, 0.5, 0.99])]  # other configurations do not choose
    choice = elpv.choose_epochs(runs, max_epochs=25)
    assert choice["mean_curve"] == [[5, 0.81], [10, 0.87], [15, 0.895], [20, 0.898], [25, 0.905]]
    assert choice["epochs"] == 15  # 15 -> 20 gains 0.003 < 0.005
    rising = [curve_run("rd", 0, [0.5, 0.6, 0.7])]
    assert elpv.choose_epochs(rising, max_epochs=15)["epochs"] == 15  # never flat: the maximum
    with pytest.raises(ValueError, match="validation runs of rd"):
        elpv.choose_epochs(runs[2:], max_epochs=25)


def scored_run(config, kind, seed, scores, labels):
    return {"config": config, "type": kind, "seed": seed, "scores": list(scores), "labels": list(labels),
            "image_auroc": roc_auc_score(labels, scores), "average_precision": average_precision_score(labels, scores),
            "spearman": 0.5, "collapsed": roc_auc_score(labels, scores) < 0.5, "train_seconds": 10.0}


def test_summary_pairs_each_configuration_with_rd_per_type():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(60), np.ones(40)].astype(int)
    runs = []
    for seed in range(3):
        noise = rng.normal(size=100)
        runs.append(scored_run("rd", "mono", seed, noise + labels, labels))
        runs.append(scored_run("rdpp", "mono", seed, noise + 3 * labels, labels))  # better on every seed
        runs.append(scored_run("rdpp-paper", "mono", seed, -noise - labels, labels))  # inverted: collapsed
    runs.append(scored_run("rdpp", "mono", 7, rng.normal(size=100), labels))  # no rd run of seed 7: unpaired
    reference = {**scored_run(elpv.REFERENCE, "mono", 0, rng.normal(size=100) + 2 * labels, labels), "coreset": 1}
    rows = {(r["config"], r["type"]): r for r in elpv.summarise(runs + [reference])}
    assert list(rows) == [("rd", "mono"), ("rdpp-paper", "mono"), ("rdpp", "mono"), (elpv.REFERENCE, "mono")]
    assert rows["rdpp-paper", "mono"]["collapsed"] == 3 and rows["rd", "mono"]["collapsed"] == 0
    assert rows["rdpp", "mono"]["seeds"] == [0, 1, 2, 7] and rows[elpv.REFERENCE, "mono"]["runs"] == 1
    assert rows["rd", "mono"]["image_auroc"]["mean"] == pytest.approx(
        np.mean([r["image_auroc"] for r in runs if r["config"] == "rd"]))

    paired = {d["config"]: d for d in elpv.compare(runs, resamples=300)}
    assert set(paired) == {"rdpp", "rdpp-paper"} and paired["rdpp"]["seeds"] == [0, 1, 2]
    better, worse = paired["rdpp"]["image_auroc"], paired["rdpp-paper"]["average_precision"]
    assert better["ci"][0] > 0 and better["paper_gain"] == 0.009
    assert better["mde"] == pytest.approx(2.801585 * better["se"])
    assert worse["ci"][1] < 0 and worse["paper_gain"] is None  # the paper claims no AP gain

    text = elpv.table({"configs": list(rows.values()), "paired": list(paired.values()),
                       "demo_power": elpv.demo_power()})
    assert "patch-memory" in text and "the paper's gains of RD++ over RD on MVTec AD: image_auroc +0.009" in text
    assert "chapter 9's demo benchmark" in text


def test_demo_power_reads_chapter_9s_stored_benchmark():
    rows = elpv.demo_power()
    assert {r["config"] for r in rows} >= {"rdpp-paper", "rdpp"} and all(r["category"] == "all" for r in rows)
    for row in rows:
        assert row["pairs"] == 15
        for metric, gain in (("image_auroc", 0.009), ("pixel_auroc", 0.005), ("aupro", 0.011)):
            assert 0 < row[f"{metric}_mde"] == pytest.approx(2.801585 * row[f"{metric}_se"])
            assert row[f"{metric}_paper_gain"] == gain


@pytest.mark.slow
def test_a_tiny_run_and_the_reference_store_what_recomputes_their_metrics():
    job = dict(type="mono", image_size=64, max_images=8, threads=1)
    run = elpv.test_run({**job, "config": "rd", "seed": 0, "epochs": 1, "eval_every": 0})
    reference = elpv.reference_run({**job, "coreset": 1.0})
    for r in (run, reference):
        assert len(r["scores"]) == len(r["labels"]) == 8 and len(r["uncertain_scores"]) == 8
        assert set(r["uncertain_probabilities"]) == {1 / 3, 2 / 3} and set(r["labels"]) == {0, 1}
        assert r["image_auroc"] == pytest.approx(roc_auc_score(r["labels"], r["scores"]), abs=1e-12)
        assert r["average_precision"] == pytest.approx(average_precision_score(r["labels"], r["scores"]), abs=1e-12)
        rho = spearmanr(r["scores"] + r["uncertain_scores"], r["labels"] + r["uncertain_probabilities"]).statistic
        assert r["spearman"] == pytest.approx(rho, abs=1e-12)
        assert r["collapsed"] == (r["image_auroc"] < 0.5)
    assert run["epochs"] == 1 and len(run["history"]) == 1 and run["train_seconds"] > 0
    assert reference["config"] == "patch-memory" and reference["coreset"] == 1.0
