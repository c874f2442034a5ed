"""One readable training loop for RD and RD++ (Algorithm 1 of the RD++ paper).

Per batch of normal images x (RD++):

1. x~ = x + simplex-noise boxes (pseudo-anomalies, made on the device);
2. the frozen teacher E on x and x~ (one batched call, no autograd);
3. projections P on both, OCBE + decoder D on P(E(x));
4. L = L_KD + weighted L_SSOT, L_Recon, L_Con (:func:`rdtutorial.losses.rdpp_loss`);
5. two Adam optimisers step: projections (lr 1e-3) and OCBE + decoder (lr 5e-3).

RD trains OCBE + decoder with L_KD alone. The run is evaluated at the end
(and every ``eval_every`` epochs for curves); the last epoch's model is the
result: no checkpoint is ever chosen by test metrics. A part of the training
normals (``calibration_fraction``) is held out of training and scored at the
end, for the decision threshold (:mod:`rdtutorial.calibration`).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .calibration import calibrate_held_out, calibration_split, save_calibration
from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, load_trainable_state, resume_state
from .checkpoint import rescue_checkpoint, save_checkpoint, trainable_state
from .compiling import compile_parts, first_step
from .config import TrainConfig, legacy_values, runtime_fields
from .cpu import fast_cpu
from .data import BTAD, ELPV, CachedImages, MVTecAD
from .device import check_device
from .diagnostics import projection_diagnostics
from .errors import ConfigError, MemoryLimitError, StorageError
from .evaluate import Evaluation, check_test_set, evaluate
from .history import History
from .losses import LossWeights, kd_loss, rdpp_loss
from .models import RDPlusPlus, ReverseDistillation, build_teacher
from .noise import PseudoAnomaly
from .resources import check_disk, check_memory, out_of_memory
from .runs import check_run_folder, check_writable, run_lock


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


def build_model(cfg: TrainConfig, seed: int | None = None) -> nn.Module:
    """The model of ``cfg.method`` on ``cfg.teacher``, initialised from ``seed`` (default: the category seed).

    The initial weights are drawn from a forked copy of torch's global
    generator, so building a model leaves the caller's random stream as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.category_seed() if seed is None else seed)
        teacher = build_teacher(cfg.teacher, weights=cfg.teacher_weights)
        if cfg.method == "rdpp":
            model = RDPlusPlus(teacher, residual_projection=cfg.projection == "residual")
        else:
            model = ReverseDistillation(teacher)
    return model.to(cfg.device)


def build_dataset(cfg: TrainConfig, split: str) -> Dataset:
    """The whole ``split`` set of ``cfg.category`` under ``cfg.data_root`` (ELPV: from its package, and
    ``split`` may also be ``validation`` or ``uncertain``); its files are listed now, so a missing folder or
    mask shows before any work."""
    if cfg.dataset == "elpv":
        return ELPV(cfg.category, split=split, image_size=cfg.image_size)
    cls = BTAD if cfg.dataset == "btad" else MVTecAD
    return cls(cfg.data_root, cfg.category, split=split, image_size=cfg.image_size)


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """Train and test sets of ``cfg.category`` under ``cfg.data_root`` (``cfg.max_images`` each, if set)."""
    sets = (build_dataset(cfg, "train"), build_dataset(cfg, "test"))
    return tuple(s.subset(cfg.max_images) for s in sets) if cfg.max_images else sets


def preflight(cfg: TrainConfig, train_set: Dataset, test_set: Dataset) -> None:
    """What a training run checks before its first epoch: its calibration split
    (:func:`rdtutorial.calibration.calibration_split`) and the batches left after it, its folder (writable,
    not another run's) and its test set (readable, and one that evaluation can score)."""
    training, held_out = calibration_split(cfg, train_set)
    if len(training) < cfg.batch_size:
        after = f" (after holding out {len(held_out)} for calibration)" if held_out is not None else ""
        raise ConfigError(f"the train set has {len(training)} images{after}, fewer than batch_size={cfg.batch_size}")
    if cfg.out_dir:
        check_writable(cfg.out_dir, "out_dir")
        check_run_folder(cfg.out_dir, cfg.resume)
    check_test_set(test_set)


def fast_adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with torch's fused kernel (one pass over the parameters) where it has one for their device.

    The fused step equals the plain one to float rounding (about 1 ulp per
    step). torch without a fused kernel for the device (CPU before 2.4) gets
    the multi-tensor ``foreach`` step instead.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except RuntimeError:  # "`fused=True` requires all the params to be ... of supported devices"
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


def build_optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam for OCBE + decoder (``lr``) and, for RD++, a second Adam for the projections (``lr_proj``).

    Build them after the model is on its device: the kernel (:func:`fast_adam`) follows the parameters.
    """
    student = list(model.bottleneck.parameters()) + list(model.decoder.parameters())
    optimizers = [fast_adam(student, lr=cfg.lr, betas=cfg.betas)]
    if isinstance(model, RDPlusPlus):
        optimizers.append(fast_adam(model.projections.parameters(), lr=cfg.lr_proj, betas=cfg.betas))
    return optimizers


def _autocast(cfg: TrainConfig):
    if not cfg.amp:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _floats(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    return [f.float() for f in feats]


def training_step(
    model: nn.Module, images: torch.Tensor, cfg: TrainConfig, pseudo: PseudoAnomaly, generator: torch.Generator,
    diagnostics: dict[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """Forward one batch ``[B,3,H,W]`` and return the loss terms (``total`` is to be back-propagated).

    For RD++, a ``diagnostics`` dict is filled with
    :func:`rdtutorial.diagnostics.projection_diagnostics` of this batch (an
    extra backward pass; training itself is unchanged). Without noise in the
    objective (no L_Recon, L_Con), its pseudo-anomalies come from a generator
    of their own, so the training randomness stays the same.
    """
    if isinstance(model, ReverseDistillation):
        with _autocast(cfg):
            out = model(images)
        kd = kd_loss(_floats(out.teacher), _floats(out.student))
        return {"total": kd, "kd": kd}
    weights = LossWeights(ssot=cfg.w_ssot, recon=cfg.w_recon, con=cfg.w_con)
    b = images.shape[0]
    masks = None
    with _autocast(cfg):
        if weights.recon or weights.con:
            noisy, masks = pseudo(images, generator=generator)
            both = model.teacher(torch.cat([images, noisy]))
            projected = model.projections(both)
            t_clean, t_noisy = [f[:b] for f in both], [f[b:] for f in both]
            p_clean, p_noisy = [p[:b] for p in projected], [p[b:] for p in projected]
        else:
            t_clean = model.teacher(images)
            p_clean = model.projections(t_clean)
            t_noisy, p_noisy = t_clean, p_clean
        student = model.decoder(model.bottleneck(p_clean))
    terms = rdpp_loss(
        _floats(t_clean), _floats(student), _floats(p_clean), _floats(t_noisy), _floats(p_noisy),
        weights=weights, ssot_mode=cfg.ssot_mode, margin=cfg.margin, generator=generator,
    )
    terms = {"total": terms.total, "kd": terms.kd, "ssot": terms.ssot, "recon": terms.recon, "con": terms.con}
    if diagnostics is not None:
        if masks is None:  # noise for the measurement only, from its own generator
            own = torch.Generator().manual_seed(int(generator.initial_seed()) + 1)  # on the CPU, like the noise
            with torch.no_grad(), _autocast(cfg):
                noisy, masks = pseudo(images, generator=own)
                t_noisy = model.teacher(noisy)
                p_noisy = model.projections(t_noisy)
        diagnostics.update(projection_diagnostics(
            terms, {"kd": 1.0, "ssot": weights.ssot, "recon": weights.recon, "con": weights.con},
            model.projections, _floats(t_clean), _floats(t_noisy), _floats(p_clean), _floats(p_noisy), masks,
        ))
    return terms


def _rng_state(loader_gen: torch.Generator, noise_gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "loader": loader_gen.get_state(), "noise": noise_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, loader_gen: torch.Generator, noise_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    noise_gen.set_state(state["noise"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(cfg: TrainConfig, datasets: tuple[Dataset, Dataset] | None = None) -> tuple[nn.Module, History]:
    """Train ``cfg.method`` on ``cfg.category``; evaluate at the end. Returns ``(model, history)``.

    ``datasets`` (train, test) replaces the ones built from the config; the
    train set loses its calibration part (:func:`rdtutorial.calibration.calibration_split`)
    either way. All are decoded once into a :class:`rdtutorial.data.CachedImages` on
    ``cfg.device``; training batches are the ones a shuffling DataLoader
    with the run's generator would give. With
    ``out_dir`` set, the history (``history.json``), the final metrics
    (``metrics.json``), the threshold chosen on the held-out normals
    (``calibration.json``, when ``calibration_fraction`` > 0) and, every
    ``checkpoint_every`` epochs and at the end, ``checkpoint.pt`` are written there; ``resume=True`` continues from it,
    bit-identically on a CPU. It runs under :func:`rdtutorial.cpu.fast_cpu`
    (subnormal floats flushed to zero, freed memory kept for the next step), holding ``out_dir``
    (:func:`rdtutorial.runs.run_lock`: a second run into it is refused). Running out of memory raises
    :class:`~rdtutorial.errors.MemoryLimitError` (a GPU's ``OutOfMemoryError`` is left as it is).
    """
    with fast_cpu(), run_lock(cfg.out_dir, "out_dir") if cfg.out_dir else contextlib.nullcontext():
        try:
            return _train(cfg, datasets)
        except RuntimeError as err:
            if not out_of_memory(err) or isinstance(err, torch.OutOfMemoryError):
                raise
            raise MemoryLimitError(f"out of memory at image_size {cfg.image_size}, batch_size {cfg.batch_size} "
                                   f"on {cfg.device}: lower --batch-size or --image-size") from None


def _train(cfg: TrainConfig, datasets: tuple[Dataset, Dataset] | None) -> tuple[nn.Module, History]:
    check_device(cfg.device)
    train_set, test_set = datasets or build_datasets(cfg)
    preflight(cfg, train_set, test_set)  # before the first epoch: the end must not fail on these
    train_set, held_out = calibration_split(cfg, train_set)
    state = resume_state(cfg)  # the checkpoint to continue from, checked against cfg, or None
    model = build_model(cfg)
    check_memory(model.teacher, cfg.image_size, cfg.batch_size, cfg.device)
    if cfg.out_dir:
        check_disk(cfg.out_dir, model)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        compile_parts(model)
    optimizers = build_optimizers(model, cfg)
    seed = cfg.category_seed()
    loader_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    pseudo = PseudoAnomaly(cfg.noise_size, cfg.noise_scale, clamp=cfg.noise_clamp,
                           correlated_channels=cfg.noise_correlated, seed=seed % 2**16)
    # Decoded and resized once, on the device; batches are drawn by index with
    # the generator a DataLoader over the images would use (the same batches).
    train_set = CachedImages(train_set, cfg.device, cfg.num_workers, name="the train set")
    test_set = CachedImages(test_set, cfg.device, cfg.num_workers, name="the test set")
    if held_out is not None:
        held_out = CachedImages(held_out, cfg.device, cfg.num_workers, name="the calibration images")
    loader = train_set.batches(cfg.batch_size, loader_gen)
    history = History()
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    start = 0
    if state is not None:
        load_trainable_state(model, state["model"], source=str(out_dir / CHECKPOINT_NAME))
        for opt, opt_state in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        _set_rng_state(state["rng"], loader_gen, noise_gen)
        history = History.from_dict(state["history"])
        start = state["epoch"]
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and not torch.cuda.is_bf16_supported())

    def checkpoint(epoch: int) -> None:
        """Save the run; where its folder cannot take it, save it in the temporary folder and say where."""
        state = {"epoch": epoch, "model": trainable_state(model), "optimizers": [o.state_dict() for o in optimizers],
                 "rng": _rng_state(loader_gen, noise_gen), "history": history.to_dict(), "config": cfg.to_dict()}
        try:
            save_checkpoint(out_dir / CHECKPOINT_NAME, state)
        except StorageError as err:
            raise StorageError(f"{err}; {rescue_checkpoint(state)} (epoch {epoch})") from None

    for epoch in range(start + 1, cfg.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        tic = time.perf_counter()
        bar = tqdm(loader, desc=f"{cfg.method} {cfg.category} epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=not cfg.progress)
        measured: dict[str, float] | None = {} if cfg.diagnostics and cfg.method == "rdpp" else None
        for step, indices in enumerate(bar, 1):
            images = train_set.images(indices)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)

            def forward_backward() -> dict[str, torch.Tensor]:
                diagnostics = measured if step == 1 else None  # the first batch of each epoch
                terms = training_step(model, images, cfg, pseudo, noise_gen, diagnostics=diagnostics)
                if not torch.isfinite(terms["total"]):
                    values = {k: float(v.detach()) for k, v in terms.items()}
                    saved = out_dir is not None and (out_dir / CHECKPOINT_NAME).is_file()
                    kept = (f"the last good checkpoint is {out_dir / CHECKPOINT_NAME}" if saved
                            else "no checkpoint was written")
                    raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step}: {values}; {kept}")
                scaler.scale(terms["total"] / cfg.accumulate).backward()
                return terms

            if cfg.compile and epoch == start + 1 and step == 1:
                terms = first_step(model, forward_backward, noise_gen, passthrough=(NonFiniteLossError,))
            else:
                terms = forward_backward()
            if step % cfg.accumulate == 0 or step == len(loader):
                for opt in optimizers:
                    scaler.step(opt)
                scaler.update()
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix({k: f"{v / step:.4f}" for k, v in sums.items()})
        history.epochs.append({"epoch": epoch, **{k: v / len(loader) for k, v in sums.items()},
                               "seconds": time.perf_counter() - tic, **(measured or {})})
        if cfg.eval_every and epoch % cfg.eval_every == 0 and epoch < cfg.epochs:
            result = evaluate(model, test_set, cfg.eval_batch_size, cfg.device, progress=cfg.progress)
            history.evals.append({"epoch": epoch, **result.metrics})
        if out_dir is not None and cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            checkpoint(epoch)
    if not history.evals or history.evals[-1]["epoch"] != cfg.epochs:
        if out_dir is not None:
            checkpoint(cfg.epochs)  # the trained model survives a failing evaluation
        result = evaluate(model, test_set, cfg.eval_batch_size, cfg.device, progress=cfg.progress)
        history.evals.append({"epoch": cfg.epochs, **result.metrics})
    if out_dir is not None:
        checkpoint(cfg.epochs)
        history.save(out_dir / "history.json")
        (out_dir / "metrics.json").write_text(json.dumps(history.evals[-1], indent=1))
        if held_out is not None:
            calibration, scores = calibrate_held_out(model, held_out, cfg)
            save_calibration(out_dir, calibration, held_out.paths, scores)
    model.eval()
    return model, history


def load_trained(path: str | Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Rebuild a trained model from a checkpoint written by :func:`train`, on ``device``.

    The settings of the process that trained it (:func:`rdtutorial.config.runtime_fields`: device, mixed
    precision, resuming, ...) start afresh; the returned config is the trained one otherwise.
    """
    state = load_checkpoint(path)
    try:
        cfg = TrainConfig(**{**legacy_values(), **state["config"], **runtime_fields(), "device": device})
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"{path} holds a configuration this version cannot use ({err}); it was written by "
                              "another version of rdtutorial") from None
    model = build_model(cfg)
    load_trainable_state(model, state["model"], source=str(path))
    return model.eval(), cfg


__all__ = ["Evaluation", "NonFiniteLossError", "build_datasets", "build_model", "build_optimizers",
           "build_dataset", "load_trained", "preflight", "train", "training_step"]
