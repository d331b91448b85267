"""DDM workflows behind the command line and the demo: weights -> phi -> decisions -> evaluation.

Glue only (the arithmetic lives in ``hmum.decision``, the model in
``hmum.models.value_weight`` / ``hmum.models.value_weight``):

* ``decide``: per-request value weights, balanced scores and decisions for a
  request table, from a HUM model (user-level delta) and a value-weight model
  (request-level w); requests join users on ``user_id``.
* ``policy_eval``: the strategy table of the paper's Tables 3 and 4 (HMUM against
  fixed global weights, whole-population strategies, a random policy and the
  oracle): on ground truth when the data are simulated, and off-policy (IPW and
  doubly robust, bootstrap intervals) when the arm and responses are logged;
  CSV / JSON / Markdown tables, the trade-off plot and ``report.md``.
* ``run_ddm_demo_stage``: the DDM half of ``hmum demo``.

Decisions are made per request; the population tables need one arm set per
*user* (ground truth and logged responses are user-level), so a user's weight
is the mean of the weights predicted for their requests (a mean of points of
the simplex stays on it) and users without any request get the mean predicted
weight over all requests (``default weight``), i.e. the fixed-weight decision.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from hmum.data.io import write_frame
from hmum.data.validate import ExperimentData
from hmum.decision.core import Y0_FLOOR, relative_uplift
from hmum.decision.evaluation import off_policy_table, strategy_table
from hmum.decision.policies import decide as decide_arrays
from hmum.decision.policies import (
    fixed_weight_policy,
    logged_arm,
    oracle_policy,
    population_policy,
    random_policy,
)
from hmum.exceptions import DataError, option_name

log = logging.getLogger(__name__)

ORACLE = "oracle"
HMUM = "HMUM"


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------


def hum_deltas(hum_estimator, users: ExperimentData, *, floor: float = Y0_FLOOR) -> dict:
    """{"y_hat": (N, K+1, R), "delta": (N, K, R)} float64 for every user.

    With a HUM model, y_hat[:, 0] is already y0* = the mean of the branches'
    control estimates (eq. 6); delta is eq. 7 with the documented floor on y0*.
    Any model works (HUM or a baseline): only ``predict_outcomes`` is read.
    """
    y_hat = np.asarray(hum_estimator.predict_outcomes(users), dtype=np.float64)
    return {"y_hat": y_hat, "delta": relative_uplift(y_hat, floor)}


def refit_like(estimator):
    """An unfitted estimator of ``estimator``'s recipe: its class, model and trainer
    configs and, for the neural models, its encoder config (the one it was given, or
    the fitted encoder's, as an artifact records it); any registered model, fitted or
    loaded from an artifact."""
    enc = getattr(estimator, "encoder", None)
    fitted = getattr(estimator, "encoder_", None)
    if enc is None and fitted is not None:
        enc = fitted.config.model_dump()
    extra = {} if enc is None else {"encoder": enc}
    return type(estimator)(estimator.schema, model=estimator.model, trainer=estimator.trainer,
                           **extra)


def trained_on(estimator, users: ExperimentData) -> bool:
    """True when ``users`` is the very table ``estimator`` was trained from (its
    recorded fingerprint: row count and a hash of the user ids, or of the rows)."""
    from hmum.data.validate import data_fingerprint

    recorded = getattr(estimator, "data_fingerprint_", None)
    return bool(recorded) and data_fingerprint(users) == recorded


def out_of_fold_deltas(estimator, users: ExperimentData, folds: int, *, seed: int = 0,
                       floor: float = Y0_FLOOR, log_fold: Callable[[str], None] | None = None,
                       models_out: list | None = None) -> dict:
    """Cross-fitted ``hum_deltas``: {"y_hat" (N, K+1, R), "delta" (N, K, R), "fold" (N,)}.

    The users are split into ``folds`` parts within every arm (seeded); fold j is scored
    by a refit of ``estimator``'s recipe (``refit_like``) on the other folds' users, so
    no user's own outcome is in the model that scores it. A doubly robust estimate on
    these deltas can then use every user of the experiment, including the ones the
    deployed model trained on (``fit_guardrail_rule(oof_deltas=...)``). Costs
    ``folds`` fits on (folds - 1) / folds of the users each; ``models_out`` (a list)
    receives the fitted fold models in fold order.
    """
    from hmum.data.split import split_indices

    if folds < 2:
        raise ValueError(f"{option_name('folds', 'folds')}: expected at least 2 folds, got "
                         f"{folds}")
    if users.arm is None or users.y is None:
        raise DataError("out-of-fold deltas refit the model: the users need the logged arm "
                        "and responses")
    fold = np.empty(len(users), dtype=np.int64)
    for j, rows in enumerate(split_indices(users.arm, (1.0 / folds,) * folds, seed=seed)):
        fold[rows] = j
    models = []
    for j in range(folds):
        if log_fold is not None:
            log_fold(f"fold {j + 1}/{folds}: refitting on {int((fold != j).sum()):,} users, "
                     f"scoring {int((fold == j).sum()):,}")
        models.append(refit_like(estimator).fit(users.take(np.flatnonzero(fold != j))))
    if models_out is not None:
        models_out.extend(models)
    return {**deltas_by_fold(models, users, fold, floor=floor), "fold": fold}


def deltas_by_fold(models: Sequence, users: ExperimentData, fold: np.ndarray, *,
                   floor: float = Y0_FLOOR) -> dict:
    """``hum_deltas`` with user n scored by ``models[fold[n]]``: {"y_hat" (N, K+1, R),
    "delta" (N, K, R)}; fold (N,) ints in [0, len(models))."""
    out: dict = {}
    for j, m in enumerate(models):
        rows = np.flatnonzero(fold == j)
        for key, arr in hum_deltas(m, users.take(rows), floor=floor).items():
            out.setdefault(key, np.empty((len(users), *arr.shape[1:]), dtype=np.float64))
            out[key][rows] = arr
    return out


def branch_member_deltas(estimator, users, *, floor: float = Y0_FLOOR,
                         batch_size: int = 65536) -> np.ndarray:
    """member_delta (M, N, K, R) of one fitted model's members
    (``HUMEstimator.member_deltas``: its branches, cross-fit members unshrunk); a
    ValueError naming the model when it is not HUM or has one member."""
    from hmum.models.hum import HUMEstimator

    if not isinstance(estimator, HUMEstimator):
        name = (getattr(estimator, "registry_name_", None)
                or getattr(estimator, "model_type", type(estimator).__name__))
        raise ValueError(f"bounds from branches need a HUM model (its branches are the "
                         f"members); this model is {name}: use seeds or bootstrap members")
    return estimator.member_deltas(users, floor=floor, batch_size=batch_size)


def rule_spread(rule, estimator, users) -> tuple[np.ndarray | None, int | None]:
    """(spread (N, S), M) of ``estimator``'s members on ``users`` when ``rule`` switches on
    a lower bound of phi, else (None, None). DecisionConfigError when the bound's members
    are not the model's own (seeds, bootstrap) or the model has fewer than 2."""
    if rule is None or rule.bound is None:
        return None, None
    from hmum.decision.bounds import pack_spread
    from hmum.models.hum import bound_members

    m = bound_members(estimator, rule.bound)
    return pack_spread(estimator.member_deltas(users)), m


def ensemble_member_deltas(estimators, users: ExperimentData, *,
                           floor: float = Y0_FLOOR) -> np.ndarray:
    """member_delta (M, N, K, R): delta of each of M fitted estimators (seeds, bootstrap)."""
    return np.stack([hum_deltas(e, users, floor=floor)["delta"] for e in estimators])


def join_users(request_user_id: np.ndarray, user_id: np.ndarray) -> np.ndarray:
    """(Nq,) row of each request's user in ``user_id`` (U,), -1 when absent."""
    user_id = np.asarray(user_id)
    req = np.asarray(request_user_id)
    order = np.argsort(user_id, kind="stable")
    s = user_id[order]
    if len(s) > 1 and (s[1:] == s[:-1]).any():
        dup = s[1:][s[1:] == s[:-1]][:5].tolist()
        raise DataError(f"users: user ids must be unique to join requests; repeated: {dup}")
    if len(s) == 0:
        return np.full(len(req), -1)
    pos = np.clip(np.searchsorted(s, req), 0, len(s) - 1)
    return np.where(s[pos] == req, order[pos], -1)


def user_mean_weights(user_index: np.ndarray, w: np.ndarray, n_users: int,
                      default: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(w_user (U, R), n_requests (U,)): mean request weight per user.

    user_index (Nq,): each request's user row (-1: unknown user, ignored);
    w (Nq, R). Users without requests get ``default`` (R,) — by default the
    mean weight over all joined requests (uniform 1/R when there are none).
    """
    w = np.asarray(w, dtype=np.float64)
    ok = user_index >= 0
    idx = user_index[ok]
    counts = np.bincount(idx, minlength=n_users)
    sums = np.stack([np.bincount(idx, weights=w[ok, r], minlength=n_users)
                     for r in range(w.shape[1])], axis=1)
    if default is None:
        default = w[ok].mean(axis=0) if ok.any() else np.full(w.shape[1], 1.0 / w.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[:, None]
    return np.where(counts[:, None] > 0, mean, np.asarray(default)[None, :]), counts


def comparison_policies(
    delta: np.ndarray,
    w_user: np.ndarray,
    *,
    sigma: float = 0.0,
    fixed_weights: Sequence[float] | None = None,
    treatment_names: Sequence[str],
    mu: np.ndarray | None = None,
    mu_all: np.ndarray | None = None,
    w_true: np.ndarray | None = None,
    seed: int = 0,
    exclusive_only: bool = False,
) -> dict[str, np.ndarray]:
    """{strategy name: enable (N, K)}: HMUM and the strategies it is compared with.

    HMUM (independent / exclusive mode) with the personalized w_user (N, R); the
    same with ``fixed_weights`` (R,) (default: the population mean of w_user);
    nobody / everyone t_k / everyone all treatments; a seeded random policy; and
    the oracle when ground truth ``mu`` is given (w_true: the users' true value
    weights, equal weights when None). ``exclusive_only`` builds HMUM, fixed w,
    random and the oracle in exclusive mode only (K > 2, where partial subsets
    of treatments have no ground truth). Without ``mu`` the random policy draws
    one arm per user, so that off-policy evaluation can score it.
    """
    n, k = delta.shape[0], delta.shape[1]
    fw = np.asarray(fixed_weights if fixed_weights is not None else w_user.mean(axis=0))
    modes = ("exclusive",) if exclusive_only else ("independent", "exclusive")
    pols: dict[str, np.ndarray] = {"nobody (control)": population_policy(n, k, 0)}
    for i, t in enumerate(treatment_names, start=1):
        pols[f"everyone {t}"] = population_policy(n, k, i)
    if k > 1:
        pols["everyone " + "+".join(treatment_names)] = population_policy(n, k, "all")
    for m in modes:
        pols[f"{HMUM} ({m})"] = decide_arrays(delta, w_user, sigma=sigma, mode=m)[1]
    for m in modes:
        pols[f"fixed w ({m})"] = fixed_weight_policy(delta, fw, sigma=sigma, mode=m)
    # without ground truth only logged arms can be scored: draw one arm per user
    pols["random"] = random_policy(n, k, seed=seed,
                                   mode=modes[0] if mu is not None else "exclusive")
    if mu is not None:
        wt = w_true if w_true is not None else np.full((n, mu.shape[2]), 1.0 / mu.shape[2])
        pols[ORACLE] = oracle_policy(mu, None if exclusive_only else mu_all, wt, mode=modes[0])
        if not exclusive_only:
            pols[f"{ORACLE} (exclusive)"] = oracle_policy(mu, None, wt, mode="exclusive")
    return pols


def pct_text(v: float) -> str:
    """A relative change as signed percent text ("n/a" when not finite)."""
    return "n/a" if not np.isfinite(v) else f"{100 * v:+.3f}%"


def strategy_markdown(table: pd.DataFrame, response_names: Sequence[str]) -> str:
    """The ground-truth strategy table as Markdown (changes in %)."""
    from hmum.workflows.reports import markdown_table

    df = pd.DataFrame({"strategy": table["strategy"]})
    for c in table.columns:
        if c.startswith("share_"):
            df[f"share {c[6:]}"] = [f"{v:.2f}" for v in table[c]]
    for r in response_names:
        df[f"Δ {r}"] = [pct_text(v) for v in table[f"change_{r}"]]
    df["value"] = [f"{100 * v:+.4f}%" for v in table["value"]]
    if "oracle_share" in table:
        df["oracle share"] = [f"{v:.2f}" for v in table["oracle_share"]]
    return markdown_table(df)


def ope_markdown(table: pd.DataFrame, response_names: Sequence[str]) -> str:
    """The off-policy table as Markdown: change vs control in % with its interval."""
    from hmum.workflows.reports import markdown_table

    df = pd.DataFrame({"strategy": table["strategy"], "estimator": table["estimator"]})
    for r in response_names:
        df[f"Δ {r} [95% CI]"] = [
            f"{pct_text(a)} [{pct_text(lo)}, {pct_text(hi)}]"
            for a, lo, hi in zip(table[f"change_{r}"], table[f"change_{r}_lo"],
                                 table[f"change_{r}_hi"], strict=True)
        ]
        if f"true_change_{r}" in table:
            df[f"true Δ {r}"] = [pct_text(v) for v in table[f"true_change_{r}"]]
    return markdown_table(df)


def _write_table(table: pd.DataFrame, out: Path, stem: str, markdown: str) -> None:
    table.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.json").write_text(
        json.dumps(table.to_dict(orient="records"), indent=2, default=float) + "\n")
    (out / f"{stem}.md").write_text(markdown + "\n")


# --------------------------------------------------------------------------------------
# decide
# --------------------------------------------------------------------------------------


def request_weights(vw_estimator, requests: pa.Table) -> np.ndarray:
    """w (Nq, R) of a request table, checking the model's responses."""
    return vw_estimator.predict_weights(requests).astype(np.float64)


def decide(
    requests: pa.Table,
    users: ExperimentData,
    hum_estimator,
    vw_estimator,
    *,
    sigma: float = 0.0,
    mode: str = "independent",
    out_path: str | Path | None = None,
    deltas: dict | None = None,
    missing: str = "error",
    rule=None,
) -> pd.DataFrame:
    """Per-request decisions: weights (eq. 10), phi (eq. 11) and the enabled treatments.

    ``rule`` (a ``hmum.decision.rules.DecisionRule``, e.g. fitted by
    ``fit_guardrail_rule`` or read by ``load_rule``) replaces ``sigma`` / ``mode``:
    its per-treatment thresholds, guardrail bonuses and weights decide.

    requests: a request table with ``user_id`` (and ``request_id``, else the
    row number); users: validated users with a ``user_id`` column; delta comes
    from the HUM model on the users' features (pass ``deltas`` from
    ``hum_deltas`` to reuse them). ``missing``: "error" (a request whose user
    is not in ``users`` raises DataError) or "drop".

    Returns a DataFrame (Nq rows, fewer after ``missing="drop"``: then
    ``df.attrs["n_dropped"]`` requests were dropped): request_id, user_id,
    w_<response>, phi_<treatment>, enable_<treatment> (bool) and ``arms`` (the
    enabled set, "none" or e.g. "t1+t2"); with a ``rule`` that has a bound also
    phi_lower_<treatment> (the lower bound it decided on, from the model's members).
    Written to ``out_path`` (.parquet or .csv) when given.
    """
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', got {missing!r}")
    if "user_id" not in requests.column_names:
        raise DataError("requests: column 'user_id' is missing; it joins requests to users")
    if users.user_id is None:
        raise DataError("users: no user id column (set the schema's user_id); it joins "
                        "requests to users")
    schema = users.schema
    rn, tn = schema.response_names, schema.arms[1:]
    if list(vw_estimator.responses_) != list(rn):
        raise ValueError(f"the value-weight model predicts {vw_estimator.responses_}, the users' "
                         f"schema has responses {rn}")
    req_uid = req_uid_all = requests.column("user_id").to_numpy()
    idx = join_users(req_uid, users.user_id)
    if (idx < 0).any():
        bad = np.unique(req_uid[idx < 0])
        if missing == "error":
            remedy = option_name("missing", "missing='drop'")
            raise DataError(f"requests: {len(bad)} user id(s) not found among the users, e.g. "
                            f"{bad[:5].tolist()}; pass {remedy} to skip those requests")
        keep = np.flatnonzero(idx >= 0)
        log.warning("requests: dropped %d request(s) of %d user id(s) not among the users",
                    len(idx) - len(keep), len(bad))
        requests, idx, req_uid = requests.take(pa.array(keep)), idx[keep], req_uid[keep]
    deltas = deltas if deltas is not None else hum_deltas(hum_estimator, users)
    spread, m = rule_spread(rule, hum_estimator, users)
    rid = (requests.column("request_id").to_numpy() if "request_id" in requests.column_names
           else np.arange(requests.num_rows))
    return _decision_frame(
        {"request_id": rid, "user_id": req_uid}, deltas["delta"][idx],
        request_weights(vw_estimator, requests), rn, tn, sigma=sigma, mode=mode, rule=rule,
        n_dropped=int(len(req_uid_all) - len(req_uid)), out_path=out_path,
        spread=None if spread is None else spread[idx], members=m)


def _decision_frame(ids: dict, delta: np.ndarray, w: np.ndarray, rn, tn, *, sigma: float,
                    mode: str, rule, n_dropped: int, out_path, spread=None,
                    members: int | None = None) -> pd.DataFrame:
    """The decisions of ``decide`` and ``decide_users``: delta (n, K, R) and w (n, R) of n
    rows -> the id columns ``ids``, w_<response>, phi_<treatment>, enable_<treatment> and
    ``arms`` (by ``rule`` when given, else phi > sigma in ``mode``); a rule with a bound
    decides on the lower bound from the members' spread (n, S) and adds
    phi_lower_<treatment>. Written to ``out_path`` when given."""
    phi, en = decide_arrays(delta, w, sigma=sigma, mode=mode)
    lower = None
    if rule is not None:
        _check_rule(rule, rn, tn)
        if rule.bound is not None:
            lower = rule.lower_scores(spread, members, w)
        en = rule.decide(delta, w, score=lower)
    df = pd.DataFrame(ids)
    for r, name in enumerate(rn):
        df[f"w_{name}"] = w[:, r]
    for k, name in enumerate(tn):
        df[f"phi_{name}"] = phi[:, k]
    for k, name in enumerate([] if lower is None else tn):
        df[f"phi_lower_{name}"] = lower[:, k]
    for k, name in enumerate(tn):
        df[f"enable_{name}"] = en[:, k]
    df["arms"] = arm_set_labels(en, tn)
    df.attrs["n_dropped"] = n_dropped
    if out_path is not None:
        write_frame(df, out_path)
    return df


def decide_users(
    users: ExperimentData,
    hum_estimator,
    w_user: np.ndarray,
    *,
    sigma: float = 0.0,
    mode: str = "independent",
    out_path: str | Path | None = None,
    deltas: dict | None = None,
    rule=None,
) -> pd.DataFrame:
    """Per-user decisions without request logs: w_user (N, R) (fixed business weights
    broadcast, or per-user weight columns; ``hmum.decision.weights``), phi (eq. 11) and
    the enabled treatments of each of the N users.

    ``rule`` replaces ``sigma`` / ``mode`` as in ``decide``. Returns a DataFrame (N
    rows): user_id (the row number when the schema has no user id), w_<response>,
    phi_<treatment>, enable_<treatment> and ``arms``; written to ``out_path`` when given.
    """
    s = users.schema
    rn, tn = s.response_names, s.arms[1:]
    w_user = np.asarray(w_user, dtype=np.float64)
    if w_user.shape != (len(users), len(rn)):
        raise ValueError(f"w_user must have shape (N, R) = {(len(users), len(rn))}, "
                         f"got {w_user.shape}")
    deltas = deltas if deltas is not None else hum_deltas(hum_estimator, users)
    spread, m = rule_spread(rule, hum_estimator, users)
    uid = users.user_id if users.user_id is not None else np.arange(len(users))
    return _decision_frame({"user_id": uid}, deltas["delta"], w_user, rn, tn, sigma=sigma,
                           mode=mode, rule=rule, n_dropped=0, out_path=out_path,
                           spread=spread, members=m)


def read_weight_columns(path: str | Path, users: ExperimentData, mapping: dict[str, str], *,
                        flag: str = "--weight-column") -> np.ndarray:
    """w_user (N, R) of ``users`` from the weight columns ``mapping`` {response: column}
    of the users' file at ``path``, normalized per row (``decision.weights.column_weights``).

    Rows line up on the schema's user id when it has one, else by position. Raises
    DecisionConfigError naming a column the file lacks.
    """
    from hmum.data.io import column_names, read_table
    from hmum.decision.weights import column_weights
    from hmum.exceptions import DecisionConfigError

    s = users.schema
    have = column_names(path)
    missing = [c for c in mapping.values() if c not in have]
    if missing:
        raise DecisionConfigError(f"{flag}: column(s) {missing} not in {path}")
    cols = list(dict.fromkeys(mapping.values()))
    if s.user_id and users.user_id is not None:
        t = read_table(path, columns=[s.user_id, *[c for c in cols if c != s.user_id]])
        idx = join_users(users.user_id, t.column(s.user_id).to_numpy())
        t = t.take(pa.array(idx))
    else:
        t = read_table(path, columns=cols)
        if t.num_rows != len(users):
            raise DecisionConfigError(f"{flag}: {path} has {t.num_rows} rows, the users "
                                      f"{len(users)}; without a user id the rows must line up")
    vals = {c: t.column(c).to_numpy(zero_copy_only=False) for c in cols}
    return column_weights(vals, mapping, s.response_names, flag=flag)


def _check_rule(rule, responses, treatments) -> None:
    if list(rule.responses) != list(responses) or list(rule.treatments) != list(treatments):
        raise DataError(f"the decision config is for responses {rule.responses} and treatments "
                        f"{rule.treatments}; the model has {list(responses)} and "
                        f"{list(treatments)}")


# --------------------------------------------------------------------------------------
# guardrails: fit the rule on a calibration split, check it on the rest
# --------------------------------------------------------------------------------------


def calibration_split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration rows, evaluation rows) of n users: a seeded ``share`` / rest split."""
    if not 0 < share < 1:
        raise ValueError(f"{option_name('calibration_share', 'calibration_share')}: expected a "
                         f"share in (0, 1), got {share}")
    perm = np.random.default_rng(seed).permutation(n)
    m = int(round(share * n))
    return np.sort(perm[:m]), np.sort(perm[m:])


def fit_guardrail_rule(
    users: ExperimentData,
    deltas: dict,
    w_user: np.ndarray,
    *,
    guardrails=(),
    max_share: dict | None = None,
    mode: str = "independent",
    sigma: float = 0.0,
    estimate: str = "auto",
    confidence: float = 0.9,
    margin: float = 0.0,
    calibration_share: float = 0.5,
    seed: int = 0,
    w_true: np.ndarray | None = None,
    oof_deltas: dict | None = None,
) -> tuple:
    """Fit a guardrail rule on a calibration split of ``users``; check it on the rest.

    deltas: ``hum_deltas`` of these users (y_hat (N, K+1, R), delta (N, K, R)) by the
    deployed model; w_user (N, R): each user's value weight. ``estimate``: "model",
    "dr" or "auto" (dr when the users carry a logged arm and responses and the mode
    gives one treatment per user, else model). Returns (rule, report): report["fit"]
    is ``guardrails.fit_rule``'s report on the calibration users; report["held_out"]
    the chosen and the unconstrained rule on the evaluation users: predicted change,
    DR change with its interval when logged, and on simulated data the true change,
    value and whether each guardrail held.

    ``oof_deltas`` (``out_of_fold_deltas`` of the same users): the rule is fitted on
    *every* user with those deltas (``calibration_share`` unused), and the check is
    the deployed model's ``deltas`` on the same users (report["check"] = "in_sample":
    predicted and, on simulated data, true change; no DR, as the deployed model may
    have trained on them).
    """
    from hmum.decision.guardrails import dr_change, fit_rule, predicted_effects
    from hmum.decision.rules import DecisionRule

    s = users.schema
    rn, tn = s.response_names, s.arms[1:]
    logged = users.arm is not None and users.y is not None
    if estimate == "auto":
        estimate = "dr" if logged and (mode == "exclusive" or s.K == 1) else "model"
    if oof_deltas is None:
        cal, ev = calibration_split(len(users), calibration_share, seed)
        fitting = deltas
    else:  # every user calibrates out of fold; the check reads the deployed model
        cal = ev = np.arange(len(users))
        fitting = oof_deltas
    y_hat, delta = deltas["y_hat"], deltas["delta"]

    def part(rows, src):
        if not logged:
            return None
        return {"y": users.y[rows], "arm": users.arm[rows], "y_hat": src["y_hat"][rows],
                "propensity": None if users.propensity is None else users.propensity[rows]}

    rule, fit_rep = fit_rule(
        fitting["delta"][cal], w_user[cal], fitting["y_hat"][cal, 0], responses=rn,
        treatments=tn, guardrails=guardrails, max_share=max_share, mode=mode, sigma=sigma,
        estimate=estimate, margin=margin, confidence=confidence, logged=part(cal, fitting))
    free = DecisionRule(rn, tn, mode=mode, sigma=[sigma] * s.K)
    held: dict = {"n_users": len(ev)}
    for name, r_ in (("chosen", rule), ("unconstrained", free)):
        en = r_.decide(delta[ev], w_user[ev])
        pe = predicted_effects(en, delta[ev], y_hat[ev, 0], w_user[ev])
        row = {"predicted_change": dict(zip(rn, map(float, pe["change"]), strict=True)),
               "predicted_value": pe["value"],
               "share": dict(zip(tn, map(float, pe["share"]), strict=True))}
        if logged and oof_deltas is None and en.sum(axis=1).max(initial=0) <= 1:
            pa_ = np.where(en.any(axis=1), en.argmax(axis=1) + 1, 0)
            lg = part(ev, deltas)
            ch, lo = dr_change(pa_, lg["y"], lg["arm"], lg["y_hat"],
                               propensity=lg["propensity"], confidence=confidence)
            row["dr_change"] = dict(zip(rn, map(float, ch), strict=True))
            row["dr_lower"] = dict(zip(rn, map(float, lo), strict=True))
        if users.mu is not None:
            from hmum.decision.evaluation import ground_truth_effects

            mu_all = None if users.mu_all is None else users.mu_all[ev]
            if en.all(axis=1).any() and mu_all is None and s.K > 1:
                row["true_change"] = None
            else:
                gt = ground_truth_effects(en, users.mu[ev], mu_all,
                                          w_true=None if w_true is None else w_true[ev])
                row["true_change"] = dict(zip(rn, map(float, gt["change"]), strict=True))
                row["true_value"] = gt["value"]
                row["held"] = {g.response: bool(gt["change"][rn.index(g.response)] >= g.floor)
                               for g in guardrails}
        held[name] = row
    check = "held_out" if oof_deltas is None else "in_sample"
    report = {"estimate": estimate, "fit": fit_rep, "held_out": held,
              "n_calibration": len(cal), "check": check}
    how = ({"calibration_share": calibration_share} if oof_deltas is None else
           {"calibration": "out_of_fold", "folds": int(oof_deltas["fold"].max()) + 1})
    rule = DecisionRule(**{**rule.__dict__, "fit": {**rule.fit, **how, "seed": seed,
                                                    "check": check, "held_out": held}})
    return rule, report


def arm_set_labels(enable: np.ndarray, treatment_names: Sequence[str]) -> np.ndarray:
    """(N,) strings: "none" or the enabled treatments joined by "+"."""
    names = np.asarray(treatment_names, dtype=object)
    codes = enable.astype(np.int64) @ (1 << np.arange(enable.shape[1]))
    labels = {c: "+".join(names[[(c >> i) & 1 == 1 for i in range(len(names))]]) or "none"
              for c in np.unique(codes)}
    return np.array([labels[c] for c in codes], dtype=object) if len(codes) else \
        np.zeros(0, dtype=object)


# --------------------------------------------------------------------------------------
# policy evaluation
# --------------------------------------------------------------------------------------


def policy_eval(
    users: ExperimentData,
    hum_estimator,
    out_dir: str | Path,
    *,
    requests: pa.Table | None = None,
    vw_estimator=None,
    request_w: tuple[np.ndarray, np.ndarray] | None = None,
    user_weights: np.ndarray | None = None,
    weights_text: str | None = None,
    w_true: np.ndarray | None = None,
    sigma: float = 0.0,
    fixed_weights: Sequence[float] | None = None,
    extra_policies: dict[str, np.ndarray] | None = None,
    n_boot: int = 500,
    seed: int = 0,
    plot: bool = True,
    title: str = "hmum policy evaluation",
    preamble: str = "",
    report_name: str = "report.md",
    world: str | None = None,
) -> dict:
    """The strategy table (paper Tables 3 and 4) for ``users``, written to ``out_dir``.

    Personalized weights: from ``requests`` scored by ``vw_estimator``, or
    precomputed ``request_w`` = (request user ids (Nq,), w (Nq, R)); averaged per
    user (module docstring). Without either, every user gets equal weights and
    HMUM reduces to the fixed-weight decision. ``user_weights`` (N, R) gives every
    user their weights directly instead (fixed business weights broadcast or per-user
    weight columns, ``hmum.decision.weights``; no requests needed), described in the
    report by ``weights_text``. ``extra_policies``: more
    {name: enable (N, K)} rows for the tables (e.g. diagnostics).

    Ground truth (users.mu, simulated data): ``strategy_table.{csv,json,md}``
    with the true relative change per response, value and oracle share, and
    ``tradeoff.png``. Logged arm and responses: ``ope_table.{csv,json,md}``,
    IPW and doubly-robust estimates (HUM's y_hat as outcome model) of the
    exclusive-mode strategies with seeded bootstrap intervals (and the
    trade-off plot from the DR estimates when there is no ground truth).
    ``report_name`` (report.md) holds everything. On ground truth the tables also
    hold the same decisions on the *true* uplift (diagnostic rows: personalized,
    fixed and, with ``w_true``, the true weights), and ``res["personalization"]``
    says what the personalized weights add over fixed ones on estimated and on true
    uplift (``personalization_summary``). ``world`` labels the simulated world.

    Returns {"strategy_table": DataFrame | None, "ope_table": DataFrame | None,
    "plot": Path | None, "report": Path, "markdown": str, "policies": {name:
    enable}, "w_user": (N, R), "n_requests": (N,)}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = users.schema
    rn, tn = s.response_names, s.arms[1:]
    n, k = len(users), s.K
    deltas = hum_deltas(hum_estimator, users)
    if request_w is None and requests is not None:
        if vw_estimator is None:
            raise ValueError("requests were given without a value-weight model (vw_estimator)")
        if "user_id" not in requests.column_names:
            raise DataError("requests: column 'user_id' is missing; it joins requests to users")
        request_w = (requests.column("user_id").to_numpy(), request_weights(vw_estimator, requests))
    if user_weights is not None:
        if requests is not None or request_w is not None:
            raise ValueError("give one weights source: user_weights or requests / request_w")
        w_user = np.asarray(user_weights, dtype=np.float64)
        if w_user.shape != (n, len(rn)):
            raise ValueError(f"user_weights must have shape (N, R) = {(n, len(rn))}, "
                             f"got {w_user.shape}")
        n_req = np.zeros(n, dtype=np.int64)
    elif request_w is not None:
        if users.user_id is None:
            raise DataError("users: no user id column (set the schema's user_id) to join the "
                            "requests' weights")
        idx = join_users(request_w[0], users.user_id)
        w_user, n_req = user_mean_weights(idx, request_w[1], n)
    else:
        w_user, n_req = np.full((n, len(rn)), 1.0 / len(rn)), np.zeros(n, dtype=np.int64)
    lines = [f"# {title}", ""]
    if preamble:
        lines += [preamble, ""]
    if user_weights is not None:
        lines += [f"{n:,} users; value weights: {weights_text or 'given per user'} (no "
                  f"request logs; mean over users "
                  f"{', '.join(f'{r} {v:.3f}' for r, v in zip(rn, w_user.mean(0), strict=True))}"
                  f"). sigma = {sigma}. Decision per user (see docs/decisions.md, Decisions "
                  "without request logs).", ""]
    else:
        lines += [
            f"{n:,} users, {int((n_req > 0).sum()):,} with at least one scored request "
            f"({int(n_req.sum()):,} requests); the others get the mean predicted weight "
            f"({', '.join(f'{r} {v:.3f}' for r, v in zip(rn, w_user.mean(0), strict=True))} "
            f"on average over users). sigma = {sigma}. Decision per user from the mean weight "
            "of their requests (see README, Decisions).", "",
        ]
    res: dict = {"strategy_table": None, "ope_table": None, "plot": None, "w_user": w_user,
                 "n_requests": n_req}
    truth = users.mu is not None
    # K > 2: partial subsets of treatments have no ground truth (off-policy
    # evaluation below skips any policy enabling several treatments by itself)
    exclusive_only = truth and k > 2
    pols = comparison_policies(
        deltas["delta"], w_user, sigma=sigma, fixed_weights=fixed_weights, treatment_names=tn,
        mu=users.mu, mu_all=users.mu_all, w_true=w_true, seed=seed,
        exclusive_only=exclusive_only,
    )
    if truth:
        pols.update(true_uplift_policies(users.mu, w_user, w_true, sigma=sigma,
                                         fixed_weights=fixed_weights,
                                         mode="exclusive" if exclusive_only else "independent"))
    pols.update(extra_policies or {})
    res["policies"] = pols
    if world:
        lines += [f"World: {world}.", ""]
    if truth:
        if k > 1 and users.mu_all is None and not exclusive_only:
            pols = {name: e for name, e in pols.items() if e.sum(axis=1).max(initial=0) < k}
        table = strategy_table(pols, users.mu, users.mu_all, w_true=w_true, response_names=rn,
                               treatment_names=tn, oracle=ORACLE)
        md = strategy_markdown(table, rn)
        _write_table(table, out, "strategy_table", md)
        res["strategy_table"] = table
        wdesc = "the users' true value weights" if w_true is not None else "equal weights 1/R"
        lines += [
            "## Strategies on ground truth (A/B-test view, paper Tables 3 and 4)", "",
            "Δ: true relative change of the population mean of each response against "
            "everyone in control. value: population mean of the true balanced score "
            f"sum_r w_r (mu_r^policy / mu_r^control - 1) with {wdesc}; oracle share: value / "
            "value of the oracle (which maximizes it per user). share: users per arm set.", "",
            md, "",
        ]
        res["personalization"] = personalization_summary(
            table, w_user, w_true, mode="exclusive" if exclusive_only else "independent")
        lines += personalization_lines(res["personalization"], rn)
        if plot and len(rn) >= 2:
            res["plot"] = _tradeoff_plot(
                list(table["strategy"]), table[f"change_{rn[0]}"], table[f"change_{rn[1]}"],
                out / "tradeoff.png", rn, "true relative change vs control")
    if users.arm is not None and users.y is not None:
        excl = {nm: logged_arm(e) for nm, e in pols.items() if e.sum(axis=1).max(initial=0) <= 1}
        ope = off_policy_table(
            excl, users.y, users.arm, propensity=users.propensity, y_hat=deltas["y_hat"],
            response_names=rn, n_boot=n_boot, seed=seed,
        )
        if res["strategy_table"] is not None:  # simulated data: put the truth beside
            st = res["strategy_table"].set_index("strategy")
            for r in rn:
                ope[f"true_change_{r}"] = st.loc[ope["strategy"], f"change_{r}"].to_numpy()
        md = ope_markdown(ope, rn)
        _write_table(ope, out, "ope_table", md)
        res["ope_table"] = ope
        prop = "the logged propensity" if users.propensity is not None else \
            "the empirical arm shares"
        lines += [
            "## Off-policy estimates from the logged experiment", "",
            "Relative change vs everyone in control estimated from the randomized log alone "
            f"(no ground truth): ipw = inverse propensity weighting with {prop}, dr = doubly "
            f"robust with the uplift model's y_hat. 95% percentile bootstrap ({n_boot} seeded "
            "resamples). Only strategies giving each user one logged arm can be scored.", "",
            md, "",
        ]
        if not truth and plot and len(rn) >= 2:
            dr = ope[ope.estimator == ope.estimator.iloc[-1]]
            xe = np.abs(np.stack([dr[f"change_{rn[0]}_lo"], dr[f"change_{rn[0]}_hi"]])
                        - dr[f"change_{rn[0]}"].to_numpy())
            ye = np.abs(np.stack([dr[f"change_{rn[1]}_lo"], dr[f"change_{rn[1]}_hi"]])
                        - dr[f"change_{rn[1]}"].to_numpy())
            res["plot"] = _tradeoff_plot(
                list(dr["strategy"]), dr[f"change_{rn[0]}"], dr[f"change_{rn[1]}"],
                out / "tradeoff.png", rn, f"{dr.estimator.iloc[0]} estimate vs control",
                xerr=100 * xe, yerr=100 * ye)
    if res["plot"] is not None:
        lines += [f"![trade-off]({Path(res['plot']).name})", "",
                  "Each point is a strategy; the dashed line is the Pareto front (no other "
                  "strategy is at least as good on both responses). Top right = both up.", ""]
    res["markdown"] = "\n".join(lines[2 + (2 if preamble else 0):])
    report = out / report_name
    report.write_text("\n".join(lines) + "\n")
    res["report"] = report
    return res


DIAG_HMUM = f"{HMUM} w on true δ (diagnostic)"
DIAG_FIXED = "fixed w on true δ (diagnostic)"
DIAG_TRUE = "true w on true δ (diagnostic)"


def true_uplift_policies(mu: np.ndarray, w_user: np.ndarray, w_true: np.ndarray | None, *,
                         sigma: float = 0.0, fixed_weights: Sequence[float] | None = None,
                         mode: str = "independent") -> dict[str, np.ndarray]:
    """The decisions on the *true* uplift (a perfect uplift model), enable (N, K) each.

    Separates what the value weights contribute from the uplift model's errors:
    personalized w_user (N, R), the fixed weights (default: the mean of w_user) and,
    with ``w_true`` (N, R), the users' true weights. mu (N, K+1, R).
    """
    d = relative_uplift(mu)
    fw = np.asarray(fixed_weights if fixed_weights is not None else w_user.mean(axis=0))
    out = {DIAG_HMUM: decide_arrays(d, w_user, sigma=sigma, mode=mode)[1],
           DIAG_FIXED: fixed_weight_policy(d, fw, sigma=sigma, mode=mode)}
    if w_true is not None:
        out[DIAG_TRUE] = decide_arrays(d, w_true, sigma=sigma, mode=mode)[1]
    return out


def personalization_summary(table: pd.DataFrame, w_user: np.ndarray,
                            w_true: np.ndarray | None, *, mode: str = "independent") -> dict:
    """What the personalized weights add over fixed ones: oracle shares and their ratio.

    ``estimated``: HMUM vs fixed w with the uplift model's delta; ``true_uplift``: the
    same on the true delta (and the true weights' share); ``corr_w_true``: per response,
    the correlation of the users' predicted and true weights (None without w_true).
    """
    st = table.set_index("strategy")
    col = "oracle_share" if "oracle_share" in st else "value"

    def get(name):
        return float(st.loc[name, col]) if name in st.index else float("nan")

    est = {"HMUM": get(f"{HMUM} ({mode})"), "fixed w": get(f"fixed w ({mode})")}
    tru = {"HMUM w": get(DIAG_HMUM), "fixed w": get(DIAG_FIXED), "true w": get(DIAG_TRUE)}
    def ratio(a, b):  # nan, not an error, when fixed weights capture nothing
        return a / b if b > 0 and np.isfinite(a) else float("nan")

    est["ratio"] = ratio(est["HMUM"], est["fixed w"])
    tru["ratio HMUM w / fixed"] = ratio(tru["HMUM w"], tru["fixed w"])
    tru["ratio true w / fixed"] = ratio(tru["true w"], tru["fixed w"])
    corr = None
    if w_true is not None and len(w_user) > 1:
        corr = [float(np.corrcoef(w_user[:, r], w_true[:, r])[0, 1])
                if w_user[:, r].std() > 0 else float("nan") for r in range(w_user.shape[1])]
    return {"metric": col, "mode": mode, "estimated": est, "true_uplift": tru,
            "corr_w_true": corr}


def personalization_lines(p: dict, response_names: Sequence[str]) -> list[str]:
    """The personalization summary as report lines."""
    e, t = p["estimated"], p["true_uplift"]
    what = "oracle share" if p["metric"] == "oracle_share" else "value"
    out = ["## What the personalized weights add", ""]
    if p["corr_w_true"] is not None:
        out.append("Correlation of the users' predicted value weights with their true ones: "
                   + ", ".join(f"{r} {c:.2f}" for r, c in zip(response_names, p["corr_w_true"],
                                                              strict=True)) + ".")
    out.append(f"{what} ({p['mode']} mode), with the uplift model's estimates: HMUM "
               f"{e['HMUM']:.3f} vs fixed weights {e['fixed w']:.3f} (ratio {e['ratio']:.2f}); "
               f"on the true uplift: HMUM's weights {t['HMUM w']:.3f}, fixed {t['fixed w']:.3f} "
               f"(ratio {t['ratio HMUM w / fixed']:.2f})"
               + (f", the true weights {t['true w']:.3f} (ratio {t['ratio true w / fixed']:.2f})"
                  if np.isfinite(t["true w"]) else "") + ".")
    return [*out, ""]


def _tradeoff_plot(names, x, y, path, rn, what, **kw) -> Path:
    from hmum.decision.plots import plot_tradeoff

    return plot_tradeoff(
        names, 100 * np.asarray(x), 100 * np.asarray(y), path,
        x_label=f"Δ {rn[0]} (%)", y_label=f"Δ {rn[1]} (%)",
        title=f"Trade-off per strategy ({what})",
        highlight=[nm for nm in names if nm.startswith(HMUM) or nm == ORACLE], **kw)


# --------------------------------------------------------------------------------------
# the demo stage
# --------------------------------------------------------------------------------------


def train_value_weights(
    requests: pa.Table,
    *,
    exclude_users: np.ndarray | None = None,
    epochs: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    model: dict | None = None,
    trainer: dict | None = None,
    log: Callable[[dict], None] | None = None,
):
    """Fit a ValueWeightEstimator on ``requests`` (minus those of ``exclude_users``).

    ``log`` receives one dict per finished epoch.
    """
    from hmum.models.value_weight import ValueWeightEstimator

    if exclude_users is not None and "user_id" in requests.column_names:
        keep = ~np.isin(requests.column("user_id").to_numpy(), exclude_users)
        if keep.sum() >= 100:  # too few left: train on everything rather than fail
            requests = requests.filter(pa.array(keep))
    cfg = {"seed": seed, "num_threads": threads, **(trainer or {})}
    if epochs is not None:
        cfg["max_epochs"] = epochs
    cfg = {k: v for k, v in cfg.items() if v is not None}
    return ValueWeightEstimator(model=model, trainer=cfg).fit(requests, log=log)


def simulate_user_requests(sim_config, user_ids: np.ndarray, *,
                           chunk: int = 20_000) -> Iterator[pa.Table]:
    """Fresh simulated requests, one per user in ``user_ids``, in chunks.

    Uses the simulation's world (same users, catalog and seed) with one request
    per user; request ids start after every id the logged requests can use, so
    these requests are new draws, not copies of the training requests.
    """
    from hmum.data.simulator import simulate_requests

    n_users = sim_config.n_users
    one = sim_config.model_copy(update={"requests_per_user": 1})
    base = n_users * max(1, math.ceil(sim_config.n_requests / n_users))
    wanted = np.zeros(n_users, dtype=bool)
    wanted[np.asarray(user_ids)] = True
    ids = np.flatnonzero(wanted)
    if len(ids) == 0:
        return
    for s in range(int(ids[0]), int(ids[-1]) + 1, chunk):
        t = simulate_requests(one, n=min(chunk, int(ids[-1]) + 1 - s), start=base + s)
        yield t.filter(pa.array(wanted[t.column("user_id").to_numpy()]))


def true_user_weights(sim_config, user_ids: np.ndarray) -> np.ndarray:
    """The simulated users' latent value weights (N, R), in the order of ``user_ids``."""
    from hmum.data.simulator import RESPONSES, simulate_users

    ids = np.asarray(user_ids)
    lo, hi = int(ids.min()), int(ids.max()) + 1
    t = simulate_users(sim_config, start=lo, n=hi - lo, include_latent=True)
    names = [r[0] for r in RESPONSES[: sim_config.n_responses]]
    w = np.stack([t.column(f"true_w_{r}").to_numpy() for r in names], axis=1)
    return w[ids - lo]


def contested_world_section(sim_config, *, n_users: int, epochs: int = 15, seed: int = 0,
                            threads: int | None = None) -> tuple[dict, str]:
    """The contested world (``simulator.CONTESTED_WORLD``) on its *true* uplift.

    Simulates ``n_users`` fresh users and the request log of that world (the
    simulation's other settings kept, seed + 1), trains a value-weight model on the
    requests and scores one fresh request per user; then, per mode, the oracle share
    of the true weights, of the best fixed weighting (their mean), of the model's
    weights and of the model's mean weight, all on the true uplift. Returns
    (summary, Markdown section).
    """
    from hmum.data.schema import ALL_TREATMENTS
    from hmum.data.schema import ground_truth_column as gt
    from hmum.data.simulator import CONTESTED_WORLD, simulate_requests, simulate_users
    from hmum.decision.evaluation import ground_truth_effects

    cfg = sim_config.model_copy(update={**CONTESTED_WORLD, "seed": sim_config.seed + 1,
                                        "n_users": max(n_users, sim_config.n_users)})
    vw = train_value_weights(simulate_requests(cfg), epochs=epochs, seed=seed, threads=threads)
    t = simulate_users(cfg, n=n_users, include_latent=True)
    rn = [c[7:] for c in t.column_names if c.startswith("true_w_")]
    w = np.stack([t.column(f"true_w_{r}").to_numpy() for r in rn], axis=1)
    k = cfg.n_treatments
    arms = ["control", *[f"t{i}" for i in range(1, k + 1)]]
    mu = np.stack([np.stack([t.column(gt(a, r)).to_numpy() for r in rn], 1) for a in arms], 1)
    mu_all = (np.stack([t.column(gt(ALL_TREATMENTS, r)).to_numpy() for r in rn], 1) if k > 1
              else None)
    w_vw = np.concatenate([vw.predict_weights(p) for p in
                           simulate_user_requests(cfg, np.arange(n_users))]).astype(np.float64)
    d = relative_uplift(mu)
    out: dict = {"world": world_label(cfg), "n_users": n_users,
                 "corr_w_true": float(np.corrcoef(w_vw[:, 0], w[:, 0])[0, 1])}
    rows = []
    for mode in ("exclusive",) + (("independent",) if k <= 2 else ()):
        pols = {"oracle": oracle_policy(mu, mu_all if mode == "independent" else None, w,
                                        mode=mode),
                "true w": decide_arrays(d, w, mode=mode)[1],
                "fixed w (mean true w)": fixed_weight_policy(d, w.mean(0), mode=mode),
                "value-weight model w": decide_arrays(d, w_vw, mode=mode)[1],
                "fixed w (mean model w)": fixed_weight_policy(d, w_vw.mean(0), mode=mode)}
        val = {nm: ground_truth_effects(e, mu, mu_all, w_true=w)["value"]
               for nm, e in pols.items()}
        out[mode] = {nm: v / val["oracle"] for nm, v in val.items()}
        rows.append(f"| {mode} | " + " | ".join(f"{out[mode][nm]:.3f}" for nm in list(pols)[1:])
                    + " |")
    md = "\n".join([
        "### The contested world, on its true uplift", "",
        f"{out['world']}: {n_users:,} fresh users; a value-weight model trained on that "
        f"world's {cfg.n_requests:,} logged requests (correlation of its weight of {rn[0]} "
        f"with the true weight {out['corr_w_true']:.2f}). Oracle share of each weighting, "
        "decisions on the true uplift (what the weights decide when the uplift is known):", "",
        "| mode | true w | fixed w (mean true w) | model w | fixed w (mean model w) |",
        "|---|---|---|---|---|", *rows, ""])
    return out, md


def world_label(sim_config) -> str:
    """"today's world" or "the contested world (contested_share ..., ...)" of a simulation."""
    if not getattr(sim_config, "contested", False):
        return "the simulator's today's world (default options)"
    return ("the contested world (contested_share "
            f"{sim_config.contested_share}, weight_spread {sim_config.weight_spread}, "
            f"weight_taste {sim_config.weight_taste})")





# --------------------------------------------------------------------------------------
# the inputs of the decision commands (hmum decide, hmum policy-eval)
# --------------------------------------------------------------------------------------


def read_requests(path: str | Path, vw_estimator=None) -> pa.Table:
    """The request table at ``path``; with a fitted value-weight model only the columns
    it reads (``cand_*``, ``recent_*``) plus ``request_id`` / ``user_id`` when present.

    Raises DataError naming the columns the model needs that the file lacks, and
    FileNotFoundError for a missing file.
    """
    from hmum.data.io import column_names, read_table

    if vw_estimator is None:
        return read_table(path)
    names = column_names(path)
    cols = [c for c in ("request_id", "user_id") if c in names]
    cols += ([f"cand_{f}" for f in vw_estimator.cand_fields_]
             + [f"recent_{f}" for f in vw_estimator.recent_fields_])
    missing = [c for c in cols if c not in names]
    if missing:
        raise DataError(f"{path}: missing request column(s) {missing} the value-weight model "
                        "needs")
    return read_table(path, columns=cols)


def load_decision_users(users: str | Path, schema, requests: pa.Table | None, *,
                        for_guardrails: bool = False) -> ExperimentData:
    """The users to decide for: the features of ``users`` (a Parquet/CSV path) under
    ``schema``.

    for_guardrails: the users a guardrail rule is fitted and checked on: every user,
    with the arm and responses when the file has the schema's arm and every response
    column (they check the rule). Otherwise only the features of the users that have
    requests (the users file may be much larger than the day's requests); every user
    when ``requests`` is None (fixed or per-user weights decide per user).
    """
    from hmum.data.io import column_names
    from hmum.data.validate import load_experiment

    logged = False
    if for_guardrails:
        logged = {schema.arm_column, *schema.response_names} <= set(column_names(users))
    u = load_experiment(users, schema, require_arm=logged, require_responses=logged,
                        require_all_arms=False)
    if (not for_guardrails and requests is not None and u.user_id is not None
            and "user_id" in requests.column_names):
        u = u.take(np.flatnonzero(np.isin(u.user_id, requests.column("user_id").to_numpy())))
    return u


def fit_request_guardrails(users: ExperimentData, hum_estimator, vw_estimator,
                           requests: pa.Table, guardrails=(), max_share: dict | None = None,
                           **fit_options) -> tuple:
    """``fit_guardrail_rule`` with each user's weight the mean over their requests.

    users: validated users with ids; requests: their requests (``user_id`` and the
    value-weight model's columns). ``fit_options``: mode, sigma, estimate,
    confidence, margin, calibration_share, seed (as ``fit_guardrail_rule``).

    Returns (rule, deltas, report): the fitted ``DecisionRule``, ``hum_deltas`` of
    the users (reusable by ``decide``) and the fit's report.
    """
    if users.user_id is None or "user_id" not in requests.column_names:
        raise DataError(f"{option_name('guardrails', 'guardrails')} needs user ids in "
                        f"{option_name('users', 'users')} and "
                        f"{option_name('requests', 'requests')} to give users their weights")
    deltas = hum_deltas(hum_estimator, users)
    idx = join_users(requests.column("user_id").to_numpy(), users.user_id)
    w_user, _ = user_mean_weights(idx, request_weights(vw_estimator, requests), len(users))
    rule, report = fit_guardrail_rule(users, deltas, w_user, guardrails=guardrails,
                                      max_share=max_share, **fit_options)
    return rule, deltas, report


def load_policy_eval_users(users: str | Path, schema, *, hum_estimator=None,
                           test_split: bool = False, drop_invalid_responses: bool = False,
                           ) -> tuple[ExperimentData, np.ndarray | None, int]:
    """The experiment data ``policy_eval`` scores, read from ``users`` under ``schema``.

    The simulator's latent weights (columns ``true_w_<response>``), when present,
    define the value and the oracle. test_split: keep only the rows the HUM model
    held out for testing (``hmum.workflows.train.held_out_rows``).

    Returns (users, w_true (N, R) or None, rows dropped by drop_invalid_responses).
    """
    from hmum.data.io import column_names, read_table
    from hmum.data.validate import load_experiment
    from hmum.workflows.train import held_out_rows

    d = load_experiment(users, schema, drop_invalid_responses=drop_invalid_responses)
    n_dropped = d.n_dropped
    wcols = [f"true_w_{r}" for r in schema.response_names]
    w_true = None
    if all(c in column_names(users) for c in wcols):
        if n_dropped:
            flag = option_name("drop_invalid_responses", "drop_invalid_responses=True")
            raise DataError(f"{flag}: not supported on simulated data with true weights "
                            f"{wcols} (their rows would no longer line up)")
        wt = read_table(users, columns=wcols)
        w_true = np.stack([wt.column(c).to_numpy() for c in wcols], axis=1)
    if test_split:
        idx = held_out_rows(hum_estimator, d, source=f"{option_name('users', 'users')} {users}")
        d = d.take(idx)
        w_true = None if w_true is None else w_true[idx]
    return d, w_true, n_dropped


def world_of(users: str | Path) -> str | None:
    """The simulated world of a users file (``world_label``), from the simulation.json the
    simulator wrote beside it; None for data that are not a simulation's."""
    from hmum.data.simulator import SimulatorConfig

    users = Path(users)
    cfg = (users if users.is_dir() else users.parent) / "simulation.json"
    if not cfg.is_file():
        return None
    try:
        return world_label(SimulatorConfig.model_validate_json(cfg.read_text()))
    except ValueError:  # not a simulation's config: no world to name
        return None
