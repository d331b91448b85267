"""Decision policies: HMUM's per-user decision and the strategies it is compared with.

A *policy* is an ``enable`` array (N, K) bool: row n says which treatments user
(or request) n gets; no treatment = control. Two decision modes (paper §3.2,
§4.2.3):

* ``independent`` (the paper): treatment k is enabled where phi^k > sigma,
  independently of the others, so any subset of treatments can be on;
* ``exclusive``: at most one treatment, the one with the largest phi^k, and
  only if it exceeds sigma ("none" is always a candidate).

Comparison strategies (paper Tables 3 and 4): the same decision with fixed
global weights instead of the personalized w; whole-population strategies
(everyone t_k, everyone all treatments, nobody); a seeded random policy; and
the oracle, which knows the true potential outcomes and value weights
(simulated data only).

Ground truth exists only for some arm sets: none (mu[:, 0]), one treatment k
(mu[:, k]) and all K treatments together (mu_all). ``truth_arm`` maps each row
of ``enable`` to that index (0..K, and K+1 for "all"); for K > 2 a partial
subset such as {t1, t2} of three has no ground truth and raises (use exclusive
mode). ``logged_arm`` maps a policy to the arms of a randomized log (0..K) for
off-policy evaluation.

Shapes: delta (N, K, R), w (N, R), phi (N, K), enable (N, K) bool,
mu (N, K+1, R), mu_all (N, R).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from hmum.decision.core import balanced_score, enable, relative_uplift

Mode = Literal["independent", "exclusive"]
MODES: tuple[str, ...] = ("independent", "exclusive")
ALL = "all"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def decide_from_phi(phi: np.ndarray, *, sigma: float = 0.0, mode: Mode = "independent"):
    """enable (N, K) bool from phi (N, K).

    independent: phi > sigma; exclusive: one-hot of argmax_k phi^k where that
    maximum exceeds sigma, else no treatment. Ties go to the lower k.
    """
    _check_mode(mode)
    phi = np.asarray(phi)
    if phi.ndim != 2:
        raise ValueError(f"phi must have shape (N, K), got {phi.shape}")
    if mode == "independent":
        return enable(phi, sigma)
    out = np.zeros(phi.shape, dtype=bool)
    if phi.shape[0] == 0:
        return out
    best = phi.argmax(axis=1)
    rows = np.arange(phi.shape[0])
    out[rows, best] = phi[rows, best] > sigma
    return out


def decide(delta: np.ndarray, w: np.ndarray, *, sigma: float = 0.0,
           mode: Mode = "independent") -> tuple[np.ndarray, np.ndarray]:
    """HMUM's decision: (phi (N, K), enable (N, K)) from delta (N, K, R) and w (N, R).

    phi^k = sum_r w_r delta_r^k (eq. 11); see ``decide_from_phi`` for the modes.
    """
    delta, w = np.asarray(delta), np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"w must have shape (N, R), got {w.shape}")
    phi = balanced_score(delta, w)
    return phi, decide_from_phi(phi, sigma=sigma, mode=mode)


def fixed_weight_policy(delta: np.ndarray, weights: Sequence[float], *, sigma: float = 0.0,
                        mode: Mode = "independent") -> np.ndarray:
    """enable (N, K): HMUM's decision with one global weight vector (R,) for everyone.

    The weights are normalized to sum to 1 (negative entries are an error).
    """
    delta = np.asarray(delta)
    wv = np.asarray(weights, dtype=np.float64)
    if wv.ndim != 1 or wv.shape[0] != delta.shape[2]:
        raise ValueError(f"weights must have R = {delta.shape[2]} entries, got shape {wv.shape}")
    if (wv < 0).any() or wv.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {wv.tolist()}")
    w = np.broadcast_to(wv / wv.sum(), (delta.shape[0], wv.shape[0]))
    return decide(delta, w, sigma=sigma, mode=mode)[1]


def population_policy(n: int, n_treatments: int, arms: int | str | Sequence[int]) -> np.ndarray:
    """enable (N, K) giving everyone the same arm set.

    arms: 0 or "none" (nobody treated), k in 1..K (everyone t_k), "all" (every
    treatment at once) or a sequence of treatment indices in 1..K.
    """
    out = np.zeros((n, n_treatments), dtype=bool)
    if arms == ALL:
        out[:] = True
    elif arms == "none" or (isinstance(arms, int | np.integer) and arms == 0):
        pass
    else:
        ks = [arms] if isinstance(arms, int | np.integer) else list(arms)
        for k in ks:
            if not 1 <= int(k) <= n_treatments:
                raise ValueError(f"treatment index {k} is outside 1..{n_treatments}")
            out[:, int(k) - 1] = True
    return out


def random_policy(n: int, n_treatments: int, *, seed: int = 0, mode: Mode = "independent",
                  p: float = 0.5) -> np.ndarray:
    """enable (N, K) drawn at random (seeded).

    independent: each treatment on with probability p; exclusive: an arm drawn
    uniformly among none, t1..tK. (For K > 2 independent draws can give subsets
    without ground truth; use exclusive mode there.)
    """
    _check_mode(mode)
    rng = np.random.default_rng(seed)
    if mode == "independent":
        return rng.random((n, n_treatments)) < p
    arm = rng.integers(0, n_treatments + 1, n)
    return arms_to_enable(arm, n_treatments)


def truth_phi(mu: np.ndarray, mu_all: np.ndarray | None, w_true: np.ndarray) -> np.ndarray:
    """True balanced score (N, A) of every arm set with ground truth.

    A = K+1 (none, t1..tK) plus 1 for "all" when ``mu_all`` is given (K > 1);
    phi^a = sum_r w_r (mu_r^a / mu_r^0 - 1), so phi of "none" is 0.
    """
    stacked = stack_truth(mu, mu_all)
    phi = np.einsum("nar,nr->na", relative_uplift(stacked), np.asarray(w_true, dtype=np.float64))
    return np.concatenate([np.zeros((phi.shape[0], 1)), phi], axis=1)


def oracle_policy(mu: np.ndarray, mu_all: np.ndarray | None, w_true: np.ndarray, *,
                  mode: Mode = "independent") -> np.ndarray:
    """enable (N, K) of the oracle: per user, the arm set with the largest true phi.

    independent: among none, each single treatment and all treatments (when
    ``mu_all`` is given) — every subset for K <= 2, as in the simulator's summary;
    exclusive: among none and the single treatments. Needs the true value weights
    w_true (N, R) (simulated data).
    """
    _check_mode(mode)
    phi = truth_phi(mu, mu_all if mode == "independent" else None, w_true)
    return truth_arms_to_enable(phi.argmax(axis=1), mu.shape[1] - 1)


def stack_truth(mu: np.ndarray, mu_all: np.ndarray | None) -> np.ndarray:
    """(N, A, R): mu (N, K+1, R) with mu_all (N, R) appended as arm set K+1 when given."""
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 3:
        raise ValueError(f"mu must have shape (N, K+1, R), got {mu.shape}")
    if mu_all is None:
        return mu
    mu_all = np.asarray(mu_all, dtype=np.float64)
    if mu_all.shape != (mu.shape[0], mu.shape[2]):
        raise ValueError(f"mu_all must have shape (N, R) = {(mu.shape[0], mu.shape[2])}, "
                         f"got {mu_all.shape}")
    return np.concatenate([mu, mu_all[:, None]], axis=1)


def truth_arm(enable_: np.ndarray) -> np.ndarray:
    """(N,) index of each row's arm set among the ground-truth arm sets.

    0 = none, k = only t_k, K+1 = all K treatments (K > 1). Raises ValueError
    for a partial subset (2..K-1 treatments, only possible when K > 2).
    """
    e = _check_enable(enable_)
    k = e.shape[1]
    count = e.sum(axis=1)
    out = np.where(count == 0, 0, e.argmax(axis=1) + 1)
    if k > 1:
        out = np.where(count == k, k + 1, out)
    partial = (count > 1) & (count < k)
    if partial.any():
        rows = np.flatnonzero(partial)[:5].tolist()
        raise ValueError(
            f"rows {rows} enable {int(count[partial][0])} of K = {k} treatments; only none, "
            "one treatment or all treatments have ground truth: use mode='exclusive'"
        )
    return out


def truth_arms_to_enable(index: np.ndarray, n_treatments: int) -> np.ndarray:
    """Inverse of ``truth_arm``: (N,) indices in 0..K+1 -> enable (N, K)."""
    index = np.asarray(index)
    out = arms_to_enable(np.where(index > n_treatments, 0, index), n_treatments)
    out[index > n_treatments] = True
    return out


def arms_to_enable(arm: np.ndarray, n_treatments: int) -> np.ndarray:
    """(N,) arms in 0..K (0 = control) -> one-hot enable (N, K)."""
    arm = np.asarray(arm)
    if arm.size and (arm.min() < 0 or arm.max() > n_treatments):
        raise ValueError(f"arms must lie in 0..{n_treatments}, got range "
                         f"{arm.min()}..{arm.max()}")
    out = np.zeros((arm.shape[0], n_treatments), dtype=bool)
    on = arm > 0
    out[np.flatnonzero(on), arm[on] - 1] = True
    return out


def logged_arm(enable_: np.ndarray) -> np.ndarray:
    """(N,) logged arm 0..K of a policy that enables at most one treatment per row.

    Off-policy evaluation can only score arm sets that were randomized in the
    log; several treatments at once were not (raise: use mode='exclusive').
    """
    e = _check_enable(enable_)
    count = e.sum(axis=1)
    if (count > 1).any():
        rows = np.flatnonzero(count > 1)[:5].tolist()
        raise ValueError(f"rows {rows} enable several treatments at once, an arm set that was "
                         "never logged; evaluate exclusive-mode policies off-policy")
    return np.where(count == 0, 0, e.argmax(axis=1) + 1)


def arm_set_names(treatment_names: Sequence[str]) -> list[str]:
    """Names of the ground-truth arm sets: ["none", t1..tK] (+ "all" when K > 1)."""
    names = ["none", *treatment_names]
    return [*names, ALL] if len(treatment_names) > 1 else names


def _check_enable(enable_: np.ndarray) -> np.ndarray:
    e = np.asarray(enable_)
    if e.ndim != 2 or e.dtype != bool:
        raise ValueError(f"enable must be a bool array of shape (N, K), got {e.dtype} {e.shape}")
    return e
