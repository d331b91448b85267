"""Arm means: the per-arm training means for every row, no ranking, empty arms refused.

Shapes, artifacts and the not-fitted error: the common check (test_estimator_checks.py)."""

import numpy as np
import pytest

from hmum.metrics import qini_auc_score
from hmum.models.arm_means import ArmMeansEstimator
from tests.synth import make_experiment


def test_arm_means_are_the_training_means_for_every_row():
    d = make_experiment(n=300, K=2, R=2)
    est = ArmMeansEstimator(d.schema).fit(d)
    y_hat = est.predict_outcomes(d.take(np.arange(7)))
    assert y_hat.shape == (7, 3, 2)
    for a in range(3):
        np.testing.assert_allclose(y_hat[:, a], np.tile(d.y[d.arm == a].mean(0), (7, 1)))
    tau = est.predict_uplift(d)
    np.testing.assert_allclose(tau[0, 1], d.y[d.arm == 2].mean(0) - d.y[d.arm == 0].mean(0))


def test_arm_means_rank_nobody_so_qini_is_zero():
    d = make_experiment(n=300, K=1, R=1, effect=2.0)
    tau = ArmMeansEstimator(d.schema).fit(d).predict_uplift(d)[:, 0, 0]
    assert qini_auc_score(d.y[:, 0], tau, d.arm) == 0.0


def test_arm_means_refuses_empty_arms():
    d = make_experiment(n=60, K=2, R=1)
    no_t2 = d.take(np.flatnonzero(d.arm < 2))
    with pytest.raises(ValueError, match=r"arm\(s\) \['t2'\] have no rows"):
        ArmMeansEstimator(d.schema).fit(no_t2)
