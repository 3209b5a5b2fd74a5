"""The ABI of the compiled CPU kernels: ``zoo_kernels.h`` and its ctypes mirror
(``zoo.kernels.compiled.abi``) agree on every struct's size and field offsets and on every enum
value, as C's own ``sizeof`` / ``offsetof`` report them, and the library exports exactly the
functions the header declares (a struct or prototype out of step reads the wrong bytes silently)."""

import ctypes
import re
import shutil
import subprocess

import pytest

from zoo.kernels import compiled
from zoo.kernels.compiled import abi

pytestmark = pytest.mark.skipif(not compiled.available(), reason="no C compiler: the torch path is used instead")

HEADER = compiled.HERE / "zoo_kernels.h"
ENUMS = {
    "ZOO_ISA_AUTO": abi.ISA_AUTO,
    "ZOO_ISA_SCALAR": abi.ISA_SCALAR,
    "ZOO_ISA_AVX2": abi.ISA_AVX2,
    **{f"ZOO_SPARSITY_{name.upper()}": value for name, value in abi.SPARSITY_MODES.items()},
    "ZOO_PROJ_DENSE": abi.PROJ_DENSE,
    "ZOO_PROJ_SPARSE_INPUT": abi.PROJ_SPARSE_INPUT,
    "ZOO_PROJ_PACKED": abi.PROJ_PACKED,
    **{f"ZOO_{name}": getattr(abi, name) for name in ("OP_EMBED", "OP_NORM", "OP_PROJECT", "OP_ATTEND", "OP_GLU", "OP_ADD", "OP_MOE")},
    **{f"ZOO_ACT_{name.upper()}": value for name, value in abi.ACTIVATIONS.items()},
}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict[str, int]:
    """``{"zoo_op": sizeof, "zoo_op.kind": offsetof, ..., "ZOO_OP_MOE": value}`` from a probe
    compiled against the header (a field the C struct lacks fails the build, by name)."""
    lines = []
    for c_name, struct in abi.STRUCTS.items():
        lines.append(f'printf("{c_name} %zu\\n", sizeof({c_name}));')
        lines += [f'printf("{c_name}.{field} %zu\\n", offsetof({c_name}, {field}));' for field, _ in struct._fields_]
    lines += [f'printf("{name} %d\\n", (int){name});' for name in ENUMS]
    source = '#include <stddef.h>\n#include <stdio.h>\n#include "zoo_kernels.h"\nint main(void) {\n' + "\n".join(lines) + "\nreturn 0;\n}\n"
    folder = tmp_path_factory.mktemp("abi")
    (folder / "probe.c").write_text(source)
    build = subprocess.run(
        [compiled.compiler(), "-std=c11", "-Wall", "-Werror", f"-I{compiled.HERE}", str(folder / "probe.c"), "-o", str(folder / "probe")],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(folder / "probe")], capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("c_name", list(abi.STRUCTS))
def test_ctypes_structs_have_cs_sizes_and_offsets(c_layout, c_name):
    struct = abi.STRUCTS[c_name]
    python = {c_name: ctypes.sizeof(struct), **{f"{c_name}.{field}": getattr(struct, field).offset for field, _ in struct._fields_}}
    assert python == {name: c_layout[name] for name in python}


def test_enum_values_agree(c_layout):
    assert {name: c_layout[name] for name in ENUMS} == ENUMS


def test_the_library_exports_exactly_the_header_s_functions():
    declared = set(re.findall(r"ZOO_API\s+[\w\s\*]+?\b(zoo_\w+)\s*\(", HEADER.read_text()))
    assert declared == set(abi.PROTOTYPES)
    lib = compiled.library()
    for name in declared:
        getattr(lib, name)  # resolves
    for internal in ("zoo_select_top", "zoo_use_avx2"):  # shared inside the library (zoo_cpu.h), hidden
        with pytest.raises(AttributeError):
            getattr(lib, internal)
    nm = shutil.which("nm")
    if nm:  # the whole list, where binutils are installed
        symbols = subprocess.run([nm, "-D", "--defined-only", lib._name], capture_output=True, text=True, check=True).stdout
        exported = {line.split()[-1] for line in symbols.splitlines() if line.split()[-1].startswith("zoo_")}
        assert exported == declared


def test_every_source_includes_the_abi_header():
    """So the compiler checks each definition against its declaration."""
    for source in compiled.SOURCES:
        includes = re.findall(r'#include "(\w+\.h)"', source.read_text())
        assert "zoo_kernels.h" in includes, source.name
