"""Daily batch scoring: users -> HUM -> delta (N, K, R) -> Parquet record + uplift store.

Paper §6.2: every user is scored daily and the relative uplifts go to a
key-value store that the online decision reads. Three layers:

* ``score_table(estimator, table)`` -- framework-free: one Arrow table of users
  in, ``Scores`` (user ids (N,), y_hat (N, K+1, R), delta (N, K, R)) out;
  ``record_table`` turns them into the Parquet record's columns.
* ``score_shard(estimator, plan, shard, start, stop, ...)`` -- framework-free:
  reads one shard's rows, scores them and serializes its record (``ShardResult``).
  It is the only code that computes a shard, whichever runner calls it.
* ``execute(job, store, config, compute)`` -- one run, shared by the runners;
  only ``compute`` (which computes the shards still to do) differs:
  ``run_scoring`` (here, the local runner) computes them one after another in
  this process; ``hmum.serving.ray_runner.run_scoring_ray`` on Ray actors. The
  run's process writes every file and loads the store (``StoreSink``, optionally
  throttled), so both give the same bytes and either can resume the other's run.

The runner is idempotent and resumable:

* Shards are deterministic: shard i is rows [i*S, (i+1)*S) of the input in its
  fixed order (files sorted by path, rows in file order); S = ``shard_rows``.
* Shard i's record is written as ``.part-0000i.parquet.tmp``, flushed and renamed
  atomically to ``part-0000i.parquet``; then a marker ``_part-0000i.json`` (rows,
  bytes, sha256) is written the same way. A shard with a valid marker is skipped.
* The store records each shard once its rows are in (SQLite: same transaction);
  a shard whose record exists but whose load did not finish is loaded again from
  its Parquet file (loads are upserts, so a half-done load is simply redone).
* Readers of the record never see partial files: names starting with '.' or '_'
  are ignored by Arrow/Spark datasets.

So a run killed at any point and started again ends with exactly the content of
an uninterrupted run. The record is laid out as
``{out}/date=YYYY-MM-DD/model_version=V/part-XXXXX.parquet`` with columns: the id
column, ``y_hat__{arm}__{response}`` for the K+1 arms and
``delta__{treatment}__{response}`` for the K treatments (float32); with a decision
rule that switches on a lower bound of phi (``ScoringConfig.decision`` with ``bound``),
also the members' spread (``hmum.decision.bounds.pack_spread``; model: a HUM with M >= 2
members, ``HUMEstimator.member_deltas``) as ``member_mean__{treatment}__{response}``
and ``member_cov__{treatment}__{response}__{response}``, stored beside delta
(``VersionInfo.members`` = M) for the service to bound phi per request.

Versioning: the store version is ``YYYYMMDD-{model_version}`` (one per day and
model, since features change daily); it is loaded while ``loading``, checked
(row count and sample reads against the record), marked ``ready``, then made
current by one atomic switch; the old current stays as ``previous`` for a
one-step rollback; older versions are cleaned up. A run that stops with an
error marks its unchecked version ``failed`` (with the error; running the job
again resumes it). The switch is refused (``ScoringError``, before any work)
when the new version's responses or treatments differ from the current
version's -- the serving value-weight model weighs those responses -- unless
``force``. The store must answer before any file is written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from hmum.data.schema import Schema
from hmum.decision.core import relative_uplift
from hmum.exceptions import DataError, ScoringError, StoreError
from hmum.serving.store import UpliftStore, VersionInfo, check_name, open_store

RUN_FILE = "_run.json"
SUCCESS_FILE = "_SUCCESS"
LOCK_FILE = "_lock"
RUN_FORMAT = "hmum-scoring/1"




class ScoringConfig(BaseModel):
    """Settings of a scoring run (the only home of their defaults)."""

    model_config = ConfigDict(extra="forbid")

    shard_rows: int = Field(200_000, ge=1, description="rows per shard (resume unit)")
    batch_size: int = Field(65_536, ge=1, description="rows per model forward")
    date: dt.date | None = Field(None, description="scoring date; None = today (UTC)")
    model_version: str | None = Field(
        None, description="model version; None = from the artifact manifest's sha256"
    )
    id_column: str | None = Field(None, description="user id column; None = schema's or user_id")
    switch: bool = Field(True, description="make the new version current once checked")
    force: bool = Field(
        False, description="switch even when the new version's responses or treatments "
        "differ from the current version's (the serving value-weight model's)")
    cleanup: bool = Field(True, description="after the switch, delete older versions")
    restart: bool = Field(False, description="discard this run's earlier output and start over")
    sample_reads: int = Field(256, ge=0, description="users read back from the store to check")
    threads: int | None = Field(
        None, ge=1, description="torch threads (per worker with Ray); None = leave as is "
        "(Ray: 1 per worker)")
    store_max_rows_per_s: float | None = Field(
        None, gt=0, description="throttle of the store load, rows/s; None = no limit")
    decision: dict[str, Any] | None = Field(
        None, description="a decision rule (hmum.decision.rules.DecisionRule.to_dict()) frozen "
        "into the new store version's metadata: hmum serve decides by it while that version "
        "is current, so switch and rollback move the rule with the uplifts; None = none")


# --------------------------------------------------------------------------------------
# Scoring one table (framework-free)
# --------------------------------------------------------------------------------------


@dataclass
class Scores:
    """Scores of N users.

    Attributes:
        user_ids: (N,) int64 or object (str).
        y_hat: (N, K+1, R) float32 potential outcomes; y_hat[:, 0] is y0*.
        delta: (N, K, R) float32 relative uplift (``hmum.decision.relative_uplift``).
        spread: (N, S) float32 members' spread (``pack_spread``), or None.
    """

    user_ids: np.ndarray
    y_hat: np.ndarray
    delta: np.ndarray
    spread: np.ndarray | None = None


def user_ids_of(table: pa.Table, id_column: str) -> np.ndarray:
    """(N,) int64 (integer column) or object str array. DataError naming the column."""
    if id_column not in table.column_names:
        raise DataError(f"missing user id column {id_column!r}; the data has columns "
                        f"{table.column_names} (set id_column)")
    col = table.column(id_column)
    if col.null_count:
        raise DataError(f"column {id_column!r}: expected a user id in every row, received "
                        f"{col.null_count} missing value(s)")
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_integer(t):
        return col.to_numpy().astype(np.int64, copy=False)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return np.asarray(col.to_pylist(), dtype=object)
    raise DataError(f"column {id_column!r}: expected integer or string user ids, received {t}")


def score_table(estimator, table: pa.Table, *, id_column: str,
                batch_size: int = 65_536, members: bool = False) -> Scores:
    """Score one table of users with ``estimator`` (any ``predict_outcomes`` model).

    table: N rows holding the schema's feature columns and ``id_column``.
    Returns Scores: user_ids (N,), y_hat (N, K+1, R), delta (N, K, R), float32, and
    with ``members`` (a HUM with M >= 2 members) the members' spread (N, S).
    """
    ids = user_ids_of(table, id_column)
    data, spread = table, None
    if members:
        from hmum.decision.bounds import pack_spread

        data = estimator.encode(table)  # encoded once for both passes
        spread = pack_spread(estimator.member_deltas(data, batch_size=batch_size)
                             ).astype(np.float32)
    y_hat = np.asarray(estimator.predict_outcomes(data, batch_size=batch_size), np.float32)
    delta = np.asarray(relative_uplift(y_hat), dtype=np.float32)
    return Scores(user_ids=ids, y_hat=y_hat, delta=delta, spread=spread)


def record_columns(schema: Schema) -> tuple[list[str], list[str]]:
    """(y_hat columns [(K+1)*R], delta columns [K*R]), arm-major like the arrays."""
    y_cols = [f"y_hat__{a}__{r}" for a in schema.arms for r in schema.response_names]
    d_cols = [f"delta__{a}__{r}" for a in schema.arms[1:] for r in schema.response_names]
    return y_cols, d_cols


def spread_columns(schema: Schema) -> list[str]:
    """The S columns of the members' spread, in ``pack_spread``'s order: K*R member means
    (``member_mean__{treatment}__{response}``), then per treatment the upper triangle
    of the members' covariance (``member_cov__{treatment}__{response}__{response}``)."""
    rn = schema.response_names
    means = [f"member_mean__{a}__{r}" for a in schema.arms[1:] for r in rn]
    covs = [f"member_cov__{a}__{rn[i]}__{rn[j]}" for a in schema.arms[1:]
            for i in range(len(rn)) for j in range(i, len(rn))]
    return means + covs


def record_table(scores: Scores, schema: Schema, id_column: str) -> pa.Table:
    """The Parquet record of ``scores``: id, y_hat__{arm}__{resp}, delta__{arm}__{resp}."""
    n = len(scores.user_ids)
    y_cols, d_cols = record_columns(schema)
    ids = scores.user_ids
    cols: dict[str, pa.Array] = {
        id_column: pa.array(ids, pa.int64()) if ids.dtype != object else pa.array(ids, pa.string())
    }
    y2 = scores.y_hat.reshape(n, -1)
    d2 = scores.delta.reshape(n, -1)
    for j, c in enumerate(y_cols):
        cols[c] = pa.array(np.ascontiguousarray(y2[:, j]))
    for j, c in enumerate(d_cols):
        cols[c] = pa.array(np.ascontiguousarray(d2[:, j]))
    if scores.spread is not None:
        for j, c in enumerate(spread_columns(schema)):
            cols[c] = pa.array(np.ascontiguousarray(scores.spread[:, j]))
    return pa.table(cols)


def record_delta(table: pa.Table, schema: Schema, id_column: str, *, members: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(user_ids (N,), delta (N, K, R) float32, spread (N, S) float32 when ``members``
    else None) back from a record table."""
    def stack(cols: list[str]) -> np.ndarray:
        return np.stack([table.column(c).to_numpy() for c in cols], axis=1).astype(np.float32)

    _, d_cols = record_columns(schema)
    ids = user_ids_of(table, id_column)
    d = stack(d_cols).reshape(len(ids), schema.K, schema.R)
    return ids, d, (stack(spread_columns(schema)) if members else None)


def model_version_of(model_path: str | Path) -> str:
    """12 hex of the sha256 over the artifact's prediction-relevant files' sums.

    The manifest's sums are verified first (ArtifactError when tampered).
    """
    from hmum.models.artifacts import verify_artifact

    files = verify_artifact(model_path)["files"]
    # history.json records training, not the function the model computes.
    relevant = {k: v for k, v in sorted(files.items()) if k != "history.json"}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------
# Input: deterministic shards over one Parquet file or a folder
# --------------------------------------------------------------------------------------


def _visible(p: Path, root: Path) -> bool:
    return not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)


class InputPlan:
    """The users' rows in a fixed order, readable by global row range.

    Files: ``path`` itself, or every ``*.parquet`` under the folder (hidden and
    ``_``-prefixed names skipped), sorted by relative path. Row groups are
    indexed from the files' footers, so a shard reads only what it needs.
    """

    def __init__(self, path: str | Path, columns: list[str]) -> None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"input not found: {p}")
        if p.is_dir():
            files = sorted((f for f in p.rglob("*.parquet") if f.is_file() and _visible(f, p)),
                           key=lambda f: f.relative_to(p).as_posix())
            if not files:
                raise DataError(f"{p}: no *.parquet files in this folder")
        else:
            if not p.name.lower().endswith((".parquet", ".pq")):
                raise DataError(f"{p}: scoring reads Parquet (one file or a folder of files); "
                                "convert CSV first")
            files = [p]
        self.root, self.files, self.columns = p, files, columns
        self.groups: list[tuple[int, int, int, int]] = []  # (file, row group, start, rows)
        start = 0
        self.fingerprint: list[dict[str, Any]] = []
        for fi, f in enumerate(files):
            md = pq.ParquetFile(f)
            names = md.schema_arrow.names
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"{f}: missing column(s) {missing}; the file has columns {names}")
            for g in range(md.metadata.num_row_groups):
                n = md.metadata.row_group(g).num_rows
                if n:
                    self.groups.append((fi, g, start, n))
                    start += n
            self.fingerprint.append({"path": str(f.resolve()), "bytes": f.stat().st_size,
                                     "rows": md.metadata.num_rows})
        self.total_rows = start
        if self.total_rows == 0:
            raise DataError(f"{p}: the input has no rows")

    def n_shards(self, shard_rows: int) -> int:
        return -(-self.total_rows // shard_rows)

    def read(self, start: int, stop: int, *, batch_rows: int = 65_536) -> pa.Table:
        """Rows [start, stop) as one table (columns ``self.columns``)."""
        parts: list[pa.Table] = []
        open_file: tuple[int, pq.ParquetFile] | None = None
        for fi, g, g0, n in self.groups:
            if g0 + n <= start or g0 >= stop:
                continue
            if open_file is None or open_file[0] != fi:
                open_file = (fi, pq.ParquetFile(self.files[fi]))
            pos = g0
            # Stream the row group: memory stays bounded even for huge groups.
            for rb in open_file[1].iter_batches(batch_size=batch_rows, row_groups=[g],
                                                columns=self.columns, use_threads=False):
                lo, hi = max(start, pos), min(stop, pos + rb.num_rows)
                if hi > lo:
                    parts.append(pa.Table.from_batches([rb.slice(lo - pos, hi - lo)]))
                pos += rb.num_rows
                if pos >= stop:
                    break
        if not parts:
            raise DataError(f"rows [{start}, {stop}) are outside the input ({self.total_rows})")
        t = pa.concat_tables(parts)
        return t.combine_chunks() if t.column(0).num_chunks > 1 else t


# --------------------------------------------------------------------------------------
# One shard (framework-free: every runner calls this, in its process or on a worker)
# --------------------------------------------------------------------------------------


@dataclass
class ShardResult:
    """One scored shard, ready to be committed by the run that holds the partition's lock.

    Attributes:
        shard: shard index i; its rows are [start, start + rows) of the input plan.
        start: first row of the shard.
        rows: rows of the shard.
        data: the shard's Parquet record (zstd): the exact bytes of ``part-XXXXX.parquet``.
        user_ids: (rows,) ids, or None (then read back from ``data`` for the store).
        delta: (rows, K, R) float32, or None (likewise).
        spread: (rows, S) float32 members' spread when scored with members, else None.
        timings: seconds spent by the computing process in read, score, record.
        worker: the computing process: {"pid", "peak_rss_mib"} (for capacity reports).
    """

    shard: int
    start: int
    rows: int
    data: bytes
    user_ids: np.ndarray | None = None
    delta: np.ndarray | None = None
    spread: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)

    def ids_and_delta(self, schema: Schema, id_column: str, *, members: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(user_ids (rows,), delta (rows, K, R), spread (rows, S) or None); decoded from
        the record if not held."""
        if self.user_ids is None or self.delta is None or (members and self.spread is None):
            return record_delta(pq.read_table(pa.BufferReader(self.data)), schema, id_column,
                                members=members)
        return self.user_ids, self.delta, self.spread


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def score_shard(est, plan: InputPlan, shard: int, start: int, stop: int, *, schema: Schema,
                id_column: str, batch_size: int, members: bool = False) -> ShardResult:
    """Read rows [start, stop) of ``plan``, score them, serialize the shard's record.

    The one function that computes a shard, for every runner: the local runner
    calls it in its process, the Ray runner in its actors; equal inputs give equal
    bytes. ``members``: also the members' spread (``score_table``). Raises DataError
    when the shard repeats a user id.
    """
    rows = stop - start
    t0 = time.perf_counter()
    table = plan.read(start, stop)
    t1 = time.perf_counter()
    scores = score_table(est, table, id_column=id_column, batch_size=batch_size,
                         members=members)
    del table
    vals, counts = np.unique(scores.user_ids, return_counts=True)
    if len(vals) != rows:
        raise DataError(f"column {id_column!r}: user ids must be unique; rows "
                        f"{start}..{stop - 1} repeat {vals[counts > 1][:5].tolist()}")
    t2 = time.perf_counter()
    sink = pa.BufferOutputStream()
    pq.write_table(record_table(scores, schema, id_column), sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    t3 = time.perf_counter()
    return ShardResult(
        shard=shard, start=start, rows=rows, data=data, user_ids=scores.user_ids,
        delta=scores.delta, spread=scores.spread,
        timings={"read": t1 - t0, "score": t2 - t1, "record": t3 - t2},
        worker={"pid": os.getpid(), "peak_rss_mib": peak_rss_mib()},
    )


# --------------------------------------------------------------------------------------
# Loading the store
# --------------------------------------------------------------------------------------


class StoreSink:
    """Loads shards into one store version, at most ``max_rows_per_s`` rows per second.

    Both runners load through it from the process that holds the partition's lock
    (the local runner's, the Ray driver), so the store sees one writer whatever the
    number of scoring workers. A shard goes in as one ``UpliftStore.put(...,
    shard=i)``, which records the shard as loaded with its rows (SQLite: in the
    same transaction); loads are upserts, so a shard whose load was cut off is
    simply loaded again.

    Throttling paces whole shards (a token bucket holding one shard): a shard of n
    rows starts no earlier than n_prev / max_rows_per_s seconds after the previous
    one started, so the average rate stays under the limit and a burst is at most
    one shard (pick ``shard_rows`` accordingly). ``waited`` sums the seconds slept.
    None: no limit.
    """

    def __init__(self, store: UpliftStore, version: str, *, max_rows_per_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if max_rows_per_s is not None and not max_rows_per_s > 0:
            raise ValueError(f"max_rows_per_s: expected a positive number or None, received "
                             f"{max_rows_per_s!r}")
        self.store, self.version, self.max_rows_per_s = store, version, max_rows_per_s
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None  # earliest start of the next shard
        self.waited = 0.0
        self.rows = 0

    def load(self, shard: int, user_ids: np.ndarray, delta: np.ndarray,
             spread: np.ndarray | None = None) -> None:
        """Upsert one shard, user_ids (n,), delta (n, K, R) [, spread (n, S)], and record
        it as loaded."""
        n = len(user_ids)
        if self.max_rows_per_s is not None:
            now = self._clock()
            if self._next is not None and now < self._next:
                self._sleep(self._next - now)
                self.waited += self._next - now
                now = self._next
            self._next = now + n / self.max_rows_per_s
        self.store.put(self.version, user_ids, delta, spread=spread, shard=shard)
        self.rows += n


# --------------------------------------------------------------------------------------
# A run: shared by every runner; only the computing of shards differs
# --------------------------------------------------------------------------------------


@dataclass
class ScoringReport:
    """What a run did. ``timings`` holds seconds per stage (read, score, record, store,
    throttle); with several workers, read/score are summed over them. ``workers``:
    one entry per computing process: pid, shards, rows, busy_s, peak_rss_mib."""

    store_version: str
    model_version: str
    date: str
    rows: int
    n_shards: int
    shards_scored: int
    shards_loaded: int
    partition: Path
    seconds: float
    current: str | None
    previous: str | None
    cleaned: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    engine: str = "local"
    workers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def users_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


@dataclass
class ScoringJob:
    """The resolved settings of one run (the same for every runner).

    ``model`` is what the caller gave (artifact folder or estimator), ``est`` the
    loaded estimator; shard i is rows ``bounds(i)`` of ``plan``. ``members``: M when
    the members' spread is scored and stored (a decision rule with a bound), else None.
    """

    model: Any
    est: Any
    model_version: str
    schema: Schema
    id_column: str
    date: dt.date
    version: str
    plan: InputPlan
    shard_rows: int
    batch_size: int
    part_dir: Path
    members: int | None = None

    @property
    def n_shards(self) -> int:
        return self.plan.n_shards(self.shard_rows)

    def bounds(self, shard: int) -> tuple[int, int]:
        lo = shard * self.shard_rows
        return lo, min(self.plan.total_rows, lo + self.shard_rows)

    def run_info(self) -> dict[str, Any]:
        """What ``_run.json`` pins: a resumed run must have the same (engine-free)."""
        s = self.schema
        return {
            "format": RUN_FORMAT, "store_version": self.version,
            "model_version": self.model_version, "date": self.date.isoformat(),
            "id_column": self.id_column, "shard_rows": self.shard_rows,
            "batch_size": self.batch_size, "n_shards": self.n_shards,
            "rows": self.plan.total_rows, "arms": s.arms, "responses": s.response_names,
            "input": self.plan.fingerprint, "members": self.members,
        }

    def score(self, shard: int) -> ShardResult:
        """Compute shard ``shard`` in this process (``score_shard``)."""
        lo, hi = self.bounds(shard)
        return score_shard(self.est, self.plan, shard, lo, hi, schema=self.schema,
                           id_column=self.id_column, batch_size=self.batch_size,
                           members=self.members is not None)


#: How a runner computes shards: (job, shard indices) -> their results, in any order.
ShardComputer = Callable[[ScoringJob, list[int]], Iterable[ShardResult]]


def prepare_job(model, input_path: str | Path, out_dir: str | Path,
                cfg: ScoringConfig) -> ScoringJob:
    """Load the model, plan the input's shards and name the version and partition."""
    if isinstance(model, str | Path):
        from hmum.models.registry import load_estimator

        est = load_estimator(model)
        model_version = cfg.model_version or model_version_of(model)
    else:
        est = model
        if cfg.model_version is None:
            raise ValueError("config.model_version is required when model is an estimator, "
                             "not an artifact folder")
        model_version = cfg.model_version
    check_name(model_version, "model_version")
    schema: Schema = est.schema
    members = _bound_members(cfg, est)  # a rule it cannot serve fails before any read
    id_column = cfg.id_column or schema.user_id or "user_id"
    date = cfg.date or dt.datetime.now(dt.UTC).date()
    part_dir = Path(out_dir) / f"date={date.isoformat()}" / f"model_version={model_version}"
    return ScoringJob(
        model=model, est=est, model_version=model_version, schema=schema,
        id_column=id_column, date=date, version=store_version_name(date, model_version),
        plan=InputPlan(input_path, [*schema.feature_names, id_column]),
        shard_rows=cfg.shard_rows, batch_size=cfg.batch_size, part_dir=part_dir,
        members=members,
    )


def _local_compute(job: ScoringJob, shards: list[int]) -> Iterator[ShardResult]:
    for s in shards:
        yield job.score(s)


def run_scoring(
    model,
    input_path: str | Path,
    out_dir: str | Path,
    store: UpliftStore | str | Path,
    config: ScoringConfig | dict | None = None,
    *,
    namespace: str = "default",
    progress: Callable[[str, int, int], None] | None = None,
) -> ScoringReport:
    """Score every user of ``input_path`` into the record under ``out_dir`` and ``store``.

    The local runner: shards are computed one after the other in this process.
    (``hmum.serving.ray_runner.run_scoring_ray`` is the distributed one; both give
    the same files and store content, and either can resume the other's run.)

    Args:
        model: a model artifact folder, or a fitted estimator (then
            ``config.model_version`` is required).
        input_path: one Parquet file or a folder of them; needs the model schema's
            feature columns and the user id column.
        out_dir: root of the Parquet record.
        store: an UpliftStore or a store URL (see ``open_store``; ``namespace``).
        config: ScoringConfig (or dict).
        progress: called as ``progress("shards", done, total)`` as shards finish.

    Returns a ScoringReport. Raises DataError for bad input, ScoringError when the
    partition was started with other settings (use ``restart``) or is locked, and
    StoreError when the store's checks fail.
    """
    t_start = time.perf_counter()
    cfg = as_config(config)
    job = prepare_job(model, input_path, out_dir, cfg)
    old_threads = None
    if cfg.threads:
        import torch

        old_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
    try:
        return execute(job, store, cfg, _local_compute, namespace=namespace,
                       progress=progress, t_start=t_start)
    finally:
        if old_threads is not None:
            import torch

            torch.set_num_threads(old_threads)


def as_config(config: ScoringConfig | dict | None) -> ScoringConfig:
    return config if isinstance(config, ScoringConfig) else ScoringConfig(**(config or {}))


def execute(job: ScoringJob, store: UpliftStore | str | Path, cfg: ScoringConfig,
            compute: ShardComputer, *, namespace: str = "default",
            progress: Callable[[str, int, int], None] | None = None, engine: str = "local",
            t_start: float | None = None) -> ScoringReport:
    """Run ``job`` with ``compute`` computing the shards; everything else is shared.

    Under the partition's lock: pin the settings (``_run.json``), create the store
    version, load the shards recorded by an earlier run but not loaded, commit
    each computed shard (part file, marker, store load through ``StoreSink``),
    verify, mark ready, switch, clean up, write ``_SUCCESS``.
    """
    t_start = time.perf_counter() if t_start is None else t_start
    schema, version, part_dir, n_shards = job.schema, job.version, job.part_dir, job.n_shards
    members = job.members is not None
    extra = _decision_extra(cfg, schema)  # checked before the store is touched
    own_store = not isinstance(store, UpliftStore)
    st = open_store(store, namespace, create=True) if own_store else store
    try:
        # Before any file is written: a store that does not answer, or whose current
        # version the new one must not replace, leaves no record folder behind.
        st.check_reachable()
        if cfg.switch and not cfg.force:
            _check_switchable(st, schema, version)
        if cfg.restart:
            _restart(part_dir, st, version)
        part_dir.mkdir(parents=True, exist_ok=True)
        with _run_lock(part_dir), _failed_on_error(st, version) as run:
            _check_run_file(part_dir, job.run_info())
            info = st.create_version(VersionInfo(
                version=version, K=schema.K, R=schema.R, arms=schema.arms,
                responses=schema.response_names, id_kind=_id_kind(job.plan, job.id_column),
                model_version=job.model_version, date=job.date.isoformat(), extra=extra,
                members=job.members,
            ), expected_rows=job.plan.total_rows)
            run["created"], run["checked"] = True, info.status == "ready"
            timings = {"read": 0.0, "score": 0.0, "record": 0.0, "store": 0.0, "throttle": 0.0}
            sink = StoreSink(st, version, max_rows_per_s=cfg.store_max_rows_per_s)
            workers: dict[int, dict[str, Any]] = {}
            rows_of = {s: job.bounds(s)[1] - job.bounds(s)[0] for s in range(n_shards)}
            done_in_store = st.loaded_shards(version)
            # Every shard's record is checked (two cheap stats), so a record deleted
            # after an earlier run is written again.
            todo = [s for s in range(n_shards)
                    if not _parquet_done(part_dir / _part_name(s), rows_of[s])]
            pending = set(todo)
            finished = sum(1 for s in range(n_shards)
                           if s not in pending and done_in_store.get(s) == rows_of[s])
            if progress is not None:
                progress("shards", finished, n_shards)
            scored = loaded = 0

            def load(shard: int, ids: np.ndarray, delta: np.ndarray,
                     spread: np.ndarray | None) -> None:
                nonlocal loaded
                t0, w0 = time.perf_counter(), sink.waited
                sink.load(shard, ids, delta, spread)
                timings["throttle"] += sink.waited - w0
                timings["store"] += time.perf_counter() - t0 - (sink.waited - w0)
                loaded += 1

            # Records finished by an earlier run whose load did not: load what they hold.
            for s in range(n_shards):
                if s in pending or done_in_store.get(s) == rows_of[s]:
                    continue
                load(s, *record_delta(pq.read_table(part_dir / _part_name(s)), schema,
                                      job.id_column, members=members))
                finished += 1
                if progress is not None:
                    progress("shards", finished, n_shards)
            results = compute(job, todo)
            try:
                for res in results:
                    if res.shard not in pending or (
                            res.start, res.start + res.rows) != job.bounds(res.shard):
                        raise ScoringError(
                            f"the {engine} engine returned shard {res.shard} (rows "
                            f"{res.start}..{res.start + res.rows - 1}), which this run did "
                            "not ask for or already has")
                    pending.discard(res.shard)
                    t0 = time.perf_counter()
                    _commit_record(part_dir, res)
                    timings["record"] += time.perf_counter() - t0
                    for k, v in res.timings.items():
                        timings[k] = timings.get(k, 0.0) + v
                    _tally(workers, res)
                    scored += 1
                    if done_in_store.get(res.shard) != res.rows:
                        load(res.shard, *res.ids_and_delta(schema, job.id_column,
                                                           members=members))
                    finished += 1
                    if progress is not None:
                        progress("shards", finished, n_shards)
            finally:
                # a generator (the Ray engine's) stops its work now, not when collected
                close = getattr(results, "close", None)
                if close is not None:
                    close()
            if pending:
                raise ScoringError(f"the {engine} engine finished without shard(s) "
                                   f"{sorted(pending)[:10]}; run again to resume")
            if info.status != "ready" or loaded:
                ids, delta, spread = _samples(part_dir, n_shards, schema, job.id_column,
                                              cfg.sample_reads, members=members)
                st.verify(version, rows=job.plan.total_rows, sample_ids=ids, sample_delta=delta,
                          sample_spread=spread)
                st.mark_ready(version, job.plan.total_rows)
            run["checked"] = True  # complete and verified: a later failure leaves it ready
            cur, prev = st.pointers()
            cleaned: list[str] = []
            if cfg.switch:
                if not cfg.force:  # again: the current version may have changed meanwhile
                    _check_switchable(st, schema, version)
                cur, prev = st.switch(version)
                if cfg.cleanup:
                    cleaned = st.cleanup()
            _atomic_write(part_dir / SUCCESS_FILE, json.dumps(
                {"rows": job.plan.total_rows, "n_shards": n_shards, "store_version": version},
                indent=2).encode())
    finally:
        if own_store:
            st.close()
    return ScoringReport(
        store_version=version, model_version=job.model_version, date=job.date.isoformat(),
        rows=job.plan.total_rows, n_shards=n_shards, shards_scored=scored, shards_loaded=loaded,
        partition=part_dir, seconds=time.perf_counter() - t_start, current=cur, previous=prev,
        cleaned=cleaned, timings=timings, engine=engine, workers=list(workers.values()),
    )


def _decision_extra(cfg: ScoringConfig, schema: Schema) -> dict[str, Any]:
    """The new version's ``extra`` metadata: the frozen decision rule, when configured.

    A version is created once: a resumed run keeps the rule it was created with
    (``restart`` re-creates it)."""
    if cfg.decision is None:
        return {}
    from hmum.decision.rules import DecisionRule, rule_to_version_extra
    from hmum.exceptions import DecisionConfigError

    rule = DecisionRule.from_dict(cfg.decision, source="decision config")
    if list(rule.responses) != list(schema.response_names) or \
            list(rule.treatments) != list(schema.arms[1:]):
        raise DecisionConfigError(
            f"decision config: made for responses {rule.responses} and treatments "
            f"{rule.treatments}; the model scores {schema.response_names} and "
            f"{schema.arms[1:]}")
    return rule_to_version_extra(rule)


def _bound_members(cfg: ScoringConfig, est) -> int | None:
    """M when ``cfg.decision`` switches on a lower bound of phi (the members' spread is
    then scored and stored), else None. DecisionConfigError when ``est`` has no members
    to bound it with: only one model is scored, so the bound comes from its own members."""
    if cfg.decision is None:
        return None
    from hmum.decision.rules import DecisionRule
    from hmum.models.hum import bound_members

    bound = DecisionRule.from_dict(cfg.decision, source="decision config").bound
    return None if bound is None else bound_members(est, bound)


def _check_switchable(st: UpliftStore, schema: Schema, version: str) -> None:
    """ScoringError unless ``version`` (of ``schema``) may replace the current version:
    the service weighs delta (K, R) with value weights of the current responses, so
    other responses or treatments need ``force``."""
    cur = st.current()
    if cur is None or cur == version:
        return
    try:
        old = st.info(cur)
    except StoreError:
        return  # a dangling pointer: nothing is being served that could mismatch
    want = (list(old.responses), list(old.arms[1:]))
    got = (list(schema.response_names), list(schema.arms[1:]))
    if want != got:
        raise ScoringError(
            f"the store's current version {cur!r} holds responses {want[0]} and treatments "
            f"{want[1]}; this model scores responses {got[0]} and treatments {got[1]}, which "
            "the serving value-weight model would not match; pass force (--force) to switch "
            "anyway, or switch=False (--no-switch) to load it without switching")


@contextlib.contextmanager
def _failed_on_error(st: UpliftStore, version: str) -> Iterator[dict[str, bool]]:
    """Mark ``version`` failed when the run stops with an error after creating it and
    before it was checked (a version left ``loading`` looks like a run in progress).
    The caller sets ``run["created"]`` and ``run["checked"]``."""
    run = {"created": False, "checked": False}
    try:
        yield run
    except BaseException as e:
        if run["created"] and not run["checked"]:
            # Best effort: the store itself may be what failed; the original error wins.
            with contextlib.suppress(Exception):
                st.mark_failed(version, f"{type(e).__name__}: {e}")
        raise


def _tally(workers: dict[int, dict[str, Any]], res: ShardResult) -> None:
    pid = res.worker.get("pid", 0)
    w = workers.setdefault(pid, {"pid": pid, "shards": 0, "rows": 0, "busy_s": 0.0,
                                 "peak_rss_mib": 0.0})
    w["shards"] += 1
    w["rows"] += res.rows
    w["busy_s"] += sum(res.timings.values())
    w["peak_rss_mib"] = max(w["peak_rss_mib"], res.worker.get("peak_rss_mib", 0.0))


def _commit_record(part_dir: Path, res: ShardResult) -> None:
    """Write a shard's record, then its marker, each atomically (see the module doc)."""
    part = part_dir / _part_name(res.shard)
    _atomic_write(part, res.data)
    _atomic_write(_marker(part), json.dumps({
        "shard": res.shard, "start": res.start, "rows": res.rows, "bytes": len(res.data),
        "sha256": hashlib.sha256(res.data).hexdigest(),
    }).encode())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write under a hidden temporary name, flush, rename into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def _marker(part: Path) -> Path:
    return part.with_name(f"_{part.stem}.json")


def _parquet_done(part: Path, rows: int) -> bool:
    """A shard's record is done when its marker names this file's size and rows."""
    m = _marker(part)
    if not (m.is_file() and part.is_file()):
        return False
    try:
        info = json.loads(m.read_text())
    except json.JSONDecodeError:
        return False
    return info.get("bytes") == part.stat().st_size and info.get("rows") == rows


@contextlib.contextmanager
def _run_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the partition, released by the OS if the process dies."""
    import fcntl

    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ScoringError(f"{folder}: another scoring run is writing this partition") from None
        yield
    finally:
        os.close(fd)


def store_version_name(date: dt.date, model_version: str) -> str:
    """The store version of one day's scores with one model: ``YYYYMMDD-{model_version}``."""
    return check_name(f"{date:%Y%m%d}-{model_version}", "store version")


def _id_kind(plan: InputPlan, id_column: str) -> str:
    t = pq.ParquetFile(plan.files[0]).schema_arrow.field(id_column).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    raise DataError(f"{plan.files[0]}: column {id_column!r}: expected integer or string user "
                    f"ids, received {t}")


def _restart(part_dir: Path, st: UpliftStore, version: str) -> None:
    if version in st.pointers():
        raise ScoringError(f"store version {version!r} is current or previous; switch away "
                           "(hmum store switch / rollback) before restarting its run")
    if part_dir.exists():
        with _run_lock(part_dir):
            shutil.rmtree(part_dir)
    if any(i.version == version for i in st.versions()):
        st.delete_version(version)


def _check_run_file(part_dir: Path, run_info: dict) -> None:
    path = part_dir / RUN_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(run_info) if old.get(k) != run_info.get(k))
        if diff:
            raise ScoringError(
                f"{part_dir} holds a run started with other settings ({', '.join(diff)} "
                "differ); resume with the same input and settings, or pass restart "
                "(--restart) to discard it"
            )
        return
    _atomic_write(path, json.dumps(run_info, indent=2).encode())


def _samples(part_dir: Path, n_shards: int, schema: Schema, id_column: str, n: int, *,
             members: bool = False) -> tuple[np.ndarray | None, ...]:
    """Up to ``n`` (user id, delta[, spread]) samples from up to 8 evenly spaced shards'
    records: (ids (n,), delta (n, K, R), spread (n, S) or None), or Nones."""
    if n <= 0:
        return None, None, None
    shards = np.unique(np.linspace(0, n_shards - 1, min(n_shards, 8)).round().astype(int))
    per = -(-n // len(shards))
    _, d_cols = record_columns(schema)
    cols = [id_column, *d_cols, *(spread_columns(schema) if members else [])]
    parts = []
    for s in shards.tolist():
        t = pq.read_table(part_dir / _part_name(s), columns=cols)
        take = np.random.default_rng(s).choice(t.num_rows, min(per, t.num_rows), replace=False)
        parts.append(record_delta(t.take(pa.array(np.sort(take))), schema, id_column,
                                  members=members))
    ids, delta, spread = zip(*parts, strict=True)
    return np.concatenate(ids), np.concatenate(delta), \
        (np.concatenate(spread) if members else None)
