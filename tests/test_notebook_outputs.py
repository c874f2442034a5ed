"""The stored notebook outputs that nbval compares must come out the same on any CPU.

The last digits of a reduction, a convolution or an optimiser step follow the
CPU's vector unit, the thread count and the BLAS/oneDNN kernels, so a compared
output (a cell not tagged ``nbval-ignore-output``) may print a computed decimal
with at most 4 significant digits. nbval compares every text output (stream,
``text/plain``, ``text/html``, ...; not PNG/JPEG images), and so does this test.
Notebook code is read in a narrow column: its lines stay within 80 characters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
MAX_DIGITS = 4
MAX_LINE = 80
# A decimal number (optionally with an exponent), not part of a word, a version or a path.
DECIMAL = re.compile(r"(?<![\w./-])[-+]?(\d+\.\d+)(?:e[-+]?\d+)?(?![\w.])", re.IGNORECASE)
# Values exact by construction, the same on every machine, allowed wherever a chapter prints them:
EXACT = {
    repr(0.2 / 1.11),  # the paper's loss weights, Python float constants (repr is exact)
    repr(0.2 * 0.01 / 1.11),
    repr(0.2 * 0.1 / 1.11),
}
IGNORED_MIME = ("image/png", "image/jpeg")


def significant_digits(text: str) -> int:
    """Significant digits of a decimal mantissa such as ``0.01230`` (3)."""
    return len(text.replace(".", "").lstrip("0").rstrip("0"))


def long_decimals(text: str) -> list[str]:
    """The decimals in ``text`` with more than MAX_DIGITS significant digits, not in EXACT."""
    return [
        m.group(0)
        for m in DECIMAL.finditer(text)
        if significant_digits(m.group(1)) > MAX_DIGITS and m.group(0).lstrip("+-") not in EXACT
    ]


def compared_text(cell: dict) -> str:
    """All text that nbval compares in a code cell's outputs."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append("".join(out.get("text", "")))
        for mime, value in out.get("data", {}).items():
            if mime not in IGNORED_MIME and not mime.startswith("application/vnd.jupyter.widget"):
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def code_cells(path: Path) -> list[tuple[int, dict]]:
    cells = json.loads(path.read_text())["cells"]
    return [(i, c) for i, c in enumerate(cells) if c["cell_type"] == "code"]


def test_the_lint_sees_what_varies():
    assert long_decimals("L_Recon: ours 0.114172, package 0.114173") == ["0.114172", "0.114173"]
    assert long_decimals("1.2345e-05 and 3.0088") == ["1.2345e-05", "3.0088"]
    assert long_decimals("0.1142, 1.234e-05, 95.73%, 0.0018, 100.0, 12, torch 2.14.1") == []
    assert long_decimals(f"weights {0.2 / 1.11} {0.2 * 0.1 / 1.11}") == []
    assert long_decimals("at /tmp/run-0.123456/x and v0.123456") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_compared_outputs_print_at_most_four_significant_digits(path):
    bad = []
    for i, cell in code_cells(path):
        if "nbval-ignore-output" in cell.get("metadata", {}).get("tags", []):
            continue
        found = long_decimals(compared_text(cell))
        if found:
            bad.append(f"cell {i}: {found[:5]}")
    assert not bad, (
        f"{path.name}: compared outputs print decimals with more than {MAX_DIGITS} significant "
        f"digits, which differ between CPUs; round them (or assert and print the rounded "
        f"value): {bad}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_lines_fit_the_column(path):
    wide = [
        f"cell {i}: {line.strip()[:50]}..."
        for i, cell in code_cells(path)
        for line in "".join(cell["source"]).splitlines()
        if len(line) > MAX_LINE
    ]
    assert not wide, f"{path.name}: code lines wider than {MAX_LINE} characters: {wide}"
