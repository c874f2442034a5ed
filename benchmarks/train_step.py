"""Time one RD++ training step, before and after the fast paths, in one process; print JSON lines.

    python benchmarks/train_step.py --teacher efficientnet_lite0 --size 128 --batch 8
    python benchmarks/train_step.py --teacher wide_resnet50_2 --size 128 --batch 2

A step is the trainer's: pseudo-anomalies, the teacher on clean and noisy
images, projections, OCBE + decoder, the four losses, backward, both
optimiser steps. "before" is L_SSOT solved per scale
(``ssot_loss_per_scale``, geomloss) with plain Adam; "after" is the trainer's
path (one stacked solve, fused Adam). Both are timed alternately on the same
model, so a noisy machine slows both. Lines printed:

- ``train_step``: medians of the step, of L_SSOT forward + backward (on
  the step's projected features, 5 calls after each step) and of the two
  optimiser steps (with ``zero_grad``), before and after, their shares of
  the step and the ratios; the parts of the "after" step's forward and
  backward (a separate instrumented pass);
- ``cpu_memory`` (CPU only): the "after" step with and without
  :func:`rdtutorial.cpu.keep_freed_memory`, in alternating blocks;
- ``loader``: images/s reading the files every epoch (a DataLoader over the
  dataset, as before) and from the decoded cache, against step images/s;
- ``schedule``: the paper schedule's wall time on MVTec AD at this size and
  batch, from the measured step and evaluation, and the peak GPU memory.

Everything runs under the trainer's CPU settings
(:func:`rdtutorial.cpu.fast_cpu`) unless a line says otherwise. Speed does
not depend on the weights: the Wide-ResNet teacher is random (no
download); lite0 uses its real ones. The loader reads ``--data-root``
(default: the demo set under ``$RDT_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from unittest import mock

import torch
from torch.utils.data import DataLoader

from rdtutorial.config import TrainConfig
from rdtutorial.cpu import flush_denormals, keep_freed_memory
from rdtutorial.data import CachedImages, MVTecAD, make_demo_dataset
from rdtutorial.evaluate import predict_maps
from rdtutorial.losses import contrast_loss, kd_loss, recon_loss, ssot_loss, ssot_loss_per_scale
from rdtutorial.noise import PseudoAnomaly
from rdtutorial.profiles import data_dir
from rdtutorial.schedule import estimate_schedule
from rdtutorial.train import build_model, build_optimizers, training_step


def timer(device: str):
    def now() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    return now


@contextlib.contextmanager
def per_scale_ssot():
    """The trainer with L_SSOT solved scale by scale (the path before the stacked solve)."""
    with mock.patch("rdtutorial.losses.ssot_loss",
                    lambda p, mode="pairwise", grid=8, generator=None: ssot_loss_per_scale(p, grid, generator)):
        yield


def loader_rates(root: str, category: str, size: int, batch: int, device: str, epochs: int = 2) -> dict:
    """Images/s reading the files each epoch vs drawing from the cache (built once, timed too)."""
    source = MVTecAD(root, category, split="train", image_size=size)
    now = timer(device)
    t0 = now()
    for _ in range(epochs):
        for b in DataLoader(source, batch_size=batch, shuffle=True, drop_last=True):
            b["image"].to(device)
    files = epochs * (len(source) // batch) * batch / (now() - t0)
    t0 = now()
    cache = CachedImages(source, device)
    build_s = now() - t0
    t0 = now()
    for _ in range(epochs):
        for idx in cache.batches(batch, torch.Generator().manual_seed(0)):
            cache.images(idx)
    cached = epochs * (len(source) // batch) * batch / (now() - t0)
    return {"dataset": f"{root}/{category}", "images": len(source), "files_images_per_s": round(files, 1),
            "cache_build_s": round(build_s, 3), "cached_images_per_s": round(cached, 1)}


def memory_blocks(step, optimizers, blocks: int = 2, steps: int = 3) -> dict[str, float]:
    """Median step and optimiser steps with and without :func:`keep_freed_memory`, in alternating blocks of
    ``steps`` steps (each block's first step, which sets the memory up, is not counted)."""
    times: dict[str, list[dict[str, float]]] = {"returned": [], "kept": []}
    for _ in range(blocks):
        for name in times:
            with keep_freed_memory() if name == "kept" else contextlib.nullcontext():
                for i in range(steps + 1):
                    t = step(optimizers)
                    if i:
                        times[name].append(t)
    out = {}
    for name, ts in times.items():
        for k in ("step", "optimizer_steps"):
            out[f"{k}_s_memory_{name}"] = round(statistics.median(t[k] for t in ts), 4)
    out["step_speedup"] = round(out["step_s_memory_returned"] / out["step_s_memory_kept"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="wide_resnet50_2", choices=["wide_resnet50_2", "efficientnet_lite0"])
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--data-root", default=None, help="an MVTec-layout folder for the loader line")
    parser.add_argument("--category", default="brick")
    args = parser.parse_args()
    with flush_denormals():
        benchmark(args)


def benchmark(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    weights = "imagenet" if args.teacher == "efficientnet_lite0" else None
    box = (max(1, args.size * 10 // 256), max(2, args.size * 31 // 256))
    cfg = TrainConfig(method="rdpp", teacher=args.teacher, teacher_weights=weights, image_size=args.size,
                      batch_size=args.batch, device=args.device, amp=args.amp, channels_last=args.channels_last,
                      noise_size=box, progress=False)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_model(cfg).to(memory_format=memory_format)
    fused = build_optimizers(model, cfg)
    groups = [[p for g in opt.param_groups for p in g["params"]] for opt in fused]
    plain = [torch.optim.Adam(ps, lr=o.defaults["lr"], betas=cfg.betas) for ps, o in zip(groups, fused)]
    pseudo = PseudoAnomaly(box)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, device=args.device).contiguous(
        memory_format=memory_format)
    now = timer(args.device)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and not torch.cuda.is_bf16_supported())

    def step(optimizers) -> dict[str, float]:
        t0 = now()
        scaler.scale(training_step(model, images, cfg, pseudo, gen)["total"]).backward()
        t1 = now()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        t2 = now()
        return {"step": t2 - t0, "optimizer_steps": t2 - t1}

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        p_fixed = [p.float() for p in model.projections(model.teacher(images))]

    def ssot_forward_backward(fn, calls: int = 5) -> float:
        """Median of ``calls`` timings: one call lasts milliseconds, so a single one is at the scheduler's mercy."""
        times = []
        for _ in range(calls):
            leaves = [p.clone().requires_grad_() for p in p_fixed]
            t0 = now()
            fn(leaves, generator=gen).backward()
            times.append(now() - t0)
        return statistics.median(times)

    with keep_freed_memory():  # the trainer's CPU settings (flush_denormals is on for the whole run)
        runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for i in range(args.warmup + args.repeats):  # before and after alternate: both see the same machine
            with per_scale_ssot():
                before = step(plain)
            before["ssot"] = ssot_forward_backward(ssot_loss_per_scale)
            after = step(fused)
            after["ssot"] = ssot_forward_backward(ssot_loss)
            if i >= args.warmup:
                runs["before"].append(before)
                runs["after"].append(after)

        parts: dict[str, list[float]] = {}

        def timed(name, fn, *a):
            t0 = now()
            out = fn(*a)
            parts.setdefault(name, []).append(now() - t0)
            return out

        b = args.batch
        for _ in range(args.repeats):
            noisy, _ = timed("noise", pseudo, images, gen)
            both = timed("teacher", model.teacher, torch.cat([images, noisy]))
            proj = timed("projections", model.projections, both)
            t_clean, t_noisy = [f[:b] for f in both], [f[b:] for f in both]
            p_clean, p_noisy = [p[:b] for p in proj], [p[b:] for p in proj]
            student = timed("ocbe_decoder", lambda p: model.decoder(model.bottleneck(p)), p_clean)
            total = timed("kd", kd_loss, t_clean, student) + timed("recon", recon_loss, p_noisy, p_clean)
            total = total + timed("con", contrast_loss, t_noisy, p_clean) + timed("ssot", ssot_loss, p_clean)
            timed("backward", total.backward)
            for opt in fused:
                opt.zero_grad(set_to_none=True)

    median = {k: statistics.median(v) for k, v in parts.items()}
    result = {"benchmark": "train_step", "teacher": args.teacher,
              "teacher_weights": "imagenet" if weights else "random (speed only)", "size": args.size,
              "batch": args.batch, "device": args.device, "amp": args.amp, "channels_last": args.channels_last,
              "threads": torch.get_num_threads(), "repeats": args.repeats}
    for when in ("before", "after"):
        s, o, ssot = (statistics.median(r[k] for r in runs[when]) for k in ("step", "optimizer_steps", "ssot"))
        result[when] = {"step_s": round(s, 4), "images_per_s": round(args.batch / s, 2),
                        "ssot_forward_backward_s": round(ssot, 4), "ssot_share_of_step": round(ssot / s, 4),
                        "optimizer_steps_s": round(o, 4), "optimizer_share_of_step": round(o / s, 4)}
    result["speedup"] = {k: round(result["before"][k] / result["after"][k], 2)
                         for k in ("step_s", "ssot_forward_backward_s", "optimizer_steps_s")}
    result["parts_median_s"] = {k: round(v, 4) for k, v in median.items()}
    print(json.dumps(result), flush=True)
    if args.device == "cpu":
        print(json.dumps({"benchmark": "cpu_memory", **memory_blocks(step, fused)}), flush=True)

    with keep_freed_memory():
        step_s = result["after"]["step_s"]
        root = args.data_root or str(make_demo_dataset(data_dir() / "demo"))
        loader = {"benchmark": "loader", **loader_rates(root, args.category, args.size, args.batch, args.device),
                  "step_images_per_s": result["after"]["images_per_s"]}
        print(json.dumps(loader), flush=True)

        model.eval()
        evals = []
        for i in range(args.warmup + args.repeats):
            t0 = now()
            predict_maps(model, images)
            if i >= args.warmup:
                evals.append((now() - t0) / args.batch)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
        est = estimate_schedule(step_s, statistics.median(evals), args.batch, args.device, peak)
        print(json.dumps({"benchmark": "schedule", "size": args.size, "batch": args.batch, "device": args.device,
                          "step_s": step_s, "eval_s_per_image": round(est.eval_s_per_image, 4),
                          "bottle_h": round(est.per_category_s["bottle"] / 3600, 2),
                          "all_15_categories_h": round(est.total_s / 3600, 2),
                          "peak_memory_gib": None if peak is None else round(peak, 3)}), flush=True)


if __name__ == "__main__":
    main()
