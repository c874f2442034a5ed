"""Shared tiny fixtures, and the ``slow`` marker on the notebook cells.

``pytest -m "not slow"`` runs the unit tests; ``slow`` marks what trains for
real, spawns processes, builds or browses the book, or runs a notebook.
"""

import pytest
import torch

from rdtutorial.config import TrainConfig, preset
from rdtutorial.data import make_demo_dataset


def pytest_collection_modifyitems(items):
    """nbval's cells (``--nbval`` in addopts collects every notebook) execute a chapter: slow."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """A test that sets torch's thread count (a benchmark job run in-process) leaves it as it found it: a
    float sum taken over another number of threads differs in its last bits, and later tests compare weights
    bit for bit."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """The demo set's brick at 64 px: 8 train images, 4 normal and 2 per defect type in test."""
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, image_size=64, n_train=8, n_test_good=4, n_test_defect=2, categories=("brick",))
    return root


@pytest.fixture
def tiny_config(tiny_root):
    """``tiny_config(**changes)``: the demo profile on ``tiny_root``, 2 epochs of 2 steps, on all 8 training
    images (no calibration split: 8 are too few for its default false-alarm rate)."""

    def make(**changes) -> TrainConfig:
        base = dict(data_root=str(tiny_root), category="brick", image_size=64, batch_size=4, epochs=2,
                    noise_size=(4, 12), progress=False, eval_batch_size=8, calibration_fraction=0)
        return preset("demo", **{**base, **changes})

    return make


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a training step runs: the error must come before the first epoch."""

    def step(*args, **kwargs):
        raise AssertionError("a training step ran before the error")

    monkeypatch.setattr("rdtutorial.train.training_step", step)
