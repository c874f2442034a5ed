"""Per-epoch diagnostics of RD++ training: which term drives the projections, and what they do.

Measured on one batch per epoch (the first), after its forward pass:

- ``grad_<term>``: the norm of each *weighted* loss term's gradient on the
  projection parameters (``w * dL/dtheta_P``; KD has weight 1). A term whose
  norm is orders of magnitude below L_KD's barely moves the projections.
- ``sample_cos``: the mean cosine between the flattened projected maps
  ``vec P_k E_k(x_i)`` of two different samples i != j, averaged over scales
  (``teacher_sample_cos``: the same for ``E_k``). Near 1 means the projection
  maps every image to nearly the same features: collapse.
- ``box_cos_proj`` / ``box_cos_teacher``: inside the pseudo-anomaly boxes,
  the per-pixel channel cosine cos_c(P E(x~), P E(x)) against
  cos_c(E(x~), E(x)). If the projection removes the noise, the first is
  higher than the second.

The gradients cost one extra backward pass through the student per epoch
(``torch.autograd.grad``, which leaves ``.grad`` untouched); the rest is a
few reductions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TERMS = ("kd", "ssot", "recon", "con")


def weighted_grad_norms(terms: dict[str, Tensor], weights: dict[str, float], params: list[nn.Parameter]
                        ) -> dict[str, float]:
    """``{"grad_<term>": ||w_term * d term / d params||}`` for the terms with a non-zero weight.

    The graph is kept (``retain_graph``) so that the step's own backward can follow.
    """
    out = {}
    for name in TERMS:
        if not weights.get(name) or not terms[name].requires_grad:
            continue
        grads = torch.autograd.grad(weights[name] * terms[name], params, retain_graph=True, allow_unused=True)
        squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        out[f"grad_{name}"] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return out


def mean_sample_cosine(feats: list[Tensor]) -> float:
    """Mean over scales of the mean cosine between two different samples' flattened maps ``[B,C,H,W]``."""
    values = []
    for f in feats:
        z = F.normalize(f.detach().float().flatten(1), dim=1)
        b = z.shape[0]
        if b < 2:
            continue
        gram = z @ z.T
        values.append((gram.sum() - gram.diagonal().sum()) / (b * (b - 1)))
    return float(torch.stack(values).mean()) if values else float("nan")


def box_cosine(noisy: list[Tensor], clean: list[Tensor], masks: Tensor) -> float:
    """Mean per-pixel channel cosine between ``noisy`` and ``clean`` maps inside the boxes, over scales.

    ``masks`` ``[B,1,H,W]`` (image resolution) is max-pooled to each scale, so
    a feature pixel counts when its receptive field's centre cell holds any noise.
    """
    values = []
    for n, c in zip(noisy, clean):
        inside = F.adaptive_max_pool2d(masks.float(), n.shape[-2:])[:, 0] > 0
        if inside.any():
            cos = F.cosine_similarity(n.detach().float(), c.detach().float(), dim=1)
            values.append(cos[inside].mean())
    return float(torch.stack(values).mean()) if values else float("nan")


def projection_diagnostics(
    terms: dict[str, Tensor],
    weights: dict[str, float],
    projections: nn.Module,
    teacher_clean: list[Tensor],
    teacher_noisy: list[Tensor],
    proj_clean: list[Tensor],
    proj_noisy: list[Tensor],
    masks: Tensor | None,
) -> dict[str, float]:
    """Every diagnostic of the module docstring for one RD++ batch, as floats."""
    params = [p for p in projections.parameters() if p.requires_grad]
    out = weighted_grad_norms(terms, weights, params)
    out["sample_cos"] = mean_sample_cosine(proj_clean)
    out["teacher_sample_cos"] = mean_sample_cosine(teacher_clean)
    if masks is not None:
        out["box_cos_proj"] = box_cosine(proj_noisy, proj_clean, masks)
        out["box_cos_teacher"] = box_cosine(teacher_noisy, teacher_clean, masks)
    return out
