"""The package's layers: every module imports only from its own layer or the ones below (README, DESIGN)."""

import ast
from pathlib import Path

import rdtutorial

PACKAGE = Path(rdtutorial.__file__).parent
LAYERS = [
    {"choices", "errors"},
    {"simplex", "sinkhorn", "anomaly_map", "metrics", "safe_load"},
    {"models", "losses", "noise", "data"},
    {"config", "train", "evaluate", "checkpoint", "runs", "categories", "history", "diagnostics", "schedule",
     "cpu", "device", "compiling", "baselines", "threshold", "export", "calibration",
     "resources"},
    {"cli", "options", "predict", "report", "profiles", "animation", "ablation", "paired", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def imported_modules(path: Path) -> list[str]:
    """The top-level rdtutorial modules that ``path`` imports with relative imports."""
    parts = path.relative_to(PACKAGE).parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[: len(parts) - node.level + 1]) + (node.module.split(".") if node.module else [])
            found += [base[0]] if base else [alias.name for alias in node.names]
    return found


def test_every_module_has_a_layer():
    modules = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert modules - {"__init__"} == set(LAYER)


def test_imports_point_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top == "__init__":
            continue
        upward += [f"{path.relative_to(PACKAGE)} imports {target}" for target in imported_modules(path)
                   if LAYER[target] > LAYER[top]]
    assert upward == []
