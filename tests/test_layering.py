"""Imports go one way: zoo.kernels ← zoo.models ← zoo ← leaderboard; `import zoo` stays light;
inside zoo, each sub-package imports only the rooms below it (ZOO_CONTRACTS), and no private name
crosses a package boundary."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder → the zoo sub-packages it may import (besides itself).
ALLOWED = {
    "zoo/kernels": {"zoo.kernels"},
    "zoo/models": {"zoo.kernels", "zoo.models"},
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


# An op's kernels and launchers (``<op>/_triton.py``), and jit helpers several ops share
# (``_triton_<what>.py``, e.g. zoo/kernels/_triton_helpers.py): the only files that import triton.
TRITON_FILE = re.compile(r"_triton(_[a-z0-9_]+)?\.py")


def test_only_triton_files_import_triton():
    offences = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "zoo" / "kernels").rglob("*.py")
        if not TRITON_FILE.fullmatch(p.name) and any(n.split(".")[0] == "triton" for n in imported_modules(p))
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
    code = "import sys, zoo.data, zoo.eval; zoo.data.TokenWindows, zoo.data.Corpus, zoo.data.TokenizedCorpus; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# Inside zoo: a sub-package (or top-level module) -> the zoo rooms it may import, besides itself,
# zoo.models and zoo.kernels. Shared helpers (files, paths, tokenizer, machine) sit at the bottom;
# data and hub above them (the hub: names, manifest, fetch, releases); interop (transformers and
# lm-eval interchange, and the one loader of model sources, which reads transformers folders too)
# above the hub, which never imports it; eval reads data and loads through interop; training above
# that; bench measures models from the hub, and against llama.cpp through interop's GGUF export;
# scaling trains and measures; text (prompts as strings, stop strings, streaming) sits on the
# models and the tokenizer, serving (the HTTP server) on text, and the text commands load through
# interop and serve; the cli and `import zoo` see all.
SHARED = {"files", "paths", "tokenizer", "machine"}
ZOO_CONTRACTS = {
    **{name: SHARED - {name} for name in SHARED},
    "data": SHARED,
    "hub": SHARED,
    "interop": SHARED | {"hub", "text"},  # text: the one sampling default, written into exports
    "eval": SHARED | {"data", "hub", "interop"},
    "bench": SHARED | {"hub", "interop"},
    "train": SHARED | {"data", "hub", "interop", "eval"},
    "scaling": SHARED | {"data", "hub", "train", "bench"},
    "text": SHARED,
    "curves": SHARED,
    "serving": SHARED | {"text"},
    "text_cli": SHARED | {"text", "serving", "hub", "interop"},
}
UNRESTRICTED = {"cli", "__init__", "__main__"}


def zoo_imports(path: Path) -> set[tuple[str, str | None]]:
    """(module, imported name or None) for every absolute zoo import of ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update((alias.name, None) for alias in node.names if alias.name.startswith("zoo."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "zoo":
            found.update((node.module, alias.name) for alias in node.names)
    return found


def room_of(path: Path, top: Path) -> str:
    parts = path.relative_to(top).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_zoo_rooms_import_only_the_rooms_below_them():
    offences = []
    for path in (ROOT / "zoo").rglob("*.py"):
        room = room_of(path, ROOT / "zoo")
        if room in UNRESTRICTED | {"models", "kernels"}:  # the layers below zoo: test_lower_layers_never_import_upwards
            continue
        assert room in ZOO_CONTRACTS, f"zoo/{room}: a new room needs its line in ZOO_CONTRACTS"
        for module, name in zoo_imports(path):
            parts = module.split(".")
            target = name if module == "zoo" else parts[1]
            if target not in ZOO_CONTRACTS[room] | {room, "models", "kernels"}:
                offences.append(f"{path.relative_to(ROOT)} imports zoo.{target}")
    assert not offences, offences


def is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_no_private_name_crosses_a_package_boundary():
    """``from zoo.x import _y`` or ``import zoo.x._y`` from outside package x (tests may test internals).

    Inside zoo.kernels each op's sub-package (topk, quant, pack, compiled, ...) counts as a package
    too: one op reaches another only through public names, and what several ops share lives in
    zoo.kernels itself (``zoo.kernels._dispatch``, ``zoo.kernels._triton_helpers``)."""
    offences = []
    trees = {"zoo": ROOT / "zoo", "leaderboard": ROOT / "leaderboard"}
    kernels = ROOT / "zoo" / "kernels"
    for tree, top in trees.items():
        for path in top.rglob("*.py"):
            here = room_of(path, top) if tree == "zoo" else tree
            in_kernels = kernels in path.parents
            op_here = room_of(path, kernels) if in_kernels and path.parent != kernels else None
            for module, name in zoo_imports(path):
                parts = module.split(".")
                owner = parts[1] if len(parts) > 1 else "zoo"
                private_module = any(is_private(part) for part in parts)
                private_name = name is not None and is_private(name)
                shown = f"{path.relative_to(ROOT)}: {module}{'.' + name if name else ''}"
                if (private_module or private_name) and owner != here:
                    offences.append(shown)
                elif in_kernels and owner == "kernels" and len(parts) > 2 and (kernels / parts[2]).is_dir() and parts[2] != op_here:
                    if any(is_private(part) for part in parts[3:]) or private_name:  # into another op's sub-package
                        offences.append(shown)
    assert not offences, offences


def test_evaluation_runs_without_lightning(tmp_path):
    """zoo eval and the leaderboard score a model on a corpus split with no Lightning imported."""
    text = tmp_path / "test.txt"
    text.write_text("To be, or not to be, that is the question. " * 20)
    code = (
        "import sys, torch\n"
        "from zoo.eval import evaluate_model\n"
        "from zoo.models import Decoder, ModelConfig\n"
        "from zoo.tokenizer import ByteTokenizer\n"
        "model = Decoder(ModelConfig(vocab_size=256, dim=32, n_layers=1, n_heads=2, ffn_dim=64, max_seq_len=32))\n"
        f"result = evaluate_model(model, ByteTokenizer(), corpus='text', data_files={{'test': {str(text)!r}}}, split='test')\n"
        "assert result['tokens'] > 0 and result['bpb'] > 0, result\n"
        "print('lightning' in sys.modules)"
    )
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """zoo module -> the zoo modules it imports anywhere in its file, function bodies included
    (an import inside a function closes a cycle as surely as one at the top, only later)."""
    modules = {module_name(p): p for p in (ROOT / "zoo").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, imported in zoo_imports(path):
            submodule = f"{module}.{imported}"
            # ``from package import submodule`` imports the submodule; any other name comes from the module itself
            targets.add(submodule if imported is not None and submodule in modules else module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a closed path, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_function_level_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_zoo():
    """Counting imports inside functions: a cycle closed by a deferred import is still a cycle.
    The parent packages Python runs first are not counted (``zoo/__init__`` re-exports)."""
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)
