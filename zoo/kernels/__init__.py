"""zoo.kernels: layer 0, functional ops for sparse and low-bit LLMs.

Each op is a sub-package: ``reference.py`` (pure PyTorch, differentiable: the spec, the CPU path
and the test oracle), optional ``_triton.py`` (kernels), ``function.py`` (autograd wrappers) and
``__init__.py`` (the public, dispatching function). One op uses another only through its public
names; what several share sits here: ``_dispatch.py`` (the path choice), ``_triton_helpers.py``
(jit helpers; with the ``_triton.py`` files, the only modules that import triton) and
``compiled/`` (the C kernels, one ABI header).

This package imports nothing above it (no Lightning, no YAML, no ``zoo.models``).
"""

# ternary_matmul (the function) stays in its sub-package: re-exporting it here would shadow the module.
from zoo.kernels._dispatch import cpu_kernel_can_run, triton_can_run
from zoo.kernels.pack import pack_ternary, quantize_pack_ternary, tile_ternary, unpack_ternary, untile_ternary
from zoo.kernels.quant import int8_quantize, int8_quantize_raw, ternary_quantize, ternary_quantize_raw
from zoo.kernels.rule import InputRule
from zoo.kernels.ternary_matmul import ternary_accumulate, ternary_linear
from zoo.kernels.topk import (
    block_topk_mask,
    block_topk_sparsify,
    input_transform,
    topk_int8_quantize,
    topk_int8_quantize_raw,
    topk_mask,
    topk_sparsify,
)

__all__ = [
    "InputRule",
    "block_topk_mask",
    "cpu_kernel_can_run",
    "input_transform",
    "block_topk_sparsify",
    "quantize_pack_ternary",
    "ternary_accumulate",
    "ternary_linear",
    "topk_int8_quantize_raw",
    "topk_mask",
    "int8_quantize",
    "int8_quantize_raw",
    "pack_ternary",
    "ternary_quantize",
    "ternary_quantize_raw",
    "topk_int8_quantize",
    "topk_sparsify",
    "triton_can_run",
    "tile_ternary",
    "unpack_ternary",
    "untile_ternary",
]
