"""zoo.kernels: layer 0, functional ops for sparse and low-bit LLMs.

Each op is a sub-package: ``reference.py`` (pure PyTorch, differentiable: the spec, the CPU path
and the test oracle), optional ``_triton.py`` (kernels), ``function.py`` (autograd wrappers) and
``__init__.py`` (the public, dispatching function). One op uses another only through its public
names; what several share sits here: ``_dispatch.py`` (the path choice), ``_triton_helpers.py``
(jit helpers; with the ``_triton.py`` files, the only modules that import triton) and
``compiled/`` (the C kernels, one ABI header).

This package imports nothing above it (no Lightning, no YAML, no ``zoo.models``).
"""

# Names are loaded on first use (PEP 562), so that a light module that only needs InputRule (the
# config, ``zoo list``) does not import torch. ternary_matmul (the function) stays in its
# sub-package: re-exporting it here would shadow the module.
_EXPORTS = {
    "zoo.kernels._dispatch": ("cpu_kernel_can_run", "triton_can_run"),
    "zoo.kernels.pack": ("pack_ternary", "quantize_pack_ternary", "tile_ternary", "unpack_ternary", "untile_ternary"),
    "zoo.kernels.quant": ("int8_quantize", "int8_quantize_raw", "ternary_quantize", "ternary_quantize_raw"),
    "zoo.kernels.rule": ("InputRule",),
    "zoo.kernels.ternary_matmul": ("ternary_accumulate", "ternary_linear"),
    "zoo.kernels.topk": (
        "block_topk_mask",
        "block_topk_sparsify",
        "input_transform",
        "topk_int8_quantize",
        "topk_int8_quantize_raw",
        "topk_mask",
        "topk_sparsify",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'zoo.kernels' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # the next access skips this function
    return value


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
