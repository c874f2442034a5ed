# The Sinkhorn iterations follow those of geomloss's SamplesLoss("sinkhorn") by
# Jean Feydy (https://www.kernel-operations.io/geomloss/, version 0.3.1:
# geomloss/_legacy/sinkhorn_divergence.py and sinkhorn_samples.py). Its licence:
#
# MIT License
# Copyright (c) 2019 Jean Feydy
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.

"""One Sinkhorn solve for many pairs of point clouds: the debiased divergence of L_SSOT.

The iterations are geomloss' tensorized ones (``SamplesLoss("sinkhorn", p=2,
debias=True)``): log-domain soft-min updates, averaged symmetric steps,
epsilon annealing from ``diameter**2`` down to ``blur**2`` by ``scaling**2``,
and a last extrapolation that alone carries the gradient. Three things differ,
and only in cost:

- the soft-min takes its exponentials in base 2. At small epsilon nearly
  every kernel entry underflows (98% at blur 0.05 on the unit sphere), and
  ``torch.exp`` takes a slow path on underflowing floats on a CPU (about 20x
  slower, measured), while ``torch.exp2`` does not;
- each cloud is compared with another cloud of the same batch
  (``y = x[pairs]``), so the self-transport of ``y`` is that of ``x``,
  permuted: it is solved once, not twice;
- the remaining three problems share one soft-min call per iteration, a
  third of the small-tensor operations that bound the loss on a CPU.

The reference form, geomloss called once per scale, is
:func:`rdtutorial.losses.ssot_loss_per_scale`; a test checks that both agree.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LOG2E = 1.0 / math.log(2.0)


def epsilon_schedule(diameter: float, blur: float, scaling: float) -> list[float]:
    """Temperatures of the annealing, as geomloss makes them for p = 2: ``diameter**2 ... blur**2``."""
    steps = torch.arange(2 * math.log(diameter), 2 * math.log(blur), 2 * math.log(scaling), dtype=torch.float64)
    return [diameter**2] + steps.exp().tolist() + [blur**2]


def half_squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``|x_i - y_j|^2 / 2``: ``[B,N,D] x [B,M,D] -> [B,N,M]``."""
    sq = (x * x).sum(-1)[:, :, None] - 2 * x @ y.transpose(1, 2) + (y * y).sum(-1)[:, None, :]
    return sq / 2


def softmin(eps: float, cost: Tensor, h: Tensor) -> Tensor:
    """``f_i = -eps log sum_j exp(h_j - C_ij / eps)``: ``cost [B,N,M]``, ``h [B,M]`` -> ``[B,N]``."""
    z = torch.sub(h[:, None, :] * _LOG2E, cost, alpha=_LOG2E / eps)  # the exponent, in base 2
    top = z.detach().amax(dim=2, keepdim=True)
    return -eps / _LOG2E * (top[:, :, 0] + z.sub_(top).exp2_().sum(dim=2).log2())


def _log_weights(a: Tensor) -> Tensor:
    """``log a``, with -100000 where a weight is 0 (as geomloss does)."""
    return torch.where(a > 0, a.log(), torch.full_like(a, -100000.0))


def paired_sinkhorn_divergence(
    a: Tensor, x: Tensor, pairs: Tensor, blur: float, scaling: float, diameter: float
) -> Tensor:
    """Debiased Sinkhorn divergence S_eps(alpha_i, alpha_pairs[i]) for every cloud i: ``[B]``.

    ``x [B,N,D]`` holds B clouds, ``a [B,N]`` their weights (each row sums
    to 1; weight 0 marks padding), ``pairs [B]`` a permutation of the
    clouds. Cost |x - y|^2 / 2, epsilon = blur^2.

    The three problems of each pair (x -> y, y -> x and x -> x) advance
    together as one ``[3B, N, N]`` soft-min per iteration.
    """
    b, y = a[pairs], x[pairs]
    # The right-hand sides are detached, as in geomloss: the gradient is the
    # envelope theorem's, through the last extrapolation only.
    costs = torch.cat([
        half_squared_distances(x, y.detach()),  # for f_ba, on x
        half_squared_distances(y, x.detach()),  # for g_ab, on y
        half_squared_distances(x, x.detach()),  # for f_aa, on x
    ])
    rhs_log = torch.cat([_log_weights(b), _log_weights(a), _log_weights(a)])  # the weights each soft-min sums over
    swap = torch.cat([torch.arange(n, m) for n, m in ((len(a), 2 * len(a)), (0, len(a)), (2 * len(a), 3 * len(a)))])
    swap = swap.to(x.device)  # f_ba updates from g_ab, g_ab from f_ba, f_aa from itself
    schedule = epsilon_schedule(diameter, blur, scaling)
    with torch.no_grad():
        potentials = softmin(schedule[0], costs, rhs_log)  # [f_ba; g_ab; f_aa], [3B, N]
        for eps in schedule:
            potentials = (potentials + softmin(eps, costs, rhs_log + potentials[swap] / eps)) / 2
    f_ba, g_ab, f_aa = softmin(eps, costs, rhs_log + potentials[swap] / eps).chunk(3)
    g_bb = f_aa[pairs]  # the self-transport of y = x[pairs]
    return (a * (f_ba - f_aa)).sum(dim=1) + (b * (g_ab - g_bb)).sum(dim=1)
