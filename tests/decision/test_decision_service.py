"""Item 5 of issue 16: the service decides by the rule frozen into the store version, so a
guardrail change is deployed (and rolled back) with the store's atomic switch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.serving.helpers import (
    DAY,
    ConstantModel,
    build_tiny_model,
    fill_store,
    request_body,
    require_service,
)

TestClient = require_service()

from hmum.decision.rules import DecisionRule, rule_to_version_extra  # noqa: E402
from hmum.exceptions import DecisionConfigError  # noqa: E402
from hmum.serving.config import ServiceConfig  # noqa: E402
from hmum.serving.scoring import run_scoring  # noqa: E402
from hmum.serving.service import create_app  # noqa: E402
from hmum.serving.store import SQLiteStore  # noqa: E402

USERS = 1000 + np.arange(20)
# every user's delta (K, R) is helpers.DELTA: t1 trades usage time for views (phi depends
# on w), t2 lowers both (phi < 0)
RESP, TREAT = ["usage_time", "video_views"], ["t1", "t2"]


@pytest.fixture(scope="module")
def vw(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("vw"))


def add_version(st, name, extra=None):
    fill_store(st, RESP, name, USERS, extra=extra, switch=False)


def config(vw, store_path) -> ServiceConfig:
    return ServiceConfig(value_weight_model=vw[0], store_url=str(store_path), verify_samples=8,
                         store_timeout_ms=1000)


# a rule whose decision does not depend on w: t2 always (sigma -1), t1 never (sigma +1)
RULE = DecisionRule(RESP, TREAT, sigma=[1.0, -1.0])


def test_service_follows_the_versions_rule_through_switch_and_rollback(vw, tmp_path):
    db = tmp_path / "u.sqlite"
    with SQLiteStore(db) as st:
        add_version(st, "v1")
        add_version(st, "v2", rule_to_version_extra(RULE))
        st.switch("v1")
    reqs = [request_body(vw[2], i, int(u)) for i, u in enumerate(USERS[:8])]
    with TestClient(create_app(config(vw, db))) as c:
        def decide_all():
            out = c.post("/v1/decide/batch", json={"requests": reqs}).json()["decisions"]
            return out, c.post("/v1/decide", json=reqs[0]).json()

        batch, one = decide_all()  # v1: no rule, phi > sigma = 0
        assert {d["store_version"] for d in batch} == {"v1"}
        for d in [*batch, one]:
            assert "t2" not in d["enabled"]  # phi_t2 < 0 whatever w
            assert ("t1" in d["enabled"]) == (d["phi"]["t1"] > 0)
        with SQLiteStore(db) as st:
            st.switch("v2")
        batch, one = decide_all()
        for d in [*batch, one]:  # v2's frozen rule, the same phi
            assert d["store_version"] == "v2" and d["enabled"] == ["t2"]
        with SQLiteStore(db) as st:
            st.rollback()
        batch, _ = decide_all()
        assert {d["store_version"] for d in batch} == {"v1"}
        assert all("t2" not in d["enabled"] for d in batch)


def test_service_refuses_an_altered_rule(vw, tmp_path):
    db = tmp_path / "u.sqlite"
    extra = rule_to_version_extra(RULE)
    extra["decision"]["sigma"] = [-1.0, -1.0]  # edited after freezing: sha256 mismatch
    with SQLiteStore(db) as st:
        add_version(st, "v1", extra)
        st.switch("v1")
    with TestClient(create_app(config(vw, db))) as c:
        d = c.post("/v1/decide", json=request_body(vw[2], 0, int(USERS[0]))).json()
        assert d["enabled"] == [] and d["degraded"] and d["reason"] == "store_layout"


def test_scoring_freezes_the_rule_into_the_new_version(vw, tmp_path):
    users = pa.table({"user_id": pa.array(USERS, pa.int64()),
                      "seg": pa.array(["a", "b"] * (len(USERS) // 2)),
                      "x1": pa.array(np.linspace(0, 1, len(USERS)))})
    import pyarrow.parquet as pq

    pq.write_table(users, tmp_path / "users.parquet")
    db = tmp_path / "s.sqlite"
    cfg = {"date": DAY, "model_version": "m1", "sample_reads": 4, "decision": RULE.to_dict()}
    rep = run_scoring(ConstantModel(RESP), tmp_path / "users.parquet", tmp_path / "out",
                      str(db), cfg)
    with SQLiteStore(db) as st:
        from hmum.decision.rules import rule_from_version_extra

        assert rule_from_version_extra(st.info(rep.current).extra) == RULE
    other = DecisionRule(RESP, ["a", "b"]).to_dict()
    with pytest.raises(DecisionConfigError, match="made for responses"):
        run_scoring(ConstantModel(RESP), tmp_path / "users.parquet", tmp_path / "out2",
                    str(tmp_path / "never.sqlite"), {**cfg, "decision": other})
    assert not (tmp_path / "never.sqlite").exists()  # refused before the store was touched


def test_cli_score_decision_config_errors_name_the_flag(tmp_path):
    from typer.testing import CliRunner

    from hmum.cli.app import app
    from tests.cli_output import flat

    r = CliRunner().invoke(app, ["score", "--model", str(tmp_path / "m"), "--input",
                                 str(tmp_path / "u.parquet"), "--decision-config",
                                 str(tmp_path / "nothing")])
    assert r.exit_code == 2
    assert "--decision-config:" in flat(r)
    assert "no decision config folder" in flat(r)


BOUND_RULE = DecisionRule(RESP, TREAT, sigma=[0.0, 0.0],
                          bound={"level": 0.9, "source": "branches"})


def test_service_switches_on_the_lower_bound_from_the_stored_spread(vw, tmp_path):
    from hmum.decision.bounds import pack_spread, spread_interval

    rng = np.random.default_rng(0)
    # 4 members per user around t1 = (+0.10, +0.05): phi > 0 for every w; the members'
    # disagreement grows with the user, so the lower bound clears 0 for some users only
    n = len(USERS)
    scale = np.linspace(0.001, 0.2, n)[None, :, None, None]
    z = rng.standard_normal((4, n, 2, 2))
    md = np.array([[0.10, 0.05], [-0.20, -0.30]])[None, None] + scale * (z - z.mean(0))
    spread = pack_spread(md).astype(np.float32)
    db = tmp_path / "u.sqlite"
    from hmum.serving.store import VersionInfo

    with SQLiteStore(db) as st:
        st.create_version(VersionInfo(version="vb", K=2, R=2, arms=["control", *TREAT],
                                      responses=RESP, members=4,
                                      extra=rule_to_version_extra(BOUND_RULE)))
        st.put("vb", USERS, md.mean(0).astype(np.float32), spread=spread)
        st.mark_ready("vb", n)
        st.switch("vb")
    reqs = [request_body(vw[2], i, int(u)) for i, u in enumerate(USERS)]
    with TestClient(create_app(config(vw, db))) as c:
        out = c.post("/v1/decide/batch", json={"requests": reqs}).json()["decisions"]
        one = c.post("/v1/decide", json=reqs[-1]).json()
    assert one == out[-1]
    w = np.array([[d["weights"][r] for r in RESP] for d in out], dtype=np.float32)
    lo = spread_interval(spread, 4, w, k=2, level=0.9)["lo"]
    for i, d in enumerate(out):
        assert d["phi_lower"] == pytest.approx(dict(zip(TREAT, lo[i], strict=True)), abs=1e-9)
        assert d["enabled"] == [t for t, v in zip(TREAT, lo[i], strict=True) if v > 0]
        assert d["phi"]["t1"] > 0  # the point rule would enable t1 for everyone
    on = [("t1" in d["enabled"]) for d in out]
    assert on[0] and not on[-1]  # sure for the first users, not for the last


def test_service_refuses_a_bound_rule_on_a_version_without_spread(vw, tmp_path):
    db = tmp_path / "u.sqlite"
    with SQLiteStore(db) as st:
        add_version(st, "v1", rule_to_version_extra(BOUND_RULE))
        st.switch("v1")
    with TestClient(create_app(config(vw, db))) as c:
        d = c.post("/v1/decide", json=request_body(vw[2], 0, int(USERS[0]))).json()
        assert d["enabled"] == [] and d["degraded"] and d["reason"] == "store_layout"
        assert "phi_lower" not in d


def test_scoring_a_bound_rule_stores_the_members_spread(tmp_path):
    import pyarrow.parquet as pq

    from hmum.data.simulator import SimulatorConfig, simulate_users, simulation_schema
    from hmum.data.validate import validate_table
    from hmum.decision.bounds import pack_spread
    from hmum.models.hum import HUMEstimator

    sim = SimulatorConfig(n_users=1200, seed=2)
    users = simulate_users(sim)
    d = validate_table(users, simulation_schema(sim))
    est = HUMEstimator(d.schema, model={"branches_per_treatment": 3, "expert_sizes": [8],
                                        "tower_sizes": [4], "embed_dim": 4},
                       trainer={"max_epochs": 1, "batch_size": 512}).fit(d)
    pq.write_table(users, tmp_path / "users.parquet")
    rule = DecisionRule(d.schema.response_names, d.schema.arms[1:],
                        bound={"level": 0.9, "source": "branches"})
    db = tmp_path / "s.sqlite"
    cfg = {"date": DAY, "model_version": "m1", "sample_reads": 16, "shard_rows": 500,
           "decision": rule.to_dict()}
    rep = run_scoring(est, tmp_path / "users.parquet", tmp_path / "out", str(db), cfg)
    ids = users.column("user_id").to_numpy()
    want = pack_spread(est.member_deltas(d)).astype(np.float32)
    with SQLiteStore(db) as st:
        assert st.info(rep.current).members == 3
        got = st.get(ids)
    assert got.found.all()
    np.testing.assert_allclose(got.spread, want, rtol=1e-4, atol=1e-7)
    rec = pq.read_table(rep.partition)
    assert "member_cov__t1__usage_time__video_views" in rec.column_names
    # a resumed run with another rule (no bound) is another run: refused, names the setting
    from hmum.exceptions import ScoringError

    with pytest.raises(ScoringError, match="members"):
        run_scoring(est, tmp_path / "users.parquet", tmp_path / "out", str(db),
                    {**cfg, "decision": None})
    # a model without members, or members from several fits, cannot serve the bound
    with pytest.raises(DecisionConfigError, match="has 1: use a HUM with"):
        run_scoring(ConstantModel(RESP), tmp_path / "users.parquet", tmp_path / "o2",
                    str(tmp_path / "never.sqlite"), {**cfg, "model_version": "m2"})
    seeds = DecisionRule(d.schema.response_names, d.schema.arms[1:],
                         bound={"level": 0.9, "source": "seeds"})
    with pytest.raises(DecisionConfigError, match="from 'seeds' members"):
        run_scoring(est, tmp_path / "users.parquet", tmp_path / "o3",
                    str(tmp_path / "never.sqlite"), {**cfg, "decision": seeds.to_dict()})
    assert not (tmp_path / "never.sqlite").exists()
