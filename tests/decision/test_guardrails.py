"""Guardrail decisions and the frozen decision config (issue 16, item 2)."""

import json

import numpy as np
import pytest

from hmum.decision.guardrails import (
    Guardrail,
    cap_thresholds,
    dr_change,
    fit_rule,
    parse_guardrail,
    parse_max_share,
    predicted_effects,
    users_needed,
)
from hmum.decision.policies import decide
from hmum.decision.rules import DecisionRule, decide_margin, load_rule, save_rule
from hmum.exceptions import DecisionConfigError

R2, T2 = ["usage_time", "video_views"], ["t1", "t2"]


def _world(n=4000, k=2, seed=0):
    rng = np.random.default_rng(seed)
    delta = rng.normal(0.0, 0.02, (n, k, 2))
    delta[:, :, 0] += 0.01  # usage time up on average ...
    delta[:, :, 1] -= 0.015  # ... views down: a guardrail on views binds
    w = rng.dirichlet([2.0, 2.0], n)
    return delta, w


# --- parsing ---------------------------------------------------------------------


@pytest.mark.parametrize("text,floor", [("video_views>=-0.0", 0.0), ("video_views>=-0.5%", -0.005),
                                        ("video_views >= 0.01", 0.01), ("usage_time>=1e-3", 1e-3)])
def test_parse_guardrail(text, floor):
    g = parse_guardrail(text, R2)
    assert g.response in R2 and g.floor == pytest.approx(floor)


@pytest.mark.parametrize("text,match", [("views>=0", "unknown response 'views'"),
                                        ("video_views<=0", "expected RESPONSE>=FLOOR"),
                                        ("video_views>=-200%", "above -1")])
def test_parse_guardrail_errors_name_the_flag(text, match):
    with pytest.raises(DecisionConfigError, match="--guardrail") as e:
        parse_guardrail(text, R2)
    assert match in str(e.value)


def test_parse_max_share():
    assert parse_max_share("t2=0.3", T2) == ("t2", 0.3)
    with pytest.raises(DecisionConfigError, match="--max-share: expected a share in"):
        parse_max_share("t2=1.5", T2)
    with pytest.raises(DecisionConfigError, match="unknown treatment 't3'"):
        parse_max_share("t3=0.2", T2)


# --- the rule ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["independent", "exclusive"])
def test_default_rule_is_the_papers_decision(mode):
    delta, w = _world()
    rule = DecisionRule(R2, T2, mode=mode, sigma=[0.001, 0.001])
    np.testing.assert_array_equal(rule.decide(delta, w),
                                  decide(delta, w, sigma=0.001, mode=mode)[1])


def test_rule_bonus_and_thresholds_by_hand():
    delta = np.array([[[0.02, -0.01]], [[0.01, -0.02]]])  # N=2, K=1, R=2
    w = np.array([[0.5, 0.5], [0.5, 0.5]])
    rule = DecisionRule(R2, ["t1"], response_bonus=[0.0, 0.5], sigma=[0.0])
    # scores: 0.5*0.02 + 1.0*(-0.01) = 0 ; 0.5*0.01 - 1.0*0.02 = -0.015
    np.testing.assert_allclose(rule.scores(delta, w)[:, 0], [0.0, -0.015], atol=1e-15)
    assert rule.decide(delta, w).tolist() == [[False], [False]]
    # without the bonus the scores are +0.005 and -0.005
    assert DecisionRule(R2, ["t1"], sigma=[-0.001]).decide(delta, w).tolist() == [[True],
                                                                                  [False]]


def test_decide_margin_exclusive_ties_go_to_lower_k():
    m = np.array([[0.1, 0.1], [-0.1, 0.2], [-1.0, -2.0]])
    assert decide_margin(m, "exclusive").tolist() == [[True, False], [False, True],
                                                      [False, False]]


def test_rule_validation_names_the_field():
    with pytest.raises(DecisionConfigError, match="sigma: expected 2 finite"):
        DecisionRule(R2, T2, sigma=[0.0])
    with pytest.raises(DecisionConfigError, match="response_bonus"):
        DecisionRule(R2, T2, response_bonus=[0.0, -1.0])
    with pytest.raises(DecisionConfigError, match="fixed_weights"):
        DecisionRule(R2, T2, weights="fixed")


def test_save_load_roundtrip_and_tamper(tmp_path):
    rule = DecisionRule(R2, T2, mode="exclusive", sigma=[0.0, 0.01], response_bonus=[0, 0.3],
                        guardrails=[{"response": "video_views", "floor": 0.0}],
                        max_share={"t2": 0.3}, bound={"level": 0.9, "source": "branches"})
    path = save_rule(rule, tmp_path / "dc")
    assert load_rule(path) == rule
    f = path / "decision.json"
    d = json.loads(f.read_text())
    d["sigma"] = [0.0, -1.0]
    f.write_text(json.dumps(d))
    with pytest.raises(DecisionConfigError, match="does not match the manifest"):
        load_rule(path)


def test_load_rule_errors(tmp_path):
    with pytest.raises(DecisionConfigError, match="no decision config folder"):
        load_rule(tmp_path / "nothing")
    with pytest.raises(DecisionConfigError, match="expected format"):
        DecisionRule.from_dict({"format": "other"})
    with pytest.raises(DecisionConfigError, match="unknown field"):
        DecisionRule.from_dict({"format": "hmum.decision/1", "responses": R2,
                                "treatments": T2, "colour": 1})


# --- share caps ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["independent", "exclusive"])
def test_cap_thresholds_meet_caps_and_are_tight(mode):
    delta, w = _world(n=3000)
    score = np.einsum("nkr,nr->nk", delta, w)
    caps = {1: 0.2}
    sig = cap_thresholds(score, [0.0, 0.0], caps, mode)
    share = decide_margin(score - sig, mode).mean(axis=0)
    free = decide_margin(score, mode).mean(axis=0)
    assert free[1] > 0.2 >= share[1]
    assert share[1] > 0.2 - 2 / 3000  # tight: not far below the cap
    assert sig[0] == 0.0  # an uncapped threshold is left alone


# --- predicted effects and DR ----------------------------------------------------------


def test_predicted_effects_by_hand():
    delta = np.array([[[0.1, -0.1], [0.0, 0.2]], [[0.0, 0.0], [0.5, 0.5]]])  # N=2, K=2, R=2
    y0 = np.array([[10.0, 1.0], [30.0, 3.0]])
    w = np.array([[1.0, 0.0], [0.5, 0.5]])
    en = np.array([[True, True], [False, False]])
    res = predicted_effects(en, delta, y0, w)
    # user 0 gets both: y = y0 * 1.1 * 1.0 and y0 * 0.9 * 1.2 (effects multiply)
    np.testing.assert_allclose(res["change"], [(11 + 30) / 40 - 1, (1.08 + 3) / 4 - 1])
    assert res["value"] == pytest.approx(0.5 * (1.1 * 1.0 - 1))


def test_dr_change_matches_hand_ratio_and_bounds_below():
    rng = np.random.default_rng(1)
    n = 6000
    arm = rng.integers(0, 2, n)
    y = rng.normal(10, 1, (n, 1)) + arm[:, None] * 0.5
    y_hat = np.full((n, 2, 1), 10.0)
    y_hat[:, 1] = 10.5
    pi = np.ones(n, dtype=int)
    ch, lo = dr_change(pi, y, arm, y_hat, confidence=0.9)
    e = np.bincount(arm)[arm] / n
    t = y_hat[:, 1, 0] + (arm == 1) * (y[:, 0] - y_hat[np.arange(n), arm, 0]) / e
    c = y_hat[:, 0, 0] + (arm == 0) * (y[:, 0] - y_hat[np.arange(n), arm, 0]) / e
    assert ch[0] == pytest.approx(t.mean() / c.mean() - 1)
    assert lo[0] < ch[0] and ch[0] == pytest.approx(0.05, abs=0.01)


# --- fitting ---------------------------------------------------------------------------


def test_fit_rule_meets_guardrail_and_beats_every_plain_threshold():
    # K = 1, equal levels: the lambda rule is the exact Lagrangian optimum, so it must be at
    # least as good as the best plain "phi > sigma" rule that meets the same guardrail
    delta, w = _world(n=5000, k=1, seed=3)
    y0 = np.ones((5000, 2))
    g = Guardrail("video_views", 0.0)
    free = predicted_effects(decide(delta, w)[1], delta, y0, w)
    assert free["change"][1] < 0  # the guardrail binds
    rule, rep = fit_rule(delta, w, y0, responses=R2, treatments=["t1"], guardrails=[g])
    en = rule.decide(delta, w)
    got = predicted_effects(en, delta, y0, w)
    assert got["change"][1] >= 0 and rep["chosen"]["feasible"]
    assert rule.response_bonus[1] > 0 and rule.response_bonus[0] == 0
    best_plain = max(predicted_effects(e, delta, y0, w)["value"] for e in
                     (decide(delta, w, sigma=s)[1] for s in np.linspace(-0.02, 0.05, 300))
                     if predicted_effects(e, delta, y0, w)["change"][1] >= 0)
    assert got["value"] >= best_plain - 1e-5
    assert rep["unconstrained"]["value"] > got["value"]  # the guardrail has a cost


def test_fit_rule_with_share_cap_and_exclusive_mode():
    delta, w = _world(n=4000, seed=5)
    y0 = np.ones((4000, 2))
    rule, rep = fit_rule(delta, w, y0, responses=R2, treatments=T2, mode="exclusive",
                         guardrails=[Guardrail("video_views", -0.001)], max_share={"t2": 0.1})
    en = rule.decide(delta, w)
    assert en[:, 1].mean() <= 0.1 and rep["chosen"]["share"]["t2"] <= 0.1
    assert predicted_effects(en, delta, y0, w)["change"][1] >= -0.001
    assert rule.max_share == {"t2": 0.1} and rule.guardrails[0]["response"] == "video_views"


def test_fit_rule_unreachable_floor_raises_naming_the_flag():
    delta, w = _world(n=2000)
    with pytest.raises(DecisionConfigError, match="--guardrail: no rule meets"):
        fit_rule(delta, w, np.ones((2000, 2)), responses=R2, treatments=T2,
                 guardrails=[Guardrail("video_views", 0.5)])


def test_fit_rule_dr_needs_logs_and_exclusive_mode():
    delta, w = _world(n=500)
    with pytest.raises(DecisionConfigError, match="logged arm and responses"):
        fit_rule(delta, w, np.ones((500, 2)), responses=R2, treatments=T2, estimate="dr",
                 mode="exclusive", guardrails=[Guardrail("video_views", 0.0)])
    logged = {"y": np.ones((500, 2)), "arm": np.arange(500) % 3,
              "y_hat": np.ones((500, 3, 2))}
    with pytest.raises(DecisionConfigError, match="mode exclusive"):
        fit_rule(delta, w, np.ones((500, 2)), responses=R2, treatments=T2, estimate="dr",
                 logged=logged, guardrails=[Guardrail("video_views", 0.0)])


def test_users_needed_by_hand():
    # half-width 0.02 must shrink to the gap 0.01: (0.02 / 0.01)^2 = 4 times the users
    assert users_needed([0.03], [0.01], [0.02], 1000) == 4000
    # several guards: the one furthest from its floor decides; a cleared one needs no more
    assert users_needed([0.03, 0.05], [0.01, 0.04], [0.02, 0.0], 1000) == 4000
    assert users_needed([0.03], [0.025], [0.02], 1000) == 1000
    assert users_needed([0.01], [-0.01], [0.02], 1000) is None  # the estimate misses it


def test_fit_rule_dr_reports_the_users_its_bound_lacks():
    # one treatment that truly raises both responses for everyone; on 2 000 noisy logged
    # users the unconstrained rule's dr estimate clears views >= 0 but its bound does not
    rng = np.random.default_rng(7)
    n = 2000
    delta = np.tile([[[0.01, 0.005]]], (n, 1, 1))
    w = np.full((n, 2), 0.5)
    arm = rng.integers(0, 2, n)
    y = 10.0 * (1.0 + delta[:, 0] * arm[:, None]) * rng.lognormal(-0.02, 0.2, (n, 2))
    y_hat = np.stack([np.full((n, 2), 10.0), 10.0 * (1.0 + delta[:, 0])], axis=1)
    logged = {"y": y, "arm": arm, "y_hat": y_hat}
    g = Guardrail("video_views", 0.0)
    rule, rep = fit_rule(delta, w, y_hat[:, 0], responses=R2, treatments=["t1"],
                         guardrails=[g], mode="exclusive", estimate="dr", logged=logged)
    free = rep["unconstrained"]
    ch, lo = free["dr_change"]["video_views"], free["dr_lower"]["video_views"]
    assert lo < 0.0 < ch and not free["feasible"]  # the case this figure is for
    need = rep["unconstrained_users_needed"]
    assert need == int(np.ceil(n * ((ch - lo) / ch) ** 2)) and need > n
    assert rule.fit["unconstrained_users_needed"] == need  # frozen with the rule


def test_rule_frozen_into_store_version_metadata():
    from hmum.decision.rules import rule_from_version_extra, rule_to_version_extra

    rule = DecisionRule(R2, T2, mode="exclusive", sigma=[0.001, 0.002], response_bonus=[0, 0.4])
    extra = {"error": None, **rule_to_version_extra(rule)}
    # what a store writes and reads back: JSON of the whole extra dict
    back = json.loads(json.dumps(extra))
    assert rule_from_version_extra(back) == rule
    assert rule_from_version_extra({"other": 1}) is None
    back["decision"]["sigma"] = [0.0, 0.0]
    with pytest.raises(DecisionConfigError, match="does not match its sha256"):
        rule_from_version_extra(back, source="store version 'v2'")


@pytest.mark.parametrize("mode", ["independent", "exclusive"])
def test_unknown_users_nan_rows_enable_nothing(mode):
    delta = np.array([[[0.1, 0.1], [0.2, 0.2]], [[np.nan, np.nan], [np.nan, np.nan]]])
    en = DecisionRule(R2, T2, mode=mode).decide(delta, np.full((2, 2), 0.5))
    assert en[1].tolist() == [False, False] and en[0].any()
