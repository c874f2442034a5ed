"""History: JSON round trip and the layout of its plot."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rdtutorial.history import History


def make_history(epochs: int = 4) -> History:
    rows = [dict(epoch=e, total=3.0 / e, kd=2.0 / e, ssot=0.5 / e**3, recon=0.1, con=0.0) for e in range(1, epochs + 1)]
    evals = [dict(epoch=e, image_auroc=0.5 + 0.1 * e, pixel_auroc=0.6, aupro=0.4) for e in (2, 4)]
    return History(epochs=rows, evals=evals)


def test_save_and_load_round_trip(tmp_path):
    history = make_history()
    assert History.load(history.save(tmp_path / "runs" / "history.json")) == history


def test_plot_lays_panels_out_in_rows_and_logs_only_wide_ranges():
    fig = make_history().plot(title="demo")
    axes = fig.axes
    visible = [ax for ax in axes if ax.get_visible()]
    # total, kd, ssot, recon (con is zero throughout, so it has no panel) and the metrics: 5 of a 2 x 3 grid
    assert len(axes) == 6 and len(visible) == 5
    assert [ax.get_title() for ax in visible] == ["total loss", "L_kd", "L_ssot", "L_recon", "test metrics"]
    scales = {ax.get_title(): ax.get_yscale() for ax in visible}
    assert scales["L_ssot"] == "log"  # spans a factor of 64
    assert scales["total loss"] == scales["L_kd"] == scales["L_recon"] == "linear"
    assert fig.get_size_inches()[0] <= 3 * 3.6 + 1e-9
    plt.close(fig)
