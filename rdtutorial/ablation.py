"""The ablation of RD++: its configurations and the statistics of a paired comparison against RD.

``CONFIGS`` names the overrides of the ``demo`` profile that each compared
configuration applies (``rd``: no projections, L_KD; ``kd``: the paper's
projections, L_KD only; ``rdpp-paper``: the paper's projections, weights and
margin; ``rdpp``: the ``demo`` profile's RD++; the single changes used to
choose it; and the paper's RD++ with one term removed, ``-ssot``, ``-recon``,
``-con``, or with L_SSOT as published, ``+published-ssot``). A run is a dict
with ``config``, ``category``, ``seed`` and the three metrics of its last epoch; the same (category, seed) of two
configurations is one paired sample. A run without masks (image labels only) has pixel AUROC and AUPRO
None: its statistics of those are None too. :func:`power` gives the smallest
paired difference the benchmark could detect, set beside the paper's claimed
gains over RD (:data:`PAPER_GAINS`). Used by ``benchmarks/ablation.py``,
``benchmarks/elpv.py`` and chapter 9.
"""

from __future__ import annotations

import statistics

import numpy as np
from scipy.stats import bootstrap

from .config import PAPER_RDPP
from .metrics import METRICS
from .paired import minimum_detectable_difference, paired_standard_error

CONFIGS = {
    "rd": dict(method="rd"),
    "kd": dict(method="rdpp", projection="paper", w_ssot=0.0, w_recon=0.0, w_con=0.0),
    "rdpp-paper": dict(method="rdpp", **PAPER_RDPP),
    "rdpp": dict(method="rdpp"),
    "rdpp-paper+residual": dict(method="rdpp", **{**PAPER_RDPP, "projection": "residual"}),
    "kd+residual": dict(method="rdpp", projection="residual", w_ssot=0.0, w_recon=0.0, w_con=0.0),
    "rdpp-paper+residual+recon1": dict(method="rdpp", **{**PAPER_RDPP, "projection": "residual", "w_recon": 1.0}),
    "rdpp-paper+residual+recon10": dict(method="rdpp", **{**PAPER_RDPP, "projection": "residual", "w_recon": 10.0}),
    # one term of the paper's RD++ removed (or L_SSOT as published), paired against rdpp-paper
    "rdpp-paper-ssot": dict(method="rdpp", **{**PAPER_RDPP, "w_ssot": 0.0}),
    "rdpp-paper-recon": dict(method="rdpp", **{**PAPER_RDPP, "w_recon": 0.0}),
    "rdpp-paper-con": dict(method="rdpp", **{**PAPER_RDPP, "w_con": 0.0}),
    "rdpp-paper+published-ssot": dict(method="rdpp", **{**PAPER_RDPP, "ssot_mode": "published"}),
}
BOOTSTRAP_RESAMPLES = 10_000
COLLAPSED_BELOW = 0.5  # pixel AUROC under chance: maps higher on normal pixels than on defects
# RD++'s gains over RD claimed on MVTec AD, rounded: the papers' means over the 15 categories, RD4AD 98.5 /
# 97.8 / 93.9 and RD++ 99.44 / 98.25 / 94.99 (image AUROC / pixel AUROC / AUPRO, %).
PAPER_GAINS = {"image_auroc": 0.009, "pixel_auroc": 0.005, "aupro": 0.011}


def collapsed(run: dict) -> bool:
    """Whether a run ended with inverted maps: pixel AUROC below 0.5 (image AUROC where there are no masks)."""
    return (run["image_auroc"] if run["pixel_auroc"] is None else run["pixel_auroc"]) < COLLAPSED_BELOW


def interval(values: list[float]) -> tuple[float, float]:
    """Bootstrap 95% percentile interval of the mean (seeded: the same numbers give the same interval)."""
    if len(values) < 2 or max(values) == min(values):
        return (statistics.fmean(values),) * 2
    res = bootstrap((np.asarray(values),), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=0.95,
                    method="percentile", rng=np.random.default_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise(runs: list[dict]) -> list[dict]:
    """Per configuration: mean and std of each metric, collapsed runs, wall time."""
    rows = []
    for name in CONFIGS:
        mine = [r for r in runs if r["config"] == name]
        if not mine:
            continue
        row = {"config": name, "runs": len(mine), "collapsed": sum(map(collapsed, mine))}
        for m in METRICS + ("train_seconds",):
            values = [r[m] for r in mine]
            if None in values:  # not available (no masks)
                row[f"{m}_mean"] = row[f"{m}_std"] = None
                continue
            row[f"{m}_mean"] = statistics.fmean(values)
            row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def differences(runs: list[dict], baseline: str = "rd") -> dict[tuple[str, str], list[tuple[dict, dict]]]:
    """``{(config, category): [(run, baseline run), ...]}`` of the same (category, seed), each configuration's
    categories followed by ``"all"`` (all its pairs) when it has several."""
    base = {(r["category"], r["seed"]): r for r in runs if r["config"] == baseline}
    groups = {}
    for name in CONFIGS:
        if name == baseline:
            continue
        pairs = [(r, base[r["category"], r["seed"]]) for r in runs
                 if r["config"] == name and (r["category"], r["seed"]) in base]
        categories = sorted({r["category"] for r, _ in pairs})
        for category in categories + (["all"] if len(categories) > 1 else []):
            groups[name, category] = [(r, b) for r, b in pairs if category in ("all", r["category"])]
    return groups


def _diffs(pairs: list[tuple[dict, dict]], metric: str) -> list[float] | None:
    """``run - baseline`` of ``metric`` per pair; None when a run lacks it (no masks)."""
    if any(r[metric] is None or b[metric] is None for r, b in pairs):
        return None
    return [r[metric] - b[metric] for r, b in pairs]


def paired(runs: list[dict], baseline: str = "rd") -> list[dict]:
    """For each configuration and category (and ``"all"``): mean of ``config - baseline`` and its interval."""
    rows = []
    for (name, category), pairs in differences(runs, baseline).items():
        row = {"config": name, "category": category, "pairs": len(pairs)}
        for m in METRICS:
            diffs = _diffs(pairs, m)
            row[m] = None if diffs is None else statistics.fmean(diffs)
            row[f"{m}_ci"] = None if diffs is None else interval(diffs)
        rows.append(row)
    return rows


def power(runs: list[dict], baseline: str = "rd") -> list[dict]:
    """For each configuration and category (and ``"all"``) paired against ``baseline``: per metric the
    standard error of the mean paired difference over its (category, seed) pairs (``<metric>_se``) and the
    smallest difference detectable at 80% power, two-sided 5% level (``<metric>_mde``: 2.80 SE), beside
    :data:`PAPER_GAINS`."""
    rows = []
    for (name, category), pairs in differences(runs, baseline).items():
        row = {"config": name, "category": category, "pairs": len(pairs)}
        for m in METRICS:
            diffs = _diffs(pairs, m)
            se = None if diffs is None or len(diffs) < 2 else paired_standard_error(diffs)
            row[f"{m}_se"] = se
            row[f"{m}_mde"] = None if se is None else minimum_detectable_difference(se)
            row[f"{m}_paper_gain"] = PAPER_GAINS[m]
        rows.append(row)
    return rows


def table(rows: list[dict], differences: list[dict]) -> str:
    """Both summaries as plain text (``n/a`` for a metric that is not available)."""
    head = f"{'configuration':<22} {'runs':>4} {'collapsed':>9} " + " ".join(f"{m:>15}" for m in METRICS)
    lines = [head + f" {'train s':>8}", "-" * (len(head) + 9)]
    for r in rows:
        cells = " ".join(("n/a" if r[f"{m}_mean"] is None else f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f}")
                         .rjust(15) for m in METRICS)
        lines.append(f"{r['config']:<22} {r['runs']:>4} {r['collapsed']:>9} {cells} {r['train_seconds_mean']:>8.1f}")
    lines += ["", "paired difference against rd: mean [bootstrap 95% interval]"]
    lines.append(f"{'configuration':<22} {'category':<8} {'pairs':>5} " + " ".join(f"{m:>24}" for m in METRICS))
    for d in differences:
        cells = " ".join(("n/a" if d[m] is None else f"{d[m]:+.3f} [{d[m + '_ci'][0]:+.3f}, {d[m + '_ci'][1]:+.3f}]")
                         .rjust(24) for m in METRICS)
        lines.append(f"{d['config']:<22} {d['category']:<8} {d['pairs']:>5} {cells}")
    return "\n".join(lines)
