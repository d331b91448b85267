"""Policies: modes, comparison strategies, the oracle and the arm-set mappings."""

import numpy as np
import pytest

from hmum.decision.policies import (
    arm_set_names,
    arms_to_enable,
    fixed_weight_policy,
    logged_arm,
    oracle_policy,
    population_policy,
    random_policy,
    truth_arm,
    truth_arms_to_enable,
    truth_phi,
)


def test_population_policies():
    assert population_policy(2, 2, 0).tolist() == [[False, False]] * 2
    assert population_policy(2, 2, "none").tolist() == [[False, False]] * 2
    assert population_policy(2, 2, 1).tolist() == [[True, False]] * 2
    assert population_policy(2, 2, "all").tolist() == [[True, True]] * 2
    assert population_policy(1, 3, [1, 3]).tolist() == [[True, False, True]]


def test_population_policy_rejects_unknown_treatment():
    with pytest.raises(ValueError, match=r"outside 1\.\.2"):
        population_policy(2, 2, 3)


def test_truth_arm_mapping_k2():
    en = np.array([[False, False], [True, False], [False, True], [True, True]])
    assert truth_arm(en).tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(truth_arms_to_enable(np.array([0, 1, 2, 3]), 2), en)


def test_truth_arm_k1_single_treatment_is_arm_1():
    assert truth_arm(np.array([[False], [True]])).tolist() == [0, 1]


def test_truth_arm_partial_subset_without_ground_truth_raises():
    en = np.array([[True, True, False]])
    with pytest.raises(ValueError, match="mode='exclusive'"):
        truth_arm(en)


def test_logged_arm_refuses_several_treatments():
    assert logged_arm(np.array([[False, False], [False, True]])).tolist() == [0, 2]
    with pytest.raises(ValueError, match="never logged"):
        logged_arm(np.array([[True, True]]))


def test_arms_to_enable_round_trip():
    arm = np.array([0, 2, 1, 0])
    np.testing.assert_array_equal(logged_arm(arms_to_enable(arm, 2)), arm)


def test_fixed_weight_policy_matches_hand_computation():
    delta = np.array([[[0.02, -0.01], [-0.01, 0.03]]])  # (1, K=2, R=2)
    # w = (0.8, 0.2): phi = (0.014, -0.002)
    assert fixed_weight_policy(delta, [4, 1]).tolist() == [[True, False]]
    # w = (0.2, 0.8): phi = (-0.004, 0.022)
    assert fixed_weight_policy(delta, [0.2, 0.8]).tolist() == [[False, True]]


def test_fixed_weight_policy_rejects_bad_weights():
    with pytest.raises(ValueError, match="R = 2"):
        fixed_weight_policy(np.zeros((1, 2, 2)), [1.0])


def test_oracle_picks_the_best_true_arm_set():
    mu = np.array([[[10.0, 10.0], [11.0, 8.8], [9.5, 10.4]]])  # (1, K+1, R)
    mu_all = np.array([[10.5, 10.5]])
    w = np.array([[0.5, 0.5]])
    # phi: none 0, t1 (0.1 - 0.12) / 2 = -0.01, t2 (-0.05 + 0.04) / 2 = -0.005, all 0.05
    np.testing.assert_allclose(truth_phi(mu, mu_all, w), [[0.0, -0.01, -0.005, 0.05]],
                               atol=1e-12)
    assert oracle_policy(mu, mu_all, w).tolist() == [[True, True]]
    assert oracle_policy(mu, mu_all, w, mode="exclusive").tolist() == [[False, False]]
    assert oracle_policy(mu, mu_all, np.array([[1.0, 0.0]]),
                         mode="exclusive").tolist() == [[True, False]]


def test_random_policy_is_seeded():
    a = random_policy(100, 2, seed=3)
    np.testing.assert_array_equal(a, random_policy(100, 2, seed=3))
    assert not np.array_equal(a, random_policy(100, 2, seed=4))
    ex = random_policy(300, 3, seed=0, mode="exclusive")
    assert (ex.sum(axis=1) <= 1).all()


def test_arm_set_names():
    assert arm_set_names(["t1", "t2"]) == ["none", "t1", "t2", "all"]
    assert arm_set_names(["t1"]) == ["none", "t1"]
