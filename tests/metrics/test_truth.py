"""Ground-truth uplift errors (hmum.metrics.truth): hand-computed cases and pairing."""

import numpy as np
import pytest

from hmum.metrics.truth import paired_difference, replicate_errors, uplift_errors


def _pair():
    # N = 4 users, K = 1, R = 1: true control 10, true uplift 1, 2, 3, 4
    mu = np.array([[[10.0], [11.0]], [[10.0], [12.0]], [[10.0], [13.0]], [[10.0], [14.0]]])
    y_hat = mu.copy()
    y_hat[:, 1, 0] = [12.0, 12.0, 14.0, 14.0]  # estimated uplift 2, 2, 4, 4
    return mu, y_hat


def test_uplift_errors_hand_computed():
    mu, y_hat = _pair()
    row = uplift_errors(mu, y_hat).iloc[0]
    err = np.array([1.0, 0.0, 1.0, 0.0])
    assert row.pehe == pytest.approx(np.sqrt(np.mean(err**2)))
    assert row.ate_bias == pytest.approx(0.5) and row.ate_error == pytest.approx(0.5)
    tau, tau_hat = np.array([1.0, 2, 3, 4]), np.array([2.0, 2, 4, 4])
    assert row.tau_corr == pytest.approx(np.corrcoef(tau, tau_hat)[0, 1])
    assert row.spread_ratio == pytest.approx(tau_hat.std() / tau.std())
    assert row.delta_rmse == pytest.approx(np.sqrt(np.mean((err / 10) ** 2)))
    assert row.level_bias_0 == pytest.approx(0.0)
    assert row.level_bias_k == pytest.approx(13.0 / 12.5 - 1)
    assert row.true_ate == pytest.approx(2.5)


def test_perfect_estimate_has_no_error():
    mu, _ = _pair()
    row = uplift_errors(mu, mu).iloc[0]
    assert row.pehe == 0 and row.ate_bias == 0 and row.tau_corr == pytest.approx(1.0)


def test_replicates_pair_up_across_models_and_bracket_the_estimate():
    rng = np.random.default_rng(0)
    mu = rng.gamma(5.0, 2.0, size=(2000, 3, 2))
    a = mu + rng.normal(0, 1.0, mu.shape)
    b = mu + rng.normal(0, 1.0, mu.shape)
    ra = replicate_errors(mu, a, n_boot=50, seed=7)
    again = replicate_errors(mu, a, n_boot=50, seed=7)
    np.testing.assert_array_equal(ra["pehe"], again["pehe"])
    assert ra["pehe"].shape == (50, 2, 2)
    full = uplift_errors(mu, a)["pehe"].to_numpy().reshape(2, 2)
    assert np.all(np.abs(ra["pehe"].mean(0) - full) < 0.05 * full)
    # identical models: every paired difference is exactly 0
    m, lo, hi = paired_difference([ra["pehe"]], [again["pehe"]])
    assert np.all(m == 0) and np.all(lo == 0) and np.all(hi == 0)
    rb = replicate_errors(mu, b, n_boot=50, seed=7)
    m, lo, hi = paired_difference([ra["pehe"], ra["pehe"]], [rb["pehe"], rb["pehe"]])
    assert np.all(lo <= m) and np.all(m <= hi)


def test_paired_interval_excludes_zero_for_a_clearly_worse_model():
    rng = np.random.default_rng(1)
    mu = rng.gamma(5.0, 2.0, size=(3000, 2, 1))
    good = [replicate_errors(mu, mu + rng.normal(0, 0.5, mu.shape), n_boot=40, seed=s)["pehe"]
            for s in range(3)]
    bad = [replicate_errors(mu, mu + rng.normal(0, 2.0, mu.shape), n_boot=40, seed=s)["pehe"]
           for s in range(3)]
    m, lo, hi = paired_difference(bad, good)
    assert float(lo[0, 0]) > 0 and float(m[0, 0]) > 1.0


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="must both have shape"):
        uplift_errors(np.zeros((4, 2, 1)), np.zeros((4, 3, 1)))
