"""Seeded train / validation / test split, stratified by arm."""

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
