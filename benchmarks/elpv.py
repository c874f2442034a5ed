"""RD, the paper's RD++ and the demo profile's RD++ on real defects: ELPV solar cells, beside a training-free reference.

    python benchmarks/elpv.py --stage validation --max-epochs 30 --eval-every 5 --seeds 0 1 2 \
        --jobs 2 --threads 1 --out benchmarks/results/elpv_validation.json
    python benchmarks/elpv.py --stage test --epochs E --seeds 0 1 2 3 4 --jobs 2 --threads 1 \
        --out benchmarks/results/elpv_test.json

Data: ELPV (Buerhop-Lutz et al. 2018, "A benchmark for visual identification of
defective solar cells in electroluminescence imagery", EU PVSEC; Deitsch et al.
2019, "Automatic classification of defective photovoltaic module cells in
electroluminescence images", Solar Energy 185), 2,624 cells of 300 x 300 grey
pixels from the ``elpv-dataset`` package; data licence CC BY-NC-SA 4.0. The fixed
split of :mod:`rdtutorial.data.elpv`: per module type (``mono``, ``poly``: the
categories), normal cells 60/10/30 % into train / validation / test, defective
ones (p = 1) 1/3 : 2/3 into validation / test, the p = 1/3 and 2/3 cells
"uncertain". Cells of one module can be in train and test (no module ids).

Protocol.

- Settings: the ``demo`` profile (EfficientNet-Lite0 teacher with ImageNet
  weights, batch 8, its learning rates and noise), 128 px, on the CPU;
  configurations ``rd``, ``rdpp-paper`` (the paper's RD++) and ``rdpp`` (the
  demo profile's RD++) of :data:`rdtutorial.ablation.CONFIGS`. A seed fixes the
  initial weights, the batch order and the noise of a run. Every run trains on
  all the train cells (``calibration_fraction=0``): the split's validation
  cells, not a part of the training normals, are the held-out set here.
- Chosen on the validation split, never on test: the epoch budget only.
  ``--stage validation`` trains RD (and any other ``--configs``) for
  ``--max-epochs``, evaluating the image AUROC on the validation cells every
  ``--eval-every`` epochs, and applies the rule: the budget is the first
  evaluated epoch after which RD's validation image AUROC, averaged over
  module types and seeds, gains less than 0.005 by the next evaluation
  (``--max-epochs`` if it never does). It prints the choice.
- ``--stage test`` trains every configuration x type x seed for ``--epochs``
  on the train cells; the last epoch's model scores the test cells (p = 0
  normal, p = 1 defective) and the uncertain ones. A run stores its scores,
  labels and the uncertain cells' scores with their probabilities, so every
  statistic below can be recomputed from the JSON; and image AUROC, average
  precision (defective = positive), the Spearman correlation of the score
  with the labelled defect probability over all test cells including the
  uncertain ones, and its training seconds.
- Paired differences against RD, per type: the two-level paired bootstrap of
  :mod:`rdtutorial.paired` (seeds with replacement, then the test images with
  replacement within each class, one image resample for all seeds and both
  configurations), 10,000 resamples, 95 % percentile interval.
- Power: the smallest paired difference detectable at 80 % power, two-sided
  5 % level, ``(1.959964 + 0.841621) * SE`` with SE the bootstrap standard
  error, beside the paper's claimed gains over RD on MVTec AD; the same for
  chapter 9's demo benchmark (``benchmarks/results/ablation_demo.json``,
  SE over its paired (category, seed) differences).
- Collapse: a run whose test image AUROC is below 0.5 is counted as collapsed
  (and kept in every statistic).
- Reference: :class:`rdtutorial.baselines.PatchMemory` on the same teacher
  (the train cells' patch features, no training; deterministic given its
  coreset seed), scored once per type on the same cells.

``--out`` is rewritten after every run (the runs, and per-configuration means);
the paired intervals are computed once all runs are in. ``--resume`` keeps the
runs ``--out`` holds (of the same settings). ``--max-images`` keeps a few cells
per split, for a quick check of the code path only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ablation import machine
from rdtutorial.ablation import CONFIGS, PAPER_GAINS, power
from rdtutorial.anomaly_map import image_scores
from rdtutorial.baselines import PatchMemory
from rdtutorial.config import TrainConfig, preset
from rdtutorial.data import ELPV
from rdtutorial.evaluate import predict_maps
from rdtutorial.models import build_teacher
from rdtutorial.paired import METRICS as PAIRED_METRICS
from rdtutorial.paired import RESAMPLES, two_level_bootstrap
from rdtutorial.train import build_dataset, train

DEFAULT_CONFIGS = ("rd", "rdpp-paper", "rdpp")
BASELINE = "rd"
GAIN_BELOW = 0.005  # the epoch rule: RD's mean validation image AUROC gains less than this by the next evaluation
COLLAPSED_BELOW = 0.5  # test image AUROC under chance
REFERENCE = "patch-memory"  # the training-free reference detector's name in the runs
METRICS = ("image_auroc", "average_precision", "spearman")
DEMO_RESULTS = Path(__file__).parent / "results" / "ablation_demo.json"


def run_config(job: dict) -> TrainConfig:
    """The demo profile on ELPV with the job's type and size (and configuration, seed, epochs, evaluations)."""
    return preset("demo", dataset="elpv", category=job["type"], image_size=job["image_size"], device="cpu",
                  calibration_fraction=0, progress=False, **{k: job[k] for k in ("seed", "epochs", "eval_every") if k in job},
                  **CONFIGS[job.get("config", BASELINE)])


def cells(cfg: TrainConfig, split: str, max_images: int) -> ELPV:
    """One split of ``cfg.category`` (``max_images`` of it, if set)."""
    dataset = build_dataset(cfg, split)
    return dataset.subset(max_images) if max_images else dataset


def set_threads(job: dict) -> None:
    if job["threads"]:
        torch.set_num_threads(job["threads"])


@torch.no_grad()
def scored(score: Callable[[torch.Tensor], torch.Tensor], test_set: ELPV, uncertain: ELPV) -> dict:
    """A detector's stored scores (6 significant digits) of the test and uncertain cells, and its metrics computed
    from them: image AUROC and AP on the test cells (defective = positive), and the Spearman correlation of the
    score with the labelled defect probability over the test and uncertain cells. ``score`` maps images
    [B,3,H,W] to image scores [B]."""
    test, unsure = ([float(f"{v:.6g}") for b in DataLoader(d, batch_size=32) for v in score(b["image"])]
                    for d in (test_set, uncertain))
    ones = np.ones((1, len(test)))
    metrics = {m: float(f(np.asarray(test), np.asarray(test_set.labels), ones)[0]) for m, f in PAIRED_METRICS.items()}
    rho = spearmanr(test + unsure, test_set.probabilities + uncertain.probabilities).statistic
    return {**metrics, "spearman": float(rho), "collapsed": metrics["image_auroc"] < COLLAPSED_BELOW,
            "scores": test, "labels": test_set.labels, "uncertain_scores": unsure,
            "uncertain_probabilities": uncertain.probabilities}


def validation_run(job: dict) -> dict:
    """Train one (configuration, type, seed), evaluating on the validation cells every ``eval_every`` epochs."""
    set_threads(job)
    cfg = run_config(job)
    _, history = train(cfg, (cells(cfg, "train", job["max_images"]), cells(cfg, "validation", job["max_images"])))
    return {"config": job["config"], "type": job["type"], "seed": job["seed"],
            "curve": [{"epoch": e["epoch"], "image_auroc": round(e["image_auroc"], 4)} for e in history.evals],
            "epoch_seconds": round(statistics.fmean(e["seconds"] for e in history.epochs), 2)}


def test_run(job: dict) -> dict:
    """Train one (configuration, type, seed) on the train cells; score the test and uncertain cells."""
    set_threads(job)
    cfg = run_config(job)
    train_set, test_set, uncertain = (cells(cfg, s, job["max_images"]) for s in ("train", "test", "uncertain"))
    model, history = train(cfg, (train_set, test_set))
    return {"config": job["config"], "type": job["type"], "seed": job["seed"], "epochs": cfg.epochs,
            **scored(lambda images: image_scores(predict_maps(model, images)), test_set, uncertain),
            "train_seconds": round(sum(e["seconds"] for e in history.epochs), 2),
            "history": [{k: float(f"{v:.4g}") for k, v in e.items() if isinstance(v, (int, float))}
                        for e in history.epochs]}


def reference_run(job: dict) -> dict:
    """PatchMemory on the demo profile's teacher, fitted on the train cells of one type, scoring the test and
    uncertain cells (no training: one run per type; ``train_seconds`` is the time to build the memory)."""
    set_threads(job)
    cfg = run_config(job)
    train_set, test_set, uncertain = (cells(cfg, s, job["max_images"]) for s in ("train", "test", "uncertain"))
    tic = time.perf_counter()
    memory = PatchMemory(build_teacher(cfg.teacher, weights=cfg.teacher_weights), coreset=job["coreset"], seed=0)
    memory.fit(train_set)
    seconds = time.perf_counter() - tic
    return {"config": REFERENCE, "type": job["type"], "seed": 0, "coreset": job["coreset"],
            **scored(lambda images: memory.score(images)[1], test_set, uncertain), "train_seconds": round(seconds, 2)}


def choose_epochs(runs: list[dict], max_epochs: int) -> dict:
    """The rule of the module docstring on RD's validation curves: ``{"epochs", "mean_curve", "rule"}``."""
    curves = [r["curve"] for r in runs if r["config"] == BASELINE]
    if not curves:
        raise ValueError("choosing the epochs needs validation runs of rd")
    epochs = sorted({p["epoch"] for c in curves for p in c})
    mean = [statistics.fmean(p["image_auroc"] for c in curves for p in c if p["epoch"] == e) for e in epochs]
    chosen = next((e for e, now, after in zip(epochs, mean, mean[1:]) if after - now < GAIN_BELOW), max_epochs)
    return {"epochs": chosen, "mean_curve": [[e, round(m, 4)] for e, m in zip(epochs, mean)],
            "rule": f"first evaluated epoch after which rd's mean validation image AUROC gains < {GAIN_BELOW} by "
                    f"the next evaluation ({max_epochs} if none)"}


def summarise(runs: list[dict]) -> list[dict]:
    """Per configuration and type: runs, collapsed runs, mean and per-seed values of each metric, train seconds."""
    rows = []
    for name in (*CONFIGS, REFERENCE):
        for kind in ELPV.CATEGORIES:
            mine = sorted((r for r in runs if r["config"] == name and r["type"] == kind), key=lambda r: r["seed"])
            if not mine:
                continue
            row = {"config": name, "type": kind, "runs": len(mine), "collapsed": sum(r["collapsed"] for r in mine),
                   "seeds": [r["seed"] for r in mine],
                   "train_seconds_mean": round(statistics.fmean(r["train_seconds"] for r in mine), 1)}
            for m in METRICS:
                row[m] = {"mean": statistics.fmean(r[m] for r in mine), "values": [round(r[m], 4) for r in mine]}
            rows.append(row)
    return rows


def compare(runs: list[dict], resamples: int = RESAMPLES) -> list[dict]:
    """Each configuration against RD per type, on the seeds both have: the two-level bootstrap difference, its
    95 % interval, standard error and minimum detectable difference, per metric of :mod:`rdtutorial.paired`."""
    rows = []
    for name in CONFIGS:
        for kind in ELPV.CATEGORIES:
            base = {r["seed"]: r for r in runs if r["config"] == BASELINE and r["type"] == kind}
            mine = {r["seed"]: r for r in runs if r["config"] == name and r["type"] == kind and r["seed"] in base}
            if name == BASELINE or not mine:
                continue
            seeds = sorted(mine)
            labels = mine[seeds[0]]["labels"]
            row = {"config": name, "type": kind, "seeds": seeds}
            for m in PAIRED_METRICS:
                result = two_level_bootstrap([mine[s]["scores"] for s in seeds], [base[s]["scores"] for s in seeds],
                                             labels, metric=m, resamples=resamples)
                row[m] = {**result.to_dict(), "paper_gain": PAPER_GAINS.get(m)}
            rows.append(row)
    return rows


def demo_power(path: Path = DEMO_RESULTS) -> list[dict]:
    """:func:`rdtutorial.ablation.power` of chapter 9's stored demo benchmark (its ``"all"`` rows)."""
    runs = json.loads(path.read_text())["runs"]
    return [row for row in power(runs) if row["category"] == "all"]


def _interval(d: dict) -> str:
    return f"{d['difference']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"


def table(summary: dict) -> str:
    """The summary of a test stage as plain text."""
    lines = [f"{'configuration':<14} {'type':<5} {'runs':>4} {'collapsed':>9} " + " ".join(f"{m:>17}" for m in METRICS)
             + f" {'train s':>8}"]
    for r in summary["configs"]:
        means = " ".join(f"{r[m]['mean']:>17.3f}" for m in METRICS)
        lines.append(f"{r['config']:<14} {r['type']:<5} {r['runs']:>4} {r['collapsed']:>9} {means} "
                     f"{r['train_seconds_mean']:>8.1f}")
    if summary.get("paired"):
        lines += ["", "paired difference against rd: mean [two-level bootstrap 95% interval], minimum detectable "
                      "difference (80% power, 5% two-sided)"]
        lines.append(f"{'configuration':<14} {'type':<5} {'seeds':>5} "
                     + " ".join(f"{m:>24} {'MDE':>6}" for m in PAIRED_METRICS))
        for d in summary["paired"]:
            cells_ = " ".join(f"{_interval(d[m]):>24} {d[m]['mde']:>6.3f}" for m in PAIRED_METRICS)
            lines.append(f"{d['config']:<14} {d['type']:<5} {len(d['seeds']):>5} {cells_}")
        gains = ", ".join(f"{m} {g:+.3f}" for m, g in PAPER_GAINS.items())
        lines.append(f"the paper's gains of RD++ over RD on MVTec AD: {gains}")
    if summary.get("demo_power"):
        lines += ["", "chapter 9's demo benchmark, all (category, seed) pairs: minimum detectable difference "
                      "(the paper's gain)"]
        for row in summary["demo_power"]:
            mdes = ", ".join(f"{m} {row[f'{m}_mde']:.3f} ({row[f'{m}_paper_gain']:+.3f})" for m in PAPER_GAINS)
            lines.append(f"{row['config']:<28} {row['pairs']:>3} pairs: {mdes}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, choices=["validation", "test"])
    parser.add_argument("--configs", nargs="+", default=None, choices=list(CONFIGS),
                        help="default: rd (validation), rd rdpp-paper rdpp (test)")
    parser.add_argument("--types", nargs="+", default=list(ELPV.CATEGORIES), choices=ELPV.CATEGORIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--max-epochs", type=int, default=30, help="validation stage: epochs of each run")
    parser.add_argument("--eval-every", type=int, default=5, help="validation stage: evaluate every N epochs")
    parser.add_argument("--epochs", type=int, default=None, help="test stage: the epochs the validation stage chose")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--coreset", type=float, default=1.0, help="test stage: PatchMemory's coreset fraction")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="two-level bootstrap resamples")
    parser.add_argument("--max-images", type=int, default=0, help="at most this many cells per split (a code check)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, each with --threads torch threads")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write runs and summaries to this JSON file")
    parser.add_argument("--resume", action="store_true", help="keep the runs --out already holds")
    args = parser.parse_args()
    validation = args.stage == "validation"
    if not validation and args.epochs is None:
        parser.error("--stage test needs --epochs (the validation stage prints its choice)")
    configs = args.configs or ([BASELINE] if validation else list(DEFAULT_CONFIGS))
    if BASELINE not in configs:
        parser.error(f"--configs must include {BASELINE}: every comparison is paired against it")
    epochs = args.max_epochs if validation else args.epochs
    settings = {"stage": args.stage, "epochs": epochs, "image_size": args.image_size, "max_images": args.max_images,
                **({"eval_every": args.eval_every} if validation else {"coreset": args.coreset})}
    done, references = [], []
    if args.resume and args.out and args.out.is_file():
        stored = json.loads(args.out.read_text())
        if stored["settings"] != settings:
            parser.error(f"--resume: {args.out} holds runs of other settings ({stored['settings']}); choose "
                         "another --out")
        done, references = stored["runs"], stored.get("reference", [])
    have = {(r["config"], r["type"], r["seed"]) for r in done}
    common = dict(image_size=args.image_size, max_images=args.max_images, threads=args.threads)
    jobs = [dict(common, kind="run", config=n, type=t, seed=s, epochs=epochs,
                 eval_every=args.eval_every if validation else 0)
            for t in args.types for s in args.seeds for n in configs if (n, t, s) not in have]
    if not validation:
        jobs += [dict(common, kind="reference", type=t, coreset=args.coreset) for t in args.types
                 if t not in {r["type"] for r in references}]
    command = "python benchmarks/elpv.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {' '.join(map(str, v)) if isinstance(v, list) else v}")
        for k, v in vars(args).items() if v not in (None, False) and k not in ("out", "resume")
    ) + (f" --out {args.out}" if args.out else "")
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = list(done)

    def summary(final: bool) -> dict:
        if validation:
            return {"choice": choose_epochs(runs, epochs)} if final else {}
        return {"configs": summarise(runs + references),
                **({"paired": compare(runs, args.resamples), "demo_power": demo_power()} if final else {})}

    def write(result_summary: dict) -> None:
        if not args.out:
            return
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"benchmark": f"elpv-{args.stage}", "command": command, "settings": settings,
                  "date": started.strftime("%Y-%m-%d"), "jobs": args.jobs,
                  "threads": args.threads or torch.get_num_threads(), "machine": machine(),
                  "cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__,
                  "summary": result_summary, "reference": references, "runs": runs}
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    work = {"run": validation_run if validation else test_run, "reference": reference_run}
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(work[job["kind"]], job) for job in jobs]
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc=f"elpv {args.stage}"):
            run = future.result()
            (references if run["config"] == REFERENCE else runs).append(run)
            bulky = ("scores", "labels", "uncertain_scores", "uncertain_probabilities", "history", "curve")
            tqdm.write(json.dumps({k: v for k, v in run.items() if k not in bulky}))
            write(summary(final=False))
    final = summary(final=True)
    write(final)
    if validation:
        choice = final["choice"]
        print("rd's mean validation image AUROC by epoch: "
              + ", ".join(f"{e}: {m:.4f}" for e, m in choice["mean_curve"]))
        print(f"chosen epochs: {choice['epochs']} ({choice['rule']})")
    else:
        print(table(final))


if __name__ == "__main__":
    main()
