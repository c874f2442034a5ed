"""Every chapter runs end to end in the paper profile at toy scale, on the CPU.

No chapter can be validated in the paper profile for real here (it needs a CUDA
GPU, the Wide-ResNet-50-2 ImageNet weights and MVTec AD), so each one is
executed with ``RDT_PROFILE=paper RDT_QUICK=1`` on the CPU, with a random
Wide-ResNet-50-2 and a small MVTec-layout folder written from the demo
generator: every cell must run without an error. This is the pass a reader can
make (with real weights and data) before spending GPU hours.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from rdtutorial.data import DEMO_CATEGORIES, make_demo_dataset

BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
# The MVTec AD categories the chapters use in the paper profile (chapter 10's quick
# mode takes the first two), each a copy of a demo category.
PAPER_CATEGORIES = {"bottle": "brick", "cable": "grass", "carpet": "gravel"}


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    """A tiny MVTec-layout folder: 8 train images, 4 normal and 6 defective test images per category."""
    base = tmp_path_factory.mktemp("paper-quick")
    demo = make_demo_dataset(base / "demo", image_size=64, n_train=8, n_test_good=4, n_test_defect=2,
                             categories=DEMO_CATEGORIES)
    root = base / "mvtec"
    for category, source in PAPER_CATEGORIES.items():
        shutil.copytree(demo / source, root / category)
    return root


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.slow
def test_chapter_runs_in_the_paper_profile_quick_mode(path, mvtec_root, tmp_path, monkeypatch):
    for name, value in {
        "RDT_PROFILE": "paper",
        "RDT_QUICK": "1",
        "RDT_DEVICE": "cpu",
        "RDT_TEACHER_WEIGHTS": "random",
        "RDT_MVTEC_DIR": str(mvtec_root),
        "RDT_DATA_DIR": str(tmp_path / "data"),
        "RDT_RUNS_DIR": str(tmp_path / "runs"),
        "MPLBACKEND": "agg",
    }.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}})
    client.execute()  # raises CellExecutionError, naming the cell, on the first failing cell
    printed = "".join(
        "".join(out.get("text", "")) for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "QUICK MODE" in printed, "quick mode must say so at the top"
