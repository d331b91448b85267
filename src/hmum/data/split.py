"""Seeded train / validation / test splits: stratified by arm, or by a hash of the row index."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_indices(
    arm: np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, seed: int = 0
) -> list[np.ndarray]:
    """Split row indices into parts with the given fractions, within every arm.

    Args:
        arm: (N,) int arm of each row; each arm is split separately so every part
            keeps the arm shares of the whole.
        fractions: one fraction per part, positive, summing to 1 (default 8:1:1).
        seed: the same seed gives the same split.

    Returns:
        One sorted int64 index array per part; together they cover 0..N-1 once.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size < 1 or (fr <= 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be positive and sum to 1, got {list(fractions)}")
    arm = np.asarray(arm)
    if arm.ndim != 1:
        raise ValueError(f"arm must be 1-D (N,), got shape {arm.shape}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    for a in np.unique(arm):
        idx = np.flatnonzero(arm == a)
        rng.shuffle(idx)
        # Cumulative rounding so part sizes add up exactly to the arm's count.
        cuts = np.round(np.cumsum(fr)[:-1] * idx.size).astype(np.int64)
        for p, chunk in enumerate(np.split(idx, cuts)):
            parts[p].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts]


# Seeded hashes of row indices: a split that any sharding of the rows reproduces
# (data-parallel workers each see only their row groups, so no global shuffle).

_MASK64 = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays (wrapping arithmetic is intended)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_uniform(index: np.ndarray, seed: int, stream: int = 0) -> np.ndarray:
    """A uniform number in [0, 1) per row index, fixed by (index, seed, stream).

    index: (N,) non-negative ints (global row indices) -> (N,) float64.
    """
    idx = np.asarray(index)
    if idx.size and int(idx.min()) < 0:
        raise ValueError(f"index must be non-negative row indices, got minimum {int(idx.min())}")
    key = _splitmix64(np.array([seed & _MASK64, stream & _MASK64], dtype=np.uint64))
    h = _splitmix64(_splitmix64(idx.astype(np.uint64) ^ key[0]) ^ key[1])
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def hash_split(index: np.ndarray, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """Part of every row (0 = first fraction, ...) by a seeded hash of its index.

    index: (N,) global row indices -> (N,) int8 part ids. Each row's part depends on
    its index and the seed only, so any sharding of the rows gives the same parts;
    part sizes are binomial around N * fraction (not stratified by arm).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size < 1 or (fr <= 0).any() or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be positive and sum to 1, got {list(fractions)}")
    u = hash_uniform(index, seed, stream=0)
    return np.searchsorted(np.cumsum(fr)[:-1], u, side="right").astype(np.int8)


def split_from_record(split: dict, arm: np.ndarray) -> list[np.ndarray]:
    """Row indices of each part of a split recorded in a model artifact.

    split: {"rule": "stratified" | "hash", "fractions": [...], "seed": int};
    arm: (N,) arms of the full table, in file order -> one index array per fraction.
    """
    rule, fractions, seed = split.get("rule"), tuple(split["fractions"]), split["seed"]
    if rule == "stratified":
        return split_indices(arm, fractions, seed=seed)
    if rule == "hash":
        part = hash_split(np.arange(len(arm)), fractions, seed)
        return [np.flatnonzero(part == i) for i in range(len(fractions))]
    raise ValueError(f"split rule must be 'stratified' or 'hash', got {rule!r}")


# Fingerprints of a table's rows: which table a recorded split indexes into. A sum
# over rows of a hash of (row digest, row index): order-sensitive (the split is by
# position), and computable piece by piece (a streamed file, data-parallel shards).

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def combine_digests(columns: Sequence[np.ndarray]) -> np.ndarray:
    """One uint64 per row from per-column uint64 digests (each (N,)), order-sensitive."""
    h = np.zeros(len(columns[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j, c in enumerate(columns):
            h = _splitmix64(h ^ (c + _GOLDEN * np.uint64(j + 1)))
    return h


def fingerprint_sums(digests: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(2,) uint64: sums (wrapping mod 2**64) over rows of two seeded hashes of
    (digest (N,) uint64, global row index (N,)). Sums of pieces add up to the sum
    of the whole, so a table may be fingerprinted in pieces."""
    idx = np.asarray(index).astype(np.uint64)
    out = np.zeros(2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for s in range(2):
            key = _splitmix64(np.array([s + 1], dtype=np.uint64))[0]
            out[s] = _splitmix64(digests ^ _splitmix64(idx ^ key)).sum(dtype=np.uint64)
    return out
