"""Imports go one way: zoo.kernels ← zoo.models ← zoo ← leaderboard; `import zoo` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder → the zoo sub-packages it may import (besides itself).
ALLOWED = {
    "kernels": {"zoo.kernels"},
    "models": {"zoo.kernels", "zoo.models"},
}
FORBIDDEN_BELOW_ZOO = ("lightning", "pytorch_lightning", "torchmetrics", "yaml", "omegaconf", "jsonargparse", "datasets")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_lower_layers_never_import_upwards():
    offences = []
    for folder, allowed in ALLOWED.items():
        for path in (ROOT / folder).rglob("*.py"):
            for name in imported_modules(path):
                is_zoo = name == "zoo" or name.startswith("zoo.")
                if is_zoo and not any(name == a or name.startswith(a + ".") for a in allowed):
                    offences.append(f"{path.relative_to(ROOT)} imports {name}")
                if name.split(".")[0] in FORBIDDEN_BELOW_ZOO:
                    offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, offences


def test_only_triton_files_import_triton():
    offences = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "kernels").rglob("*.py")
        if p.name != "_triton.py" and any(n.split(".")[0] == "triton" for n in imported_modules(p))
    ]
    assert not offences, offences


def test_only_lightning_modules_in_zoo_import_lightning():
    lightning_files = {
        p.relative_to(ROOT) for p in (ROOT / "zoo").rglob("*.py") if any(n.split(".")[0] == "lightning" for n in imported_modules(p))
    }
    assert lightning_files <= {
        Path("zoo/train/module.py"),
        Path("zoo/train/cli.py"),
        Path("zoo/train/callbacks.py"),
        Path("zoo/data/module.py"),
    }, lightning_files


def test_import_zoo_and_kernels_stays_light():
    code = "import sys, zoo, zoo.kernels, zoo.models; print(sorted(m for m in ('lightning', 'triton', 'datasets', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_corpora_and_token_windows_import_without_lightning():
    code = "import sys, zoo.data; zoo.data.TokenWindows, zoo.data.Corpus; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
