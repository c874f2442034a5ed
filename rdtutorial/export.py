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
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from .anomaly_map import anomaly_map, image_scores

INPUT_NAME = "images"
OUTPUT_NAMES = ("maps", "scores")

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "InferenceModel", "OnnxCheck", "export_onnx", "read_metadata",
           "verify_onnx"]


def _image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair; both positive multiples of 32, or a ``ValueError`` naming the size."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or any(s <= 0 or s % 32 for s in size):
        raise ValueError(f"image size {image_size} is not supported: height and width must be positive multiples "
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
    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: json.loads(prop.value) for prop in proto.metadata_props}


class OnnxCheck(NamedTuple):
    """ONNX Runtime vs PyTorch: largest absolute map difference, largest relative score difference."""

    map_abs: float
    score_rel: float


def verify_onnx(path: str | os.PathLike, model: nn.Module, images: Tensor) -> OnnxCheck:
    """Run the ONNX file ``path`` (ONNX Runtime, CPU) and ``model`` (PyTorch, eval mode, its device) on
    ``images`` [B,3,H,W] in [0, 1] and compare the maps and scores."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
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
