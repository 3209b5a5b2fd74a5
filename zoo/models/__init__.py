"""zoo.models: layer 1, plain ``nn.Module``s and their config; no Lightning here.

One decoder (:class:`Decoder`) with composable parts: Q-Sparse top-K activations
(arXiv 2407.10969), BitNet b1.58 ternary weights (arXiv 2402.17764), dropless MoE (MegaBlocks).
"""

from zoo.models.config import ModelConfig

__all__ = ["Decoder", "ModelConfig", "ZooLinear"]
# The modules are loaded on first use (PEP 562): the config and the count arithmetic
# (zoo.models.counts) import no torch, which keeps `zoo list` and `zoo --help` fast.
_LAZY = {"Decoder": "zoo.models.decoder", "ZooLinear": "zoo.models.linear"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'zoo.models' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
