"""One readable training loop for RD and RD++ (Algorithm 1 of the RD++ paper).

Per batch of normal images x (RD++):

1. x~ = x + simplex-noise boxes (pseudo-anomalies, made on the device);
2. the frozen teacher E on x and x~ (one batched call, no autograd);
3. projections P on both, OCBE + decoder D on P(E(x));
4. L = L_KD + weighted L_SSOT, L_Recon, L_Con (:func:`rdtutorial.losses.rdpp_loss`);
5. two Adam optimisers step: projections (lr 1e-3) and OCBE + decoder (lr 5e-3).

RD trains OCBE + decoder with L_KD alone. The run is evaluated at the end
(and every ``eval_every`` epochs for curves); the last epoch's model is the
result: no checkpoint is ever chosen by test metrics.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_trainable_state, save_checkpoint, trainable_state
from .config import TrainConfig
from .data import BTAD, MVTecAD
from .evaluate import Evaluation, evaluate
from .history import History
from .losses import LossWeights, kd_loss, rdpp_loss
from .models import RDPlusPlus, ReverseDistillation, build_teacher
from .noise import PseudoAnomaly


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


def build_model(cfg: TrainConfig) -> nn.Module:
    """The model of ``cfg.method`` on ``cfg.teacher``, initialised from the category seed."""
    torch.manual_seed(cfg.category_seed())
    teacher = build_teacher(cfg.teacher, weights=cfg.teacher_weights)
    model = RDPlusPlus(teacher) if cfg.method == "rdpp" else ReverseDistillation(teacher)
    return model.to(cfg.device)


def build_datasets(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """Train and test sets of ``cfg.category`` under ``cfg.data_root`` (``cfg.max_images`` each, if set)."""
    cls = BTAD if cfg.dataset == "btad" else MVTecAD
    sets = tuple(cls(cfg.data_root, cfg.category, split=split, image_size=cfg.image_size)
                 for split in ("train", "test"))
    return tuple(s.subset(cfg.max_images) for s in sets) if cfg.max_images else sets


def build_optimizers(model: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adam for OCBE + decoder (``lr``) and, for RD++, a second Adam for the projections (``lr_proj``)."""
    student = list(model.bottleneck.parameters()) + list(model.decoder.parameters())
    optimizers = [torch.optim.Adam(student, lr=cfg.lr, betas=cfg.betas)]
    if isinstance(model, RDPlusPlus):
        optimizers.append(torch.optim.Adam(model.projections.parameters(), lr=cfg.lr_proj, betas=cfg.betas))
    return optimizers


def _autocast(cfg: TrainConfig):
    if not cfg.amp:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _floats(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    return [f.float() for f in feats]


def training_step(
    model: nn.Module, images: torch.Tensor, cfg: TrainConfig, pseudo: PseudoAnomaly, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Forward one batch ``[B,3,H,W]`` and return the loss terms (``total`` is to be back-propagated)."""
    if isinstance(model, ReverseDistillation):
        with _autocast(cfg):
            out = model(images)
        kd = kd_loss(_floats(out.teacher), _floats(out.student))
        return {"total": kd, "kd": kd}
    weights = LossWeights(ssot=cfg.w_ssot, recon=cfg.w_recon, con=cfg.w_con)
    b = images.shape[0]
    with _autocast(cfg):
        if weights.recon or weights.con:
            noisy, _ = pseudo(images, generator=generator)
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
    return {"total": terms.total, "kd": terms.kd, "ssot": terms.ssot, "recon": terms.recon, "con": terms.con}


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

    ``datasets`` (train, test) replaces the ones built from the config. With
    ``out_dir`` set, the history (``history.json``), the final metrics
    (``metrics.json``) and, every ``checkpoint_every`` epochs and at the end,
    ``checkpoint.pt`` are written there; ``resume=True`` continues from it,
    bit-identically on a CPU.
    """
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={cfg.device!r} but no CUDA GPU is available; use device='cpu' or a GPU runtime")
    train_set, test_set = datasets or build_datasets(cfg)
    if len(train_set) < cfg.batch_size:
        raise ValueError(f"the train set has {len(train_set)} images, fewer than batch_size={cfg.batch_size}")
    model = build_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizers = build_optimizers(model, cfg)
    seed = cfg.category_seed()
    loader_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    pseudo = PseudoAnomaly(cfg.noise_size, cfg.noise_scale, clamp=cfg.noise_clamp,
                           correlated_channels=cfg.noise_correlated, seed=seed % 2**16)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.num_workers, generator=loader_gen, pin_memory=cfg.device.startswith("cuda"))
    history = History()
    out_dir = Path(cfg.out_dir) if cfg.out_dir else None
    start = 0
    if cfg.resume and out_dir is not None and (out_dir / CHECKPOINT_NAME).is_file():
        state = load_checkpoint(out_dir / CHECKPOINT_NAME)
        load_trainable_state(model, state["model"])
        for opt, opt_state in zip(optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        _set_rng_state(state["rng"], loader_gen, noise_gen)
        history = History.from_dict(state["history"])
        start = state["epoch"]
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and not torch.cuda.is_bf16_supported())

    def checkpoint(epoch: int) -> None:
        save_checkpoint(out_dir / CHECKPOINT_NAME, {
            "epoch": epoch, "model": trainable_state(model), "optimizers": [o.state_dict() for o in optimizers],
            "rng": _rng_state(loader_gen, noise_gen), "history": history.to_dict(), "config": cfg.to_dict(),
        })

    for epoch in range(start + 1, cfg.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        tic = time.perf_counter()
        bar = tqdm(loader, desc=f"{cfg.method} {cfg.category} epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=not cfg.progress)
        for step, batch in enumerate(bar, 1):
            images = batch["image"].to(cfg.device, non_blocking=True)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            terms = training_step(model, images, cfg, pseudo, noise_gen)
            if not torch.isfinite(terms["total"]):
                values = {k: float(v.detach()) for k, v in terms.items()}
                kept = f"the last good checkpoint is {out_dir / CHECKPOINT_NAME}" if out_dir else "no checkpoint"
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step}: {values}; {kept}")
            scaler.scale(terms["total"] / cfg.accumulate).backward()
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
                               "seconds": time.perf_counter() - tic})
        if cfg.eval_every and epoch % cfg.eval_every == 0 and epoch < cfg.epochs:
            result = evaluate(model, test_set, cfg.eval_batch_size, cfg.device, progress=cfg.progress)
            history.evals.append({"epoch": epoch, **result.metrics})
        if out_dir is not None and cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            checkpoint(epoch)
    if not history.evals or history.evals[-1]["epoch"] != cfg.epochs:
        result = evaluate(model, test_set, cfg.eval_batch_size, cfg.device, progress=cfg.progress)
        history.evals.append({"epoch": cfg.epochs, **result.metrics})
    if out_dir is not None:
        checkpoint(cfg.epochs)
        history.save(out_dir / "history.json")
        (out_dir / "metrics.json").write_text(json.dumps(history.evals[-1], indent=1))
    model.eval()
    return model, history


def load_trained(path: str | Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Rebuild a trained model from a checkpoint written by :func:`train`."""
    state = load_checkpoint(path)
    cfg = TrainConfig(**{**state["config"], "device": device, "amp": False, "channels_last": False, "resume": False})
    model = build_model(cfg)
    load_trainable_state(model, state["model"])
    return model.eval(), cfg


__all__ = ["Evaluation", "NonFiniteLossError", "build_datasets", "build_model", "build_optimizers",
           "load_trained", "train", "training_step"]
