"""Autoregressive sampling with the decoder's KV cache: greedy, temperature, top-k and nucleus
(top-p, Holtzman et al. 2019) sampling, reproducible from a seed."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from zoo.models.decoder import Decoder
from zoo.models.inference.decode_step import decode_step_for


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator) -> torch.Tensor:
    """One token id per row of ``logits [B, V]``; ``temperature == 0`` is greedy."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token once the mass before it already reaches top_p; the first token always stays.
        drop = (cumulative - sorted_logits.softmax(-1)) >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def next_logits(model: Decoder, token: torch.Tensor, caches) -> torch.Tensor:
    """``[B, vocab]`` logits of ``token [B]`` appended to ``caches``: through the inference form's
    compiled decode step where it applies (``zoo.models.inference.decode_step``), else the modules."""
    step = decode_step_for(model)
    logits = step.logits(model, token, caches) if step is not None else None
    return logits if logits is not None else model(token[:, None], caches)[:, -1]


# Prompts up to this long go through the compiled decode step token by token; longer ones through
# the modules, whose batched GEMMs read each weight once for the whole prompt. Measured on the
# small-p256 shapes, 1 thread: a one-token prompt costs the modules 2x (packed ternary) to 1.7x
# (fp32) the compiled step; at 4 tokens the fp32 GEMM already wins (23 against 38 ms).
COMPILED_PREFILL_MAX_TOKENS = 3


def prefill(model: Decoder, context: torch.Tensor, caches) -> torch.Tensor:
    """``[B, vocab]`` logits after ``context [B, T]``, written into empty ``caches``: a short prompt
    (batch 1 on the CPU) one token at a time through the compiled decode step where it applies,
    else the modules in one pass (see ``COMPILED_PREFILL_MAX_TOKENS``)."""
    step = decode_step_for(model)
    if step is not None and context.shape[0] == 1 and context.shape[1] <= COMPILED_PREFILL_MAX_TOKENS:
        logits = step.logits(model, context[:, 0], caches)
        if logits is not None:
            for position in range(1, context.shape[1]):
                logits = step.logits(model, context[:, position], caches)
            return logits
    return model(context, caches)[:, -1]


@torch.no_grad()
def stream_tokens(
    model: Decoder,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[torch.Tensor]:
    """Yields the next token of every row of ``prompt [B, T]`` (a ``[B]`` tensor), up to
    ``max_new_tokens`` times; a caller that has what it needs (a stop string) just stops iterating.

    When the context would pass ``max_seq_len`` the cache is rebuilt from the most recent half
    window, so generation can run longer than the model's context.
    """
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be [batch, tokens] with at least one token, got {tuple(prompt.shape)}")
    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator(device=prompt.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        window = model.config.max_seq_len
        context = prompt[:, -window:]
        caches = model.new_cache(prompt.shape[0])
        logits = prefill(model, context, caches)
        for _ in range(max_new_tokens):
            token = sample_next(logits, temperature, top_k, top_p, generator)
            yield token
            context = torch.cat([context, token[:, None]], dim=1)
            if caches[0].length >= window:
                context = context[:, -(window // 2) :]
                caches = model.new_cache(prompt.shape[0])
                logits = prefill(model, context, caches)
            else:
                logits = next_logits(model, token, caches)
    finally:  # also when the caller stops early (GeneratorExit)
        model.train(was_training)


def generate(
    model: Decoder,
    prompt: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Continues ``prompt [B, T]`` by ``max_new_tokens`` tokens; returns only the new ones ``[B, N]``
    (see :func:`stream_tokens`)."""
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed}
    new_tokens = list(stream_tokens(model, prompt, max_new_tokens, **options))
    return torch.stack(new_tokens, dim=1) if new_tokens else prompt.new_zeros(prompt.shape[0], 0)
