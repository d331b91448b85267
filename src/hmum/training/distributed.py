"""Data-parallel training with torch.distributed + DistributedDataParallel (DDP).

One worker process per rank; every rank holds a full copy of the model and only
its own share of the data. Launch:

* ``hmum train --nproc N ...`` spawns N local workers (``launch_local``);
* ``torchrun --nnodes .. --nproc-per-node .. -m hmum.cli.app train ...`` (or
  ``torchrun $(which hmum) train ...``) runs the same ``train_worker`` in every
  process torchrun starts; it reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
  MASTER_PORT from the environment.

Backend: gloo for ``device="cpu"``, NCCL for ``device="cuda"`` (one GPU per
worker, ``cuda:LOCAL_RANK``). Python objects (statistics, the encoder sample,
checkpoints) always travel on a gloo group, so they never need GPU memory.

What every rank does, and what equals what:

* **Sharding.** Rank r reads Parquet row groups i with ``i % W == r``
  (``hmum.data.io.iter_shard``), never another rank's rows. Row groups are the
  unit: the input needs at least W of them.
* **Split.** Without ``valid_data`` each row goes to train / valid / test by
  ``hash_split(global row index, fractions, seed)``: a hash of the row's
  position in the file (files sorted, row groups in order) and the seed. The
  union over ranks of the train (valid, test) rows is therefore the same for
  every W and every row-group layout of the same rows, and equals
  ``hash_split(np.arange(N), ...)`` applied to the whole table in one process.
  It is *not* the arm-stratified ``split_indices`` split of single-process
  ``hmum train`` (that needs every row's arm in one place); with large N both are
  8:1:1 random splits.
* **Encoder.** Each rank keeps the train rows whose second hash is below
  ``encoder_sample_rows / (N * train fraction)`` (every train row while that is
  >= 1, so about ``encoder_sample_rows`` rows at most); rank 0 gathers
  them, fits the FeatureEncoder and broadcasts its JSON. The sample does not
  depend on W, so the encoder is the same for every W; when the sample holds
  every train row it equals the single-process encoder fitted on the same rows.
* **Response statistics.** y_mean / y_std (population std, as ``np.std``) come
  from per-rank (count, mean, M2) merged in rank order (Chan et al.), identical on
  every rank and equal to the single-process values up to float64 rounding.
* **Steps.** Every rank runs ``ceil(N_train / batch_size)`` steps per epoch and
  sees each of its rows once per epoch: step s takes about ``n_r / steps`` rows
  of rank r (a per-epoch permutation seeded by (seed, rank, epoch)). The loss of
  rank r at step s is scaled by ``W * rows_r / rows_all``, so DDP's gradient
  average is the gradient of the mean loss over all rows of the step: the same
  estimate as one process with a batch of that size. Unequal shards therefore
  cost no hang and no bias; a rank without rows in a step runs one row at weight 0.
* **Validation.** Each rank evaluates its own valid rows; sums of loss x rows
  and rows are gathered and added in rank order, so the scheduler and early
  stopping see the same float on every rank and decide the same.
* **Checkpoints and artifact.** Rank 0 writes both. On resume rank 0 reads the
  checkpoint and sends it to the others, so the folder need only be visible to
  rank 0. (Several machines: the data path must be readable on every machine.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hmum.data.encoder import EncoderConfig, FeatureEncoder
from hmum.data.io import column_names, iter_shard, row_group_pieces
from hmum.data.schema import Schema
from hmum.data.split import hash_split, hash_uniform
from hmum.data.validate import file_fingerprint, validate_table

# the primitives live below the trainer; re-exported here for the launcher's callers
from hmum.exceptions import (
    DataError,
    DistributedError,  # noqa: F401
)
from hmum.training.ddp import (  # noqa: F401
    DistContext,
    ShardBatches,
    backend_for,
    init_distributed,
    launch_local,
    launched_by_torchrun,
    shutdown,
)

# --------------------------------------------------------------------------------------
# The per-rank data: read the shard, split, fit encoder and statistics consistently
# --------------------------------------------------------------------------------------


@dataclass
class ShardData:
    """This rank's encoded rows and the statistics shared by every rank.

    train / valid: (x (n, F) int32 ids, arm (n,) int64, y (n, R) float32) tensors of
    this rank's rows. y_mean / y_std: (R,) float64 over all ranks' train rows.
    rows: global row counts ("train", "valid", "test") and per-worker train rows.
    """

    encoder: FeatureEncoder
    y_mean: np.ndarray
    y_std: np.ndarray
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    rows: dict[str, Any]


def _merge_moments(a: tuple, b: tuple) -> tuple:
    """Chan et al.'s merge of (count, mean (R,), M2 (R,)) summaries."""
    na, ma, m2a = a
    nb, mb, m2b = b
    if nb == 0:
        return a
    if na == 0:
        return b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), m2a + m2b + delta**2 * (na * nb / n)


def _pieces(path: Path, schema: Schema, ctx: DistContext):
    """(global row indices (n,), validated rows) per row group of this rank."""
    cols = [*schema.feature_names, schema.arm_column, *schema.response_names]
    # ground truth, user ids and propensities are not needed to train: not read
    train_schema = schema.model_copy(update={"ground_truth": False, "user_id": None})
    for start, table in iter_shard(path, ctx.rank, ctx.world_size, columns=cols):
        where = f"{path}, row group of rows {start}..{start + table.num_rows - 1}"
        try:
            d = validate_table(table, train_schema, require_all_arms=False, source=where)
        except DataError as e:
            if where in str(e):
                raise
            raise DataError(f"{where} (row numbers below count from {start}): {e}") from None
        yield np.arange(start, start + table.num_rows, dtype=np.int64), d


def _sources(job: DistributedJob) -> list[tuple[Path, int | None]]:
    """(file, fixed part or None = hash split) to read."""
    if job.valid_data is not None:
        return [(job.data, 0), (job.valid_data, 1)]
    return [(job.data, None)]


def prepare_shard(job: DistributedJob, schema: Schema, enc_cfg: EncoderConfig, seed: int,
                  ctx: DistContext) -> ShardData:
    """Read this rank's row groups twice (statistics + encoder sample, then encoding).

    The second pass keeps only int32 ids, arms and float32 responses in memory
    (F * 4 + 8 + R * 4 bytes per row), never the decoded table of the shard.
    """
    K1, R = schema.K + 1, schema.R
    n_all = _n_rows(job.data)
    train_frac = 1.0 if job.valid_data is not None else job.fractions[0]
    p_sample = min(1.0, job.encoder_sample_rows / max(1.0, n_all * train_frac))

    # --- pass 1: counts, moments, encoder sample (errors agreed on by every rank) -----
    moments: tuple = (0, np.zeros(R), np.zeros(R))
    arm_counts = np.zeros((3, K1), dtype=np.int64)  # train / valid / test
    sample: list[pa.Table] = []
    error = None
    try:
        for path, fixed in _sources(job):
            for idx, d in _pieces(path, schema, ctx):
                part = (np.full(idx.size, fixed, np.int8) if fixed is not None
                        else hash_split(idx, job.fractions, seed))
                for p in range(3):
                    arm_counts[p] += np.bincount(d.arm[part == p], minlength=K1)
                tr = part == 0
                y = d.y[tr]
                if y.shape[0]:
                    mean = y.mean(axis=0)
                    moments = _merge_moments(
                        moments, (y.shape[0], mean, ((y - mean) ** 2).sum(axis=0)))
                pick = np.flatnonzero(tr & (hash_uniform(idx, seed, stream=1) < p_sample))
                if pick.size:
                    sample.append(d.features.take(pa.array(pick)))
    except (DataError, ValueError, OSError) as e:
        error = f"worker {ctx.rank}: {e}"
    errors = [e for e in ctx.all_gather_object(error) if e]
    if errors:
        raise DataError(errors[0])

    stats = ctx.all_gather_object((moments, arm_counts))
    total: tuple = (0, np.zeros(R), np.zeros(R))
    for m, _ in stats:  # rank order: the same floats on every rank
        total = _merge_moments(total, m)
    counts = sum(c for _, c in stats)
    n_train, y_mean, m2 = total
    if n_train == 0:
        raise DataError(f"{job.data}: no training rows")
    empty = [schema.arms[a] for a in np.flatnonzero(counts[0] == 0)]
    if empty:
        raise DataError(
            f"column {schema.arm_column!r}: every arm needs training rows; arm(s) {empty} "
            f"have none (train rows per arm: {counts[0].tolist()})"
        )
    if counts[1].sum() == 0:
        raise DataError(f"{job.data}: the split left no validation rows; use more rows")
    y_std = np.sqrt(m2 / n_train)

    # --- encoder: rank 0 fits on the gathered sample, every rank loads its JSON --------
    gathered = ctx.gather_object(
        pa.concat_tables(sample, promote_options="default") if sample else None)
    payload = None
    if ctx.is_main:
        tables = [t for t in gathered if t is not None]
        try:
            table = pa.concat_tables(tables, promote_options="default")
            payload = ("ok", FeatureEncoder(schema.features, enc_cfg).fit(table).to_dict())
        except (DataError, ValueError, pa.ArrowInvalid) as e:
            payload = ("error", f"fitting the encoder: {e}")
        del gathered, tables
    del sample
    status, enc = ctx.broadcast_object(payload)
    if status != "ok":
        raise DataError(enc)
    encoder = FeatureEncoder.from_dict(enc)

    # --- pass 2: encode this rank's rows into preallocated arrays ------------------------
    local = arm_counts.sum(axis=1)
    arrays = [
        (np.empty((local[p], schema.F), np.int32), np.empty(local[p], np.int64),
         np.empty((local[p], R), np.float32))
        for p in range(2)
    ]
    fill = [0, 0]
    for path, fixed in _sources(job):
        for idx, d in _pieces(path, schema, ctx):
            part = (np.full(idx.size, fixed, np.int8) if fixed is not None
                    else hash_split(idx, job.fractions, seed))
            x = encoder.transform(d.features)
            for p in range(2):
                m = part == p
                k = int(m.sum())
                x_p, a_p, y_p = arrays[p]
                x_p[fill[p]: fill[p] + k] = x[m]
                a_p[fill[p]: fill[p] + k] = d.arm[m]
                y_p[fill[p]: fill[p] + k] = d.y[m]
                fill[p] += k
    train, valid = (tuple(torch.from_numpy(a) for a in arrays[p]) for p in range(2))
    # decoded row groups and the encoder sample are gone: hand their pages back
    pa.default_memory_pool().release_unused()
    rows = {
        "train": int(counts[0].sum()), "valid": int(counts[1].sum()),
        "test": int(counts[2].sum()),
        "train_per_worker": [int(c.sum(axis=1)[0]) for _, c in stats],
    }
    return ShardData(encoder, y_mean, y_std, train, valid, rows)


def _n_rows(path: str | Path) -> int:
    """Rows of a Parquet file or folder, from the footers."""
    pieces = row_group_pieces(path)
    return pieces[-1][2] + pieces[-1][3]


# --------------------------------------------------------------------------------------
# The job every worker runs
# --------------------------------------------------------------------------------------


class DistributedJob(BaseModel):
    """One distributed training run: what every worker reads, trains and writes.

    ``fractions``: the hash split (train, valid[, test]) used when ``valid_data`` is
    None; (0.8, 0.1, 0.1) holds out a test part as ``hmum train --split`` does.
    """

    model_config = ConfigDict(extra="forbid")

    data: Path
    data_schema: dict
    out: Path | None = None
    valid_data: Path | None = None
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    model_type: str = "hum"
    model: dict = Field(default_factory=dict)
    trainer: dict = Field(default_factory=dict)
    encoder: dict = Field(default_factory=dict)
    device: str = "cpu"
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = False
    encoder_sample_rows: int = Field(
        1_000_000, ge=1000, description="train rows (about) the encoder is fitted on"
    )

    @model_validator(mode="after")
    def _check(self) -> DistributedJob:
        fr = np.asarray(self.fractions, dtype=np.float64)
        if not 2 <= fr.size <= 3 or (fr <= 0).any() or not np.isclose(fr.sum(), 1.0):
            raise ValueError(
                f"fractions must be 2 or 3 positive numbers (train, valid[, test]) summing "
                f"to 1, got {list(self.fractions)}"
            )
        backend_for(self.device)
        return self


def _default_threads() -> int:
    """CPU cores per local worker (workers must not oversubscribe the cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def train_worker(job: DistributedJob):
    """The whole run on one rank: join the group, read the shard, fit; rank 0 saves.

    Returns the fitted estimator (every rank holds the same weights).
    """
    from hmum.models.registry import registered_estimators

    ctx = init_distributed(job.device)
    try:
        schema = Schema.model_validate(job.data_schema)
        registry = registered_estimators()
        if job.model_type not in registry:
            raise ValueError(f"model_type {job.model_type!r} unknown; known: {sorted(registry)}")
        trainer = {"num_threads": _default_threads(), **job.trainer, "device": str(ctx.device)}
        if trainer["num_threads"] is None:
            trainer["num_threads"] = _default_threads()
        est = registry[job.model_type](schema, model=job.model, trainer=trainer,
                                       encoder=job.encoder)
        _, trainer_cfg, enc_cfg = est._configs()
        torch.set_num_threads(trainer_cfg.num_threads)
        shard = prepare_shard(job, schema, enc_cfg, trainer_cfg.seed, ctx)
        if ctx.is_main and job.progress:
            r = shard.rows
            print(f"{ctx.world_size} worker(s), backend {ctx.backend}: train {r['train']:,} "
                  f"(per worker {r['train_per_worker']}) / valid {r['valid']:,} rows"
                  + (f"; hash test split of {r['test']:,} held out" if r["test"] else ""),
                  flush=True)
        est._fit_encoded(
            shard.encoder, shard.y_mean, shard.y_std, shard.train, shard.valid, dist=ctx,
            checkpoint_dir=job.checkpoint_dir, resume=job.resume,
            progress=job.progress and ctx.is_main,
        )
        est.rows_ = shard.rows
        if job.valid_data is None and len(job.fractions) == 3:
            est.split_ = {"rule": "hash", "fractions": list(job.fractions),
                          "seed": trainer_cfg.seed}
            est.data_fingerprint_ = file_fingerprint(job.data, schema) if ctx.is_main else None
        if ctx.is_main and job.out is not None:
            est.save(job.out)
        ctx.barrier()  # the artifact exists before any worker returns
        return est
    finally:
        shutdown(ctx)


def preflight(job: DistributedJob, nproc: int) -> None:
    """Checks the parent can make before starting workers (columns, row groups)."""
    schema = Schema.model_validate(job.data_schema)
    need = [*schema.feature_names, schema.arm_column, *schema.response_names]
    for path in [job.data] + ([job.valid_data] if job.valid_data else []):
        pieces = row_group_pieces(path)
        names = column_names(path)
        missing = [c for c in need if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; the file has {names}")
        if path == job.data and len(pieces) < nproc:
            raise DataError(
                f"{path}: {len(pieces)} row group(s) for {nproc} workers; each worker reads "
                "whole row groups, so write the file with at least one row group per "
                "worker (pyarrow.parquet.write_table(..., row_group_size=...))"
            )


def run(job: DistributedJob, nproc: int | None = None):
    """Train with ``nproc`` local workers, or as one worker of a torchrun launch.

    Under torchrun (RANK etc. set) this process is one worker: ``nproc`` must be
    None and the fitted estimator is returned. Otherwise ``nproc`` workers are
    spawned, rank 0 writes ``job.out`` and the loaded artifact is returned.
    """
    if launched_by_torchrun():
        if nproc is not None:
            raise ValueError(
                "--nproc starts local workers; under torchrun set --nproc-per-node instead"
            )
        return train_worker(job)
    from hmum.models.registry import load_estimator

    if job.out is None:
        raise ValueError("out: spawned workers need an artifact folder to hand the model back")
    nproc = 1 if nproc is None else nproc
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    preflight(job, nproc)
    launch_local(train_worker, nproc, job)
    return load_estimator(job.out)
