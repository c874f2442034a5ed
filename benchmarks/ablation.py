"""What each RD++ loss term buys: RD and five RD++ variants, several categories and seeds.

    python benchmarks/ablation.py --categories brick grass gravel --epochs 10 --seeds 0 1 2 \
        --out benchmarks/results/ablation_demo.json

Configurations (every one trains for the same epochs on the same data):

- ``rd``: plain reverse distillation (no projections), L_KD only;
- ``kd``: the RD++ model (projections in front of the OCBE) with L_KD only;
- ``kd+con``: + L_Con;
- ``kd+con+recon``: + L_Recon;
- ``kd+con+recon+ssot_published``: + L_SSOT as the public code computes it (zero);
- ``rdpp``: + L_SSOT per pair of samples (the full RD++ of this book).

Weights are the paper's (``TrainConfig`` defaults); 0 drops a term. Prints
one JSON line per run (metrics of the last epoch, never a test-selected one)
and a table of mean and standard deviation per configuration, over every
category and seed; ``--out`` also writes everything to one JSON file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rdtutorial.profiles import chapter_config
from rdtutorial.train import train

METRICS = ("image_auroc", "pixel_auroc", "aupro")
CONFIGS = {
    "rd": dict(method="rd"),
    "kd": dict(method="rdpp", w_ssot=0.0, w_recon=0.0, w_con=0.0),
    "kd+con": dict(method="rdpp", w_ssot=0.0, w_recon=0.0),
    "kd+con+recon": dict(method="rdpp", w_ssot=0.0),
    "kd+con+recon+ssot_published": dict(method="rdpp", ssot_mode="published"),
    "rdpp": dict(method="rdpp", ssot_mode="pairwise"),
}


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and (sample) standard deviation of each metric per configuration, in ``CONFIGS`` order."""
    rows = []
    for name in CONFIGS:
        mine = [r for r in runs if r["config"] == name]
        if not mine:
            continue
        row = {"config": name, "runs": len(mine)}
        for m in METRICS + ("train_seconds",):
            values = [r[m] for r in mine]
            row[f"{m}_mean"] = statistics.fmean(values)
            row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """The summary as a plain-text table: mean ± std per metric."""
    head = f"{'configuration':<30} {'runs':>4} " + " ".join(f"{m:>15}" for m in METRICS) + f" {'train s':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " ".join(f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f}".rjust(15) for m in METRICS)
        lines.append(f"{r['config']:<30} {r['runs']:>4} {cells} {r['train_seconds_mean']:>8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo", choices=["demo", "paper"],
                        help="demo: the embedded demo set on a CPU; paper: MVTec AD, WRN50, a GPU")
    parser.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=None, help="default: the profile's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the profile's")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); 1 is often faster on a busy machine")
    parser.add_argument("--out", type=Path, default=None, help="write runs and summary to this JSON file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {k: v for k, v in (("image_size", args.image_size), ("batch_size", args.batch_size)) if v}
    jobs = [(c, s, n) for c in args.categories for s in args.seeds for n in args.configs]
    runs = []
    started = datetime.datetime.now(datetime.timezone.utc)
    for category, seed, name in tqdm(jobs, desc="ablation runs"):
        cfg = chapter_config(args.profile, category=category, seed=seed, epochs=args.epochs, progress=False,
                             **sizes, **CONFIGS[name])
        tic = time.perf_counter()
        _, history = train(cfg)
        final = history.evals[-1]
        run = {"config": name, "category": category, "seed": seed, "epochs": cfg.epochs,
               "image_size": cfg.image_size, "batch_size": cfg.batch_size,
               **{m: final[m] for m in METRICS}, "train_seconds": round(time.perf_counter() - tic, 2)}
        runs.append(run)
        tqdm.write(json.dumps(run))
    rows = summarise(runs)
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/ablation.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if v is not None and k != "out") + f" --out {args.out}"
        result = {"benchmark": "ablation", "command": command, "date": started.strftime("%Y-%m-%d"),
                  "threads": torch.get_num_threads(), "machine": platform.machine(),
                  "torch": torch.__version__, "runs": runs, "summary": rows}
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
