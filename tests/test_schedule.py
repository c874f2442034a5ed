"""The schedule estimate: its arithmetic, and a measured run on the CPU."""

import pytest

from rdtutorial.config import PAPER_EPOCHS, preset
from rdtutorial.schedule import MVTEC_TEST_IMAGES, MVTEC_TRAIN_IMAGES, estimate_schedule, measure_schedule


def test_mvtec_counts():
    assert sum(MVTEC_TRAIN_IMAGES.values()) == 3629 and sum(MVTEC_TEST_IMAGES.values()) == 1725
    assert set(MVTEC_TRAIN_IMAGES) == set(MVTEC_TEST_IMAGES) == set(PAPER_EPOCHS)


def test_estimate_is_epochs_times_steps_times_step_time_plus_one_evaluation():
    est = estimate_schedule(step_s=0.5, eval_s_per_image=0.01, batch_size=16)
    # bottle: 200 epochs x (209 // 16 = 13) steps x 0.5 s + 83 test images x 0.01 s
    assert est.per_category_s["bottle"] == pytest.approx(200 * 13 * 0.5 + 0.83)
    assert est.total_s == pytest.approx(sum(
        PAPER_EPOCHS[c] * (MVTEC_TRAIN_IMAGES[c] // 16) * 0.5 + MVTEC_TEST_IMAGES[c] * 0.01 for c in PAPER_EPOCHS))
    text = str(est)
    assert "all 15 categories (3060 epochs)" in text and "not measured (no GPU)" in text


@pytest.mark.slow
def test_measure_schedule_runs_the_step_on_the_cpu():
    cfg = preset("demo", image_size=64, batch_size=2, noise_size=(3, 8), eval_batch_size=2)
    est = measure_schedule(cfg, repeats=1, warmup=0)
    assert est.step_s > 0 and est.eval_s_per_image > 0
    assert est == estimate_schedule(est.step_s, est.eval_s_per_image, batch_size=2, device="cpu")
