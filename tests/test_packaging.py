"""The wheel installs one import root, zoo, with models/kernels remapped, configs and the checkpoint
manifest as data, and no weights: those come from a hub."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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
        "zoo/kernels/compiled/zoo_cpu.h",
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
