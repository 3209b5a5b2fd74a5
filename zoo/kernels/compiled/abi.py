"""The ctypes mirror of ``zoo_kernels.h``, the ABI of the compiled CPU kernels (BitNet b1.58
packed ternary GEMVs, arXiv 2402.17764; Q-Sparse top-K transforms, arXiv 2407.10969; RMSNorm; a
decoding step): its enums, its structs and every exported function's prototype, in one place.

Why one place: a struct laid out twice drifts (a field added in C and not here shifts every
field after it, silently). ``tests/kernels/test_abi.py`` compiles a probe of the header and checks
that C's ``sizeof`` / ``offsetof`` equal :func:`ctypes.sizeof` / ``Struct.field.offset`` for every
struct in :data:`STRUCTS`, and that the library exports exactly :data:`PROTOTYPES`.
"""

from __future__ import annotations

import ctypes

from zoo.kernels import rule as rule_module

# enum zoo_isa
ISA_AUTO, ISA_SCALAR, ISA_AVX2, ISA_AVX512 = 0, 1, 2, 3
ISA_CODES = {"auto": ISA_AUTO, "scalar": ISA_SCALAR, "avx2": ISA_AVX2, "avx512": ISA_AVX512}
ISA_NAMES = {ISA_SCALAR: "scalar", ISA_AVX2: "avx2", ISA_AVX512: "avx512"}
# enum zoo_sparsity
SPARSITY_MODES = {"none": 0, "topk": 1, "block": 2}
# enum zoo_projection_kind
PROJ_DENSE, PROJ_SPARSE_INPUT, PROJ_PACKED = 0, 1, 2
# enum zoo_op_kind
OP_EMBED, OP_NORM, OP_PROJECT, OP_ATTEND, OP_GLU, OP_ADD, OP_MOE = range(7)
# enum zoo_activation
ACTIVATIONS = {"swiglu": 0, "relu2": 1}


class InputRule(ctypes.Structure):
    """``zoo_input_rule``: which input channels are kept, and whether they are int8."""

    _fields_ = [
        ("sparsity", ctypes.c_int32),
        ("int8", ctypes.c_int32),
        ("n_keep", ctypes.c_int64),
        ("block_size", ctypes.c_int64),
    ]

    @classmethod
    def of(cls, rule: rule_module.InputRule) -> InputRule:
        """The C struct of the Python rule (the same four fields)."""
        return cls(sparsity=SPARSITY_MODES[rule.sparsity], int8=int(rule.int8), n_keep=rule.n_keep, block_size=rule.block_size)


class Projection(ctypes.Structure):
    """``zoo_projection``: one projection of the inference form (dense, sparse input or packed)."""

    _fields_ = [
        ("kind", ctypes.c_int32),
        ("w_bf16", ctypes.c_int32),
        ("rule", InputRule),
        ("k_in", ctypes.c_int64),
        ("n_out", ctypes.c_int64),
        ("nb", ctypes.c_int64),
        ("weight", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
        ("norm_w", ctypes.c_void_p),
        ("alpha", ctypes.c_float),
        ("norm_eps", ctypes.c_float),
        ("row_scale", ctypes.c_void_p),
    ]


SCRATCH_BUFFERS = (
    "magnitudes",
    "keep",
    "q",
    "acc",
    "kept",
    "acc16",
    "acc32",
    "values",
    "normed",
    "scores",
    "query",
    "expert_a",
    "expert_b",
    "expert_c",
    "pairs",
)


class Scratch(ctypes.Structure):
    """``zoo_scratch``: the caller's work buffers, one pointer each (sizes in zoo_kernels.h)."""

    _fields_ = [(name, ctypes.c_void_p) for name in SCRATCH_BUFFERS]


class Op(ctypes.Structure):
    """``zoo_op``: one op of a decode program."""

    _fields_ = [
        ("kind", ctypes.c_int32),
        ("src", ctypes.c_int32),
        ("dst", ctypes.c_int32),
        ("act", ctypes.c_int32),
        ("width", ctypes.c_int64),
        ("eps", ctypes.c_float),
        ("bf16", ctypes.c_int32),
        ("weight", ctypes.c_void_p),
        ("proj", ctypes.POINTER(Projection)),
        ("gate_up", ctypes.POINTER(Projection)),
        ("down", ctypes.POINTER(Projection)),
        ("selection_bias", ctypes.c_void_p),
        ("n_experts", ctypes.c_int64),
        ("top_k", ctypes.c_int64),
        ("renormalize", ctypes.c_int64),
        ("hidden", ctypes.c_int64),
        ("k_cache", ctypes.c_void_p),
        ("v_cache", ctypes.c_void_p),
        ("n_heads", ctypes.c_int64),
        ("n_kv_heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("max_len", ctypes.c_int64),
        ("row_scale", ctypes.c_void_p),
    ]


# C name -> its mirror, for the layout test.
STRUCTS = {"zoo_input_rule": InputRule, "zoo_projection": Projection, "zoo_scratch": Scratch, "zoo_op": Op}

_ptr, _i64, _int, _float = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
_projection, _scratch = ctypes.POINTER(Projection), ctypes.POINTER(Scratch)

# Every exported function: name -> (restype, argtypes). Tensors travel as data_ptr() integers.
PROTOTYPES = {
    "zoo_isa": (_int, []),
    "zoo_force_isa": (_int, [_int]),
    "zoo_ternary_gemv": (None, [_ptr, _i64, _i64, _ptr, _i64, _ptr, _scratch, _int]),
    "zoo_ternary_tile": (None, [_ptr, _i64, _i64, _ptr]),
    "zoo_ternary_gemv_tiled": (None, [_ptr, _i64, _i64, _ptr, _i64, _ptr, _scratch, _int]),
    "zoo_packed_linear": (_i64, [_projection, _ptr, _i64, _ptr, _scratch, _int]),
    "zoo_sparse_linear": (_i64, [_projection, _ptr, _i64, _ptr, _scratch, _int]),
    "zoo_topk_rows": (_i64, [_ptr, _i64, _i64, ctypes.POINTER(InputRule), _ptr, _int]),
    "zoo_rms_norm_forward": (None, [_ptr, _ptr, _i64, _i64, _float, _ptr, _ptr, _int]),
    "zoo_rms_norm_backward": (_int, [_ptr, _ptr, _ptr, _ptr, _i64, _i64, _ptr, _ptr, _int]),
    "zoo_run_program": (_i64, [ctypes.POINTER(Op), _i64, ctypes.POINTER(ctypes.c_void_p), _ptr, _scratch, _i64, _i64, _int]),
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Sets every exported function's prototype on the loaded library; returns it."""
    for name, (restype, argtypes) in PROTOTYPES.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib
