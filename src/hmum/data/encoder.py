"""Feature encoder: every field -> a small integer id, ready for an embedding table.

* numeric field: quantile bins fitted on the training split only. Id 0 is
  "missing" (null/NaN); ids 1..B are the bins (B <= n_bins; duplicate quantiles
  collapse, so a field with few distinct values gets fewer bins).
* categorical field: a vocabulary of the values seen at least ``min_count``
  times (the ``max_vocab`` most frequent). Id 0 is "missing", id 1 is the
  out-of-vocabulary bucket (values unseen in training), ids 2.. the vocabulary.

Values are compared as strings, so a categorical column may be int, string or
dictionary typed. The encoder is saved to / loaded from JSON and is part of every
model artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from hmum.data.schema import FeatureSpec
from hmum.data.validate import numeric_column
from hmum.exceptions import DataError

MISSING = 0
OOV = 1


class EncoderConfig(BaseModel):
    """Settings of the feature encoder (the only home of their defaults)."""

    model_config = ConfigDict(extra="forbid")

    n_bins: int = Field(32, ge=1, description="maximum quantile bins per numeric field")
    max_vocab: int = Field(10_000, ge=1, description="maximum categories per field")
    min_count: int = Field(1, ge=1, description="training rows a category needs for an id")


def _as_strings(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_floating(col.type):
        # 3.0 and 3 must be the same category whether a file stored floats or ints.
        f = col.to_numpy(zero_copy_only=False)
        fin = np.isfinite(f)
        if (f[fin] == np.round(f[fin])).all():
            col = pa.array(np.where(fin, f, 0).astype(np.int64), mask=~fin)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    return col


class FeatureEncoder:
    """Fits per-field bins / vocabularies and maps a table to ids of shape (N, F).

    Args:
        fields: the schema's feature specs, in order (F of them).
        config: EncoderConfig; keyword overrides (n_bins=..., ...) are applied on top.
    """

    def __init__(
        self, fields: list[FeatureSpec], config: EncoderConfig | None = None, **overrides
    ) -> None:
        base = (config or EncoderConfig()).model_dump()
        self.config = EncoderConfig(**{**base, **overrides})
        self.fields = list(fields)
        self.n_bins = self.config.n_bins
        self.max_vocab = self.config.max_vocab
        self.min_count = self.config.min_count
        self.edges_: dict[str, list[float]] | None = None
        self.vocab_: dict[str, list[str]] | None = None

    # --- fitting -----------------------------------------------------------
    def fit(self, table: pa.Table) -> FeatureEncoder:
        """Learn bins and vocabularies from ``table`` (the training split only)."""
        self._check_columns(table)
        edges: dict[str, list[float]] = {}
        vocab: dict[str, list[str]] = {}
        for f in self.fields:
            col = table.column(f.name)
            if f.kind == "numeric":
                x = numeric_column(col, f.name)
                x = x[np.isfinite(x)]
                if x.size == 0:
                    edges[f.name] = []
                    continue
                qs = np.quantile(x, np.linspace(0, 1, self.n_bins + 1)[1:-1])
                edges[f.name] = np.unique(qs).tolist()
            else:
                s = _as_strings(col)
                vc = pc.value_counts(s.drop_null())
                values = vc.field("values").to_numpy(zero_copy_only=False)
                counts = vc.field("counts").to_numpy()
                keep = counts >= self.min_count
                values, counts = values[keep], counts[keep]
                # most frequent first; ties broken by value so the order is deterministic
                order = np.lexsort((values.astype(str), -counts))[: self.max_vocab]
                vocab[f.name] = [str(v) for v in values[order]]
        self.edges_, self.vocab_ = edges, vocab
        return self

    # --- transforming --------------------------------------------------------
    @property
    def cardinalities(self) -> list[int]:
        """Number of ids of each field (embedding table sizes), length F."""
        self._check_fitted()
        return [
            len(self.edges_[f.name]) + 2 if f.kind == "numeric" else len(self.vocab_[f.name]) + 2
            for f in self.fields
        ]

    def transform(self, table: pa.Table) -> np.ndarray:
        """Map ``table`` (N rows) to ids, an int32 array of shape (N, F)."""
        self._check_fitted()
        self._check_columns(table)
        out = np.empty((table.num_rows, len(self.fields)), dtype=np.int32)
        for j, f in enumerate(self.fields):
            col = table.column(f.name)
            if f.kind == "numeric":
                x = numeric_column(col, f.name)
                ids = np.searchsorted(np.asarray(self.edges_[f.name]), x, side="right") + 1
                ids[~np.isfinite(x)] = MISSING
                out[:, j] = ids
            else:
                s = _as_strings(col)
                idx = pc.index_in(s, value_set=pa.array(self.vocab_[f.name], type=pa.string()))
                # index_in gives null both for nulls and unseen values; tell them apart.
                ids = pc.fill_null(pc.add(idx, 2), OOV).to_numpy(zero_copy_only=False)
                ids = np.asarray(ids, dtype=np.int32)
                ids[s.is_null().to_numpy(zero_copy_only=False)] = MISSING
                out[:, j] = ids
        return out

    def fit_transform(self, table: pa.Table) -> np.ndarray:
        return self.fit(table).transform(table)

    # --- persistence ---------------------------------------------------------
    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "fields": [f.model_dump() for f in self.fields],
            "config": self.config.model_dump(),
            "edges": self.edges_,
            "vocab": self.vocab_,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureEncoder:
        try:
            enc = cls([FeatureSpec(**f) for f in d["fields"]], EncoderConfig(**d["config"]))
            enc.edges_ = {k: [float(e) for e in v] for k, v in d["edges"].items()}
            enc.vocab_ = {k: [str(e) for e in v] for k, v in d["vocab"].items()}
        except (KeyError, TypeError) as e:
            raise ValueError(f"encoder JSON is malformed: {e!r}") from e
        return enc

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def from_json(cls, path: str | Path) -> FeatureEncoder:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # --- helpers -------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.edges_ is None or self.vocab_ is None:
            raise RuntimeError("FeatureEncoder is not fitted: call fit(train_table) first")

    def _check_columns(self, table: pa.Table) -> None:
        missing = [f.name for f in self.fields if f.name not in table.column_names]
        if missing:
            raise DataError(
                f"missing feature column(s) {missing}; the table has {table.column_names}"
            )
