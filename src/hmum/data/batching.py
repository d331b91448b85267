"""Mini-batches over pre-encoded tensors: index slices, never per-row Python."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


class BatchIterator:
    """Iterate over aligned tensors in batches of ``batch_size`` rows.

    Args:
        tensors: tensors sharing their first dimension N (e.g. x (N, F), arm (N,),
            y (N, R)).
        batch_size: rows per batch (the last batch may be smaller).
        shuffle: draw a new permutation every epoch (every ``iter()``).
        seed: seeds the permutations; epoch e uses seed + e, so a resumed run
            sees the same order as an uninterrupted one.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        *,
        batch_size: int = 4096,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if not tensors:
            raise ValueError("tensors must not be empty")
        n = tensors[0].shape[0]
        for i, t in enumerate(tensors):
            if t.shape[0] != n:
                raise ValueError(f"tensors[{i}] has {t.shape[0]} rows, tensors[0] has {n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = list(tensors)
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            # drawn on the CPU (same order on every device), used where the data lives
            perm = torch.randperm(self.n, generator=g).to(self.tensors[0].device)
            self.epoch += 1
            for s in range(0, self.n, self.batch_size):
                idx = perm[s : s + self.batch_size]
                yield tuple(t.index_select(0, idx) for t in self.tensors)
        else:
            for s in range(0, self.n, self.batch_size):
                yield tuple(t[s : s + self.batch_size] for t in self.tensors)
