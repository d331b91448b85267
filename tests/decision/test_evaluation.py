"""Offline policy evaluation: ground truth, IPW / DR on simulated logs, bootstrap, Pareto."""

import numpy as np
import pytest

from hmum.data.schema import ground_truth_column
from hmum.data.simulator import SimulatorConfig, simulate_users
from hmum.decision.evaluation import (
    bootstrap_sums,
    dr_estimate,
    ground_truth_effects,
    ipw_estimate,
    off_policy_table,
    pareto_front,
    policy_truth,
    received_propensity,
    strategy_table,
)
from hmum.decision.policies import (
    arms_to_enable,
    logged_arm,
    oracle_policy,
    population_policy,
    random_policy,
)

RESP = ["usage_time", "video_views"]


def _sim(n=30_000, seed=0, **kw):
    cfg = SimulatorConfig(n_users=n, seed=seed, n_requests=0, **kw)
    t = simulate_users(cfg, include_latent=True)
    arms = ["control", "t1", "t2"]
    mu = np.stack([np.stack([t.column(ground_truth_column(a, r)).to_numpy() for r in RESP], 1)
                   for a in arms], axis=1)
    mu_all = np.stack([t.column(ground_truth_column("all", r)).to_numpy() for r in RESP], 1)
    y = np.stack([t.column(r).to_numpy().astype(float) for r in RESP], 1)
    w = np.stack([t.column(f"true_w_{r}").to_numpy() for r in RESP], 1)
    return {"mu": mu, "mu_all": mu_all, "y": y, "arm": t.column("arm").to_numpy(),
            "propensity": t.column("propensity").to_numpy(), "w": w}


@pytest.fixture(scope="module")
def sim():
    return _sim()


# --- ground truth ---------------------------------------------------------------------


def test_ground_truth_hand_computed():
    mu = np.array([[[10.0, 2.0], [11.0, 1.0], [9.0, 3.0]],
                   [[20.0, 4.0], [22.0, 4.0], [20.0, 5.0]]])  # (N=2, K+1=3, R=2)
    mu_all = np.array([[10.0, 2.0], [21.0, 6.0]])
    en = np.array([[True, False], [True, True]])  # user 0: t1, user 1: all
    np.testing.assert_allclose(policy_truth(en, mu, mu_all), [[11.0, 1.0], [21.0, 6.0]])
    res = ground_truth_effects(en, mu, mu_all, w_true=np.array([[1.0, 0.0], [0.5, 0.5]]))
    # change: (11 + 21) / 30 - 1, (1 + 6) / 6 - 1
    np.testing.assert_allclose(res["change"], [32 / 30 - 1, 7 / 6 - 1])
    # value: user 0: 1 * 0.1; user 1: 0.5 * 0.05 + 0.5 * 0.5
    assert res["value"] == pytest.approx((0.1 + 0.025 + 0.25) / 2)
    np.testing.assert_allclose(res["arm_share"], [0, 0.5, 0, 0.5])


def test_all_treatments_without_mu_all_raises():
    with pytest.raises(ValueError, match="mu_all"):
        policy_truth(np.array([[True, True]]), np.ones((1, 3, 2)))


def test_enable_shape_is_checked():
    with pytest.raises(ValueError, match=r"shape \(N, K\)"):
        policy_truth(np.zeros((2, 3), bool), np.ones((2, 3, 2)))


def test_oracle_beats_random_and_population_strategies(sim):
    n = len(sim["arm"])
    pols = {
        "oracle": oracle_policy(sim["mu"], sim["mu_all"], sim["w"]),
        "random": random_policy(n, 2, seed=0),
        "everyone t1": population_policy(n, 2, 1),
        "everyone t2": population_policy(n, 2, 2),
        "nobody": population_policy(n, 2, 0),
    }
    tab = strategy_table(pols, sim["mu"], sim["mu_all"], w_true=sim["w"],
                         response_names=RESP).set_index("strategy")
    assert tab.loc["oracle", "value"] > tab.loc["random", "value"]
    assert tab.loc["oracle", "value"] >= tab.drop("oracle")["value"].max()
    assert tab.loc["oracle", "oracle_share"] == pytest.approx(1.0)
    assert tab.loc["nobody", "value"] == 0.0
    # the simulated world of paper Table 4: each whole-population strategy trades
    # one response for the other; the personalized oracle raises both
    assert tab.loc["everyone t1", "change_usage_time"] > 0 > tab.loc["everyone t1",
                                                                     "change_video_views"]
    assert tab.loc["everyone t2", "change_video_views"] > 0 > tab.loc["everyone t2",
                                                                      "change_usage_time"]
    assert (tab.loc["oracle", ["change_usage_time", "change_video_views"]] > 0).all()
    shares = tab[[c for c in tab.columns if c.startswith("share_")]].sum(axis=1)
    np.testing.assert_allclose(shares, 1.0)


# --- off-policy -----------------------------------------------------------------------


def test_ipw_and_dr_hand_computed():
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    arm = np.array([0, 1, 1, 0])
    pol = np.array([1, 1, 0, 0])  # matches rows 1 and 3
    e = np.array([0.5, 0.5, 0.25, 0.5])
    # HT: (2 / 0.5 + 4 / 0.5) / 4 = 3
    np.testing.assert_allclose(ipw_estimate(y, arm, pol, propensity=e), [3.0])
    # self-normalized: 12 / (1 / 0.5 + 1 / 0.5) = 3
    np.testing.assert_allclose(ipw_estimate(y, arm, pol, propensity=e, self_normalized=True),
                               [3.0])
    y_hat = np.zeros((4, 2, 1))
    y_hat[:, 0, 0], y_hat[:, 1, 0] = 1.0, 2.0
    # DR: mean of y_hat_pi + match / e (y - y_hat_a): rows 2 + 0, 2 + 2 (2 - 2) = 2,
    # 1 + 0, 1 + 2 (4 - 1) = 7 -> (2 + 2 + 1 + 7) / 4 = 3
    np.testing.assert_allclose(dr_estimate(y, arm, pol, y_hat, propensity=e), [3.0])


def test_empirical_propensity_is_the_arm_share():
    np.testing.assert_allclose(received_propensity(np.array([0, 0, 1, 2])),
                               [0.5, 0.5, 0.25, 0.25])


def test_bad_propensity_is_refused():
    with pytest.raises(ValueError, match=r"propensity must lie in \(0, 1\]"):
        received_propensity(np.array([0, 1]), np.array([0.5, 0.0]))


def test_dr_needs_an_outcome_model():
    with pytest.raises(ValueError, match="y_hat"):
        off_policy_table({"p": np.zeros(4, int)}, np.ones((4, 1)), np.array([0, 1, 0, 1]),
                         methods=["dr"])


def _truth_of(sim, policy_arm):
    return sim["mu"][np.arange(len(policy_arm)), policy_arm]  # (N, R)


def test_ipw_recovers_a_known_policy_value_within_its_interval(sim):
    pol = logged_arm(oracle_policy(sim["mu"], None, sim["w"], mode="exclusive"))
    truth_value = _truth_of(sim, pol).mean(axis=0)
    truth_change = truth_value / sim["mu"][:, 0].mean(axis=0) - 1
    tab = off_policy_table({"oracle": pol}, sim["y"], sim["arm"], response_names=RESP,
                           n_boot=300, seed=0)
    row = tab.iloc[0]
    for r, name in enumerate(RESP):
        assert row[f"value_{name}_lo"] <= truth_value[r] <= row[f"value_{name}_hi"]
        assert row[f"change_{name}_lo"] <= truth_change[r] <= row[f"change_{name}_hi"]


def test_ipw_with_logged_propensity_on_confounded_logs():
    s = _sim(n=30_000, seed=1, confounded=True)
    pol = logged_arm(arms_to_enable(np.where(s["w"][:, 0] > 0.5, 1, 2), 2))
    truth = _truth_of(s, pol).mean(axis=0)
    tab = off_policy_table({"p": pol}, s["y"], s["arm"], propensity=s["propensity"],
                           response_names=RESP, n_boot=300, seed=0).iloc[0]
    for r, name in enumerate(RESP):
        assert tab[f"value_{name}_lo"] <= truth[r] <= tab[f"value_{name}_hi"]


def test_dr_with_the_true_outcome_model_is_tighter_than_ipw(sim):
    pol = logged_arm(population_policy(len(sim["arm"]), 2, 1))
    tab = off_policy_table({"t1": pol}, sim["y"], sim["arm"], y_hat=sim["mu"],
                           response_names=RESP, n_boot=200, seed=0).set_index("estimator")
    for name in RESP:
        width = tab[f"change_{name}_hi"] - tab[f"change_{name}_lo"]
        assert width["dr"] < 0.75 * width["ipw"]
        truth = sim["mu"][:, 1, RESP.index(name)].mean() / sim["mu"][:, 0,
                                                                    RESP.index(name)].mean() - 1
        assert tab.loc["dr", f"change_{name}_lo"] <= truth <= tab.loc["dr", f"change_{name}_hi"]


def test_bootstrap_is_seeded_and_matches_a_loop():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 3))
    a = bootstrap_sums(v, n_boot=7, seed=5, max_cells=100)  # forces several chunks
    np.testing.assert_array_equal(a, bootstrap_sums(v, n_boot=7, seed=5, max_cells=100))
    # the draws do not depend on the chunking (only the summation order does)
    np.testing.assert_allclose(a, bootstrap_sums(v, n_boot=7, seed=5), rtol=1e-12)
    # reference: the same draws, one replicate at a time
    r = np.random.default_rng(5)
    idx = r.integers(0, 50, size=(2, 50))  # first chunk of 2 replicates (100 cells / 50 rows)
    np.testing.assert_allclose(a[:2], v[idx].sum(axis=1))


def test_pareto_front():
    pts = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.5, 0.5], [1.0, 0.9], [2.0, 0.0]])
    assert pareto_front(pts).tolist() == [True, True, True, False, False, True]
