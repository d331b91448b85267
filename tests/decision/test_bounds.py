"""Intervals of phi from the model's spread (issue 16, item 3)."""

import numpy as np
import pytest

from hmum.decision.bounds import bootstrap_rows, coverage, phi_interval
from hmum.decision.rules import DecisionRule


def test_phi_interval_by_hand():
    # M = 2 members, N = 1, K = 1, R = 2; w = (1, 0): phi_m = delta_m[0]
    d = np.array([[[[0.01, 5.0]]], [[[0.03, -5.0]]]])
    res = phi_interval(d, np.array([[1.0, 0.0]]), level=0.9)
    sd = np.std([0.01, 0.03], ddof=1)
    half = 6.313751514675043 * sd * np.sqrt(1.5)  # t_{1, 0.95}
    assert res["phi"][0, 0] == pytest.approx(0.02)
    assert res["sd"][0, 0] == pytest.approx(sd)
    assert res["lo"][0, 0] == pytest.approx(0.02 - half)
    assert res["hi"][0, 0] == pytest.approx(0.02 + half)
    normal = phi_interval(d, np.array([[1.0, 0.0]]), level=0.9, method="normal")
    assert normal["hi"][0, 0] == pytest.approx(0.02 + 1.6448536269514722 * sd)


def test_coverage_by_hand():
    assert coverage(np.array([0, 0, 0, 0.]), np.array([1, 1, 1, 1.]),
                    np.array([0.5, 1.0, 1.5, -0.1])) == 0.5


@pytest.mark.parametrize("m", [3, 5])
def test_exchangeable_members_give_nominal_coverage(m):
    # when the truth is one more draw from the members' distribution the t interval covers
    # at its level; the plain normal interval of few members does not
    rng = np.random.default_rng(m)
    n = 40_000
    truth = rng.normal(0, 0.02, (n, 1, 1))
    scale = rng.uniform(0.001, 0.01, (n, 1, 1))
    members = truth[None] + scale[None] * rng.standard_normal((m, n, 1, 1))
    truth_phi = truth[:, :, 0] + scale[:, :, 0] * rng.standard_normal((n, 1))
    w = np.ones((n, 1))
    t_int = phi_interval(members, w, level=0.9)
    assert coverage(t_int["lo"], t_int["hi"], truth_phi) == pytest.approx(0.9, abs=0.01)
    z_int = phi_interval(members, w, level=0.9, method="normal")
    assert coverage(z_int["lo"], z_int["hi"], truth_phi) < 0.86


def test_phi_interval_validation():
    with pytest.raises(ValueError, match="M >= 2 members"):
        phi_interval(np.zeros((1, 3, 1, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="w must have shape"):
        phi_interval(np.zeros((2, 3, 1, 2)), np.ones((3, 3)))


def test_lower_bound_rule_switches_on_a_subset():
    rng = np.random.default_rng(0)
    d = rng.normal(0.005, 0.01, (4, 500, 2, 2))
    w = rng.dirichlet([1, 1], 500)
    iv = phi_interval(d, w, level=0.9)
    from hmum.decision.bounds import pack_spread
    from hmum.exceptions import DecisionConfigError

    rule = DecisionRule(["a", "b"], ["t1", "t2"], bound={"level": 0.9, "source": "seeds"})
    point = DecisionRule(["a", "b"], ["t1", "t2"]).decide(d.mean(0), w)
    lower = rule.decide(d.mean(0), w, spread=pack_spread(d), members=4)
    np.testing.assert_array_equal(lower, iv["lo"] > 0)
    np.testing.assert_array_equal(rule.decide(d.mean(0), w, score=iv["lo"]), lower)
    assert lower.sum() < point.sum() and not (lower & ~point).any()
    with pytest.raises(DecisionConfigError, match="needs the members' spread"):
        rule.decide(d.mean(0), w)


@pytest.mark.parametrize("bound, match", [
    ({"level": 1.0, "source": "seeds"}, "bound.level"),
    ({"level": True, "source": "seeds"}, "bound.level"),
    ({"level": 0.9, "source": "magic"}, "bound.source"),
    ({"level": 0.9, "source": "seeds", "method": "z"}, "bound.method"),
    ({"level": 0.9, "source": "seeds", "lvl": 1}, r"unknown field\(s\) \['lvl'\]"),
    (0.9, "expected"),
])
def test_rule_bound_is_checked(bound, match):
    from hmum.exceptions import DecisionConfigError

    with pytest.raises(DecisionConfigError, match=match):
        DecisionRule(["a"], ["t1"], bound=bound)


def test_bootstrap_rows_seeded():
    a, b = bootstrap_rows(100, 2, seed=1), bootstrap_rows(100, 2, seed=1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert len(np.unique(a[0])) < 100  # with replacement


@pytest.mark.parametrize("rule", ["paper", "within_branch"])
def test_branch_member_deltas_follow_hums_uplift_rule(rule):
    from hmum.data.simulator import SimulatorConfig, simulate_users, simulation_schema
    from hmum.data.validate import validate_table
    from hmum.models.hum import HUMEstimator
    from hmum.workflows.ddm import branch_member_deltas

    cfg = SimulatorConfig(n_users=2000, seed=1)
    d = validate_table(simulate_users(cfg), simulation_schema(cfg))
    est = HUMEstimator(d.schema, model={"branches_per_treatment": 3, "expert_sizes": [8],
                                        "tower_sizes": [4], "embed_dim": 4, "uplift": rule},
                       trainer={"max_epochs": 1, "batch_size": 512, "crossfit": 1}).fit(d)
    md = branch_member_deltas(est, d, batch_size=700)  # several batches
    assert md.shape == (3, 2000, 2, 2)
    y = est.predict_all(d)
    # member j: y_treated / y0*_j - 1 with y0*_j the mean of branch j's controls
    out = est.module_(__import__("torch").from_numpy(est.encode(d)))
    y0j = out.y_control.detach().double().numpy().reshape(2000, 2, 3, 2).mean(1)  # (N, M, R)
    yt = (md + 1.0) * y0j.transpose(1, 0, 2)[:, :, None, :]  # (M, N, K, R)
    np.testing.assert_allclose(y0j.mean(1), y["y_hat"][:, 0], rtol=2e-5)
    if rule == "paper":  # the members average back to HUM's estimate
        np.testing.assert_allclose(yt.mean(0), y["y_hat"][:, 1:], rtol=2e-5)
    else:  # usage time and views are positive: member j's ratio y^{k,j} / y^{0,(k,j)}
        y0b = out.y_control.detach().double().numpy().reshape(2000, 2, 3, 2)
        ytb = out.y_treated.detach().double().numpy().reshape(2000, 2, 3, 2)
        np.testing.assert_allclose(md, (ytb / y0b - 1.0).transpose(2, 0, 1, 3), atol=1e-6)
    assert (md.std(axis=0) > 0).mean() > 0.99  # the branches do disagree


def test_branch_member_deltas_need_several_branches():
    from hmum.data.simulator import SimulatorConfig, simulate_users, simulation_schema
    from hmum.data.validate import validate_table
    from hmum.models.hum import HUMEstimator
    from hmum.workflows.ddm import branch_member_deltas

    cfg = SimulatorConfig(n_users=500, seed=1)
    d = validate_table(simulate_users(cfg), simulation_schema(cfg))
    est = HUMEstimator(d.schema, model={"expert_sizes": [8], "tower_sizes": [4],
                                        "embed_dim": 4},
                       trainer={"max_epochs": 1, "batch_size": 512, "crossfit": 1}).fit(d)
    with pytest.raises(ValueError, match="branches_per_treatment >= 2"):
        branch_member_deltas(est, d)


def test_cross_fit_members_each_bring_their_branches():
    import torch

    from hmum.data.simulator import SimulatorConfig, simulate_users, simulation_schema
    from hmum.data.validate import validate_table
    from hmum.models.hum import HUMEstimator
    from hmum.workflows.ddm import branch_member_deltas

    cfg = SimulatorConfig(n_users=800, seed=1)
    d = validate_table(simulate_users(cfg), simulation_schema(cfg))
    est = HUMEstimator(d.schema, model={"expert_sizes": [8], "tower_sizes": [4],
                                        "embed_dim": 4, "branches_per_treatment": 2},
                       trainer={"max_epochs": 1, "batch_size": 256, "crossfit": 2}).fit(d)
    md = branch_member_deltas(est, d)
    assert md.shape == (4, 800, 2, 2)  # 2 members x 2 branches
    x = torch.from_numpy(est.encode(d))
    with torch.inference_mode():
        out = est.module_.members[1](x)  # member 1's branch 0 is member 2 of the four
    y0b = out.y_control.double().numpy().reshape(800, 2, 2, 2)
    ytb = out.y_treated.double().numpy().reshape(800, 2, 2, 2)
    np.testing.assert_allclose(md[2], ytb[:, :, 0] / y0b[:, :, 0] - 1.0, atol=1e-6)


def test_packed_spread_gives_the_members_interval_for_any_weights():
    # the served form (mean + covariance per user) equals the members' own phi spread
    from hmum.decision.bounds import pack_spread, spread_interval, spread_width

    rng = np.random.default_rng(3)
    d = rng.normal(0.01, 0.02, (5, 300, 2, 3))
    w = rng.dirichlet([1, 1, 1], 300)
    bonus = np.array([0.0, 0.5, 0.1])
    spread = pack_spread(d)
    assert spread.shape == (300, spread_width(2, 3)) == (300, 2 * 3 + 2 * 6)
    # the layout: K*R means row-major, then per treatment the covariance's upper triangle
    np.testing.assert_allclose(spread[:, :6], d.mean(0).reshape(300, 6))
    cov = np.cov(d[:, 7, 1].T, ddof=1)
    np.testing.assert_allclose(spread[7, 12:], cov[np.triu_indices(3)])
    phis = np.einsum("mnkr,nr->mnk", d, w + bonus)
    got = spread_interval(spread, 5, w, k=2, level=0.8, bonus=bonus)
    np.testing.assert_allclose(got["phi"], phis.mean(0))
    np.testing.assert_allclose(got["sd"], phis.std(0, ddof=1))
    half = 1.5332062740589438 * phis.std(0, ddof=1) * np.sqrt(1.2)  # t_{4, 0.9}
    np.testing.assert_allclose(got["lo"], phis.mean(0) - half)
    with pytest.raises(ValueError, match=r"w must have shape \(N, R\) = \(300, 3\)"):
        spread_interval(spread, 5, w[:, :2], k=2)
    with pytest.raises(ValueError, match="members must be an integer >= 2"):
        spread_interval(spread, 1, w, k=2)
