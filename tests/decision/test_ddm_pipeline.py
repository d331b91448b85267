"""DDM workflows: joins, per-request decisions, the strategy report and the CLI commands."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hmum.data.simulator import SimulatorConfig, simulate
from hmum.data.validate import load_experiment
from hmum.exceptions import DataError
from hmum.models.value_weight import ValueWeightEstimator
from hmum.workflows.ddm import arm_set_labels, decide, join_users, policy_eval, user_mean_weights
from tests.cli_output import flat

SMALL_VW = {"embed_dim": 8, "n_experts": 2, "expert_sizes": [16, 8], "tower_sizes": [8]}
SMALL_HUM = {"expert_sizes": [16, 8], "tower_sizes": [8], "embed_dim": 8}


class TruthModel:
    """A perfect uplift model: returns the simulated ground truth as y_hat."""

    def predict_outcomes(self, users):
        return self.predict_all(users)["y_hat"]

    def predict_all(self, users):
        return {"y_hat": users.mu.astype(np.float32),
                "y0_branch": np.repeat(users.mu[:, :1], users.mu.shape[1] - 1, axis=1)}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    cfg = SimulatorConfig(n_users=3000, n_requests=1500, n_candidates=20, n_recent=6,
                          n_exposed=5, n_items=1000, seed=2, effect_scale=3.0)
    res = simulate(cfg, out)
    users = load_experiment(res.users_path, res.schema)
    requests = pq.read_table(res.requests_path)
    vw = ValueWeightEstimator(model=SMALL_VW, trainer={"max_epochs": 2, "batch_size": 256}
                              ).fit(requests)
    return {"res": res, "users": users, "requests": requests, "vw": vw}


def test_join_users():
    idx = join_users(np.array([5, 7, 5, 9]), np.array([9, 5, 6]))
    assert idx.tolist() == [1, -1, 1, 0]


def test_join_users_refuses_duplicate_ids():
    with pytest.raises(DataError, match="unique"):
        join_users(np.array([1]), np.array([1, 1]))


def test_user_mean_weights_and_default():
    w = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    wu, n = user_mean_weights(np.array([0, 0, -1]), w, 2)
    np.testing.assert_allclose(wu, [[0.4, 0.6], [0.4, 0.6]])  # user 1: mean of joined rows
    assert n.tolist() == [2, 0]
    wu, _ = user_mean_weights(np.array([0, 0, -1]), w, 2, default=np.array([0.9, 0.1]))
    np.testing.assert_allclose(wu[1], [0.9, 0.1])


def test_arm_set_labels():
    en = np.array([[False, False], [True, False], [True, True], [False, True]])
    assert arm_set_labels(en, ["t1", "t2"]).tolist() == ["none", "t1", "t1+t2", "t2"]


def test_decide_per_request(sim):
    users, req, vw = sim["users"], sim["requests"].slice(0, 200), sim["vw"]
    df = decide(req, users, TruthModel(), vw, sigma=0.001)
    assert len(df) == 200
    idx = join_users(df["user_id"].to_numpy(), users.user_id)
    delta = users.mu[idx, 1:] / users.mu[idx, :1] - 1
    w = df[["w_usage_time", "w_video_views"]].to_numpy()
    np.testing.assert_allclose(w, vw.predict_weights(req), rtol=1e-6)
    phi = np.einsum("nkr,nr->nk", delta, w)
    np.testing.assert_allclose(df[["phi_t1", "phi_t2"]].to_numpy(), phi, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(df[["enable_t1", "enable_t2"]].to_numpy(), phi > 0.001)


def test_decide_unknown_users(sim):
    users = sim["users"].take(np.arange(100, 3000))  # requests of users 0..99 lose their user
    req = sim["requests"].slice(0, 1000)
    with pytest.raises(DataError, match="not found among the users"):
        decide(req, users, TruthModel(), sim["vw"])
    df = decide(req, users, TruthModel(), sim["vw"], missing="drop")
    assert len(df) == 1000 - 500 and df["user_id"].min() >= 100
    assert df.attrs["n_dropped"] == 500


def test_decide_unknown_users_message_names_the_python_or_cli_option(sim):
    from hmum.exceptions import cli_flags

    users = sim["users"].take(np.arange(100, 3000))
    req = sim["requests"].slice(0, 1000)
    with pytest.raises(DataError, match="pass missing='drop' to skip those requests"):
        decide(req, users, TruthModel(), sim["vw"])
    with cli_flags(missing="--drop-unknown-users"):
        with pytest.raises(DataError, match="pass --drop-unknown-users to skip those requests"):
            decide(req, users, TruthModel(), sim["vw"])


def test_policy_eval_writes_tables_plot_and_report(sim, tmp_path):
    users = sim["users"]
    res = policy_eval(users, TruthModel(), tmp_path, requests=sim["requests"],
                      vw_estimator=sim["vw"], n_boot=50)
    for f in ("strategy_table.csv", "strategy_table.json", "strategy_table.md", "ope_table.csv",
              "tradeoff.png", "report.md"):
        assert (tmp_path / f).is_file(), f
    tab = res["strategy_table"].set_index("strategy")
    assert json.loads((tmp_path / "strategy_table.json").read_text())[0]["strategy"]
    assert tab.loc["oracle", "oracle_share"] == pytest.approx(1.0)
    # with a perfect uplift model HMUM beats every whole-population strategy in value
    pop = [s for s in tab.index if s.startswith("everyone")]
    assert tab.loc["HMUM (independent)", "value"] > tab.loc[pop, "value"].max()
    assert tab.loc["HMUM (independent)", "value"] > tab.loc["random", "value"]
    ope = res["ope_table"]
    assert set(ope["estimator"]) == {"ipw", "dr"}
    assert "HMUM (exclusive)" in set(ope["strategy"])
    assert "true_change_usage_time" in ope
    assert "![trade-off](tradeoff.png)" in (tmp_path / "report.md").read_text()


def test_policy_eval_without_requests_uses_equal_weights(sim, tmp_path):
    res = policy_eval(sim["users"], TruthModel(), tmp_path, n_boot=20, plot=False)
    np.testing.assert_allclose(res["w_user"], 0.5)
    tab = res["strategy_table"].set_index("strategy")
    assert tab.loc["HMUM (independent)", "value"] == tab.loc["fixed w (independent)", "value"]


# --- the command line ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_app():
    from hmum.cli.app import app

    return app


def test_cli_train_decide_policy_eval(sim, tmp_path, cli_app):
    pytest.importorskip("onnx")
    res, users = sim["res"], sim["users"]
    from hmum.workflows.train import train_hum

    # train_hum records the split and the table it split, so --test-split can check both
    hum, _ = train_hum(users, model=SMALL_HUM, trainer={"max_epochs": 1, "batch_size": 512})
    hum.save(tmp_path / "hum")
    runner = CliRunner()
    r = runner.invoke(cli_app, ["train-value-weights", "--requests", str(res.requests_path),
                                "--out", str(tmp_path / "vw"), "--epochs", "1",
                                "--onnx", str(tmp_path / "vw.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "vw.onnx").is_file()
    r = runner.invoke(cli_app, ["decide", "--requests", str(res.requests_path), "--users",
                                str(res.users_path), "--hum-model", str(tmp_path / "hum"),
                                "--value-model", str(tmp_path / "vw"), "--out",
                                str(tmp_path / "dec.csv"), "--mode", "exclusive"])
    assert r.exit_code == 0, r.output
    assert "share enabling t1" in flat(r)
    dec = (tmp_path / "dec.csv").read_text().splitlines()
    assert len(dec) == 1500 + 1
    r = runner.invoke(cli_app, ["policy-eval", "--users", str(res.users_path), "--hum-model",
                                str(tmp_path / "hum"), "--requests", str(res.requests_path),
                                "--value-model", str(tmp_path / "vw"), "--out",
                                str(tmp_path / "pe"), "--n-boot", "20", "--test-split"])
    assert r.exit_code == 0, r.output
    assert "oracle" in flat(r) and (tmp_path / "pe" / "report.md").is_file()


def test_cli_decide_unknown_users(sim, tmp_path, cli_app):
    """`pass missing='drop'` named a Python parameter; the CLI names its flag, and the flag
    says how many requests it dropped."""
    from hmum.workflows.train import train_hum

    res, users = sim["res"], sim["users"]
    hum, _ = train_hum(users, model=SMALL_HUM, trainer={"max_epochs": 1, "batch_size": 1024})
    hum.save(tmp_path / "hum")
    sim["vw"].save(tmp_path / "vw")
    # the users file without its first 100 users: their requests have no user
    pq.write_table(pq.read_table(res.users_path).slice(100), tmp_path / "users.parquet")
    args = ["decide", "--requests", str(res.requests_path), "--users",
            str(tmp_path / "users.parquet"), "--hum-model", str(tmp_path / "hum"),
            "--value-model", str(tmp_path / "vw"), "--out", str(tmp_path / "dec.parquet")]
    r = CliRunner().invoke(cli_app, args)
    assert r.exit_code == 2, r.output
    text = flat(r)
    assert "pass --drop-unknown-users to skip those requests" in text
    assert "missing=" not in text
    r = CliRunner().invoke(cli_app, [*args, "--drop-unknown-users"])
    assert r.exit_code == 0, r.output
    n_lost = int(np.isin(pq.read_table(res.requests_path)["user_id"].to_numpy(),
                         users.user_id[:100]).sum())
    assert n_lost > 0
    assert (f"--drop-unknown-users: dropped {n_lost:,} of 1,500 request(s) whose user is not "
            "in --users") in flat(r)
    assert pq.read_table(tmp_path / "dec.parquet").num_rows == 1500 - n_lost


def test_cli_decide_bad_mode(cli_app, tmp_path):
    r = CliRunner().invoke(cli_app, ["decide", "--requests", "x", "--users", "y", "--hum-model",
                                     "z", "--value-model", "v", "--mode", "both"])
    assert r.exit_code == 2 and "--mode must be one of" in flat(r)


def test_run_ddm_demo_stage(sim, tmp_path):
    pytest.importorskip("onnxruntime")
    from hmum.workflows.demo import run_ddm_demo_stage

    users_test = sim["users"].take(np.arange(0, 3000, 10))
    res = run_ddm_demo_stage(tmp_path, sim["res"], TruthModel(), users_test, sim["requests"],
                             epochs=1, n_boot=20, console=None)
    for key in ("strategy_table", "ope_table", "plot", "report", "decisions", "onnx"):
        assert res[key] is not None, key
    assert res["report"].name == "ddm_report.md" and res["report"].is_file()
    assert not (tmp_path / "report.md").exists()  # the demo's own report is left alone
    s = res["summary"]
    assert s["n_requests_scored"] == 300
    assert s["value_weight"]["onnx_max_abs_diff"] < 1e-5
    assert res["markdown"].startswith("## Decisions (DDM)")
    assert "### Strategies on ground truth" in res["markdown"]
    tab = res["strategy_table"].set_index("strategy")
    assert "HMUM w on true δ (diagnostic)" in tab.index
    assert tab.loc["oracle", "value"] >= tab["value"].max() - 1e-12
    # the other world, on its true uplift: the true weights are the oracle in exclusive mode
    cw = s["contested_world"]
    assert cw["exclusive"]["true w"] == pytest.approx(1.0)
    assert cw["exclusive"]["fixed w (mean true w)"] < 0.9
    assert "### The contested world, on its true uplift" in res["markdown"]
    assert "## The contested world, on its true uplift" in res["report"].read_text()


class FixedModel:
    def __init__(self, y_hat):
        self.y_hat = y_hat

    def predict_all(self, users):
        return {"y_hat": self.y_hat}

    def predict_outcomes(self, users):
        return self.predict_all(users)["y_hat"]


def test_policy_eval_on_logs_without_ground_truth(sim, tmp_path):
    import dataclasses

    users = sim["users"]
    logs = dataclasses.replace(users, mu=None, mu_all=None)
    res = policy_eval(logs, FixedModel(users.mu), tmp_path, requests=sim["requests"],
                      vw_estimator=sim["vw"], n_boot=30)
    assert res["strategy_table"] is None and not (tmp_path / "strategy_table.csv").exists()
    ope = res["ope_table"]
    # every scored strategy gives each user one logged arm, random included
    assert {"nobody (control)", "everyone t1", "HMUM (exclusive)", "random"} <= set(ope.strategy)
    assert "everyone t1+t2" not in set(ope.strategy)
    assert res["plot"] is not None and res["plot"].is_file()


def test_policy_eval_reports_what_personalization_adds(sim, tmp_path):
    from hmum.workflows.ddm import DIAG_FIXED, DIAG_HMUM, DIAG_TRUE, true_user_weights

    users = sim["users"]
    cfg = SimulatorConfig.model_validate_json(sim["res"].config_path.read_text())
    w_true = true_user_weights(cfg, users.user_id)
    res = policy_eval(users, TruthModel(), tmp_path, requests=sim["requests"],
                      vw_estimator=sim["vw"], w_true=w_true, n_boot=20, plot=False,
                      world="a test world")
    tab = res["strategy_table"].set_index("strategy")
    assert {DIAG_HMUM, DIAG_FIXED, DIAG_TRUE} <= set(tab.index)
    p = res["personalization"]
    # with a perfect uplift model the estimated and the true-uplift rows coincide
    assert p["estimated"]["HMUM"] == pytest.approx(p["true_uplift"]["HMUM w"])
    assert p["estimated"]["fixed w"] == pytest.approx(p["true_uplift"]["fixed w"])
    assert p["true_uplift"]["true w"] == pytest.approx(tab.loc[DIAG_TRUE, "oracle_share"])
    corr = np.corrcoef(res["w_user"][:, 0], w_true[:, 0])[0, 1]
    assert p["corr_w_true"][0] == pytest.approx(corr)
    report = (tmp_path / "report.md").read_text()
    assert "## What the personalized weights add" in report and "World: a test world." in report
