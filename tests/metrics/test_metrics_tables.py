"""Per (treatment, response) tables and ground-truth errors."""

import numpy as np
import pandas as pd
import pytest

import hmum.metrics as hm


@pytest.fixture
def experiment():
    """K = 2 treatments, R = 2 responses (binary, continuous), with ground truth."""
    rng = np.random.default_rng(3)
    n, k = 3000, 2
    arm = rng.integers(0, k + 1, n)
    x = rng.normal(size=n)
    tau = np.stack([np.stack([0.1 * x, 0.5 * x], 1), np.stack([-0.1 * x, x], 1)], 1)  # (N, K, R)
    effect = np.where(arm[:, None] > 0, tau[np.arange(n), np.maximum(arm - 1, 0)], 0.0)
    y = np.stack(
        [
            (rng.random(n) < np.clip(0.3 + effect[:, 0], 0, 1)).astype(float),
            rng.gamma(2.0, 2.0, n) + effect[:, 1],
        ],
        1,
    )
    tau_hat = tau + rng.normal(0, 0.2, tau.shape)
    return y, tau, tau_hat, arm


def test_uplift_table_matches_the_two_arm_scores(experiment):
    y, _, tau_hat, arm = experiment
    table = hm.uplift_table(
        y, tau_hat, arm, response_names=["buy", "time"], treatment_names=["a", "b"]
    )
    assert list(table.columns) == [
        "treatment",
        "response",
        "qini",
        "auuc",
        "kind",
        "n_control",
        "n_treated",
    ]
    assert len(table) == 4
    for row in table.itertuples():
        k = ["a", "b"].index(row.treatment) + 1
        j = ["buy", "time"].index(row.response)
        rows = (arm == 0) | (arm == k)
        args = (y[rows, j], tau_hat[rows, k - 1, j], arm[rows] == k)
        assert row.qini == hm.qini_auc_score(*args)
        assert row.auuc == hm.uplift_auc_score(*args)
        assert row.kind == ("binary" if j == 0 else "continuous")
        assert row.n_control == (arm == 0).sum()
        assert row.n_treated == (arm == k).sum()


def test_uplift_table_defaults_and_one_response(experiment):
    y, _, tau_hat, arm = experiment
    table = hm.uplift_table(y[:, 1], tau_hat[:, :, 1], arm)
    assert table["treatment"].tolist() == [1, 2]
    assert table["response"].tolist() == [0, 0]
    assert (table.kind == "continuous").all()


def test_uplift_table_kinds_per_response(experiment):
    y, _, tau_hat, arm = experiment
    table = hm.uplift_table(y, tau_hat, arm, kind=["continuous", "count"])
    assert (table.kind == "continuous").all()


def test_uplift_table_bootstrap_columns(experiment):
    y, _, tau_hat, arm = experiment
    table = hm.uplift_table(y, tau_hat, arm, n_boot=30, seed=1)
    for m in ("qini", "auuc"):
        assert (table[f"{m}_low"] <= table[f"{m}_high"]).all()
    again = hm.uplift_table(y, tau_hat, arm, n_boot=30, seed=1)
    pd.testing.assert_frame_equal(table, again)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda y, tau, arm: (y, tau, np.where(arm == 2, 1, arm)), "treatment 2 has no rows"),
        (lambda y, tau, arm: (y, tau, np.where(arm == 0, 1, arm)), r"no control rows \(arm == 0\)"),
        (lambda y, tau, arm: (y, tau, np.where(arm == 2, 3, arm)), r"arm must be in \[0, 2\]"),
        (lambda y, tau, arm: (y, tau[:10], arm), "y has 3000 rows but tau_hat has 10"),
        (lambda y, tau, arm: (y, tau[:, :, :1], arm), "y has 2 responses but tau_hat has 1"),
        (lambda y, tau, arm: (y, tau, arm[:5]), "y has 3000 rows but arm has 5"),
        (lambda y, tau, arm: (y, tau[:, 0], arm), r"tau_hat must have shape \(N, K, R\)"),
        (lambda y, tau, arm: (y, np.where(tau > 1, np.nan, tau), arm), "tau_hat contains"),
        (lambda y, tau, arm: (y, tau, arm + 0.5), "arm must hold whole numbers"),
    ],
)
def test_uplift_table_errors(experiment, change, message):
    y, _, tau_hat, arm = experiment
    y, tau_hat, arm = change(y, tau_hat, arm)
    with pytest.raises(ValueError, match=message):
        hm.uplift_table(y, tau_hat, arm)


def test_uplift_table_names_the_cell(experiment):
    y, _, tau_hat, arm = experiment
    y = y.copy()
    y[(arm == 0) | (arm == 2), 1] = 1.5  # constant on the rows of treatment 2
    with pytest.raises(ValueError, match="treatment 2, response 1: y is constant"):
        hm.uplift_table(y, tau_hat, arm)


def test_pehe_and_ate_error_by_hand():
    tau = np.array([1.0, 2.0, 3.0, 4.0])
    hat = np.array([1.0, 2.0, 3.0, 6.0])
    assert hm.pehe(tau, hat) == pytest.approx(1.0)  # sqrt((0 + 0 + 0 + 4) / 4)
    assert hm.ate_error(tau, hat) == pytest.approx(0.5)  # |3 - 2.5|
    tau3 = np.zeros((4, 2, 3))
    hat3 = np.ones((4, 2, 3))
    np.testing.assert_allclose(hm.pehe(tau3, hat3), np.ones((2, 3)))
    np.testing.assert_allclose(hm.ate_error(tau3, -hat3), np.ones((2, 3)))


def test_pehe_shape_mismatch():
    with pytest.raises(ValueError, match=r"tau_true has shape \(4,\) but tau_hat has shape \(3,\)"):
        hm.pehe(np.zeros(4), np.zeros(3))


def test_ground_truth_table(experiment):
    y, tau, tau_hat, arm = experiment
    table = hm.ground_truth_table(y, tau, tau_hat, arm)
    assert list(table.columns) == [
        "treatment",
        "response",
        "pehe",
        "ate_error",
        "qini",
        "oracle_qini",
        "auuc",
        "oracle_auuc",
        "kind",
        "n_control",
        "n_treated",
    ]
    errors = hm.pehe(tau, tau_hat)
    for row in table.itertuples():
        k, j = row.treatment, row.response
        assert row.pehe == pytest.approx(errors[k - 1, j])
        rows = (arm == 0) | (arm == k)
        assert row.oracle_qini == hm.qini_auc_score(y[rows, j], tau[rows, k - 1, j], arm[rows] == k)
    # the true uplift ranks better than a noisy estimate of it
    assert (table.oracle_qini > 0).all()
