"""Offline policy evaluation: what a decision policy would do to each response.

Two settings:

* **Simulated data (ground truth known).** A policy's arm set per user maps to
  the user's true expected responses (``policies.truth_arm``). The A/B-test view
  of the paper's Tables 3 and 4 is the relative change of each response against
  everyone-in-control over the population:
  ``change_r = mean_n mu_r^{pi(n)} / mean_n mu_r^0 - 1``.
  The *value* of a policy is the population mean of the true balanced score of
  the arm set it picks: ``value = mean_n sum_r w_r(n) (mu_r^{pi(n)}(n) / mu_r^0(n) - 1)``
  (eq. 11 with true quantities), with the users' true value weights w (the
  simulator's latent weights) or, without them, equal weights 1/R. The oracle
  maximizes exactly this per user, so ``oracle_share = value / value(oracle)``
  is the share of the best achievable value a policy captures (1 = oracle,
  0 = nobody treated, < 0 = worse than doing nothing).

* **Randomized logs (no ground truth).** For a deterministic policy that gives
  user n a logged arm pi(n) in 0..K, with e(n) the probability that user n got
  the arm they received (the ``propensity`` column, else the empirical arm
  shares of a randomized experiment):

  - IPW (Horvitz-Thompson, unbiased): ``mean_n 1[a_n = pi(n)] y_n / e(n)``;
  - self-normalized IPW: the same sum divided by ``sum_n 1[a_n = pi(n)] / e(n)``;
  - doubly robust: ``mean_n y_hat_{pi(n)}(n) + 1[a_n = pi(n)] (y_n - y_hat_{a_n}(n)) / e(n)``
    with an outcome model's potential outcomes y_hat (N, K+1, R), e.g. HUM's.

  Confidence intervals are seeded percentile bootstraps over rows; the relative
  change against control uses the control policy's estimate on the same
  resample (so the interval covers the ratio, not two separate intervals).

Shapes: enable (N, K) bool; mu (N, K+1, R); mu_all (N, R); w_true (N, R);
y (N, R); arm (N,); propensity (N,); y_hat (N, K+1, R); policy_arm (N,).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hmum.decision.policies import arm_set_names, stack_truth, truth_arm

ESTIMATORS: tuple[str, ...] = ("ipw", "snipw", "dr")


# --------------------------------------------------------------------------------------
# ground truth (simulated data)
# --------------------------------------------------------------------------------------


def policy_truth(enable: np.ndarray, mu: np.ndarray, mu_all: np.ndarray | None = None):
    """True expected responses (N, R) of each user under the policy's arm set."""
    stacked = stack_truth(mu, mu_all)
    enable = np.asarray(enable)
    k = stacked.shape[1] - 1 - (mu_all is not None)
    if enable.ndim != 2 or enable.shape != (stacked.shape[0], k):
        raise ValueError(f"enable must have shape (N, K) = {(stacked.shape[0], k)} to match mu "
                         f"(N, K+1, R) = {np.shape(mu)}, got {enable.shape}")
    idx = truth_arm(enable)
    if idx.max(initial=0) >= stacked.shape[1]:
        raise ValueError("the policy enables every treatment at once but mu_all (the ground "
                         "truth of all treatments together) was not given")
    return stacked[np.arange(len(idx)), idx]


def ground_truth_effects(enable: np.ndarray, mu: np.ndarray, mu_all: np.ndarray | None = None,
                         *, w_true: np.ndarray | None = None) -> dict:
    """A policy's true population effects.

    Returns {"change": (R,) relative change of each response vs everyone in
    control, "value": float (module docstring), "arm_share": (A,) share of users
    per ground-truth arm set (none, t1..tK, all)}.
    """
    mu = np.asarray(mu, dtype=np.float64)
    out = policy_truth(enable, mu, mu_all)
    mu0 = mu[:, 0]
    change = out.mean(axis=0) / mu0.mean(axis=0) - 1.0
    w = _weights(w_true, mu0.shape)
    value = float(np.mean(np.sum(w * (out / mu0 - 1.0), axis=1)))
    a = mu.shape[1] + (1 if mu_all is not None else 0)
    share = np.bincount(truth_arm(enable), minlength=a)[:a] / max(len(out), 1)
    return {"change": change, "value": value, "arm_share": share}


def strategy_table(
    policies: Mapping[str, np.ndarray],
    mu: np.ndarray,
    mu_all: np.ndarray | None = None,
    *,
    w_true: np.ndarray | None = None,
    response_names: Sequence[str] | None = None,
    treatment_names: Sequence[str] | None = None,
    oracle: str | None = "oracle",
) -> pd.DataFrame:
    """One row per policy: arm-set shares, true relative change per response, value.

    policies: {name: enable (N, K)}. Columns: ``strategy``, ``share_<arm set>``
    (none, t1..tK, all), ``change_<response>`` (fraction: 0.01 = +1 %),
    ``value`` and, when ``oracle`` names one of the policies,
    ``oracle_share`` = value / value(oracle).
    """
    mu = np.asarray(mu, dtype=np.float64)
    n, k1, r = mu.shape
    resp = list(response_names or [f"y{i}" for i in range(r)])
    treat = list(treatment_names or [f"t{i}" for i in range(1, k1)])
    sets = arm_set_names(treat)[: k1 + (1 if mu_all is not None else 0)]
    rows = []
    for name, en in policies.items():
        res = ground_truth_effects(np.asarray(en), mu, mu_all, w_true=w_true)
        row = {"strategy": name}
        row.update({f"share_{s}": float(v) for s, v in zip(sets, res["arm_share"], strict=True)})
        row.update({f"change_{rn}": float(v) for rn, v in zip(resp, res["change"], strict=True)})
        row["value"] = res["value"]
        rows.append(row)
    table = pd.DataFrame(rows)
    if oracle is not None and oracle in policies:
        ov = float(table.loc[table.strategy == oracle, "value"].iloc[0])
        table["oracle_share"] = table["value"] / ov if ov > 0 else np.nan
    return table


def _weights(w_true, shape) -> np.ndarray:
    if w_true is None:
        return np.full(shape, 1.0 / shape[1])
    w = np.asarray(w_true, dtype=np.float64)
    if w.shape != shape:
        raise ValueError(f"w_true must have shape (N, R) = {shape}, got {w.shape}")
    return w


# --------------------------------------------------------------------------------------
# off-policy evaluation (randomized logs)
# --------------------------------------------------------------------------------------


def received_propensity(arm: np.ndarray, propensity: np.ndarray | None = None,
                        n_arms: int | None = None) -> np.ndarray:
    """e (N,): probability that each row received the arm it got.

    The logged ``propensity`` when given, else the arm's empirical share (a
    randomized experiment with constant shares). Raises ValueError on values
    outside (0, 1].
    """
    arm = np.asarray(arm)
    if propensity is not None:
        e = np.asarray(propensity, dtype=np.float64)
        if e.shape != arm.shape:
            raise ValueError(f"propensity must have shape (N,) = {arm.shape}, got {e.shape}")
        bad = ~np.isfinite(e) | (e <= 0) | (e > 1)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(f"propensity must lie in (0, 1]; rows {rows} hold "
                             f"{e[rows].tolist()}")
        return e
    counts = np.bincount(arm, minlength=n_arms or 0).astype(np.float64)
    return counts[arm] / len(arm)


def _check_logs(y, arm, policy_arm, y_hat=None):
    y = np.asarray(y, dtype=np.float64)
    arm = np.asarray(arm)
    pa_ = np.asarray(policy_arm)
    if y.ndim != 2:
        raise ValueError(f"y must have shape (N, R), got {y.shape}")
    n = y.shape[0]
    if arm.shape != (n,) or pa_.shape != (n,):
        raise ValueError(f"arm and policy_arm must have shape (N,) = ({n},), got {arm.shape} "
                         f"and {pa_.shape}")
    if y_hat is not None:
        y_hat = np.asarray(y_hat, dtype=np.float64)
        if y_hat.ndim != 3 or y_hat.shape[0] != n or y_hat.shape[2] != y.shape[1]:
            raise ValueError(f"y_hat must have shape (N, K+1, R) with N = {n}, R = {y.shape[1]}, "
                             f"got {y_hat.shape}")
        if max(arm.max(initial=0), pa_.max(initial=0)) >= y_hat.shape[1]:
            raise ValueError("arm / policy_arm index beyond y_hat's K+1 arms")
    return y, arm, pa_, y_hat


def ope_terms(y, arm, policy_arm, *, propensity=None, y_hat=None, method: str = "ipw"):
    """Per-row terms (num (N, R), den (N,)) with estimate = sum(num) / sum(den).

    ipw: num = 1[a = pi] y / e, den = 1; snipw: the same num, den = 1[a = pi] / e;
    dr: num = y_hat_pi + 1[a = pi] (y - y_hat_a) / e, den = 1.
    """
    if method not in ESTIMATORS:
        raise ValueError(f"method must be one of {ESTIMATORS}, got {method!r}")
    y, arm, pa_, y_hat = _check_logs(y, arm, policy_arm, y_hat)
    e = received_propensity(arm, propensity)
    match = (arm == pa_) / e  # (N,) importance weight
    if method == "dr":
        if y_hat is None:
            raise ValueError("the doubly-robust estimate needs an outcome model's y_hat "
                             "(N, K+1, R)")
        rows = np.arange(len(arm))
        num = y_hat[rows, pa_] + match[:, None] * (y - y_hat[rows, arm])
        return num, np.ones(len(arm))
    num = match[:, None] * y
    return num, (match if method == "snipw" else np.ones(len(arm)))


def ipw_estimate(y, arm, policy_arm, *, propensity=None, self_normalized: bool = False):
    """IPW estimate (R,) of the mean response under ``policy_arm`` (module docstring)."""
    num, den = ope_terms(y, arm, policy_arm, propensity=propensity,
                         method="snipw" if self_normalized else "ipw")
    return num.sum(axis=0) / den.sum()


def dr_estimate(y, arm, policy_arm, y_hat, *, propensity=None):
    """Doubly-robust estimate (R,) of the mean response under ``policy_arm``."""
    num, den = ope_terms(y, arm, policy_arm, propensity=propensity, y_hat=y_hat, method="dr")
    return num.sum(axis=0) / den.sum()


def bootstrap_sums(values: np.ndarray, *, n_boot: int = 500, seed: int = 0,
                   max_cells: int = 8_000_000) -> np.ndarray:
    """Column sums of ``values`` (N, Q) over ``n_boot`` row resamples: (n_boot, Q).

    Resamples are drawn as multinomial counts (one bincount for a chunk of
    replicates) and applied with one matrix product per chunk; chunks keep the
    (replicates, N) count matrix under ``max_cells`` entries. Seeded.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap zero rows")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, max_cells // n))
    out = np.empty((n_boot, values.shape[1]))
    for s in range(0, n_boot, chunk):
        b = min(chunk, n_boot - s)
        idx = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        out[s:s + b] = counts @ values
    return out


def off_policy_table(
    policies: Mapping[str, np.ndarray],
    y: np.ndarray,
    arm: np.ndarray,
    *,
    propensity: np.ndarray | None = None,
    y_hat: np.ndarray | None = None,
    methods: Sequence[str] | None = None,
    response_names: Sequence[str] | None = None,
    n_boot: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Estimated value and relative change vs control of every policy, with CIs.

    policies: {name: policy_arm (N,) in 0..K} (see ``policies.logged_arm``).
    methods: default ("ipw", "dr") with y_hat, ("ipw",) without.
    One row per (strategy, estimator); columns ``value_<r>``, ``value_<r>_lo``,
    ``value_<r>_hi``, ``change_<r>``, ``change_<r>_lo``, ``change_<r>_hi``
    (changes as fractions; intervals at level 1 - alpha, percentile bootstrap
    with ``n_boot`` seeded resamples shared by every policy and estimator).
    """
    y = np.asarray(y, dtype=np.float64)
    arm = np.asarray(arm)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    methods = list(methods or (("ipw", "dr") if y_hat is not None else ("ipw",)))
    resp = list(response_names or [f"y{i}" for i in range(y.shape[1])])
    names = list(policies)
    control = np.zeros(len(arm), dtype=np.int64)
    e = received_propensity(arm, propensity)
    blocks, layout = [], []  # every (method, policy) adds R numerator columns + 1 denominator
    for m in methods:
        for p_name, p_arm in [("__control__", control), *policies.items()]:
            num, den = ope_terms(y, arm, p_arm, propensity=e, y_hat=y_hat, method=m)
            blocks += [num, den[:, None]]
            layout.append((m, p_name))
    values = np.concatenate(blocks, axis=1)
    point = values.sum(axis=0)
    boot = bootstrap_sums(values, n_boot=n_boot, seed=seed)
    r = y.shape[1]

    def est(sums, i):  # (..., R) estimate of layout entry i
        c = i * (r + 1)
        return sums[..., c:c + r] / sums[..., c + r:c + r + 1]

    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    where = {key: i for i, key in enumerate(layout)}
    rows = []
    for p_name in names:
        for m in methods:
            i, ctrl_i = where[(m, p_name)], where[(m, "__control__")]
            v, vb = est(point, i), est(boot, i)
            ch = v / est(point, ctrl_i) - 1.0
            chb = vb / est(boot, ctrl_i) - 1.0
            vlo, vhi = np.percentile(vb, q, axis=0)
            clo, chi = np.percentile(chb, q, axis=0)
            row = {"strategy": p_name, "estimator": m}
            for j, rn in enumerate(resp):
                row.update({f"value_{rn}": v[j], f"value_{rn}_lo": vlo[j],
                            f"value_{rn}_hi": vhi[j], f"change_{rn}": ch[j],
                            f"change_{rn}_lo": clo[j], f"change_{rn}_hi": chi[j]})
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# trade-offs
# --------------------------------------------------------------------------------------


def pareto_front(points: np.ndarray) -> np.ndarray:
    """(P,) bool: points (P, D) not dominated when every coordinate is to be maximized.

    Point i is dominated when some j is >= in every coordinate and > in one.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"points must have shape (P, D), got {p.shape}")
    ge = (p[None, :, :] >= p[:, None, :]).all(axis=2)  # ge[i, j]: j >= i everywhere
    gt = (p[None, :, :] > p[:, None, :]).any(axis=2)
    return ~(ge & gt).any(axis=1)
