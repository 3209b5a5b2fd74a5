"""The compiled decode step of an inference-form decoder: one new token (batch 1) through every
block as one C call (``zoo.kernels.compiled.program``), with the same parts the modules run:
RMSNorm, BitNet b1.58 packed ternary projections (arXiv 2402.17764), Q-Sparse top-K inputs
(arXiv 2407.10969), rotary grouped-query attention over the KV cache, the gated FFN, and a
dropless top-k MoE that reads only the chosen experts (MegaBlocks, Gale et al. 2022).

Why: at decode widths a token through the torch modules is a few hundred small ops, and their
dispatch cost more than the weights they read. :func:`zoo.generate` asks the :class:`DecodeStep`
of an inference-form model (:func:`decode_step_for`: one per model, held in a cache keyed weakly by
the model, nothing stored on it) for each new token's logits and falls back to the modules
whenever it declines: prefill and
batches, the ``torch`` kernel choice, a part without a compiled form (shared experts, a ternary
projection without int8 inputs), non-fp32 tensors, or while accounting records input zeros.
Outputs agree with the module path to fp32 rounding (sums in another order), not bit for bit.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch import nn

from zoo.kernels.compiled import available as compiled_available
from zoo.kernels.compiled.program import OUTPUT, DecodeProgram, Unsupported
from zoo.models.ffn import GatedFeedForward
from zoo.models.inference.layers import FullPrecisionLinear, PreparedProjection
from zoo.models.inference.moe import InferenceMoE
from zoo.models.norm import RMSNorm
from zoo.models.protocols import ZeroCounting

RESIDUAL, NORMED, WIDE, HIDDEN, BRANCH = range(5)  # the program's fp32 slots


def _prepared(projection: nn.Module):
    """What the program needs of an inference projection: its prepared kernel call, or a dense
    ``(weight, bias)`` pair."""
    if isinstance(projection, PreparedProjection):
        return projection.prepared_call()
    if isinstance(projection, FullPrecisionLinear):
        return (projection.weight, projection.bias)
    raise Unsupported(f"decode step: no compiled form for {type(projection).__name__}")


def _norm(program, norm: nn.Module, src: int, dst: int) -> int:
    """Emits ``norm`` (an RMSNorm, or an Identity left by a fused one); returns the slot to read next."""
    if isinstance(norm, nn.Identity):
        return src
    if not isinstance(norm, RMSNorm):
        raise Unsupported(f"decode step: no compiled form for a {type(norm).__name__} norm")
    program.norm(src, dst, norm.weight, norm.eps)
    return dst


def _ffn(program, ffn: nn.Module, src: int, dim: int) -> None:
    if isinstance(ffn, GatedFeedForward):
        program.project(src, WIDE, _prepared(ffn.w_gate_up))
        program.glu(WIDE, HIDDEN, ffn.hidden_dim, ffn.act)
        program.project(_norm(program, ffn.sub_norm, HIDDEN, HIDDEN), BRANCH, _prepared(ffn.w_down))
    elif isinstance(ffn, InferenceMoE):
        if ffn.shared is not None or ffn.sub_norm is not None:
            raise Unsupported("decode step: shared experts and unfused expert sub-norms have no compiled form")
        program.moe(
            src,
            BRANCH,
            ffn.router.weight,
            [_prepared(p) for p in ffn.gate_up],
            [_prepared(p) for p in ffn.down],
            top_k=ffn.top_k,
            renormalize=ffn.renormalize,
            selection_bias=ffn.selection_bias,
            act=ffn.act,
            hidden=ffn.gate_up[0].out_features // 2,
        )
    else:
        raise Unsupported(f"decode step: no compiled form for a {type(ffn).__name__} FFN")
    program.add(BRANCH, RESIDUAL, dim)


def compile_decode_step(model: nn.Module):
    """The :class:`~zoo.kernels.compiled.program.DecodeProgram` of an inference-form decoder, or
    raises ``Unsupported`` naming the part that has no compiled form."""
    config = model.config
    widths = [config.dim] + [getattr(m, name, 0) for m in model.modules() for name in ("in_features", "out_features")]
    program = DecodeProgram(n_slots=5, slot_width=max(widths), output_width=config.vocab_size, impl=config.kernel)
    program.embed(model.tok_embeddings.weight, RESIDUAL, getattr(model.tok_embeddings, "row_scale", None))
    rope = model.rope(model.tok_embeddings.weight.device)
    for block in model.layers:
        attn = block.attn
        program.project(_norm(program, block.attn_norm, RESIDUAL, NORMED), WIDE, _prepared(attn.wqkv))
        program.attend(WIDE, HIDDEN, rope, attn.n_heads, attn.n_kv_heads, attn.head_dim)
        program.project(_norm(program, attn.sub_norm, HIDDEN, HIDDEN), BRANCH, _prepared(attn.wo))
        program.add(BRANCH, RESIDUAL, config.dim)
        _ffn(program, block.ffn, _norm(program, block.ffn_norm, RESIDUAL, NORMED), config.dim)
    if getattr(model.lm_head, "bias", None) is not None:
        raise Unsupported("decode step: an LM head with a bias has no compiled form")
    head = (model.lm_head.weight, None, getattr(model.lm_head, "row_scale", None))  # row scales: an int8 head
    program.project(_norm(program, model.norm, RESIDUAL, NORMED), OUTPUT, head)
    return program


class DecodeStep:
    """Next-token logits of an inference-form decoder through its compiled program, built on first
    use in each thread (a program owns its work buffers) and rebuilt when the weights it was built
    from were reloaded or moved. Holds no reference to the model: the cache of
    :func:`decode_step_for` is keyed weakly by it, and the model is passed to each call."""

    def __init__(self) -> None:
        self.unsupported: str | None = None if compiled_available() else "the compiled CPU kernels are unavailable"
        self.local = threading.local()

    @staticmethod
    def _fingerprint(model: nn.Module, projections: list[nn.Module]) -> tuple:
        """What changes when the program must be rebuilt: a load or move drops each projection's
        prepared call (see ``PreparedProjection``), and a move or cast replaces the embedding."""
        embedding = model.tok_embeddings.weight
        return (embedding.data_ptr(), embedding.dtype, tuple(id(m.prepared) for m in projections))

    @property
    def program(self):
        """This thread's program, or None before the first compiled step."""
        return getattr(self.local, "program", None)

    def _current_program(self, model: nn.Module):
        local = self.local
        if getattr(local, "program", None) is None or local.fingerprint != self._fingerprint(model, local.projections):
            local.program = compile_decode_step(model)
            local.projections = [m for m in model.modules() if isinstance(m, PreparedProjection)]
            local.recorders = [m for m in model.modules() if isinstance(m, ZeroCounting)]
            local.fingerprint = self._fingerprint(model, local.projections)
        return local.program

    def logits(self, model: nn.Module, token: torch.Tensor, caches) -> torch.Tensor | None:
        """``[1, vocab]`` logits for ``token [1]`` appended to ``caches``, or None when the
        compiled step does not apply (the caller then runs the modules)."""
        if self.unsupported is not None or token.numel() != 1 or token.device.type != "cpu":
            return None
        try:
            program = self._current_program(model)
        except Unsupported as reason:
            self.local.program, self.unsupported = None, str(reason)
            return None
        if any(m.record_input_zeros for m in self.local.recorders):  # accounting counts zeros through the modules
            return None
        return program.run(int(token), caches)[None]


INFERENCE_LAYERS = (PreparedProjection, FullPrecisionLinear, InferenceMoE)
# model -> its DecodeStep, or None for a training-form model (so generating with one does not scan
# its modules at every token); to_inference forgets the entry of the model it converts
_steps: weakref.WeakKeyDictionary[nn.Module, DecodeStep | None] = weakref.WeakKeyDictionary()
_steps_lock = threading.Lock()


def decode_step_for(model: nn.Module) -> DecodeStep | None:
    """The decode step of an inference-form ``model`` (made on first use, one per model object, so
    a copy gets its own), or None for a training-form model."""
    try:
        return _steps[model]
    except KeyError:
        step = DecodeStep() if any(isinstance(m, INFERENCE_LAYERS) for m in model.modules()) else None
        with _steps_lock:
            return _steps.setdefault(model, step)


def forget_decode_step(model: nn.Module) -> None:
    """Drops what :func:`decode_step_for` knows of ``model`` (it was just converted in place)."""
    with _steps_lock:
        _steps.pop(model, None)
