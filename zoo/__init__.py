"""moezoo: a model zoo of sparse decoder LLMs (Q-Sparse, BitNet b1.58, dropless MoE).

Kept light on purpose: importing ``zoo`` loads neither Lightning nor Triton, so that
``import zoo.kernels`` stays cheap. Public helpers are imported lazily.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "__version__"]


def create_model(name: str, pretrained: bool = False, **overrides):
    """Build a registered zoo model by name (e.g. ``"bitnet-qsparse-tiny"``); see :mod:`zoo.registry`."""
    from zoo.registry import create_model as _create

    return _create(name, pretrained=pretrained, **overrides)


def list_models() -> list[str]:
    """Names of every registered zoo entry."""
    from zoo.registry import list_models as _list

    return _list()
