"""Uncertainty-aware switching: intervals of phi from the model's own spread.

An uplift model gives one point estimate of delta per user; switching a treatment on
when phi^k > sigma ignores how sure it is. Given M *members* (estimates of delta that
differ only by the randomness of the fit), the spread of phi^k = sum_r w_r delta_r^k
across members is the model's own uncertainty:

* ``branches``: HUM with several branches per treatment (``HUMConfig.
  branches_per_treatment`` = M): member j is branch j of every treatment with its own
  control (``hmum.workflows.ddm.branch_member_deltas``), free with one fit;
* ``seeds``: M fits that differ only in the seed;
* ``bootstrap``: M fits on bootstrap resamples of the training rows (seeds too);
* ``crossfit``: one fit with M cross-fit members (``TrainerConfig.crossfit`` = M,
  ``hmum.models.crossfit``), member j trained on its own 1/M of the rows, read
  unshrunk (``branch_member_deltas``): the members differ by the data they saw, as a
  model's error does; measured closest to nominal, though each member is a 1/M-data
  fit, so its spread over-covers where noise dominates (docs/decisions.md).

``phi_interval`` treats the true phi as one more draw from the members' distribution:
center = member mean, half-width = t_{M-1, (1+level)/2} * sd * sqrt(1 + 1/M) (a
prediction interval; ``method="normal"`` uses z * sd). That is calibrated only if
the members' spread is as large as the model's error, which no part of the fit
guarantees (members share the data and the model's bias): ``coverage`` measures it
on simulated ground truth, and ``benchmarks/bench_decisions.py`` reports it per
source. ``DecisionRule.bound`` records the level and source; the rule then switches
k on where the lower bound clears sigma_k (``DecisionRule.decide(score=lo)``).

Shapes: member_delta (M, N, K, R), w (N, R), phi / sd / lo / hi (N, K), truth (N, K).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

METHODS = ("t", "normal")
SOURCES = ("branches", "seeds", "bootstrap", "crossfit")


def _t_quantile(p: float, df: int) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(p, df))


def phi_interval(member_delta: np.ndarray, w: np.ndarray, *, level: float = 0.9,
                 method: str = "t", bonus: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{"phi", "sd", "lo", "hi"} (N, K) from member deltas (M, N, K, R) and w (N, R).

    phi_m = einsum(delta_m, w + bonus) per member; phi = mean over members, sd their
    standard deviation (ddof 1), [lo, hi] = phi -/+ q * sd * sqrt(1 + 1/M) with q the
    t quantile (M - 1 degrees of freedom) or, with ``method="normal"``, z * sd.
    ``bonus`` (R,): a rule's guardrail multipliers (default 0).
    """
    d = np.asarray(member_delta, dtype=np.float64)
    if d.ndim != 4 or d.shape[0] < 2:
        raise ValueError(f"member_delta must have shape (M, N, K, R) with M >= 2 members, got "
                         f"{d.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (d.shape[1], d.shape[3]):
        raise ValueError(f"w must have shape (N, R) = {(d.shape[1], d.shape[3])}, got {w.shape}")
    wb = w + (0.0 if bonus is None else np.asarray(bonus, dtype=np.float64)[None, :])
    phis = np.einsum("mnkr,nr->mnk", d, wb)
    m = d.shape[0]
    phi, sd = phis.mean(axis=0), phis.std(axis=0, ddof=1)
    p = (1 + level) / 2
    if method == "t":
        half = _t_quantile(p, m - 1) * sd * np.sqrt(1 + 1 / m)
    else:
        half = NormalDist().inv_cdf(p) * sd
    return {"phi": phi, "sd": sd, "lo": phi - half, "hi": phi + half}


def coverage(lo: np.ndarray, hi: np.ndarray, truth: np.ndarray) -> float:
    """Share of entries with lo <= truth <= hi (all arrays the same shape)."""
    lo, hi, truth = (np.asarray(a, dtype=np.float64) for a in (lo, hi, truth))
    if not lo.shape == hi.shape == truth.shape:
        raise ValueError(f"lo, hi and truth must have one shape, got {lo.shape}, {hi.shape}, "
                         f"{truth.shape}")
    return float(((lo <= truth) & (truth <= hi)).mean())


def bootstrap_rows(n: int, m: int, seed: int = 0) -> list[np.ndarray]:
    """m seeded bootstrap resamples (each (n,) row indices, with replacement) of n rows."""
    rng = np.random.default_rng(seed)
    return [np.sort(rng.integers(0, n, n)) for _ in range(m)]
