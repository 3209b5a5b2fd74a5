"""The wheel installs one import root, zoo, with models/kernels remapped and configs/store as data."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contents(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
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
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "zoo = zoo.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
