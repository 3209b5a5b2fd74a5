"""``zoo bench moe``: forward+backward time of the dropless MoE FFN (MegaBlocks semantics, Gale et
al., arXiv 2211.15841) for each backend that runs here, as ratios to baselines timed in the same
process:

- ``dense_ffn_same_activated``: a dense gated FFN whose hidden width is ``top_k·F``, i.e. the same
  activated expert parameters per token with no routing at all (the cost floor of routing);
- ``python_expert_loop``: the common per-expert loop (mask the tokens of each expert, run it,
  ``index_add`` the weighted rows back; Hugging Face Mixtral's block), on the same weights;
- ``megablocks_dmoe``: megablocks' own dMoE layer of the same shape, on CUDA where it imports.

``speedup = baseline time / backend time``; above 1 the backend is faster.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zoo.bench.common import interleaved_median_times, pinned_threads, record, write_jsonl
from zoo.kernels import moe as moe_ops
from zoo.models.config import ModelConfig
from zoo.models.ffn import GatedFeedForward, glu_activation
from zoo.models.initialization import init_weights
from zoo.models.moe import MoEBackendUnavailable, MoEFeedForward

OP = "moe_fwd_bwd"


def _defaults(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return dict(dtype=torch.bfloat16, tokens=8192, dim=1024, expert_dim=1024, n_experts=(8, 16, 64), repeats=20)
    # Small enough for 2 CPU cores to finish the whole sweep in well under a minute.
    return dict(dtype=torch.float32, tokens=512, dim=128, expert_dim=256, n_experts=(8, 16, 64), repeats=5)


def expert_loop_moe(m: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Per-expert Python loop over the same weights: the implementation dropless dispatch replaces."""
    logits = m.router(x)
    weights, experts = moe_ops.route(logits, m.top_k, m.renormalize)
    h = m.w_gate_up.transform_input(x)
    # Per-expert matrices, as a ModuleList of linears would hold them (one select each would
    # zero-fill a full stacked gradient per expert in the backward).
    w_gate_up, w_down = m.w_gate_up.effective_weight().unbind(0), m.w_down.effective_weight().unbind(0)
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
    for e in range(m.n_experts):
        token, slot = torch.where(experts == e)
        if token.numel() == 0:
            continue
        gate, up = (h[token] @ w_gate_up[e].t()).chunk(2, dim=-1)
        hidden = glu_activation(gate, up, m.act)
        if m.sub_norm is not None:
            hidden = m.sub_norm(hidden, torch.full_like(token, e))
        y = m.w_down.transform_input(hidden) @ w_down[e].t()
        out = out.index_add(0, token, y.float() * weights[token, slot, None])
    out = out.to(x.dtype)
    return out + m.shared(x) if m.shared is not None else out


def _megablocks_dmoe(config: ModelConfig, device: torch.device, dtype: torch.dtype):
    """megablocks' dMoE of the same shape (SwiGLU experts, no bias), or None where it cannot run."""
    if device.type != "cuda":
        return None
    try:
        from megablocks.layers.arguments import Arguments
        from megablocks.layers.dmoe import dMoE
        from megablocks.layers.moe import clear_load_balancing_loss
    except Exception:  # noqa: BLE001 - optional, CUDA-only dependency
        return None
    args = Arguments(
        hidden_size=config.dim,
        ffn_hidden_size=config.hidden_dim,
        moe_num_experts=config.n_experts,
        moe_top_k=config.top_k,
        moe_normalize_expert_weights=1 if config.renormalize_router else None,
        mlp_type="glu",
        mlp_impl="grouped",
        activation_fn=F.silu,
        bias=False,
        return_bias=False,
        fp16=dtype == torch.float16,
        bf16=dtype == torch.bfloat16,
        device=device,
    )
    layer = dMoE(args)

    def step(x: torch.Tensor) -> torch.Tensor:
        # megablocks keeps its load-balancing losses in a module-level list; clear it per step.
        clear_load_balancing_loss()
        return layer(x.unsqueeze(1)).squeeze(1)

    return layer, step


def _fwd_bwd(module: torch.nn.Module, fn, x: torch.Tensor, grad: torch.Tensor):
    def step() -> None:
        module.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_()
        fn(xi).backward(grad)

    return step


OPTIONS = ("device", "quick", "threads")  # the zoo bench options this benchmark honours


def run(
    device: str | torch.device = "cpu",
    out: str | Path | None = None,
    *,
    quick: bool = False,
    dtype: torch.dtype | None = None,
    tokens: int | None = None,
    dim: int | None = None,
    expert_dim: int | None = None,
    n_experts: Sequence[int] | None = None,
    top_k: int = 2,
    backends: Iterable[str] | None = None,
    warmup: int = 2,
    repeats: int | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Times each backend against the baselines for every expert count; appends to ``out`` if given.

    ``threads`` pins torch's CPU thread count for the run (the device field of each record names
    it); on a loaded machine one thread gives far steadier ratios than contended ones. ``quick``
    measures one expert count (8) with fewer repeats, for a smoke run.
    """
    if quick:
        n_experts, repeats = n_experts or (8,), repeats or 3
    with pinned_threads(threads):
        records = _run(torch.device(device), dtype, tokens, dim, expert_dim, n_experts, top_k, backends, warmup, repeats, seed)
    if out is not None:
        write_jsonl(records, out)
    return records


def _run(device, dtype, tokens, dim, expert_dim, n_experts, top_k, backends, warmup, repeats, seed) -> list[dict[str, Any]]:
    defaults = _defaults(device)
    dtype = dtype or defaults["dtype"]
    tokens, dim = tokens or defaults["tokens"], dim or defaults["dim"]
    expert_dim = expert_dim or defaults["expert_dim"]
    repeats = repeats or defaults["repeats"]
    backends = tuple(backends or ("reference", "grouped_mm", "megablocks", "triton"))
    records: list[dict[str, Any]] = []

    for n in n_experts or defaults["n_experts"]:
        config = ModelConfig(
            dim=dim, n_heads=max(1, dim // 64), ffn_dim=expert_dim, n_layers=1, n_experts=n, top_k=top_k, moe_impl="reference"
        )
        torch.manual_seed(seed)
        x = torch.randn(tokens, dim, device=device, dtype=dtype)
        grad = torch.randn(tokens, dim, device=device, dtype=dtype)
        base = MoEFeedForward(config)
        init_weights(base, config)
        base = base.to(device=device, dtype=dtype)
        shape = dict(tokens=tokens, dim=dim, hidden=expert_dim, n_experts=n, top_k=top_k, dtype=str(dtype).removeprefix("torch."))

        dense = GatedFeedForward(config.replace(n_experts=0), hidden_dim=top_k * expert_dim)
        init_weights(dense, config)
        dense = dense.to(device=device, dtype=dtype)
        baselines = {
            "dense_ffn_same_activated": _fwd_bwd(dense, dense, x, grad),
            "python_expert_loop": _fwd_bwd(base, lambda xi: expert_loop_moe(base, xi), x, grad),
        }
        mb = _megablocks_dmoe(config, device, dtype)
        if mb is not None:
            layer, step = mb
            baselines["megablocks_dmoe"] = _fwd_bwd(layer, step, x, grad)

        candidates = {}
        for backend in backends:
            m = MoEFeedForward(config.replace(moe_impl=backend)).to(device=device, dtype=dtype)
            m.load_state_dict(base.state_dict())
            try:
                m.backend(x)
            except (MoEBackendUnavailable, NotImplementedError):
                continue
            candidates[backend] = _fwd_bwd(m, m, x, grad)

        medians = interleaved_median_times({**baselines, **candidates}, warmup=warmup, repeats=repeats, device=device)
        for backend in candidates:
            for name in baselines:
                records.append(
                    record(
                        OP,
                        time_s=medians[backend],
                        baseline_s=medians[name],
                        baseline=name,
                        device=device,
                        backend=backend,
                        **shape,
                    )
                )
    return records


def summary(records: Iterable[dict[str, Any]]) -> str:
    """One line per measurement, for humans."""
    lines = []
    for r in records:
        lines.append(
            f"E={r['n_experts']:>3} k={r['top_k']} {r['backend']:<10} {r['time_s'] * 1e3:8.2f} ms  "
            f"vs {r['baseline']:<25} {r['baseline_time_s'] * 1e3:8.2f} ms  speedup {r['speedup']:.2f}x"
        )
    return "\n".join(lines)
