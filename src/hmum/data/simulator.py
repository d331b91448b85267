"""Short-video platform experiment simulator with known ground truth.

The simulator plays a randomized experiment on a short-video platform: every user
receives one arm (control, or one of K ranking strategies), and R responses are
logged over a one-week window. Because the data are generated, the true expected
value of every response under every arm is known and stored next to the data. A
second table holds request-level logs (candidates, recent items, exposed items and
the share labels of paper eq. 9) for the value-weight model of the decision half.

Everything below is deterministic for ``SimulatorConfig.seed``: user ``i`` depends
only on ``(seed, i)`` (random streams are keyed by ``(seed, stream, block)`` with
blocks of 10 000 users), so the output does not depend on ``chunk_size``, and the
first ``n`` users of a large run equal a run of ``n`` users.

Generating equations
--------------------

Notation: ``z`` is a fresh standard normal draw each time it appears;
``sigmoid(x) = 1 / (1 + exp(-x))``; ``NB(m, k)`` is a negative binomial count
with mean ``m`` and shape ``k`` (a Poisson draw with a Gamma(k, m/k) rate);
``ordinal(x; c)`` is the number of cut points ``c`` below ``x``.

**1. Users.** ``region`` (8 values), ``gender`` (3) and ``age_band`` (6) are drawn
from fixed shares. Latent traits follow, partly explained by them:

* orientation ``u = a_region + a_gender + a_age + 0.9 z`` (``u > 0``:
  consumption-oriented, ``u < 0``: commercially-oriented); ``c = sigmoid(u)``;
* engagement ``e = b_age + 0.9 z``; sociability ``v = c_gender + c_age + 0.9 z``;
  novelty seeking ``n = d_age + 0.9 z``;
* spending power ``q = w_region - 0.3 u + 0.2 e + 0.8 z``;
* sensitivity to treatment k ``s_k = exp(0.2 g_k + 0.45 z - 0.12)`` with
  ``g = (e, q, v, n)`` for k = 1..4;
* viewing habits ``h_time = 0.35 z``, ``h_views = 0.35 z``.

The 17 observable fields are noisy proxies of these traits (the traits are never
written, unless ``write_latent``):

* categorical: ``region``, ``gender``, ``age_band``,
  ``device_tier = ordinal(q)``, ``activity_level = ordinal(e + 0.5 z)``,
  ``commercial_value_class = ordinal(-u + 0.3 q + z)``;
* numeric: ``usage_time_7d = 7 * 40 * exp(0.6 e + 0.25 u + h_time + 0.3 z)``
  (minutes; ``usage_time_30d`` the same with 30 days and noise ``0.12 z``),
  ``video_views_7d ~ NB(7 * 25 * exp(0.5 e - 0.25 u + h_views + 0.3 z), 5)``
  (``video_views_30d`` alike), ``avg_play_seconds = 25 exp(0.25 u + 0.4 z)``,
  ``tenure_days = clip(exp(6 - 0.6 n + 0.2 e + 0.5 z), 1, 3650)``,
  ``follow_count ~ NB(exp(3 + 0.4 e + 0.5 v), 1)``,
  ``like_rate_30d = sigmoid(-3 + 0.5 v + 0.15 u + 0.3 z)``,
  ``comment_count_30d ~ NB(exp(0.3 + 0.3 e + 0.7 v), 0.8)``,
  ``ad_click_rate_30d = sigmoid(-4 - 0.3 u + 0.5 z)``,
  ``purchase_count_90d ~ NB(exp(-0.6 - 0.5 u + 0.3 q), 0.7)``.

**2. Potential outcomes.** Responses live on three axes: consumption, commercial,
social. Response r has loadings ``l_r`` on them and a scale ``m_r``:

=============  ==========  ========  ================  ===================
response       kind        m_r       l_r               noise
=============  ==========  ========  ================  ===================
usage_time     continuous  280 min   (1, 0, 0)         lognormal, sd 0.8
video_views    count       175       (0, 1, 0)         NB shape 2
likes          count       10        (0.3, 0.5, 0.8)   NB shape 0.8
shares         count       1.5       (0, 0.4, 1)       NB shape 0.5
comments       count       2.5       (0.4, 0, 1)       NB shape 0.5
follows        count       1         (0.5, 0, 0.8)     NB shape 0.5
=============  ==========  ========  ================  ===================

(the first R rows are used). With base axes
``B = (0.6 e + 0.25 u + h_time, 0.5 e - 0.25 u + h_views, 0.3 e + 0.6 v)``::

    mu_r^0(x) = m_r * exp(l_r . B)                      (control)
    mu_r^a(x) = mu_r^0(x) * exp(lam * l_r . A^a(x)),    lam = 0.02 * effect_scale

where ``A^a`` is the effect of arm a on the three axes (``m = 1 - c``,
``sv = sigmoid(v - 0.5)``, ``nv = sigmoid(n)``):

* t1, consumption-side scorer: ``s1 * (1.5 c - 0.3, 1.4 c - 1.1, 0.3 (c - 0.5))``;
* t2, commercialization-side scorer: ``s2 * (1.4 m - 1.1, 1.5 m - 0.3, -0.1)``;
* t3, social / interaction scorer: ``s3 * (0.8 sv - 0.6, 0.2 - 0.5 sv, 1.6 sv - 0.4)``;
* t4, freshness scorer: ``s4 * (1.4 nv - 0.6, 1.2 nv - 0.5, 0.6 nv - 0.3)``;
* "all" (every treatment at once, K > 1): ``sum_k A^k + I`` with the interaction
  ``I = sqrt(s1 s2) * (-0.45, 0.25, 0)`` when t1 and t2 are stacked (the stacked
  scorers over-promote short commercial videos), minus ``0.3 |A^k|``
  (element-wise) for every stacked k >= 3 (diminishing returns).

So t1 for everyone raises mean usage time and lowers mean views, t2 does the
opposite, and both together trade off as well (the pattern of paper Table 4),
while sending t1 to consumption-oriented users and t2 to commercially-oriented
ones raises both. With ``effect_scale = 1`` the population effects of t1, t2 and
"all" are about 0.5-1.5 % (t3, t4: 0.05-1 %; per user up to a few %), small
against the response noise, as in real A/B tests. Effect signs vary across users
(e.g. t1 raises views for the most consumption-oriented users).

**3. Value weights.** The user's latent value weight over responses is
``w = softmax(theta)``, ``theta_r = 0.5 * l_r . (u, -u, v - 1)`` (for R = 2,
``w_usage_time = c``). The *oracle policy* gives each user the arm among
{control, t1..tK, all} that maximizes ``phi^a = sum_r w_r (mu_r^a / mu_r^0 - 1)``
(paper eq. 11 with the true quantities); its population effects are reported.

**3b. The contested world** (``contested_share``, ``weight_spread``, ``weight_taste``;
all off by default, which gives today's world bit for bit). In today's world the sign
of a user's uplift follows the same orientation ``c`` that sets their value weight, so
one fixed weighting already picks nearly the right users and personalized weights
decide almost nothing. The contested world separates the two:

* value weights: ``theta_r = 0.5 * l_r . (a u + b xi, -(a u + b xi), v - 1)`` with
  ``a = weight_spread``, ``b = weight_taste`` and a taste ``xi ~ N(0, 1)`` that no user
  field reveals (for R = 2, ``w_usage_time = sigmoid(a u + b xi)``); requests follow
  these weights (section 5), so only the request-level model can learn ``xi``;
* contested users: ``kappa = 0.95 (n + 0.041) / 0.94 + 0.312 z`` (about N(0, 1); novelty
  ``n`` shows in ``tenure_days`` and ``age_band``); the users with
  ``kappa > Phi^-1(1 - contested_share)`` (that share of users) get, instead of the
  t1 / t2 patterns above, ``A^1 = s1 * (1.0, -0.8, 0)`` and ``A^2 = s2 * (-0.8, 1.0, -0.1)``:
  each treatment raises one response and lowers the other whatever the orientation,
  so with R = 2 t1 is worth it exactly when ``w_usage_time > 0.444`` and t2 when
  ``w_video_views > 0.444``; "all" stacks them as above.

``CONTESTED_WORLD`` holds the settings the benchmarks and the demo call "the
contested world" (``contested_share = 0.4, weight_taste = 1.0``): there, on the true
uplift, the users' true weights reach about 1.5x the oracle share of the best fixed
weighting (``benchmarks/bench_decisions.py``). With ``write_latent`` the users table
also holds ``latent_taste`` and ``latent_contested``.

**4. Assignment and observed responses.** Randomized: ``arm ~ Categorical(arm_shares)``
(equal shares by default). Confounded: ``P(arm = a | x) = softmax_a(log share_a +
strength * beta_a . (act, com))`` with ``act``, ``com`` the standardized
``activity_level`` and ``commercial_value_class`` codes and
``beta = (0, 0), (0.8, 0), (0, 0.8), (-0.5, 0.3), (-0.6, 0)`` for control, t1..t4.
The column ``propensity`` holds the probability of the received arm. Observed:
``usage_time = mu * exp(0.8 z - 0.32)`` (so its mean is mu), counts ``~ NB(mu, k_r)``.

**5. Requests (paper section 4.2.2).** An item catalog of ``n_items`` videos: a
``category`` (20 values) with a mean position on the three axes, item axes
``= category mean + 0.6 z``, a lognormal popularity, ``duration_band`` (5,
ordinal of the consumption axis), ``commercial_flag`` (commercial axis high),
``popularity_bucket`` (decile), ``author_tier`` (4, social axis and popularity).
Item score for response r: ``score_r = exp(l_r . axes + 0.2 log pop + 0.3 z)``;
an item's type is the response whose score has the highest percentile rank within
the catalog. Request j belongs to user ``j // requests_per_user`` (mod n_users);
its weight is ``w_req = softmax(theta + 0.4 z)``. Recent items (``n_recent``) are
drawn by type with probabilities ``0.75 w_req + 0.25 q`` (``q`` the catalog type
shares), candidates (``n_candidates``) with ``0.35 w_req + 0.65 q``, each item of a
type by popularity. A candidate's score is the item score times ``exp(0.15 z)``; its
percentile ranks ``p_r`` are taken within the catalog's scores, and its type is
``argmax_r p_r``. The ``n_exposed`` candidates with the highest
``sum_r w_req_r p_r + 0.05 * Gumbel`` are exposed; the label
``o_r = V_r / V`` is the share of exposed candidates of type r (eq. 9, sums to 1).

**6. Files** written by ``simulate(config, out_dir)``:

* ``users.parquet``: ``user_id``, the 17 fields (categorical as strings), ``arm``
  (0 = control, k = t_k), ``propensity``, the R responses, and the ground truth
  ``mu__<arm>__<response>`` for arm in control, t1..tK and ``all`` (K > 1);
* ``requests.parquet``: ``request_id``, ``user_id``, ``cand_<field>`` and
  ``recent_<field>`` (fixed-size lists of item-field codes), ``cand_score_<response>``,
  ``exposed`` (candidate indices), labels ``o_<response>`` and the request's latent
  value weights ``true_w_<response>``;
* ``schema.json`` (the users table's Schema) and ``simulation.json`` (the config).

Public API: ``SimulatorConfig``, ``simulate``, ``SimulationResult``,
``simulate_users``, ``simulate_requests``, ``simulation_schema``, ``arm_names``;
constants ``RESPONSES``, ``TREATMENTS``, ``ITEM_FIELDS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hmum.data.schema import (
    ALL_TREATMENTS,
    FeatureSpec,
    ResponseSpec,
    Schema,
    ground_truth_column,
)

__all__ = [
    "CONTESTED_WORLD",
    "ITEM_FIELDS",
    "MAX_TREATMENTS",
    "RESPONSES",
    "TREATMENTS",
    "SimulationResult",
    "SimulatorConfig",
    "arm_names",
    "simulate",
    "simulate_requests",
    "simulate_users",
    "simulation_schema",
]

# --------------------------------------------------------------------------------------
# The simulated world (fixed; the seed only drives sampling)
# --------------------------------------------------------------------------------------

#: Responses in order: (name, kind, scale m_r, loadings l_r, noise parameter).
#: noise: lognormal sd for continuous, negative-binomial shape for counts.
RESPONSES: tuple[tuple[str, str, float, tuple[float, float, float], float], ...] = (
    ("usage_time", "continuous", 280.0, (1.0, 0.0, 0.0), 0.8),
    ("video_views", "count", 175.0, (0.0, 1.0, 0.0), 2.0),
    ("likes", "count", 10.0, (0.3, 0.5, 0.8), 0.8),
    ("shares", "count", 1.5, (0.0, 0.4, 1.0), 0.5),
    ("comments", "count", 2.5, (0.4, 0.0, 1.0), 0.5),
    ("follows", "count", 1.0, (0.5, 0.0, 0.8), 0.5),
)

#: Treatments t1..t4, in order.
TREATMENTS: tuple[str, ...] = (
    "consumption-side scorer",
    "commercialization-side scorer",
    "social/interaction scorer",
    "freshness scorer",
)
MAX_TREATMENTS = len(TREATMENTS)

#: Item fields of the request logs and their number of values (codes 0..n-1).
ITEM_FIELDS: dict[str, int] = {
    "category": 20,
    "duration_band": 5,
    "commercial_flag": 2,
    "popularity_bucket": 10,
    "author_tier": 4,
}

_BASE_EFFECT = 0.02  # lam at effect_scale = 1
#: SimulatorConfig options of "the contested world" (docstring section 3b).
CONTESTED_WORLD: dict[str, float] = {"contested_share": 0.4, "weight_taste": 1.0}
#: Contested users' effect of t1 and t2 on the three axes (times s_k; docstring section 3b).
_CONTESTED_T1 = (1.0, -0.8, 0.0)
_CONTESTED_T2 = (-0.8, 1.0, -0.1)
_BLOCK = 10_000  # users per random-stream block (the unit of determinism)
_REQ_BLOCK = 2_000  # requests per random-stream block
#: rows per Parquet row group of users.parquet (whole row groups go to each DDP worker)
USERS_ROW_GROUP = 5 * _BLOCK
_STREAM_USERS, _STREAM_ASSIGN, _STREAM_OUTCOME, _STREAM_CATALOG, _STREAM_REQUESTS = range(5)

_REGIONS = ("north", "south", "east", "west", "central", "northeast", "northwest", "southwest")
_REGION_P = (0.16, 0.16, 0.15, 0.12, 0.14, 0.09, 0.08, 0.10)
_REGION_U = (0.2, -0.2, 0.1, -0.1, 0.0, 0.3, -0.3, 0.0)
_REGION_WEALTH = (0.3, -0.2, 0.5, -0.3, 0.1, -0.1, -0.4, 0.0)
_GENDERS = ("female", "male", "unknown")
_GENDER_P = (0.48, 0.47, 0.05)
_GENDER_U = (0.15, -0.15, 0.0)
_GENDER_V = (0.2, -0.1, 0.0)
_AGES = ("<18", "18-24", "25-30", "31-40", "41-50", "50+")
_AGE_P = (0.06, 0.22, 0.22, 0.24, 0.15, 0.11)
_AGE_U = (0.5, 0.35, 0.1, -0.2, -0.35, -0.2)
_AGE_E = (0.3, 0.35, 0.15, -0.1, -0.3, -0.4)
_AGE_V = (0.4, 0.3, 0.1, -0.1, -0.3, -0.4)
_AGE_N = (0.5, 0.3, 0.0, -0.2, -0.3, -0.4)
_DEVICE = ("low", "mid", "high")
_DEVICE_CUTS = (-0.6, 0.6)
_ACTIVITY = ("low", "medium", "high", "very_high")
_ACTIVITY_CUTS = (-0.9, 0.1, 1.0)
_COMMERCIAL = ("none", "low", "medium", "high", "premium")
_COMMERCIAL_CUTS = (-1.2, -0.3, 0.5, 1.3)

_CATEGORICAL = {
    "region": _REGIONS,
    "gender": _GENDERS,
    "age_band": _AGES,
    "device_tier": _DEVICE,
    "activity_level": _ACTIVITY,
    "commercial_value_class": _COMMERCIAL,
}
_NUMERIC = (
    "tenure_days",
    "usage_time_7d",
    "usage_time_30d",
    "video_views_7d",
    "video_views_30d",
    "avg_play_seconds",
    "follow_count",
    "like_rate_30d",
    "comment_count_30d",
    "ad_click_rate_30d",
    "purchase_count_90d",
)
_INT_NUMERIC = {
    "tenure_days", "video_views_7d", "video_views_30d", "follow_count",
    "comment_count_30d", "purchase_count_90d",
}

# Confounded assignment: weights on (standardized activity, commercial class) per arm.
_CONFOUND_BETA = np.array([(0.0, 0.0), (0.8, 0.0), (0.0, 0.8), (-0.5, 0.3), (-0.6, 0.0)])

# Item categories: mean position on the (consumption, commercial, social) axes and
# shares. Drawn once from a constant seed so every run shares the same world.
_world = np.random.default_rng(20240601)
_CAT_MEANS = _world.normal(0.0, 0.8, size=(ITEM_FIELDS["category"], 3))
_CAT_P = _world.dirichlet(np.full(ITEM_FIELDS["category"], 3.0))
del _world


def _loadings(n_responses: int) -> np.ndarray:
    """(R, 3) loadings of the first R responses on the three axes."""
    return np.array([r[3] for r in RESPONSES[:n_responses]], dtype=np.float64)


# --------------------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------------------


class SimulatorConfig(BaseModel):
    """Every parameter of a simulation (the only home of its defaults).

    Saved as ``simulation.json`` beside the data.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(200_000, ge=1, description="users (rows of users.parquet)")
    n_treatments: int = Field(2, ge=1, le=MAX_TREATMENTS, description="K, treatments t1..tK")
    n_responses: int = Field(2, ge=1, le=len(RESPONSES), description="R, first R of RESPONSES")
    seed: int = Field(0, ge=0)
    arm_shares: list[float] | None = Field(
        None, description="K+1 assignment shares, control first; None = equal shares"
    )
    effect_scale: float = Field(1.0, ge=0.0, le=50.0, description="multiplies every effect")
    confounded: bool = Field(False, description="assignment depends on features")
    confounding_strength: float = Field(1.0, ge=0.0, le=10.0)
    n_requests: int = Field(20_000, ge=0, description="rows of requests.parquet")
    requests_per_user: int = Field(5, ge=1)
    n_candidates: int = Field(100, ge=1, description="L, candidates per request")
    n_recent: int = Field(20, ge=1, description="recent interacted items per request")
    n_exposed: int = Field(10, ge=1, description="E, exposed candidates per request")
    n_items: int = Field(50_000, ge=100, description="videos in the item catalog")
    chunk_size: int = Field(500_000, ge=1, description="users generated and written at once")
    write_latent: bool = Field(False, description="also write latent traits to users.parquet")
    # --- the contested world (section 3b of the module docstring); defaults = today's world
    contested_share: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of users for whom t1 and t2 trade one response off against the other "
                    "whatever their orientation (0 = today's world)")
    weight_spread: float = Field(
        1.0, ge=0.0, le=10.0, description="multiplies the orientation part of the latent value "
                                          "weights' logits theta (1 = today's world)")
    weight_taste: float = Field(
        0.0, ge=0.0, le=10.0,
        description="sd of a taste component of theta that no user feature reveals (only the "
                    "requests do; 0 = today's world)")

    @property
    def contested(self) -> bool:
        """True when any contested-world option differs from today's world."""
        return self.contested_share > 0 or self.weight_spread != 1.0 or self.weight_taste > 0

    @model_validator(mode="after")
    def _check(self) -> SimulatorConfig:
        if self.arm_shares is not None:
            k1 = self.n_treatments + 1
            s = self.arm_shares
            if len(s) != k1:
                raise ValueError(
                    f"arm_shares must have n_treatments + 1 = {k1} entries (control first), "
                    f"got {len(s)}: {s}"
                )
            if not all(math.isfinite(x) and x > 0 for x in s):
                raise ValueError(f"arm_shares must all be positive finite numbers, got {s}")
            if abs(sum(s) - 1.0) > 1e-6:
                raise ValueError(f"arm_shares must sum to 1, got sum {sum(s):.6g} for {s}")
        if self.n_exposed > self.n_candidates:
            raise ValueError(
                f"n_exposed ({self.n_exposed}) must not exceed n_candidates ({self.n_candidates})"
            )
        return self

    @property
    def shares(self) -> np.ndarray:
        """(K+1,) assignment shares, control first."""
        k1 = self.n_treatments + 1
        if self.arm_shares is None:
            return np.full(k1, 1.0 / k1)
        return np.asarray(self.arm_shares, dtype=np.float64)


@dataclass(frozen=True)
class SimulationResult:
    """What ``simulate`` wrote, and a summary of the simulated experiment.

    ``summary`` is plain JSON-able data: n_users, n_requests, arms, responses,
    rows_per_arm {arm: int}, mean_response {arm: {response: float}},
    observed_relative_effect {treatment: {response}} (difference in means vs
    control, biased when confounded), true_mean {arm or "all": {response}},
    true_relative_effect {treatment or "all": {response}}, oracle_policy
    {"relative_effect": {response}, "arm_share": {arm or "all": float}},
    request_label_mean {response: float}.
    """

    out_dir: Path
    users_path: Path
    requests_path: Path
    schema_path: Path
    config_path: Path
    schema: Schema
    summary: dict[str, Any] = field(default_factory=dict)


def arm_names(config: SimulatorConfig) -> list[str]:
    """["control", "t1", ..., "tK"]."""
    return ["control", *[f"t{k}" for k in range(1, config.n_treatments + 1)]]


def _truth_names(config: SimulatorConfig) -> list[str]:
    """Arms with ground truth: the K+1 arms, plus "all" when K > 1 (A names)."""
    names = arm_names(config)
    return [*names, ALL_TREATMENTS] if config.n_treatments > 1 else names


def simulation_schema(config: SimulatorConfig) -> Schema:
    """The Schema of ``users.parquet`` for this configuration (F = 17 fields)."""
    feats = [FeatureSpec(name=n, kind="categorical") for n in _CATEGORICAL]
    feats += [FeatureSpec(name=n, kind="numeric") for n in _NUMERIC]
    return Schema(
        features=feats,
        arm_column="arm",
        arms=arm_names(config),
        responses=[
            ResponseSpec(name=r[0], kind=r[1]) for r in RESPONSES[: config.n_responses]
        ],
        user_id="user_id",
        ground_truth=True,
    )


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _rng(seed: int, stream: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, block)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _categorical(uniform: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: uniform (N,) and p (C,) or (N, C) -> codes (N,)."""
    cdf = np.cumsum(p, axis=-1)
    if cdf.ndim == 1:
        codes = np.searchsorted(cdf, uniform, side="right")
        return np.minimum(codes, len(p) - 1)
    # Rounding may leave cdf[-1] slightly below 1; clip to the last category.
    codes = (uniform[:, None] >= cdf).sum(axis=1)
    return np.minimum(codes, p.shape[-1] - 1)


def _ordinal(x: np.ndarray, cuts: tuple[float, ...]) -> np.ndarray:
    return np.searchsorted(np.asarray(cuts), x).astype(np.int8)


def _neg_binomial(rng: np.random.Generator, mean: np.ndarray, shape: float) -> np.ndarray:
    """Counts with E = mean and Var = mean + mean^2 / shape, shape of ``mean``."""
    return rng.poisson(rng.gamma(shape, mean / shape))


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------


def _population(seed: int, block: int) -> dict[str, np.ndarray]:
    """Features and latent traits of the _BLOCK users of one block (all arrays (B,))."""
    rng = _rng(seed, _STREAM_USERS, block)
    n = _BLOCK
    # One row per Gaussian need, in a fixed order; spare rows let a field be added
    # later without shifting the draws of the others.
    z = rng.standard_normal((24, n))
    uni = rng.random((3, n))
    region = _categorical(uni[0], np.asarray(_REGION_P)).astype(np.int8)
    gender = _categorical(uni[1], np.asarray(_GENDER_P)).astype(np.int8)
    age = _categorical(uni[2], np.asarray(_AGE_P)).astype(np.int8)

    u = np.take(_REGION_U, region) + np.take(_GENDER_U, gender) + np.take(_AGE_U, age)
    u += 0.9 * z[0]
    e = np.take(_AGE_E, age) + 0.9 * z[1]
    v = np.take(_GENDER_V, gender) + np.take(_AGE_V, age) + 0.9 * z[2]
    nov = np.take(_AGE_N, age) + 0.9 * z[3]
    q = np.take(_REGION_WEALTH, region) - 0.3 * u + 0.2 * e + 0.8 * z[4]
    g = (e, q, v, nov)
    # -0.12 keeps E[s_k] near 1 (lognormal mean correction, roughly).
    sens = np.stack([np.exp(0.2 * g[k] + 0.45 * z[5 + k] - 0.12) for k in range(4)])
    h_time = 0.35 * z[9]
    h_views = 0.35 * z[10]
    # contested world (rows 21, 22 were spare: today's draws are untouched).
    # kappa ~ N(0, 1): novelty standardized (mean -0.041, sd 0.94 over the age mix) plus noise,
    # so tenure_days and age_band reveal who is contested, imperfectly.
    kappa = 0.95 * (nov + 0.041) / 0.94 + 0.312 * z[21]
    taste = z[22]

    out: dict[str, np.ndarray] = {
        "region": region,
        "gender": gender,
        "age_band": age,
        "device_tier": _ordinal(q, _DEVICE_CUTS),
        "activity_level": _ordinal(e + 0.5 * z[11], _ACTIVITY_CUTS),
        "commercial_value_class": _ordinal(-u + 0.3 * q + 1.0 * z[12], _COMMERCIAL_CUTS),
    }
    t_log = math.log(40.0) + 0.6 * e + 0.25 * u + h_time
    out["usage_time_7d"] = 7.0 * np.exp(t_log + 0.3 * z[13])
    out["usage_time_30d"] = 30.0 * np.exp(t_log + 0.12 * z[14])
    v_log = math.log(25.0) + 0.5 * e - 0.25 * u + h_views
    out["video_views_7d"] = _neg_binomial(rng, 7.0 * np.exp(v_log + 0.3 * z[15]), 5.0)
    out["video_views_30d"] = _neg_binomial(rng, 30.0 * np.exp(v_log + 0.12 * z[16]), 5.0)
    out["avg_play_seconds"] = 25.0 * np.exp(0.25 * u + 0.4 * z[17])
    out["tenure_days"] = np.clip(np.rint(np.exp(6.0 - 0.6 * nov + 0.2 * e + 0.5 * z[18])), 1, 3650)
    out["follow_count"] = _neg_binomial(rng, np.exp(3.0 + 0.4 * e + 0.5 * v), 1.0)
    out["like_rate_30d"] = _sigmoid(-3.0 + 0.5 * v + 0.15 * u + 0.3 * z[19])
    out["comment_count_30d"] = _neg_binomial(rng, np.exp(0.3 + 0.3 * e + 0.7 * v), 0.8)
    out["ad_click_rate_30d"] = _sigmoid(-4.0 - 0.3 * u + 0.5 * z[20])
    out["purchase_count_90d"] = _neg_binomial(rng, np.exp(-0.6 - 0.5 * u + 0.3 * q), 0.7)

    out.update(
        latent_orientation=u,
        latent_engagement=e,
        latent_sociability=v,
        latent_novelty=nov,
        latent_spending=q,
        **{f"latent_sensitivity_t{k + 1}": sens[k] for k in range(4)},
        _h_time=h_time,
        _h_views=h_views,
        _kappa=kappa,
        latent_taste=taste,
    )
    return out


def _value_weights(pop: dict[str, np.ndarray], config: SimulatorConfig) -> np.ndarray:
    """Latent log value weights theta (N, R); w = softmax(theta) (docstring section 3)."""
    u, v = pop["latent_orientation"], pop["latent_sociability"]
    if config.weight_spread == 1.0 and config.weight_taste == 0.0:
        axes = np.stack([u, -u, v - 1.0], axis=1)  # (N, 3): today's world, bit for bit
    else:
        t = config.weight_taste * pop["latent_taste"]
        us = config.weight_spread * u
        axes = np.stack([us + t, -us - t, v - 1.0], axis=1)
    return 0.5 * axes @ _loadings(config.n_responses).T


def _contested_mask(pop: dict[str, np.ndarray], share: float) -> np.ndarray:
    """(N,) bool: the users of the contested world (kappa above its 1 - share quantile)."""
    if share <= 0.0:
        return np.zeros(len(pop["_kappa"]), dtype=bool)
    if share >= 1.0:
        return np.ones(len(pop["_kappa"]), dtype=bool)
    return pop["_kappa"] > NormalDist().inv_cdf(1.0 - share)


def _effect_axes(pop: dict[str, np.ndarray], n_treatments: int,
                 contested_share: float = 0.0) -> np.ndarray:
    """Effect of every truth arm on the three axes, (N, A, 3), A = K+1 (+1 for "all")."""
    u = pop["latent_orientation"]
    c = _sigmoid(u)
    m = 1.0 - c
    sv = _sigmoid(pop["latent_sociability"] - 0.5)
    nv = _sigmoid(pop["latent_novelty"])
    s = [pop[f"latent_sensitivity_t{k}"] for k in range(1, 5)]
    per_k = [
        s[0][:, None] * np.stack([1.5 * c - 0.3, 1.4 * c - 1.1, 0.3 * (c - 0.5)], axis=1),
        s[1][:, None] * np.stack([1.4 * m - 1.1, 1.5 * m - 0.3, np.full_like(m, -0.1)], axis=1),
        s[2][:, None] * np.stack([0.8 * sv - 0.6, 0.2 - 0.5 * sv, 1.6 * sv - 0.4], axis=1),
        s[3][:, None] * np.stack([1.4 * nv - 0.6, 1.2 * nv - 0.5, 0.6 * nv - 0.3], axis=1),
    ][:n_treatments]
    if contested_share > 0:
        # contested users: t1 and t2 trade one response for the other whatever c is, so
        # only the user's value weights can say which one (if any) is worth it
        hit = _contested_mask(pop, contested_share)[:, None]
        pattern = (np.array(_CONTESTED_T1), np.array(_CONTESTED_T2))
        for k in range(min(2, n_treatments)):
            per_k[k] = np.where(hit, s[k][:, None] * pattern[k], per_k[k])
    arms = [np.zeros_like(per_k[0]), *per_k]
    if n_treatments > 1:
        both = sum(per_k)
        # Stacking t1 and t2 (a multiplicative scorer) over-promotes short, commercial
        # content: usage time suffers most (paper Table 4, "Both s1 & s2").
        both = both + np.sqrt(s[0] * s[1])[:, None] * np.array([-0.45, 0.25, 0.0])
        for k in range(2, n_treatments):
            both = both - 0.3 * np.abs(per_k[k])
        arms.append(both)
    return np.stack(arms, axis=1)


def _potential_outcomes(pop: dict[str, np.ndarray], config: SimulatorConfig) -> np.ndarray:
    """True expected responses mu (N, A, R) for the A truth arms."""
    e = pop["latent_engagement"]
    u = pop["latent_orientation"]
    base_axes = np.stack(
        [
            0.6 * e + 0.25 * u + pop["_h_time"],
            0.5 * e - 0.25 * u + pop["_h_views"],
            0.3 * e + 0.6 * pop["latent_sociability"],
        ],
        axis=1,
    )  # (N, 3)
    load = _loadings(config.n_responses)  # (R, 3)
    scale = np.array([r[2] for r in RESPONSES[: config.n_responses]])
    mu0 = scale * np.exp(base_axes @ load.T)  # (N, R)
    lam = _BASE_EFFECT * config.effect_scale
    axes = _effect_axes(pop, config.n_treatments, config.contested_share)
    eff = lam * np.einsum("nac,rc->nar", axes, load)
    return mu0[:, None, :] * np.exp(eff)


def _assign(pop: dict[str, np.ndarray], config: SimulatorConfig, rng: np.random.Generator):
    """Arm (N,) int64 and the probability of the received arm (N,) float64."""
    n = len(pop["region"])
    shares = config.shares
    if config.confounded:
        act = (pop["activity_level"] - 1.5) / 1.12
        com = (pop["commercial_value_class"] - 2.0) / 1.41
        beta = _CONFOUND_BETA[: config.n_treatments + 1]
        logits = np.log(shares) + config.confounding_strength * (
            np.outer(act, beta[:, 0]) + np.outer(com, beta[:, 1])
        )
        p = _softmax(logits, axis=1)  # (N, K+1)
        arm = _categorical(rng.random(n), p)
        prop = np.take_along_axis(p, arm[:, None], axis=1)[:, 0]
    else:
        arm = _categorical(rng.random(n), shares)
        prop = shares[arm]
    return arm.astype(np.int64), prop


def _observe(mu: np.ndarray, config: SimulatorConfig, rng: np.random.Generator) -> np.ndarray:
    """Observed responses y (N, R) drawn around the received arm's mu (N, R)."""
    y = np.empty_like(mu)
    for r in range(config.n_responses):
        _, kind, _, _, noise = RESPONSES[r]
        if kind == "continuous":
            y[:, r] = mu[:, r] * np.exp(noise * rng.standard_normal(len(mu)) - noise**2 / 2)
        else:
            y[:, r] = _neg_binomial(rng, mu[:, r], noise)
    return y


def _user_block(config: SimulatorConfig, block: int) -> dict[str, np.ndarray]:
    """Everything about the _BLOCK users of one block: features, latents, mu, arm, y."""
    pop = _population(config.seed, block)
    mu = _potential_outcomes(pop, config)
    arm, prop = _assign(pop, config, _rng(config.seed, _STREAM_ASSIGN, block))
    received = mu[np.arange(len(arm)), arm]
    y = _observe(received, config, _rng(config.seed, _STREAM_OUTCOME, block))
    pop.update(mu=mu, arm=arm, propensity=prop, y=y)
    return pop


def _user_parts(
    config: SimulatorConfig, start: int, n: int, cache: dict[int, dict] | None = None
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(first user id, arrays) for each block's share of users [start, start + n).

    ``cache`` keeps the last block, so consecutive chunks that split a block do not
    generate it twice.
    """
    for b in range(start // _BLOCK, (start + n - 1) // _BLOCK + 1):
        if cache is not None and b in cache:
            blk = cache[b]
        else:
            blk = _user_block(config, b)
            if cache is not None:
                cache.clear()
                cache[b] = blk
        lo = max(start - b * _BLOCK, 0)
        hi = min(start + n - b * _BLOCK, _BLOCK)
        yield b * _BLOCK + lo, {k: a[lo:hi] for k, a in blk.items()}


def _user_arrays(config: SimulatorConfig, start: int, n: int) -> dict[str, np.ndarray]:
    """The arrays of users [start, start + n), concatenated along rows."""
    parts = [p for _, p in _user_parts(config, start, n)]
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _users_table(
    arr: dict[str, np.ndarray], config: SimulatorConfig, start: int, include_latent: bool
) -> pa.Table:
    n = len(arr["arm"])
    cols: dict[str, pa.Array] = {"user_id": pa.array(np.arange(start, start + n, dtype=np.int64))}
    for name, labels in _CATEGORICAL.items():
        cols[name] = pc.take(pa.array(labels, pa.string()), pa.array(arr[name]))
    for name in _NUMERIC:
        dtype = np.int32 if name in _INT_NUMERIC else np.float32
        cols[name] = pa.array(arr[name].astype(dtype))
    cols["arm"] = pa.array(arr["arm"])
    cols["propensity"] = pa.array(arr["propensity"])
    for r, spec in enumerate(RESPONSES[: config.n_responses]):
        y = arr["y"][:, r]
        cols[spec[0]] = pa.array(y if spec[1] == "continuous" else y.astype(np.int64))
    for a, arm_name in enumerate(_truth_names(config)):
        for r, spec in enumerate(RESPONSES[: config.n_responses]):
            cols[ground_truth_column(arm_name, spec[0])] = pa.array(arr["mu"][:, a, r])
    if include_latent:
        for k in ("orientation", "engagement", "sociability", "novelty", "spending"):
            cols[f"latent_{k}"] = pa.array(arr[f"latent_{k}"])
        for k in range(1, config.n_treatments + 1):
            cols[f"latent_sensitivity_t{k}"] = pa.array(arr[f"latent_sensitivity_t{k}"])
        w = _softmax(_value_weights(arr, config))
        if config.contested:
            cols["latent_taste"] = pa.array(arr["latent_taste"])
            cols["latent_contested"] = pa.array(_contested_mask(arr, config.contested_share))
        for r, spec in enumerate(RESPONSES[: config.n_responses]):
            cols[f"true_w_{spec[0]}"] = pa.array(w[:, r])
    return pa.table(cols)


def simulate_users(
    config: SimulatorConfig,
    start: int = 0,
    n: int | None = None,
    *,
    include_latent: bool = False,
) -> pa.Table:
    """Users ``start .. start + n - 1`` of the experiment, as one table of N = n rows.

    Columns: ``user_id``; the F = 17 feature fields (categorical as strings,
    numeric as int32 / float32); ``arm`` (int64 in [0, K]); ``propensity`` (the
    probability of the received arm); the R observed responses; the ground truth
    ``ground_truth_column(a, r)`` for a in control, t1..tK (and "all" when K > 1);
    with ``include_latent``, the latent traits (``latent_*``) and the latent value
    weights ``true_w_<response>`` (rows sum to 1).

    Row i depends only on ``(config, start + i)``: any split into chunks gives the
    same rows. ``n`` defaults to the remaining users; ``start + n`` must not exceed
    ``config.n_users``.
    """
    if n is None:
        n = config.n_users - start
    if start < 0 or n < 0 or start + n > config.n_users:
        raise ValueError(
            f"start={start}, n={n}: need 0 <= start and 0 <= n and start + n <= "
            f"n_users={config.n_users}"
        )
    if n == 0:
        return _users_table(_user_arrays(config, start, 1), config, start,
                            include_latent).slice(0, 0)
    return _users_table(_user_arrays(config, start, n), config, start, include_latent)


# --------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------


@dataclass
class _Catalog:
    fields: dict[str, np.ndarray]  # field -> (I,) int32 codes
    score: np.ndarray  # (I, R) positive item scores
    sorted_score: np.ndarray  # (R, I) each response's scores, ascending
    # Items ordered by type, the cumulative popularity over that order and each
    # type's [start, end) range in it: lets a vectorized draw pick "an item of type
    # r with probability proportional to popularity".
    order: np.ndarray
    cum_pop: np.ndarray
    type_lo: np.ndarray
    type_hi: np.ndarray
    type_share: np.ndarray  # (R,) catalog type shares q


def _catalog(config: SimulatorConfig) -> _Catalog:
    rng = _rng(config.seed, _STREAM_CATALOG, 0)
    n_i = config.n_items
    n_r = config.n_responses
    cat = _categorical(rng.random(n_i), _CAT_P)
    axes = _CAT_MEANS[cat] + 0.6 * rng.standard_normal((n_i, 3))
    log_pop = rng.standard_normal(n_i)
    z = rng.standard_normal((4, n_i))
    # Noise for all responses is drawn so the first R scores do not depend on R.
    z_score = rng.standard_normal((n_i, len(RESPONSES)))[:, :n_r]
    pop_rank = np.argsort(np.argsort(log_pop, kind="stable"), kind="stable")
    fields = {
        "category": cat,
        "duration_band": _ordinal(axes[:, 0] + 0.5 * z[0], (-1.0, -0.3, 0.3, 1.0)),
        "commercial_flag": (axes[:, 1] + 0.5 * z[1] > 0.9),
        "popularity_bucket": pop_rank * 10 // n_i,
        "author_tier": _ordinal(axes[:, 2] + 0.5 * log_pop + 0.5 * z[2], (-0.5, 0.5, 1.3)),
    }
    fields = {k: a.astype(np.int32) for k, a in fields.items()}
    score = np.exp(axes @ _loadings(n_r).T + 0.2 * log_pop[:, None] + 0.3 * z_score)
    sorted_score = np.sort(score, axis=0).T.copy()
    pct = _percentile(sorted_score, score)
    item_type = pct.argmax(axis=1)
    order = np.argsort(item_type, kind="stable")
    counts = np.bincount(item_type, minlength=n_r)
    type_hi = np.cumsum(counts)
    type_lo = type_hi - counts
    pop = np.exp(log_pop)[order]
    cum_pop = np.concatenate([[0.0], np.cumsum(pop)])
    return _Catalog(fields, score, sorted_score, order, cum_pop, type_lo, type_hi,
                    counts / n_i)


def _percentile(sorted_score: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Percentile rank within the catalog: s (..., R) -> (..., R) in [0, 1]."""
    out = np.empty(s.shape, dtype=np.float64)
    n_i = sorted_score.shape[1]
    for r in range(s.shape[-1]):
        out[..., r] = np.searchsorted(sorted_score[r], s[..., r], side="right") / n_i
    return out


def _draw_items(
    cat: _Catalog, p_type: np.ndarray, n_draw: int, rng: np.random.Generator
) -> np.ndarray:
    """Items (N, n_draw): type ~ p_type (N, R), then an item of that type by popularity."""
    n = p_type.shape[0]
    # Types without items cannot be drawn: move their mass to the others.
    p = p_type * (cat.type_hi > cat.type_lo)
    p = p / p.sum(axis=1, keepdims=True)
    uni = rng.random((2, n, n_draw))
    cdf = np.cumsum(p, axis=1)  # (N, R)
    t = np.minimum((uni[0][:, :, None] >= cdf[:, None, :]).sum(axis=2), p.shape[1] - 1)
    lo = cat.cum_pop[cat.type_lo[t]]
    hi = cat.cum_pop[cat.type_hi[t]]
    pos = np.searchsorted(cat.cum_pop, lo + uni[1] * (hi - lo), side="right") - 1
    pos = np.clip(pos, cat.type_lo[t], cat.type_hi[t] - 1)
    return cat.order[pos]


def _request_block(
    config: SimulatorConfig, cat: _Catalog, block: int, theta_of: Callable[[np.ndarray], Any]
) -> dict[str, np.ndarray]:
    """All _REQ_BLOCK requests of one block (arrays with leading dim _REQ_BLOCK)."""
    rng = _rng(config.seed, _STREAM_REQUESTS, block)
    n = _REQ_BLOCK
    n_r = config.n_responses
    req = np.arange(block * n, (block + 1) * n, dtype=np.int64)
    user = (req // config.requests_per_user) % config.n_users
    theta = theta_of(user)  # (N, R)
    w = _softmax(theta + 0.4 * rng.standard_normal((n, len(RESPONSES)))[:, :n_r], axis=1)
    recent = _draw_items(cat, 0.75 * w + 0.25 * cat.type_share, config.n_recent, rng)
    cand = _draw_items(cat, 0.35 * w + 0.65 * cat.type_share, config.n_candidates, rng)
    noise = rng.standard_normal((n, config.n_candidates, len(RESPONSES)))[:, :, :n_r]
    score = cat.score[cand] * np.exp(0.15 * noise)  # (N, L, R)
    pct = _percentile(cat.sorted_score, score)
    ctype = pct.argmax(axis=2)  # (N, L)
    mix = np.einsum("nlr,nr->nl", pct, w) + 0.05 * rng.gumbel(size=(n, config.n_candidates))
    e = config.n_exposed
    top = np.argpartition(-mix, e - 1, axis=1)[:, :e]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(mix, top, 1), axis=1), 1)
    etype = np.take_along_axis(ctype, top, axis=1)  # (N, E)
    o = np.stack([(etype == r).mean(axis=1) for r in range(n_r)], axis=1)
    return {
        "request_id": req, "user_id": user, "cand": cand, "recent": recent,
        "score": score.astype(np.float32), "exposed": top.astype(np.int32), "o": o, "w": w,
    }


def _theta_lookup(config: SimulatorConfig) -> Callable[[np.ndarray], np.ndarray]:
    """user ids (N,) -> latent log value weights (N, R), generating user blocks lazily."""
    cache: dict[int, np.ndarray] = {}

    def theta_of(user: np.ndarray) -> np.ndarray:
        blocks = user // _BLOCK
        out = np.empty((len(user), config.n_responses))
        for b in np.unique(blocks):
            if b not in cache:
                pop = _population(config.seed, int(b))
                cache.clear()  # keep at most one block: request users are contiguous
                cache[b] = _value_weights(pop, config)
            sel = blocks == b
            out[sel] = cache[b][user[sel] - b * _BLOCK]
        return out

    return theta_of


def _fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """(N, L) array -> fixed-size list column of N rows."""
    n, width = values.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


def _requests_table(arr: dict[str, np.ndarray], cat: _Catalog, config: SimulatorConfig):
    cols: dict[str, pa.Array] = {
        "request_id": pa.array(arr["request_id"]),
        "user_id": pa.array(arr["user_id"]),
    }
    for f in ITEM_FIELDS:
        cols[f"cand_{f}"] = _fixed_list(cat.fields[f][arr["cand"]])
    for f in ITEM_FIELDS:
        cols[f"recent_{f}"] = _fixed_list(cat.fields[f][arr["recent"]])
    names = [r[0] for r in RESPONSES[: config.n_responses]]
    for r, name in enumerate(names):
        cols[f"cand_score_{name}"] = _fixed_list(np.ascontiguousarray(arr["score"][:, :, r]))
    cols["exposed"] = _fixed_list(arr["exposed"])
    for r, name in enumerate(names):
        cols[f"o_{name}"] = pa.array(arr["o"][:, r])
    for r, name in enumerate(names):
        cols[f"true_w_{name}"] = pa.array(arr["w"][:, r])
    return pa.table(cols)


def _request_arrays(config, cat, theta_of, start: int, n: int) -> dict[str, np.ndarray]:
    """The arrays of requests [start, start + n), concatenated along rows."""
    parts = []
    for b in range(start // _REQ_BLOCK, (start + n - 1) // _REQ_BLOCK + 1):
        blk = _request_block(config, cat, b, theta_of)
        lo = max(start - b * _REQ_BLOCK, 0)
        hi = min(start + n - b * _REQ_BLOCK, _REQ_BLOCK)
        parts.append({k: a[lo:hi] for k, a in blk.items()})
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def simulate_requests(config: SimulatorConfig, n: int | None = None, start: int = 0) -> pa.Table:
    """Requests ``start .. start + n - 1`` (N = n rows; n defaults to ``config.n_requests``).

    Columns: ``request_id``, ``user_id`` (request j belongs to user
    ``j // requests_per_user`` mod n_users); for each item field f in
    ``ITEM_FIELDS``, ``cand_<f>`` (fixed-size list of L = n_candidates int32 codes)
    and ``recent_<f>`` (list of n_recent codes); ``cand_score_<response>`` (list of L
    float32 scores, one per response); ``exposed`` (list of E = n_exposed candidate
    indices in [0, L), best first); ``o_<response>`` (share of exposed candidates
    whose best percentile rank is that response, eq. 9; they sum to 1 per row);
    ``true_w_<response>`` (the request's latent value weight, sums to 1).
    """
    if n is None:
        n = config.n_requests
    if start < 0 or n < 0:
        raise ValueError(f"start={start}, n={n}: both must be >= 0")
    cat = _catalog(config)
    theta_of = _theta_lookup(config)
    if n == 0:
        return _requests_table(_request_arrays(config, cat, theta_of, start, 1), cat,
                               config).slice(0, 0)
    return _requests_table(_request_arrays(config, cat, theta_of, start, n), cat, config)


# --------------------------------------------------------------------------------------
# The whole simulation
# --------------------------------------------------------------------------------------


class _Summary:
    """Streaming sums over user chunks, turned into the summary dict at the end."""

    def __init__(self, config: SimulatorConfig) -> None:
        k1, a, r = config.n_treatments + 1, len(_truth_names(config)), config.n_responses
        self.config = config
        self.count = np.zeros(k1)
        self.y_sum = np.zeros((k1, r))
        self.mu_sum = np.zeros((a, r))
        self.oracle_sum = np.zeros(r)
        self.oracle_count = np.zeros(a)
        self.o_sum = np.zeros(r)
        self.n_requests = 0

    def add_users(self, arr: dict[str, np.ndarray]) -> None:
        arm, y, mu = arr["arm"], arr["y"], arr["mu"]
        self.count += np.bincount(arm, minlength=len(self.count))
        for k in range(len(self.count)):
            self.y_sum[k] += y[arm == k].sum(axis=0)
        self.mu_sum += mu.sum(axis=0)
        choice = _oracle_choice(arr, self.config)
        self.oracle_sum += mu[np.arange(len(choice)), choice].sum(axis=0)
        self.oracle_count += np.bincount(choice, minlength=len(self.oracle_count))

    def result(self) -> dict[str, Any]:
        arms = arm_names(self.config)
        truth = _truth_names(self.config)
        resp = [r[0] for r in RESPONSES[: self.config.n_responses]]
        n = self.count.sum()

        def by_resp(v: np.ndarray) -> dict[str, float]:
            return {r: float(x) for r, x in zip(resp, v, strict=True)}

        with np.errstate(invalid="ignore", divide="ignore"):
            y_mean = self.y_sum / self.count[:, None]
        mu_mean = self.mu_sum / n
        return {
            "n_users": int(n),
            "n_requests": self.n_requests,
            "arms": arms,
            "responses": resp,
            "rows_per_arm": {a: int(c) for a, c in zip(arms, self.count, strict=True)},
            "mean_response": {a: by_resp(y_mean[k]) for k, a in enumerate(arms)},
            "observed_relative_effect": {
                a: by_resp(y_mean[k] / y_mean[0] - 1) for k, a in enumerate(arms) if k > 0
            },
            "true_mean": {a: by_resp(mu_mean[k]) for k, a in enumerate(truth)},
            "true_relative_effect": {
                a: by_resp(mu_mean[k] / mu_mean[0] - 1) for k, a in enumerate(truth) if k > 0
            },
            "oracle_policy": {
                "relative_effect": by_resp(self.oracle_sum / self.mu_sum[0] - 1),
                "arm_share": {a: float(c / n) for a, c in zip(truth, self.oracle_count,
                                                             strict=True)},
            },
            "request_label_mean": by_resp(self.o_sum / max(self.n_requests, 1)),
        }


def _oracle_choice(arr: dict[str, np.ndarray], config: SimulatorConfig) -> np.ndarray:
    """(N,) index of the truth arm maximizing phi^a = sum_r w_r (mu_r^a / mu_r^0 - 1)."""
    w = _softmax(_value_weights(arr, config))
    delta = arr["mu"] / arr["mu"][:, :1] - 1.0  # (N, A, R); control row is 0
    return np.einsum("nar,nr->na", delta, w).argmax(axis=1)


def simulate(
    config: SimulatorConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> SimulationResult:
    """Run the whole simulation and write it to ``out_dir`` (created if needed).

    Writes ``users.parquet`` (``config.n_users`` rows, see ``simulate_users``),
    ``requests.parquet`` (``config.n_requests`` rows, see ``simulate_requests``),
    ``schema.json`` (the users table's Schema) and ``simulation.json`` (the config).
    Users are generated and written ``chunk_size`` at a time, requests about
    ``chunk_size // 50`` at a time (whole blocks of 2 000), so memory stays bounded.

    Args:
        progress: called as ``progress(stage, done, total)`` with stage "users" or
            "requests" after every chunk.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    schema = simulation_schema(config)
    users_path = out / "users.parquet"
    requests_path = out / "requests.parquet"
    schema_path = out / "schema.json"
    config_path = out / "simulation.json"
    summary = _Summary(config)

    writer: pq.ParquetWriter | None = None
    cache: dict[int, dict] = {}
    try:
        for start in range(0, config.n_users, config.chunk_size):
            n = min(config.chunk_size, config.n_users - start)
            tables = []
            # Block by block: no concatenation of numpy arrays, only of Arrow chunks.
            for first, part in _user_parts(config, start, n, cache):
                summary.add_users(part)
                tables.append(_users_table(part, config, first, config.write_latent))
            table = pa.concat_tables(tables)
            del tables
            if writer is None:
                writer = pq.ParquetWriter(users_path, table.schema)
            # Row groups of one block: data-parallel training (hmum train --nproc)
            # gives each worker whole row groups, so even small files split.
            writer.write_table(table, row_group_size=USERS_ROW_GROUP)
            if progress is not None:
                progress("users", start + n, config.n_users)
    finally:
        if writer is not None:
            writer.close()

    cat = _catalog(config)
    theta_of = _theta_lookup(config)
    # Request rows are ~50x wider than user rows; whole blocks avoid regenerating one.
    step = max(1, config.chunk_size // 50 // _REQ_BLOCK) * _REQ_BLOCK
    writer = None
    try:
        for start in range(0, config.n_requests, step):
            n = min(step, config.n_requests - start)
            arr = _request_arrays(config, cat, theta_of, start, n)
            summary.o_sum += arr["o"].sum(axis=0)
            summary.n_requests += n
            table = _requests_table(arr, cat, config)
            if writer is None:
                writer = pq.ParquetWriter(requests_path, table.schema)
            writer.write_table(table)
            if progress is not None:
                progress("requests", start + n, config.n_requests)
        if writer is None:  # n_requests == 0: an empty file with the right columns
            pq.write_table(simulate_requests(config, 0), requests_path)
    finally:
        if writer is not None:
            writer.close()

    schema.to_json(schema_path)
    config_path.write_text(config.model_dump_json(indent=2) + "\n")
    return SimulationResult(
        out_dir=out,
        users_path=users_path,
        requests_path=requests_path,
        schema_path=schema_path,
        config_path=config_path,
        schema=schema,
        summary=summary.result(),
    )
