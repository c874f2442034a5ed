"""``TrainConfig.compile``: the model's parts through ``torch.compile``, or a loud fallback.

The parts are compiled in place (``nn.Module.compile``), so parameter names,
state dicts and checkpoints stay those of the plain model. ``torch.compile``
fails late, at the first call (no C++ compiler, no Triton, an unsupported
Python): :func:`first_step` runs the first training step and, if the compiled
parts fail there, warns, undoes the compilation and runs the step plainly.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

PARTS = ("teacher", "projections", "bottleneck", "decoder")


def compile_parts(model: nn.Module, backend: str | Callable = "inductor") -> None:
    """Compile each part of ``model`` that it has (:data:`PARTS`) in place."""
    for name in PARTS:
        if hasattr(model, name):
            getattr(model, name).compile(backend=backend)


def uncompile_parts(model: nn.Module) -> None:
    """Undo :func:`compile_parts`: the parts run eagerly again."""
    for name in PARTS:
        if hasattr(model, name):
            getattr(model, name)._compiled_call_impl = None  # what nn.Module.compile sets


def first_step(
    model: nn.Module, step: Callable[[], dict], generator: torch.Generator,
    passthrough: tuple[type[Exception], ...] = (),
) -> dict:
    """Run ``step()`` (forward and backward) with the compiled parts, or without them if they fail.

    ``generator`` (the pseudo-anomaly one) is rewound before the plain retry,
    so the run continues as it would have; ``passthrough`` errors (a
    non-finite loss) are the step's own and are raised as they are.
    """
    state = generator.get_state()
    try:
        return step()
    except passthrough:
        raise
    except Exception as err:  # torch.compile raises many kinds (BackendCompilerFailed, RuntimeError, ...)
        warnings.warn(
            f"TrainConfig.compile=True, but torch.compile failed at the first step "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "training WITHOUT compilation",
            RuntimeWarning,
            stacklevel=2,
        )
        uncompile_parts(model)
        for p in model.parameters():
            p.grad = None
        generator.set_state(state)
        return step()
