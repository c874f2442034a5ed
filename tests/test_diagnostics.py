"""Training diagnostics, the residual projection, the validation demo set and the ablation's statistics."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rdtutorial import ablation
from rdtutorial.config import PAPER_RDPP, preset
from rdtutorial.data import MVTecAD, clean_counterpart
from rdtutorial.diagnostics import box_cosine, mean_sample_cosine, weighted_grad_norms
from rdtutorial.history import History
from rdtutorial.models.projection import MultiScaleProjection, Projection
from rdtutorial.train import train

DIAGNOSTICS = ("grad_kd", "grad_ssot", "grad_recon", "grad_con", "sample_cos", "teacher_sample_cos",
               "box_cos_proj", "box_cos_teacher")


def test_weighted_grad_norms_are_the_norms_of_each_weighted_gradient():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    terms = {"kd": (w**2).sum(), "ssot": w.sum(), "recon": w[0] * 3, "con": torch.zeros(())}
    norms = weighted_grad_norms(terms, {"kd": 1.0, "ssot": 0.5, "recon": 0.0, "con": 1.0}, [w])
    assert norms["grad_kd"] == pytest.approx(math.hypot(2.0, 4.0))
    assert norms["grad_ssot"] == pytest.approx(0.5 * math.sqrt(2.0))
    assert "grad_recon" not in norms and "grad_con" not in norms  # weight 0; a constant has no gradient
    assert w.grad is None  # the step's own backward is untouched


def test_sample_cosine_tells_collapse_from_diversity():
    same = torch.randn(1, 4, 3, 3).expand(5, 4, 3, 3)
    assert mean_sample_cosine([same]) == pytest.approx(1.0)
    orthogonal = torch.eye(4).view(4, 4, 1, 1)
    assert mean_sample_cosine([orthogonal]) == pytest.approx(0.0, abs=1e-6)


def test_box_cosine_reads_only_inside_the_boxes():
    clean = torch.ones(2, 3, 4, 4)
    noisy = clean.clone()
    noisy[:, :, :2, :2] = -1.0  # opposite inside the box
    noisy[:, :, 3:, 3:] = -1.0  # and outside it, where it must not count
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, :8, :8] = 1
    assert box_cosine([noisy], [clean], masks) == pytest.approx(-1.0)
    assert box_cosine([clean], [clean], masks) == pytest.approx(1.0)


def test_residual_projection_starts_at_the_identity_and_learns_its_scale():
    proj = MultiScaleProjection((8, 16), residual=True)
    feats = [torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3)]
    for out, f in zip(proj(feats), feats):
        assert torch.equal(out, f)
    sum(o.square().sum() for o in proj(feats)).backward()
    assert all(p.scale.grad.abs().sum() > 0 for p in proj)
    assert Projection(8).scale is None  # the paper's projection has no residual path


@pytest.mark.slow
def test_diagnostics_are_recorded_and_do_not_change_training(tiny_config):
    model_on, on = train(tiny_config())
    model_off, off = train(tiny_config(diagnostics=False))
    for (name, a), b in zip(model_on.state_dict().items(), model_off.state_dict().values()):
        assert torch.equal(a, b), name
    assert [e["total"] for e in on.epochs] == [e["total"] for e in off.epochs]
    assert all(set(DIAGNOSTICS) <= set(e) for e in on.epochs)
    assert not any("sample_cos" in e for e in off.epochs)
    e = on.epochs[-1]
    assert e["grad_kd"] > e["grad_ssot"] > 0 and e["grad_recon"] > 0
    assert e["box_cos_teacher"] < 0.95 and e["sample_cos"] < 0.95  # 0.80 and 0.61: the boxes change, samples differ
    fig = on.plot()
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[-3:] == ["weighted gradient on P", "cos between samples", "cos(noisy, clean) in boxes"]
    assert fig.axes[titles.index("weighted gradient on P")].get_yscale() == "log"


@pytest.mark.slow
def test_kd_only_diagnostics_measure_noise_without_using_the_training_generator(tiny_config):
    kd = dict(w_ssot=0.0, w_recon=0.0, w_con=0.0)
    model_on, on = train(tiny_config(**kd))
    model_off, _ = train(tiny_config(diagnostics=False, **kd))
    for a, b in zip(model_on.state_dict().values(), model_off.state_dict().values()):
        assert torch.equal(a, b)
    assert set(on.epochs[-1]) >= {"grad_kd", "box_cos_proj", "box_cos_teacher"}
    assert "grad_ssot" not in on.epochs[-1]


@pytest.mark.slow
def test_residual_rdpp_trains_and_the_paper_settings_are_the_paper_profile(tiny_config):
    _, history = train(tiny_config(projection="residual"))
    assert history.epochs[-1]["kd"] > 0
    paper = preset("paper", device="cpu")
    assert {k: getattr(paper, k) for k in PAPER_RDPP} == PAPER_RDPP
    with pytest.raises(ValueError, match="projection"):
        tiny_config(projection="identity")


def test_history_without_diagnostics_plots_as_before():
    history = History(epochs=[dict(epoch=1, total=1.0, kd=1.0)], evals=[])
    assert [ax.get_title() for ax in history.plot().axes if ax.get_visible()] == ["total loss", "L_kd"]


def test_demo_keeps_each_defects_clean_original(tiny_root):
    test = MVTecAD(tiny_root, "brick", split="test", image_size=64)
    defective = [test[i] for i in range(len(test)) if test[i]["label"] == 1]
    assert defective and len(test) == 4 + 3 * 2  # the clean folder is not read as test data
    for item in defective:
        clean = np.asarray(Image.open(clean_counterpart(item["path"])), dtype=np.float32) / 255
        image = item["image"].permute(1, 2, 0).numpy()
        outside = item["mask"][0].numpy() == 0
        same = np.isclose(image, clean, atol=1 / 255).all(axis=-1)
        assert same[outside].mean() > 0.8 and same[~outside].mean() < 0.5
    with pytest.raises(ValueError, match="not a defective test image"):
        clean_counterpart(Path(tiny_root) / "brick" / "test" / "good" / "000.png")


def test_validation_demo_set_is_another_generator_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("RDT_DATA_DIR", str(tmp_path))
    from rdtutorial.profiles import chapter_config
    test_cfg, val_cfg = chapter_config("demo"), chapter_config("demo", validation=True)
    assert Path(val_cfg.data_root) != Path(test_cfg.data_root)
    a = Path(test_cfg.data_root, "brick", "test", "good", "000.png").read_bytes()
    b = Path(val_cfg.data_root, "brick", "test", "good", "000.png").read_bytes()
    assert a != b
    with pytest.raises(ValueError, match="validation"):
        chapter_config("paper", validation=True)


def test_ablation_pairs_runs_by_category_and_seed_and_counts_collapses():
    runs = []
    for category, shift in (("brick", 0.05), ("grass", 0.15)):
        for seed in range(5):
            base = 0.6 + 0.01 * seed
            runs.append(dict(config="rd", category=category, seed=seed, image_auroc=base, pixel_auroc=base,
                             aupro=base, train_seconds=1.0))
            pixel = 0.4 if seed == 0 else base + shift
            runs.append(dict(config="rdpp", category=category, seed=seed, image_auroc=base + shift,
                             pixel_auroc=pixel, aupro=base - shift, train_seconds=2.0))
    rows = {r["config"]: r for r in ablation.summarise(runs)}
    assert rows["rdpp"]["collapsed"] == 2 and rows["rd"]["collapsed"] == 0
    diffs = {d["category"]: d for d in ablation.paired(runs) if d["config"] == "rdpp"}
    assert set(diffs) == {"brick", "grass", "all"} and diffs["all"]["pairs"] == 10
    assert diffs["brick"]["image_auroc"] == pytest.approx(0.05)
    assert diffs["brick"]["image_auroc_ci"] == pytest.approx((0.05, 0.05))  # a constant difference
    assert diffs["all"]["image_auroc"] == pytest.approx(0.1)
    # five differences of 0.05 and five of 0.15: a resample's mean is 0.05 + 0.01 K, K ~ Binomial(10, 1/2),
    # whose 2.5% and 97.5% quantiles are 2 and 8
    assert diffs["all"]["image_auroc_ci"] == pytest.approx((0.07, 0.13))
    assert diffs["all"]["aupro_ci"][1] < 0  # worse on every pair: the interval lies below zero
    assert "paired difference against rd" in ablation.table(ablation.summarise(runs), ablation.paired(runs))
