"""Per-image latency of the whole inference path: RD vs RD++, PyTorch eager vs torch.compile vs ONNX Runtime.

    python benchmarks/inference.py                 # the full table (2 CPU cores: see below)
    python benchmarks/inference.py --quick         # the same code path at toy scale, about 4 minutes

One timed call is :class:`rdtutorial.export.InferenceModel` on a batch that
is already on the device: images in [0, 1] -> teacher normalisation,
teacher, (projections,) OCBE, decoder, per-scale cosine maps, upsampling,
Gaussian blur, image score. It runs three ways: PyTorch eager (under
``torch.no_grad``), ``torch.compile`` of the whole path (inductor, static
shapes, so one compilation per model and batch size, untimed but recorded as
``first_call_s``; a failure is caught and reported in the table, not fatal;
``--no-compile`` leaves it out), and ONNX Runtime on the
file :func:`rdtutorial.export.export_onnx` writes (one graph, dynamic batch;
the CPU provider with as many threads as torch uses, ``--threads``). On a
machine whose cores are busy with other work, use ``--threads 1``: two
threads that wait for each other at every operation, when one of them is
descheduled, made eager PyTorch up to 80 times slower than ONNX Runtime in a
quick run here (a scheduling artefact, not the model). Models: RD (no
projections) and RD++ (the paper's projections), for EfficientNet-Lite0 at
128 px (the demo model) and Wide-ResNet-50-2 at 256 px (the paper model),
at batch 1 and 16. Weights are random (``TrainConfig.teacher_weights=None``:
nothing is downloaded), which does not change the time.

All the (method, runtime) calls of one (teacher, batch) are timed in
interleaved rounds, so a machine that slows down part-way slows all of them
alike; the table gives the median per image over the rounds, and the ratios
RD++ / RD and ONNX Runtime / eager come from the same rounds. On a CUDA GPU
the eager and compiled paths are timed there too (synchronised); ONNX
Runtime on the GPU needs its CUDA provider, and is reported as not measured
without one. Without a GPU, the GPU figures say "not measured (no GPU)".
Results go to ``--out`` (default ``benchmarks/results/inference_cpu.json``,
not written in ``--quick`` mode unless ``--out`` is given).

Time: the repetitions are few (10 rounds at batch 1, 2 at batch 16, after
one untimed call) because compiling dominates. The ``--quick --threads 1``
run on this project's 2-core machine took 257 s, of which torch.compile's
first calls took 204 s and the two ONNX exports 48 s; from its parts, the
full run is estimated (not measured) at about 13 minutes, about 6 with
``--no-compile``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from tqdm.auto import tqdm

from ablation import machine  # benchmarks/ablation.py, beside this script
from rdtutorial.config import TrainConfig
from rdtutorial.export import InferenceModel, export_onnx
from rdtutorial.train import build_model

FULL = dict(setups=[("efficientnet_lite0", 128), ("wide_resnet50_2", 256)], batches=(1, 16),
            rounds={1: 10, 16: 2}, out=Path("benchmarks/results/inference_cpu.json"))
QUICK = dict(setups=[("efficientnet_lite0", 64)], batches=(1, 4), rounds={1: 3, 4: 2}, out=None)
METHODS = ("rd", "rdpp")
RUNTIMES = ("eager", "compile", "onnxruntime")


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160] if text else ''}"


def runners(model: torch.nn.Module, size: int, device: str, onnx_path: Path | None, threads: int,
            compile_: bool) -> dict:
    """``{runtime: callable(images) or a reason it is not measured}`` for one model on ``device``."""
    wrapper = InferenceModel(model, size).eval().to(device)

    def eager(images):
        with torch.no_grad():
            return wrapper(images)

    found: dict = {"eager": eager, "compile": "not measured (--no-compile)"}
    if compile_:
        compiled = torch.compile(wrapper, dynamic=False)

        def compiled_call(images):
            with torch.no_grad():
                return compiled(images)

        found["compile"] = compiled_call
    if onnx_path is None:
        found["onnxruntime"] = "not measured (onnxruntime has no CUDA provider here)"
    else:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        provider = "CUDAExecutionProvider" if device.startswith("cuda") else "CPUExecutionProvider"
        session = ort.InferenceSession(str(onnx_path), options, providers=[provider])
        found["onnxruntime"] = lambda images: session.run(None, {"images": images.cpu().numpy()})
    return found


def measure(setup: tuple[str, int], batches: tuple[int, ...], rounds: dict[int, int], device: str,
            workdir: Path, bar: tqdm, compile_: bool) -> list[dict]:
    """Rows of one (teacher, size) on ``device``: per method, runtime and batch, the median ms per image."""
    teacher, size = setup
    threads = torch.get_num_threads()
    models, paths, export_s = {}, {}, {}
    for method in METHODS:
        cfg = TrainConfig(method=method, projection="paper", teacher=teacher, teacher_weights=None,
                          image_size=size, noise_size=(1, 2), device=device, progress=False)
        models[method] = build_model(cfg, seed=0).eval()
        gpu_ort = "CUDAExecutionProvider" in ort.get_available_providers()
        if device == "cpu" or gpu_ort:
            tic = time.perf_counter()
            paths[method] = export_onnx(models[method], workdir / f"{teacher}_{size}_{method}.onnx", size)
            export_s[method] = time.perf_counter() - tic
        else:
            paths[method] = None
    calls = {(m, r): fn for m in METHODS
             for r, fn in runners(models[m], size, device, paths[m], threads, compile_).items()}
    rows = []
    for batch in batches:
        images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)).to(device)
        first_s, failed = {}, {}
        for key, fn in calls.items():  # warm-up (and compilation): untimed, failures caught
            if isinstance(fn, str):
                failed[key] = fn
                continue
            tic = time.perf_counter()
            try:
                fn(images)
                _sync(device)
            except Exception as err:  # torch.compile fails in many ways (no C++ compiler, unsupported op, ...)
                failed[key] = f"failed: {first_line(err)}"
            first_s[key] = time.perf_counter() - tic
        times: dict = {key: [] for key in calls if key not in failed}
        for _ in range(rounds[batch]):
            for key in times:
                _sync(device)
                tic = time.perf_counter()
                calls[key](images)
                _sync(device)
                times[key].append(time.perf_counter() - tic)
            bar.update()
        for (method, runtime), fn in calls.items():
            key = (method, runtime)
            row = {"teacher": teacher, "size": size, "device": device, "method": method, "runtime": runtime,
                   "batch": batch}
            if key in failed:
                row["ms_per_image"], row["note"] = None, failed[key]
            else:
                row["ms_per_image"] = round(1000 * statistics.median(times[key]) / batch, 3)
                row["first_call_s"] = round(first_s[key], 2)
                row["rounds"] = rounds[batch]
                if runtime == "onnxruntime":
                    row["export_s"] = round(export_s[method], 1)
            rows.append(row)
        del images
    return rows


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ratios(rows: list[dict]) -> list[dict]:
    """RD++ / RD per runtime and ONNX Runtime / eager, compile / eager per method, from the same rounds."""
    ms = {(r["teacher"], r["device"], r["batch"], r["method"], r["runtime"]): r["ms_per_image"] for r in rows}
    out = []
    for (teacher, device, batch, method, runtime), value in ms.items():
        rd = ms.get((teacher, device, batch, "rd", runtime))
        eager = ms.get((teacher, device, batch, method, "eager"))
        item = {"teacher": teacher, "device": device, "batch": batch, "method": method, "runtime": runtime}
        if method == "rdpp" and value and rd:
            out.append({**item, "ratio": "rdpp/rd", "value": round(value / rd, 3)})
        if runtime != "eager" and value and eager:
            out.append({**item, "ratio": f"{runtime}/eager", "value": round(value / eager, 3)})
    return out


def table(rows: list[dict]) -> str:
    """ms per image by (teacher, device, batch) and runtime, RD and RD++ side by side, with their ratio."""
    ms = {(r["teacher"], r["size"], r["device"], r["batch"], r["method"], r["runtime"]): r for r in rows}
    lines = [f"{'teacher':<19}{'px':>4} {'device':<5}{'batch':>6}  {'runtime':<12}{'RD ms':>9}{'RD++ ms':>9}"
             f"{'RD++/RD':>9}{'vs eager (RD, RD++)':>22}"]
    for teacher, size, device, batch, method, runtime in ms:
        if method != "rd":
            continue
        rd, pp = ms[teacher, size, device, batch, "rd", runtime], ms[teacher, size, device, batch, "rdpp", runtime]
        a, b = rd["ms_per_image"], pp["ms_per_image"]
        if a is None or b is None:
            lines.append(f"{teacher:<19}{size:>4} {device:<5}{batch:>6}  {runtime:<12}"
                         f"{rd.get('note') or pp.get('note')}")
            continue
        vs = ""
        if runtime != "eager":
            ea, eb = (ms[teacher, size, device, batch, m, "eager"]["ms_per_image"] for m in METHODS)
            vs = f"{a / ea:.2f}x, {b / eb:.2f}x"
        lines.append(f"{teacher:<19}{size:>4} {device:<5}{batch:>6}  {runtime:<12}{a:>9.2f}{b:>9.2f}"
                     f"{b / a:>9.3f}{vs:>22}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="EfficientNet-Lite0 at 64 px, batches 1 and 4, 2-3 rounds: checks the code path "
                             "in about 4 minutes; its numbers are not results")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of torch and of ONNX Runtime (default: torch's, one per core)")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles for "
                        "minutes per model and batch size on a small CPU)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file to write (default: benchmarks/results/inference_cpu.json; none in --quick)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or plan["out"]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    total = sum(plan["rounds"][b] for b in plan["batches"]) * len(plan["setups"]) * len(devices)
    rows: list[dict] = []
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=total, desc="timing rounds") as bar:
        for device in devices:
            for setup in plan["setups"]:
                bar.set_description(f"{setup[0]} {setup[1]} px on {device}")
                rows += measure(setup, plan["batches"], plan["rounds"], device, Path(tmp), bar, not args.no_compile)
    result = {
        "benchmark": "inference", "quick": args.quick,
        "command": "python benchmarks/inference.py" + (" --quick" if args.quick else "")
                   + (f" --threads {args.threads}" if args.threads else "")
                   + (" --no-compile" if args.no_compile else ""),
        "date": datetime.date.today().isoformat(), "machine": machine(), "cpus": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "onnxruntime": ort.__version__,
        "weights": "random", "projection": "paper", "wall_s": round(time.perf_counter() - tic, 1),
        "gpu": torch.cuda.get_device_name() if "cuda" in devices else "not measured (no GPU)",
        "rows": rows, "ratios": ratios(rows),
    }
    if args.quick:
        print("QUICK MODE: toy scale; these numbers check the code path, they are not results")
    print(table(rows))
    print(f"GPU: {result['gpu']}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
