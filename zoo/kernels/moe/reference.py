"""Reference ops of a dropless mixture of experts (MegaBlocks, Gale et al., arXiv 2211.15841).

Routing: ``p = softmax(logits)`` in fp32, each token takes its ``k`` most probable experts,
optionally renormalising the ``k`` weights to sum to one (Mixtral's top-2).

Permutation: the ``T·k`` token-expert assignments, flattened token-major (assignment
``i = t·k + j``), are sorted by expert with a **stable** sort, so within an expert tokens keep
their order and every implementation produces the same permutation. A histogram gives the tokens
per expert, its inclusive cumulative sum the end offset of each expert's contiguous slice
(MegaBlocks' ``bins``, the ``offs`` of ``torch._grouped_mm``). No capacity factor: nothing is
dropped and no slot is padded.

Unpermutation: every expert output row is scaled by its routing weight in fp32 and summed back
into its token over the ``k`` choices, ``y_t = Σ_j w_tj · E_{e_tj}(x_t)``.

Grouped linear: ``y[s_e:o_e] = x[s_e:o_e] · W_eᵀ`` for every expert ``e``; the loop over
contiguous slices is the oracle, ``torch._grouped_mm`` the same product in one call.

Everything here is differentiable through autograd (gather, ``index_add``, matmul).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def route(logits: torch.Tensor, top_k: int, renormalize: bool, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights fp32 ``[T, k]``, expert ids int64 ``[T, k]``), choices ordered by weight.

    ``bias`` (``[E]``) shifts the logits for *selection only*, as in DeepSeek-V3's aux-loss-free
    balancing; the weights stay the unbiased probabilities of the selected experts.
    """
    n_experts = logits.shape[-1]
    if not 1 <= top_k <= n_experts:
        raise ValueError(f"route: top_k must be in [1, {n_experts}] for {n_experts} experts, got {top_k}")
    probs = torch.softmax(logits.float(), dim=-1)
    if bias is None:
        weights, experts = probs.topk(top_k, dim=-1)
    else:
        experts = (logits.detach().float() + bias.float()).topk(top_k, dim=-1).indices
        weights = probs.gather(-1, experts)
    if renormalize:
        # Top-1 included: its weight becomes exactly 1 (Mixtral / MegaBlocks with normalisation);
        # Switch-style p_max scaling is renormalize=False.
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, experts


def permute(x: torch.Tensor, experts: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gathers tokens into expert-contiguous order.

    Returns ``(x_sorted [T·k, D], order [T·k], tokens_per_expert int64 [E], offsets int64 [E])``:
    row ``p`` of ``x_sorted`` is token ``order[p] // k``, experts' slices end at ``offsets``.
    """
    if x.dim() != 2 or experts.dim() != 2 or experts.shape[0] != x.shape[0]:
        raise ValueError(f"permute: need x [T, D] and experts [T, k], got {tuple(x.shape)} and {tuple(experts.shape)}")
    order, tokens_per_expert, offsets = expert_order(experts, n_experts)
    return x.index_select(0, order // experts.shape[1]), order, tokens_per_expert, offsets


def expert_order(experts: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order of the flattened assignments by expert, tokens per expert, end offsets): the index
    side of :func:`permute`, shared by every backend that moves the rows itself."""
    flat = experts.reshape(-1)
    # Stable, so a token's position within its expert's slice is its position in the batch.
    order = torch.sort(flat, stable=True).indices
    tokens_per_expert = torch.bincount(flat, minlength=n_experts)
    if tokens_per_expert.numel() != n_experts:
        raise ValueError(f"permute: expert ids must be < n_experts={n_experts}")
    return order, tokens_per_expert, tokens_per_expert.cumsum(0)


def unpermute(y_sorted: torch.Tensor, order: torch.Tensor, weights: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Weighted scatter back to ``[T, D]``: ``y_t = Σ_j w_tj · y_sorted[p(t, j)]``, summed in fp32."""
    top_k = weights.shape[-1]
    row_weights = weights.reshape(-1).float().index_select(0, order)
    rows = y_sorted.float() * row_weights.unsqueeze(-1)
    out = rows.new_zeros(n_tokens, y_sorted.shape[-1])
    return out.index_add(0, order // top_k, rows).to(y_sorted.dtype)


def grouped_linear_loop(x: torch.Tensor, weight: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``x_e · W_eᵀ`` on each expert's contiguous slice (``sizes`` on the host); empty experts are skipped."""
    # unbind, not weight[e]: the backward of E selects would zero-fill E full-size gradients.
    experts = weight.unbind(0)
    pieces = [part @ experts[e].t() for e, part in enumerate(x.split(sizes)) if sizes[e]]
    if not pieces:
        return x.new_empty(0, weight.shape[1])
    return torch.cat(pieces) if len(pieces) > 1 else pieces[0]


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous.

    torch 2.13's grouped-mm backward rejects gradients with zero strides, which is what
    ``out.sum().backward()`` hands down (an expanded scalar).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def grouped_linear_mm(x: torch.Tensor, weight: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The same product as :func:`grouped_linear_loop` through torch's grouped matmul; no host sync."""
    y = _grouped_mm()(x.contiguous(), weight.transpose(-2, -1), offs=offsets.to(torch.int32))
    return _ContiguousGrad.apply(y) if y.requires_grad else y


def _grouped_mm():
    fn = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
    if fn is None:
        raise RuntimeError(f"torch {torch.__version__} has no grouped matmul (F.grouped_mm / torch._grouped_mm)")
    return fn


def grouped_mm_widths_aligned(dtype: torch.dtype, *widths: int) -> bool:
    """Grouped-mm kernels want every row stride a multiple of 16 bytes."""
    size = torch.empty((), dtype=dtype).element_size()
    return all(width * size % 16 == 0 for width in widths)


@functools.cache
def _grouped_mm_probe(device_type: str, device_index: int | None, dtype: torch.dtype) -> bool:
    # Support depends on the build, the device generation and the dtype, and is documented only
    # loosely, so a tiny forward + backward (with an empty group) is the reliable test.
    try:
        device = torch.device(device_type, device_index) if device_index is not None else torch.device(device_type)
        with torch.inference_mode(False), torch.enable_grad():
            return _grouped_mm_roundtrip(device, dtype)
    except Exception:  # noqa: BLE001 - any failure means "not supported here"
        return False


def _grouped_mm_roundtrip(device: torch.device, dtype: torch.dtype) -> bool:
    # Deterministic inputs: a probe must not consume the caller's random stream.
    x = (torch.arange(96, device=device).reshape(6, 16) % 7 - 3).to(dtype).requires_grad_()
    w = (torch.arange(768, device=device).reshape(3, 16, 16) % 5 - 2).to(dtype).requires_grad_()
    offsets = torch.tensor([2, 2, 6], device=device)
    y = grouped_linear_mm(x, w, offsets)
    y.sum().backward()
    expected = grouped_linear_loop(x.detach().float(), w.detach().float(), [2, 0, 4])
    return bool(torch.equal(y.detach().float(), expected)) and w.grad is not None and x.grad is not None


def grouped_mm_supported(device: torch.device | str, dtype: torch.dtype, *widths: int) -> bool:
    """Whether :func:`grouped_linear_mm` runs (forward and backward) for this device, dtype and widths."""
    if getattr(F, "grouped_mm", None) is None and getattr(torch, "_grouped_mm", None) is None:
        return False
    if not grouped_mm_widths_aligned(dtype, *widths):
        return False
    device = torch.device(device)
    if device.type == "meta":
        return False
    index = device.index if device.type != "cpu" else None
    if device.type == "cuda" and index is None:
        index = torch.cuda.current_device()
    return _grouped_mm_probe(device.type, index, dtype)
