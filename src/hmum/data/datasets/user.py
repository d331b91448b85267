"""A user's own experiment as a benchmark source: a Parquet/CSV file plus a Schema.

``hmum bench --data FILE --schema SCHEMA.json [--test-data FILE]`` runs the same
harness as the named datasets on it (:func:`hmum.workflows.bench.run_bench` with
``source=UserData(...)``). Without a test file the rows get the seeded 8:1:1
train / valid / test split stratified by arm that the single-table named datasets
use (``RCT_SPLIT``); with one, the data file is split 9:1 into train / valid
(``TRAIN_VALID_SPLIT``) and the test file is the test part, as for Starbucks.

The files are read once per source. :meth:`UserData.key` is what the harness puts
into every cell key: the schema, the split fractions and a fingerprint of each
file's *content* (its rows in order, arms, responses, user ids and ground truth),
so a changed file never reuses an earlier run's cells while the same rows saved
as CSV or Parquet do.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hmum.data.datasets._common import RCT_SPLIT, TRAIN_VALID_SPLIT, BenchSplit, split2, split3
from hmum.data.schema import Schema
from hmum.data.validate import ExperimentData, data_fingerprint, load_experiment

__all__ = ["UserData", "content_fingerprint"]


def content_fingerprint(d: ExperimentData) -> dict:
    """{"rows", "hash", "truth"}: the rows of ``d`` (features, arm, responses; in order),
    its user ids and its ground truth, hashed. Any changed value changes it.

    ``data_fingerprint`` keys by user id alone when there is one; here the rows are
    always hashed, and the ids and the truth added.
    """
    rows = data_fingerprint(dataclasses.replace(d, user_id=None))
    h = hashlib.sha256(rows["hash"].encode())
    if d.user_id is not None:
        h.update(data_fingerprint(d)["hash"].encode())
    for a in (d.mu, d.mu_all):
        h.update(b"-" if a is None else np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return {"rows": rows["rows"], "hash": h.hexdigest()[:32],
            "truth": "none" if d.mu is None else ("per-arm" if d.mu_all is None else "full")}


@dataclasses.dataclass
class UserData:
    """A benchmark source over the user's own file(s).

    Args:
        path: the experiment (Parquet or CSV file, or a folder of Parquet parts).
        schema: its columns' roles (a Schema, or the path of its JSON).
        test_path: an optional separate test file with the same schema.
        fractions: the split of ``path``: (train, valid, test) without ``test_path``,
            (train, valid) with it. Default: 8:1:1, resp. 9:1.
        name: the name in the tables (default: the file's stem).
    """

    path: str | Path
    schema: Schema | str | Path
    test_path: str | Path | None = None
    fractions: Sequence[float] | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not isinstance(self.schema, Schema):
            self.schema = Schema.from_json(self.schema)
        self.test_path = None if self.test_path is None else Path(self.test_path)
        default = TRAIN_VALID_SPLIT if self.test_path is not None else RCT_SPLIT
        self.fractions = tuple(float(f) for f in (self.fractions or default))
        want = 2 if self.test_path is not None else 3
        if len(self.fractions) != want:
            what = "(train, valid) with a test file" if want == 2 else "(train, valid, test)"
            raise ValueError(f"fractions: expected {want} numbers {what}, received "
                             f"{list(self.fractions)}")
        if self.name is None:
            stem = self.path.name
            for suffix in (".gz", ".csv", ".parquet", ".pq", ".tsv", ".txt"):
                stem = stem.removesuffix(suffix)
            self.name = stem or "data"
        self._data: tuple[ExperimentData, ExperimentData | None] | None = None
        self._key: dict | None = None

    def load(self) -> tuple[ExperimentData, ExperimentData | None]:
        """(data, test data or None), read and validated once."""
        if self._data is None:
            d = load_experiment(self.path, self.schema)
            t = None if self.test_path is None else load_experiment(self.test_path, self.schema)
            self._data = (d, t)
        return self._data

    def key(self) -> dict:
        """What identifies this source's cells (see the module docstring)."""
        if self._key is None:
            d, t = self.load()
            self._key = {"kind": "user_data", "schema": self.schema.model_dump(mode="json"),
                         "fractions": list(self.fractions), "data": content_fingerprint(d),
                         "test": None if t is None else content_fingerprint(t)}
        return self._key

    def splits(self, seed: int) -> list[BenchSplit]:
        """One seeded split, stratified by arm (the same seed gives the same split)."""
        d, t = self.load()
        if t is None:
            return [BenchSplit(self.name, *split3(d, self.fractions, seed))]
        return [BenchSplit(self.name, *split2(d, self.fractions, seed), t)]

    def loader(self, dataset=None, path=None, *, seed: int = 0, **options) -> list[BenchSplit]:
        """The harness's loader contract ``loader(dataset, path, seed=..., **options)``."""
        if options:
            raise ValueError(f"options: user data takes none here (pass fractions= to "
                             f"UserData), received {sorted(options)}")
        return self.splits(seed)
