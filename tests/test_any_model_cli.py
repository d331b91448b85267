"""Issue 15 #3: ``hmum train --model NAME [-o key=value]`` for every savable model, and
evaluate / score / decide / policy-eval with any saved artifact, on a user's own CSV."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hmum.cli.app import app
from hmum.data.schema import Schema
from hmum.models.registry import load_estimator
from tests.cli_output import assert_one_line_error, flat

runner = CliRunner()
SMALL = json.dumps([8])
FAST = ["--epochs", "1", "--batch-size", "256", "--threads", "1"]


def user_frame(n: int = 900, seed: int = 0) -> pd.DataFrame:
    """A user's experiment in their own words: three variants, two outcomes."""
    rng = np.random.default_rng(seed)
    variant = rng.choice(["ctrl", "promo_a", "promo_b"], n)
    age = rng.uniform(18, 70, n).round(1)
    city = rng.choice(["paris", "lyon", "nice"], n)
    lift = np.where(variant == "promo_a", 0.5, 0.0) + np.where(variant == "promo_b", 0.2, 0)
    minutes = np.exp(rng.normal(1.0 + lift * (age > 40), 0.5)).round(3)
    clicks = rng.poisson(1.0 + lift).astype(np.int64)
    return pd.DataFrame({"customer": np.arange(n) + 1000, "age": age, "city": city,
                         "variant": variant, "minutes": minutes, "clicks": clicks})


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("user_exp")
    df = user_frame()
    df.to_csv(out / "experiment.csv", index=False)
    Schema.infer(df, arm="variant", responses=["minutes", "clicks"], user_id="customer",
                 control="ctrl").to_json(out / "experiment.schema.json")
    return out


def train(experiment, out, model: str, *more: str):
    """``hmum train`` of the experiment's CSV and schema into ``out`` with ``--model``."""
    return runner.invoke(app, ["train", "--data", str(experiment / "experiment.csv"),
                               "--schema", str(experiment / "experiment.schema.json"),
                               "--out", str(out), "--model", model, *more])


@pytest.fixture(scope="module")
def slearner(experiment):
    model = experiment / "slearner"
    res = train(experiment, model, "slearner", "-o", "embed_dim=4", "-o",
                f"hidden_sizes={SMALL}", "-o", f"head_sizes={SMALL}", *FAST)
    assert res.exit_code == 0, res.output
    assert "slearner" in flat(res)
    return model


def test_train_slearner_records_its_name_and_options(slearner):
    cfg = json.loads((slearner / "config.json").read_text())
    assert cfg["model_type"] == "slearner" and cfg["name"] == "slearner"
    assert cfg["model"]["embed_dim"] == 4 and cfg["model"]["hidden_sizes"] == [8]
    est = load_estimator(slearner)
    assert est.registry_name_ == "slearner" and est.split_["rule"] == "stratified"


def test_evaluate_a_slearner_artifact(slearner, experiment, tmp_path):
    res = runner.invoke(app, ["evaluate", "--model", str(slearner), "--data",
                              str(experiment / "experiment.csv"), "--test-split", "--out",
                              str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    cells = summary["tables"]["slearner"]
    assert {(c["treatment"], c["response"]) for c in cells} == {
        (t, r) for t in ("promo_a", "promo_b") for r in ("minutes", "clicks")}


def test_evaluate_explain_puts_the_explanations_in_the_html_report(slearner, experiment,
                                                                  tmp_path):
    from html.parser import HTMLParser

    res = runner.invoke(app, ["evaluate", "--model", str(slearner), "--data",
                              str(experiment / "experiment.csv"), "--out",
                              str(tmp_path / "eval"), "--explain"])
    assert res.exit_code == 0, res.output
    explained = tmp_path / "eval" / "explain"
    table = pd.read_csv(explained / "importance.csv")
    assert set(table["feature"]) == {"age", "city"}
    html = (tmp_path / "eval" / "report.html").read_text()
    images = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                images.append(dict(attrs))

    Images().feed(html)
    charts = [i for i in images if "importance" in (i.get("alt") or "").lower()
              or "importance" in (i.get("title") or "").lower()]
    assert len(charts) == 4, [i.get("alt") for i in images]  # 2 treatments x 2 responses
    assert all(i["src"].startswith("data:image/png;base64,") for i in charts)


def test_score_with_a_slearner_artifact(slearner, experiment, tmp_path):
    users = tmp_path / "users.parquet"
    pd.read_csv(experiment / "experiment.csv").drop(
        columns=["variant", "minutes", "clicks"]).to_parquet(users, index=False)
    res = runner.invoke(app, ["score", "--model", str(slearner), "--input", str(users),
                              "--out", str(tmp_path / "scores"), "--store",
                              str(tmp_path / "s.sqlite"), "--date", "2024-01-02"])
    assert res.exit_code == 0, res.output
    assert "scored 900 users" in flat(res)
    rec = pq.read_table(next((tmp_path / "scores").rglob("*.parquet")))
    assert "delta__promo_b__clicks" in rec.column_names and rec.num_rows == 900


def test_policy_eval_with_a_slearner_artifact_through_the_new_flag(slearner, experiment,
                                                                   tmp_path):
    res = runner.invoke(app, ["policy-eval", "--users", str(experiment / "experiment.csv"),
                              "--model", str(slearner), "--out", str(tmp_path / "pe"),
                              "--n-boot", "5", "--test-split"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pe" / "report.md").is_file()


def test_arm_means_trains_and_evaluates(experiment, tmp_path):
    res = train(experiment, tmp_path / "am", "arm_means")
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "am"), "--data",
                              str(experiment / "experiment.csv"), "--test-split", "--out",
                              str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output


def test_causalml_refused_before_training(experiment, tmp_path):
    res = train(experiment, tmp_path / "c", "causalml_t")
    assert_one_line_error(res, "--model causalml_t: refused before training",
                          "never use pickle")
    assert not (tmp_path / "c").exists()


def test_unknown_option_key_names_the_key_and_the_model(experiment, tmp_path):
    res = train(experiment, tmp_path / "m", "tarnet", "-o", "n_layers=3")
    assert_one_line_error(res, "-o n_layers: model tarnet", "no config field 'n_layers'")


def test_kl_weight_is_a_hum_option(experiment, tmp_path):
    res = train(experiment, tmp_path / "m", "slearner", "--kl-weight", "0")
    assert_one_line_error(res, "--kl-weight: model slearner", "HUM option")


def test_bad_option_value_names_the_option(experiment, tmp_path):
    res = train(experiment, tmp_path / "m", "hum", "-o", "kl_weight=-1")
    assert_one_line_error(res, "-o kl_weight")


def test_unknown_model_lists_the_known_ones(experiment, tmp_path):
    res = train(experiment, tmp_path / "m", "nope")
    assert_one_line_error(res, "--model: unknown model 'nope'", "slearner")


def test_crossfit_flag_trains_that_many_members(experiment, tmp_path):
    res = train(experiment, tmp_path / "cf", "slearner", "--crossfit", "3", "-o",
                "embed_dim=4", "-o", f"hidden_sizes={SMALL}", "-o", f"head_sizes={SMALL}", *FAST)
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "cf" / "config.json").read_text())
    assert cfg["trainer"]["crossfit"] == 3
    est = load_estimator(tmp_path / "cf")
    assert len(est.module_.members) == 3
    # the loaded members predict an (N, K, R) uplift
    from hmum.data.validate import load_experiment

    data = load_experiment(experiment / "experiment.csv", est.schema)
    tau = est.predict_uplift(data)
    assert tau.shape == (900, 2, 2) and np.isfinite(tau).all()


@pytest.mark.parametrize(("model", "more", "parts"), [
    ("arm_means", ("--crossfit", "2"), ("--crossfit:", "--model arm_means is not one")),
    ("hum_crossfit", ("--crossfit", "4"), ("--crossfit: --model hum_crossfit fixes crossfit 2",
                                           "got 4")),
    ("hum", ("--crossfit", "9"), ("--crossfit:", "<= 8", "got 9")),
])
def test_crossfit_flag_refuses_what_it_cannot_do(experiment, tmp_path, model, more, parts):
    res = train(experiment, tmp_path / "m", model, *more)
    assert_one_line_error(res, *parts)
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def sim_slearner(tmp_path_factory):
    """(simulation, S-Learner artifact) on simulated users with request logs (the
    value-weight model and the service need them)."""
    from hmum.data.simulator import SimulatorConfig, simulate

    root = tmp_path_factory.mktemp("sim_sl")
    sim = simulate(SimulatorConfig(n_users=600, n_requests=200, n_candidates=10, n_recent=4,
                                   n_exposed=3, n_items=200, seed=4), root / "sim")
    res = runner.invoke(app, ["train", "--data", str(sim.users_path), "--out",
                              str(root / "sl"), "--model", "slearner", "-o",
                              "embed_dim=4", "-o", f"hidden_sizes={SMALL}", *FAST])
    assert res.exit_code == 0, res.output
    return sim, root / "sl"


def test_decide_with_a_slearner_artifact(sim_slearner, tmp_path):
    """The uplift model is a S-Learner, read through the former flag name --hum-model."""
    from hmum.models.value_weight import ValueWeightEstimator

    sim, model = sim_slearner
    vw = ValueWeightEstimator(model={"embed_dim": 4, "n_experts": 2, "expert_sizes": [8],
                                     "tower_sizes": [4]},
                              trainer={"max_epochs": 1, "batch_size": 128}
                              ).fit(pq.read_table(sim.requests_path))
    vw.save(tmp_path / "vw")
    res = runner.invoke(app, ["decide", "--requests", str(sim.requests_path), "--users",
                              str(sim.users_path), "--hum-model", str(model),
                              "--value-model", str(tmp_path / "vw"), "--out",
                              str(tmp_path / "dec.csv")])
    assert res.exit_code == 0, res.output
    assert "share enabling t1" in flat(res)
    assert len((tmp_path / "dec.csv").read_text().splitlines()) == 200 + 1


def test_serve_decides_from_a_slearner_scored_store(sim_slearner, tmp_path):
    from tests.serving.helpers import build_tiny_model, make_config, request_body, require_service

    client = require_service()
    from hmum.serving.service import create_app

    sim, model = sim_slearner
    res = runner.invoke(app, ["score", "--model", str(model), "--input", str(sim.users_path),
                              "--out", str(tmp_path / "scores"), "--store",
                              str(tmp_path / "uplift.sqlite"), "--date", "2024-01-02"])
    assert res.exit_code == 0, res.output
    vw = build_tiny_model(tmp_path)
    uid = pq.read_table(sim.users_path, columns=["user_id"]).column(0)[3].as_py()
    with client(create_app(make_config(vw, tmp_path))) as c:
        d = c.post("/v1/decide", json=request_body(vw[2], 0, uid)).json()
    assert not d["degraded"], d
    assert d["store_version"].startswith("20240102-") and len(d["phi"]) == 2


def test_branch_bounds_need_a_hum_model(experiment, slearner):
    from hmum.data.validate import load_experiment
    from hmum.workflows.ddm import branch_member_deltas

    est = load_estimator(slearner)
    users = load_experiment(experiment / "experiment.csv", est.schema)
    with pytest.raises(ValueError, match="need a HUM model.*this model is slearner"):
        branch_member_deltas(est, users)
