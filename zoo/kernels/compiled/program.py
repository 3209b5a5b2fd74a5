"""A compiled decoding step: one token of a decoder (batch 1) as a straight-line program of C ops
(``decode_step.c``), run by one call.

Why: at decode widths each torch op costs about a microsecond of dispatch or more on this class
of CPU, and a token of a Llama-style decoder is a few hundred of them, which took longer than
reading the weights. A :class:`DecodeProgram` is built once from a model's inference form (the
model layer emits the ops, see ``zoo.models.inference.decode_step``); each token is then one C call over a
few fp32 slots, with the KV cache written in place. The projections are the prepared calls of
this package (:class:`~zoo.kernels.compiled.PackedLinear` for BitNet b1.58 ternary weights,
:class:`~zoo.kernels.compiled.SparseLinear` for Q-Sparse top-K inputs) or dense fp32 weights.

The ops compute the torch modules' formulas in fp32 with sums in another order: outputs agree
with the module path to fp32 rounding, not bit for bit.
"""

from __future__ import annotations

import ctypes
import os

import torch

from zoo.kernels import compiled
from zoo.kernels._dispatch import resolve_impl
from zoo.kernels.compiled.abi import (
    ACTIVATIONS,
    OP_ADD,
    OP_ATTEND,
    OP_EMBED,
    OP_GLU,
    OP_MOE,
    OP_NORM,
    OP_PROJECT,
    PROJ_DENSE,
    Op,
    Projection,
)

MAX_TOP_K = 64  # the C MoE op's fixed bound
OUTPUT = -1  # the dst of the op that writes the program's output


class Unsupported(ValueError):
    """The model has a part the compiled decode step does not run; decoding keeps the module path."""


def _fp32_cpu(tensor: torch.Tensor, what: str) -> torch.Tensor:
    if tensor.dtype != torch.float32 or tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise Unsupported(f"{what}: the compiled decode step needs a contiguous fp32 CPU tensor, got {tensor.dtype} on {tensor.device}")
    return tensor


def _weight_cpu(tensor: torch.Tensor, what: str, row_scale: torch.Tensor | None = None) -> torch.Tensor:
    """An embedding table or dense weight: fp32 or bf16 (a bf16 checkpoint's, read at half the
    bytes), or int8 with one fp32 scale per row (``row_scale``)."""
    dtypes = (torch.int8,) if row_scale is not None else (torch.float32, torch.bfloat16)
    if tensor.dtype not in dtypes or tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise Unsupported(f"{what}: the compiled decode step needs a contiguous {dtypes} CPU tensor, got {tensor.dtype} on {tensor.device}")
    if row_scale is not None:
        _fp32_cpu(row_scale, f"{what} row scales")
        if row_scale.shape != tensor.shape[:1]:
            raise Unsupported(f"{what}: {tuple(row_scale.shape)} row scales for {tensor.shape[0]} rows")
    return tensor


class DecodeProgram:
    """The ops of one decoding step over ``n_slots`` fp32 buffers of ``slot_width`` values.

    Build with :meth:`embed`, :meth:`norm`, :meth:`project`, :meth:`attend`, :meth:`glu`,
    :meth:`add` and :meth:`moe` (slots are small ints; :data:`OUTPUT` as a dst is the result),
    then call :meth:`run` once per token. The program keeps every tensor it points at alive.
    """

    def __init__(self, n_slots: int, slot_width: int, output_width: int, *, impl: str = "auto") -> None:
        # The model's kernel choice (and ZOO_KERNEL) holds here too: "torch" or "triton" keep the modules.
        if impl == "triton" or resolve_impl(impl, torch.empty(0), op="decode program", has_triton=False, has_cpu=True) != "cpu":
            raise Unsupported(
                f"decode program: the kernel choice {impl!r} (ZOO_KERNEL={os.environ.get('ZOO_KERNEL', '')!r}) is not the compiled CPU kernel"
            )
        self.lib = compiled._loaded("decode program")
        self.ops: list[Op] = []
        self.keep_alive: list[object] = []
        self.slots = [torch.zeros(slot_width) for _ in range(n_slots)]
        self.slot_width, self.output_width = slot_width, output_width
        self.widest_input = self.widest_output = slot_width
        self.widest_nb, self.n_experts = 1, 0
        self.attend_ops: list[int] = []
        self._compiled = None

    # -- building ------------------------------------------------------------------------------
    def _add(self, kind: int, src: int, dst: int, **fields) -> Op:
        op = Op(kind=kind, src=src, dst=dst, **fields)
        self.ops.append(op)
        self._compiled = None
        return op

    def _check_width(self, width: int, dst: int) -> None:
        limit = self.output_width if dst == OUTPUT else self.slot_width
        if width > limit:
            raise Unsupported(f"decode program: {width} values do not fit a slot of {limit}")

    def embed(self, table: torch.Tensor, dst: int, row_scale: torch.Tensor | None = None) -> None:
        """dst = table[token] (``table [vocab, width]``, fp32 or bf16, or int8 times ``row_scale[token]``)."""
        table = _weight_cpu(table.detach(), "embedding", row_scale)
        self._check_width(table.shape[1], dst)
        self.keep_alive.append((table, row_scale))
        self.vocab = table.shape[0]
        self._add(
            OP_EMBED,
            -1,
            dst,
            width=table.shape[1],
            weight=table.data_ptr(),
            bf16=table.dtype == torch.bfloat16,
            row_scale=None if row_scale is None else row_scale.data_ptr(),
        )

    def norm(self, src: int, dst: int, weight: torch.Tensor, eps: float) -> None:
        """dst = RMSNorm(src) with gain ``weight``."""
        weight = _fp32_cpu(weight.detach(), "norm gain")
        self.keep_alive.append(weight)
        self._add(OP_NORM, src, dst, width=weight.numel(), eps=float(eps), weight=weight.data_ptr())

    def projection(self, prepared) -> Projection:
        """The C descriptor of a prepared projection (PackedLinear, SparseLinear) or a dense
        ``(weight [out, in], bias[, row_scale])`` (an fp32 or bf16 weight, or int8 with one scale per
        row; an fp32 bias), kept alive with the program."""
        if isinstance(prepared, (compiled.PackedLinear, compiled.SparseLinear)):
            p = Projection.from_buffer_copy(prepared.projection)  # its pointers stay valid: prepared is kept alive
            if isinstance(prepared, compiled.PackedLinear):
                self.widest_nb = max(self.widest_nb, prepared.nb)
        elif isinstance(prepared, tuple):
            weight, bias, row_scale = (*prepared, None)[:3]
            weight = _weight_cpu(weight.detach(), "dense projection weight", row_scale)
            bias = None if bias is None else _fp32_cpu(bias.detach(), "dense projection bias")
            prepared = (weight, bias, row_scale)
            p = Projection(
                kind=PROJ_DENSE,
                w_bf16=weight.dtype == torch.bfloat16,
                k_in=weight.shape[1],
                n_out=weight.shape[0],
                weight=weight.data_ptr(),
                bias=None if bias is None else bias.data_ptr(),
                row_scale=None if row_scale is None else row_scale.data_ptr(),
            )
        else:
            raise Unsupported(f"decode program: no compiled form for a {type(prepared).__name__} projection")
        self.keep_alive.append(prepared)
        self.widest_input = max(self.widest_input, p.k_in)
        self.widest_output = max(self.widest_output, p.n_out)
        return p

    def project(self, src: int, dst: int, prepared) -> None:
        """dst = projection(src)."""
        p = self.projection(prepared)
        self._check_width(p.n_out, dst)
        self.keep_alive.append(p)
        self._add(OP_PROJECT, src, dst, proj=ctypes.pointer(p))

    def attend(self, src: int, dst: int, rope: torch.Tensor, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        """dst = grouped-query attention of the new token, whose q|k|v heads are in src, over its
        layer's KV cache (bound per call in :meth:`run`); ``rope`` is the complex table ``[max_seq, head_dim/2]``."""
        table = torch.view_as_real(rope.detach()).contiguous()
        table = _fp32_cpu(table, "rope table")
        if n_heads % n_kv_heads:
            raise Unsupported(f"decode program: {n_heads} heads do not group over {n_kv_heads} key/value heads")
        self._check_width(n_heads * head_dim, dst)
        self.keep_alive.append(table)
        self.attend_ops.append(len(self.ops))
        self.max_positions = table.shape[0]
        self._add(OP_ATTEND, src, dst, weight=table.data_ptr(), n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim)

    def glu(self, src: int, dst: int, width: int, act: str) -> None:
        """dst = act(src[:width]) * src[width:2 width]."""
        if act not in ACTIVATIONS:
            raise Unsupported(f"decode program: no compiled GLU activation {act!r}")
        self._add(OP_GLU, src, dst, width=width, act=ACTIVATIONS[act])

    def add(self, src: int, dst: int, width: int) -> None:
        """dst += src (a residual)."""
        self._add(OP_ADD, src, dst, width=width)

    def moe(
        self,
        src: int,
        dst: int,
        router: torch.Tensor,
        gate_up: list,
        down: list,
        *,
        top_k: int,
        renormalize: bool,
        selection_bias: torch.Tensor | None,
        act: str,
        hidden: int,
    ) -> None:
        """dst = the dropless top-k MoE FFN of one token (router weight ``[E, D]``, per-expert
        prepared projections), only the chosen experts' weights read."""
        n_experts = len(gate_up)
        if not 1 <= top_k <= min(n_experts, MAX_TOP_K) or len(down) != n_experts or act not in ACTIVATIONS:
            raise Unsupported(f"decode program: MoE with top_k={top_k} of {n_experts} experts and {act!r} is not compiled")
        router_p = self.projection((router, None))
        gate_up_p = (Projection * n_experts)(*(self.projection(p) for p in gate_up))
        down_p = (Projection * n_experts)(*(self.projection(p) for p in down))
        if selection_bias is not None:
            selection_bias = _fp32_cpu(selection_bias.detach(), "selection bias")
        self.keep_alive += [router_p, gate_up_p, down_p, selection_bias]
        self.n_experts = max(self.n_experts, n_experts)
        self._add(
            OP_MOE,
            src,
            dst,
            proj=ctypes.pointer(router_p),
            gate_up=gate_up_p,
            down=down_p,
            selection_bias=None if selection_bias is None else selection_bias.data_ptr(),
            n_experts=n_experts,
            top_k=top_k,
            renormalize=int(renormalize),
            hidden=hidden,
            act=ACTIVATIONS[act],
        )

    # -- running -------------------------------------------------------------------------------
    def _finish(self) -> None:
        self.scratch = compiled.ScratchBuffers(
            self.widest_input,
            self.widest_nb,
            keep=self.n_experts,
            scores=max(getattr(self, "max_positions", 1), 2 * self.n_experts),
            query=self.slot_width,
            expert=self.widest_output,
        )
        self.op_array = (Op * len(self.ops))(*self.ops)
        self.slot_pointers = (ctypes.c_void_p * len(self.slots))(*(s.data_ptr() for s in self.slots))
        self._bound = None
        self._compiled = True

    def _bind(self, caches) -> None:
        """Points each attention op at its layer's cache (``keys``/``values [1, kv_heads, max_len, head_dim]``)."""
        if len(caches) != len(self.attend_ops):
            raise ValueError(f"decode program: {len(caches)} caches for {len(self.attend_ops)} attention layers")
        for index, cache in zip(self.attend_ops, caches):
            op = self.op_array[index]
            for tensor in (cache.keys, cache.values):
                if (
                    tensor.dtype != torch.float32
                    or not tensor.is_contiguous()
                    or tuple(tensor.shape[:2]) != (1, op.n_kv_heads)
                    or tensor.shape[3] != op.head_dim
                    or tensor.shape[2] > self.max_positions
                ):
                    raise Unsupported("decode program: the KV cache must be one contiguous fp32 sequence within the rope table")
            op.k_cache, op.v_cache, op.max_len = cache.keys.data_ptr(), cache.values.data_ptr(), cache.keys.shape[2]
        self._bound = caches

    def run(self, token: int, caches) -> torch.Tensor:
        """The output (``[output_width]`` fp32, a new tensor) for ``token`` at the caches' length;
        writes its keys and values into ``caches`` and advances their length by one."""
        if not self._compiled:
            self._finish()
        if caches is not self._bound:
            self._bind(caches)
        position = caches[0].length
        if position >= self.max_positions:
            raise ValueError(f"decode program: position {position} is past the {self.max_positions} positions of the rope table")
        if not 0 <= token < self.vocab:
            raise ValueError(f"decode program: token id {token} is outside the vocabulary of {self.vocab}")
        out = torch.empty(self.output_width)
        status = self.lib.zoo_run_program(
            self.op_array, len(self.ops), self.slot_pointers, out.data_ptr(), self.scratch.struct, token, position, torch.get_num_threads()
        )
        if status != 0:
            raise RuntimeError(f"decode program: op {-1 - status} could not run at position {position} (cache full or bad op)")
        for cache in caches:
            cache.length = position + 1
        return out
