"""Every computed number a chapter's prose quotes is on the page, in an output that nbval compares.

nbval checks that a fresh run prints what the notebook stores; this test checks that the prose quotes what
the notebook stores. Together they fail when a sentence's number drifts from the run it describes. A decimal
in a markdown cell (outside code spans, code blocks and math) must appear, with its sign when it has one, in the
compared text outputs of the same notebook (cells not tagged ``nbval-ignore-output``), or be a constant the
chapter's code itself types (a setting such as a margin), or be listed in :data:`QUOTED` with where it comes
from (the papers' published numbers). Numbers a cell asserts are in its compared output too: the cell prints
the value it asserted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from test_notebook_outputs import NOTEBOOKS, compared_text

# Decimals quoted from elsewhere (published papers, the reference), per chapter, with their source.
QUOTED: dict[str, dict[str, str]] = {
    "01_data_and_metrics.ipynb": {
        "93.9": "RD4AD paper, MVTec AD mean AUPRO (per-image variant of its code)",
        "94.99": "RD++ paper, MVTec AD mean AUPRO (per-image variant of its code)",
    },
    "12_gpu_run.ipynb": {
        "99.1": "image AUROC a user of the public RD++ code reported on MVTec AD (reference, section 5)",
        "95.63": "RD++ paper, BTAD image AUROC",
        "97.43": "RD++ paper, BTAD pixel AUROC",
    },
}
NUMBER = re.compile(r"(?<![\w.])([-−+]?)(\d+\.\d+)(?![\w.])")
CODE_OR_MATH = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\{cite[^}]*\}`[^`]*`"
                          r"|CC BY[-A-Z]* \d\.\d", re.DOTALL)  # ... and licence versions


def prose_numbers(markdown: str) -> list[tuple[str, str]]:
    """``(sign, digits)`` of every decimal in ``markdown`` outside code and math (``−`` read as ``-``)."""
    text = CODE_OR_MATH.sub(" ", markdown)
    return [(m.group(1).replace("−", "-"), m.group(2)) for m in NUMBER.finditer(text)]


def found_in(sign: str, digits: str, text: str) -> bool:
    """Whether ``text`` holds the number as a token (with ``sign``, when the prose gives one)."""
    signs = {"-": "[-−]", "+": r"\+", "": "[-−+]?"}[sign]
    return re.search(rf"(?<![\w.]){signs}{re.escape(digits)}(?![\d])", text) is not None


def test_the_check_reads_numbers_as_a_reader_does():
    assert prose_numbers("RD 0.813 vs −0.006 [+0.010, 1.5%]; `0.5` $m = 0.9$ v1.2.3 CC BY-NC-SA 4.0") == [
        ("", "0.813"), ("-", "0.006"), ("+", "0.010"), ("", "1.5")]
    assert found_in("-", "0.006", "brick  -0.006 [-0.04, +0.02]")
    assert not found_in("+", "0.006", "brick  -0.006")
    assert not found_in("", "0.81", "0.813")
    assert found_in("", "0.81", "AUROC 0.81.")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_in_the_prose_is_a_compared_output(path: Path):
    cells = json.loads(path.read_text())["cells"]
    outputs = "\n".join(
        compared_text(c) for c in cells
        if c["cell_type"] == "code" and "nbval-ignore-output" not in c.get("metadata", {}).get("tags", []))
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    quoted = QUOTED.get(path.name, {})
    missing = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        for sign, digits in prose_numbers("".join(cell["source"])):
            if found_in(sign, digits, outputs) or found_in("", digits, code) or digits in quoted:
                continue
            missing.append(f"cell {i}: {sign}{digits}")
    assert not missing, (
        f"{path.name}: numbers in the prose that no compared output prints (print them in a compared "
        f"cell, assert and print them, or list a quoted constant in QUOTED with its source): {missing}")
