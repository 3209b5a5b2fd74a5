"""Resumable, data-parallel training order (see ``zoo.data``'s docstring, "Exact resume")."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def _epoch_seed(seed: int, epoch: int) -> int:
    # a hash, unlike seed + epoch, keeps (seed=0, epoch=1) and (seed=1, epoch=0) apart
    return int.from_bytes(hashlib.sha256(f"moezoo:{seed}:{epoch}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


class ResumableSampler(DistributedSampler):
    """Shuffled, sharded, resumable order of a dataset's items for one data-parallel rank.

    The items form one endless stream of epochs. Epoch ``e`` is a permutation of all items
    drawn from ``(seed, e)`` only; its global step ``s`` uses positions ``[s*G, (s+1)*G)``
    (``G = batch_size * num_replicas``, an incomplete last global batch is dropped) and this
    rank takes positions ``[s*G + rank*batch_size, s*G + (rank+1)*batch_size)`` of it.

    The position in the stream is ``(epoch, batches_consumed)``. Only
    :class:`ResumableDataLoader` advances it, by one per batch it hands out; each iteration
    continues from it to the end of that epoch, and starts the next epoch once it is used
    up. ``set_epoch`` is ignored on purpose: Lightning's epoch counter can run ahead of the
    data (a checkpoint written by ``on_train_epoch_end`` after ``max_steps`` stopped an epoch
    early restores as the next epoch), while consumed batches cannot.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        for field, value, low in (("batch_size", batch_size, 1), ("num_replicas", num_replicas, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ResumableSampler: {field} must be an int >= {low}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"ResumableSampler: rank must be an int in [0, {num_replicas}), got {rank!r}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.dataset_size = len(dataset)  # type: ignore[arg-type]
        self.global_batch_size = batch_size * num_replicas
        self.batches_per_epoch = self.dataset_size // self.global_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"ResumableSampler: {self.dataset_size} items make no global batch of {self.global_batch_size} "
                f"(batch_size {batch_size} x {num_replicas} replicas); lower batch_size or max_seq_len"
            )
        self.epoch = 0
        self.batches_consumed = 0  # of self.epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The global order of all items in ``epoch`` (identical on every rank)."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(self.dataset_size, generator=generator)

    def seek(self, epoch: int, batches_consumed: int = 0) -> None:
        """Move the stream to ``batches_consumed`` global steps into ``epoch``."""
        if not 0 <= batches_consumed <= self.batches_per_epoch or epoch < 0:
            raise ValueError(
                f"ResumableSampler.seek: no step {batches_consumed} in epoch {epoch} ({self.batches_per_epoch} steps per epoch)"
            )
        self.epoch, self.batches_consumed = int(epoch), int(batches_consumed)

    def __iter__(self) -> Iterator[int]:
        if self.batches_consumed >= self.batches_per_epoch:
            self.seek(self.epoch + 1)
        order = self.epoch_order(self.epoch)
        for step in range(self.batches_consumed, self.batches_per_epoch):
            first = step * self.global_batch_size + self.rank * self.batch_size
            yield from order[first : first + self.batch_size].tolist()

    def __len__(self) -> int:
        # a whole epoch, also when resuming: Lightning counts the batches it restored itself
        return self.batches_per_epoch * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the position advances with the batches consumed (see the class docstring)."""

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": int(self.epoch),
            "batches_consumed": int(self.batches_consumed),
            "global_batch_size": self.global_batch_size,
            "dataset_size": self.dataset_size,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("dataset_size", "seed"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"cannot resume the train loader: the checkpoint's {key} is {state.get(key)!r}, this run's is "
                    f"{getattr(self, key)!r} (the data, max_seq_len, tokenizer or seed changed)"
                )
        samples = int(state["batches_consumed"]) * int(state["global_batch_size"])
        if samples % self.global_batch_size:
            raise ValueError(
                f"cannot resume the train loader: {samples} samples were consumed, not a multiple of this run's "
                f"global batch {self.global_batch_size} (batch_size x data-parallel ranks)"
            )
        self.seek(int(state["epoch"]), samples // self.global_batch_size)


class ResumableDataLoader(DataLoader):
    """The train loader: a ``DataLoader`` over a :class:`ResumableSampler` that Lightning checkpoints.

    Lightning saves ``state_dict()`` of a stateful train dataloader in the checkpoint and
    calls ``load_state_dict()`` on resume; here the state is the sampler's stream position.
    """

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        if not isinstance(sampler, ResumableSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableSampler, got {type(sampler).__name__}")
        super().__init__(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=True, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        # a generator: nothing, not even worker start-up, runs before the first batch is asked
        # for, which is after Lightning has called load_state_dict
        sampler = self.sampler
        assert isinstance(sampler, ResumableSampler)
        for batch in super().__iter__():
            # counted here, not in the sampler: workers draw indices ahead of the batches used
            sampler.batches_consumed += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        assert isinstance(self.sampler, ResumableSampler)
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        assert isinstance(self.sampler, ResumableSampler)
        self.sampler.load_state_dict(state)
