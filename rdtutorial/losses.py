"""The four RD++ losses and their weighted sum.

Every loss takes lists of per-scale maps ``[B, C_k, H_k, W_k]`` (k = 1..K)
and returns a scalar tensor. Notation: E teacher, P_k projection, D student,
x clean and x~ noisy (pseudo-anomalous) images, ``vec`` flattens one sample's
``C*H*W`` map, ``cos_c`` is the cosine over channels at one pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from geomloss import SamplesLoss
from torch import Tensor

from .choices import PAPER_MARGIN, PAPER_W_CON, PAPER_W_RECON, PAPER_W_SSOT, SSOT_MODES
from .sinkhorn import paired_sinkhorn_divergence


def _check_pairs(a: list[Tensor], b: list[Tensor], name: str) -> None:
    if len(a) != len(b) or not a:
        raise ValueError(f"{name}: expected two equally long, non-empty lists of maps, got {len(a)} and {len(b)}")
    for k, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            raise ValueError(f"{name}: scale {k} shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")


def _flat_cos(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between whole flattened maps, one per sample: ``[B,C,H,W] x2 -> [B]``."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def kd_loss(teacher_feats: list[Tensor], student_feats: list[Tensor]) -> Tensor:
    """Reverse-distillation loss, one cosine per sample over the flattened map.

    L_KD = sum_k mean_i [1 - cos(vec E_k(x_i), vec D_k(z_i))]

    The cosine compares whole maps, not pixels (as RD4AD and RD++ train): the
    student must match the direction of the full C*H*W vector, so pixels with
    large activations weigh more than in a per-pixel mean.
    """
    _check_pairs(teacher_feats, student_feats, "kd_loss")
    return sum((1 - _flat_cos(t, s)).mean() for t, s in zip(teacher_feats, student_feats))


def recon_loss(proj_noisy: list[Tensor], proj_clean: list[Tensor]) -> Tensor:
    """Reconstruction loss: the projection maps a noisy image's features onto the clean ones.

    L_Recon = sum_k mean_{i,h,w} [1 - cos_c(P_k E_k(x~_i), P_k E_k(x_i))]   (per pixel)
    """
    _check_pairs(proj_noisy, proj_clean, "recon_loss")
    return sum((1 - F.cosine_similarity(n, c, dim=1)).mean() for n, c in zip(proj_noisy, proj_clean))


def contrast_loss(teacher_noisy: list[Tensor], proj_clean: list[Tensor], margin: float = PAPER_MARGIN) -> Tensor:
    """Contrast loss: push projected normal features away from raw anomalous ones.

    L_Con = sum_k mean_i max(0, cos(vec E_k(x~_i), vec P_k E_k(x_i)) - margin)
    """
    _check_pairs(teacher_noisy, proj_clean, "contrast_loss")
    return sum(F.relu(_flat_cos(t, p) - margin).mean() for t, p in zip(teacher_noisy, proj_clean))


def derangement_shift(batch_size: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """A permutation with no fixed point: i -> (i + r) mod B with r uniform in 1..B-1.  ``[B]`` long."""
    if batch_size < 2:
        raise ValueError(f"pairing samples needs a batch of at least 2, got {batch_size}")
    r = int(torch.randint(1, batch_size, (1,), generator=generator))
    return (torch.arange(batch_size, device=device) + r) % batch_size


def ssot_points(proj: Tensor, grid: int = 8) -> Tensor:
    """One point cloud per sample: ``[B,C,H,W] -> [B, N, C]`` with N <= grid*grid.

    The map is average-pooled to at most ``grid x grid`` pixels, so the cost of
    optimal transport stays bounded whatever the image size, and each pixel
    becomes a point: its channel vector scaled to unit length. On the unit
    sphere the transport cost |x - y|^2 / 2 equals 1 - cos(x, y), the cosine
    distance every other RD loss uses, and the diameter is exactly 2.

    Why not the paper's softmax over channels: with hundreds of channels the
    softmax puts every pixel near the centre of the simplex, so the divergence
    vanishes numerically again (measured on Wide-ResNet-50-2 at 128 px:
    ~3e-6, gradients ~5e-8). The book shows both.
    """
    h, w = proj.shape[-2:]
    pooled = F.adaptive_avg_pool2d(proj, (min(h, grid), min(w, grid)))
    return F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1)


def stack_point_clouds(clouds: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Stack per-scale clouds ``[B, N_k, C_k]`` into one batch: weights ``[K*B, N]``, points ``[K*B, N, D]``.

    N and D are the largest N_k and C_k. Channels are zero-padded, which keeps
    every distance (and the points on the unit sphere); missing points are
    padded at the origin with weight 0, so they carry no mass. Real points
    weigh 1 / N_k, as in a cloud of their own. One Sinkhorn solve of the
    stack then equals K solves, one per scale.
    """
    n = max(c.shape[1] for c in clouds)
    d = max(c.shape[2] for c in clouds)
    points = torch.cat([F.pad(c, (0, d - c.shape[2], 0, n - c.shape[1])) for c in clouds])
    weights = torch.cat([
        F.pad(c.new_full(c.shape[:2], 1.0 / c.shape[1]), (0, n - c.shape[1])) for c in clouds
    ])
    return weights, points


class _Sinkhorn:
    """geomloss ``SamplesLoss`` that restores the caller's grad mode (geomloss issue #57)."""

    def __init__(self, **kwargs) -> None:
        self.loss = SamplesLoss("sinkhorn", p=2, debias=True, backend="tensorized", **kwargs)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        grad_mode = torch.is_grad_enabled()
        try:
            return self.loss(x, y)
        finally:
            torch.set_grad_enabled(grad_mode)


# The public code's call: 375 epsilon-annealing steps (diameter 1e7, scaling 0.95).
_published_sinkhorn = _Sinkhorn(blur=0.05, scaling=0.95, diameter=1e7)
# Ours: the points lie on the unit sphere, so a diameter of 2 is exact, avoids
# geomloss' estimate (which fails on identical one-point clouds) and needs 38
# annealing steps.
_PAIRWISE = dict(blur=0.05, scaling=0.9, diameter=2.0)
_pairwise_sinkhorn = _Sinkhorn(**_PAIRWISE)


def ssot_loss(
    proj_clean: list[Tensor],
    mode: str = "pairwise",
    grid: int = 8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Self-supervised optimal-transport loss: compact projected normal features.

    L_SSOT = sum_k mean_i S_eps(mu_k(x_i), mu_k(x_pi(i)))

    with S_eps the debiased Sinkhorn divergence (geomloss, p=2, blur 0.05)
    and mu_k(x) the point cloud of :func:`ssot_points` (pooled unit-length pixels of P_k E_k(x)).

    ``mode="pairwise"`` (ours, the paper's intent): each sample is its own
    point cloud (:func:`ssot_points`, ``[B, N, C]``, a 3-D batch of B problems)
    and is paired with a *different* sample, ``pi`` a derangement (the same
    one at every scale). All K scales are solved at once, as one batch of
    K*B problems (:func:`stack_point_clouds`,
    :func:`rdtutorial.sinkhorn.paired_sinkhorn_divergence`: geomloss'
    iterations, cheaper on a CPU); :func:`ssot_loss_per_scale` is the same
    loss with geomloss called once per scale.

    ``mode="published"``: the public code's call, softmax over each whole
    flattened map as a 2-D ``[B, C*H*W]`` tensor against its rows permuted.
    geomloss reads a 2-D tensor as ONE cloud of B points, so this compares a
    measure with itself: identically zero, with zero gradient.
    """
    if mode not in SSOT_MODES:
        raise ValueError(f"ssot_loss: mode must be one of {SSOT_MODES}, got {mode!r}")
    if not proj_clean:
        raise ValueError("ssot_loss: expected a non-empty list of maps")
    batch = proj_clean[0].shape[0]
    if mode == "published":
        perm = torch.randperm(batch, generator=generator).to(proj_clean[0].device)
        total = 0
        for p in proj_clean:
            x = p.flatten(1).softmax(dim=1)
            total = total + _published_sinkhorn(x, x[perm])
        return total
    pairs = derangement_shift(batch, generator=generator, device=proj_clean[0].device)
    weights, points = stack_point_clouds([ssot_points(p, grid) for p in proj_clean])
    k = len(proj_clean)
    pairs_all = (torch.arange(k, device=pairs.device)[:, None] * batch + pairs).flatten()
    per_cloud = paired_sinkhorn_divergence(weights, points, pairs_all, **_PAIRWISE)  # [K*B]
    return per_cloud.view(k, batch).mean(dim=1).sum()


def ssot_loss_per_scale(proj_clean: list[Tensor], grid: int = 8, generator: torch.Generator | None = None) -> Tensor:
    """The reference form of ``ssot_loss(mode="pairwise")``: one Sinkhorn solve per scale.

    Equal to :func:`ssot_loss` (value and gradient, to float rounding) for
    the same ``generator``, but K solves of 38 annealing steps instead of
    one: kept for the test and the benchmark that check the stacked solve.
    """
    pairs = derangement_shift(proj_clean[0].shape[0], generator=generator, device=proj_clean[0].device)
    total = 0
    for p in proj_clean:
        x = ssot_points(p, grid)
        total = total + _pairwise_sinkhorn(x, x[pairs]).mean()
    return total


@dataclass(frozen=True)
class LossWeights:
    """Weights of L = kd*L_KD + ssot*L_SSOT + recon*L_Recon + con*L_Con.

    The paper's (the defaults, from :mod:`rdtutorial.choices`):
    L_KD + 0.2 * (1*L_SSOT + 0.01*L_Recon + 0.1*L_Con) / 1.11.
    A weight of 0 drops the term (and skips computing it): the ablations.
    """

    kd: float = 1.0
    ssot: float = PAPER_W_SSOT
    recon: float = PAPER_W_RECON
    con: float = PAPER_W_CON


PAPER_WEIGHTS = LossWeights()


@dataclass
class RDPPLoss:
    """The total RD++ loss and its (unweighted) terms, each a scalar tensor."""

    total: Tensor
    kd: Tensor
    ssot: Tensor
    recon: Tensor
    con: Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "kd", "ssot", "recon", "con")}


def rdpp_loss(
    teacher_clean: list[Tensor],
    student: list[Tensor],
    proj_clean: list[Tensor],
    teacher_noisy: list[Tensor],
    proj_noisy: list[Tensor],
    weights: LossWeights = PAPER_WEIGHTS,
    ssot_mode: str = "pairwise",
    margin: float = PAPER_MARGIN,
    generator: torch.Generator | None = None,
) -> RDPPLoss:
    """The full RD++ objective on one batch (Algorithm 1 of the paper).

    Inputs are lists of per-scale maps: E(x), D(OCBE(P(E(x)))), P(E(x)),
    E(x~), P(E(x~)). Terms with weight 0 are not computed (reported as 0).
    """
    zero = student[0].new_zeros(())
    kd = kd_loss(teacher_clean, student) if weights.kd else zero
    ssot = ssot_loss(proj_clean, mode=ssot_mode, generator=generator) if weights.ssot else zero
    recon = recon_loss(proj_noisy, proj_clean) if weights.recon else zero
    con = contrast_loss(teacher_noisy, proj_clean, margin) if weights.con else zero
    total = weights.kd * kd + weights.ssot * ssot + weights.recon * recon + weights.con * con
    return RDPPLoss(total=total, kd=kd, ssot=ssot, recon=recon, con=con)
