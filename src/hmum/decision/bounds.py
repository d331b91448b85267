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

Served (``hmum score`` with a bound rule, ``hmum serve``): ``pack_spread`` keeps per user
the members' mean delta and the R x R covariance of their delta per treatment, which give
phi's mean and sd for any request's weights exactly (``spread_interval``), in S floats
instead of M * K * R.

Shapes: member_delta (M, N, K, R), w (N, R), phi / sd / lo / hi (N, K), truth (N, K),
spread (N, S) with S = ``spread_width(K, R)`` = K R + K R (R + 1) / 2.
"""

from __future__ import annotations

import functools
from statistics import NormalDist

import numpy as np

METHODS = ("t", "normal")
SOURCES = ("branches", "seeds", "bootstrap", "crossfit")
#: the sources one fitted model provides by itself (what scoring and serving can use)
MODEL_SOURCES = ("branches", "crossfit")


@functools.lru_cache(maxsize=64)
def _t_quantile(p: float, df: int) -> float:
    # cached: scipy's ppf costs ~120 us, most of a served decision's time
    from scipy.stats import t as student_t

    return float(student_t.ppf(p, df))


@functools.lru_cache(maxsize=16)
def _pairs(r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, weight) of the upper triangle i <= j of an R x R matrix, row-major; weight
    2 off the diagonal, so b' C b = sum(weight * C_ij * b_i * b_j)."""
    i, j = np.triu_indices(r)
    return i, j, np.where(i == j, 1.0, 2.0)


def spread_width(k: int, r: int) -> int:
    """Floats of one user's packed spread (``pack_spread``): K * R member means and the
    K * R * (R + 1) / 2 upper-triangle entries of the members' R x R covariances."""
    return k * r + k * r * (r + 1) // 2


def pack_spread(member_delta: np.ndarray) -> np.ndarray:
    """spread (N, S) float64 from member_delta (M, N, K, R), S = ``spread_width(K, R)``.

    Per user: the member mean of delta (K, R), row-major, then for each k the upper
    triangle (i <= j, row-major) of the covariance over members of delta^k (ddof 1).
    Everything ``phi_interval`` needs for *any* weights, in far fewer floats than the
    members (S = 10 for K = R = 2, against 4 M), so a store can hold it per user and a
    service can weigh it with each request's w.
    """
    d = np.asarray(member_delta, dtype=np.float64)
    if d.ndim != 4 or d.shape[0] < 2:
        raise ValueError(f"member_delta must have shape (M, N, K, R) with M >= 2 members, got "
                         f"{d.shape}")
    _, n, k, r = d.shape
    mean = d.mean(axis=0)
    dev = d - mean[None]
    cov = np.einsum("mnki,mnkj->nkij", dev, dev) / (d.shape[0] - 1)
    i, j, _ = _pairs(r)
    return np.concatenate([mean.reshape(n, k * r), cov[:, :, i, j].reshape(n, -1)], axis=1)


def phi_interval(member_delta: np.ndarray, w: np.ndarray, *, level: float = 0.9,
                 method: str = "t", bonus: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{"phi", "sd", "lo", "hi"} (N, K) from member deltas (M, N, K, R) and w (N, R).

    phi_m = einsum(delta_m, w + bonus) per member; phi = mean over members, sd their
    standard deviation (ddof 1), [lo, hi] = phi -/+ q * sd * sqrt(1 + 1/M) with q the
    t quantile (M - 1 degrees of freedom) or, with ``method="normal"``, z * sd.
    ``bonus`` (R,): a rule's guardrail multipliers (default 0). The same numbers as
    ``spread_interval(pack_spread(member_delta), M, ...)``, which computes them.
    """
    d = np.asarray(member_delta)
    spread = pack_spread(d)
    return spread_interval(spread, d.shape[0], w, k=d.shape[2], level=level, method=method,
                           bonus=bonus)


def spread_interval(spread: np.ndarray, members: int, w: np.ndarray, *, k: int,
                    level: float = 0.9, method: str = "t",
                    bonus: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``phi_interval`` from a packed spread (N, S) of ``members`` = M members, w (N, R).

    With b = w + bonus: phi = b . mean^k and sd^2 = b' cov^k b, which is the variance
    (ddof 1) of the members' phi_m. K = ``k``; R is w's width.
    """
    if not isinstance(members, int | np.integer) or members < 2:
        raise ValueError(f"members must be an integer >= 2, got {members!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if np.ndim(spread) != 2:
        raise ValueError(f"spread must have shape (N, S), got {np.shape(spread)}")
    n, width = np.shape(spread)
    r = next((r for r in range(1, width + 1) if spread_width(k, r) == width), None)
    if r is None:
        raise ValueError(f"spread of width {width} fits no R for K = {k}")
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (n, r):
        raise ValueError(f"w must have shape (N, R) = {(n, r)}, got {w.shape}")
    sp = np.asarray(spread, dtype=np.float64)
    wb = w + (0.0 if bonus is None else np.asarray(bonus, dtype=np.float64)[None, :])
    # the packed layout read in place (no (N, K, R, R) matrix): phi = mean . b and
    # sd^2 = sum over i <= j of weight_ij C_ij b_i b_j
    phi = (sp[:, :k * r].reshape(n, k, r) * wb[:, None, :]).sum(axis=2)
    i, j, wt = _pairs(r)
    var = (sp[:, k * r:].reshape(n, k, -1) * (wt * wb[:, i] * wb[:, j])[:, None, :]).sum(axis=2)
    # rounding can leave a tiny negative variance where the members agree
    sd = np.sqrt(np.maximum(var, 0.0))
    p = (1 + level) / 2
    if method == "t":
        half = _t_quantile(p, int(members) - 1) * sd * np.sqrt(1 + 1 / members)
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
