"""Public benchmark datasets and the simulator, loaded into ``ExperimentData``.

Paths are passed in (``path=``; ``hmum bench --path``) or default to the dataset's
folder under the data home ``shared_data_dir()``: ``$HMUM_DATA``, else
``../shared/data`` relative to the current folder (a development checkout's
neighbour); nothing is ever downloaded, and nothing depends on where hmum is
installed. Every loader reads the publisher's format, checks its columns
(a file that does not fit raises ``DataError`` naming the dataset, the expected
and the found columns; a missing path or file raises ``DatasetNotFoundError``,
both a ``DataError`` and a ``FileNotFoundError``) and validates the values with
``validate_table``. Arm 0 is always the control arm.

=================  ====  =====  ============  ============  ===========================
name               K     R      ground truth  randomized    split (train/valid/test)
=================  ====  =====  ============  ============  ===========================
simulator          2*    2*     yes           yes*          8:1:1
criteo             1     1-2    no            yes           8:1:1
lazada             1     1      no            test only     9:1 of biased train file / test
hillstrom          2     1-3    no            yes           8:1:1
starbucks          1     1      no            yes           9:1 of Training.csv / Test.csv
social_pressure    4     1      no            yes           8:1:1
ihdp               1     1      yes           no            63/27/10 per replication
acic2016           1     1      yes           no            63/27/10 per replication
=================  ====  =====  ============  ============  ===========================

(* configurable.) All splits are seeded and stratified by arm. Formats and sources
are described in ``experiments``, ``semisynthetic`` and ``simulated``.

``load_benchmark(name, path, seed=..., **options)`` returns ``list[BenchSplit]``
(one per replication for IHDP / ACIC); the plain loaders ``load_<name>`` return
``ExperimentData``, a ``TrainTest`` pair (Lazada, Starbucks) or a list
(IHDP, ACIC).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hmum.data.datasets._common import (
    CFR_SPLIT,
    RCT_SPLIT,
    TRAIN_VALID_SPLIT,
    BenchSplit,
    TrainTest,
    shared_data_dir,
)
from hmum.data.datasets.experiments import (
    bench_criteo,
    bench_hillstrom,
    bench_lazada,
    bench_social_pressure,
    bench_starbucks,
    load_criteo,
    load_hillstrom,
    load_lazada,
    load_social_pressure,
    load_starbucks,
)
from hmum.data.datasets.semisynthetic import (
    bench_acic2016,
    bench_ihdp,
    load_acic2016,
    load_ihdp,
)
from hmum.data.datasets.simulated import bench_simulator, load_simulator
from hmum.data.datasets.user import UserData
from hmum.exceptions import DatasetNotFoundError


@dataclass(frozen=True)
class DatasetInfo:
    """What the registry knows about one dataset."""

    name: str  # registry key, e.g. "criteo"
    description: str
    default_path: str | None  # relative to shared_data_dir(); None: not shipped
    ground_truth: bool
    randomized: bool


DATASETS: dict[str, DatasetInfo] = {
    i.name: i
    for i in (
        DatasetInfo("simulator", "simulated short-video experiment (hmum.data.simulator), "
                    "K=2 treatments, R=2 responses by default", None, True, True),
        DatasetInfo("criteo", "Criteo Uplift v2.1 ad campaign test; K=1, responses visit "
                    "(default) and conversion", "criteo_uplift_sample10k", False, True),
        DatasetInfo("lazada", "Lazada e-commerce incentive data as released by the DESCN "
                    "authors; K=1, biased training file, randomized test file", None, False,
                    False),
        DatasetInfo("hillstrom", "MineThatData e-mail test (Hillstrom 2008); K=2 (mens, "
                    "womens e-mail), R=3 (visit, conversion, spend)", None, False, True),
        DatasetInfo("starbucks", "Starbucks promotion experiment (Udacity); K=1, purchase",
                    "starbucks_promotion", False, True),
        DatasetInfo("social_pressure", "Gerber, Green & Larimer (2008) turnout mailings; K=4, "
                    "voted", "social_pressure_ggl2008", False, True),
        DatasetInfo("ihdp", "IHDP semi-synthetic (Hill 2011, surface B), 10 replications; "
                    "K=1, true mu0/mu1", "ihdp_npci", True, False),
        DatasetInfo("acic2016", "ACIC 2016 challenge, semi-synthetic, 10 simulations; K=1, "
                    "true mu0/mu1", "acic2016", True, False),
    )
}

_BENCH: dict[str, Callable[..., list[BenchSplit]]] = {
    "simulator": bench_simulator,
    "criteo": bench_criteo,
    "lazada": bench_lazada,
    "hillstrom": bench_hillstrom,
    "starbucks": bench_starbucks,
    "social_pressure": bench_social_pressure,
    "ihdp": bench_ihdp,
    "acic2016": bench_acic2016,
}


def load_benchmark(
    name: str, path: str | Path | None = None, *, seed: int = 0, **options
) -> list[BenchSplit]:
    """Load dataset ``name`` and split it with ``seed``.

    Args:
        name: a key of ``DATASETS``.
        path: a file or folder in the publisher's format; None: the default folder
            under ``shared_data_dir()`` (the simulator generates in memory).
        seed: the same seed gives the same splits.
        options: dataset-specific, e.g. ``responses=("visit", "conversion")`` (criteo),
            ``replications=3`` (ihdp, acic2016), ``n_users=...`` (simulator),
            ``fractions=...`` (every dataset).

    Returns:
        One BenchSplit per replication (IHDP, ACIC), else a list of one.
    """
    if name not in _BENCH:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(_BENCH)}")
    return _BENCH[name](path, seed, **options)


__all__ = [
    "CFR_SPLIT",
    "DATASETS",
    "RCT_SPLIT",
    "TRAIN_VALID_SPLIT",
    "BenchSplit",
    "DatasetInfo",
    "DatasetNotFoundError",
    "TrainTest",
    "UserData",
    "load_acic2016",
    "load_benchmark",
    "load_criteo",
    "load_hillstrom",
    "load_ihdp",
    "load_lazada",
    "load_simulator",
    "load_social_pressure",
    "load_starbucks",
    "shared_data_dir",
]
