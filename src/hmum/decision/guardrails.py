"""Guardrail decisions: the best rule whose guarded responses do not drop, under share caps.

A platform runs "raise usage time without letting views drop" and "at most 30 % of
users get the costly t2", not "phi > sigma" for its own sake. ``fit_rule`` chooses,
on a calibration split, the ``DecisionRule`` (``hmum.decision.rules``) that

    maximizes   value = mean_n sum_r w_r(n) delta_r^{pi(n)}(n)           (eq. 11 per user)
    subject to  change_g(pi) >= floor_g   for every guarded response g,
                share_k(pi)  <= cap_k     for every capped treatment k,

over the rules ``enable k where sum_r (w_r + lambda_r) delta_r^k > sigma_k``: one
multiplier lambda_g >= 0 per guarded response (Lagrangian relaxation: a guarded
response's uplift counts more in everyone's score) searched on a grid, and the
per-treatment thresholds sigma_k set exactly to meet each cap for that lambda.

change_g(pi) = sum_n y_g^{pi(n)}(n) / sum_n y_g^0(n) - 1, the population change an
A/B test of the rule against control would show, is estimated in one of two ways:

* ``"model"``: from the uplift model alone, y^{pi} = y0* prod_{k in pi} (1 + delta^k)
  (for several treatments at once the model has no joint estimate: effects are
  assumed to multiply; ground truth shows where that fails), optionally with a
  ``margin`` added to every floor;
* ``"dr"``: doubly robust from the calibration split's randomized log (logged arm,
  responses and propensity, the model's y_hat as outcome model), requiring the
  one-sided lower confidence bound at ``confidence`` (delta method for the ratio)
  to clear the floor. It corrects the model's bias, so the guardrail holds on the
  truth about ``confidence`` of the time, at some cost in value. Only arm sets that
  were logged can be scored: a rule enabling two treatments for a user needs
  ``mode="exclusive"``.

Floors are fractions (0.01 = +1 %); text forms accept a ``%`` suffix.

Shapes: delta (N, K, R), w (N, R), y0 (N, R), enable (N, K) bool, y (N, R), arm (N,),
propensity (N,), y_hat (N, K+1, R).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from hmum.decision.evaluation import ope_terms, received_propensity
from hmum.decision.rules import DecisionRule, decide_margin
from hmum.exceptions import DecisionConfigError

ESTIMATES = ("model", "dr")
#: sigma of the "treat nobody" rule: above any score (scores are bounded by |delta| w)
NOBODY_SIGMA = 1e12


@dataclass(frozen=True)
class Guardrail:
    """change of ``response`` >= ``floor`` (a fraction: -0.005 = -0.5 %)."""

    response: str
    floor: float

    def text(self) -> str:
        return f"{self.response}>={100 * self.floor:+g}%"


_GUARD = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*>=\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)"
                    r"\s*(%?)\s*$")


def parse_guardrail(text: str, response_names: Sequence[str],
                    flag: str = "--guardrail") -> Guardrail:
    """'video_views>=-0.0' or 'video_views>=-0.5%' -> Guardrail (floor as a fraction)."""
    m = _GUARD.match(str(text))
    if m is None:
        raise DecisionConfigError(f"{flag}: expected RESPONSE>=FLOOR (a fraction, or percent with "
                                  f"'%'), e.g. video_views>=-0.0, got {text!r}")
    name, num, pct = m.groups()
    if name not in response_names:
        raise DecisionConfigError(f"{flag}: unknown response {name!r}; expected one of "
                                  f"{list(response_names)}")
    floor = float(num) / (100.0 if pct else 1.0)
    if not -1.0 < floor < 10.0:
        raise DecisionConfigError(f"{flag}: floor {text!r} must be a relative change above -1 "
                                  "(-100 %)")
    return Guardrail(name, floor)


def parse_max_share(text: str, treatment_names: Sequence[str],
                    flag: str = "--max-share") -> tuple[str, float]:
    """'t2=0.3' -> ("t2", 0.3): at most 30 % of users may get t2."""
    name, sep, num = str(text).partition("=")
    name = name.strip()
    if not sep:
        raise DecisionConfigError(f"{flag}: expected TREATMENT=SHARE, e.g. t2=0.3, got {text!r}")
    if name not in treatment_names:
        raise DecisionConfigError(f"{flag}: unknown treatment {name!r}; expected one of "
                                  f"{list(treatment_names)}")
    try:
        cap = float(num)
    except ValueError:
        raise DecisionConfigError(f"{flag}: expected a share in [0, 1] after '=', got "
                                  f"{num!r}") from None
    if not 0.0 <= cap <= 1.0:
        raise DecisionConfigError(f"{flag}: expected a share in [0, 1] for {name}, got {cap}")
    return name, cap


# --------------------------------------------------------------------------------------
# predicted effects of a policy
# --------------------------------------------------------------------------------------


def arm_set_outcomes(y0: np.ndarray, delta: np.ndarray, enable: np.ndarray) -> np.ndarray:
    """Predicted responses (N, R) under each row's arm set: y0 * prod_{k on} (1 + delta^k)."""
    factor = np.where(np.asarray(enable)[:, :, None], 1.0 + np.asarray(delta), 1.0).prod(axis=1)
    return np.asarray(y0, dtype=np.float64) * factor


def predicted_effects(enable: np.ndarray, delta: np.ndarray, y0: np.ndarray,
                      w: np.ndarray) -> dict[str, Any]:
    """{"change": (R,), "value": float, "share": (K,)} of a policy, from the model alone."""
    y_pi = arm_set_outcomes(y0, delta, enable)
    y0 = np.asarray(y0, dtype=np.float64)
    change = y_pi.sum(axis=0) / y0.sum(axis=0) - 1.0
    rel = np.where(np.asarray(enable)[:, :, None], 1.0 + delta, 1.0).prod(axis=1) - 1.0
    value = float(np.mean(np.sum(w * rel, axis=1))) if len(rel) else 0.0
    return {"change": change, "value": value, "share": np.asarray(enable).mean(axis=0)}


def dr_change(policy_arm: np.ndarray, y: np.ndarray, arm: np.ndarray, y_hat: np.ndarray, *,
              propensity: np.ndarray | None = None,
              confidence: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """(change (R,), lower (R,)): doubly-robust change vs control and its lower bound.

    change = sum_n psi_pi(n) / sum_n psi_0(n) - 1 with the DR terms of
    ``evaluation.ope_terms``; lower = change - z_confidence * se, se by the delta
    method for a ratio of means (one-sided bound at ``confidence``).
    """
    e = received_propensity(arm, propensity)
    num_p, _ = ope_terms(y, arm, policy_arm, propensity=e, y_hat=y_hat, method="dr")
    num_0, _ = ope_terms(y, arm, np.zeros_like(arm), propensity=e, y_hat=y_hat, method="dr")
    a, b = num_p.mean(axis=0), num_0.mean(axis=0)
    ratio = a / b
    infl = (num_p - ratio * num_0) / b  # (N, R) influence of each row on the ratio
    se = infl.std(axis=0, ddof=1) / np.sqrt(len(arm)) if len(arm) > 1 else np.full_like(a, np.inf)
    z = NormalDist().inv_cdf(confidence)
    return ratio - 1.0, ratio - 1.0 - z * se


def users_needed(change: np.ndarray, lower: np.ndarray, floors: np.ndarray,
                 n: int) -> int | None:
    """Calibration users at which a rule's lower bounds would clear the floors, or None.

    change, lower, floors (G,): a rule's dr estimates, their lower bounds and the floors
    on n users. Where an estimate clears its floor but its bound does not, the bound's
    half-width (change - lower, shrinking as 1 / sqrt(n)) must fall to change - floor:
    n (half-width / (change - floor))^2 users at the same estimate. None where an
    estimate itself is below its floor (more users would not show it).
    """
    change, lower, floors = (np.asarray(v, dtype=np.float64) for v in (change, lower, floors))
    if np.any(change <= floors):
        return None
    short = lower < floors
    if not short.any():
        return n
    ratio = (change[short] - lower[short]) / (change[short] - floors[short])
    return int(np.ceil(n * float(np.max(ratio)) ** 2))


# --------------------------------------------------------------------------------------
# thresholds that meet share caps
# --------------------------------------------------------------------------------------


def cap_thresholds(score: np.ndarray, sigma: Sequence[float], caps: Mapping[int, float],
                   mode: str, max_passes: int = 20) -> np.ndarray:
    """sigma (K,): the given thresholds, raised just enough that share_k <= caps[k].

    score (N, K) = phi'. independent: sigma_k = max(sigma_k, the (m+1)-th largest
    score_k), m = floor(cap_k N). exclusive: user n takes k when score_k - sigma_k beats
    o_n = max(0, the other margins), so sigma_k is the (m+1)-th largest score_k - o_n;
    raising one threshold moves users to the others, hence a few passes (thresholds
    only rise, so they converge).
    """
    s = np.asarray(score, dtype=np.float64)
    sig = np.asarray(sigma, dtype=np.float64).copy()
    n, k = s.shape
    if not caps or n == 0:
        return sig
    for _ in range(max_passes if mode == "exclusive" else 1):
        changed = False
        for j, cap in caps.items():
            m = int(np.floor(cap * n + 1e-9))
            if mode == "independent":
                key = s[:, j]
            else:
                margin = s - sig[None, :]
                other = np.delete(margin, j, axis=1)
                o = np.maximum(0.0, other.max(axis=1)) if k > 1 else np.zeros(n)
                key = s[:, j] - o
            if (key > sig[j]).sum() <= m:
                continue
            # m = 0: just the largest key, so that "key > sigma" holds for nobody (finite)
            new = key.max() if m == 0 else np.partition(key, n - m - 1)[n - m - 1]
            new = max(new, sig[j])
            if m and (key > new).sum() > m:  # ties at the cut: step just above them
                new = np.nextafter(new, np.inf)
            if new > sig[j]:
                sig[j], changed = new, True
        if not changed:
            break
    return sig


# --------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------


def lambda_grid(n_guards: int) -> list[np.ndarray]:
    """The multipliers (n_guards,) that fit_rule searches: 0 and a log grid to 1e3."""
    pts = {1: 61, 2: 25}.get(n_guards, 9)
    axis = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, pts - 1)])
    mesh = np.meshgrid(*([axis] * n_guards), indexing="ij")
    return [np.array(v) for v in zip(*(m.ravel() for m in mesh), strict=True)] if n_guards \
        else [np.zeros(0)]


def fit_rule(
    delta: np.ndarray,
    w: np.ndarray | None,
    y0: np.ndarray,
    *,
    responses: Sequence[str],
    treatments: Sequence[str],
    guardrails: Sequence[Guardrail] = (),
    max_share: Mapping[str, float] | None = None,
    mode: str = "independent",
    sigma: float = 0.0,
    weights: str = "personalized",
    fixed_weights: Sequence[float] | None = None,
    estimate: str = "model",
    margin: float = 0.0,
    confidence: float = 0.9,
    logged: Mapping[str, np.ndarray | None] | None = None,
) -> tuple[DecisionRule, dict[str, Any]]:
    """The best feasible rule on these (calibration) users, and how it was chosen.

    delta (N, K, R), w (N, R) (None with ``weights="fixed"``), y0 (N, R) = the model's
    no-treatment estimate. ``logged`` (for ``estimate="dr"``): {"y": (N, R), "arm": (N,),
    "propensity": (N,) or None, "y_hat": (N, K+1, R)}.

    Returns (rule, report): report holds, for the chosen and the unconstrained rule
    (lambda = 0, sigma_k = sigma), the predicted value, change (R,), share (K,), the DR
    change and lower bound when used, and ``n_candidates`` / ``n_feasible``; with the dr
    estimate and an infeasible unconstrained rule, ``unconstrained_users_needed``: the
    calibration users at which its bound would clear the floors at the same estimate
    (``users_needed``; None where the estimate itself misses a floor). Raises
    DecisionConfigError (naming --guardrail / --max-share) when no rule is feasible.
    """
    delta = np.asarray(delta, dtype=np.float64)
    n, k, r = delta.shape
    responses, treatments = list(responses), list(treatments)
    if estimate not in ESTIMATES:
        raise DecisionConfigError(f"estimate: expected one of {ESTIMATES}, got {estimate!r}")
    if not 0.5 <= confidence < 1:
        raise DecisionConfigError(f"confidence: expected a number in [0.5, 1), got {confidence}")
    if n == 0:
        raise DecisionConfigError("no calibration users to fit the guardrail rule on")
    caps = {treatments.index(t): float(c) for t, c in (max_share or {}).items()}
    base = DecisionRule(responses, treatments, mode=mode, sigma=[sigma] * k, weights=weights,
                        fixed_weights=None if fixed_weights is None else list(fixed_weights),
                        guardrails=[{"response": g.response, "floor": g.floor}
                                    for g in guardrails],
                        max_share={treatments[j]: c for j, c in caps.items()})
    wv = base.value_weights(w, n)
    y0 = np.asarray(y0, dtype=np.float64)
    gidx = [responses.index(g.response) for g in guardrails]
    floors = np.array([g.floor for g in guardrails])
    if estimate == "dr":
        if logged is None or any(logged.get(c) is None for c in ("y", "arm", "y_hat")):
            raise DecisionConfigError("the dr guardrail estimate needs the calibration users' "
                                      "logged arm and responses (use the model estimate)")
        if mode != "exclusive" and k > 1:
            raise DecisionConfigError("the dr guardrail estimate scores logged arms only: use "
                                      "mode exclusive (one treatment per user) or the model "
                                      "estimate")

    def evaluate(lam: np.ndarray, sig: np.ndarray | None = None) -> dict[str, Any]:
        bonus = np.zeros(r)
        bonus[gidx] = lam
        score = np.einsum("nkr,nr->nk", delta, wv + bonus[None, :])
        if sig is None:
            sig = cap_thresholds(score, [sigma] * k, caps, mode)
        en = decide_margin(score - sig[None, :], mode)
        res = predicted_effects(en, delta, y0, wv)
        res.update(bonus=bonus, sigma=sig, enable=en)
        if estimate == "dr":
            pa_ = np.where(en.any(axis=1), en.argmax(axis=1) + 1, 0)
            ch, lo = dr_change(pa_, logged["y"], logged["arm"], logged["y_hat"],
                               propensity=logged.get("propensity"), confidence=confidence)
            res.update(dr_change=ch, dr_lower=lo)
            check = lo[gidx]
        else:
            check = res["change"][gidx] - margin
        share_ok = all(res["share"][j] <= c + 1e-12 for j, c in caps.items())
        res["feasible"] = bool(share_ok and np.all(check >= floors - 1e-12))
        return res

    free = evaluate(np.zeros(len(gidx)), np.full(k, float(sigma)))
    cands = [evaluate(lam) for lam in lambda_grid(len(gidx))]
    # nobody treated, the last resort (a finite threshold no score reaches: |delta| < 1e6)
    cands.append(evaluate(np.zeros(len(gidx)), np.full(k, NOBODY_SIGMA)))
    feasible = [c for c in cands if c["feasible"]]
    if not feasible:
        g_txt = ", ".join(g.text() for g in guardrails) or "none"
        best = max(cands, key=lambda c: min((c.get("dr_lower", c["change"])[gidx] - floors),
                                            default=0))
        got = best.get("dr_lower", best["change"])[gidx]
        raise DecisionConfigError(
            f"--guardrail: no rule meets the guardrail(s) {g_txt}"
            + (f" and --max-share {base.max_share}" if caps else "")
            + f" on the {n:,} calibration users; the closest reaches "
            + ", ".join(f"{responses[g]} {100 * v:+.3f}%" for g, v in zip(gidx, got, strict=True))
            + " (lower a floor, or use more calibration users)")
    best = max(feasible, key=lambda c: c["value"])
    fit_info = {"n_calibration": n, "estimate": estimate, "confidence": confidence,
                "margin": margin, "n_candidates": len(cands), "n_feasible": len(feasible)}
    if estimate == "dr" and not free["feasible"]:
        fit_info["unconstrained_users_needed"] = users_needed(
            free["dr_change"][gidx], free["dr_lower"][gidx], floors, n)
    rule = DecisionRule(
        responses, treatments, mode=mode, sigma=[float(s) for s in best["sigma"]],
        response_bonus=[float(b) for b in best["bonus"]], weights=weights,
        fixed_weights=base.fixed_weights, guardrails=base.guardrails,
        max_share=base.max_share,
        fit={**fit_info, **_summary(best, responses, treatments, "predicted")},
    )
    report = {"chosen": _summary(best, responses, treatments),
              "unconstrained": _summary(free, responses, treatments), **fit_info}
    return rule, report


def _summary(res: Mapping[str, Any], responses, treatments, prefix: str = "") -> dict[str, Any]:
    p = f"{prefix}_" if prefix else ""
    out = {f"{p}value": float(res["value"]),
           f"{p}change": {rn: float(v) for rn, v in zip(responses, res["change"], strict=True)},
           f"{p}share": {t: float(v) for t, v in zip(treatments, res["share"], strict=True)}}
    if "dr_change" in res:
        out[f"{p}dr_change"] = {rn: float(v) for rn, v in zip(responses, res["dr_change"],
                                                             strict=True)}
        out[f"{p}dr_lower"] = {rn: float(v) for rn, v in zip(responses, res["dr_lower"],
                                                            strict=True)}
    if not prefix:
        out["feasible"] = bool(res.get("feasible", False))
        out["sigma"] = [float(s) for s in res["sigma"]]
        out["response_bonus"] = [float(b) for b in res["bonus"]]
    return out
