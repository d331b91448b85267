"""Per (treatment, response) tables and ground-truth errors for K treatments and R responses.

Shapes (see DESIGN.md): ``y`` (N, R) observed responses, ``arm`` (N,) in [0, K]
with arm 0 the control, ``tau_hat`` / ``tau_true`` (N, K, R) uplift of treatment k
(column k-1) over control.

Treatment k is evaluated on the rows with arm 0 or arm k, with the model's uplift
for k as the score; labels of a continuous response are min-max normalized over
exactly those rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._engine import num_threads
from ._validation import KINDS, check_bool, check_finite, resolve_kind
from .ranking import _labels, evaluate, perfect_areas

__all__ = ["uplift_table", "ground_truth_table", "pehe", "ate_error"]


def _as_y(y) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must be numeric, got dtype {y.dtype}")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"y must have shape (N, R) (or (N,) for R = 1), got shape {y.shape}")
    if y.shape[0] == 0:
        raise ValueError("y is empty: need rows of the control and of every treatment")
    check_finite("y", y)
    return y


def _as_tau(name: str, tau, n: int, r: int) -> np.ndarray:
    tau = np.asarray(tau)
    if tau.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {tau.dtype}")
    if r == 1 and tau.ndim in (1, 2):
        # one response: (N,) is one treatment, (N, K) is K treatments
        tau = tau.reshape(tau.shape[0], -1, 1)
    if tau.ndim != 3:
        raise ValueError(f"{name} must have shape (N, K, R) = ({n}, K, {r}), got shape {tau.shape}")
    if tau.shape[0] != n:
        raise ValueError(f"y has {n} rows but {name} has {tau.shape[0]}")
    if tau.shape[2] != r:
        raise ValueError(f"y has {r} responses but {name} has {tau.shape[2]} (shape {tau.shape})")
    if tau.shape[1] == 0:
        raise ValueError(f"{name} has no treatments (shape {tau.shape})")
    check_finite(name, tau)
    return tau


def _as_arm(arm, n: int, k: int) -> np.ndarray:
    arm = np.asarray(arm)
    if arm.ndim != 1:
        raise ValueError(f"arm must be 1-D with shape (N,), got shape {arm.shape}")
    if arm.shape[0] != n:
        raise ValueError(f"y has {n} rows but arm has {arm.shape[0]}")
    if arm.dtype.kind == "f":
        check_finite("arm", arm)
        if not (arm == np.round(arm)).all():
            raise ValueError("arm must hold whole numbers (arm 0 is control, 1..K treatments)")
    elif arm.dtype.kind not in "biu":
        raise TypeError(f"arm must be integer, got dtype {arm.dtype}")
    arm = arm.astype(np.int64)
    outside = (arm < 0) | (arm > k)
    if outside.any():
        shown = ", ".join(str(v) for v in np.unique(arm[outside])[:5])
        raise ValueError(f"arm must be in [0, {k}] (K = {k} treatments), got: {shown}")
    counts = np.bincount(arm, minlength=k + 1)
    if counts[0] == 0:
        raise ValueError("arm: no control rows (arm == 0)")
    empty = np.flatnonzero(counts[1:] == 0) + 1
    if empty.size:
        raise ValueError(f"arm: treatment {int(empty[0])} has no rows (arm == {int(empty[0])})")
    return arm


def _names(name: str, names, count: int, default) -> list:
    if names is None:
        return list(default)
    names = list(names)
    if len(names) != count:
        raise ValueError(f"{name} must have {count} entries, got {len(names)}")
    return names


def _kinds(kind, y: np.ndarray, response_names: list) -> list[str]:
    r = y.shape[1]
    kinds = [kind] * r if isinstance(kind, str) else list(kind)
    if len(kinds) != r:
        raise ValueError(f"kind must be one of {KINDS} or a sequence of {r} of them, got {kind!r}")
    return [
        resolve_kind(y[:, j], kinds[j], name=f"y[:, {j}] ({response_names[j]!r})") for j in range(r)
    ]


def _cells(
    y,
    taus: dict[str, np.ndarray],
    arm,
    kinds,
    negative_effect,
    treatment_names,
    response_names,
    n_boot,
    alpha,
    seed,
):
    """Yield one dict per (treatment, response) with the scores of each score array."""
    from .bootstrap import _fast_bootstrap  # bootstrap imports ranking; keep it lazy

    k_count = next(iter(taus.values())).shape[1]
    for k in range(1, k_count + 1):
        rows = np.flatnonzero((arm == 0) | (arm == k))
        t = arm[rows] == k
        n_t = int(np.count_nonzero(t))
        for j, kind in enumerate(kinds):
            cell = {"treatment": treatment_names[k - 1], "response": response_names[j]}
            where = f"treatment {treatment_names[k - 1]!r}, response {response_names[j]!r}"
            y_rows = y[rows, j]
            try:
                labels = _labels(y_rows, t, kind)
                # the perfect curves depend on the labels only: once per cell
                best = perfect_areas(labels, ("qini", "uplift"), negative_effect, num_threads())
                for prefix, tau in taus.items():
                    score = tau[rows, k - 1, j]
                    got = evaluate(score, labels, negative_effect=negative_effect, best=best)
                    cell[f"{prefix}qini"] = got["qini"]
                    cell[f"{prefix}auuc"] = got["auuc"]
                    if n_boot:
                        ci = _fast_bootstrap(
                            y_rows,
                            score,
                            t,
                            kind,
                            ("qini", "auuc"),
                            negative_effect,
                            n_boot=n_boot,
                            alpha=alpha,
                            seed=seed,
                            stratify=True,
                        )
                        for m in ("qini", "auuc"):
                            cell[f"{prefix}{m}_low"] = ci[m].low
                            cell[f"{prefix}{m}_high"] = ci[m].high
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
            cell["kind"] = kind
            cell["n_control"] = rows.size - n_t
            cell["n_treated"] = n_t
            yield cell


def uplift_table(
    y,
    tau_hat,
    arm,
    *,
    kind: str | Sequence[str] = "auto",
    negative_effect: bool = True,
    response_names: Sequence | None = None,
    treatment_names: Sequence | None = None,
    n_boot: int = 0,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Normalized Qini and AUUC of every (treatment, response) cell.

    Treatment k is evaluated on the rows with ``arm`` 0 or k, ranked by
    ``tau_hat[:, k-1, r]``; see :mod:`hmum.metrics.ranking` for the definitions.

    Args:
        y: (N, R) observed responses ((N,) when R = 1).
        tau_hat: (N, K, R) predicted uplift ((N, K) or (N,) when R = 1).
        arm: (N,) arm of each row, 0 = control, 1..K = treatments.
        kind: 'auto', 'binary', 'continuous' or 'count' (evaluated as continuous), or
            one per response (e.g. the schema's response kinds); 'auto' is decided per
            response on the whole column (binary when every value is 0 or 1).
        negative_effect: passed to the Qini score.
        response_names: R names (default 0..R-1).
        treatment_names: K names (default 1..K, the arm numbers).
        n_boot: if > 0, add percentile bootstrap intervals (``qini_low``, ``qini_high``,
            ``auuc_low``, ``auuc_high``) from this many resamples, stratified by arm.
        alpha: the intervals cover 1 - alpha.
        seed: seed of the bootstrap.

    Returns:
        A DataFrame with one row per (treatment, response), K * R rows, columns
        treatment, response, qini, auuc, kind, n_control, n_treated (and the
        interval columns when ``n_boot`` > 0).
    """
    negative_effect = check_bool("negative_effect", negative_effect)
    y = _as_y(y)
    tau_hat = _as_tau("tau_hat", tau_hat, y.shape[0], y.shape[1])
    arm = _as_arm(arm, y.shape[0], tau_hat.shape[1])
    response_names = _names("response_names", response_names, y.shape[1], range(y.shape[1]))
    treatment_names = _names(
        "treatment_names", treatment_names, tau_hat.shape[1], range(1, tau_hat.shape[1] + 1)
    )
    kinds = _kinds(kind, y, response_names)
    cells = _cells(
        y,
        {"": tau_hat},
        arm,
        kinds,
        negative_effect,
        treatment_names,
        response_names,
        n_boot,
        alpha,
        seed,
    )
    return pd.DataFrame(list(cells))


def pehe(tau_true, tau_hat) -> float | np.ndarray:
    """Precision in estimating heterogeneous effects: ``sqrt(mean_n (tau_hat - tau_true)^2)``.

    Args:
        tau_true: (N, ...) true uplift, e.g. (N, K, R).
        tau_hat: the estimate, same shape.

    Returns:
        A float for (N,) inputs, else an array of shape ``tau_true.shape[1:]``, e.g. (K, R).
    """
    tau_true, tau_hat = _pair(tau_true, tau_hat)
    out = np.sqrt(np.mean(np.square(tau_hat - tau_true), axis=0))
    return float(out) if out.ndim == 0 else out


def ate_error(tau_true, tau_hat) -> float | np.ndarray:
    """Absolute error of the average effect: ``|mean_n tau_hat - mean_n tau_true|``.

    Args:
        tau_true: (N, ...) true uplift, e.g. (N, K, R).
        tau_hat: the estimate, same shape.

    Returns:
        A float for (N,) inputs, else an array of shape ``tau_true.shape[1:]``.
    """
    tau_true, tau_hat = _pair(tau_true, tau_hat)
    out = np.abs(np.mean(tau_hat, axis=0) - np.mean(tau_true, axis=0))
    return float(out) if out.ndim == 0 else out


def _pair(tau_true, tau_hat) -> tuple[np.ndarray, np.ndarray]:
    tau_true = np.asarray(tau_true, dtype=np.float64)
    tau_hat = np.asarray(tau_hat, dtype=np.float64)
    if tau_true.shape != tau_hat.shape:
        raise ValueError(
            f"tau_true has shape {tau_true.shape} but tau_hat has shape {tau_hat.shape}"
        )
    if tau_true.ndim == 0 or tau_true.shape[0] == 0:
        raise ValueError(f"tau_true must have at least one row, got shape {tau_true.shape}")
    check_finite("tau_true", tau_true)
    check_finite("tau_hat", tau_hat)
    return tau_true, tau_hat


def ground_truth_table(
    y,
    tau_true,
    tau_hat,
    arm,
    *,
    kind: str | Sequence[str] = "auto",
    negative_effect: bool = True,
    response_names: Sequence | None = None,
    treatment_names: Sequence | None = None,
) -> pd.DataFrame:
    """Errors against the true uplift of simulated data, per (treatment, response).

    PEHE and ATE error use all N rows (the true uplift is known for every row); the
    Qini and AUUC scores use the rows with arm 0 or k, as in :func:`uplift_table`.
    ``oracle_qini`` / ``oracle_auuc`` rank by the true uplift: the best any model of
    the features can expect to do on these observed outcomes (the perfect ranking,
    which scores 1, uses the outcomes themselves).

    Args:
        y: (N, R) observed responses ((N,) when R = 1).
        tau_true: (N, K, R) true uplift.
        tau_hat: (N, K, R) predicted uplift.
        arm: (N,) arm of each row, 0 = control.
        kind, negative_effect, response_names, treatment_names: as in :func:`uplift_table`.

    Returns:
        A DataFrame with K * R rows and columns treatment, response, pehe, ate_error,
        qini, oracle_qini, auuc, oracle_auuc, kind, n_control, n_treated.
    """
    negative_effect = check_bool("negative_effect", negative_effect)
    y = _as_y(y)
    tau_hat = _as_tau("tau_hat", tau_hat, y.shape[0], y.shape[1])
    tau_true = _as_tau("tau_true", tau_true, y.shape[0], y.shape[1])
    if tau_true.shape != tau_hat.shape:
        raise ValueError(
            f"tau_true has shape {tau_true.shape} but tau_hat has shape {tau_hat.shape}"
        )
    arm = _as_arm(arm, y.shape[0], tau_hat.shape[1])
    response_names = _names("response_names", response_names, y.shape[1], range(y.shape[1]))
    treatment_names = _names(
        "treatment_names", treatment_names, tau_hat.shape[1], range(1, tau_hat.shape[1] + 1)
    )
    kinds = _kinds(kind, y, response_names)
    errors_p = pehe(tau_true, tau_hat)
    errors_a = ate_error(tau_true, tau_hat)
    cells = list(
        _cells(
            y,
            {"": tau_hat, "oracle_": tau_true},
            arm,
            kinds,
            negative_effect,
            treatment_names,
            response_names,
            0,
            0.05,
            0,
        )
    )
    for cell, (k, j) in zip(
        cells, ((k, j) for k in range(tau_hat.shape[1]) for j in range(y.shape[1])), strict=True
    ):
        cell["pehe"] = float(errors_p[k, j])
        cell["ate_error"] = float(errors_a[k, j])
    columns = [
        "treatment",
        "response",
        "pehe",
        "ate_error",
        "qini",
        "oracle_qini",
        "auuc",
        "oracle_auuc",
        "kind",
        "n_control",
        "n_treated",
    ]
    return pd.DataFrame(cells)[columns]
