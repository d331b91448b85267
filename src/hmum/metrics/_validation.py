"""Input checks shared by the metric functions (private).

Every message names the parameter, what was expected and what was received, so a
user can fix the call without reading the source.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Kind = Literal["binary", "continuous"]
KINDS = ("auto", "binary", "continuous", "count")


def as_1d(name: str, a, *, n: int | None = None, other: str = "y") -> np.ndarray:
    """Return ``a`` as a numeric 1-D array of shape (N,), or raise a clear error."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric (bool, int or float), got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with shape (N,), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{other} has {n} rows but {name} has {arr.shape[0]}")
    return arr


def check_finite(name: str, a: np.ndarray) -> None:
    """Raise if a float array holds NaN or inf (ints and bools are always finite)."""
    if a.dtype.kind != "f":
        return
    flat = a.reshape(-1)
    # by chunks: no temporary of N (fresh memory is slow to touch on busy machines)
    for i in range(0, flat.shape[0], 1 << 16):
        if not np.isfinite(flat[i : i + (1 << 16)]).all():
            bad = flat.size - int(np.count_nonzero(np.isfinite(flat)))
            raise ValueError(f"{name} contains {bad} NaN/inf values")


def as_indicator(name: str, a: np.ndarray) -> np.ndarray:
    """A 0/1 array as bool, or raise naming the offending values."""
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind in "iu":
        # min/max are two cheap passes; no temporary of N elements
        ok = a.size == 0 or (a.min() >= 0 and a.max() <= 1)
    else:
        ok = bool(((a == 0) | (a == 1)).all())
    if not ok:
        bad = np.unique(a[(a != 0) & (a != 1)])
        shown = ", ".join(repr(v.item()) for v in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise ValueError(f"{name} must be a 0/1 indicator, got other values: {shown}")
    return a != 0


def check_arms(t: np.ndarray, name: str = "treatment") -> tuple[int, int]:
    """Counts of treated and control rows; both must be non-empty."""
    n_t = int(np.count_nonzero(t))
    n_c = t.size - n_t
    if n_c == 0:
        raise ValueError(f"{name}: no control rows ({name} == 0)")
    if n_t == 0:
        raise ValueError(f"{name}: no treated rows ({name} == 1)")
    return n_t, n_c


def two_arm_inputs(y, score, treatment) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the (y, score, treatment) triple of the two-arm functions.

    Returns y (N,), score (N,) and treatment as a bool array (N,).
    """
    y = as_1d("y", y)
    score = as_1d("score", score, n=y.shape[0])
    treatment = as_1d("treatment", treatment, n=y.shape[0])
    if y.shape[0] == 0:
        raise ValueError("y is empty: need at least one treated and one control row")
    check_finite("y", y)
    check_finite("score", score)
    t = as_indicator("treatment", treatment)
    check_arms(t)
    return y, score, t


def is_binary(y: np.ndarray) -> bool:
    """True when every label is 0 or 1."""
    if y.dtype == np.bool_:
        return True
    if y.dtype.kind in "iu":
        return bool(y.min() >= 0 and y.max() <= 1)
    # by chunks: continuous labels fail in the first one, without a pass over all rows
    for a in range(0, y.shape[0], 1 << 16):
        c = y[a : a + (1 << 16)]
        if not ((c == 0) | (c == 1)).all():
            return False
    return True


def resolve_kind(y: np.ndarray, kind: str, name: str = "y") -> Kind:
    """Turn ``kind`` into 'binary' or 'continuous'.

    'auto' means binary exactly when every label is 0 or 1; 'count' (the schema's
    name for count responses) is evaluated as 'continuous'.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    binary = is_binary(y)
    if kind == "binary" and not binary:
        shown = np.unique(y[(y != 0) & (y != 1)])[:5]
        raise ValueError(
            f"kind='binary' needs {name} in {{0, 1}}, got other values: "
            + ", ".join(repr(v.item()) for v in shown)
        )
    if kind == "auto":
        return "binary" if binary else "continuous"
    return "binary" if kind == "binary" else "continuous"


def check_not_constant(y: np.ndarray, name: str = "y") -> tuple[float, float]:
    """AUUC and Qini need two distinct labels: the perfect curve is flat otherwise.

    Returns (min y, max y).
    """
    lo, hi = y.min(), y.max()
    if lo == hi:
        raise ValueError(
            f"{name} is constant (every value is {lo.item()!r}): the perfect curve equals the "
            "random line, so normalized AUUC and Qini are undefined"
        )
    return float(lo), float(hi)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)
