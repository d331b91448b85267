"""Level diagnostics: is a model's mean prediction on each arm's rows the observed mean?

A model can rank users well and still be off in level (its mean prediction for an
arm is a few percent above or below what that arm's rows show); with
multiplicative effects the level error becomes user-dependent uplift error. On
the rows that received arm a, the model's mean of y_hat[:, a] should match the
observed mean of y up to sampling error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: a gap beyond this many standard errors of the observed mean is flagged
Z_FLAG = 3.0


def level_table(
    y: np.ndarray,
    arm: np.ndarray,
    y_hat: np.ndarray,
    *,
    arm_names: Sequence[str] | None = None,
    response_names: Sequence[str] | None = None,
    z: float = Z_FLAG,
) -> pd.DataFrame:
    """Mean prediction against observed mean, per (arm, response), on the arm's own rows.

    Args:
        y: (N, R) observed responses.
        arm: (N,) int arm of each row in [0, K] (0 = control).
        y_hat: (N, K+1, R) predicted outcome of every arm.
        arm_names / response_names: labels (default "0".."K", "0".."R-1").
        z: flag a gap larger than ``z`` standard errors of the observed mean.

    Returns:
        (K+1) * R rows, arm-major: arm, response, n (rows of the arm),
        observed_mean, observed_se (sd with ddof 1 / sqrt(n); NaN for n < 2),
        predicted_mean (mean of y_hat[:, a, r] over the arm's rows), gap
        (predicted - observed), relative_gap (gap / observed mean; NaN at 0),
        gap_se (gap / observed_se) and flagged (|gap| > z * observed_se).
        The observed mean's SE is the conservative yardstick: the SE of the mean
        residual is smaller when the model explains part of the variance.
    """
    y = np.asarray(y, dtype=np.float64)
    arm = np.asarray(arm)
    y_hat = np.asarray(y_hat, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"y must be 2-D (N, R), got shape {y.shape}")
    n, r_count = y.shape
    if arm.shape != (n,):
        raise ValueError(f"arm must have shape ({n},) like y's rows, got {arm.shape}")
    if y_hat.ndim != 3 or y_hat.shape[0] != n or y_hat.shape[2] != r_count:
        raise ValueError(f"y_hat must have shape ({n}, K+1, {r_count}), got {y_hat.shape}")
    k1 = y_hat.shape[1]
    if arm.dtype.kind not in "iu" or (n and (arm.min() < 0 or arm.max() >= k1)):
        raise ValueError(f"arm must hold integers in [0, {k1 - 1}] (y_hat has {k1} arms)")
    arm_names = [str(a) for a in (arm_names if arm_names is not None else range(k1))]
    response_names = [str(r) for r in (response_names if response_names is not None
                                       else range(r_count))]
    if len(arm_names) != k1 or len(response_names) != r_count:
        raise ValueError(f"expected {k1} arm names and {r_count} response names, got "
                         f"{len(arm_names)} and {len(response_names)}")
    rows = []
    for a in range(k1):
        mask = arm == a
        m = int(mask.sum())
        ya, pa_ = y[mask], y_hat[mask, a]
        for r in range(r_count):
            obs = ya[:, r].mean() if m else np.nan
            se = ya[:, r].std(ddof=1) / np.sqrt(m) if m > 1 else np.nan
            pred = pa_[:, r].mean() if m else np.nan
            gap = pred - obs
            rows.append({
                "arm": arm_names[a], "response": response_names[r], "n": m,
                "observed_mean": obs, "observed_se": se, "predicted_mean": pred, "gap": gap,
                "relative_gap": gap / obs if m and obs != 0 else np.nan,
                "gap_se": gap / se if m > 1 and se > 0 else np.nan,
                "flagged": bool(m > 1 and abs(gap) > z * se),
            })
    return pd.DataFrame(rows)
