"""What each RD++ part buys, paired against RD: configurations x categories x seeds.

    python benchmarks/ablation.py --epochs 60 --seeds 0 1 2 3 4 --jobs 2 \
        --out benchmarks/results/ablation_demo.json

Every configuration trains for the same epochs on the same data with the same
seeds (a seed fixes the initial weights, the shuffling and the noise boxes;
``rd`` and ``kd`` share their OCBE and decoder initialisation). The metrics
are the last epoch's, never a test-selected one. For each (category, seed)
the difference ``config - rd`` is one paired sample; per category and over
all categories the table gives the mean paired difference and its bootstrap
95% interval (``scipy.stats.bootstrap``, percentile method, 10,000
resamples). A run is counted as collapsed when its pixel AUROC is below 0.5
(maps higher on normal pixels than on defects).

``--validation`` runs on the demo set that another generator seed makes
(other crops, other defects of the same kinds): settings are chosen there,
and only the chosen ones are run on the test set the book reports.
``--eval-every`` adds test (or validation) metrics along the way: the curve
that shows whether RD has stopped improving at the budget. ``--out`` is
rewritten after every run; ``--resume`` keeps the runs it already holds.

Configurations: ``rd`` (no projections, L_KD); ``kd`` (projections, L_KD
only); ``rdpp-paper`` (the paper's projections, weights and margin);
``rdpp`` (the ``demo`` profile's RD++: :func:`rdtutorial.config.preset`);
and single-change variants used to choose it.

Every run trains on all the training normals (``calibration_fraction=0``,
passed explicitly): the stored results in ``benchmarks/results/`` were
measured that way, before ``train`` held a part out for the decision
threshold, and stay reproducible with this script.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rdtutorial.ablation import CONFIGS, METRICS, paired, summarise, table
from rdtutorial.profiles import chapter_config
from rdtutorial.train import train

def run_one(job: dict) -> dict:
    """Train one (configuration, category, seed) and return its metrics, curve and wall time."""
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    cfg = chapter_config(job["profile"], validation=job["validation"], category=job["category"],
                         seed=job["seed"], epochs=job["epochs"], eval_every=job["eval_every"], progress=False,
                         calibration_fraction=0, **job["sizes"], **CONFIGS[job["config"]])
    tic = time.perf_counter()
    _, history = train(cfg)
    seconds = time.perf_counter() - tic
    final = history.evals[-1]
    last = history.epochs[-1]
    return {
        "config": job["config"], "category": job["category"], "seed": job["seed"], "epochs": cfg.epochs,
        "image_size": cfg.image_size, "batch_size": cfg.batch_size, **{m: final[m] for m in METRICS},
        "train_seconds": round(seconds, 2),
        "curve": [{k: round(v, 4) for k, v in e.items()} for e in history.evals],
        "last_epoch": {k: float(f"{v:.4g}") for k, v in last.items() if isinstance(v, float)},
    }


def machine() -> str:
    """The CPU model (from /proc/cpuinfo where there is one) and the architecture."""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.system()
    return f"{model}, {platform.machine()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo", choices=["demo", "paper"],
                        help="demo: the embedded demo set on a CPU; paper: MVTec AD, WRN50, a GPU")
    parser.add_argument("--validation", action="store_true",
                        help="the validation demo set (another generator seed), for choosing settings")
    parser.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    parser.add_argument("--configs", nargs="+", default=["rd", "kd", "rdpp-paper", "rdpp"], choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=0, help="evaluate every N epochs too (the curve)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the profile's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the profile's")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, each with --threads torch threads")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write runs and summaries to this JSON file")
    parser.add_argument("--resume", action="store_true", help="keep the runs --out already holds")
    args = parser.parse_args()
    if args.validation and args.profile != "demo":
        parser.error("--validation: only the demo profile has a generated validation set")

    sizes = {k: v for k, v in (("image_size", args.image_size), ("batch_size", args.batch_size)) if v}
    done = json.loads(args.out.read_text())["runs"] if args.resume and args.out and args.out.is_file() else []
    have = {(r["config"], r["category"], r["seed"]) for r in done}
    jobs = [dict(profile=args.profile, validation=args.validation, config=n, category=c, seed=s,
                 epochs=args.epochs, eval_every=args.eval_every, sizes=sizes, threads=args.threads)
            for c in args.categories for s in args.seeds for n in args.configs if (n, c, s) not in have]
    command = "python benchmarks/ablation.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {' '.join(map(str, v)) if isinstance(v, list) else v}")
        for k, v in vars(args).items() if v not in (None, False) and k not in ("out", "resume")
    ) + (f" --out {args.out}" if args.out else "")
    started = datetime.datetime.now(datetime.timezone.utc)
    runs = list(done)

    def write() -> None:
        if not args.out:
            return
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"benchmark": "ablation", "command": command, "date": started.strftime("%Y-%m-%d"),
                  "validation": args.validation, "jobs": args.jobs, "threads": args.threads or torch.get_num_threads(),
                  "machine": machine(),
                  "cpus": len(os.sched_getaffinity(0)), "torch": torch.__version__,
                  "summary": summarise(runs), "paired": paired(runs), "runs": runs}
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, job) for job in jobs]
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="ablation runs"):
            run = future.result()
            runs.append(run)
            tqdm.write(json.dumps({k: v for k, v in run.items() if k not in ("curve", "last_epoch")}))
            write()
    print(table(summarise(runs), paired(runs)))


if __name__ == "__main__":
    main()
