"""Samplers that can resume at an exact data position, and kNN-grouped batches for hard negatives.

`ResumableSampler` is DistributedSampler's split (pad or drop so every rank gets the same count,
then `rank::world_size`) with a start offset, so a run stopped mid-epoch continues with the very
next sample. Batch samplers here share one small protocol the Trainer relies on:
`set_epoch(epoch)`, `set_start(batch_index)`, `num_batches` (full epoch), `len()` (batches left),
iteration yielding lists of dataset indices.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["KNNGroupedBatchSampler", "ResumableBatchSampler", "ResumableSampler", "knn_indices"]


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Per-rank, per-epoch shuffled indices (seeded by `seed + epoch`) with a resumable start."""

    def __init__(
        self,
        dataset_len: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if dataset_len <= 0:
            raise ValueError(f"dataset_len must be > 0, got {dataset_len}")
        _check_rank(rank, world_size)
        if drop_last and dataset_len < world_size:
            raise ValueError(f"{dataset_len} samples cannot be split over {world_size} ranks with drop_last")
        self.dataset_len, self.shuffle, self.seed = int(dataset_len), bool(shuffle), int(seed)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        self.epoch = 0
        self.start = 0

    @property
    def num_samples(self) -> int:
        """Samples this rank sees in a full epoch (equal on every rank)."""
        if self.drop_last:
            return self.dataset_len // self.world_size
        return math.ceil(self.dataset_len / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation and rewind to its start."""
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, batch_index: int, batch_size: int) -> None:
        """Skip the first `batch_index` batches of `batch_size` samples of the current epoch."""
        start = int(batch_index) * int(batch_size)
        if batch_index < 0 or batch_size <= 0 or start > self.num_samples:
            raise ValueError(
                f"cannot start at batch {batch_index} of size {batch_size}: "
                f"the epoch has {self.num_samples} samples"
            )
        self.start = start

    def epoch_indices(self) -> list[int]:
        """This rank's full index list for the current epoch."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        total = self.num_samples * self.world_size
        if total > len(order):  # pad by repeating from the front, like DistributedSampler
            reps = math.ceil(total / len(order))
            order = (order * reps)[:total]
        order = order[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


class ResumableBatchSampler:
    """Batches of a `ResumableSampler`; `set_start(k)` resumes at the k-th batch of the epoch."""

    def __init__(self, sampler: ResumableSampler, batch_size: int, drop_last: bool = True) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), bool(drop_last)
        if self.num_batches == 0:
            raise ValueError(
                f"{sampler.num_samples} samples per rank do not fill one batch of {batch_size} "
                "(drop_last=True)"
            )
        self.start = 0

    @property
    def num_batches(self) -> int:
        n = self.sampler.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.start = 0

    def set_start(self, batch_index: int) -> None:
        if not 0 <= batch_index <= self.num_batches:
            raise ValueError(f"cannot start at batch {batch_index}: the epoch has {self.num_batches} batches")
        self.sampler.set_start(batch_index, self.batch_size)
        self.start = int(batch_index)

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        left = len(self)
        for idx in self.sampler:
            if left == 0:
                return
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch, left = [], left - 1
        if batch and left > 0:
            yield batch

    def __len__(self) -> int:
        return self.num_batches - self.start


def knn_indices(features: Any, k: int, chunk: int = 4096) -> np.ndarray:
    """(N, k) indices of each row's k nearest other rows by cosine similarity (exact, chunked)."""
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    k = min(int(k), x.shape[0] - 1)
    x = torch.nn.functional.normalize(x, dim=1)
    out = np.empty((x.shape[0], k), dtype=np.int64)
    for lo in range(0, x.shape[0], chunk):
        sim = x[lo : lo + chunk] @ x.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + lo] = -float("inf")  # never your own neighbour
        out[lo : lo + chunk] = sim.topk(k, dim=1).indices.numpy()
    return out


class KNNGroupedBatchSampler:
    """Batches made of groups of `group_size` nearest neighbours, for harder in-batch negatives.

    Each epoch (seeded by `seed`, `epoch`) visits samples in random order; every unassigned sample
    starts a group with its nearest still-unassigned neighbours (from a fixed kNN list). Samples
    left in incomplete groups are grouped at random. Groups are shuffled and packed into global
    batches that ranks take round-robin, so all ranks agree without communicating.
    The exact kNN is O(N^2 D) once; for large N pass a precomputed `neighbors` (N, k) array.
    """

    def __init__(
        self,
        features: Any,
        batch_size: int,
        group_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        k: int | None = None,
        neighbors: np.ndarray | None = None,
    ) -> None:
        _check_rank(rank, world_size)
        if group_size < 1 or batch_size < 1 or batch_size % group_size:
            raise ValueError(
                f"batch_size ({batch_size}) must be a positive multiple of group_size ({group_size})"
            )
        if neighbors is None:
            neighbors = knn_indices(features, k or max(4 * group_size, 16))
        neighbors = np.asarray(neighbors, dtype=np.int64)
        n = neighbors.shape[0]
        if neighbors.ndim != 2 or neighbors.min(initial=0) < 0 or neighbors.max(initial=0) >= n:
            raise ValueError(
                f"neighbors must be an (N, k) array of indices in [0, N), got shape {neighbors.shape}"
            )
        self.neighbors, self.n = neighbors, n
        self.batch_size, self.group_size, self.seed = int(batch_size), int(group_size), int(seed)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        if self.num_batches == 0:
            raise ValueError(
                f"{n} samples do not give one batch of {batch_size} per rank on {world_size} ranks"
            )
        self.epoch, self.start = 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def groups(self, epoch: int) -> list[list[int]]:
        """The epoch's groups, in batch order (deterministic in seed and epoch)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        assigned = np.zeros(self.n, dtype=bool)
        groups: list[list[int]] = []
        leftovers: list[int] = []
        for p in rng.permutation(self.n).tolist():
            if assigned[p]:
                continue
            assigned[p] = True
            grp = [p]
            for q in self.neighbors[p].tolist():
                if len(grp) == self.group_size:
                    break
                if not assigned[q]:
                    assigned[q] = True
                    grp.append(q)
            if len(grp) == self.group_size:
                groups.append(grp)
            else:
                leftovers.extend(grp)
        leftovers = rng.permutation(np.asarray(leftovers, dtype=np.int64)).tolist()
        groups += [leftovers[i : i + self.group_size] for i in range(0, len(leftovers), self.group_size)]
        return [groups[i] for i in rng.permutation(len(groups)).tolist()]

    def _global_batches(self) -> list[list[int]]:
        flat = [i for g in self.groups(self.epoch) for i in g]
        batches = [flat[i : i + self.batch_size] for i in range(0, len(flat), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    @property
    def num_batches(self) -> int:
        full, rem = divmod(self.n, self.batch_size)
        total = full if self.drop_last else full + (rem > 0)
        return total // self.world_size if self.drop_last else math.ceil(total / self.world_size)

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (cached per epoch)."""
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self._global_batches()
            need = self.num_batches * self.world_size
            while len(batches) < need:  # pad (drop_last=False) by reusing batches from the front
                batches += batches[: need - len(batches)]
            self._cache = (self.epoch, batches[:need][self.rank :: self.world_size])
        return self._cache[1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = int(epoch), 0

    def set_start(self, batch_index: int) -> None:
        if not 0 <= batch_index <= self.num_batches:
            raise ValueError(f"cannot start at batch {batch_index}: the epoch has {self.num_batches} batches")
        self.start = int(batch_index)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.epoch_batches()[self.start :])

    def __len__(self) -> int:
        return self.num_batches - self.start
