"""The command line: ``python -m rdtutorial {demo,train,evaluate,predict,export,download}``; it parses and dispatches.

``demo`` trains RD++ on the embedded demo dataset on the CPU and writes a short report; ``train`` and
``evaluate`` run one or all categories of MVTec AD, BTAD, an MVTec-layout folder or ELPV
(:mod:`rdtutorial.categories`; ``train`` has an option per :class:`~rdtutorial.config.TrainConfig` field,
:mod:`rdtutorial.options`); ``predict`` scores a folder of images (:mod:`rdtutorial.predict`); ``export`` writes
a run's model as an ONNX file and checks it with ONNX Runtime (:func:`rdtutorial.export.export_run`);
``download`` fetches MVTec AD.

Bad input (:data:`INPUT_ERRORS`) ends with an ``error: ...`` line on stderr and exit status 2; a diverged run,
an ONNX file that disagrees with PyTorch or a GPU out of memory with exit status 1 and a message. Any other
exception, a ``ValueError`` included, is a bug in rdtutorial and shows its traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .calibration import CALIBRATION_NAME
from .categories import dataset_root, evaluate_categories, resolve_categories, train_categories
from .checkpoint import CHECKPOINT_NAME
from .config import METHODS, PAPER_EPOCHS, PROFILES, preset
from .data import DEMO_CATEGORIES, MVTEC_SHA256, MVTEC_URL, MVTecAD
from .data import download_mvtec, make_demo_dataset
from .device import check_device, default_device
from .errors import ConfigError, InputError, input_message
from .export import CHECK_IMAGES, EXTRA, MAP_ABS_TOL, SCORE_REL_TOL, ExportMismatchError, export_run
from .metrics import METRICS
from .options import add_config_options, config_overrides, count, positive_int
from .predict import SCORES_NAME, predict_images
from .report import metrics_line, metrics_table, write_report
from .runs import SUMMARY_NAME, check_run_folder, run_lock
from .train import NonFiniteLossError, build_datasets, train

DEMO_EPOCHS = 40  # where RD's validation metrics stop improving (book chapter 9)
DESCRIPTION = "RD++ (Revisiting Reverse Distillation for Anomaly Detection): train, evaluate, predict and export."
EXAMPLES = """examples:
  python -m rdtutorial demo                                  # a few CPU minutes, report in runs/demo
  python -m rdtutorial download --root data/mvtec --category bottle
  python -m rdtutorial train --profile paper --data-root data/mvtec --category all --checkpoint-every 10
  python -m rdtutorial evaluate runs/mvtec_rdpp
  python -m rdtutorial predict runs/mvtec_rdpp/bottle my_images/   # the run's threshold (calibration.json)
  python -m rdtutorial export runs/mvtec_rdpp/bottle --onnx bottle.onnx

Use `python -m rdtutorial COMMAND --help` for each command's options."""
# Input errors, printed as one message with exit status 2: rdtutorial's own (InputError: configuration, device,
# checkpoint, run folder, teacher weights), the data set's and the download's, and the environment's OSErrors
# (missing, unreadable and unwritable files, a full disk).
INPUT_ERRORS = (InputError, OSError)
# TrainConfig fields whose train option the command line defines itself (all categories, one folder, --no-progress).
OWN_OPTIONS = ("category", "out_dir", "progress")


def _device(text: str | None) -> str:
    device = text or default_device()
    return check_device(device, f"--device {device!r}", "use --device cpu (or a GPU runtime)")


def cmd_demo(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    cfg = preset("demo", data_root=str(Path(args.data_root).resolve()), category=args.category, method=args.method,
                 epochs=args.epochs, image_size=args.image_size, seed=args.seed, eval_every=args.eval_every,
                 out_dir=str(out_dir), device="cpu", progress=not args.no_progress)
    with run_lock(out_dir):  # the report too: a second demo into this folder is refused until it is written
        check_run_folder(out_dir, resume=False, resumable=False)  # before the dataset is made
        make_demo_dataset(cfg.data_root, image_size=cfg.image_size)
        datasets = build_datasets(cfg)
        tic = time.perf_counter()
        model, history = train(cfg, datasets)
        write_report(model, datasets[1], out_dir, cfg.device, history)
    print(metrics_table({cfg.category: {m: history.evals[-1][m] for m in METRICS}}))
    print(f"trained {cfg.method} on {cfg.category} for {cfg.epochs} epochs in {time.perf_counter() - tic:.0f} s; "
          f"report in {out_dir}: metrics.json, anomaly_maps.png, history.png, {CHECKPOINT_NAME}, "
          f"{CALIBRATION_NAME}")
    return 0


def _train_overrides(args: argparse.Namespace) -> dict:
    """TrainConfig fields given on the command line (the profile supplies the rest)."""
    return {**config_overrides(args, exclude=OWN_OPTIONS), "progress": not args.no_progress}


def cmd_train(args: argparse.Namespace) -> int:
    overrides = _train_overrides(args)
    base = preset(args.profile, **{k: v for k, v in overrides.items() if k == "epochs"})
    method, dataset = overrides.get("method", base.method), overrides.get("dataset", base.dataset)
    root = dataset_root(dataset, overrides.pop("data_root", None), base.data_root)
    out_dir = Path(args.out_dir or f"runs/{dataset}_{method}")
    categories = resolve_categories(args.category, dataset, root, base.category)
    unknown = [c for c in categories if c not in PAPER_EPOCHS]
    if args.profile == "paper" and "epochs" not in overrides and unknown:
        raise ConfigError(f"--profile paper has no published epoch count for {unknown} (only for MVTec AD's "
                          "categories); pass --epochs N")
    configs = [preset(args.profile, **overrides, category=c, data_root=str(root.resolve()), out_dir=str(out_dir / c))
               for c in categories]
    _device(configs[0].device)

    def trained(cfg, model, history, test_set) -> None:
        write_report(model, test_set, Path(cfg.out_dir), cfg.device, history)
        print(f"{cfg.category}: {metrics_line(history.evals[-1])}", flush=True)

    print(metrics_table(train_categories(configs, out_dir, on_trained=trained)))
    print(f"summary: {out_dir / SUMMARY_NAME}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    device = _device(args.device)
    path = Path(args.checkpoint)
    out_dir = Path(args.out_dir) if args.out_dir else (path if path.is_dir() else path.parent) / "evaluation"

    def evaluated(cfg, model, test_set, folder: Path) -> None:
        write_report(model, test_set, folder, device)

    print(metrics_table(evaluate_categories(path, out_dir, args.category, args.data_root, args.batch_size, device,
                                            progress=not args.no_progress, on_evaluated=evaluated)))
    print(f"summary: {out_dir / SUMMARY_NAME}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    found = predict_images(args.checkpoint, args.input, args.out_dir, args.threshold, args.vmin, args.vmax,
                           args.batch_size, _device(args.device), progress=not args.no_progress,
                           overwrite=args.overwrite)
    print(f"threshold: {found.decision.source}")
    flagged = "" if found.anomalous is None else f", {sum(found.anomalous)} anomalous (score >= threshold)"
    print(f"{len(found.images)} images{flagged}; scores in {found.out_dir / SCORES_NAME}, overlays in "
          f"{found.out_dir} (colour scale {found.vmin:.4f} to {found.vmax:.4f})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    done = export_run(args.run, args.onnx, args.image_size, args.data_root, args.overwrite,
                      progress=not args.no_progress)
    meta = done.metadata
    size = "x".join(map(str, meta["image_size"]))
    threshold = (f"threshold {meta['threshold']:.6g} (target false-alarm rate {meta['calibration']['target']:g} on "
                 f"{meta['calibration']['n_normal']} held-out normal images)" if meta["threshold"] is not None
                 else f"no threshold: {meta['threshold_note']}")
    print(f"wrote {done.path} ({done.path.stat().st_size / 2**20:.1f} MiB): {meta['model']['method']} on "
          f"{meta['model']['teacher']}, images [batch, 3, {size.replace('x', ', ')}] in [0, 1] -> maps, scores; "
          f"{threshold}")
    print(f"ONNX Runtime vs PyTorch on {done.checked_on}: maps differ by at most {done.check.map_abs:.3g} "
          f"(tolerance {MAP_ABS_TOL:g}), scores by at most {done.check.score_rel:.3g} relative "
          f"(tolerance {SCORE_REL_TOL:g})")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    root = download_mvtec(args.root, args.category, url=args.url, sha256=args.sha256, timeout=args.timeout)
    print(f"MVTec AD categories {args.category or list(MVTecAD.CATEGORIES)} are in {root}")
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they go to stderr)")


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
    p.add_argument("--epochs", type=positive_int, default=DEMO_EPOCHS, help="training epochs (default: %(default)s)")
    p.add_argument("--image-size", type=positive_int, default=128,
                   help="image side in pixels, a multiple of 32, for the dataset and the model (default: %(default)s)")
    p.add_argument("--eval-every", type=count, default=DEMO_EPOCHS // 4,
                   help="also evaluate every N epochs, for the metric curves in history.png; 0: only at the end "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--out-dir", default="runs/demo", help="report folder (default: %(default)s)")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train RD or RD++ on MVTec AD, BTAD, an MVTec-layout folder or ELPV",
                       description="Train one or more categories, each in its own subfolder of --out-dir; print a "
                                   "table of image AUROC, pixel AUROC and AUPRO and write summary.json. Every "
                                   "setting of the run has an option; those not given come from --profile.")
    p.add_argument("--profile", choices=PROFILES, default="demo",
                   help="starting configuration: demo (EfficientNet-Lite0, 128 px, CPU) or paper "
                        "(Wide-ResNet-50-2, 256 px, batch 16, the public code's epochs per category, CUDA); "
                        "the options below override it (default: %(default)s)")
    p.add_argument("--category", action="append", metavar="NAME",
                   help="category to train; repeat for several, or 'all' for every category found in --data-root "
                        "(default: the profile's, brick or bottle; --dataset elpv: mono, poly or all, no default)")
    p.add_argument("--out-dir", help="run folder; each category trains in its own subfolder "
                   "(checkpoint.pt, history.json, metrics.json, anomaly_maps.png, history.png) and summary.json "
                   "goes here (default: runs/<dataset>_<method>)")
    add_config_options(p, exclude=OWN_OPTIONS)
    _add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate trained checkpoints on a test set",
                       description="Evaluate a checkpoint.pt, or every <category>/checkpoint.pt of a run folder, "
                                   "on its category's test set; print the metrics table and write "
                                   "<out-dir>/<category>/metrics.json, anomaly_maps.png and summary.json.")
    p.add_argument("checkpoint", help="a checkpoint.pt or a run folder (written by `train` or `demo`)")
    p.add_argument("--data-root", help="dataset folder (default: the one stored in the checkpoint)")
    p.add_argument("--category", action="append", metavar="NAME",
                   help="evaluate only this category of a run folder; repeat for several (default: all)")
    p.add_argument("--batch-size", type=positive_int, help="evaluation batch size (default: the run's)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--out-dir", help="where results go (default: an 'evaluation' folder in the run folder)")
    _add_common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="anomaly-map overlays and scores for a folder of images",
                       description="Score every PNG/JPEG/BMP image in a folder (or one image) with a trained "
                                   "checkpoint: <out-dir>/<image>_map.png overlays (the image with its anomaly "
                                   "map as a heat map) and <out-dir>/scores.csv (path, score[, score_normalized]"
                                   "[, anomalous], overlay). The score is the maximum of the anomaly map, as in "
                                   "evaluation; an image is anomalous when its score is at or above the threshold: "
                                   "the run's calibration.json (chosen by train on held-out normal images; "
                                   "score_normalized puts it at 0.5) unless --threshold is given.")
    p.add_argument("checkpoint", help="a checkpoint.pt, or a run folder holding one")
    p.add_argument("input", help="a folder of images, or one image file")
    p.add_argument("--out-dir", default="predictions", help="output folder (default: %(default)s)")
    p.add_argument("--threshold", type=float,
                   help="mark images with a score at or above this as anomalous, instead of the run's threshold "
                        "(default: the one in calibration.json beside the checkpoint, if there is one)")
    p.add_argument("--vmin", type=float, help="score shown as the coldest colour (default: the lowest map value)")
    p.add_argument("--vmax", type=float, help="score shown as the hottest colour (default: the highest map value)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per batch (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the predictions already in --out-dir (its scores.csv and *_map.png are removed)")
    _add_common(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a trained model to ONNX, checked with ONNX Runtime",
                       description="Write the whole inference path of a trained run (teacher normalisation, "
                                   "teacher, projections, OCBE, decoder, anomaly map, image score) as one ONNX "
                                   "graph: input images [batch, 3, H, W] float32 in [0, 1], outputs maps [batch, 1, "
                                   "H, W] and scores [batch], batch dynamic. Its metadata holds the image size and, "
                                   "from the run's calibration.json, the threshold. The file is then run with ONNX "
                                   f"Runtime on {CHECK_IMAGES} test images of the run's data and compared with "
                                   f"PyTorch (maps within {MAP_ABS_TOL:g}, scores within {SCORE_REL_TOL:g} "
                                   f"relative). Needs the export extra: {EXTRA}.")
    p.add_argument("run", help="a run folder holding checkpoint.pt (one category's), or a checkpoint.pt")
    p.add_argument("--onnx", required=True, help="the ONNX file to write (its folder must exist)")
    p.add_argument("--image-size", type=positive_int,
                   help="image side of the graph, a multiple of 32 (default: the run's; another size drops the "
                        "threshold, which was chosen at the run's)")
    p.add_argument("--data-root", help="dataset folder for the check (default: the one stored in the checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --onnx file")
    _add_common(p)
    p.set_defaults(func=cmd_export)

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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 training diverged or the ONNX check failed, 2 bad input,
    130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2, message already printed)
        return int(stop.code or 0)
    try:
        return args.func(args)
    except (NonFiniteLossError, ExportMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        hint = "; train --resume continues from the last checkpoint.pt" if args.command == "train" else ""
        print(f"error: out of GPU memory: lower --batch-size (or --image-size){hint}", file=sys.stderr)
        return 1
    except INPUT_ERRORS as err:
        print(f"error: {input_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = " (train --resume continues from the last checkpoint.pt)" if args.command == "train" else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130
