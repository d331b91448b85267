"""Helpers shared by the model tests (a plain module: no test module imports another)."""

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from hmum.data.schema import FeatureSpec, ResponseSpec, Schema
from hmum.data.validate import ExperimentData, validate_table
from hmum.models.hum import HUMEstimator

#: a small HUM for the estimator tests
HUM_SMALL = {"expert_sizes": [16, 8], "tower_sizes": [8], "embed_dim": 8}


def fit_hum(d: ExperimentData, seed: int = 0, epochs: int = 3, **model) -> HUMEstimator:
    """A small HUM (HUM_SMALL over ``model``) fitted on ``d``: batch 128, ``epochs`` epochs,
    one network (crossfit 1), whose internals the tests read; cross-fit members are
    tested in test_crossfit.py."""
    est = HUMEstimator(d.schema, model={**HUM_SMALL, **model},
                       trainer={"batch_size": 128, "max_epochs": epochs, "seed": seed,
                                "crossfit": 1})
    return est.fit(d)


def with_binary(d: ExperimentData) -> ExperimentData:
    """The same rows with response y1 turned into a 0/1 outcome (above its median)."""
    responses = [d.schema.responses[0], ResponseSpec(name=d.schema.responses[1].name,
                                                     kind="binary")]
    schema = d.schema.model_copy(update={"responses": responses})
    y = d.y.copy()
    y[:, 1] = (y[:, 1] > np.median(y[:, 1])).astype(float)
    return dataclasses.replace(d, schema=schema, y=y)


def tau_correlations(est, d: ExperimentData) -> np.ndarray:
    """Correlation of predicted and true uplift per (treatment, response), (K, R)."""
    tau = est.predict_uplift(d)
    K, R = d.tau.shape[1:]  # noqa: N806
    return np.array([[np.corrcoef(tau[:, k, r], d.tau[:, k, r])[0, 1] for r in range(R)]
                     for k in range(K)])


#: the responses of ``strong_effect_experiment``: one of each kind
STRONG_RESPONSES = (("time", "continuous"), ("views", "count"), ("click", "binary"))


def effect_signs(K: int, R: int = len(STRONG_RESPONSES)) -> np.ndarray:  # noqa: N803
    """(K, R) signs of the average effect: (-1)^(k + r), so both signs occur for every K."""
    k, r = np.meshgrid(np.arange(K), np.arange(R), indexing="ij")
    return np.where((k + r) % 2 == 0, 1.0, -1.0)


def strong_effect_experiment(n: int, K: int, seed: int = 0) -> ExperimentData:  # noqa: N803
    """A randomized experiment with a large, heterogeneous, known uplift.

    Features: ``seg`` (categorical, 3 values) and ``x`` (numeric). Responses: a
    positive continuous time, a count and a binary click (R = 3). Treatment k moves
    response r by ``sign[k, r] * size_r * g(x)`` with ``g = 1 + 0.7 (2 [seg == 1] - 1)
    + 0.3 tanh(x)`` in [0, 2] (mean about 0.77): the average effect has the sign of
    ``effect_signs(K)`` and the uplift differs strongly between users. Arms are
    assigned with equal shares. ``mu`` holds the true expected responses
    (N, K+1, R), so ``tau`` is the true uplift.
    """
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 3, n)
    x = rng.normal(size=n)
    arm = rng.permutation(np.arange(n) % (K + 1))
    g = 1.0 + 0.7 * (2.0 * (seg == 1) - 1.0) + 0.3 * np.tanh(x)  # (n,) in [0, 2]
    base = np.stack([8.0 + 0.8 * x, 100.0 + 5.0 * np.tanh(x), np.full(n, 0.5)], axis=1)  # (n, R)
    size = np.array([2.0, 30.0, 0.2])
    tau = effect_signs(K)[None] * size[None, None] * g[:, None, None]  # (n, K, R)
    mu = np.concatenate([base[:, None], base[:, None] + tau], axis=1)  # (n, K+1, R)
    m = mu[np.arange(n), arm]  # (n, R) the received arm's means
    cols = {
        "seg": pa.array(np.array(["a", "b", "c"])[seg]),
        "x": pa.array(x),
        "arm": pa.array(arm),
        "time": pa.array(m[:, 0] * np.exp(0.05 * rng.standard_normal(n) - 0.05**2 / 2)),
        "views": pa.array(rng.poisson(m[:, 1]).astype(np.float64)),
        "click": pa.array((rng.random(n) < m[:, 2]).astype(np.float64)),
    }
    schema = Schema(
        features=[FeatureSpec(name="seg", kind="categorical"),
                  FeatureSpec(name="x", kind="numeric")],
        arms=["control"] + [f"t{k}" for k in range(1, K + 1)],
        responses=[ResponseSpec(name=name, kind=kind) for name, kind in STRONG_RESPONSES],
    )
    d = validate_table(pa.table(cols), schema)
    d.mu = mu
    return d


def fit_killed_at(est, data, epoch: int, checkpoint_dir) -> None:
    """Fit ``est`` on ``data`` with checkpoints and kill it as epoch ``epoch`` ends, before
    that epoch's checkpoint is written (the start of a resume test)."""
    class Killed(Exception):
        pass

    def kill(rec):
        if rec["epoch"] == epoch:
            raise Killed

    with pytest.raises(Killed):
        est.fit(data, checkpoint_dir=checkpoint_dir, log=kill)
