"""Shared helpers of the dataset loaders: locating files, checking columns, recoding values.

Every loader reads a publisher's file(s) with these helpers, recodes arms and
Yes/No answers to numbers, builds a pyarrow table and hands it to
``validate_table`` so bad values get the library's standard errors. Problems with
the file itself (wrong path, wrong columns, unknown category values) raise
``DataError`` naming the dataset, the file, what was expected and what was found.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hmum.data.io import CSV_SUFFIXES, PARQUET_SUFFIXES, column_names, read_table
from hmum.data.split import split_indices
from hmum.data.validate import ExperimentData
from hmum.exceptions import DataError, DatasetNotFoundError

TABLE_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES
#: seeded 8:1:1 train / valid / test split of a single randomized table (paper §5.1.1;
#: the same fractions as ``hmum.workflows.train.SPLIT``, which the data layer cannot import).
RCT_SPLIT = (0.8, 0.1, 0.1)
#: train / valid split of a publisher's training file when a separate test file exists.
TRAIN_VALID_SPLIT = (0.9, 0.1)
#: IHDP / ACIC: 63 / 27 / 10 train / valid / test, the protocol of CFRNet
#: (Shalit, Johansson & Sontag 2017), which most later IHDP results follow.
CFR_SPLIT = (0.63, 0.27, 0.10)




@dataclass
class BenchSplit:
    """One train / valid / test split of a benchmark dataset.

    ``test.mu`` (N, K+1, R) is set when the dataset has ground truth.
    """

    name: str  # "criteo", "ihdp/3" (replication 3), ...
    train: ExperimentData
    valid: ExperimentData
    test: ExperimentData


@dataclass
class TrainTest:
    """The two parts of a dataset published as separate training and test files."""

    train: ExperimentData
    test: ExperimentData

    def __iter__(self):
        return iter((self.train, self.test))


# --------------------------------------------------------------------------------------
# locating the data
# --------------------------------------------------------------------------------------


#: the environment variable naming the folder of public datasets (the data home)
DATA_ENV = "HMUM_DATA"
#: its older name, still read when DATA_ENV is unset
LEGACY_DATA_ENV = "HMUM_SHARED_DATA"
#: the development default, relative to the current folder: a checkout's neighbour
DEV_DATA_DIR = Path("..") / "shared" / "data"


def _data_env() -> tuple[str, str] | None:
    """(variable, value) of the data-home variable that is set, if any."""
    for var in (DATA_ENV, LEGACY_DATA_ENV):
        value = os.environ.get(var)
        if value:
            return var, value
    return None


def shared_data_dir() -> Path | None:
    """The data home, the folder of public datasets: ``$HMUM_DATA`` when set
    (``$HMUM_SHARED_DATA``, its older name, when only that is), else
    ``../shared/data`` relative to the current folder (a development checkout's
    neighbour); None when that folder does not exist. Nothing here depends on where
    hmum is installed."""
    env = _data_env()
    p = Path(env[1]).expanduser() if env else DEV_DATA_DIR
    return p.resolve() if p.is_dir() else None


def _no_data_home(dataset: str, expected: str) -> str:
    """The error when no data folder is found: the three places, in order, and why
    each failed."""
    env = _data_env()
    where = (f"${env[0]} is {env[1]}, which is not a folder" if env
             else f"${DATA_ENV} is not set")
    dev = (Path.cwd() / DEV_DATA_DIR).resolve()
    return (f"{dataset}: no data folder found. Looked for, in order: (1) an explicit path "
            f"(--path on the command line, path= in Python): none given; (2) the folder of "
            f"public datasets in ${DATA_ENV}: {where}; (3) the development default "
            f"{DEV_DATA_DIR} relative to the current folder: {dev} does not exist. Pass "
            f"path= (--path) pointing to {expected}, or set {DATA_ENV}")


def resolve_path(
    dataset: str, path: str | Path | None, default: str | None, expected: str
) -> Path:
    """The dataset's file or folder; must exist.

    In order: ``path`` when given; else the dataset's folder ``default`` under the data
    home (``shared_data_dir()``: ``$HMUM_DATA``, else ``../shared/data`` relative to
    the current folder). DatasetNotFoundError names all three places when none holds
    the data.

    Args:
        expected: what the path should hold, for the error message
            (e.g. "Training.csv and Test.csv (optionally .gz)").
    """
    if path is None:
        if default is None:
            raise DataError(
                f"{dataset}: no copy of this dataset ships with hmum (nothing is downloaded); "
                f"pass path= (--path on the command line) pointing to the publisher's data: "
                f"{expected}"
            )
        root = shared_data_dir()
        if root is None:
            raise DatasetNotFoundError(_no_data_home(dataset, expected))
        p = root / default
        if not p.exists():
            env = _data_env()
            src = f"${env[0]}" if env else f"the development default {DEV_DATA_DIR}"
            raise DatasetNotFoundError(
                f"{dataset}: {p} does not exist (the folder {default} of the data home {root}, "
                f"from {src}); expected {expected} there, or pass path= (--path)")
        return p
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetNotFoundError(f"{dataset}: path {p} does not exist; expected {expected}")
    return p


def _stem(name: str) -> str | None:
    low = name.lower()
    for s in TABLE_SUFFIXES:
        if low.endswith(s):
            return low[: -len(s)]
    return None


def listing(folder: Path, limit: int = 20) -> str:
    """The first ``limit`` names in ``folder``, for an error message."""
    names = sorted(f.name for f in folder.iterdir())
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return f"{names[:limit]}{more}"


def find_files(folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Table files in ``folder`` (CSV, optionally gz/bz2, or Parquet) whose name without
    its suffix matches one of the glob ``patterns`` (case-insensitive), sorted."""
    out = []
    for f in sorted(folder.iterdir()):
        stem = _stem(f.name)
        if f.is_file() and stem is not None and any(fnmatch.fnmatch(stem, p) for p in patterns):
            out.append(f)
    return out


def find_one(dataset: str, path: Path, patterns: Sequence[str], expected: str) -> Path:
    """``path`` itself when it is a file, else the single file in the folder matching
    ``patterns``; raises DatasetNotFoundError naming what was expected and what is there."""
    if path.is_file():
        return path
    found = find_files(path, patterns)
    if not found:
        raise DatasetNotFoundError(
            f"{dataset}: no {expected} in folder {path}; the folder holds {listing(path)}"
        )
    if len(found) > 1:
        raise DataError(
            f"{dataset}: several candidate files for {expected} in {path}: "
            f"{[f.name for f in found]}; pass the file itself as path"
        )
    return found[0]


def require_folder(dataset: str, path: Path, expected: str) -> None:
    if not path.is_dir():
        raise DataError(
            f"{dataset}: expected a folder holding {expected}, received the file {path}"
        )


# --------------------------------------------------------------------------------------
# reading and checking columns
# --------------------------------------------------------------------------------------


def compact_names(names: Iterable[str]) -> str:
    """Column names for a message, runs like f0, f1, ..., f82 shortened to f0..f82."""
    names = list(names)
    out: list[str] = []
    i = 0
    while i < len(names):
        m = re.fullmatch(r"(.*?)(\d+)", names[i])
        j = i
        if m:
            prefix, start = m.group(1), int(m.group(2))
            while j + 1 < len(names) and names[j + 1] == f"{prefix}{start + j + 1 - i}":
                j += 1
        if j - i >= 3:
            out.append(f"{names[i]}..{names[j]}")
        else:
            out.extend(names[i : j + 1])
        i = j + 1
    return "[" + ", ".join(out) + "]"


def check_columns(
    dataset: str, path: Path, found: Sequence[str], expected: Sequence[str]
) -> None:
    """Raise DataError naming the dataset, the expected and the found columns."""
    missing = [c for c in expected if c not in set(found)]
    if missing:
        raise DataError(
            f"{dataset}: {path} does not have the expected layout: missing column(s) "
            f"{compact_names(missing)}; expected columns {compact_names(expected)}; "
            f"found columns {compact_names(found)}"
        )


def read_columns(
    dataset: str, path: Path, expected: Sequence[str], optional: Sequence[str] = ()
) -> pa.Table:
    """Read the ``expected`` columns (all required) plus those of ``optional`` present."""
    names = column_names(path)
    check_columns(dataset, path, names, expected)
    wanted = list(expected) + [c for c in optional if c in names and c not in expected]
    return read_table(path, columns=wanted)


def as_strings(col: pa.ChunkedArray | pa.Array, strip: bool = False) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    return pc.utf8_trim_whitespace(col) if strip else col


def recode(
    dataset: str,
    path: Path,
    table: pa.Table,
    column: str,
    mapping: dict[str, int],
    *,
    strip: bool = True,
    lower: bool = False,
) -> np.ndarray:
    """(N,) int64 codes of a text column through ``mapping`` (source value -> code).

    Values are compared after trimming whitespace (``strip``) and, with ``lower``,
    in lower case (the keys of ``mapping`` must then be lower case). A missing or
    unknown value raises DataError listing the expected values.
    """
    col = as_strings(table.column(column), strip=strip)
    if lower:
        col = pc.utf8_lower(col)
    keys = list(mapping)
    idx = pc.index_in(col, value_set=pa.array(keys, pa.string()))
    if idx.null_count:
        bad = col.filter(idx.is_null())
        unknown = pc.unique(bad).to_pylist()[:5]
        raise DataError(
            f"{dataset}: {path}: column {column!r}: expected one of {keys}, received "
            f"{unknown} in {len(bad)} row(s)"
        )
    codes = np.asarray([mapping[k] for k in keys], dtype=np.int64)
    return codes[idx.to_numpy(zero_copy_only=False).astype(np.int64)]


# --------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------


def split3(
    d: ExperimentData, fractions: Sequence[float], seed: int
) -> tuple[ExperimentData, ExperimentData, ExperimentData]:
    """Seeded (train, valid, test), stratified by arm."""
    if len(fractions) != 3:
        raise ValueError(f"fractions must have 3 entries (train, valid, test), got {fractions}")
    tr, va, te = split_indices(d.arm, fractions, seed=seed)
    return d.take(tr), d.take(va), d.take(te)


def split2(
    d: ExperimentData, fractions: Sequence[float], seed: int
) -> tuple[ExperimentData, ExperimentData]:
    """Seeded (train, valid), stratified by arm."""
    if len(fractions) != 2:
        raise ValueError(f"fractions must have 2 entries (train, valid), got {fractions}")
    tr, va = split_indices(d.arm, fractions, seed=seed)
    return d.take(tr), d.take(va)


def replication_seed(seed: int, replication: int) -> int:
    """A distinct, reproducible split seed per replication."""
    return int(np.random.SeedSequence([seed, replication]).generate_state(1)[0])
