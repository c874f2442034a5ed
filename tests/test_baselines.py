"""The training-free reference detector: exact nearest-neighbour distances, coreset, scores of the real teacher."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from torch import nn

from rdtutorial.baselines import PatchMemory, greedy_coreset, nearest_distances
from rdtutorial.models import build_teacher


class PoolTeacher(nn.Module):
    """A stand-in teacher whose f2 / f3 are the image averaged over 8x8 / 16x16 blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))

    def forward(self, images):
        return [F.avg_pool2d(images, 4), F.avg_pool2d(images, 8), F.avg_pool2d(images, 16)]


def test_nearest_distances_are_exact_on_a_hand_made_case():
    memory = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    queries = torch.tensor([[3.0, 4.0], [10.0, 0.0], [13.0, -4.0], [5.0, 0.0]])
    assert torch.equal(nearest_distances(queries, memory), torch.tensor([5.0, 0.0, 5.0, 5.0]))


def test_nearest_distances_agree_with_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    memory, queries = torch.randn(50, 7, generator=g), torch.randn(33, 7, generator=g)
    brute = (queries[:, None] - memory[None]).norm(dim=2).amin(dim=1)
    for chunk_elements in (1, 50 * 4, 2**24):  # one query per chunk, 4 per chunk, all at once
        torch.testing.assert_close(nearest_distances(queries, memory, chunk_elements), brute)
    assert torch.equal(nearest_distances(memory[[3, 17]], memory), torch.zeros(2))


def test_features_maps_and_scores_with_a_stand_in_teacher():
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model = PatchMemory(PoolTeacher(), smooth=False, batch_size=2).fit(images[:2])
    f = model.features(images)
    assert f.shape == (3, 6, 8, 8)
    torch.testing.assert_close(f[:, :3], F.avg_pool2d(images, 8))
    assert model.memory.shape == (2 * 64, 6)
    maps, scores = model.score(images)
    assert maps.shape == (3, 1, 64, 64) and scores.shape == (3,)
    assert scores[:2].tolist() == [0.0, 0.0] and scores[2] > 0
    expected = nearest_distances(f[2].permute(1, 2, 0).reshape(-1, 6), model.memory).max()
    torch.testing.assert_close(scores[2], expected)
    dataset = [{"image": image} for image in images[:2]]
    assert torch.equal(PatchMemory(PoolTeacher(), smooth=False).fit(dataset).memory, model.memory)


def test_greedy_coreset_keeps_the_fraction_is_seeded_and_covers_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    points = (centres[:, None] + 0.1 * torch.randn(3, 20, 2, generator=g)).reshape(60, 2)
    chosen = greedy_coreset(points, 3 / 60, torch.Generator().manual_seed(1))
    assert sorted((chosen // 20).tolist()) == [0, 1, 2]  # one point of each cluster
    features = torch.randn(500, 200, generator=g)  # projected to 128 dimensions
    a = greedy_coreset(features, 0.1, torch.Generator().manual_seed(3))
    b = greedy_coreset(features, 0.1, torch.Generator().manual_seed(3))
    assert len(a) == math.ceil(0.1 * 500) and len(set(a.tolist())) == len(a) and torch.equal(a, b)
    with pytest.raises(ValueError, match="1.5"):
        greedy_coreset(features, 1.5)


@pytest.fixture(scope="module")
def teacher():
    return build_teacher("efficientnet_lite0")


def _crops(texture: np.ndarray, n: int, top: bool, size: int = 64) -> torch.Tensor:
    """``n`` crops [n,3,size,size] in [0, 1] from the top or bottom half of a grey texture."""
    half = texture[: texture.shape[0] // 2] if top else texture[texture.shape[0] // 2 :]
    rng = np.random.default_rng(0 if top else 1)
    crops = [half[y : y + size, x : x + size] for y, x in rng.integers(0, half.shape[0] - size, size=(n, 2))]
    return torch.from_numpy(np.stack(crops)).float().div(255)[:, None].expand(-1, 3, -1, -1).contiguous()


def test_real_teacher_scores_a_training_image_zero_and_a_pasted_patch_higher(teacher):
    brick = skdata.brick()
    train, test = _crops(brick, 8, top=True), _crops(brick, 4, top=False)
    pasted = test.clone()
    pasted[:, :, 20:40, 24:44] = _crops(skdata.gravel(), 4, top=True)[:, :, :20, :20]
    model = PatchMemory(teacher).fit(train)
    maps, scores = model.score(torch.cat([train[:2], test, pasted]))
    assert maps.shape == (10, 1, 64, 64)
    clean, defective = scores[2:6], scores[6:]
    assert scores[:2].max() < 1e-3 * clean.min()  # ~0 (recomputed in another batch)
    assert (defective > clean).all()
    box = maps[:, 0, 20:40, 24:44].mean(dim=(1, 2))
    assert (box[6:] > box[2:6]).all()  # the map rises where the patch was pasted


def test_coreset_memory_has_the_fraction_and_is_deterministic(teacher):
    train = _crops(skdata.brick(), 4, top=True)
    full = PatchMemory(teacher).fit(train).memory
    a = PatchMemory(teacher, coreset=0.25, seed=5).fit(train).memory
    b = PatchMemory(teacher, coreset=0.25, seed=5).fit(train).memory
    assert a.shape == (math.ceil(0.25 * len(full)), full.shape[1]) and torch.equal(a, b)
    assert (nearest_distances(a, full) == 0).all()  # rows of the full memory
