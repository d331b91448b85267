"""Validation at the boundary: a pyarrow table plus a Schema -> checked arrays.

Every problem raises ``DataError`` with a message that names the column, what was
expected and what was received. No row is dropped silently: the only way rows
are removed is ``drop_invalid_responses=True``, and then their number is
reported in ``ExperimentData.n_dropped`` and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hmum.data.schema import ALL_TREATMENTS, Schema, ground_truth_column
from hmum.data.split import combine_digests, fingerprint_sums
from hmum.exceptions import DataError, option_name

log = logging.getLogger(__name__)


@dataclass
class ExperimentData:
    """Validated experiment rows.

    Attributes:
        features: table with the F feature columns (numeric ones as float64).
        arm: (N,) int64 in [0, K], or None when the arm was not required.
        y: (N, R) float64 observed responses, or None when not required.
        user_id: (N,) user ids, or None.
        mu: (N, K+1, R) true expected responses per arm (simulated data), or None.
        mu_all: (N, R) true expected responses under all treatments together, or None.
        propensity: (N,) probability of the received arm when logged, or None.
        n_dropped: rows removed by ``drop_invalid_responses``.
    """

    schema: Schema
    features: pa.Table
    arm: np.ndarray | None = None
    y: np.ndarray | None = None
    user_id: np.ndarray | None = None
    mu: np.ndarray | None = None
    mu_all: np.ndarray | None = None
    propensity: np.ndarray | None = None
    n_dropped: int = 0
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.features.num_rows

    @property
    def tau(self) -> np.ndarray | None:
        """(N, K, R) true absolute uplift, when ground truth is present."""
        return None if self.mu is None else self.mu[:, 1:] - self.mu[:, :1]

    def take(self, idx: np.ndarray) -> ExperimentData:
        """Rows ``idx`` (an index array) of every array, as a new ExperimentData."""
        def sub(a):
            return None if a is None else a[idx]

        return ExperimentData(
            schema=self.schema,
            features=self.features.take(pa.array(idx)),
            arm=sub(self.arm),
            y=sub(self.y),
            user_id=sub(self.user_id),
            mu=sub(self.mu),
            mu_all=sub(self.mu_all),
            propensity=sub(self.propensity),
            extra={k: v[idx] for k, v in self.extra.items()},
        )


def _is_numeric_type(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _first_rows(mask: np.ndarray, k: int = 5) -> list[int]:
    return np.flatnonzero(mask)[:k].tolist()


def numeric_column(col: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
    """A column as float64 (nulls -> NaN); strings must parse as numbers.

    Raises DataError naming the column and showing offending values.
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if _is_numeric_type(col.type) or pa.types.is_null(col.type):
        return col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        stripped = pc.utf8_trim_whitespace(col)
        # Empty strings count as missing; anything else must parse.
        empty = pc.equal(stripped, "")
        cleaned = pc.if_else(empty, pa.scalar(None, pa.string()), stripped)
        try:
            return cleaned.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            vals = cleaned.to_numpy(zero_copy_only=False)
            bad = []
            for i, v in enumerate(vals):
                if v is None:
                    continue
                try:
                    float(v)
                except ValueError:
                    bad.append((i, v))
                    if len(bad) == 3:
                        break
            raise DataError(
                f"column {name!r}: expected numeric values, received non-numeric "
                + ", ".join(f"{v!r} (row {i})" for i, v in bad)
            ) from None
    raise DataError(f"column {name!r}: expected a numeric column, received type {col.type}")


def _arm_column(col: pa.ChunkedArray, schema: Schema) -> np.ndarray:
    name = schema.arm_column
    col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if col.null_count:
        mask = col.is_null().to_numpy(zero_copy_only=False)
        raise DataError(
            f"column {name!r}: expected an arm in every row, received {col.null_count} "
            f"missing value(s) (rows {_first_rows(mask)})"
        )
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        idx = pc.index_in(col, value_set=pa.array(schema.arms))
        if idx.null_count:
            unknown = pc.unique(col.filter(idx.is_null())).to_pylist()[:5]
            raise DataError(
                f"column {name!r}: expected arm names {schema.arms}, received unknown "
                f"arm name(s) {unknown}"
            )
        return idx.to_numpy().astype(np.int64)
    a = numeric_column(col, name)
    bad = (a != np.round(a)) | (a < 0) | (a > schema.K)
    if bad.any():
        vals = np.unique(a[bad])[:5].tolist()
        raise DataError(
            f"column {name!r}: expected arm indices in [0, {schema.K}] (0 = control), "
            f"received {vals} in {int(bad.sum())} row(s) (rows {_first_rows(bad)})"
        )
    return a.astype(np.int64)


#: the largest response a model can hold: training runs in float32
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_response(y: np.ndarray, spec, name: str) -> None:
    if spec.kind == "count":
        frac = y != np.round(y)
        if frac.any():
            raise DataError(
                f"response {name!r}: expected whole numbers (kind 'count'), received "
                f"fractional values {np.unique(y[frac])[:5].tolist()} in {int(frac.sum())} "
                f"row(s) (rows {_first_rows(frac)}); declare it kind 'continuous' in the "
                "schema if fractions are meant"
            )
    if spec.kind == "binary":
        bad = (y != 0) & (y != 1)
        if bad.any():
            raise DataError(
                f"response {name!r}: expected binary values 0/1, received "
                f"{np.unique(y[bad])[:5].tolist()} in {int(bad.sum())} row(s)"
            )
    elif spec.kind == "count" or spec.nonnegative:
        bad = y < 0
        if bad.any():
            what = "a count" if spec.kind == "count" else "a non-negative value"
            raise DataError(
                f"response {name!r}: expected {what} (>= 0), received negative values "
                f"in {int(bad.sum())} row(s) (rows {_first_rows(bad)}); set "
                f"nonnegative=false in the schema for a signed continuous response"
            )


def validate_table(
    table: pa.Table,
    schema: Schema,
    *,
    require_arm: bool = True,
    require_responses: bool = True,
    require_all_arms: bool = True,
    drop_invalid_responses: bool = False,
    source: str = "data",
) -> ExperimentData:
    """Check ``table`` against ``schema`` and return its validated arrays.

    Args:
        table: N rows with (at least) the schema's columns.
        require_arm / require_responses: False for scoring data (features only).
        require_all_arms: every arm 0..K must have at least one row.
        drop_invalid_responses: drop rows whose response is NaN/inf, or beyond the
            float32 range (|y| > 3.4e38) models train in, instead of raising; the
            number dropped is returned in ``n_dropped`` and logged.

    Raises:
        DataError: naming the column, the expected and the received values.
    """
    names = table.column_names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{source}: duplicate column names {dup}; each name must be unique")
    needed = list(schema.feature_names)
    if require_arm:
        needed.append(schema.arm_column)
    if require_responses:
        needed += schema.response_names
    joint_truth = False
    if schema.ground_truth and require_responses:
        gt_cols = schema.ground_truth_columns()
        needed += [c for (a, _), c in gt_cols.items() if a != ALL_TREATMENTS]
        joint = [c for (a, _), c in gt_cols.items() if a == ALL_TREATMENTS]
        # partial ground truth: the per-arm truth without the "all treatments" columns is
        # accepted (mu_all None; the metrics that need it are skipped); some of them is not
        joint_truth = bool(joint) and any(c in names for c in joint)
        if joint_truth:
            needed += joint
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; the data has columns {names}")
    if table.num_rows == 0:
        raise DataError(f"{source}: the table is empty (0 rows)")

    n_dropped = 0
    y = None
    if require_responses:
        y = np.empty((table.num_rows, schema.R), dtype=np.float64)
        for r, spec in enumerate(schema.responses):
            y[:, r] = numeric_column(table.column(spec.name), spec.name)
        nonfinite = ~np.isfinite(y)
        # finite in float64 but inf once a model casts it to float32 (the loss turns NaN)
        huge = np.abs(np.where(nonfinite, 0.0, y)) > FLOAT32_MAX
        invalid = nonfinite | huge
        if invalid.any():
            bad_rows = invalid.any(axis=1)
            if not drop_invalid_responses:
                remedy = option_name("drop_invalid_responses", "drop_invalid_responses=True")
                if nonfinite.any():
                    cols = [schema.response_names[r]
                            for r in np.flatnonzero(nonfinite.any(axis=0))]
                    rows = nonfinite.any(axis=1)
                    raise DataError(
                        f"response column(s) {cols}: expected finite numbers, received NaN, "
                        f"inf or missing values in {int(rows.sum())} row(s) (rows "
                        f"{_first_rows(rows)}); pass {remedy} to drop them"
                    )
                cols = [schema.response_names[r] for r in np.flatnonzero(huge.any(axis=0))]
                rows = huge.any(axis=1)
                raise DataError(
                    f"response column(s) {cols}: expected |value| <= {FLOAT32_MAX:.4g} (the "
                    f"float32 range models train in), received values up to "
                    f"{np.abs(y[huge]).max():.4g} in {int(rows.sum())} row(s) (rows "
                    f"{_first_rows(rows)}); pass {remedy} to drop them"
                )
            keep = np.flatnonzero(~bad_rows)
            n_dropped = int(bad_rows.sum())
            log.warning("%s: dropped %d row(s) with NaN/inf or out-of-float32-range responses",
                        source, n_dropped)
            table = table.take(pa.array(keep))
            y = y[keep]
            if table.num_rows == 0:
                raise DataError(f"{source}: every row has a NaN/inf or out-of-range response")
        for r, spec in enumerate(schema.responses):
            _check_response(y[:, r], spec, spec.name)

    arm = None
    if require_arm:
        arm = _arm_column(table.column(schema.arm_column), schema)
        if require_all_arms:
            counts = np.bincount(arm, minlength=schema.K + 1)
            empty = [schema.arms[a] for a in np.flatnonzero(counts == 0)]
            if empty:
                raise DataError(
                    f"column {schema.arm_column!r}: every arm needs rows; arm(s) {empty} have "
                    f"none (rows per arm: {dict(zip(schema.arms, counts.tolist(), strict=True))})"
                )

    cols = {}
    for f in schema.features:
        col = table.column(f.name)
        if f.kind == "numeric":
            cols[f.name] = pa.array(numeric_column(col, f.name), type=pa.float64())
        else:
            cols[f.name] = col
    features = pa.table(cols)

    mu = mu_all = None
    if schema.ground_truth and require_responses:
        gt = schema.ground_truth_columns()
        mu = np.stack(
            [
                np.stack([numeric_column(table.column(gt[(a, r)]), gt[(a, r)])
                          for r in schema.response_names], axis=1)
                for a in schema.arms
            ],
            axis=1,
        )
        if joint_truth:
            mu_all = np.stack(
                [numeric_column(table.column(gt[(ALL_TREATMENTS, r)]), gt[(ALL_TREATMENTS, r)])
                 for r in schema.response_names],
                axis=1,
            )
        if not np.isfinite(mu).all() or (mu_all is not None and not np.isfinite(mu_all).all()):
            raise DataError(f"{source}: ground-truth columns contain NaN or inf")
        if schema.K > 1 and mu_all is None:
            log.info("%s: %s", source, PARTIAL_TRUTH_NOTE)

    user_id = None
    if schema.user_id and schema.user_id in names:
        user_id = table.column(schema.user_id).to_numpy()
    propensity = None
    if "propensity" in names:
        propensity = numeric_column(table.column("propensity"), "propensity")

    return ExperimentData(
        schema=schema,
        features=features,
        arm=arm,
        y=y,
        user_id=user_id,
        mu=mu,
        mu_all=mu_all,
        propensity=propensity,
        n_dropped=n_dropped,
    )


#: what is said when the per-arm truth is there but not the "all treatments" columns
_JOINT = ground_truth_column(ALL_TREATMENTS, "<response>")
PARTIAL_TRUTH_NOTE = (
    f"partial ground truth: the per-arm truth columns are present but not the "
    f"'{ALL_TREATMENTS}' ones (every treatment together, {_JOINT}); the metrics that need "
    f"them (the value of enabling several treatments at once, the oracle over arm sets) "
    f"are skipped"
)


def partial_truth(d: ExperimentData) -> bool:
    """True when ``d`` has per-arm ground truth (``mu``) and K > 1 but no ``mu_all``."""
    return d.mu is not None and d.schema.K > 1 and d.mu_all is None


def load_experiment(path, schema: Schema, **kwargs) -> ExperimentData:
    """Read a Parquet/CSV file (or folder) and validate it against ``schema``.

    Only the columns the schema needs are read; keyword arguments go to
    ``validate_table``.
    """
    from pathlib import Path

    from hmum.data.io import column_names, delimiter_hint, read_table

    names = column_names(path)
    hint = delimiter_hint(Path(path), names)
    missing = [c for c in schema.feature_names if c not in names]
    if hint and missing:  # one column holding the whole header: say why columns are missing
        raise DataError(f"{path}: missing column(s) {missing}{hint}")
    wanted = [c for c in schema.input_columns() if c in names]
    wanted += [c for c in schema.ground_truth_columns().values() if c in names]
    if "propensity" in names:
        wanted.append("propensity")
    # Absent required columns are reported by validate_table with the full list.
    table = read_table(path, columns=wanted)
    return validate_table(table, schema, source=str(path), **kwargs)


def check_fit_data(d: ExperimentData, schema: Schema, name: str) -> None:
    """Refuse data an estimator of ``schema`` cannot be fitted on.

    ``d`` must be ExperimentData with arms and responses, under a schema with the
    same arms and responses; ``name`` ("train", "valid") starts every message.
    """
    if not isinstance(d, ExperimentData):
        raise TypeError(f"{name}: expected ExperimentData (see hmum.data.load_experiment), "
                        f"got {type(d).__name__}")
    if d.arm is None or d.y is None:
        raise ValueError(f"{name}: training data needs the arm and the responses")
    if (d.schema.arms, d.schema.response_names) != (schema.arms, schema.response_names):
        raise ValueError(
            f"{name}: its schema (arms {d.schema.arms}, responses "
            f"{d.schema.response_names}) does not match the estimator's (arms "
            f"{schema.arms}, responses {schema.response_names})"
        )


# --------------------------------------------------------------------------------------
# Fingerprints: which table a model was split from (see hmum.data.split)
# --------------------------------------------------------------------------------------


def _digest(values) -> np.ndarray:
    """(N,) uint64 hash of each value of a column (numpy or pyarrow), vectorized.

    A value hashes the same whatever array it came in: an integral float (an int
    column with nulls reads as float) hashes as the integer, so a column read in
    chunks gives the same hashes as read whole.
    """
    from pandas.util import hash_array

    if isinstance(values, pa.ChunkedArray | pa.Array):
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        values = values.to_numpy(zero_copy_only=False)
    a = np.asarray(values)
    if a.dtype.kind in "iub":
        return hash_array(a.astype(np.int64), categorize=False)
    if a.dtype.kind != "f":
        return hash_array(a, categorize=False)
    a = a.astype(np.float64)
    with np.errstate(invalid="ignore"):
        integral = np.isfinite(a) & (a == np.round(a)) & (np.abs(a) < 2.0**63)
    as_int = hash_array(np.where(integral, a, 0.0).astype(np.int64), categorize=False)
    return np.where(integral, as_int, hash_array(a, categorize=False))


def row_digests(d: ExperimentData) -> tuple[str, np.ndarray]:
    """What identifies each row of ``d``, hashed: ("user_id", (N,) uint64 hashes of the
    user ids) when ``d`` has user ids, else ("rows", (N,) uint64 hashes of each row's
    features, arm and responses)."""
    if d.user_id is not None:
        return "user_id", _digest(d.user_id)
    cols = [_digest(d.features.column(name)) for name in d.schema.feature_names]
    if d.arm is not None:
        cols.append(_digest(d.arm))
    if d.y is not None:
        cols += [_digest(d.y[:, r]) for r in range(d.y.shape[1])]
    return "rows", combine_digests(cols)


def _fingerprint(rows: int, key: str, sums: np.ndarray) -> dict:
    return {"rows": int(rows), "key": key, "hash": f"{int(sums[0]):016x}{int(sums[1]):016x}"}


def data_fingerprint(d: ExperimentData) -> dict:
    """{"rows": N, "key": "user_id" | "rows", "hash": 32 hex digits} of the rows of
    ``d`` in their order: two tables get the same fingerprint only when they hold
    the same ids (or rows) in the same order. Cheap: vectorized hashes, one pass."""
    key, digests = row_digests(d)
    return _fingerprint(len(d), key, fingerprint_sums(digests, np.arange(len(d))))


def file_fingerprint(path, schema: Schema, *, batch_rows: int = 1_000_000) -> dict:
    """``data_fingerprint(load_experiment(path, schema))``, streamed in chunks of
    ``batch_rows`` rows (only the user id column is read when there is one)."""
    from hmum.data.io import column_names, iter_batches

    names = column_names(path)
    by_id = bool(schema.user_id) and schema.user_id in names
    cols = ([schema.user_id] if by_id else
            [*schema.feature_names, schema.arm_column, *schema.response_names])
    plain = schema.model_copy(update={"ground_truth": False, "user_id": None})
    sums, start = np.zeros(2, dtype=np.uint64), 0
    for t in iter_batches(path, columns=cols, batch_rows=batch_rows):
        if by_id:
            digests = _digest(t.column(schema.user_id))
        else:
            part = validate_table(t, plain, require_all_arms=False, source=str(path))
            digests = row_digests(part)[1]
        with np.errstate(over="ignore"):
            sums += fingerprint_sums(digests, np.arange(start, start + t.num_rows))
        start += t.num_rows
    return _fingerprint(start, "user_id" if by_id else "rows", sums)
