"""Time RD++ pseudo-anomalies for one batch: our batched torch noise against a per-sample opensimplex loop.

Both make the same boxes from the same draws (paper settings: 16 images of
256x256, boxes 10..31 px, 6-octave 3-D fractal noise, persistence 0.6,
frequency 1/32, scale 0.2). The baseline builds each box's (3, h, w) field
with ``opensimplex.noise3array`` octave by octave, as the public RD++ code
does, on the CPU. Prints one JSON line with both times, their ratio and the
largest difference between the two noisy batches.

    python benchmarks/noise.py [--device cpu|cuda] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import opensimplex
import torch

from rdtutorial.noise import BoxDraw, PseudoAnomaly


def opensimplex_loop(images: torch.Tensor, draw: BoxDraw, anomaly: PseudoAnomaly) -> torch.Tensor:
    """The baseline: one sample at a time, one opensimplex call per octave. images [B, C, H, W] on CPU."""
    simplex = opensimplex.OpenSimplex(anomaly.seed)
    noisy = images.clone().numpy()
    channels = images.shape[1]
    for b in range(images.shape[0]):
        top, left, h, w = (int(t[b]) for t in (draw.top, draw.left, draw.height, draw.width))
        ox, oy, oz = draw.offset[b, 0].tolist()
        x, y, z = ox + np.arange(w, dtype=np.float64), oy + np.arange(h, dtype=np.float64), oz + np.arange(channels)
        field = np.zeros((channels, h, w))
        frequency, amplitude = anomaly.frequency, 1.0
        for _ in range(anomaly.octaves):
            field += amplitude * simplex.noise3array(x * frequency, y * frequency, z * frequency)
            frequency, amplitude = frequency * 2, amplitude * anomaly.persistence
        noisy[b, :, top : top + h, left : left + w] += (anomaly.scale * field).astype(noisy.dtype)
    return torch.from_numpy(noisy)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where our version runs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="image height and width")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of ours (median reported)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for ours; default 1, the baseline's core count (0 keeps torch's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (boxes and offsets)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but torch sees no CUDA device")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    anomaly = PseudoAnomaly()
    images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))
    on_device = images.to(device)

    generator = torch.Generator().manual_seed(args.seed)
    anomaly(on_device, generator)  # warm-up: tables, allocator, kernels
    _sync(device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        anomaly(on_device, generator)
        _sync(device)
        times.append(time.perf_counter() - start)
    ours_s = statistics.median(times)

    draw = anomaly.draw(images.shape, torch.device("cpu"), torch.Generator().manual_seed(args.seed))
    start = time.perf_counter()
    reference = opensimplex_loop(images, draw, anomaly)
    baseline_s = time.perf_counter() - start

    ours, _ = anomaly.apply(on_device, BoxDraw(*(t.to(device) for t in draw)))
    print(
        json.dumps(
            {
                "benchmark": "pseudo_anomaly",
                "device": args.device,
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "image_size": args.size,
                "box_pixels": int((draw.height * draw.width).sum()),
                "ours_s": round(ours_s, 5),
                "opensimplex_loop_s": round(baseline_s, 4),
                "speedup": round(baseline_s / ours_s, 1),
                "max_abs_diff": float((ours.cpu() - reference).abs().max()),
            }
        )
    )


if __name__ == "__main__":
    main()
