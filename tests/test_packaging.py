"""The wheel installs one import root, zoo (models/ and kernels/ inside it), configs and the checkpoint
manifest as data, and no weights: those come from a hub."""

import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    # Built from a clean copy of the files git knows: a stale build/ folder in a working tree
    # would otherwise leak old files into the wheel.
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    source = tmp_path / "src"
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("moezoo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("moezoo-")}
    assert top_level == {"zoo"}, top_level  # never the generic names `models` or `kernels`
    for required in (
        "zoo/models/decoder.py",
        "zoo/kernels/topk/reference.py",
        "zoo/kernels/moe/reference.py",
        "zoo/configs/bitnet-qsparse-tiny.yaml",
        "zoo/store/manifest.json",
        "zoo/kernels/compiled/ternary_gemv.c",
        "zoo/kernels/compiled/topk_rows.c",
        "zoo/kernels/compiled/cpu_features.c",
        "zoo/kernels/compiled/zoo_cpu.h",
        "zoo/kernels/compiled/zoo_kernels.h",  # the ABI header every source includes
    ):  # the CPU kernels are compiled on first use
        assert required in names, required
    yaml_in_wheel = {n.removeprefix("zoo/configs/") for n in names if n.startswith("zoo/configs/") and n.endswith(".yaml")}
    assert yaml_in_wheel == {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    # weights stay out of the wheel (issue 13): the manifest says where they come from
    assert not [n for n in names if n.endswith((".safetensors", ".ckpt", ".pt", ".bin"))]
    assert [n for n in names if n.startswith("zoo/store/")] == ["zoo/store/manifest.json"]
    assert wheel.stat().st_size < 5 * 1024 * 1024, wheel.stat().st_size
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "zoo = zoo.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_pyproject_lists_every_package_on_disk():
    """pyproject's explicit package list (a find cannot add the remapped configs/ and store/)
    names every package under zoo/: a new sub-package left out would be missing from the wheel."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = set(find_packages(where=str(ROOT), include=["zoo", "zoo.*"])) | set(tool["package-dir"])
    assert set(tool["packages"]) == on_disk


def top_level_packages(root: Path) -> set[str]:
    """Names the checkout's root would make importable: folders with an ``__init__.py`` and ``*.py`` files."""
    folders = {p.parent.name for p in root.glob("*/__init__.py")}
    modules = {p.stem for p in root.glob("*.py")}
    return folders | modules


def test_no_top_level_folder_shadows_an_installed_distribution():
    """With the checkout's root first on sys.path (``python -m pytest``, ``python`` in the checkout),
    a top-level package named like an installed distribution's import (``kernels``, which
    transformers imports) would replace it."""
    provided = importlib.metadata.packages_distributions()
    clashes = {name: provided[name] for name in top_level_packages(ROOT) if name in provided and name != "zoo"}
    assert not clashes, f"top-level folders shadow installed distributions: {clashes}"
    assert top_level_packages(ROOT) <= {"zoo"}, top_level_packages(ROOT)


def test_top_level_packages_sees_a_shadowing_folder(tmp_path):
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    (tmp_path / "notes").mkdir()
    assert top_level_packages(tmp_path) == {"kernels"}


def test_transformers_imports_from_the_checkout_root():
    """The failure of issue 23: run from the root, transformers imported the checkout's kernels/."""
    done = subprocess.run([sys.executable, "-c", "import transformers; transformers.LlamaConfig"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_two_commands_and_ci_install_from_the_lock():
    """The README's two commands and .ci/run install with constraints.txt, and the lock pins torch
    to the CPU build on disk and every requirement the package names (an unpinned one could move)."""
    readme = (ROOT / "README.md").read_text()
    fences = re.findall(r"```bash\n(python3 -m venv .*?)\n```", readme)
    assert len(fences) >= 2, "the README's two commands are its first two bash fences starting with python3 -m venv"
    ci = (ROOT / ".ci" / "run").read_text()
    assert fences[1] in ci, "CI runs exactly the README's test command"
    for command in fences[:2]:
        assert "pip install torch==2.13.0 && pip install -c constraints.txt -e " in command, command
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert pinned["torch"] == "2.13.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    for requirement in requirements:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()
        assert name in pinned, f"{requirement} is not pinned in constraints.txt"
