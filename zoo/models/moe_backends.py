"""The expert-compute backends of the dropless MoE FFN (MegaBlocks, Gale et al., arXiv 2211.15841),
as one registry with one vocabulary.

A backend multiplies every expert's contiguous slice of the permuted tokens by that expert's
weight, and says why it cannot run for an input (or nothing when it can). Its name is the only
word for it anywhere: ``ModelConfig.moe_impl``, :meth:`MoEFeedForward.backend`, the expert banks,
the benchmarks and the error messages. ``auto`` is a request, not a backend: the first backend
marked ``in_auto`` that can run (``grouped_mm``, then ``reference``); ``megablocks`` and
``triton`` are opt-in until a GPU benchmark shows them faster.

Adding a backend is one :func:`register_moe_backend` call; ``ModelConfig`` lists the names it
accepts (``MOE_IMPLS``) and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from zoo.kernels import moe as moe_ops
from zoo.kernels import triton_can_run

MEGABLOCKS_INSTALL = (
    "install it on a CUDA machine whose torch it supports with `pip install --no-deps megablocks stanford-stk "
    "grouped_gemm` (megablocks 0.10.0 pins torch 2.7.0 and imports only with CUDA)"
)


class MoEBackendUnavailable(RuntimeError):
    """The requested ``moe_impl`` cannot run on this machine, device or dtype."""


@dataclass(frozen=True)
class ExpertShapes:
    """What decides whether a backend runs, besides the input: the FFN's widths."""

    dim: int
    hidden_dim: int


@dataclass
class ExpertGroups:
    """Where each expert's rows lie in the permuted batch, and which backend multiplies them."""

    tokens_per_expert: torch.Tensor  # int64 [E], on the device
    offsets: torch.Tensor  # int64 [E], end of each expert's slice
    sorted_experts: torch.Tensor  # expert id of every permuted row
    backend: str  # a name of MOE_BACKENDS
    _sizes: list[int] | None = field(default=None, repr=False)

    @property
    def sizes(self) -> list[int]:
        """Counts on the host, copied once per forward and shared by both expert projections."""
        if self._sizes is None:
            self._sizes = self.tokens_per_expert.tolist()
        return self._sizes


@dataclass(frozen=True)
class MoEBackend:
    name: str
    description: str
    unavailable: Callable[[torch.Tensor, ExpertShapes], str | None]  # why it cannot run for this input, or None
    grouped_linear: Callable[[torch.Tensor, torch.Tensor, ExpertGroups], torch.Tensor]  # x [T·k, in], weight [E, out, in]
    routing: str = "torch"  # who permutes and unpermutes the tokens: torch, triton or megablocks
    in_auto: bool = False


MOE_BACKENDS: dict[str, MoEBackend] = {}


def register_moe_backend(backend: MoEBackend) -> MoEBackend:
    if backend.name in MOE_BACKENDS or backend.name == "auto":
        raise ValueError(f"register_moe_backend: the name {backend.name!r} is taken")
    MOE_BACKENDS[backend.name] = backend
    return backend


def resolve_moe_backend(requested: str, x: torch.Tensor, shapes: ExpertShapes) -> MoEBackend:
    """The backend ``requested`` (a registry name or ``auto``) for an input like ``x``; raises
    :class:`MoEBackendUnavailable` with the reason when the named one cannot run."""
    if requested == "auto":
        for backend in MOE_BACKENDS.values():
            if backend.in_auto and backend.unavailable(x, shapes) is None:
                return backend
        raise MoEBackendUnavailable(f"moe_impl='auto': no backend runs for {x.dtype} on {x.device}")
    backend = MOE_BACKENDS.get(requested)
    if backend is None:
        raise ValueError(f"ModelConfig.moe_impl must be one of {('auto', *MOE_BACKENDS)}, got {requested!r}")
    reason = backend.unavailable(x, shapes)
    if reason is not None:
        raise MoEBackendUnavailable(f"moe_impl={requested!r} cannot run: {reason}")
    return backend


def megablocks_ops():
    """megablocks' ops module, or a clear error saying how to get it."""
    try:
        import grouped_gemm  # noqa: F401 - megablocks' grouped path runs on it
        import megablocks.ops as ops
    except Exception as error:  # ImportError, or the CUDA-only extension failing to load
        raise MoEBackendUnavailable(
            f"moe_impl='megablocks' needs megablocks with CUDA: {MEGABLOCKS_INSTALL}; import failed with {error!r}"
        ) from error
    return ops


# The backends -------------------------------------------------------------------------------------


def _grouped_mm_unavailable(x: torch.Tensor, shapes: ExpertShapes) -> str | None:
    # The projection choices act row by row before each product, so only dtype, device and row
    # alignment decide whether the grouped matmul applies.
    if moe_ops.grouped_mm_supported(x.device, x.dtype, shapes.dim, 2 * shapes.hidden_dim, shapes.hidden_dim):
        return None
    return (
        f"F.grouped_mm does not support {x.dtype} on {x.device} with torch {torch.__version__} for dim={shapes.dim}, "
        f"hidden={shapes.hidden_dim} (rows must be multiples of 16 bytes); use moe_impl='auto' or 'reference'"
    )


def _megablocks_unavailable(x: torch.Tensor, shapes: ExpertShapes) -> str | None:
    try:
        megablocks_ops()
    except MoEBackendUnavailable as error:
        return str(error)
    return None if x.is_cuda else f"megablocks runs on CUDA tensors only, got a {x.device.type} tensor"


def _megablocks_linear(x: torch.Tensor, weight: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
    import grouped_gemm

    # grouped_gemm wants the counts on the host, as megablocks' own GroupedMLP passes them.
    return grouped_gemm.ops.gmm(x.contiguous(), weight, groups.tokens_per_expert.cpu(), trans_b=True)


register_moe_backend(
    MoEBackend(
        "grouped_mm",
        "torch's grouped matmul over every expert's slice in one call",
        _grouped_mm_unavailable,
        lambda x, w, g: moe_ops.grouped_linear(x, w, g.tokens_per_expert, g.offsets, impl="grouped_mm"),
        in_auto=True,
    )
)
register_moe_backend(
    MoEBackend(
        "reference",
        "one matmul per expert in a loop: the oracle, runs everywhere",
        lambda x, shapes: None,
        lambda x, w, g: moe_ops.grouped_linear(x, w, g.tokens_per_expert, g.offsets, impl="reference", sizes=g.sizes),
        in_auto=True,
    )
)
register_moe_backend(
    MoEBackend(
        "megablocks",
        "megablocks' gather/scatter and grouped GEMM (CUDA)",
        _megablocks_unavailable,
        _megablocks_linear,
        routing="megablocks",
    )
)
register_moe_backend(
    MoEBackend(
        "triton",
        "the zoo's Triton grouped GEMM, permute and combine kernels (CUDA, or TRITON_INTERPRET=1)",
        lambda x, shapes: (
            None if triton_can_run(x) else f"it needs triton and a CUDA tensor (or TRITON_INTERPRET=1), got a {x.device.type} tensor"
        ),
        lambda x, w, g: moe_ops.grouped_linear(x, w, g.tokens_per_expert, g.offsets, impl="triton", sizes=g.sizes),
        routing="triton",
    )
)
