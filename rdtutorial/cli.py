"""The command line: ``python -m rdtutorial {demo,train,evaluate,predict,download}``.

- ``demo``: the embedded demo dataset, RD++ with the EfficientNet-Lite0 teacher
  on the CPU, and a short report (metrics, anomaly-map figure, loss curves).
- ``train`` / ``evaluate``: MVTec AD, BTAD or any MVTec-layout folder, one or
  all categories, a summary table and ``summary.json``.
- ``predict``: anomaly-map overlays and a CSV of scores for a folder of images.
- ``download``: MVTec AD, verified and safely extracted.

Bad input (a missing folder, an unknown category, a bad option value, an
unreadable file, an output folder that cannot be written or holds another run)
ends with an ``error: ...`` line on stderr and exit status 2, not a traceback:
these are the exceptions in :data:`INPUT_ERRORS`. A diverged run or a GPU out
of memory ends with exit status 1 and a message. Any other exception is a bug
in rdtutorial and shows its traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoint import CHECKPOINT_NAME
from .config import DATASETS, METHODS, PAPER_EPOCHS, PROFILES, TrainConfig, preset
from .data import BTAD, DEMO_CATEGORIES, MVTEC_SHA256, MVTEC_URL, DatasetError, DownloadError, MVTecAD
from .data import download_mvtec, list_categories, make_demo_dataset
from .data.io import IMAGE_EXTENSIONS, is_image_file, list_images, load_image, resize_image
from .evaluate import check_test_set, evaluate, predict_maps
from .losses import SSOT_MODES
from .models import TEACHERS
from .models.teacher import TeacherWeightsError
from .report import METRIC_NAMES, METRICS, anomaly_map_figure, mean_metrics, metrics_table, save_figure, save_overlay
from .runs import RunFolderError, check_run_folder, check_writable, preflight, previous_results
from .train import NonFiniteLossError, load_trained, train

DEMO_EPOCHS = 40  # where RD's validation metrics stop improving (book chapter 9)
DESCRIPTION = "RD++ (Revisiting Reverse Distillation for Anomaly Detection): train, evaluate and predict."
EXAMPLES = """examples:
  python -m rdtutorial demo                                  # a few CPU minutes, report in runs/demo
  python -m rdtutorial download --root data/mvtec --category bottle
  python -m rdtutorial train --profile paper --data-root data/mvtec --category all --checkpoint-every 10
  python -m rdtutorial evaluate runs/mvtec_rdpp
  python -m rdtutorial predict runs/mvtec_rdpp/bottle my_images/ --threshold T   # T: a score you chose

Use `python -m rdtutorial COMMAND --help` for each command's options."""
# Input errors: a bad value, file or folder (ValueError covers DatasetError, CheckpointError, RunFolderError and
# TrainConfig's checks; OSError covers missing, unreadable and unwritable files and a full disk), a failed download,
# missing teacher weights. Printed as one message, exit status 2.
INPUT_ERRORS = (ValueError, OSError, DownloadError, TeacherWeightsError)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check_device(device: str) -> str:
    """``device`` if this machine has it; a ValueError that says what to use otherwise."""
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"--device {device!r}: use cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available here; use --device cpu (or a GPU runtime)")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    return device


# demo -------------------------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    cfg = preset("demo", data_root=str(Path(args.data_root).resolve()), category=args.category, method=args.method,
                 epochs=args.epochs, image_size=args.image_size, seed=args.seed, eval_every=args.eval_every,
                 out_dir=str(out_dir), device="cpu",
                 progress=not args.no_progress)
    check_writable(out_dir)
    check_run_folder(out_dir, resume=False, resumable=False)  # before the dataset is made
    make_demo_dataset(cfg.data_root, image_size=cfg.image_size)
    datasets = (_dataset(cfg, "train"), _dataset(cfg, "test"))
    tic = time.perf_counter()
    model, history = train(cfg, datasets)
    metrics = {m: history.evals[-1][m] for m in METRICS}
    _write_report(model, datasets[1], out_dir, cfg.device, history)
    print(metrics_table({cfg.category: metrics}))
    print(f"trained {cfg.method} on {cfg.category} for {cfg.epochs} epochs in {time.perf_counter() - tic:.0f} s; "
          f"report in {out_dir}: metrics.json, anomaly_maps.png, history.png, {CHECKPOINT_NAME}")
    return 0


def _write_report(model, test_set, out_dir: Path, device: str, history=None) -> None:
    """anomaly_maps.png (and history.png when there is a training history) in ``out_dir``."""
    save_figure(anomaly_map_figure(model, test_set, device), out_dir / "anomaly_maps.png")
    if history is not None:
        save_figure(history.plot(), out_dir / "history.png")


# train ------------------------------------------------------------------------------------------------------------


def _categories(requested: list[str] | None, root: Path, default: str) -> list[str]:
    """The categories to run: ``requested`` (``all`` = every category found under ``root``) or ``default``."""
    if not requested:
        return [default]
    if "all" in requested:
        found = list_categories(root)
        if not found:
            raise DatasetError(f"--category all: no category folders (with train/ or test/) in {root}")
        return found
    return list(dict.fromkeys(requested))


def _train_overrides(args: argparse.Namespace) -> dict:
    """TrainConfig fields given on the command line (the profile supplies the rest)."""
    names = ("dataset", "method", "teacher", "epochs", "batch_size", "image_size", "device", "accumulate", "lr",
             "lr_proj", "w_ssot", "w_recon", "w_con", "ssot_mode", "margin", "eval_every", "checkpoint_every",
             "seed", "num_workers")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.noise_size is not None:
        overrides["noise_size"] = tuple(args.noise_size)
    for flag in ("amp", "channels_last"):  # --amp / --no-amp; absent: the profile's default
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.resume:
        overrides["resume"] = True
    overrides["progress"] = not args.no_progress
    return overrides


def _dataset(cfg: TrainConfig, split: str):
    """The ``split`` set of ``cfg``; its files are listed now, so a missing folder or mask shows before training."""
    cls = BTAD if cfg.dataset == "btad" else MVTecAD
    return cls(cfg.data_root, cfg.category, split=split, image_size=cfg.image_size)


def cmd_train(args: argparse.Namespace) -> int:
    base = preset(args.profile, **({"epochs": args.epochs} if args.epochs else {}))
    root = Path(args.data_root or base.data_root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist (pass --data-root; `python -m rdtutorial download` "
                           "fetches MVTec AD, `python -m rdtutorial demo` makes the demo dataset)")
    dataset = args.dataset or base.dataset
    out_dir = Path(args.out_dir or f"runs/{dataset}_{args.method or base.method}")
    categories = _categories(args.category, root, base.category)
    unknown = [c for c in categories if c not in PAPER_EPOCHS]
    if args.profile == "paper" and not args.epochs and unknown:
        raise ValueError(f"--profile paper has no published epoch count for {unknown} (only for MVTec AD's "
                         "categories); pass --epochs N")
    overrides = _train_overrides(args)
    configs = [preset(args.profile, **{**overrides, "category": c, "data_root": str(root.resolve()),
                                       "out_dir": str(out_dir / c)}) for c in categories]
    _check_device(configs[0].device)
    check_writable(out_dir)
    results = previous_results(out_dir, "train", _shared_settings(configs[0]))  # other categories of this run
    runs = [(cfg, (_dataset(cfg, "train"), _dataset(cfg, "test"))) for cfg in configs]
    for cfg, (_, test_set) in runs:  # every category's, before the first trains
        preflight(cfg.out_dir, cfg.resume, test_set)
    for cfg, datasets in runs:
        model, history = train(cfg, datasets)
        _write_report(model, datasets[1], Path(cfg.out_dir), cfg.device, history)
        results[cfg.category] = {**{m: history.evals[-1][m] for m in METRICS}, "epochs": cfg.epochs,
                                 "train_seconds": sum(e["seconds"] for e in history.epochs)}
        print(f"{cfg.category}: " + ", ".join(f"{METRIC_NAMES[m]} {results[cfg.category][m]:.4f}" for m in METRICS),
              flush=True)
        _write_summary(out_dir, results, cfg, "train")  # after each category, so a stopped run keeps its table
    print(metrics_table(results))
    print(f"summary: {out_dir / 'summary.json'}")
    return 0


def _shared_settings(cfg: TrainConfig) -> dict:
    """The settings that every category of one ``train`` run shares (what ``summary.json`` records)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in ("category", "out_dir", "resume", "progress")}


def _write_summary(out_dir: Path, results: dict[str, dict], cfg: TrainConfig, command: str) -> None:
    """Write ``summary.json``: metrics per category, their mean, and the settings the categories share."""
    summary = {"command": command, "config": _shared_settings(cfg), "categories": results,
               "mean": mean_metrics(results)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))


# evaluate ---------------------------------------------------------------------------------------------------------


def _find_checkpoints(path: Path, categories: list[str] | None = None) -> list[Path]:
    """``path`` itself, ``path/checkpoint.pt``, or ``path/*/checkpoint.pt`` (one per category; with
    ``categories``, only those category folders, so that other categories' files are never read)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint or run folder at {path}")
    if (path / CHECKPOINT_NAME).is_file():
        return [path / CHECKPOINT_NAME]
    found = sorted(p for p in path.glob(f"*/{CHECKPOINT_NAME}") if not categories or p.parent.name in categories)
    if not found:
        raise FileNotFoundError(f"no {CHECKPOINT_NAME} in {path} or in its subfolders"
                                + (f" for categories {categories}" if categories else ""))
    return found


def cmd_evaluate(args: argparse.Namespace) -> int:
    device = _check_device(args.device or _default_device())
    path = Path(args.checkpoint)
    checkpoints = _find_checkpoints(path, args.category)
    out_dir = check_writable(Path(args.out_dir) if args.out_dir else
                             (path if path.is_dir() else path.parent) / "evaluation")
    results, previous, cfg = {}, None, None
    for ckpt in checkpoints:
        model, cfg = load_trained(ckpt, device)
        if args.category and cfg.category not in args.category:
            continue
        if cfg.category in results:
            raise ValueError(f"two checkpoints under {path} are for category {cfg.category!r}; evaluate them one by one")
        cfg = cfg.replace(data_root=args.data_root or cfg.data_root)
        if previous is None:  # categories evaluated into this folder before, checked before any evaluation
            previous = previous_results(out_dir, "evaluate", _shared_settings(cfg))
        test_set = _dataset(cfg, "test")
        check_test_set(test_set)
        result = evaluate(model, test_set, args.batch_size or cfg.eval_batch_size, device,
                          progress=not args.no_progress)
        folder = out_dir / cfg.category
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps({**result.metrics, "checkpoint": str(ckpt),
                                                         "data_root": cfg.data_root}, indent=1))
        _write_report(model, test_set, folder, device)
        results[cfg.category] = result.metrics
    missing = sorted(set(args.category or []) - set(results))
    if missing:
        raise ValueError(f"no checkpoint for categories {missing} under {path}")
    results = {**(previous or {}), **results}  # a category evaluated again replaces its old row
    _write_summary(out_dir, results, cfg, "evaluate")
    print(metrics_table(results))
    print(f"summary: {out_dir / 'summary.json'}")
    return 0


# predict ----------------------------------------------------------------------------------------------------------


def _input_images(path: Path) -> list[Path]:
    if is_image_file(path):
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither an image file ({', '.join(IMAGE_EXTENSIONS)}) nor a folder")
    images = list_images(path)
    if not images:
        raise FileNotFoundError(f"no PNG, BMP or JPEG images in {path}")
    return images


def _prediction_folder(out_dir: Path, source: Path) -> Path:
    """``out_dir``, writable and not the folder of the input images (whose overlays would be scored next time)."""
    folder = source if source.is_dir() else source.parent
    if out_dir.resolve() == folder.resolve():
        raise RunFolderError(f"--out-dir {out_dir} is the folder of the input images: the overlays and scores.csv "
                             "would be mixed with them (and scored as images by the next run); choose another "
                             "--out-dir")
    return check_writable(out_dir)


def _overlay_names(images: list[Path]) -> list[str]:
    """``<stem>_map.png`` per image; ``<name>_map.png`` where two images share a stem (a.png, a.jpg)."""
    stems = [p.stem for p in images]
    return [f"{p.stem if stems.count(p.stem) == 1 else p.name}_map.png" for p in images]


@torch.no_grad()
def cmd_predict(args: argparse.Namespace) -> int:
    device = _check_device(args.device or _default_device())
    ckpt = _find_checkpoints(Path(args.checkpoint))
    if len(ckpt) != 1:
        raise ValueError(f"{args.checkpoint} holds {len(ckpt)} checkpoints; pass one checkpoint.pt")
    if args.vmin is not None and args.vmax is not None and args.vmax <= args.vmin:
        raise ValueError(f"--vmax {args.vmax} must be greater than --vmin {args.vmin}")
    images = _input_images(Path(args.input))
    out_dir = _prediction_folder(Path(args.out_dir), Path(args.input))
    model, cfg = load_trained(ckpt[0], device)
    size = (cfg.image_size, cfg.image_size)
    maps, scores = [], []
    batches = range(0, len(images), args.batch_size)
    for start in tqdm(batches, desc="predict", unit="batch", disable=args.no_progress):
        batch = torch.stack([resize_image(load_image(p), size) for p in images[start:start + args.batch_size]])
        m = predict_maps(model, batch.to(device)).float()
        scores.extend(m.flatten(1).amax(1).cpu().tolist())
        maps.extend(m.cpu().half())
    vmin = args.vmin if args.vmin is not None else float(min(m.min() for m in maps))
    vmax = args.vmax if args.vmax is not None else float(max(m.max() for m in maps))
    names = _overlay_names(images)
    for path, amap, name in tqdm(list(zip(images, maps, names)), desc="overlays", disable=args.no_progress):
        image = load_image(path)
        full = F.interpolate(amap[None].float(), size=image.shape[-2:], mode="bilinear", align_corners=False)
        save_overlay(out_dir / name, image.permute(1, 2, 0).numpy(), full[0, 0].numpy(), vmin, vmax)
    _write_scores(out_dir / "scores.csv", images, scores, names, args.threshold)
    flagged = f", {sum(s > args.threshold for s in scores)} above --threshold {args.threshold}" \
        if args.threshold is not None else ""
    print(f"{len(images)} images{flagged}; scores in {out_dir / 'scores.csv'}, overlays in {out_dir} "
          f"(colour scale {vmin:.4f} to {vmax:.4f})")
    return 0


def _write_scores(path: Path, images: list[Path], scores: list[float], names: list[str], threshold) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "score"] + (["anomalous"] if threshold is not None else []) + ["overlay"])
        for image, score, name in zip(images, scores, names):
            flag = [int(score > threshold)] if threshold is not None else []
            writer.writerow([str(image), f"{score:.6f}", *flag, name])


# download ---------------------------------------------------------------------------------------------------------


def cmd_download(args: argparse.Namespace) -> int:
    root = download_mvtec(args.root, args.category, url=args.url, sha256=args.sha256, timeout=args.timeout)
    print(f"MVTec AD categories {args.category or list(MVTecAD.CATEGORIES)} are in {root}")
    return 0


# parser -----------------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\s*\+?\d+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1, 2, ...), got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not re.fullmatch(r"\s*\+?\d+\s*", text):
        raise argparse.ArgumentTypeError(f"must be a whole number (0, 1, 2, ...), got {text!r}")
    return int(text)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they go to stderr)")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=PROFILES, default="demo",
                   help="starting configuration: demo (EfficientNet-Lite0, 128 px, CPU) or paper "
                        "(Wide-ResNet-50-2, 256 px, batch 16, the public code's epochs per category, CUDA); "
                        "the options below override it (default: %(default)s)")
    p.add_argument("--dataset", choices=DATASETS, help="folder layout: mvtec (MVTec AD and any folder in its "
                   "layout) or btad (default: mvtec)")
    p.add_argument("--data-root", help="folder holding one subfolder per category (default: the profile's, "
                   "data/demo or data/mvtec)")
    p.add_argument("--category", action="append", metavar="NAME",
                   help="category to train; repeat for several, or 'all' for every category found in --data-root "
                        "(default: the profile's, brick or bottle)")
    p.add_argument("--method", choices=METHODS, help="rd (RD4AD) or rdpp (RD++) (default: rdpp)")
    p.add_argument("--teacher", choices=TEACHERS, help="teacher network (default: the profile's)")
    p.add_argument("--epochs", type=_positive_int,
                   help="epochs per category (default: demo 10; paper the public code's count per MVTec AD "
                        "category, needed for other categories)")
    p.add_argument("--batch-size", type=_positive_int, help="training batch size (default: demo 8, paper 16)")
    p.add_argument("--accumulate", type=_positive_int, help="gradient accumulation steps (default: demo 1, paper 2)")
    p.add_argument("--image-size", type=_positive_int, help="image side in pixels, a multiple of 32 "
                   "(default: demo 128, paper 256)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: demo cpu, paper cuda)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (CUDA only; on by default in the paper profile on a GPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (CUDA only; on by default in the paper profile on a GPU)")
    p.add_argument("--num-workers", type=_count, help="DataLoader worker processes (default: 0)")
    p.add_argument("--lr", type=float, help="Adam learning rate of OCBE and decoder (default: 0.005)")
    p.add_argument("--lr-proj", type=float, help="Adam learning rate of the RD++ projections (default: 0.001)")
    p.add_argument("--w-ssot", type=float, help="weight of L_SSOT (default: 0.2/1.11; 0 drops the term)")
    p.add_argument("--w-recon", type=float, help="weight of L_Recon (default: 0.2*0.01/1.11)")
    p.add_argument("--w-con", type=float, help="weight of L_Con (default: 0.2*0.1/1.11)")
    p.add_argument("--ssot-mode", choices=SSOT_MODES, help="L_SSOT between pairs of samples (pairwise, "
                   "the paper's intent) or as published (identically zero) (default: pairwise)")
    p.add_argument("--margin", type=float, help="L_Con margin (default: 0.5)")
    p.add_argument("--noise-size", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   help="side range in pixels of the simplex-noise boxes (default: demo 5 15, paper 10 31)")
    p.add_argument("--out-dir", help="run folder; each category trains in its own subfolder "
                   "(checkpoint.pt, history.json, metrics.json, anomaly_maps.png, history.png) and summary.json "
                   "goes here (default: runs/<dataset>_<method>)")
    p.add_argument("--checkpoint-every", type=_count, help="also write checkpoint.pt every N epochs (default: 0, "
                   "only at the end)")
    p.add_argument("--resume", action="store_true", help="continue each category from its checkpoint.pt in "
                   "--out-dir (a category without one starts afresh; a finished one is only re-read)")
    p.add_argument("--eval-every", type=_count, help="evaluate every N epochs for the curves in history.png "
                   "(default: 0, only at the end; never used to pick a model)")
    p.add_argument("--seed", type=int, help="random seed, mixed with each category's name (default: 0)")
    _add_common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rdtutorial", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="train and evaluate RD++ on the demo dataset on the CPU (a few minutes)",
                       description="Make the demo dataset, train RD++ with the EfficientNet-Lite0 teacher on the "
                                   "CPU, evaluate it, and write a report (metrics.json, anomaly_maps.png, "
                                   "history.png, checkpoint.pt) to --out-dir.")
    p.add_argument("--data-root", default="data/demo", help="where the demo dataset is made (default: %(default)s)")
    p.add_argument("--category", choices=DEMO_CATEGORIES, default="brick", help="demo category (default: %(default)s)")
    p.add_argument("--method", choices=METHODS, default="rdpp", help="rd or rdpp (default: %(default)s)")
    p.add_argument("--epochs", type=_positive_int, default=DEMO_EPOCHS, help="training epochs (default: %(default)s)")
    p.add_argument("--image-size", type=_positive_int, default=128,
                   help="image side in pixels, a multiple of 32, for the dataset and the model (default: %(default)s)")
    p.add_argument("--eval-every", type=_count, default=DEMO_EPOCHS // 4,
                   help="also evaluate every N epochs, for the metric curves in history.png; 0: only at the end "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out-dir", default="runs/demo", help="report folder (default: %(default)s)")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train RD or RD++ on MVTec AD, BTAD or an MVTec-layout folder",
                       description="Train one or more categories, each in its own subfolder of --out-dir; print a "
                                   "table of image AUROC, pixel AUROC and AUPRO and write summary.json.")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate trained checkpoints on a test set",
                       description="Evaluate a checkpoint.pt, or every <category>/checkpoint.pt of a run folder, "
                                   "on its category's test set; print the metrics table and write "
                                   "<out-dir>/<category>/metrics.json, anomaly_maps.png and summary.json.")
    p.add_argument("checkpoint", help="a checkpoint.pt or a run folder (written by `train` or `demo`)")
    p.add_argument("--data-root", help="dataset folder (default: the one stored in the checkpoint)")
    p.add_argument("--category", action="append", metavar="NAME",
                   help="evaluate only this category of a run folder; repeat for several (default: all)")
    p.add_argument("--batch-size", type=_positive_int, help="evaluation batch size (default: the run's)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--out-dir", help="where results go (default: an 'evaluation' folder in the run folder)")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="anomaly-map overlays and scores for a folder of images",
                       description="Score every PNG/JPEG/BMP image in a folder (or one image) with a trained "
                                   "checkpoint: <out-dir>/<image>_map.png overlays (the image with its anomaly "
                                   "map as a heat map) and <out-dir>/scores.csv (path, score[, anomalous], overlay). "
                                   "The score is the maximum of the anomaly map, as in evaluation.")
    p.add_argument("checkpoint", help="a checkpoint.pt, or a run folder holding one")
    p.add_argument("input", help="a folder of images, or one image file")
    p.add_argument("--out-dir", default="predictions", help="output folder (default: %(default)s)")
    p.add_argument("--threshold", type=float,
                   help="mark images with a score above this as anomalous (an 'anomalous' 0/1 column in the CSV)")
    p.add_argument("--vmin", type=float, help="score shown as the coldest colour (default: the lowest map value)")
    p.add_argument("--vmax", type=float, help="score shown as the hottest colour (default: the highest map value)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per batch (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    _add_common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("download", help="download and extract MVTec AD (about 5 GB)",
                       description="Download mvtec_anomaly_detection.tar.xz (resuming a partial download), check "
                                   "its SHA-256 and extract the requested categories into --root. An archive "
                                   "already placed in --root is used without downloading.")
    p.add_argument("--root", default="data/mvtec", help="target folder (default: %(default)s)")
    p.add_argument("--category", action="append", choices=MVTecAD.CATEGORIES, metavar="NAME",
                   help="category to extract; repeat for several (default: all 15)")
    p.add_argument("--url", default=MVTEC_URL, help="archive URL, for a mirror (default: the official one)")
    p.add_argument("--sha256", default=MVTEC_SHA256, help="expected SHA-256 of the archive (default: the "
                   "official archive's)")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default: %(default)s)")
    p.set_defaults(func=cmd_download)
    return parser


def error_message(err: BaseException) -> str:
    """The message of an input error: an OSError's reason and file; a DataLoader worker's original error
    without the worker's traceback (torch puts it in the message)."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.strerror}: {err.filename}"
    text = str(err)
    if "Original Traceback" in text:  # "Caught X in DataLoader worker ...\nOriginal Traceback ...\nmodule.X: message"
        last = [line for line in text.splitlines() if line and not line[0].isspace()][-1]
        text = re.sub(r"^[\w.]+: ", "", last) + " (in a DataLoader worker)"
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 training diverged, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2, message already printed)
        return int(stop.code or 0)
    try:
        return args.func(args)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        hint = "; train --resume continues from the last checkpoint.pt" if args.command == "train" else ""
        print(f"error: out of GPU memory: lower --batch-size (or --image-size){hint}", file=sys.stderr)
        return 1
    except INPUT_ERRORS as err:
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (train --resume continues from the last checkpoint.pt)" if args.command == "train" else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
