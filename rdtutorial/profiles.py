"""What a chapter needs to run in the ``demo`` or ``paper`` profile, full size or quick.

A notebook reads its profile from ``RDT_PROFILE`` (default ``demo``) and its
scale from ``RDT_QUICK`` (``1``: the whole chapter at toy scale) in a cell
tagged ``parameters``, and calls :func:`chapter_config`. ``demo`` builds the
embedded demo dataset (a few seconds, once) under :func:`data_dir`;
``paper`` checks for MVTec AD and a CUDA GPU and, when one is missing, stops
with a message that says what to do: nothing switches profile silently.

Two variables point a profile at what a machine has, explicitly:
``RDT_DEVICE`` (``cpu``, ``cuda``, ``cuda:N``) and ``RDT_TEACHER_WEIGHTS``
(a state-dict file of the teacher's classifier, or ``random`` for an
untrained teacher, with a loud warning).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .config import PROFILES, TrainConfig, config_fields, preset
from .data import list_categories, make_demo_dataset
from .device import check_device, default_device
from .errors import ConfigError

# Quick mode: toy scale, so a reader can check a chapter's whole code path in minutes.
QUICK_IMAGE_SIZE = 64
QUICK_EPOCHS = 2
QUICK_BATCH = 4
QUICK_IMAGES = 8
QUICK_NOISE_SIZE = (3, 8)
QUICK_CALIBRATION = dict(calibration_fraction=0.25, calibration_fpr=1 / 3)  # 2 of the 8 images, the larger score
VALIDATION_SEED = 1  # the demo generator's seed of the validation set (the test set's is 0)


def data_dir() -> Path:
    """Where datasets and runs live: ``$RDT_DATA_DIR``, else ``~/.cache/rdtutorial``."""
    default = Path.home() / ".cache" / "rdtutorial"
    return Path(os.environ.get("RDT_DATA_DIR", default)).expanduser()


def profile_from_env(default: str = "demo") -> str:
    """``$RDT_PROFILE`` or ``default``, checked."""
    profile = os.environ.get("RDT_PROFILE", default)
    if profile not in PROFILES:
        raise ConfigError(f"RDT_PROFILE={profile!r}: choose one of {PROFILES}")
    return profile


def quick_from_env() -> bool:
    """``$RDT_QUICK`` (``0``, the default, or ``1``), checked; quick mode says so loudly."""
    value = os.environ.get("RDT_QUICK", "0").strip()
    if value not in ("0", "1"):
        raise ConfigError(f"RDT_QUICK={value!r}: use 1 (quick, toy scale) or 0 (full size)")
    if value == "1":
        print(
            "QUICK MODE (RDT_QUICK=1): the whole chapter at toy scale "
            f"({QUICK_IMAGE_SIZE} px, at most {QUICK_EPOCHS} epochs and "
            f"{QUICK_IMAGES} images per split).\n"
            "Its numbers check that the code runs; they are not results."
        )
    return value == "1"


def device_from_env(default: str) -> str:
    """``$RDT_DEVICE`` or ``default``, checked (:func:`rdtutorial.device.check_device`): a device this machine
    lacks is an error that says what to do."""
    device = os.environ.get("RDT_DEVICE", default)
    given = f"RDT_DEVICE={device!r}" if "RDT_DEVICE" in os.environ else f"device {device!r}"
    return check_device(device, given, fix="on Colab choose Runtime > Change runtime type > GPU; or set "
                        "RDT_DEVICE=cpu (slow), or run with RDT_PROFILE=demo")


def teacher_weights_from_env() -> str | None:
    """``$RDT_TEACHER_WEIGHTS``: ``None`` (the profile's own), a file, or ``random``."""
    value = os.environ.get("RDT_TEACHER_WEIGHTS")
    if value is None:
        return None
    if value == "random":
        warnings.warn(
            "RDT_TEACHER_WEIGHTS=random: the teacher is UNTRAINED (random weights). "
            "Every result of this run is meaningless; use it only to check that code runs.",
            stacklevel=2,
        )
        return value
    if not Path(value).is_file():
        raise FileNotFoundError(
            f"RDT_TEACHER_WEIGHTS={value!r}: no such file; give a state-dict file of the "
            "teacher's classifier, or 'random'"
        )
    return value


def quick_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` at toy scale: small images, few epochs, small batches, a handful of images (and, where ``cfg``
    holds normals out for the threshold, two of them and a false-alarm rate that two can express)."""
    return cfg.replace(
        **(QUICK_CALIBRATION if cfg.calibration_fraction else {}),
        image_size=QUICK_IMAGE_SIZE,
        noise_size=QUICK_NOISE_SIZE,
        epochs=min(cfg.epochs, QUICK_EPOCHS),
        batch_size=min(cfg.batch_size, QUICK_BATCH),
        accumulate=1,
        eval_batch_size=min(cfg.eval_batch_size, QUICK_IMAGES),
        max_images=QUICK_IMAGES,
        eval_every=min(cfg.eval_every, 1),
    )


def chapter_config(profile: str, quick: bool = False, validation: bool = False, **overrides) -> TrainConfig:
    """The profile's :class:`TrainConfig` with its data in place (at toy scale if ``quick``).

    ``demo``: the demo dataset under ``data_dir()/demo`` (built if missing),
    or with ``validation`` the one that generator seed ``VALIDATION_SEED``
    makes under ``data_dir()/demo-validation`` (other crops and other defects
    of the same kinds: where settings are chosen, never on the test images),
    on a CUDA GPU when one is present (it says so), else the CPU.
    ``paper``: MVTec AD under ``$RDT_MVTEC_DIR`` or ``data_dir()/mvtec`` and a
    CUDA GPU, or an error that explains how to get them. ``RDT_DEVICE`` and
    ``RDT_TEACHER_WEIGHTS`` override the device and the teacher's weights.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    fields = {f.name for f in config_fields()}
    env = {}
    weights = teacher_weights_from_env()
    if weights is not None:
        env["teacher_weights"] = None if weights == "random" else weights
    if profile == "demo":
        env["device"] = device_from_env(default_device())
        if env["device"].startswith("cuda") and "device" not in overrides:
            print(f"demo profile on the GPU ({torch.cuda.get_device_name(env['device'])})")
        root = (make_demo_dataset(data_dir() / "demo-validation", seed=VALIDATION_SEED) if validation
                else make_demo_dataset(data_dir() / "demo"))
    else:
        if validation:
            raise ConfigError("chapter_config: only the demo profile has a generated validation set")
        env["device"] = device_from_env("cuda")
        root = Path(os.environ.get("RDT_MVTEC_DIR", data_dir() / "mvtec"))
        if not root.is_dir() or not list_categories(root):
            raise RuntimeError(
                f"no MVTec AD found at {root}: run `python -m rdtutorial download --root {root}` "
                "(about 5 GB), or set RDT_MVTEC_DIR to where it is"
            )
    settings = {**env, **overrides}
    unknown = set(settings) - fields
    if unknown:
        raise ConfigError(f"chapter_config({profile!r}): unknown fields {sorted(unknown)}")
    cfg = preset(profile, data_root=str(root), **settings)
    return quick_config(cfg) if quick else cfg
