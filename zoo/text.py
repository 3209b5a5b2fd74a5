"""Text in, text out: prompts as strings, stop strings, an end-of-text id and streaming, on top of
the token loop of :mod:`zoo.models.generate` (KV cache, compiled decode step; sampling as in
nanoGPT's ``sample.py``, nucleus sampling after Holtzman et al. 2019, arXiv 1904.09751).

A model carries its tokenizer as ``model.tokenizer`` (set by every loader, :mod:`zoo.interop.loader`,
and by :func:`zoo.create_model`); a bare decoder without one reads raw UTF-8 bytes, the zoo's
default tokenizer.

Streaming yields text pieces as soon as they are final: a piece is held back while it ends inside
a UTF-8 character (a byte tokenizer emits a multi-byte character one byte at a time) or while its
tail could still grow into a stop string, so the concatenated pieces always equal the returned text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

# One default for the CLI and Python: sampling, because greedy decoding of the tiny byte-level
# entries falls into loops of spaces or newlines within a few dozen tokens.
DEFAULT_SAMPLING = {"temperature": 0.8, "top_k": None, "top_p": 0.95}
DEFAULT_MAX_NEW_TOKENS = 200
REPLACEMENT = "\ufffd"  # what a decoder gives for an incomplete UTF-8 sequence
MAX_HELD_TOKENS = 8  # a character needs at most 4 bytes; past this a replacement is genuine


def tokenizer_of(model, tokenizer=None):
    """The tokenizer to use: the one given, else the model's own, else raw UTF-8 bytes."""
    if tokenizer is not None:
        return tokenizer
    attached = getattr(model, "tokenizer", None)
    if attached is not None:
        return attached
    from zoo.tokenizer import ByteTokenizer

    return ByteTokenizer()


def stop_strings(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """``stop`` as a tuple of non-empty strings (one string or a list of them, as OpenAI's API takes)."""
    if stop is None:
        return ()
    strings = (stop,) if isinstance(stop, str) else tuple(stop)
    if not all(isinstance(s, str) and s for s in strings):
        raise ValueError(f"stop must be a string or a list of non-empty strings, got {stop!r}")
    return strings


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest


class TextPieces:
    """Turns generated token ids, one at a time, into final text pieces: what :meth:`push` returns
    is never taken back. ``stopped`` turns true once the text reaches a stop string, which is cut off."""

    def __init__(self, tokenizer, stops: Sequence[str] = ()) -> None:
        self.tokenizer, self.stops = tokenizer, tuple(stops)
        self.text, self.emitted, self.pending, self.stopped = "", 0, [], False

    def push(self, token_id: int) -> str:
        self.pending.append(token_id)
        piece = self.tokenizer.decode(self.pending)
        if piece.endswith(REPLACEMENT) and len(self.pending) < MAX_HELD_TOKENS:
            return ""  # the rest of a multi-byte character is still to come
        self.text, self.pending = self.text + piece, []
        cut = min((self.text.find(s) for s in self.stops if s in self.text), default=-1)
        if cut >= 0:
            self.stopped = True
            return self.take(cut)
        return self.take(len(self.text) - held_back(self.text, self.stops))

    def flush(self) -> str:
        """What is left when generation ends without a stop string (held-back text included)."""
        if not self.stopped:
            self.text, self.pending = self.text + (self.tokenizer.decode(self.pending) if self.pending else ""), []
            return self.take(len(self.text))
        return ""

    def take(self, end: int) -> str:
        piece = self.text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece


def stream_text(
    model,
    prompt: str,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    *,
    tokenizer=None,
    stop: str | Sequence[str] | None = None,
    stop_ids: Iterable[int] = (),
    temperature: float = DEFAULT_SAMPLING["temperature"],
    top_k: int | None = DEFAULT_SAMPLING["top_k"],
    top_p: float | None = DEFAULT_SAMPLING["top_p"],
    seed: int | None = None,
    report: dict | None = None,
) -> Iterator[str]:
    """Yields the continuation of ``prompt`` piece by piece, up to ``max_new_tokens`` tokens, ending
    before the first stop string (which is not yielded) or at a token of ``stop_ids``.

    ``report``, a dict, receives ``prompt_tokens``, ``completion_tokens`` and ``finish_reason``
    (``"stop"`` or ``"length"``, as OpenAI's API names them) when the stream ends."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string here, got {type(prompt).__name__}")
    tokenizer = tokenizer_of(model, tokenizer)
    stops, end_ids = stop_strings(stop), {int(i) for i in stop_ids}
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("prompt is empty: give at least one character to continue")
    import torch  # here, not at the top: the CLI reads this module's defaults without loading torch

    from zoo.models.generate import stream_tokens

    device = next(model.parameters()).device
    tokens = stream_tokens(
        model, torch.tensor([ids], device=device), max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )
    pieces = TextPieces(tokenizer, stops)
    report = {} if report is None else report
    report.update(prompt_tokens=len(ids), completion_tokens=0, finish_reason="length")
    try:
        for token in tokens:
            token_id = int(token[0])
            report["completion_tokens"] += 1
            if token_id in end_ids:
                report["finish_reason"] = "stop"
                break
            piece = pieces.push(token_id)
            if piece:
                yield piece
            if pieces.stopped:
                report["finish_reason"] = "stop"
                return
    finally:
        tokens.close()
    rest = pieces.flush()
    if rest:
        yield rest


def generate_text(model, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, **options) -> str:
    """The whole continuation of ``prompt`` (see :func:`stream_text`), without the prompt."""
    return "".join(stream_text(model, prompt, max_new_tokens, **options))
