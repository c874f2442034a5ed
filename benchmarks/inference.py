"""Images per second of batched anomaly maps (what ``evaluate`` and ``predict`` run); print one JSON line.

    python benchmarks/inference.py --teacher efficientnet_lite0 --method rdpp --size 128 --batch 16 --device cpu
    python benchmarks/inference.py --teacher wide_resnet50_2 --random-teacher --size 256 --batch 32 --device cuda --amp

One timed call is :func:`rdtutorial.evaluate.predict_maps` on a batch already
on the device: teacher, (projections,) OCBE, decoder, per-scale cosine
distances, upsampling and the Gaussian blur. The median over ``--repeats``
calls after ``--warmup`` untimed ones is reported, with the teacher alone as
the baseline measured in the same run (``map_vs_teacher`` = how many times
longer the full map takes than the teacher's forward). Speed does not
depend on weight values, so the student parts keep their random
initialisation; EfficientNet-Lite0 uses its packaged ImageNet weights, and
Wide-ResNet-50-2 needs its ImageNet weights (downloaded by torchvision) unless
``--random-teacher`` is given (reported as ``teacher_weights: "random"``).
On CUDA the peak memory of the timed calls is reported too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from rdtutorial.evaluate import predict_maps
from rdtutorial.models import TEACHERS, RDPlusPlus, ReverseDistillation, build_teacher


def timed_median(fn, warmup: int, repeats: int, device: str) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones (CUDA synchronised)."""

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", choices=TEACHERS, default="efficientnet_lite0")
    parser.add_argument("--method", choices=("rd", "rdpp"), default="rdpp")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="autocast to bfloat16/float16 (CUDA only)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    parser.add_argument("--random-teacher", action="store_true",
                        help="Wide-ResNet-50-2 with random weights (no download); lite0 always uses its real ones")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is available")
    if args.amp and not args.device.startswith("cuda"):
        parser.error("--amp is a CUDA option")

    if args.random_teacher and args.teacher != "wide_resnet50_2":
        parser.error("--random-teacher is for wide_resnet50_2; efficientnet_lite0's weights are installed")
    random_teacher = args.random_teacher
    torch.manual_seed(0)
    try:
        teacher = build_teacher(args.teacher, weights=None if random_teacher else "imagenet")
    except RuntimeError as err:  # the ImageNet weights could not be downloaded
        parser.exit(2, f"error: {err}\n(for speed alone, --random-teacher builds it without weights)\n")
    model = (RDPlusPlus if args.method == "rdpp" else ReverseDistillation)(teacher).to(args.device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if args.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        autocast = torch.autocast("cuda", dtype=dtype)
    else:
        autocast = contextlib.nullcontext()

    with autocast:
        teacher_s = timed_median(lambda: model.teacher(images), args.warmup, args.repeats, args.device)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        map_s = timed_median(lambda: predict_maps(model, images), args.warmup, args.repeats, args.device)
    result = {
        "benchmark": "inference",
        "teacher": args.teacher,
        "teacher_weights": "random" if random_teacher else "imagenet",
        "method": args.method,
        "size": args.size,
        "batch": args.batch,
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device,
        "torch_threads": torch.get_num_threads(),
        "amp": args.amp,
        "channels_last": args.channels_last,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seconds_per_batch": round(map_s, 5),
        "images_per_s": round(args.batch / map_s, 2),
        "ms_per_image": round(1000 * map_s / args.batch, 3),
        "teacher_images_per_s": round(args.batch / teacher_s, 2),
        "map_vs_teacher": round(map_s / teacher_s, 2),
    }
    if args.device.startswith("cuda"):
        result["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(args.device) / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
