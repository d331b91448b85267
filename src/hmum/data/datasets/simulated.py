"""The short-video experiment simulator (``hmum.data.simulator``) as a benchmark dataset.

In memory (``path=None``): ``simulate_users`` generates ``n_users`` users of a
randomized experiment with K treatments and R responses (defaults K = 2,
R = 2: usage_time, video_views), with the true expected response of every arm in
``mu`` (N, K+1, R) and of all treatments together in ``mu_all`` (N, R). From a
folder written by ``hmum simulate`` (``users.parquet`` + ``schema.json``): the
same, read from disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hmum.data.datasets._common import (
    RCT_SPLIT,
    BenchSplit,
    listing,
    require_folder,
    resolve_path,
    split3,
)
from hmum.data.schema import Schema
from hmum.data.simulator import SimulatorConfig, simulate_users, simulation_schema
from hmum.data.validate import ExperimentData, load_experiment, validate_table
from hmum.exceptions import DatasetNotFoundError

PathLike = str | Path
_EXPECTED = "a folder written by `hmum simulate` holding users.parquet and schema.json"


def load_simulator(
    path: PathLike | None = None,
    *,
    n_users: int = 50_000,
    n_treatments: int = 2,
    n_responses: int = 2,
    seed: int = 0,
    effect_scale: float = 1.0,
    confounded: bool = False,
) -> ExperimentData:
    """Simulated users with ground truth.

    Args:
        path: None to generate in memory; else a folder written by ``hmum simulate``
            (the other arguments are then ignored: the folder's schema rules).
        n_users, n_treatments (K), n_responses (R), seed, effect_scale, confounded:
            fields of ``SimulatorConfig`` for the in-memory case.

    Returns:
        N = n_users rows, 17 features, arms ["control", "t1", ..., "tK"], ``mu``
        (N, K+1, R), ``mu_all`` (N, R) when K > 1, ``propensity`` (N,).
    """
    if path is None:
        cfg = SimulatorConfig(
            n_users=n_users, n_treatments=n_treatments, n_responses=n_responses, seed=seed,
            effect_scale=effect_scale, confounded=confounded, n_requests=0,
        )
        return validate_table(simulate_users(cfg), simulation_schema(cfg),
                              source=f"simulator (seed {seed})")
    p = resolve_path("simulator", path, None, _EXPECTED)
    require_folder("simulator", p, _EXPECTED)
    missing = [n for n in ("users.parquet", "schema.json") if not (p / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"simulator: {p} lacks {missing}; expected {_EXPECTED}; the folder holds "
            f"{listing(p)}"
        )
    return load_experiment(p / "users.parquet", Schema.from_json(p / "schema.json"))


#: the fresh evaluation population of simulator seed s is drawn with seed s + this
EVAL_SEED_OFFSET = 1_000_003


def bench_simulator(
    path: PathLike | None, seed: int, *, n_users: int = 50_000, n_treatments: int = 2,
    n_responses: int = 2, effect_scale: float = 1.0, confounded: bool = False,
    sim_seed: int | None = None, fractions: Sequence[float] = RCT_SPLIT,
    eval_users: int = 200_000,
) -> list[BenchSplit]:
    """Seeded 8:1:1 split of simulated users (``sim_seed`` defaults to ``seed``).

    ``eval_users`` > 0 (in memory only): the test part is replaced by a *fresh*
    population of that many users drawn from the same simulator configuration with
    another seed (sim_seed + ``EVAL_SEED_OFFSET``), so the ground-truth errors are
    measured on many users the model never saw; 0 keeps the 10 % test split.
    """
    sim = seed if sim_seed is None else sim_seed
    d = load_simulator(
        path, n_users=n_users, n_treatments=n_treatments, n_responses=n_responses,
        seed=sim, effect_scale=effect_scale, confounded=confounded,
    )
    train, valid, test = split3(d, fractions, seed)
    name = "simulator"
    if eval_users and path is None:
        test = load_simulator(
            None, n_users=eval_users, n_treatments=n_treatments, n_responses=n_responses,
            seed=sim + EVAL_SEED_OFFSET, effect_scale=effect_scale, confounded=confounded,
        )
        name = f"simulator-fresh{eval_users}"
    return [BenchSplit(name, train, valid, test)]
