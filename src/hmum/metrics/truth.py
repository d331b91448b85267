"""Errors of estimated uplift against the ground truth of simulated data.

Pure functions of arrays. Shapes: N users, K treatments, R responses;
``mu`` / ``y_hat`` (N, K+1, R) true / estimated potential outcomes (arm 0 = control).

On simulated data the true uplift of every user is known, so these errors are
measured on a large *fresh* population (another seed of the simulator), never on
the few thousand rows of a test split, where no Qini can separate models at 1 %
effects. :func:`uplift_errors` gives, per (treatment, response):

* ``pehe``: sqrt(mean_n (tau_hat - tau)^2), the root mean squared uplift error;
* ``ate_bias``: mean_n tau_hat - mean_n tau (signed; ``ate_error`` = its absolute value);
* ``tau_corr``: Pearson correlation of tau_hat with tau (how well it ranks users);
* ``spread_ratio``: sd(tau_hat) / sd(tau) (1 = as spread as the truth);
* ``delta_rmse``: the RMSE of the *relative* uplift delta = y_k / y_0 - 1, what the
  decision layer consumes (``hmum.decision.core.relative_uplift``, y0 floored at ``y0_floor``);
* ``level_bias_0`` / ``level_bias_k``: the relative error of the mean predicted
  outcome under control / under treatment k, mean_n y_hat / mean_n mu - 1.

:func:`replicate_errors` repeats PEHE and the ATE bias under B Poisson bootstrap
weightings of the users; with the same ``seed`` the weights are the same for every
model, so replicate-wise differences between two models are *paired*.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from hmum.decision.core import Y0_FLOOR, relative_uplift

from .tables import pehe


def _check(mu, y_hat) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    y_hat = np.asarray(y_hat, dtype=np.float64)
    if mu.ndim != 3 or mu.shape != y_hat.shape or mu.shape[1] < 2 or mu.shape[0] < 2:
        raise ValueError(
            f"mu and y_hat must both have shape (N >= 2, K+1 >= 2, R), got {mu.shape} "
            f"and {y_hat.shape}"
        )
    for name, a in (("mu", mu), ("y_hat", y_hat)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or inf values")
    return mu, y_hat


def uplift_errors(
    mu,
    y_hat,
    *,
    treatment_names: Sequence | None = None,
    response_names: Sequence | None = None,
    y0_floor: float = Y0_FLOOR,
) -> pd.DataFrame:
    """Per (treatment, response) errors of y_hat's uplift against mu's (module docstring).

    Args:
        mu: (N, K+1, R) true expected outcomes per arm.
        y_hat: (N, K+1, R) estimates.
        treatment_names: K names (default 1..K); response_names: R names (default 0..R-1).

    Returns:
        K*R rows (treatment-major) with columns treatment, response, pehe, ate_bias,
        ate_error, tau_corr, spread_ratio, delta_rmse, level_bias_0, level_bias_k,
        true_ate, sd_tau.
    """
    mu, y_hat = _check(mu, y_hat)
    _, a, r = mu.shape
    k = a - 1
    tn = list(treatment_names) if treatment_names is not None else list(range(1, k + 1))
    rn = list(response_names) if response_names is not None else list(range(r))
    if len(tn) != k or len(rn) != r:
        raise ValueError(f"expected {k} treatment and {r} response names, got {tn} and {rn}")
    tau, tau_hat = mu[:, 1:] - mu[:, :1], y_hat[:, 1:] - y_hat[:, :1]
    err = tau_hat - tau
    sd, sd_hat = tau.std(0), tau_hat.std(0)
    cov = ((tau - tau.mean(0)) * (tau_hat - tau_hat.mean(0))).mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / (sd * sd_hat)
        spread = sd_hat / sd
    delta, delta_hat = relative_uplift(mu, y0_floor), relative_uplift(y_hat, y0_floor)
    errs = pehe(tau, tau_hat)  # (K, R)
    delta_errs = pehe(delta, delta_hat)
    level = y_hat.mean(0) / mu.mean(0) - 1  # (K+1, R)
    rows = []
    for i in range(k):
        for j in range(r):
            bias = float(err[:, i, j].mean())
            rows.append({
                "treatment": tn[i], "response": rn[j],
                "pehe": float(errs[i, j]),
                "ate_bias": bias, "ate_error": abs(bias),
                "tau_corr": float(corr[i, j]), "spread_ratio": float(spread[i, j]),
                "delta_rmse": float(delta_errs[i, j]),
                "level_bias_0": float(level[0, j]), "level_bias_k": float(level[i + 1, j]),
                "true_ate": float(tau[:, i, j].mean()), "sd_tau": float(sd[i, j]),
            })
    return pd.DataFrame(rows)


def replicate_errors(mu, y_hat, *, n_boot: int = 200, seed: int = 0,
                     chunk: int = 25) -> dict[str, np.ndarray]:
    """PEHE and ATE bias under ``n_boot`` Poisson(1) bootstrap weightings of the N users.

    Returns {"pehe": (n_boot, K, R), "ate_bias": (n_boot, K, R)}. The weights depend
    only on (N, n_boot, seed), so two models scored with the same seed on the same
    population share them: the replicate-wise difference is a paired bootstrap.
    """
    mu, y_hat = _check(mu, y_hat)
    n, a, r = mu.shape
    err = ((y_hat[:, 1:] - y_hat[:, :1]) - (mu[:, 1:] - mu[:, :1])).reshape(n, -1)
    rng = np.random.default_rng(seed)
    pehe, bias = [], []
    for start in range(0, n_boot, chunk):
        w = rng.poisson(1.0, size=(min(chunk, n_boot - start), n)).astype(np.float64)
        tot = w.sum(1, keepdims=True)
        pehe.append(np.sqrt((w @ err**2) / tot))
        bias.append((w @ err) / tot)
    shape = (n_boot, a - 1, r)
    return {"pehe": np.concatenate(pehe).reshape(shape),
            "ate_bias": np.concatenate(bias).reshape(shape)}


def paired_difference(
    model: Sequence[np.ndarray], reference: Sequence[np.ndarray], *, alpha: float = 0.05,
    n_draws: int = 2000, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean paired difference of a metric over seeds, with a hierarchical bootstrap interval.

    Args:
        model, reference: one array per seed, each (B, ...) of bootstrap replicates of
            the metric (``replicate_errors``; row 0 may be any replicate), the two
            scored on the same population with the same weights, so row b of one
            pairs with row b of the other.

    Returns:
        (mean, lo, hi), each of shape (...): the mean over seeds of the seed-wise
        difference of replicate means, and the ``1 - alpha`` percentile interval of
        a bootstrap that resamples seeds and, within each, a replicate (so it holds
        both the training-seed spread and the evaluation sampling error).
    """
    if len(model) != len(reference) or not model:
        raise ValueError(f"need the same number (>= 1) of seeds for both, got "
                         f"{len(model)} and {len(reference)}")
    diffs = [np.asarray(m) - np.asarray(r) for m, r in zip(model, reference, strict=True)]
    d = np.stack(diffs)  # (S, B, ...)
    s, b = d.shape[:2]
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, s, size=(n_draws, s))
    reps = rng.integers(0, b, size=(n_draws, s))
    draws = d[seeds, reps].mean(1)  # (n_draws, ...)
    mean = d.mean(1).mean(0)
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2], axis=0)
    return mean, lo, hi
