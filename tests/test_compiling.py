"""TrainConfig.compile: a failing torch.compile falls back loudly, and the run is the plain run."""

import pytest
import torch

from rdtutorial import compiling
from rdtutorial.data import make_demo_dataset
from rdtutorial.config import preset
from rdtutorial.train import train


def failing_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


@pytest.mark.slow
def test_a_failing_compile_warns_and_trains_as_without(tmp_path, monkeypatch):
    root = make_demo_dataset(tmp_path / "demo", image_size=64, n_train=8, n_test_good=2, n_test_defect=1,
                             categories=("brick",))
    cfg = preset("demo", data_root=str(root), image_size=64, batch_size=4, epochs=1, noise_size=(4, 12),
                 progress=False, calibration_fraction=0)
    plain, plain_history = train(cfg)
    real = compiling.compile_parts
    monkeypatch.setattr("rdtutorial.train.compile_parts", lambda model: real(model, backend=failing_backend))
    with pytest.warns(RuntimeWarning, match="training WITHOUT compilation"):
        compiled, history = train(cfg.replace(compile=True))
    assert history.epochs[0]["total"] == plain_history.epochs[0]["total"]
    for (name, a), b in zip(plain.state_dict().items(), compiled.state_dict().values()):
        assert torch.equal(a, b), name
