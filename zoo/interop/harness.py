"""An lm-evaluation-harness model for zoo checkpoints (EleutherAI's lm-evaluation-harness, Gao et al.,
"A framework for few-shot language model evaluation").

``ZooLM`` wraps any zoo decoder (Q-Sparse, arXiv 2407.10969; BitNet b1.58, arXiv 2402.17764;
dropless MoE after MegaBlocks) and its tokenizer as an ``lm_eval.api.model.LM``, registered
under the name ``moezoo``::

    import lm_eval
    from zoo.interop.harness import ZooLM

    lm = ZooLM(pretrained="bitnet-qsparse-tiny")          # any source zoo.from_pretrained takes
    lm_eval.simple_evaluate(model=lm, tasks=["lambada_openai"])

    # or lm-eval's own command line, with the model registered first:
    python -m zoo.interop.harness run --model moezoo --model_args pretrained=qsparse-tiny --tasks hellaswag

lm-eval is not a moezoo dependency: importing this module without it raises an ImportError that
says how to install it (``zoo.eval`` and ``zoo.interop`` never import it). Task data comes from the Hugging Face hub, so running
standard tasks needs network access; the adapter itself works offline.

Zoo models have no BOS token. Where lm-eval needs a token to condition the first prediction on
(an empty context, the first window of a rolling log-likelihood), the last token of the
training corpora's document separator ``"\\n\\n"`` stands in, as the models saw it before every
document.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as error:  # an optional dependency: say how to get it
    raise ImportError("zoo.interop.harness needs lm-evaluation-harness, which moezoo does not install: pip install lm-eval") from error

from zoo.models.generate import stream_tokens

__all__ = ["MODEL_NAME", "ZooLM", "main"]

MODEL_NAME = "moezoo"
DOCUMENT_SEPARATOR = "\n\n"


def _stop_list(until: Any) -> list[str]:
    if until is None:
        return []
    if isinstance(until, str):
        return [until]
    if isinstance(until, (list, tuple)) and all(isinstance(s, str) for s in until):
        return [s for s in until if s]
    raise ValueError(f"generate_until: 'until' must be a string or a list of strings, got {until!r}")


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@register_model(MODEL_NAME)
class ZooLM(LM):
    """A zoo decoder as an lm-eval ``LM``.

    Args:
        pretrained: any model source (a zoo name, a local path, ``hf:org/name[@revision]``; see
            :mod:`zoo.interop.loader`); or pass ``model`` and ``tokenizer`` directly.
        hub: hub URL for zoo names (default ``$ZOO_HUB`` or the shipped store).
        batch_size: sequences per forward pass (``"auto"`` means 8: no probing on CPU).
        device: where the model runs (``cpu``, ``cuda``, ...).
        max_gen_toks: default number of tokens ``generate_until`` may produce.
        seed: seed of sampled generation (``do_sample=True``).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        hub: str | None = None,
        batch_size: int | str = 8,
        max_batch_size: int | None = None,
        device: str | None = "cpu",
        max_gen_toks: int = 256,
        seed: int = 1234,
    ) -> None:
        super().__init__()
        if model is None:
            if pretrained is None:
                raise ValueError("ZooLM needs pretrained=NAME_OR_DIR, or model= and tokenizer=")
            from zoo.interop.loader import load_source

            model, tokenizer, _ = load_source(str(pretrained), hub=hub, inference=True)
        elif tokenizer is None:
            raise ValueError("ZooLM: a model given directly needs its tokenizer too")
        device = device or "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda unless told otherwise; a CPU machine still runs.
            warnings.warn(f"ZooLM: device {device!r} requested but CUDA is not available; using the CPU", stacklevel=2)
            device = "cpu"
        self._device = torch.device(device)
        self.model = model.to(self._device).eval()
        self.tokenizer = tokenizer
        if isinstance(batch_size, str):
            batch_size = 8 if batch_size.strip().lower().startswith("auto") else int(batch_size)
        if max_batch_size:
            batch_size = min(batch_size, int(max_batch_size))
        if batch_size < 1:
            raise ValueError(f"ZooLM: batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.max_length = int(model.config.max_seq_len)
        self.max_gen_toks = int(max_gen_toks)
        self.seed = int(seed)
        self.prefix_token_id = tokenizer.encode(DOCUMENT_SEPARATOR)[-1]

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "identity", type(self.tokenizer).__name__)

    # -- tokens --------------------------------------------------------------------------------
    def tok_encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def tok_decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # A BPE merges across the boundary differently from each half alone, so the pair is
        # encoded whole and split where the context ends; trailing whitespace moves to the
        # continuation, where lm-eval's tasks put word boundaries (as its HF model does).
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.prefix_token_id], self.tok_encode(continuation)
        whole = self.tok_encode(context + continuation)
        context_ids = self.tok_encode(context)
        if whole[: len(context_ids)] != context_ids:
            return context_ids, self.tok_encode(continuation)
        return context_ids, whole[len(context_ids) :]

    # -- scoring -------------------------------------------------------------------------------
    def _windows(self, tokens: list[int], n_scored: int) -> list[tuple[list[int], list[int], int]]:
        """Windows ``(inputs, targets, first)`` predicting the last ``n_scored`` of ``tokens``.

        Each window holds at most ``max_length`` inputs; the targets of a window are the
        last ``len(targets)`` positions of its inputs shifted by one, with as much context
        before them as fits (lm-eval's disjoint rolling windows with full context).
        """
        windows = []
        start = len(tokens) - n_scored
        while start < len(tokens):
            end = min(start + self.max_length, len(tokens))
            first = max(0, end - 1 - self.max_length)
            inputs = tokens[first : end - 1]
            windows.append((inputs, tokens[start:end], start - 1 - first))
            start = end
        return windows

    @torch.no_grad()
    def _score_windows(self, windows: list[tuple[list[int], list[int], int]]) -> list[tuple[float, bool]]:
        """(sum of target log-probs, every target greedy) per window, batched by length."""
        order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
        results: list[tuple[float, bool] | None] = [None] * len(windows)
        for begin in range(0, len(order), self.batch_size):
            chunk = order[begin : begin + self.batch_size]
            width = len(windows[chunk[0]][0])
            # Right padding cannot change earlier positions: attention is causal and top-K,
            # int8 scales and expert routing are all per token.
            batch = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, i in enumerate(chunk):
                inputs = windows[i][0]
                batch[row, : len(inputs)] = torch.tensor(inputs, dtype=torch.long)
            logprobs = F.log_softmax(self.model(batch.to(self._device)).float(), dim=-1).cpu()
            for row, i in enumerate(chunk):
                _, targets, offset = windows[i]
                picked = logprobs[row, offset : offset + len(targets)]
                target = torch.tensor(targets, dtype=torch.long)
                total = float(picked.gather(-1, target[:, None]).sum())
                greedy = bool((picked.argmax(-1) == target).all())
                results[i] = (total, greedy)
        return results  # type: ignore[return-value]

    def _score_sequences(self, items: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
        """For each ``(tokens, n_scored)``: log-prob of its last ``n_scored`` tokens, and greediness."""
        windows, owners = [], []
        for index, (tokens, n_scored) in enumerate(items):
            for window in self._windows(tokens, n_scored):
                windows.append(window)
                owners.append(index)
        scored = self._score_windows(windows)
        totals = [0.0] * len(items)
        greedy = [True] * len(items)
        for owner, (value, is_greedy) in zip(owners, scored):
            totals[owner] += value
            greedy[owner] = greedy[owner] and is_greedy
        return list(zip(totals, greedy))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        items = []
        for request in requests:
            context, continuation = request.args
            context_ids, continuation_ids = self._encode_pair(context, continuation)
            items.append((context_ids + continuation_ids, len(continuation_ids)))
        results = self._score_sequences(items)
        for request, result in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        items = []
        for request in requests:
            (text,) = request.args
            ids = self.tok_encode(text)
            items.append(([self.prefix_token_id] + ids, len(ids)))
        results = [total for total, _ in self._score_sequences(items)]
        for request, total in zip(requests, results):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return results

    # -- generation ----------------------------------------------------------------------------
    def _generation_options(self, gen_kwargs: dict | None) -> dict[str, Any]:
        options = dict(gen_kwargs or {})
        stops = _stop_list(options.pop("until", None))
        max_new = self.max_gen_toks
        for alias in ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens"):
            if alias in options:
                max_new = int(options.pop(alias))
                break
        do_sample = bool(options.pop("do_sample", False))
        temperature = float(options.pop("temperature", 1.0 if do_sample else 0.0))
        if not do_sample:
            temperature = 0.0
        top_k = options.pop("top_k", None)
        top_p = options.pop("top_p", None)
        seed = options.pop("seed", None)
        return {
            "stops": stops,
            "max_new": max_new,
            "temperature": temperature,
            "top_k": int(top_k) if top_k else None,
            "top_p": float(top_p) if top_p else None,
            "seed": self.seed if seed is None else int(seed),
        }

    def _generate(self, prompts: list[list[int]], options: dict[str, Any]) -> list[str]:
        """Continues equally long prompts together until each meets a stop string or the budget
        (zoo's own sampling loop, :func:`zoo.models.generate.stream_tokens`)."""
        context = torch.tensor(prompts, dtype=torch.long, device=self._device)
        sampling = {key: options[key] for key in ("temperature", "top_k", "top_p", "seed")}
        new: list[list[int]] = [[] for _ in prompts]
        texts = [""] * len(prompts)
        done = [False] * len(prompts)
        for token in stream_tokens(self.model, context, options["max_new"], **sampling):
            for row, value in enumerate(token.tolist()):
                if not done[row]:
                    new[row].append(value)
                    texts[row], done[row] = _cut_at_stop(self.tok_decode(new[row]), options["stops"])
            if all(done):
                break
        return texts

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        # Prompts of one token length and one set of options share a batch: the decoder has
        # no padding mask, so only equal lengths can be stacked.
        groups: dict[tuple, list[int]] = {}
        prepared = []
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            options = self._generation_options(gen_kwargs)
            ids = self.tok_encode(context) or [self.prefix_token_id]
            prepared.append((ids, options))
            key = (len(ids), repr(sorted((k, v) for k, v in options.items())))
            groups.setdefault(key, []).append(index)
        outputs: list[str] = [""] * len(requests)
        for indices in groups.values():
            for begin in range(0, len(indices), self.batch_size):
                chunk = indices[begin : begin + self.batch_size]
                texts = self._generate([prepared[i][0] for i in chunk], prepared[chunk[0]][1])
                for i, text in zip(chunk, texts):
                    outputs[i] = text
        for request, text in zip(requests, outputs):
            self.cache_hook.add_partial("generate_until", request.args, text)
        return outputs


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's command line with ``--model moezoo`` available."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
