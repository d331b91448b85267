"""Daily batch scoring: users -> HUM -> delta (N, K, R) -> Parquet record + uplift store.

Paper §6.2: every user is scored daily and the relative uplifts go to a
key-value store that the online decision reads. Two layers:

* ``score_table(estimator, table)`` -- framework-free: one Arrow table of users
  in, ``Scores`` (user ids (N,), y_hat (N, K+1, R), delta (N, K, R)) out;
  ``record_table`` turns them into the Parquet record's columns. A distributed
  runner (e.g. Ray ``map_batches``) can call these on each block.
* ``run_scoring(...)`` -- the local runner: reads the users (one Parquet file or
  a folder of them) shard by shard, scores, writes the record and loads the store.

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
``delta__{treatment}__{response}`` for the K treatments (float32).

Versioning: the store version is ``YYYYMMDD-{model_version}`` (one per day and
model, since features change daily); it is loaded while ``loading``, checked
(row count and sample reads against the record), marked ``ready``, then made
current by one atomic switch; the old current stays as ``previous`` for a
one-step rollback; older versions are cleaned up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from hmum.data.io import DataError
from hmum.data.schema import Schema
from hmum.decision.core import relative_uplift
from hmum.serving.store import (
    UpliftStore,
    VersionInfo,
    check_name,
    open_store,
)

RUN_FILE = "_run.json"
SUCCESS_FILE = "_SUCCESS"
LOCK_FILE = "_lock"
RUN_FORMAT = "hmum-scoring/1"


class ScoringError(RuntimeError):
    """The scoring run cannot go on; the message says why and what to do."""


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
    cleanup: bool = Field(True, description="after the switch, delete older versions")
    restart: bool = Field(False, description="discard this run's earlier output and start over")
    sample_reads: int = Field(256, ge=0, description="users read back from the store to check")
    threads: int | None = Field(None, ge=1, description="torch threads; None = leave as is")


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
    """

    user_ids: np.ndarray
    y_hat: np.ndarray
    delta: np.ndarray


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
                batch_size: int = 65_536) -> Scores:
    """Score one table of users with ``estimator`` (any ``predict_outcomes`` model).

    table: N rows holding the schema's feature columns and ``id_column``.
    Returns Scores: user_ids (N,), y_hat (N, K+1, R), delta (N, K, R), float32.
    """
    ids = user_ids_of(table, id_column)
    y_hat = np.asarray(estimator.predict_outcomes(table, batch_size=batch_size), np.float32)
    delta = np.asarray(relative_uplift(y_hat), dtype=np.float32)
    return Scores(user_ids=ids, y_hat=y_hat, delta=delta)


def record_columns(schema: Schema) -> tuple[list[str], list[str]]:
    """(y_hat columns [(K+1)*R], delta columns [K*R]), arm-major like the arrays."""
    y_cols = [f"y_hat__{a}__{r}" for a in schema.arms for r in schema.response_names]
    d_cols = [f"delta__{a}__{r}" for a in schema.arms[1:] for r in schema.response_names]
    return y_cols, d_cols


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
    return pa.table(cols)


def record_delta(table: pa.Table, schema: Schema, id_column: str) -> tuple[np.ndarray, np.ndarray]:
    """(user_ids (N,), delta (N, K, R) float32) back from a record table."""
    _, d_cols = record_columns(schema)
    ids = user_ids_of(table, id_column)
    d = np.stack([table.column(c).to_numpy() for c in d_cols], axis=1).astype(np.float32)
    return ids, d.reshape(len(ids), schema.K, schema.R)


def model_version_of(model_path: str | Path) -> str:
    """12 hex of the sha256 over the artifact's prediction-relevant files' sums.

    The manifest's sums are verified first (ArtifactError when tampered).
    """
    from hmum.training.artifacts import verify_artifact

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
# The local runner
# --------------------------------------------------------------------------------------


@dataclass
class ScoringReport:
    """What a run did. ``timings`` holds seconds per stage (read, score, record, store)."""

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

    @property
    def users_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


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

    Args:
        model: a model artifact folder, or a fitted estimator (then
            ``config.model_version`` is required).
        input_path: one Parquet file or a folder of them; needs the model schema's
            feature columns and the user id column.
        out_dir: root of the Parquet record.
        store: an UpliftStore or a store URL (see ``open_store``; ``namespace``).
        config: ScoringConfig (or dict).
        progress: called as ``progress("shards", done, total)`` after every shard.

    Returns a ScoringReport. Raises DataError for bad input, ScoringError when the
    partition was started with other settings (use ``restart``) or is locked, and
    StoreError when the store's checks fail.
    """
    t_start = time.perf_counter()
    cfg = config if isinstance(config, ScoringConfig) else ScoringConfig(**(config or {}))
    if isinstance(model, str | Path):
        from hmum.training.estimator import load_estimator

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
    id_column = cfg.id_column or schema.user_id or "user_id"
    date = cfg.date or dt.datetime.now(dt.UTC).date()
    version = store_version_name(date, model_version)
    plan = InputPlan(input_path, [*schema.feature_names, id_column])
    n_shards = plan.n_shards(cfg.shard_rows)

    part_dir = Path(out_dir) / f"date={date.isoformat()}" / f"model_version={model_version}"
    own_store = not isinstance(store, UpliftStore)
    st = open_store(store, namespace) if own_store else store
    old_threads = None
    if cfg.threads:
        import torch

        old_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
    try:
        if cfg.restart:
            _restart(part_dir, st, version)
        part_dir.mkdir(parents=True, exist_ok=True)
        with _run_lock(part_dir):
            run_info = {
                "format": RUN_FORMAT, "store_version": version, "model_version": model_version,
                "date": date.isoformat(), "id_column": id_column, "shard_rows": cfg.shard_rows,
                "batch_size": cfg.batch_size, "n_shards": n_shards, "rows": plan.total_rows,
                "arms": schema.arms, "responses": schema.response_names,
                "input": plan.fingerprint,
            }
            _check_run_file(part_dir, run_info)
            info = st.create_version(VersionInfo(
                version=version, K=schema.K, R=schema.R, arms=schema.arms,
                responses=schema.response_names, id_kind=_id_kind(plan, id_column),
                model_version=model_version, date=date.isoformat(),
            ), expected_rows=plan.total_rows)
            timings = {"read": 0.0, "score": 0.0, "record": 0.0, "store": 0.0}
            scored = loaded = 0
            # Every shard is visited (finished ones cost two cheap checks), so a
            # record deleted after an earlier run is written again.
            done_in_store = st.loaded_shards(version)
            for shard in range(n_shards):
                lo = shard * cfg.shard_rows
                hi = min(plan.total_rows, lo + cfg.shard_rows)
                s, l_ = _do_shard(est, plan, st, version, schema, id_column, cfg, part_dir,
                                  shard, lo, hi, done_in_store, timings)
                scored += s
                loaded += l_
                if progress is not None:
                    progress("shards", shard + 1, n_shards)
            if info.status != "ready" or loaded:
                ids, delta = _samples(part_dir, n_shards, schema, id_column, cfg.sample_reads)
                st.verify(version, rows=plan.total_rows, sample_ids=ids, sample_delta=delta)
                st.mark_ready(version, plan.total_rows)
            cur, prev = st.pointers()
            cleaned: list[str] = []
            if cfg.switch:
                cur, prev = st.switch(version)
                if cfg.cleanup:
                    cleaned = st.cleanup()
            _atomic_write(part_dir / SUCCESS_FILE, json.dumps(
                {"rows": plan.total_rows, "n_shards": n_shards, "store_version": version},
                indent=2).encode())
    finally:
        if old_threads is not None:
            import torch

            torch.set_num_threads(old_threads)
        if own_store:
            st.close()
    return ScoringReport(
        store_version=version, model_version=model_version, date=date.isoformat(),
        rows=plan.total_rows, n_shards=n_shards, shards_scored=scored, shards_loaded=loaded,
        partition=part_dir, seconds=time.perf_counter() - t_start, current=cur, previous=prev,
        cleaned=cleaned, timings=timings,
    )


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


def _do_shard(est, plan: InputPlan, st: UpliftStore, version: str, schema: Schema,
              id_column: str, cfg: ScoringConfig, part_dir: Path, shard: int, lo: int, hi: int,
              done_in_store: dict[int, int], timings: dict[str, float]) -> tuple[int, int]:
    """Record and load one shard unless already done. Returns (scored, loaded) as 0/1."""
    part = part_dir / _part_name(shard)
    rows = hi - lo
    scored = 0
    ids = delta = None
    if not _parquet_done(part, rows):
        t0 = time.perf_counter()
        table = plan.read(lo, hi)
        t1 = time.perf_counter()
        scores = score_table(est, table, id_column=id_column, batch_size=cfg.batch_size)
        del table
        uniq = np.unique(scores.user_ids)
        if len(uniq) != rows:
            vals, counts = np.unique(scores.user_ids, return_counts=True)
            raise DataError(f"column {id_column!r}: user ids must be unique; rows "
                            f"{lo}..{hi - 1} repeat {vals[counts > 1][:5].tolist()}")
        t2 = time.perf_counter()
        sink = pa.BufferOutputStream()
        pq.write_table(record_table(scores, schema, id_column), sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        _atomic_write(part, data)
        _atomic_write(_marker(part), json.dumps({
            "shard": shard, "start": lo, "rows": rows, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }).encode())
        t3 = time.perf_counter()
        timings["read"] += t1 - t0
        timings["score"] += t2 - t1
        timings["record"] += t3 - t2
        ids, delta = scores.user_ids, scores.delta
        scored = 1
    if done_in_store.get(shard) == rows:
        return scored, 0
    t0 = time.perf_counter()
    if ids is None:  # record done by an earlier run: load exactly what it recorded
        ids, delta = record_delta(pq.read_table(part), schema, id_column)
    st.put(version, ids, delta, shard=shard)
    timings["store"] += time.perf_counter() - t0
    return scored, 1


def _samples(part_dir: Path, n_shards: int, schema: Schema, id_column: str, n: int
             ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Up to ``n`` (user id, delta) pairs from up to 8 evenly spaced shards' records."""
    if n <= 0:
        return None, None
    shards = np.unique(np.linspace(0, n_shards - 1, min(n_shards, 8)).round().astype(int))
    per = -(-n // len(shards))
    _, d_cols = record_columns(schema)
    ids, deltas = [], []
    for s in shards.tolist():
        t = pq.read_table(part_dir / _part_name(s), columns=[id_column, *d_cols])
        take = np.random.default_rng(s).choice(t.num_rows, min(per, t.num_rows), replace=False)
        i, d = record_delta(t.take(pa.array(np.sort(take))), schema, id_column)
        ids.append(i)
        deltas.append(d)
    return np.concatenate(ids), np.concatenate(deltas)
