"""Each loss against its formula on small hand-built tensors, and L_SSOT's two modes."""

import math

import pytest
import torch

from rdtutorial.losses import (
    PAPER_WEIGHTS,
    LossWeights,
    contrast_loss,
    derangement_shift,
    kd_loss,
    rdpp_loss,
    recon_loss,
    ssot_loss,
    ssot_loss_per_scale,
    ssot_points,
    stack_point_clouds,
)


def test_kd_loss_is_one_minus_flattened_cosine():
    # one sample, one scale, 2 channels x 1 x 2 pixels: vec a = (1, 0, 0, 1), vec b = (1, 0, 0, 0)
    a = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    b = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    expected = 1 - 1 / math.sqrt(2)
    torch.testing.assert_close(kd_loss([a], [b]), torch.tensor(expected))
    # summed over scales, averaged over samples
    c = torch.cat([a, a])
    d = torch.cat([b, a])
    torch.testing.assert_close(kd_loss([c, c], [d, d]), torch.tensor(2 * expected / 2))


def test_kd_loss_differs_from_per_pixel_cosine():
    # pixel 1 matches exactly and is large; pixel 2 is small and orthogonal
    t = torch.tensor([[[[10.0, 0.0]], [[0.0, 0.1]]]])
    s = torch.tensor([[[[10.0, 0.1]], [[0.0, 0.0]]]])
    flat = kd_loss([t], [s])
    per_pixel = recon_loss([t], [s])  # per-pixel cosine with the same arguments
    assert flat < 1e-3 < 0.4 < per_pixel


def test_recon_loss_is_per_pixel():
    a = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])  # pixel vectors (1, 0) and (1, 1)
    b = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]]]])  # pixel vectors (0, 1) and (1, 1)
    expected = ((1 - 0.0) + (1 - 1.0)) / 2
    torch.testing.assert_close(recon_loss([a], [b]), torch.tensor(expected))


def test_contrast_loss_is_a_hinge_at_the_margin():
    t = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]])  # two samples, vec (1, 0)
    p = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])  # cos 1 and cos 1/sqrt(2)
    expected = ((1 - 0.5) + (1 / math.sqrt(2) - 0.5)) / 2
    torch.testing.assert_close(contrast_loss([t], [p]), torch.tensor(expected))
    torch.testing.assert_close(contrast_loss([t], [p], margin=0.9), torch.tensor(0.1 / 2))
    far = torch.tensor([[[[0.0, 1.0]]], [[[-1.0, 0.0]]]])
    assert contrast_loss([t], [far]).item() == 0.0


def test_losses_check_their_inputs():
    a = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="scale 0 shapes differ"):
        kd_loss([a], [torch.rand(2, 3, 4, 5)])
    with pytest.raises(ValueError, match="equally long"):
        recon_loss([a, a], [a])
    with pytest.raises(ValueError, match="mode must be one of"):
        ssot_loss([a], mode="2d")
    with pytest.raises(ValueError, match="at least 2"):
        ssot_loss([a[:1]])


def test_derangement_has_no_fixed_point():
    g = torch.Generator().manual_seed(0)
    for b in range(2, 9):
        for _ in range(20):
            perm = derangement_shift(b, generator=g)
            assert sorted(perm.tolist()) == list(range(b))
            assert (perm != torch.arange(b)).all()


def proj_batch(seed: int, batch: int = 4, shapes=None):
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or [(batch, 16, 16, 16), (batch, 32, 8, 8), (batch, 64, 4, 4)]
    return [torch.randn(s, generator=g).requires_grad_() for s in shapes]


def test_published_ssot_is_zero_with_zero_gradient():
    proj = proj_batch(0)
    loss = ssot_loss(proj, mode="published", generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert abs(loss.item()) < 1e-8
    assert max(p.grad.abs().max().item() for p in proj) < 1e-10


def test_pairwise_ssot_is_positive_with_a_gradient():
    proj = proj_batch(0)
    loss = ssot_loss(proj, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0.05
    assert min(p.grad.abs().max().item() for p in proj) > 1e-4


def test_pairwise_ssot_is_zero_for_identical_samples():
    one = proj_batch(1, batch=1)
    same = [p.detach().expand(4, *p.shape[1:]).contiguous() for p in one]
    assert abs(ssot_loss(same).item()) < 1e-6


def test_pairwise_ssot_equals_the_mean_over_pairs_of_sinkhorn():
    from geomloss import SamplesLoss

    proj = [p.detach() for p in proj_batch(2)]
    loss = ssot_loss(proj, generator=torch.Generator().manual_seed(3))
    perm = derangement_shift(4, generator=torch.Generator().manual_seed(3))
    sinkhorn = SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.9, diameter=2.0, debias=True)
    expected = 0
    for p in proj:
        x = ssot_points(p)
        expected += sum(sinkhorn(x[i], x[perm[i]]) for i in range(4)) / 4
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shapes", [
    [(4, 16, 16, 16), (4, 32, 8, 8), (4, 64, 4, 4)],  # 64, 64 and 16 points: the last scale is padded
    [(8, 24, 32, 32), (8, 40, 16, 16), (8, 112, 8, 8)],  # the demo teacher at 128 px
    [(2, 256, 16, 16), (2, 512, 8, 8), (2, 1024, 4, 4)],  # Wide-ResNet-50-2 widths, batch 2
])
def test_one_stacked_solve_equals_one_solve_per_scale(shapes):
    one = proj_batch(5, shapes=shapes)
    per_scale = [p.detach().clone().requires_grad_() for p in one]
    stacked = ssot_loss(one, generator=torch.Generator().manual_seed(7))
    reference = ssot_loss_per_scale(per_scale, generator=torch.Generator().manual_seed(7))
    assert reference.item() > 0.05
    torch.testing.assert_close(stacked, reference, rtol=1e-5, atol=1e-5)
    stacked.backward()
    reference.backward()
    for k, (a, b) in enumerate(zip(one, per_scale)):
        assert b.grad.norm() > 1e-4, f"scale {k} has no gradient to compare"
        # float32 floor: geomloss against itself on the same clouds with zero-padded
        # channels (an identical problem) differs by 6e-6..8e-6 in this norm.
        relative = ((a.grad - b.grad).norm() / b.grad.norm()).item()
        assert relative < 5e-5, f"scale {k}: gradients differ by {relative:.2e} (relative, L2)"


def test_stacked_clouds_keep_distances_and_mass():
    g = torch.Generator().manual_seed(0)
    clouds = [torch.nn.functional.normalize(torch.randn(2, n, d, generator=g), dim=-1) for n, d in ((4, 3), (2, 5))]
    weights, points = stack_point_clouds(clouds)
    assert points.shape == (4, 4, 5) and weights.shape == (4, 4)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
    assert (weights[2:, 2:] == 0).all()
    torch.testing.assert_close(torch.cdist(points[2:, :2], points[2:, :2]), torch.cdist(clouds[1], clouds[1]))


def test_ssot_points_are_bounded_and_unit():
    x = ssot_points(torch.randn(2, 8, 32, 32), grid=8)
    assert x.shape == (2, 64, 8)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(2, 64))
    assert ssot_points(torch.randn(2, 8, 4, 4), grid=8).shape == (2, 16, 8)


def test_ssot_restores_grad_mode():
    with torch.no_grad():
        ssot_loss(proj_batch(0))
        assert not torch.is_grad_enabled()


def test_rdpp_loss_weights_and_ablation():
    g = torch.Generator().manual_seed(0)
    t, s, p, tn, pn = ([torch.randn(4, 8, 8, 8, generator=g)] for _ in range(5))
    out = rdpp_loss(t, s, p, tn, pn, generator=torch.Generator().manual_seed(1))
    expected = out.kd + 0.2 * (out.ssot + 0.01 * out.recon + 0.1 * out.con) / 1.11
    torch.testing.assert_close(out.total, expected)
    assert PAPER_WEIGHTS.ssot == pytest.approx(0.2 / 1.11)
    kd_only = rdpp_loss(t, s, p, tn, pn, weights=LossWeights(ssot=0, recon=0, con=0))
    torch.testing.assert_close(kd_only.total, kd_loss(t, s))
    assert kd_only.ssot.item() == kd_only.recon.item() == kd_only.con.item() == 0.0
    assert set(out.as_floats()) == {"total", "kd", "ssot", "recon", "con"}
