"""Streaming, parallel tokenisation of one split straight into its cached ``.npy``.

:func:`write_token_cache` reads documents from any iterator (never a whole split in memory),
tokenises them in batches (in this process, or, for a BPE, in a pool of ``num_proc`` worker
processes once a split proves big enough to pay for one), appends the tokens to a temporary
file next to the cache and renames it into place only when complete, so a reader never sees
half a cache. The tokens are each document's tokens joined by the separator's tokens, exactly
as encoding the documents one by one gives them, whatever ``num_proc`` is: workers finish
batches in any order, but their results are written in the order the batches were read.

Workers are forked where the platform can (Linux, macOS asks for spawn): a spawned worker
re-imports the caller's ``__main__``, which fails for a script read from stdin or one without
an ``if __name__ == "__main__"`` guard. Imports here stay light (numpy and the tokenizers, no
torch) so that spawned workers start quickly too.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import struct
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from zoo.files import atomic_file
from zoo.tokenizer import ByteTokenizer, Tokenizer

# the .npy header is written last, once the token count is known, over this many reserved bytes
# (a multiple of 64 as the format asks; a 1-D header takes about 80)
NPY_HEADER_BYTES = 128
BATCH_DOCUMENTS = 256
BATCH_CHARS = 1 << 20
# a pool costs processes, pickling and (spawned) a second of start-up: splits smaller than this
# are done about as soon in-process, so they stay there
PARALLEL_AFTER_CHARS = 16 << 20


def default_num_proc() -> int:
    return min(2, os.cpu_count() or 1)


def pool_context() -> multiprocessing.context.BaseContext:
    """Fork where the platform offers it (see the module docstring), else spawn."""
    method = "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


@contextlib.contextmanager
def quiet_tokenizers_fork() -> Iterator[None]:
    """``TOKENIZERS_PARALLELISM=false`` while workers are forked.

    ``tokenizers`` prints a warning in every child forked after the parent used its thread pool
    (as training a BPE does) unless the variable is set; the workers run single-threaded anyway.
    """
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def token_dtype(tokenizer: Tokenizer) -> np.dtype:
    """The little-endian dtype of a cached token array: uint16 when the vocabulary fits, else int32."""
    return np.dtype("<u2") if tokenizer.vocab_size <= 1 << 16 else np.dtype("<i4")


def encode_texts(tokenizer: Tokenizer, texts: list[str], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens of ``texts`` back to back, with each text's token count and UTF-8 byte count.

    One array and two counts rather than a list of arrays: a worker's answer pickles as three
    buffers, however many documents the batch holds.
    """
    raw = [text.encode("utf-8") for text in texts]
    if isinstance(tokenizer, ByteTokenizer):
        pieces = [np.frombuffer(b, dtype=np.uint8) for b in raw]
    else:
        pieces = [np.asarray(ids, dtype=dtype) for ids in tokenizer.encode_batch(texts)]
    lengths = np.array([p.size for p in pieces], dtype=np.int64)
    tokens = np.concatenate(pieces).astype(dtype, copy=False) if pieces else np.zeros(0, dtype)
    return tokens, lengths, np.array([len(b) for b in raw], dtype=np.int64)


# Per worker process: the tokenizer arrives once, through the pool's initializer, not with every batch.
worker_state: dict = {}


def init_worker(tokenizer: Tokenizer, dtype: np.dtype) -> None:
    # num_proc processes already share the cores: the BPE's own Rust thread pool would oversubscribe them
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    worker_state.update(tokenizer=tokenizer, dtype=dtype)


def encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return encode_texts(worker_state["tokenizer"], texts, worker_state["dtype"])


def document_batches(documents: Iterable[str], batch_documents: int, batch_chars: int, where: str) -> Iterator[list[str]]:
    """Consecutive documents grouped by count and size, checked to be strings."""
    batch: list[str] = []
    chars = 0
    for index, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise ValueError(f"{where} document {index} is {type(doc).__name__}, expected str")
        batch.append(doc)
        chars += len(doc)
        if len(batch) >= batch_documents or chars >= batch_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encoded_batches(
    batches: Iterable[list[str]], tokenizer: Tokenizer, dtype: np.dtype, num_proc: int, parallel_after_chars: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`encode_texts` of each batch, in the order of ``batches``."""
    batches = iter(batches)
    chars = 0
    for batch in batches:
        yield encode_texts(tokenizer, batch, dtype)
        chars += sum(len(doc) for doc in batch)
        if num_proc > 1 and chars >= parallel_after_chars:
            break
    else:
        return
    # held while the pool lives: the executor forks its workers at the first submit
    with quiet_tokenizers_fork():
        # an executor, not multiprocessing.Pool: a worker that dies (killed, or failing to start)
        # breaks it with an error where a Pool would replace the worker and wait forever
        pool = ProcessPoolExecutor(num_proc, mp_context=pool_context(), initializer=init_worker, initargs=(tokenizer, dtype))
        try:
            # submitted a few batches ahead, not pool.map: map submits the whole stream at once
            pending: deque = deque()
            for batch in batches:
                pending.append(pool.submit(encode_in_worker, batch))
                if len(pending) >= 2 * num_proc:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool as error:
            raise RuntimeError(f"a tokenising worker process died ({error}); tokenise in-process with num_proc=1") from None
        finally:
            # also on an early close (a bound reached): drop the batches not begun, wait for the rest
            pool.shutdown(wait=True, cancel_futures=True)


def npy_header(dtype: np.dtype, count: int) -> bytes:
    """A version 1.0 ``.npy`` header of a 1-D array, padded to :data:`NPY_HEADER_BYTES`."""
    text = f"{{'descr': {np.lib.format.dtype_to_descr(dtype)!r}, 'fortran_order': False, 'shape': ({count},), }}"
    body = text.ljust(NPY_HEADER_BYTES - 10 - 1) + "\n"
    header = np.lib.format.MAGIC_PREFIX + bytes([1, 0]) + struct.pack("<H", len(body)) + body.encode("latin1")
    assert len(header) == NPY_HEADER_BYTES, len(header)
    return header


def piece_bytes(tokenizer: Tokenizer, ids: np.ndarray) -> int:
    """UTF-8 bytes of the text a cut run of tokens stands for (a split bound cuts a document)."""
    if isinstance(tokenizer, ByteTokenizer):
        return int(ids.size)
    # exact up to a character the cut splits (decoded as one replacement character)
    return len(tokenizer.decode(ids).encode("utf-8"))


class TokenWriter:
    """Appends tokens to an open file up to an optional bound, counting tokens, bytes and documents."""

    def __init__(self, handle, tokenizer: Tokenizer, dtype: np.dtype, separator: str, max_tokens: int | None) -> None:
        self.handle, self.tokenizer, self.dtype, self.max_tokens = handle, tokenizer, dtype, max_tokens
        self.separator_ids = np.asarray(tokenizer.encode(separator), dtype=dtype)
        self.separator_bytes = len(separator.encode("utf-8"))
        self.num_tokens = self.num_bytes = self.num_documents = 0

    @property
    def full(self) -> bool:
        return self.max_tokens is not None and self.num_tokens >= self.max_tokens

    def put(self, ids: np.ndarray, num_bytes: int) -> None:
        room = None if self.max_tokens is None else self.max_tokens - self.num_tokens
        if room is not None and ids.size > room:
            ids = ids[:room]
            num_bytes = piece_bytes(self.tokenizer, ids)
        self.handle.write(np.ascontiguousarray(ids, dtype=self.dtype).data)
        self.num_tokens += int(ids.size)
        self.num_bytes += num_bytes

    def add_document(self, ids: np.ndarray, num_bytes: int) -> None:
        if self.num_documents:
            self.put(self.separator_ids, self.separator_bytes)
            if self.full:
                return
        self.num_documents += 1
        self.put(ids, num_bytes)


def progress_bar(where: str, max_tokens: int | None, enabled: bool):
    from tqdm.auto import tqdm

    # a log file or CI capture gets no bar: carriage-return redraws would fill it with lines
    return tqdm(
        total=max_tokens,
        desc=f"tokenising {where}",
        unit="tok",
        unit_scale=True,
        file=sys.stderr,
        disable=not (enabled and sys.stderr.isatty()),
        dynamic_ncols=True,
    )


def write_token_cache(
    documents: Iterable[str],
    tokenizer: Tokenizer,
    separator: str,
    path: str | Path,
    *,
    where: str,
    max_tokens: int | None = None,
    num_proc: int = 1,
    progress: bool = True,
    batch_documents: int = BATCH_DOCUMENTS,
    batch_chars: int = BATCH_CHARS,
    parallel_after_chars: int | None = None,
) -> dict[str, int]:
    """Tokenise ``documents`` joined by ``separator`` into the 1-D ``.npy`` at ``path``; returns its counts.

    ``max_tokens`` cuts the split at that many tokens (separators count, the document that
    crosses the bound is cut, and no further document is read). The counts are ``num_tokens``,
    ``num_bytes`` (UTF-8 bytes of the text the tokens stand for) and ``num_documents`` (those
    begun). ``path`` appears only once complete; an error or an interruption leaves no file.
    ``where`` names the split in errors and on the progress bar. Workers start once
    ``parallel_after_chars`` characters were read (default: :data:`PARALLEL_AFTER_CHARS` for a
    BPE, never for the byte tokenizer).
    """
    path = Path(path)
    dtype = token_dtype(tokenizer)
    if parallel_after_chars is None:
        # byte "tokenising" is a copy: shipping the text to a worker and the tokens back costs
        # more than it (twice the time with 2 workers, measured); a BPE gains about 2x from 2
        parallel_after_chars = sys.maxsize if isinstance(tokenizer, ByteTokenizer) else PARALLEL_AFTER_CHARS
    # the array appears at `path` complete or not at all (zoo.files.atomic_file)
    with atomic_file(path) as handle, progress_bar(where, max_tokens, progress) as bar:
        handle.write(b"\0" * NPY_HEADER_BYTES)
        writer = TokenWriter(handle, tokenizer, dtype, separator, max_tokens)
        batches = document_batches(documents, batch_documents, batch_chars, where)
        encoded = encoded_batches(batches, tokenizer, dtype, num_proc, parallel_after_chars)
        try:
            for tokens, lengths, sizes in encoded:
                before = writer.num_tokens
                starts = itertools.accumulate(lengths[:-1].tolist(), initial=0)
                for start, length, size in zip(starts, lengths.tolist(), sizes.tolist()):
                    writer.add_document(tokens[start : start + length], size)
                    if writer.full:
                        break
                bar.update(writer.num_tokens - before)
                bar.set_postfix(docs=writer.num_documents, refresh=False)
                if writer.full:
                    break
        finally:
            encoded.close()  # stops the worker pool now, also when the bound ended the stream early
        if writer.num_bytes == 0:
            raise ValueError(f"{where} is empty ({writer.num_documents} documents, 0 bytes); expected at least one non-empty document")
        handle.seek(0)
        handle.write(npy_header(dtype, writer.num_tokens))
    return {"num_tokens": writer.num_tokens, "num_bytes": writer.num_bytes, "num_documents": writer.num_documents}


def remove_stale_temporaries(directory: Path, name: str) -> None:
    """Deletes temporaries of ``name`` that a killed writer left (call it holding the cache's lock)."""
    for leftover in directory.glob(f".{name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def take_bytes(documents: Iterable[str], limit: int | None) -> Iterator[str]:
    """Whole documents from the start of ``documents`` until they hold ``limit`` UTF-8 bytes (all if None)."""
    if limit is None:
        yield from documents
        return
    total = 0
    for doc in documents:
        yield doc
        total += len(doc.encode("utf-8"))
        if total >= limit:
            return
