"""Time one RD++ training step and each of its parts; print one JSON line.

    python benchmarks/train_step.py --teacher wide_resnet50_2 --size 128 --batch 4 --device cpu

A step is: pseudo-anomalies, the teacher on clean and noisy images, the
projections, OCBE + decoder, the four losses, backward, both optimiser
steps (the trainer's own ``training_step``). Parts are timed in a separate
instrumented pass of the same computation; L_SSOT is timed forward and
backward on its own. Speed does not depend on the weights, so the
Wide-ResNet teacher is random here (no download); lite0 uses its real ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from rdtutorial.config import TrainConfig
from rdtutorial.losses import contrast_loss, kd_loss, recon_loss, ssot_loss
from rdtutorial.models import RDPlusPlus, build_teacher
from rdtutorial.noise import PseudoAnomaly
from rdtutorial.train import build_optimizers, training_step


def timer(device: str):
    def now() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    return now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="wide_resnet50_2", choices=["wide_resnet50_2", "efficientnet_lite0"])
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()

    torch.manual_seed(0)
    weights = "imagenet" if args.teacher == "efficientnet_lite0" else None
    model = RDPlusPlus(build_teacher(args.teacher, weights=weights)).to(args.device)
    box = (max(1, args.size * 10 // 256), max(2, args.size * 31 // 256))
    cfg = TrainConfig(teacher=args.teacher, image_size=args.size, batch_size=args.batch, device=args.device,
                      amp=args.amp, noise_size=box, progress=False)
    optimizers = build_optimizers(model, cfg)
    pseudo = PseudoAnomaly(box)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    now = timer(args.device)

    def step() -> None:
        terms = training_step(model, images, cfg, pseudo, gen)
        terms["total"].backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    steps = []
    for i in range(args.warmup + args.repeats):
        t0 = now()
        step()
        if i >= args.warmup:
            steps.append(now() - t0)

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
        kd = timed("kd", kd_loss, t_clean, student)
        recon = timed("recon", recon_loss, p_noisy, p_clean)
        con = timed("con", contrast_loss, t_noisy, p_clean)
        ssot = timed("ssot_forward", ssot_loss, p_clean)
        total = kd + ssot + recon + con
        timed("backward", total.backward)
        for opt in optimizers:
            timed("optimizer_steps", opt.step)
            opt.zero_grad(set_to_none=True)
        leaves = [p.detach().requires_grad_() for p in p_clean]

        def ssot_fwd_bwd():
            ssot_loss(leaves).backward()

        timed("ssot_forward_backward", ssot_fwd_bwd)

    median = {k: statistics.median(v) for k, v in parts.items()}
    median["optimizer_steps"] = median["optimizer_steps"] * len(optimizers)
    step_median = statistics.median(steps)
    result = {
        "benchmark": "train_step",
        "teacher": args.teacher,
        "teacher_weights": "imagenet" if weights else "random (speed only)",
        "size": args.size,
        "batch": args.batch,
        "device": args.device,
        "amp": args.amp,
        "threads": torch.get_num_threads(),
        "step_median_s": round(step_median, 4),
        "images_per_s": round(args.batch / step_median, 2),
        "parts_median_s": {k: round(v, 4) for k, v in median.items()},
        "ssot_share_of_step": round(median["ssot_forward_backward"] / step_median, 4),
    }
    if args.device.startswith("cuda"):
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
