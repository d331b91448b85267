"""Decisions without request logs: fixed business weights and per-user weight columns."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hmum.decision.weights import (
    FixedWeights,
    UserColumnWeights,
    column_weights,
    load_weights_config,
    parse_weight_columns,
    parse_weights,
)
from hmum.exceptions import DecisionConfigError
from tests.cli_output import assert_one_line_error, flat

RESP = ["minutes", "plays"]


def test_parse_weights_normalizes():
    np.testing.assert_allclose(parse_weights("minutes=7, plays=3", RESP), [0.7, 0.3])
    np.testing.assert_allclose(parse_weights("plays=2", RESP), [0.0, 1.0])


@pytest.mark.parametrize(("text", "match"), [
    ("usage=1", "unknown response"),
    ("minutes=-1,plays=2", ">= 0"),
    ("minutes=0,plays=0", "all zero"),
    ("minutes", "RESPONSE=WEIGHT"),
    ("minutes=abc", "must be a number"),
    ("minutes=1,minutes=2", "more than once"),
])
def test_parse_weights_errors(text, match):
    with pytest.raises(DecisionConfigError, match=match):
        parse_weights(text, RESP)


def test_weights_config(tmp_path):
    p = tmp_path / "w.json"
    p.write_text(json.dumps({"weights": {"minutes": 1, "plays": 3}}))
    np.testing.assert_allclose(load_weights_config(p, RESP), [0.25, 0.75])
    p.write_text(json.dumps({"minutes": 2}))
    np.testing.assert_allclose(load_weights_config(p, RESP), [1.0, 0.0])
    p.write_text("[1, 2]")
    with pytest.raises(DecisionConfigError, match="JSON object"):
        load_weights_config(p, RESP)


def test_column_weights_per_row_and_errors():
    m = parse_weight_columns(["minutes=wa", "plays=wb"], RESP)
    w = column_weights({"wa": np.array([1.0, 0.0]), "wb": np.array([3.0, 2.0])}, m, RESP)
    np.testing.assert_allclose(w, [[0.25, 0.75], [0.0, 1.0]])
    with pytest.raises(DecisionConfigError, match="no column for response"):
        parse_weight_columns("minutes=wa", RESP)
    with pytest.raises(DecisionConfigError, match="'wa'"):
        column_weights({"wa": np.array([np.nan]), "wb": np.array([1.0])}, m, RESP)
    with pytest.raises(DecisionConfigError, match="1 row"):
        column_weights({"wa": np.array([0.0, 1]), "wb": np.array([0.0, 1])}, m, RESP)


def test_weight_models_answer_predict_weights():
    import pyarrow as pa

    req = pa.table({"user_id": [5, 9, 7]})
    np.testing.assert_allclose(FixedWeights(np.array([0.2, 0.8]), RESP).predict_weights(req),
                               [[0.2, 0.8]] * 3)
    uw = UserColumnWeights(np.array([9, 5]), np.array([[1.0, 0.0], [0.0, 1.0]]), RESP)
    np.testing.assert_allclose(uw.predict_weights(req), [[0, 1], [1, 0], [0.5, 0.5]])


# --------------------------------------------------------------------------------------
# the CLI on a user's own file (own column names)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    from hmum.data.schema import FeatureSpec, ResponseSpec, Schema
    from hmum.models.registry import get_model

    out = tmp_path_factory.mktemp("fixedw")
    rng = np.random.default_rng(0)
    n = 600
    region = rng.choice(["north", "south"], n)
    tenure = rng.normal(size=n)
    group = rng.choice(["ctl", "promo_a", "promo_b"], n)
    a = (group == "promo_a") * np.where(region == "north", 1.0, -0.5)
    b = (group == "promo_b") * 0.5
    df = pd.DataFrame({
        "cust": np.arange(1000, 1000 + n), "region": region, "tenure": tenure, "group": group,
        "minutes": np.abs(5 + tenure + a + rng.normal(size=n)),
        "plays": np.abs(3 + b - 0.5 * a + rng.normal(size=n)),
        "wt_min": rng.uniform(0, 1, n), "wt_plays": rng.uniform(0, 1, n),
    })
    df.to_csv(out / "users.csv", index=False)
    schema = Schema(features=[FeatureSpec(name="region", kind="categorical"),
                              FeatureSpec(name="tenure", kind="numeric")],
                    arm_column="group", arms=["ctl", "promo_a", "promo_b"],
                    responses=[ResponseSpec(name="minutes"), ResponseSpec(name="plays")],
                    user_id="cust")
    est = get_model("slearner", schema, trainer={"max_epochs": 1, "batch_size": 256})
    est.fit(df)
    est.save(out / "model")
    pd.DataFrame({"request_id": [1, 2, 3], "user_id": [1000, 1001, 1000]}).to_csv(
        out / "requests.csv", index=False)
    return out


def _run(*args):
    from hmum.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_decide_with_fixed_weights_per_user(user_files, tmp_path):
    res = _run("decide", "--users", user_files / "users.csv", "--hum-model",
               user_files / "model", "--weights", "minutes=7,plays=3", "--out",
               tmp_path / "d.csv", "--decision-config-out", tmp_path / "cfg")
    assert res.exit_code == 0, res.output
    text = flat(res)
    assert "Decisions for 600 users" in text and "fixed minutes=0.7, plays=0.3" in text
    df = pd.read_csv(tmp_path / "d.csv")
    assert len(df) == 600 and df["user_id"].iloc[0] == 1000
    np.testing.assert_allclose(df[["w_minutes", "w_plays"]].to_numpy(), [[0.7, 0.3]] * 600)
    rule = json.loads((tmp_path / "cfg" / "decision.json").read_text())
    assert rule["weights"] == "fixed" and rule["fixed_weights"] == pytest.approx([0.7, 0.3])
    assert rule["fit"]["weights_source"]["source"] == "fixed"


def test_decide_with_weights_config_and_requests(user_files, tmp_path):
    cfg = tmp_path / "w.json"
    cfg.write_text(json.dumps({"plays": 1}))
    res = _run("decide", "--users", user_files / "users.csv", "--hum-model",
               user_files / "model", "--weights-config", cfg, "--requests",
               user_files / "requests.csv", "--out", tmp_path / "d.parquet")
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(tmp_path / "d.parquet")
    assert df["request_id"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(df["w_plays"], 1.0)


def test_decide_with_weight_columns(user_files, tmp_path):
    res = _run("decide", "--users", user_files / "users.csv", "--hum-model",
               user_files / "model", "--weight-column", "minutes=wt_min,plays=wt_plays",
               "--out", tmp_path / "d.csv", "--decision-config-out", tmp_path / "cfg")
    assert res.exit_code == 0, res.output
    src = pd.read_csv(user_files / "users.csv")
    df = pd.read_csv(tmp_path / "d.csv")
    expect = src["wt_min"] / (src["wt_min"] + src["wt_plays"])
    np.testing.assert_allclose(df["w_minutes"], expect)
    phi = df["phi_promo_a"].to_numpy()
    assert np.isfinite(phi).all()
    rule = json.loads((tmp_path / "cfg" / "decision.json").read_text())
    assert rule["fit"]["weights_source"] == {
        "source": "columns", "columns": {"minutes": "wt_min", "plays": "wt_plays"}}


@pytest.mark.parametrize(("extra", "parts"), [
    (["--weights", "usage=1"], ["--weights", "unknown response", "usage"]),
    (["--weights", "minutes=-1,plays=1"], ["--weights", ">= 0"]),
    (["--weights", "minutes=0,plays=0"], ["--weights", "all zero"]),
    ([], ["exactly one weights source"]),
    (["--weights", "minutes=1", "--weight-column", "minutes=wt_min,plays=wt_plays"],
     ["exactly one weights source", "--weights, --weight-column"]),
    (["--weight-column", "minutes=nope,plays=wt_plays"], ["--weight-column", "nope"]),
])
def test_decide_weights_errors(user_files, tmp_path, extra, parts):
    res = _run("decide", "--users", user_files / "users.csv", "--hum-model",
               user_files / "model", "--out", tmp_path / "d.csv", *extra)
    assert_one_line_error(res, *parts)


def test_policy_eval_with_fixed_weights_writes_tradeoff(user_files, tmp_path):
    res = _run("policy-eval", "--users", user_files / "users.csv", "--hum-model",
               user_files / "model", "--weights", "minutes=1,plays=1", "--out",
               tmp_path / "pe", "--n-boot", "20")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pe" / "tradeoff.png").is_file()
    assert json.loads((tmp_path / "pe" / "weights_source.json").read_text())["source"] == "fixed"
    assert "fixed minutes=0.5, plays=0.5" in (tmp_path / "pe" / "report.md").read_text()
