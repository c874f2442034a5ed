"""Training configurations and the two profiles of the book: ``demo`` and ``paper``.

``preset("demo")`` trains on the embedded demo dataset with the offline
EfficientNet-Lite0 teacher on a CPU in minutes; ``preset("paper")`` is the
RD++ paper's setting (Wide-ResNet-50-2, 256 px, batch 16, the public code's
epochs per MVTec AD category, a CUDA GPU). Every field is validated, and a
bad value is reported by name (:class:`~rdtutorial.errors.ConfigError`).

:class:`TrainConfig` is the single source of every setting: each field's
metadata (:func:`setting`) holds its help text, its allowed values, and its
role, from which the command line's options, the settings ``summary.json``
records (:func:`shared_settings`), the settings a resumed run may change
(:func:`resumable_fields`) and what :func:`rdtutorial.train.load_trained`
resets (:func:`runtime_fields`) are derived. Plain Python: importing it loads
no model code.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from dataclasses import dataclass

from .choices import PAPER_MARGIN, PAPER_W_CON, PAPER_W_RECON, PAPER_W_SSOT, SSOT_MODES, TEACHERS
from .errors import ConfigError

METHODS = ("rd", "rdpp")
PROJECTIONS = ("paper", "residual")
DATASETS = ("mvtec", "btad", "elpv")
PROFILES = ("demo", "paper")
DEVICE_NAME = re.compile(r"cpu|mps|cuda(:\d+)?")  # what a device may be called (rdtutorial.device checks it is here)

# The RD++ paper's own settings of what the demo profile may change (see preset).
PAPER_RDPP = dict(projection="paper", w_ssot=PAPER_W_SSOT, w_recon=PAPER_W_RECON, w_con=PAPER_W_CON,
                  margin=PAPER_MARGIN)

# What the demo profile's RD++ changes from the paper's: projections that start at the
# identity, which removes the paper's slow start (book chapter 8). Compared on the validation
# demo set (benchmarks/results/selection_demo_validation.json, 3 categories x 2 seeds, paired
# against RD): no candidate differs from RD beyond noise; beta = 1 is worse, beta = 10 is level
# with this one (+0.025 image AUROC [-0.014, +0.062]), so the paper's loss weights are kept.
DEMO_RDPP = dict(projection="residual")

# Epochs per MVTec AD category in the public RD++ code.
PAPER_EPOCHS = {
    "carpet": 10, "leather": 10, "wood": 100, "hazelnut": 160, "metal_nut": 160, "pill": 200, "bottle": 200,
    "cable": 240, "grid": 260, "tile": 260, "screw": 280, "toothbrush": 280, "capsule": 300,
    "transistor": 300, "zipper": 300,
}

# What a numeric field's ``check`` metadata allows (validate() and the command line's argument types).
CHECKS = {
    "positive": "must be a positive integer",
    "count": "must be a non-negative integer",
    "rate": "must be a finite number > 0",
    "weight": "must be a finite number >= 0",
    "finite": "must be a finite number",
    "fraction": "must be a number in [0, 1)",
    "probability": "must be a number in (0, 1)",
}


def setting(default, help: str, *, choices: tuple | None = None, check: str | None = None, shared: bool = True,
            resumable: bool = False, runtime: bool = False, metavar: tuple[str, ...] | None = None,
            paper: str | None = None, legacy=dataclasses.MISSING):
    """A :class:`TrainConfig` field with its metadata.

    ``help``: what it does (the command line's help; the default is added
    there from the profiles). ``choices``: the allowed values. ``check``: a
    key of :data:`CHECKS`. ``shared``: the same for every category of one run
    (recorded in ``summary.json``). ``resumable``: a resumed run may change it.
    ``runtime``: how one process runs the model, not what it learns (reset
    to its default when a trained model is loaded). ``metavar``: names of a
    tuple's items on the command line. ``paper``: the paper profile's default
    in words, where it is not one value. ``legacy``: the value that runs
    written before the field existed had (a checkpoint without it is read
    with this value, not the default: :func:`legacy_values`).
    """
    if check is not None and check not in CHECKS:
        raise KeyError(f"setting: check {check!r} is not one of {sorted(CHECKS)}")
    return dataclasses.field(default=default, metadata=dict(
        help=help, choices=choices, check=check, shared=shared, resumable=resumable, runtime=runtime,
        metavar=metavar, paper=paper, **({} if legacy is dataclasses.MISSING else {"legacy": legacy})))


@dataclass
class TrainConfig:
    """Everything one training run needs; see :func:`preset` for the two profiles and each field's ``help``.

    ``seed`` is combined with the category name (:meth:`category_seed`) so
    every category gets its own seed.
    """

    method: str = setting("rdpp", "rd (RD4AD) or rdpp (RD++)", choices=METHODS)
    projection: str = setting("paper", "RD++ projections P_k: paper (as published) or residual (start at the "
                              "identity)", choices=PROJECTIONS)
    teacher: str = setting("efficientnet_lite0", "teacher network", choices=TEACHERS)
    teacher_weights: str | None = setting("imagenet", "the teacher's weights: imagenet, or a state-dict file of its "
                                          "classifier (in Python, None: an untrained teacher)")
    dataset: str = setting("mvtec", "data set: mvtec (MVTec AD and any folder in its layout), btad, or elpv (solar "
                           "cells, categories mono and poly, from the installed elpv-dataset package; image labels "
                           "only)", choices=DATASETS)
    data_root: str = setting("data/demo", "folder holding one subfolder per category (elpv: none, its images come "
                             "with its package)", resumable=True)
    category: str = setting("brick", "category to train", shared=False)
    image_size: int = setting(128, "image side in pixels, a multiple of 32", check="positive")
    batch_size: int = setting(8, "training batch size", check="positive")
    epochs: int = setting(10, "epochs per category", check="positive", resumable=True,
                          paper="the public code's count per MVTec AD category, needed for other categories")
    accumulate: int = setting(1, "gradient accumulation steps", check="positive")
    lr: float = setting(5e-3, "Adam learning rate of OCBE and decoder", check="rate")
    lr_proj: float = setting(1e-3, "Adam learning rate of the RD++ projections", check="rate")
    betas: tuple[float, float] = setting((0.5, 0.999), "Adam betas, each in [0, 1)", metavar=("BETA1", "BETA2"))
    w_ssot: float = setting(PAPER_W_SSOT, "weight of L_SSOT; 0 drops the term", check="weight")
    w_recon: float = setting(PAPER_W_RECON, "weight of L_Recon; 0 drops the term", check="weight")
    w_con: float = setting(PAPER_W_CON, "weight of L_Con; 0 drops the term", check="weight")
    ssot_mode: str = setting("pairwise", "L_SSOT between pairs of samples (pairwise, the paper's intent) or as "
                             "published (identically zero)", choices=SSOT_MODES)
    margin: float = setting(PAPER_MARGIN, "L_Con margin", check="finite")
    noise_size: tuple[int, int] = setting((5, 15), "side range in pixels of the simplex-noise boxes",
                                          metavar=("LOW", "HIGH"))
    noise_scale: float = setting(0.2, "amplitude of the simplex noise added in the boxes", check="weight")
    noise_clamp: bool = setting(False, "clamp noisy images to [0, 1]")
    noise_correlated: bool = setting(True, "the same noise in the three colour channels")
    device: str = setting("cpu", "cpu, cuda, cuda:N or mps", resumable=True, runtime=True)
    amp: bool = setting(False, "mixed precision: bf16 autocast where the GPU has it, else fp16 with a gradient "
                        "scaler (CUDA only)", runtime=True, paper="on, on a GPU")
    channels_last: bool = setting(False, "channels-last memory format (CUDA only)", runtime=True,
                                  paper="on, on a GPU")
    compile: bool = setting(False, "run the model's parts through torch.compile (falls back, with a warning, "
                            "where that fails)")
    num_workers: int = setting(0, "worker processes that decode the images (once per run)", check="count",
                               resumable=True)
    # 0.2 and 0.1, not 0.1 and 0.05: the demo category (and MVTec AD's smallest, toothbrush) has 60 training
    # normals. A false-alarm rate a needs at least 1/a - 1 held-out images (rdtutorial.threshold), so 0.1 of 60
    # (6 images) cannot even express a rate of 0.1; 0.2 holds out 12, whose largest score is the threshold
    # for a = 0.1 (expected rate 1/13 on new normals, 95% range 0.2% to 26%: rdtutorial.calibration).
    calibration_fraction: float = setting(0.2, "part of the training normals held out of training to choose the "
                                          "decision threshold (calibration.json in the run folder); 0: train on "
                                          "all of them", check="fraction", legacy=0.0)
    calibration_fpr: float = setting(0.1, "target false-alarm rate of the threshold chosen on the held-out "
                                     "normals; it needs at least 1/rate - 1 of them", check="probability",
                                     resumable=True)
    max_images: int = setting(0, "keep at most this many images of each split, for quick checks; 0: all",
                              check="count")
    seed: int = setting(0, "random seed, mixed with each category's name")
    eval_every: int = setting(0, "evaluate every N epochs for the curves in history.png; 0: only at the end "
                              "(never used to pick a model)", check="count", resumable=True)
    diagnostics: bool = setting(True, "record the RD++ projection diagnostics on the first batch of each epoch "
                                "(one extra backward pass; training is unchanged)", resumable=True)
    eval_batch_size: int = setting(16, "evaluation batch size", check="positive", resumable=True)
    checkpoint_every: int = setting(0, "also write checkpoint.pt every N epochs; 0: only at the end",
                                    check="count", resumable=True)
    out_dir: str | None = setting(None, "run folder: checkpoint.pt, history.json, metrics.json", shared=False,
                                  resumable=True)
    resume: bool = setting(False, "continue from the checkpoint.pt in out_dir (a run without one starts afresh; "
                           "a finished one is only re-read)", shared=False, resumable=True, runtime=True)
    progress: bool = setting(True, "progress bars (on stderr)", shared=False, resumable=True)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.noise_size = tuple(self.noise_size)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~rdtutorial.errors.ConfigError` naming the first bad field."""

        def bad(name: str, why: str) -> None:
            raise ConfigError(f"TrainConfig.{name} = {getattr(self, name)!r}: {why}")

        for f in dataclasses.fields(self):
            value, choices, check = getattr(self, f.name), f.metadata.get("choices"), f.metadata.get("check")
            if choices is not None and value not in choices:
                bad(f.name, f"must be one of {choices}")
            if check is not None and not _passes(check, value):
                bad(f.name, CHECKS[check])
        if self.image_size % 32:
            bad("image_size", "must be a positive multiple of 32 (the OCBE works at stride 32)")
        if self.method == "rdpp" and self.batch_size < 2 and self.w_ssot:
            bad("batch_size", "L_SSOT pairs each sample with another: use at least 2, or w_ssot=0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad("betas", "must be two numbers in [0, 1)")
        low, high = self.noise_size
        if not 1 <= low <= high < self.image_size:
            bad("noise_size", f"must be (low, high) with 1 <= low <= high < image_size ({self.image_size})")
        if not DEVICE_NAME.fullmatch(self.device):
            bad("device", "must be 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if (self.amp or self.channels_last) and not self.device.startswith("cuda"):
            bad("amp" if self.amp else "channels_last", "is a CUDA option; set device='cuda'")
        if (self.checkpoint_every or self.resume) and not self.out_dir:
            bad("out_dir", "is needed to write or resume checkpoints")

    def category_seed(self) -> int:
        """The run's seed: ``seed`` mixed with the category name (CRC-32), stable across runs."""
        return (self.seed * 1_000_003 + zlib.crc32(self.category.encode())) % 2**31

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def preset(profile: str, **overrides) -> TrainConfig:
    """The ``demo`` or ``paper`` configuration, with ``overrides`` applied.

    ``paper`` takes the public code's epochs for an MVTec AD ``category``;
    for any other category pass ``epochs`` explicitly.
    """
    if profile == "demo":  # TrainConfig's defaults, with the demo's RD++
        base = dict(DEMO_RDPP)
    elif profile == "paper":
        category = overrides.get("category", "bottle")
        if "epochs" not in overrides and category not in PAPER_EPOCHS:
            raise ConfigError(
                f"preset('paper'): no published epoch count for category {category!r}; "
                f"pass epochs=... (MVTec AD categories: {sorted(PAPER_EPOCHS)})"
            )
        base = dict(teacher="wide_resnet50_2", data_root="data/mvtec", category=category, image_size=256,
                    batch_size=16, accumulate=2, epochs=PAPER_EPOCHS.get(category, 0), noise_size=(10, 31),
                    device="cuda", eval_batch_size=32)
    else:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    if profile == "paper":  # mixed precision and channels_last where they apply: on a GPU
        gpu = str(overrides.get("device", base["device"])).startswith("cuda")
        base.update(amp=gpu, channels_last=gpu)
    unknown = set(overrides) - {f.name for f in config_fields()}
    if unknown:
        raise ConfigError(f"preset({profile!r}): unknown fields {sorted(unknown)}")
    return TrainConfig(**{**base, **overrides})


def config_fields() -> tuple[dataclasses.Field, ...]:
    """The fields of :class:`TrainConfig` (looked up when called, so that everything derived follows the class)."""
    return dataclasses.fields(TrainConfig)


def shared_settings(cfg: TrainConfig) -> dict:
    """The settings that every category of one run shares: what ``summary.json`` records."""
    return {f.name: getattr(cfg, f.name) for f in config_fields() if f.metadata.get("shared", True)}


def resumable_fields() -> frozenset[str]:
    """The settings a resumed run (and a run adding categories to a summary) may change."""
    return frozenset(f.name for f in config_fields() if f.metadata.get("resumable"))


def runtime_fields() -> dict:
    """The settings of the process that runs a model, with their defaults: a loaded model starts from these."""
    return {f.name: f.default for f in config_fields() if f.metadata.get("runtime")}


def legacy_values() -> dict:
    """The settings that checkpoints written before their field existed were trained with (``legacy``)."""
    return {f.name: f.metadata["legacy"] for f in config_fields() if "legacy" in f.metadata}


def _passes(check: str, value) -> bool:
    """Whether ``value`` passes ``check`` (a key of :data:`CHECKS`)."""
    if check in ("positive", "count"):
        return isinstance(value, int) and value >= (1 if check == "positive" else 0)
    if check == "rate":
        return 0 < value < math.inf
    if check == "weight":
        return 0 <= value < math.inf
    if check == "fraction":
        return 0 <= value < 1
    if check == "probability":
        return 0 < value < 1
    return math.isfinite(value)
