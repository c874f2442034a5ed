"""A training-free reference detector: nearest neighbours in a memory bank of teacher patch features.

This is the idea of PatchCore (Roth et al., "Towards Total Recall in
Industrial Anomaly Detection", CVPR 2022): describe every patch of the normal
training images by the frozen teacher's stride-8 and stride-16 features (f2,
and f3 upsampled to f2's size, each first averaged over its 3x3
neighbourhood, then concatenated), keep them all (or a greedy coreset of
them), and score a test patch by its distance to the nearest stored patch.
The image score is the largest patch score. It is written here, not taken
from anomalib, to stay small enough to read in one sitting; PatchCore's
image-score reweighting and map blurring are left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from .models.teacher import Teacher


def nearest_distances(queries: Tensor, memory: Tensor, chunk_elements: int = 2**24) -> Tensor:
    """Euclidean distance of each query [P, D] to its nearest row of ``memory`` [M, D] -> [P].

    The nearest row is searched with ``torch.cdist`` on chunks of queries
    (each distance matrix [rows, M] holds at most ``chunk_elements`` values:
    64 MiB in float32 by default); the distance to it is then computed
    directly, so an exact match gives exactly 0 (cdist's matrix-product form
    does not).
    """
    out = []
    for q in queries.split(max(1, chunk_elements // max(len(memory), 1))):
        index = torch.cdist(q, memory).argmin(dim=1)
        out.append((q - memory[index]).norm(dim=1))
    return torch.cat(out) if out else queries.new_zeros(0)


def greedy_coreset(features: Tensor, fraction: float, generator: torch.Generator | None = None,
                   projection_dim: int = 128) -> Tensor:
    """Indices [ceil(fraction * N)] of a greedy k-center coreset of ``features`` [N, D] (PatchCore).

    Distances are taken after a random Gaussian projection to ``projection_dim``
    dimensions (when D is larger), which keeps them roughly (Johnson-Lindenstrauss)
    at a fraction of the cost. The first index is random; each next one is the
    point farthest from those chosen. ``generator`` fixes both random draws.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"coreset fraction must be in (0, 1], got {fraction}")
    n, dim = features.shape
    size = math.ceil(fraction * n)
    if dim > projection_dim:
        matrix = torch.randn(dim, projection_dim, generator=generator).to(features)
        features = features @ matrix / math.sqrt(projection_dim)
    squares = features.square().sum(dim=1)  # squared distances as |a|^2 - 2 a.b + |b|^2: one mat-vec each

    def squared_distances(i: int) -> Tensor:
        return (squares - 2 * features @ features[i] + squares[i]).clamp_(min=0)

    chosen = [int(torch.randint(n, (1,), generator=generator))]
    min_dist = squared_distances(chosen[0])
    for _ in range(size - 1):
        chosen.append(int(min_dist.argmax()))
        min_dist = torch.minimum(min_dist, squared_distances(chosen[-1]))
    return torch.tensor(chosen, dtype=torch.long)


class PatchMemory:
    """Memory bank of teacher patch features; ``fit`` on normal images, then ``score``.

    ``PatchMemory(teacher).fit(train_images)`` with images [N,3,H,W] in [0, 1]
    or a dataset of items with ``"image"``; ``score(images)`` -> (maps
    [B,1,H,W], scores [B]). ``coreset`` < 1 keeps that fraction of the patches
    (greedy coreset, seeded by ``seed``); ``smooth`` averages each feature
    map over 3x3 neighbours first. Images go through the teacher
    ``batch_size`` at a time, on the teacher's device; ``chunk_elements``
    bounds each distance matrix (see :func:`nearest_distances`).
    """

    def __init__(self, teacher: Teacher, coreset: float = 1.0, seed: int = 0, smooth: bool = True,
                 batch_size: int = 32, chunk_elements: int = 2**24) -> None:
        if not 0 < coreset <= 1:
            raise ValueError(f"coreset fraction must be in (0, 1], got {coreset}")
        self.teacher = teacher
        self.coreset, self.seed, self.smooth = coreset, seed, smooth
        self.batch_size, self.chunk_elements = batch_size, chunk_elements
        self.memory: Tensor | None = None  # [M, D]

    @property
    def device(self) -> torch.device:
        """The teacher's device, where features and the memory live."""
        return self.teacher.mean.device

    def features(self, images: Tensor) -> Tensor:
        """Patch features [B, C2 + C3, H/8, W/8] of images [B,3,H,W] in [0, 1]."""
        _, f2, f3 = self.teacher(images.to(self.device))
        if self.smooth:
            f2, f3 = (F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False) for f in (f2, f3))
        f3 = F.interpolate(f3, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([f2, f3], dim=1)

    def _batches(self, images: Tensor | Dataset):
        """Image batches [b,3,H,W] of a tensor or of a dataset's items."""
        if isinstance(images, Tensor):
            yield from images.split(self.batch_size)
            return
        for start in range(0, len(images), self.batch_size):
            stop = min(start + self.batch_size, len(images))
            yield torch.stack([images[i]["image"] for i in range(start, stop)])

    @torch.no_grad()
    def fit(self, images: Tensor | Dataset) -> "PatchMemory":
        """Store the patch features of normal ``images`` ([N,3,H,W] or a dataset); returns self."""
        feats = [f.permute(0, 2, 3, 1).flatten(0, 2) for f in map(self.features, self._batches(images))]
        if not feats:
            raise ValueError("PatchMemory.fit needs at least one image")
        memory = torch.cat(feats)
        if self.coreset < 1:
            generator = torch.Generator().manual_seed(self.seed)
            memory = memory[greedy_coreset(memory, self.coreset, generator).to(memory.device)]
        self.memory = memory
        return self

    @torch.no_grad()
    def score(self, images: Tensor | Dataset) -> tuple[Tensor, Tensor]:
        """Anomaly maps [B,1,H,W] (nearest-patch distance, bilinear to the image size) and image scores [B] (max)."""
        if self.memory is None:
            raise RuntimeError("PatchMemory.score called before fit")
        maps, scores = [], []
        for batch in self._batches(images):
            f = self.features(batch)
            b, _, h, w = f.shape
            dist = nearest_distances(f.permute(0, 2, 3, 1).flatten(0, 2), self.memory, self.chunk_elements)
            dist = dist.view(b, 1, h, w)
            scores.append(dist.flatten(1).amax(dim=1))
            maps.append(F.interpolate(dist, size=batch.shape[-2:], mode="bilinear", align_corners=False))
        return torch.cat(maps), torch.cat(scores)
