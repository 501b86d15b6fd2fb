"""Resumable distributed sampling and kNN-grouped hard-negative batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svl.train import KNNGroupedBatchSampler, ResumableBatchSampler, ResumableSampler
from svl.train.sampler import knn_indices


def test_resumable_sampler_partitions_like_distributed_sampler() -> None:
    for drop_last in (False, True):
        ours = [list(ResumableSampler(11, True, 4, r, 3, drop_last)) for r in range(3)]
        ref = []
        for r in range(3):
            s = torch.utils.data.DistributedSampler(
                range(11), 3, r, shuffle=True, seed=4, drop_last=drop_last
            )
            ref.append(list(s))
        assert ours == ref
    s = ResumableSampler(10, True, 0)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    assert sorted(e1) == list(range(10)) and list(s) != e1


def test_set_start_continues_at_exact_position() -> None:
    s = ResumableSampler(23, True, 1, rank=1, world_size=2)
    s.set_epoch(5)
    full = list(s)
    s.set_start(2, 4)
    assert list(s) == full[8:] and len(s) == len(full) - 8
    s.set_epoch(6)  # a new epoch rewinds
    assert len(s) == s.num_samples
    bs = ResumableBatchSampler(ResumableSampler(23, True, 1), batch_size=5, drop_last=True)
    bs.set_epoch(3)
    batches = list(bs)
    assert bs.num_batches == 4 and len(batches) == 4 and all(len(b) == 5 for b in batches)
    bs.set_start(2)
    assert list(bs) == batches[2:] and len(bs) == 2
    with pytest.raises(ValueError, match="batch 9"):
        bs.set_start(9)


def _clusters(
    n_clusters: int = 8, size: int = 4, dim: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)) * 10
    labels = np.repeat(np.arange(n_clusters), size)
    feats = centres[labels] + rng.normal(size=(len(labels), dim)) * 0.1
    perm = rng.permutation(len(labels))
    return feats[perm], labels[perm]


def test_knn_indices_match_brute_force() -> None:
    x = np.random.default_rng(1).normal(size=(30, 5))
    nn_idx = knn_indices(x, k=3, chunk=7)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    np.testing.assert_array_equal(nn_idx, np.argsort(-sim, axis=1)[:, :3])


def test_knn_grouping_puts_neighbours_together() -> None:
    feats, labels = _clusters()
    sampler = KNNGroupedBatchSampler(feats, batch_size=8, group_size=4, seed=0)
    sampler.set_epoch(0)
    for g in sampler.groups(0):
        assert len(set(labels[g].tolist())) == 1  # every group is one cluster
    batches = list(sampler)
    assert len(batches) == 4 and sorted(i for b in batches for i in b) == list(range(32))
    for b in batches:  # each batch = two whole clusters, in runs of 4
        assert all(len(set(labels[b[k : k + 4]].tolist())) == 1 for k in (0, 4))
    # Deterministic per epoch, different across epochs.
    again = KNNGroupedBatchSampler(feats, batch_size=8, group_size=4, seed=0)
    again.set_epoch(0)
    assert list(again) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # Random grouping would almost never keep clusters whole.
    rng = np.random.default_rng(0)
    rand_groups = rng.permutation(32).reshape(8, 4)
    assert sum(len(set(labels[g].tolist())) == 1 for g in rand_groups) < 8


def test_knn_sampler_ranks_and_resume() -> None:
    feats, _ = _clusters(n_clusters=10, size=4)
    per_rank = []
    for r in range(2):
        s = KNNGroupedBatchSampler(feats, batch_size=8, group_size=4, seed=3, rank=r, world_size=2)
        s.set_epoch(2)
        per_rank.append(list(s))
    assert len(per_rank[0]) == len(per_rank[1]) == 2  # 40 samples -> 5 batches of 8 -> 2 per rank
    seen = [i for rank in per_rank for b in rank for i in b]
    assert len(seen) == len(set(seen)) == 32
    s = KNNGroupedBatchSampler(feats, batch_size=8, group_size=4, seed=3, rank=1, world_size=2)
    s.set_epoch(2)
    s.set_start(1)
    assert list(s) == per_rank[1][1:] and len(s) == 1
    with pytest.raises(ValueError, match="multiple"):
        KNNGroupedBatchSampler(feats, batch_size=6, group_size=4)
    with pytest.raises(ValueError, match="NaN"):
        KNNGroupedBatchSampler(np.full((8, 3), np.nan), batch_size=4, group_size=2)
