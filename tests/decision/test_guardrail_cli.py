"""Guardrail decisions end to end: the pipeline, `hmum decide --guardrail`, frozen configs."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hmum.data.simulator import CONTESTED_WORLD, SimulatorConfig, simulate
from hmum.data.validate import load_experiment
from hmum.decision.guardrails import Guardrail
from hmum.decision.rules import load_rule
from hmum.models.value_weight import ValueWeightEstimator
from hmum.workflows.ddm import fit_guardrail_rule, hum_deltas
from tests.cli_output import flat

SMALL_VW = {"embed_dim": 8, "n_experts": 2, "expert_sizes": [16, 8], "tower_sizes": [8]}
SMALL_HUM = {"expert_sizes": [16, 8], "tower_sizes": [8], "embed_dim": 8}


class TruthModel:
    """A perfect uplift model: the simulated ground truth as y_hat."""

    def predict_all(self, users):
        return {"y_hat": users.mu.astype(np.float64)}

    def predict_outcomes(self, users):
        return self.predict_all(users)["y_hat"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("gsim")
    cfg = SimulatorConfig(n_users=4000, n_requests=2000, n_candidates=20, n_recent=6,
                          n_exposed=5, n_items=1000, seed=7, effect_scale=3.0, **CONTESTED_WORLD)
    res = simulate(cfg, out)
    return {"res": res, "users": load_experiment(res.users_path, res.schema)}


def test_fit_guardrail_rule_with_a_perfect_model(sim):
    users = sim["users"]
    deltas = hum_deltas(TruthModel(), users)
    rng = np.random.default_rng(0)
    w = rng.dirichlet([1.0, 1.0], len(users))
    g = Guardrail("video_views", 0.02)  # unconstrained: about +1.4 %, so this floor binds
    rule, rep = fit_guardrail_rule(users, deltas, w, guardrails=[g], mode="exclusive",
                                   estimate="model", max_share={"t2": 0.3})
    held = rep["held_out"]
    ch, fr = held["chosen"], held["unconstrained"]
    # a perfect model predicts exactly the truth (exclusive mode: single arms only)
    for r in ("usage_time", "video_views"):
        assert ch["predicted_change"][r] == pytest.approx(ch["true_change"][r], rel=1e-9)
    assert rep["fit"]["chosen"]["change"]["video_views"] >= 0.02
    assert rep["fit"]["unconstrained"]["change"]["video_views"] < 0.02
    assert rep["fit"]["chosen"]["share"]["t2"] <= 0.3
    assert ch["true_change"]["video_views"] > fr["true_change"]["video_views"]
    assert rule.fit["held_out"]["n_users"] == len(users) - rep["n_calibration"]
    assert rep["estimate"] == "model"


def test_fit_guardrail_rule_auto_uses_dr_on_logged_data(sim):
    users = sim["users"]
    deltas = hum_deltas(TruthModel(), users)
    w = np.full((len(users), 2), 0.5)
    _, rep = fit_guardrail_rule(users, deltas, w, guardrails=[Guardrail("video_views", -0.02)],
                                mode="exclusive")
    assert rep["estimate"] == "dr"
    assert rep["fit"]["chosen"]["dr_lower"]["video_views"] >= -0.02
    assert "dr_change" in rep["held_out"]["chosen"]


@pytest.fixture(scope="module")
def models(sim, tmp_path_factory):
    from hmum.workflows.train import train_hum

    out = tmp_path_factory.mktemp("gmodels")
    hum, _ = train_hum(sim["users"], model=SMALL_HUM, trainer={"max_epochs": 1,
                                                                "batch_size": 512})
    hum.save(out / "hum")
    vw = ValueWeightEstimator(model=SMALL_VW, trainer={"max_epochs": 1, "batch_size": 256}
                              ).fit(pq.read_table(sim["res"].requests_path))
    vw.save(out / "vw")
    return out


def _args(sim, models, out, *extra):
    res = sim["res"]
    return ["decide", "--requests", str(res.requests_path), "--users", str(res.users_path),
            "--hum-model", str(models / "hum"), "--value-model", str(models / "vw"),
            "--out", str(out), *extra]


def test_cli_decide_with_guardrail_freezes_and_reapplies_the_rule(sim, models, tmp_path):
    from hmum.cli.app import app

    runner = CliRunner()
    r = runner.invoke(app, _args(sim, models, tmp_path / "a.parquet", "--guardrail",
                                 "video_views>=-0.5%", "--max-share", "t2=0.3", "--mode",
                                 "exclusive", "--guardrail-estimate", "model",
                                 "--decision-config-out", str(tmp_path / "dc")))
    assert r.exit_code == 0, r.output
    text = flat(r)
    assert "Guardrail rule (model estimate; fitted on 2,000 calibration users" in text
    assert "guardrail video_views>=-0.5%: true change on the held-out users" in text
    assert "cost of the guardrails on the truth: value" in text
    rule = load_rule(tmp_path / "dc")
    assert rule.mode == "exclusive" and rule.max_share == {"t2": 0.3}
    assert rule.guardrails == [{"response": "video_views", "floor": -0.005}]
    # the frozen config gives the very same decisions
    r = runner.invoke(app, _args(sim, models, tmp_path / "b.parquet", "--decision-config",
                                 str(tmp_path / "dc")))
    assert r.exit_code == 0, r.output
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert a.column("arms").to_pylist() == b.column("arms").to_pylist()
    assert len(set(a.column("arms").to_pylist())) > 1


@pytest.mark.parametrize("extra,needle", [
    (["--guardrail", "views>=0"], "--guardrail: unknown response 'views'"),
    (["--max-share", "t2"], "--max-share: expected TREATMENT=SHARE"),
    (["--guardrail", "video_views>=0", "--calibration-share", "1.5"], "--calibration-share"),
    (["--guardrail", "video_views>=0", "--guardrail-estimate", "dr"], "mode exclusive"),
])
def test_cli_guardrail_errors_are_one_line(sim, models, tmp_path, extra, needle):
    from hmum.cli.app import app

    r = CliRunner().invoke(app, _args(sim, models, tmp_path / "x.parquet", *extra))
    assert r.exit_code == 2, r.output
    text = flat(r)
    assert needle in text and "Traceback" not in text


def test_cli_simulate_contested_world(tmp_path):
    import json

    from hmum.cli.app import app

    r = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "s"), "--users", "2000",
                                 "--requests", "100", "--candidates", "20", "--contested-world"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "s" / "simulation.json").read_text())
    assert cfg["contested_share"] == 0.4 and cfg["weight_taste"] == 1.0
    r = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "t"), "--users", "100",
                                 "--contested-share", "1.5"])
    assert r.exit_code == 2 and "--contested-share" in flat(r)


def test_guardrail_lines_name_the_users_the_bound_lacks():
    from hmum.cli.ddm import guardrail_lines

    g = Guardrail("video_views", 0.0)
    held = {"chosen": {"dr_change": {"video_views": 0.01}, "dr_lower": {"video_views": 0.002}},
            "unconstrained": {}}
    rep = {"held_out": held, "n_calibration": 2000,
           "fit": {"unconstrained_users_needed": 8123}}
    text = " ".join(guardrail_lines(rep, [g]))
    assert "failed the dr bound on 2,000 calibration users" in text
    assert "its bound would at about 8,123 calibration users" in text
    rep["fit"]["unconstrained_users_needed"] = None
    assert "its estimate itself is below a floor" in " ".join(guardrail_lines(rep, [g]))
    del rep["fit"]["unconstrained_users_needed"]  # feasible, or the model estimate
    assert "calibration users" not in " ".join(guardrail_lines(rep, [g]))


def test_out_of_fold_deltas_score_each_fold_by_a_model_that_did_not_see_it(sim):
    """With the arm means as the model, fold j's y_hat is the per-arm mean of the
    *other* folds' responses, computed by hand."""
    from hmum.models.arm_means import ArmMeansEstimator
    from hmum.workflows.ddm import out_of_fold_deltas

    users = sim["users"]
    est = ArmMeansEstimator(users.schema).fit(users)
    oof = out_of_fold_deltas(est, users, 3, seed=4)
    fold = oof["fold"]
    assert np.bincount(fold).tolist() == pytest.approx([len(users) / 3] * 3, abs=3)
    for j in range(3):
        other = fold != j
        by_hand = np.stack([users.y[other & (users.arm == a)].mean(axis=0)
                            for a in range(users.schema.K + 1)])
        np.testing.assert_allclose(oof["y_hat"][fold == j], np.broadcast_to(
            by_hand, (int((fold == j).sum()), *by_hand.shape)), rtol=1e-12)
        # and not the model fitted on every user, which saw fold j
        assert not np.allclose(oof["y_hat"][fold == j][0], est.means_, rtol=1e-9)
    np.testing.assert_allclose(oof["delta"], oof["y_hat"][:, 1:] / oof["y_hat"][:, :1] - 1,
                               rtol=1e-9)


def test_fit_guardrail_rule_out_of_fold_calibrates_on_every_user(sim):
    from hmum.models.arm_means import ArmMeansEstimator
    from hmum.workflows.ddm import out_of_fold_deltas

    users = sim["users"]
    est = ArmMeansEstimator(users.schema).fit(users)
    oof = out_of_fold_deltas(est, users, 2, seed=0)
    g = Guardrail("video_views", -0.5)
    rule, rep = fit_guardrail_rule(users, hum_deltas(est, users), np.full((len(users), 2), 0.5),
                                   guardrails=[g], mode="exclusive", oof_deltas=oof)
    assert rep["estimate"] == "dr" and rep["check"] == "in_sample"
    assert rep["n_calibration"] == len(users) == rep["held_out"]["n_users"]
    # the check reads the deployed model: no dr on rows it may have trained on
    assert "dr_change" not in rep["held_out"]["chosen"]
    assert "true_change" in rep["held_out"]["chosen"]
    assert rule.fit["calibration"] == "out_of_fold" and rule.fit["folds"] == 2
    assert "calibration_share" not in rule.fit


def test_cli_decide_calibration_folds(sim, models, tmp_path):
    from hmum.cli.app import app

    runner = CliRunner()
    r = runner.invoke(app, _args(sim, models, tmp_path / "a.parquet", "--guardrail",
                                 "video_views>=-5%", "--mode", "exclusive",
                                 "--calibration-folds", "2", "--decision-config-out",
                                 str(tmp_path / "dc")))
    assert r.exit_code == 0, r.output
    text = flat(r)
    assert "fold 1/2: refitting on" in text and "fold 2/2: refitting on" in text
    assert ("Guardrail rule (dr estimate; fitted out of fold on all 4,000 users, checked with "
            "the deployed model on the same users)") in text
    assert "true change with the deployed model on the same users" in text
    assert "note: --users is the table --model was trained from" not in text
    rule = load_rule(tmp_path / "dc")
    assert rule.fit["calibration"] == "out_of_fold" and rule.fit["folds"] == 2
    for extra, parts in (
            (["--guardrail", "video_views>=0", "--calibration-folds", "2",
              "--calibration-share", "0.5"], ("--calibration-share:", "--calibration-folds")),
            (["--calibration-folds", "2"], ("--calibration-folds:", "--guardrail")),
            (["--guardrail", "video_views>=0", "--calibration-folds", "1"],
             ("--calibration-folds",))):
        r = runner.invoke(app, _args(sim, models, tmp_path / "x.parquet", *extra))
        assert r.exit_code == 2, r.output
        assert all(p in flat(r) for p in parts) and "Traceback" not in flat(r)


def test_cli_decide_dr_on_the_training_table_says_so(sim, models, tmp_path):
    from hmum.cli.app import app

    r = CliRunner().invoke(app, _args(sim, models, tmp_path / "a.parquet", "--guardrail",
                                      "video_views>=-5%", "--mode", "exclusive"))
    assert r.exit_code == 0, r.output
    assert ("note: --users is the table --model was trained from, so the dr bound's outcome "
            "model has seen most calibration users' outcomes") in flat(r)


def test_refit_like_keeps_the_recipe_of_a_saved_model(sim, tmp_path):
    """A loaded artifact's refit has its model, trainer and (non-default) encoder configs."""
    from hmum.models.hum import HUMEstimator
    from hmum.models.registry import load_estimator
    from hmum.workflows.ddm import refit_like

    HUMEstimator(sim["users"].schema, model=SMALL_HUM, encoder={"n_bins": 5},
                 trainer={"max_epochs": 1, "batch_size": 512, "lr": 3e-3}
                 ).fit(sim["users"].take(np.arange(1500))).save(tmp_path / "hum")
    hum = load_estimator(tmp_path / "hum")
    fresh = refit_like(hum)
    assert type(fresh) is HUMEstimator and not hasattr(fresh, "module_")
    m, t, e = fresh._configs()
    m0, t0, _ = hum._configs()
    assert m == m0 and t == t0 and t.lr == 3e-3
    assert e.n_bins == 5 == hum.encoder_.config.n_bins


@pytest.fixture(scope="module")
def crossfit_model(sim, tmp_path_factory):
    from hmum.workflows.train import train_hum

    out = tmp_path_factory.mktemp("cfmodel")
    hum, _ = train_hum(sim["users"], model=SMALL_HUM, trainer={"max_epochs": 1,
                                                                "batch_size": 512,
                                                                "crossfit": 3})
    hum.save(out / "hum")
    return out / "hum"


def test_cli_decide_with_a_bound_freezes_it_and_the_store_serves_it(sim, crossfit_model,
                                                                      tmp_path):
    from hmum.cli.app import app
    from hmum.serving.store import SQLiteStore

    res = sim["res"]
    base = ["decide", "--users", str(res.users_path), "--model", str(crossfit_model),
            "--weights", "usage_time=0.6,video_views=0.4", "--sigma", "-0.005"]
    runner = CliRunner()
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "a.parquet"), "--bound", "0.9",
                            "--decision-config-out", str(tmp_path / "dc")])
    assert r.exit_code == 0, r.output
    assert "lower bound at 0.9 from the crossfit members" in flat(r)
    a = pq.read_table(tmp_path / "a.parquet").to_pandas()
    for t in ("t1", "t2"):  # enabled exactly where the lower bound clears sigma
        assert ((a[f"phi_lower_{t}"] > -0.005) == a[f"enable_{t}"]).all()
    assert 0 < a["enable_t1"].sum() < (a["phi_t1"] > -0.005).sum()  # the bound holds some back
    rule = load_rule(tmp_path / "dc")
    assert rule.bound == {"level": 0.9, "source": "crossfit", "method": "t"}
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "b.parquet"), "--decision-config",
                            str(tmp_path / "dc")])
    assert r.exit_code == 0, r.output
    b = pq.read_table(tmp_path / "b.parquet").to_pandas()
    assert (a["arms"] == b["arms"]).all()
    # hmum score freezes the bound rule with the members' spread, so the service can apply it
    db = tmp_path / "s.sqlite"
    r = runner.invoke(app, ["score", "--model", str(crossfit_model), "--input",
                            str(res.users_path), "--out", str(tmp_path / "rec"), "--store",
                            str(db), "--date", "2024-01-02", "--decision-config",
                            str(tmp_path / "dc")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["store", "status", "--store", str(db)])
    assert r.exit_code == 0 and "members" in flat(r), r.output
    with SQLiteStore(db) as st:
        info = st.info(st.current())
        assert info.members == 3
        got = st.get(a["user_id"].to_numpy()[:50])
    rule_v = rule.lower_scores(got.spread, got.members, np.full((50, 2), [0.6, 0.4]))
    np.testing.assert_allclose(rule_v, a[["phi_lower_t1", "phi_lower_t2"]].to_numpy()[:50],
                               atol=1e-5)


@pytest.mark.parametrize("extra,needle", [
    (["--bound", "1.5"], "--bound: expected a confidence level in (0, 1)"),
    (["--bound", "0.9", "--bound-method", "z"], "--bound-method: expected t or normal"),
    (["--bound", "0.9", "--guardrail", "video_views>=0"], "--bound: the guardrail rule"),
    (["--bound", "0.9"], "--bound: the interval of phi comes from --model's members"),
])
def test_cli_bound_errors_are_one_line(sim, models, tmp_path, extra, needle):
    from hmum.cli.app import app

    r = CliRunner().invoke(app, _args(sim, models, tmp_path / "x.parquet", *extra))
    assert r.exit_code == 2, r.output
    text = flat(r)
    assert needle in text and "Traceback" not in text
