"""ONNX export of the whole inference path: images in [0, 1] -> anomaly maps and image scores.

:class:`InferenceModel` wraps a trained :class:`~rdtutorial.models.ReverseDistillation`
or :class:`~rdtutorial.models.RDPlusPlus` and computes exactly what evaluation
computes, by calling the same functions: the model's forward (teacher
normalisation, teacher, projections for RD++, OCBE, decoder), then
:func:`~rdtutorial.anomaly_map.anomaly_map` (per-scale ``1 - cos``, bilinear
upsampling with ``align_corners=True``, sum, Gaussian blur with scipy's kernel
and 'reflect' boundary) and :func:`~rdtutorial.anomaly_map.image_scores` (the
map's maximum), as :func:`~rdtutorial.evaluate.predict_maps` and ``evaluate`` do:

    images [B,3,H,W] float32 in [0, 1]  ->  maps [B,1,H,W], scores [B]

The blur's boundary handling is an index gather and its kernel a constant
depthwise convolution, which ONNX has (``Gather``, ``Conv``), so no second
implementation is needed. :func:`export_onnx` writes one ONNX graph with
torch's dynamo exporter (``torch.onnx.export(dynamo=True)``, which needs the
``onnxscript`` package): the batch size B is dynamic, H and W are fixed at
export (the upsampling sizes and the blur's indices are constants of the
graph), and the image size, the blur's sigma and the caller's metadata (the
threshold, say) are stored as ONNX ``metadata_props``. :func:`verify_onnx`
runs the file with ONNX Runtime against PyTorch.

:func:`export_run` does all of it for a trained run folder (the ``export``
command): the checkpoint's model, the threshold and normalisation of its
``calibration.json`` as metadata, and the check on real images of the run's
test set, within :data:`MAP_ABS_TOL` and :data:`SCORE_REL_TOL`.

Dependencies: the optional extra ``rdtutorial[export]`` (onnx, onnxscript,
onnxruntime, and torch 2.6 or newer, the first release whose
``torch.onnx.export(dynamo=True)`` is the torch.export-based exporter used
here). The package's own floor stays torch 2.2, so training and the book run
on older installations; without the extra, exporting stops with one line that
says what to install (:class:`ExportSetupError`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .anomaly_map import anomaly_map, image_scores
from .calibration import CALIBRATION_NAME, load_calibration
from .checkpoint import find_checkpoints
from .data import DatasetError
from .errors import CheckpointError, ConfigError, InputError
from .train import build_dataset, load_trained

INPUT_NAME = "images"
OUTPUT_NAMES = ("maps", "scores")
MIN_TORCH = (2, 6)  # torch.onnx.export(dynamo=True) is the torch.export-based exporter from 2.6 on
EXTRA = "pip install 'rdtutorial[export]'"
MAP_ABS_TOL = 1e-4  # ONNX Runtime vs PyTorch: largest absolute difference of the anomaly maps
SCORE_REL_TOL = 1e-5  # and largest relative difference of the image scores
CHECK_IMAGES = 8  # test images of the run's data that export_run checks the file on

__all__ = ["CHECK_IMAGES", "INPUT_NAME", "MAP_ABS_TOL", "OUTPUT_NAMES", "SCORE_REL_TOL", "ExportMismatchError",
           "ExportSetupError", "Exported", "InferenceModel", "OnnxCheck", "export_onnx", "export_run",
           "read_metadata", "verify_onnx"]


class ExportSetupError(InputError, RuntimeError):
    """This installation cannot export: a package of the ``export`` extra is missing, or torch is too old."""


class ExportMismatchError(RuntimeError):
    """ONNX Runtime's maps or scores differ from PyTorch's beyond the tolerances: the file is not kept."""


def _tool(name: str):
    """The module ``name`` of the ``export`` extra, imported now; an :class:`ExportSetupError` when it is
    missing or torch is older than :data:`MIN_TORCH`."""
    version = tuple(int(part) for part in torch.__version__.split(".")[:2])
    if version < MIN_TORCH:
        raise ExportSetupError(f"ONNX export needs torch {'.'.join(map(str, MIN_TORCH))} or newer (this is "
                               f"{torch.__version__}): {EXTRA}")
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ExportSetupError(f"ONNX export needs the {name} package, which is not installed: {EXTRA}") from None


def _image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair; both positive multiples of 32, or a ``ConfigError`` naming the size."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or any(s <= 0 or s % 32 for s in size):
        raise ConfigError(f"image size {image_size} is not supported: height and width must be positive multiples "
                          "of 32 (the OCBE works at stride 32)")
    return size


class InferenceModel(nn.Module):
    """A trained RD / RD++ ``model`` as ``images [B,3,H,W] in [0,1] -> (maps [B,1,H,W], scores [B])``.

    ``image_size`` (int or (H, W), multiples of 32) is the only size it takes;
    ``sigma`` is the blur (evaluation's 4). Call ``.eval()`` on it before use
    (:func:`export_onnx` and :func:`verify_onnx` do, and restore the modes after).
    """

    def __init__(self, model: nn.Module, image_size: int | tuple[int, int], sigma: float = 4.0) -> None:
        super().__init__()
        self.model = model
        self.image_size = _image_size(image_size)
        self.sigma = float(sigma)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"expected images [B, 3, {self.image_size[0]}, {self.image_size[1]}], "
                             f"got {tuple(images.shape)}")
        out = self.model(images)
        maps = anomaly_map(out.teacher, out.student, size=self.image_size, sigma=self.sigma)
        return maps, image_scores(maps)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the block, then every submodule back in the mode it had."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def _no_stack_traces() -> Iterator[None]:
    """Trace without recording a Python stack trace per graph node (``torch.fx.config``): they only serve
    debugging messages and take about a third of the export time on a CPU."""
    config = torch.fx.config
    previous = getattr(config, "do_not_emit_stack_traces", False)  # an older torch without the flag: no effect
    config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        config.do_not_emit_stack_traces = previous


def _cannot_write(path: Path, reason: object) -> OSError:
    return OSError(f"cannot write the ONNX file {path}: {reason}")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    image_size: int | tuple[int, int],
    metadata: dict[str, Any] | None = None,
    sigma: float = 4.0,
) -> Path:
    """Write ``model``'s whole inference path (:class:`InferenceModel`) to the ONNX file ``path``.

    Input ``images`` [batch,3,H,W] float32; outputs ``maps`` [batch,1,H,W] and
    ``scores`` [batch]; ``batch`` is dynamic. ``metadata`` values (anything
    JSON can hold: a threshold, a ``Calibration.to_dict()``) are stored
    JSON-encoded as ONNX ``metadata_props``, with ``image_size`` ([H, W]) and
    ``sigma``; :func:`read_metadata` decodes them. An image size that is not a
    multiple of 32 is a ``ValueError``; a path that cannot be written an
    ``OSError`` naming it, raised before the (slow) export. The file is replaced
    atomically, so a failed export leaves an earlier file intact.
    """
    wrapper = InferenceModel(model, image_size, sigma)
    path = Path(path)
    props = {**(metadata or {}), "image_size": list(wrapper.image_size), "sigma": wrapper.sigma}
    try:
        encoded = {str(key): json.dumps(value) for key, value in props.items()}
    except TypeError as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from None
    for name in ("onnx", "onnxscript"):  # the exporter's
        _tool(name)
    if path.is_dir():
        raise _cannot_write(path, "it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise _cannot_write(path, err.strerror or err) from None

    # Batch 2: an example of batch 1 would make the exporter specialise the batch dimension to 1.
    example = torch.full((2, 3, *wrapper.image_size), 0.5, device=next(model.parameters()).device)
    with _eval_mode(wrapper), _no_stack_traces():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            verbose=False,
        )
    program.model.metadata_props.update(encoded)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _cannot_write(path, err.strerror or err) from None
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``metadata_props`` of an ONNX file written by :func:`export_onnx`, JSON-decoded."""
    proto = _tool("onnx").load(str(path), load_external_data=False)
    return {prop.key: json.loads(prop.value) for prop in proto.metadata_props}


class OnnxCheck(NamedTuple):
    """ONNX Runtime vs PyTorch: largest absolute map difference, largest relative score difference."""

    map_abs: float
    score_rel: float


def verify_onnx(path: str | os.PathLike, model: nn.Module, images: Tensor) -> OnnxCheck:
    """Run the ONNX file ``path`` (ONNX Runtime, CPU) and ``model`` (PyTorch, eval mode, its device) on
    ``images`` [B,3,H,W] in [0, 1] and compare the maps and scores."""
    session = _tool("onnxruntime").InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sigma = float(session.get_modelmeta().custom_metadata_map.get("sigma", 4.0))
    wrapper = InferenceModel(model, tuple(images.shape[-2:]), sigma)
    device = next(model.parameters()).device
    with _eval_mode(wrapper), torch.no_grad():
        maps, scores = (t.float().cpu().numpy() for t in wrapper(images.to(device)))
    onnx_maps, onnx_scores = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.float().cpu().numpy()})
    tiny = np.finfo(np.float32).tiny
    return OnnxCheck(
        map_abs=float(np.abs(onnx_maps - maps).max()),
        score_rel=float((np.abs(onnx_scores - scores) / np.maximum(np.abs(scores), tiny)).max()),
    )


class Exported(NamedTuple):
    """What :func:`export_run` wrote and measured: the file, its metadata, the check and the images it used."""

    path: Path
    metadata: dict[str, Any]
    check: OnnxCheck
    checked_on: str


def export_run(run: str | os.PathLike, path: str | os.PathLike, image_size: int | None = None,
               data_root: str | None = None, overwrite: bool = False, progress: bool = True) -> Exported:
    """Export the model of the run folder (or checkpoint) ``run`` to the ONNX file ``path`` and check it.

    ``image_size`` (default: the run's) fixes H = W of the graph. The metadata
    holds the model's settings and, from the run's ``calibration.json`` (when
    it has one and the size is the run's, where its scores were calibrated),
    ``threshold``, ``pixel_threshold``, ``normalization`` (0.5 = threshold)
    and ``calibration``. The file is then run with ONNX Runtime on
    :data:`CHECK_IMAGES` test images of the run's data (``data_root``
    replaces the one stored in the checkpoint), at batch 1 and all together;
    beyond :data:`MAP_ABS_TOL` or :data:`SCORE_REL_TOL` it is deleted and an
    :class:`ExportMismatchError` raised. Every input error (no checkpoint, a
    size not a multiple of 32, a missing output folder, an existing file
    without ``overwrite``, missing data) is found before the (slow) export.
    """
    for name in ("onnx", "onnxscript", "onnxruntime"):
        _tool(name)
    if image_size is not None:
        _image_size(image_size)
    found = find_checkpoints(run)
    if len(found) != 1:
        raise CheckpointError(f"{run} holds {len(found)} checkpoints (one per category); pass one category's "
                              "folder")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--onnx {path}: its folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise FileExistsError(f"--onnx {path} exists: pass --overwrite to replace it, or choose another path")
    steps = tqdm(total=3, desc="export: load", disable=not progress)
    model, cfg = load_trained(found[0])
    size = _image_size(cfg.image_size if image_size is None else image_size)[0]
    try:
        test = build_dataset(cfg.replace(image_size=size, **({"data_root": data_root} if data_root else {})), "test")
    except DatasetError as err:
        raise DatasetError(f"{err}; the export is checked on the run's test images: pass --data-root") from None
    test = test.subset(CHECK_IMAGES)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    metadata = _run_metadata(cfg, found[0], size)
    steps.update()
    steps.set_description("export: trace and write")
    export_onnx(model, path, size, metadata)
    steps.update()
    steps.set_description("export: check with ONNX Runtime")
    checks = [verify_onnx(path, model, images[:1]), verify_onnx(path, model, images)]
    check = OnnxCheck(max(c.map_abs for c in checks), max(c.score_rel for c in checks))
    steps.update()
    steps.close()
    if check.map_abs > MAP_ABS_TOL or check.score_rel > SCORE_REL_TOL:
        path.unlink()
        raise ExportMismatchError(f"ONNX Runtime differs from PyTorch beyond the tolerances (maps {check.map_abs:.3g} "
                                  f"> {MAP_ABS_TOL:g} absolute or scores {check.score_rel:.3g} > {SCORE_REL_TOL:g} "
                                  f"relative); {path} was removed")
    where = f"{len(test)} test images of {Path(test.root) / test.category}, at batch 1 and {len(test)}"
    return Exported(path, read_metadata(path), check, where)


def _run_metadata(cfg, checkpoint: Path, size: int) -> dict[str, Any]:
    """The model's settings and, at the size it was calibrated at, the run's calibration."""
    metadata: dict[str, Any] = {
        "model": {k: getattr(cfg, k) for k in ("method", "projection", "teacher", "category", "epochs", "seed")},
        "input": "images [batch, 3, H, W] float32 RGB in [0, 1]; an image is anomalous when its score >= threshold",
        "threshold": None,
    }
    found = load_calibration(checkpoint.parent)
    if found is None:
        metadata["threshold_note"] = f"the run has no {CALIBRATION_NAME} (train with --calibration-fraction > 0)"
    elif size != cfg.image_size:
        metadata["threshold_note"] = f"the threshold was chosen at {cfg.image_size} px, not {size} px"
    else:
        calibration, record = found
        metadata.update(threshold=calibration.threshold, pixel_threshold=calibration.pixel_threshold,
                        normalization=dataclasses.asdict(calibration.image),
                        calibration={k: record[k] for k in ("method", "target", "n_normal", "false_alarm_interval")
                                     if k in record})
    return metadata
