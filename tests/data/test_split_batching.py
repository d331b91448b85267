import numpy as np
import pytest
import torch

from hmum.data.batching import BatchIterator
from hmum.data.split import hash_split, split_from_record, split_indices


def test_split_is_a_partition_stratified_by_arm():
    arm = np.repeat([0, 1, 2], [5000, 3000, 2000])
    parts = split_indices(arm, seed=3)
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(arm.size))
    for p, f in zip(parts, (0.8, 0.1, 0.1), strict=True):
        counts = np.bincount(arm[p], minlength=3)
        np.testing.assert_allclose(counts, f * np.array([5000, 3000, 2000]), atol=1)


def test_split_seeding():
    arm = np.arange(1000) % 2
    a = split_indices(arm, seed=1)
    b = split_indices(arm, seed=1)
    c = split_indices(arm, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_split_bad_fractions():
    with pytest.raises(ValueError, match="fractions must be positive and sum to 1"):
        split_indices(np.zeros(10), (0.5, 0.2))


def test_batches_cover_every_row_once_per_epoch():
    x = torch.arange(10_003).unsqueeze(1).repeat(1, 3)
    y = torch.arange(10_003, dtype=torch.float32)
    it = BatchIterator([x, y], batch_size=1000, shuffle=True, seed=0)
    assert len(it) == 11
    seen = []
    for xb, yb in it:
        assert torch.equal(xb[:, 0].float(), yb)  # rows stay aligned
        seen.append(yb)
    assert torch.equal(torch.sort(torch.cat(seen)).values, y)
    first = torch.cat([b[1] for b in it])  # second epoch: a new order
    assert not torch.equal(first, torch.cat(seen))


def test_batches_seeded_per_epoch():
    x = torch.arange(100)
    a = BatchIterator([x], batch_size=7, shuffle=True, seed=5)
    b = BatchIterator([x], batch_size=7, shuffle=True, seed=5)
    b.set_epoch(1)
    list(a)
    assert torch.equal(torch.cat([t[0] for t in a]), torch.cat([t[0] for t in b]))


def test_batches_unaligned_rejected():
    with pytest.raises(ValueError, match="tensors\\[1\\] has 3 rows, tensors\\[0\\] has 4"):
        BatchIterator([torch.zeros(4), torch.zeros(3)])


def test_hash_split_is_per_row_and_seeded():
    idx = np.arange(100_000)
    part = hash_split(idx, (0.8, 0.1, 0.1), seed=3)
    np.testing.assert_allclose(np.bincount(part) / idx.size, [0.8, 0.1, 0.1], atol=0.005)
    # a row's part does not depend on which other rows are split with it
    sub = idx[7::5]
    np.testing.assert_array_equal(hash_split(sub, (0.8, 0.1, 0.1), seed=3), part[7::5])
    other = hash_split(idx, (0.8, 0.1, 0.1), seed=4)
    assert 0.25 < (other != part).mean() < 0.4  # independent draws: 1 - .64 - .01 - .01
    with pytest.raises(ValueError, match="fractions must be positive and sum to 1"):
        hash_split(idx, (0.8, 0.3), seed=0)


def test_split_from_record_reproduces_both_rules():
    arm = np.arange(1000) % 3
    strat = split_from_record({"rule": "stratified", "fractions": [0.8, 0.1, 0.1], "seed": 2}, arm)
    for a, b in zip(strat, split_indices(arm, (0.8, 0.1, 0.1), seed=2), strict=True):
        np.testing.assert_array_equal(a, b)
    hashed = split_from_record({"rule": "hash", "fractions": [0.8, 0.1, 0.1], "seed": 2}, arm)
    part = hash_split(np.arange(1000), (0.8, 0.1, 0.1), 2)
    for i, idx in enumerate(hashed):
        np.testing.assert_array_equal(idx, np.flatnonzero(part == i))
    with pytest.raises(ValueError, match="split rule must be 'stratified' or 'hash', got 'x'"):
        split_from_record({"rule": "x", "fractions": [1.0], "seed": 0}, arm)
