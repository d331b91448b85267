"""Semi-synthetic benchmarks with known ground truth: IHDP and ACIC 2016.

Both have real covariates, a single binary treatment that is **not randomized**
(IHDP: a non-random part of the treated group was removed; ACIC: simulated
confounded assignment) and simulated outcomes whose true conditional means
``mu0``, ``mu1`` are known. They test individual-effect estimation (PEHE) under
confounding, not uplift ranking on an experiment.

Formats relied on
-----------------

* **IHDP** (Hill 2011, response surface B; replications 1-10 as in Johansson et
  al. 2016 and the CEVAE repository ``AMLab-Amsterdam/CEVAE``,
  ``datasets/IHDP/csv/``; ``../shared/data/ihdp_npci/PROVENANCE.md``): files
  ``ihdp_npci_<i>.csv``, no header, 30 columns ``treatment, y_factual, y_cfactual,
  mu0, mu1, x1..x25`` (x1-x6 continuous, x7-x25 binary), 747 rows (139 treated).
  A file that does have a header row is accepted if its names are these.
* **ACIC 2016** (Dorie et al. 2019; copy from PyPI ``causallib`` 0.10.0;
  ``../shared/data/acic2016/PROVENANCE.md``): ``x.csv`` with ``x_1..x_58``
  (``x_2``, ``x_21``, ``x_24`` categorical strings) shared by every simulation
  ``zymu_<i>.csv`` with ``z, y0, y1, mu0, mu1``; rows align; the observed outcome
  is ``y1`` where ``z = 1`` else ``y0``.

Every replication becomes one ``ExperimentData`` with arms ["control",
"treated"], one continuous response ``y`` that may be negative, ``mu`` (N, 2, 1)
from ``mu0``/``mu1`` (through the schema's ground-truth columns) and the
counterfactual outcome in ``extra["y_cfactual"]`` (N, 1).

Splits: 63 / 27 / 10 train / valid / test per replication (CFRNet's protocol,
Shalit et al. 2017), stratified by arm, with a seed derived from ``(seed,
replication)`` so replications get different splits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from hmum.data.datasets._common import (
    CFR_SPLIT,
    BenchSplit,
    check_columns,
    compact_names,
    find_files,
    find_one,
    listing,
    read_columns,
    replication_seed,
    require_folder,
    resolve_path,
    split3,
)
from hmum.data.io import PARQUET_SUFFIXES
from hmum.data.schema import FeatureSpec, ResponseSpec, Schema, ground_truth_column
from hmum.data.validate import ExperimentData, numeric_column, validate_table
from hmum.exceptions import DataError, DatasetNotFoundError

PathLike = str | Path
ARMS = ["control", "treated"]
_RESPONSE = ResponseSpec(name="y", kind="continuous", nonnegative=False)
_MU0 = ground_truth_column("control", "y")
_MU1 = ground_truth_column("treated", "y")


def _replication_files(
    dataset: str, path: Path, pattern: str, replications: int | Sequence[int] | None,
    expected: str,
) -> list[tuple[int, Path]]:
    """(replication number, file) pairs sorted by number, limited by ``replications``
    (None: all; an int n: the first n; a sequence: those numbers)."""
    if path.is_file():
        files = [path]
    else:
        files = find_files(path, [f"{pattern}_*"])
        if not files:
            raise DatasetNotFoundError(
                f"{dataset}: no replication files {pattern}_<i>.csv in {path}; expected "
                f"{expected}; the folder holds {listing(path)}"
            )
    reps = []
    for f in files:
        m = re.search(r"_(\d+)\.", f.name)
        reps.append((int(m.group(1)) if m else 1, f))
    reps.sort()
    if replications is None:
        return reps
    if isinstance(replications, int | np.integer):
        if replications < 1:
            raise ValueError(f"{dataset}: replications must be >= 1, got {replications}")
        return reps[: int(replications)]
    have = {r: f for r, f in reps}
    missing = [r for r in replications if r not in have]
    if missing:
        raise DataError(
            f"{dataset}: replication(s) {missing} not found in {path}; available "
            f"{sorted(have)}"
        )
    return [(int(r), have[r]) for r in replications]


def _first_line(f: Path) -> str:
    with pa.input_stream(str(f), compression="detect") as s:
        head = s.read(1 << 16)
    if not head.strip():
        raise DataError(f"{f}: the file is empty")
    return head.decode("utf-8", errors="replace").splitlines()[0]


# --------------------------------------------------------------------------------------
# IHDP
# --------------------------------------------------------------------------------------

IHDP_COVARIATES = [f"x{i}" for i in range(1, 26)]
IHDP_COLUMNS = ["treatment", "y_factual", "y_cfactual", "mu0", "mu1", *IHDP_COVARIATES]
IHDP_FEATURES = [
    FeatureSpec(name=c, kind="numeric" if i < 6 else "categorical")
    for i, c in enumerate(IHDP_COVARIATES)
]
_IHDP_EXPECTED = (
    "IHDP replication files ihdp_npci_<i>.csv (optionally .gz), no header, 30 columns "
    "treatment, y_factual, y_cfactual, mu0, mu1, x1..x25"
)


def _read_ihdp(f: Path) -> pa.Table:
    if f.name.lower().endswith(PARQUET_SUFFIXES):
        return read_columns("ihdp", f, IHDP_COLUMNS)
    first = _first_line(f)
    fields = [c.strip().strip('"') for c in first.split(",")]
    try:
        float(fields[0])
        has_header = False
    except ValueError:
        has_header = True
    if has_header:
        check_columns("ihdp", f, fields, IHDP_COLUMNS)
        return read_columns("ihdp", f, IHDP_COLUMNS)
    if len(fields) != len(IHDP_COLUMNS):
        raise DataError(
            f"ihdp: {f} does not have the expected layout: rows have {len(fields)} fields and "
            f"no header; expected {len(IHDP_COLUMNS)} columns "
            f"{compact_names(IHDP_COLUMNS)}"
        )
    try:
        return pacsv.read_csv(f, read_options=pacsv.ReadOptions(column_names=IHDP_COLUMNS))
    except pa.ArrowInvalid as e:
        raise DataError(
            f"ihdp: {f} could not be parsed as {len(IHDP_COLUMNS)} columns "
            f"{compact_names(IHDP_COLUMNS)}: {e}"
        ) from None


def _ihdp_schema() -> Schema:
    return Schema(features=IHDP_FEATURES, arm_column="treatment", arms=ARMS,
                  responses=[_RESPONSE], ground_truth=True)


def _ihdp_one(f: Path, schema: Schema) -> ExperimentData:
    t = _read_ihdp(f)
    cols = {c: t.column(c) for c in IHDP_COVARIATES}
    cols.update(treatment=t.column("treatment"), y=t.column("y_factual"),
                **{_MU0: t.column("mu0"), _MU1: t.column("mu1")})
    d = validate_table(pa.table(cols), schema, source=f"ihdp ({f})")
    d.extra["y_cfactual"] = numeric_column(t.column("y_cfactual"), "y_cfactual")[:, None]
    return d


def _ihdp(path: PathLike | None, replications) -> list[tuple[int, ExperimentData]]:
    p = resolve_path("ihdp", path, "ihdp_npci", _IHDP_EXPECTED)
    schema = _ihdp_schema()
    files = _replication_files("ihdp", p, "ihdp_npci", replications, _IHDP_EXPECTED)
    return [(r, _ihdp_one(f, schema)) for r, f in files]


def load_ihdp(
    path: PathLike | None = None, *, replications: int | Sequence[int] | None = None
) -> list[ExperimentData]:
    """IHDP replications, sorted by replication number: K = 1, R = 1 (``y``).

    Args:
        path: a folder of ``ihdp_npci_<i>.csv`` files, or one such file; None: the
            shared copy (replications 1-10).
        replications: None for all, an int n for the first n, or a list of numbers.

    Returns:
        One ExperimentData per replication: 747 rows, features x1-x6 numeric and
        x7-x25 categorical, ``mu`` (N, 2, 1), ``extra["y_cfactual"]`` (N, 1).
    """
    return [d for _, d in _ihdp(path, replications)]


def bench_ihdp(
    path: PathLike | None, seed: int, *, replications: int | Sequence[int] | None = None,
    fractions: Sequence[float] = CFR_SPLIT,
) -> list[BenchSplit]:
    """One BenchSplit "ihdp/<i>" per replication, seeded 63/27/10 split."""
    return [BenchSplit(f"ihdp/{r}", *split3(d, fractions, replication_seed(seed, r)))
            for r, d in _ihdp(path, replications)]


# --------------------------------------------------------------------------------------
# ACIC 2016
# --------------------------------------------------------------------------------------

ACIC_COVARIATES = [f"x_{i}" for i in range(1, 59)]
ACIC_CATEGORICAL = ("x_2", "x_21", "x_24")
ACIC_FEATURES = [
    FeatureSpec(name=c, kind="categorical" if c in ACIC_CATEGORICAL else "numeric")
    for c in ACIC_COVARIATES
]
ACIC_SIM_COLUMNS = ["z", "y0", "y1", "mu0", "mu1"]
_ACIC_EXPECTED = (
    "the ACIC 2016 files x.csv (columns x_1..x_58) and zymu_<i>.csv (columns z, y0, y1, "
    "mu0, mu1), optionally .gz"
)


def _acic(path: PathLike | None, replications) -> list[tuple[int, ExperimentData]]:
    p = resolve_path("acic2016", path, "acic2016", _ACIC_EXPECTED)
    require_folder("acic2016", p, _ACIC_EXPECTED)
    fx = find_one("acic2016", p, ["x"], f"covariate file x.csv ({_ACIC_EXPECTED})")
    x = read_columns("acic2016", fx, ACIC_COVARIATES)
    files = _replication_files("acic2016", p, "zymu", replications, _ACIC_EXPECTED)
    schema = Schema(features=ACIC_FEATURES, arm_column="z", arms=ARMS,
                    responses=[_RESPONSE], ground_truth=True)
    out = []
    for r, f in files:
        t = read_columns("acic2016", f, ACIC_SIM_COLUMNS)
        if t.num_rows != x.num_rows:
            raise DataError(
                f"acic2016: {f} has {t.num_rows} rows but {fx} has {x.num_rows}; the rows of "
                f"every zymu file must align with x.csv"
            )
        z = numeric_column(t.column("z"), "z")
        y0, y1 = (numeric_column(t.column(c), c) for c in ("y0", "y1"))
        cols = {c: x.column(c) for c in ACIC_COVARIATES}
        # Observed outcome: y1 for treated rows, y0 otherwise (z itself is checked below).
        cols.update(z=t.column("z"), y=pa.array(np.where(z == 1, y1, y0)),
                    **{_MU0: t.column("mu0"), _MU1: t.column("mu1")})
        d = validate_table(pa.table(cols), schema, source=f"acic2016 ({fx} + {f})")
        d.extra["y_cfactual"] = np.where(z == 1, y0, y1)[:, None]
        out.append((r, d))
    return out


def load_acic2016(
    path: PathLike | None = None, *, replications: int | Sequence[int] | None = None
) -> list[ExperimentData]:
    """ACIC 2016 simulations joined with the shared covariates: K = 1, R = 1 (``y``).

    Args:
        path: a folder with ``x.csv`` and ``zymu_<i>.csv`` files; None: the shared copy
            (simulations 1-10).
        replications: None for all, an int n for the first n, or a list of numbers.

    Returns:
        One ExperimentData per simulation, sorted by number: 4,802 rows, 58 features
        (x_2, x_21, x_24 categorical), ``mu`` (N, 2, 1), ``extra["y_cfactual"]`` (N, 1).
    """
    return [d for _, d in _acic(path, replications)]


def bench_acic2016(
    path: PathLike | None, seed: int, *, replications: int | Sequence[int] | None = None,
    fractions: Sequence[float] = CFR_SPLIT,
) -> list[BenchSplit]:
    """One BenchSplit "acic2016/<i>" per simulation, seeded 63/27/10 split."""
    return [BenchSplit(f"acic2016/{r}", *split3(d, fractions, replication_seed(seed, r)))
            for r, d in _acic(path, replications)]
