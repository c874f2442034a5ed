"""What a chapter needs to run in the ``demo`` or ``paper`` profile.

A notebook reads its profile from the environment variable ``RDT_PROFILE``
(default ``demo``) in a cell tagged ``parameters`` and calls
:func:`chapter_config`. ``demo`` builds the embedded demo dataset (a few
seconds, once) under :func:`data_dir`; ``paper`` checks for a CUDA GPU and
MVTec AD and, when one is missing, stops with a message that says what to
do: nothing switches profile silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import PROFILES, TrainConfig, preset
from .data import list_categories, make_demo_dataset


def data_dir() -> Path:
    """Where datasets and runs live: ``$RDT_DATA_DIR``, else ``~/.cache/rdtutorial``."""
    return Path(os.environ.get("RDT_DATA_DIR", Path.home() / ".cache" / "rdtutorial")).expanduser()


def profile_from_env(default: str = "demo") -> str:
    """``$RDT_PROFILE`` or ``default``, checked."""
    profile = os.environ.get("RDT_PROFILE", default)
    if profile not in PROFILES:
        raise ValueError(f"RDT_PROFILE={profile!r}: choose one of {PROFILES}")
    return profile


def chapter_config(profile: str, **overrides) -> TrainConfig:
    """The profile's :class:`TrainConfig` with its data in place.

    ``demo``: the demo dataset under ``data_dir()/demo`` (built if missing).
    ``paper``: MVTec AD under ``$RDT_MVTEC_DIR`` or ``data_dir()/mvtec`` and a
    CUDA GPU, or a ``RuntimeError`` that explains how to get them.
    """
    if profile == "demo":
        root = make_demo_dataset(data_dir() / "demo")
        return preset("demo", data_root=str(root), **overrides)
    if profile == "paper":
        if not torch.cuda.is_available():
            raise RuntimeError(
                "the paper profile needs a CUDA GPU: on Colab choose Runtime > Change runtime type > GPU; "
                "or run this chapter with RDT_PROFILE=demo"
            )
        root = Path(os.environ.get("RDT_MVTEC_DIR", data_dir() / "mvtec"))
        if not root.is_dir() or not list_categories(root):
            raise RuntimeError(
                f"no MVTec AD found at {root}: run `python -m rdtutorial download --root {root}` "
                "(about 5 GB), or set RDT_MVTEC_DIR to where it is"
            )
        return preset("paper", data_root=str(root), **overrides)
    raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
