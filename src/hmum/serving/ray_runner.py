"""Batch scoring on Ray Data: the shards of ``hmum.serving.scoring`` computed by actors.

``run_scoring_ray`` is the local runner (``scoring.run_scoring``) with one
piece swapped: how the shards still to do are computed. Everything else --
the shard plan, part names, markers, ``_run.json``, the lock, the store
version's life cycle (create -> load -> verify -> ready -> switch -> cleanup)
-- is ``scoring.execute``, the same code. So both engines write byte-identical
record files and the same store content, and either can resume the other's run.

How the work is split:

* The driver (the process calling this) plans the run (``prepare_job``), holds
  the partition's lock, writes every file and loads the store.
* The shards to do become a dataset of shard descriptors, one per block
  (``ray.data.from_items``), mapped with ``map_batches(ShardScorer,
  batch_size=1, compute=ActorPoolStrategy(size=workers), num_cpus=threads)``.
  Each actor loads the model artifact once, sets ``torch.set_num_threads``, and
  per shard calls ``scoring.score_shard`` -- the framework-free function the
  local runner calls too -- which reads the shard's rows straight from the
  Parquet files (only the row groups it needs), scores them and returns the
  record's bytes with the shard id.
* ``ray.data.read_parquet`` is not used for the rows because its blocks follow
  files and row groups, not the run's shards; identical parts and markers need
  the local runner's shard boundaries. Reading inside the map keeps the reads as
  parallel as the scoring.
* Results stream back as they finish, in any order; the driver commits each one
  (part file, marker, then the store load through ``scoring.StoreSink``). The
  store thus sees one writer whatever the number of workers, paced by
  ``ScoringConfig.store_max_rows_per_s`` (rows/s; None = no limit). Scored
  shards waiting for the driver are bounded by Ray Data's streaming
  backpressure (its object-store budget) and by ``max_tasks_in_flight_per_actor``.

Cluster: by default a local one is started for the run and shut down at its end
(nothing to start by hand), with ``workers * threads`` CPUs, or all of the
machine's when ``workers`` is None; ``address`` joins a running cluster; a Ray
session already open in this process (``ray.init`` done by the caller) is used
as is. ``workers=None`` means one actor per ``threads`` CPUs of the cluster. On a
multi-node cluster the input files and the model artifact must be readable at
the same paths on every node (a shared file system); the record and the store
are only written by the driver.

Ray is an optional extra: ``pip install 'hmum[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from hmum.exceptions import DataError, ScoringError
from hmum.serving.scoring import (
    InputPlan,
    ScoringConfig,
    ScoringJob,
    ScoringReport,
    ShardResult,
    as_config,
    execute,
    prepare_job,
    score_shard,
)
from hmum.serving.store import UpliftStore

RAY_EXTRA_HINT = "pip install 'hmum[ray]'"


def import_ray():
    """The ``ray`` module; ImportError naming the ``[ray]`` extra when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the Ray engine needs Ray Data, which is not installed ({e}); "
                          f"install the optional extra: {RAY_EXTRA_HINT}") from e
    return ray


class ShardScorer:
    """The ``map_batches`` callable class: one instance per Ray actor.

    Loads the model once; each call gets shard descriptors (columns shard, start,
    stop) and returns, per shard, the record bytes and what the driver reports
    (timings, the actor's pid and peak RSS). A DataError (bad input) comes back as
    a row (``error``) so the driver raises it with its own type and message.
    """

    def __init__(self, model: Any, plan: InputPlan, id_column: str, batch_size: int,
                 threads: int, members: bool = False) -> None:
        import torch

        # Before the model is loaded: one intra-op pool of `threads` per actor.
        torch.set_num_threads(threads)
        if isinstance(model, str | Path):
            from hmum.models.registry import load_estimator

            model = load_estimator(model)
        self.est, self.plan = model, plan
        self.id_column, self.batch_size, self.members = id_column, batch_size, members

    def __call__(self, batch: pa.Table) -> pa.Table:
        out: list[ShardResult] = []
        cols = (batch.column(c).to_pylist() for c in ("shard", "start", "stop"))
        for shard, start, stop in zip(*cols, strict=True):
            try:
                out.append(score_shard(self.est, self.plan, shard, start, stop,
                                       schema=self.est.schema, id_column=self.id_column,
                                       batch_size=self.batch_size, members=self.members))
            except DataError as e:
                return pa.table({"shard": [shard], "error": [str(e)]})
        return results_table(out)


_STAGES = ("read", "score", "record")


def results_table(results: list[ShardResult]) -> pa.Table:
    """ShardResults as rows (what an actor returns); ``shard_result_of`` reads one back."""
    return pa.table({
        "shard": pa.array([r.shard for r in results], pa.int64()),
        "start": pa.array([r.start for r in results], pa.int64()),
        "rows": pa.array([r.rows for r in results], pa.int64()),
        "data": pa.array([r.data for r in results], pa.large_binary()),
        **{f"t_{k}": pa.array([r.timings.get(k, 0.0) for r in results], pa.float64())
           for k in _STAGES},
        "pid": pa.array([r.worker.get("pid", 0) for r in results], pa.int64()),
        "peak_rss_mib": pa.array([r.worker.get("peak_rss_mib", 0.0) for r in results],
                                 pa.float64()),
        "error": pa.array([None] * len(results), pa.string()),
    })


def shard_result_of(row: dict[str, Any]) -> ShardResult:
    """One result row (see ``results_table``) as a ShardResult; raises its DataError."""
    if row.get("error"):
        raise DataError(row["error"])
    return ShardResult(
        shard=int(row["shard"]), start=int(row["start"]), rows=int(row["rows"]),
        data=bytes(row["data"]), timings={k: float(row[f"t_{k}"]) for k in _STAGES},
        worker={"pid": int(row["pid"]), "peak_rss_mib": float(row["peak_rss_mib"])},
    )


#: Ray's local sockets live at <temp>/ray/session_<date>_<pid>/sockets/plasma_store:
#: about this many characters past the temp folder, within AF_UNIX's 107-byte limit
_RAY_SOCKET_SUFFIX = 80


def local_temp_dir() -> str | None:
    """A temp folder for a local Ray cluster when the default one is too long, else None.

    Ray puts its session (and Unix sockets) under ``$TMPDIR/ray``; a long TMPDIR makes
    ``ray.init`` fail with "AF_UNIX path length cannot exceed 107 bytes". Then the
    session goes to /tmp/hmum-ray-<uid> instead.
    """
    default = tempfile.gettempdir()
    if len(default) + _RAY_SOCKET_SUFFIX <= 107 or not os.path.isdir("/tmp"):
        return None
    short = f"/tmp/hmum-ray-{os.getuid()}"
    os.makedirs(short, exist_ok=True)
    return short


@contextlib.contextmanager
def ray_session(*, num_cpus: int | None = None, address: str | None = None) -> Iterator[Any]:
    """Use the open Ray session, join ``address``, or start (and then stop) a local
    cluster with ``num_cpus`` CPUs (None: all of this machine's)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                          "configure_logging": False}
    if address:
        ray.init(address=address, **kw)
    else:
        temp = local_temp_dir()
        ray.init(num_cpus=num_cpus, **kw, **({"_temp_dir": temp} if temp else {}))
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_compute(*, workers: int, threads: int, max_tasks_in_flight_per_actor: int = 2
                ) -> Callable[[ScoringJob, list[int]], Iterator[ShardResult]]:
    """A ``scoring.ShardComputer`` that maps the shards over ``workers`` Ray actors."""

    def compute(job: ScoringJob, shards: list[int]) -> Iterator[ShardResult]:
        if not shards:
            return
        ray = import_ray()
        items = [{"shard": s, "start": job.bounds(s)[0], "stop": job.bounds(s)[1]}
                 for s in shards]
        # One shard per block: actors take shards one by one as they free up.
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardScorer, batch_size=1, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(
                size=min(workers, len(shards)),
                max_tasks_in_flight_per_actor=max_tasks_in_flight_per_actor),
            num_cpus=threads,
            fn_constructor_kwargs={"model": job.model, "plan": job.plan,
                                   "id_column": job.id_column, "batch_size": job.batch_size,
                                   "threads": threads, "members": job.members is not None},
        )
        ctx = ray.data.DataContext.get_current()
        log = logging.getLogger("ray.data")
        old = ctx.enable_progress_bars, log.level
        # The caller's progress callback reports shards; Ray Data's bars and INFO
        # lines would interleave with it. Restored afterwards (process-wide settings).
        ctx.enable_progress_bars = False
        log.setLevel(logging.WARNING)
        rows = iter(ds.iter_rows())  # the iterator itself, to close it on the way out
        try:
            for row in rows:
                yield shard_result_of(row)
        except ray.exceptions.RayError as e:
            raise ScoringError(f"a Ray scoring worker failed: {e}") from e
        finally:
            close = getattr(rows, "close", None)
            if close is not None:  # stop the dataset's execution now, not at GC
                close()
            ctx.enable_progress_bars = old[0]
            log.setLevel(old[1])

    return compute


def run_scoring_ray(
    model,
    input_path: str | Path,
    out_dir: str | Path,
    store: UpliftStore | str | Path,
    config: ScoringConfig | dict | None = None,
    *,
    workers: int | None = None,
    address: str | None = None,
    max_tasks_in_flight_per_actor: int = 2,
    namespace: str = "default",
    progress: Callable[[str, int, int], None] | None = None,
) -> ScoringReport:
    """``scoring.run_scoring`` with the shards computed by ``workers`` Ray actors.

    Args: as ``run_scoring``, plus
        workers: actors, each with ``config.threads`` CPUs and torch threads (default
            1); None: one per ``threads`` CPUs of the cluster.
        address: a running Ray cluster to join; None starts a local one for the run
            (unless this process already has a Ray session, which is then used).
        max_tasks_in_flight_per_actor: shards queued on one actor at a time.

    Returns the ScoringReport (``engine="ray"``; ``workers`` per actor: shards, rows,
    busy seconds, peak RSS). Same errors as ``run_scoring``; ScoringError when a Ray
    worker fails otherwise; ImportError when Ray is not installed.
    """
    t_start = time.perf_counter()
    if workers is not None and workers < 1:
        raise ValueError(f"workers: expected at least 1 Ray worker, received {workers}")
    if max_tasks_in_flight_per_actor < 1:
        raise ValueError("max_tasks_in_flight_per_actor: expected at least 1, received "
                         f"{max_tasks_in_flight_per_actor}")
    cfg = as_config(config)
    import_ray()  # fail before any work when the extra is missing
    job = prepare_job(model, input_path, out_dir, cfg)
    threads = cfg.threads or 1
    with ray_session(num_cpus=workers * threads if workers else None, address=address) as ray:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // threads))
        compute = ray_compute(workers=n, threads=threads,
                              max_tasks_in_flight_per_actor=max_tasks_in_flight_per_actor)
        return execute(job, store, cfg, compute, namespace=namespace, progress=progress,
                       engine="ray", t_start=t_start)
