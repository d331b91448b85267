"""The decision service in process (FastAPI test client, SQLite store): decisions against
hand-computed phi, validation (422 naming the field), degraded mode, breaker, readiness,
metrics and configuration. Start-up failures, access control (token, rate limit), content
type, capped 422s and large batches: tests/serving/test_service_guard.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.serving.helpers import (
    DELTA,
    USERS,
    drop_fast_path,
    fill_store,
    make_config,
    request_body,
    require_service,
)

TestClient = require_service()

from hmum.exceptions import (  # noqa: E402
    ConfigError,  # noqa: E402
    ModelCheckError,
    StoreTimeout,
)
from hmum.models.value_weight import OnnxValueWeights  # noqa: E402
from hmum.serving.config import load_config  # noqa: E402
from hmum.serving.service import CircuitBreaker, create_app  # noqa: E402
from hmum.serving.store import SQLiteStore  # noqa: E402


@pytest.fixture
def client(vw, tmp_path, sqlite_store):
    app = create_app(make_config(vw, tmp_path))
    with TestClient(app) as c:
        yield c


# --- decisions ---------------------------------------------------------------------------


def test_decision_matches_hand_computed_phi(client, vw):
    _, onnx, est, table = vw
    body = request_body(table, 5, int(USERS[3]))
    r = client.post("/v1/decide", json=body)
    assert r.status_code == 200, r.text
    d = r.json()
    w = np.array([d["weights"][k] for k in est.responses_])
    assert w.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(w, est.predict_weights(table.slice(5, 1))[0], atol=1e-5)
    phi = DELTA @ w  # (K,) = sum_r w_r delta_r^k
    assert [d["phi"]["t1"], d["phi"]["t2"]] == pytest.approx(phi.tolist(), abs=1e-6)
    assert d["enabled"] == [t for t, p in zip(["t1", "t2"], phi, strict=True) if p > 0]
    assert d["degraded"] is False and d["reason"] is None
    assert d["store_version"] == "v1" and len(d["model_version"]) == 12
    assert d["user_id"] == int(USERS[3])


def test_sigma_switches_treatments_off(vw, tmp_path, sqlite_store):
    app = create_app(make_config(vw, tmp_path, sigma=10.0))
    with TestClient(app) as c:
        d = c.post("/v1/decide", json=request_body(vw[3], 0, int(USERS[0]))).json()
    assert d["enabled"] == [] and d["phi"] is not None


def test_weights_decide_which_treatment(vw, tmp_path, sqlite_store):
    """t1 gains usage time and loses views: enabled exactly when w_usage > w_views."""
    app = create_app(make_config(vw, tmp_path))
    seen = set()
    with TestClient(app) as c:
        for row in range(40):
            d = c.post("/v1/decide", json=request_body(vw[3], row, int(USERS[row]))).json()
            w = d["weights"]
            want = ["t1"] if w["usage_time"] > w["video_views"] else []
            assert d["enabled"] == want
            seen.add(tuple(want))
    assert seen  # at least one outcome; both when the model's weights vary enough


def test_unknown_user_gets_no_treatment_with_reason(client, vw):
    d = client.post("/v1/decide", json=request_body(vw[3], 0, 7)).json()
    assert d["enabled"] == [] and d["phi"] is None
    assert d["reason"] == "unknown_user" and d["degraded"] is False
    d = client.post("/v1/decide", json=request_body(vw[3], 0, "not-a-number")).json()
    assert d["reason"] == "unknown_user"


def test_batch_equals_single_decisions(client, vw):
    table = vw[3]
    bodies = [request_body(table, i, int(USERS[i]), n_cand=[20, 7, 20][i % 3]) for i in range(6)]
    bodies.append(request_body(table, 6, 5))  # unknown
    bodies.append(request_body(table, 7, "abc"))  # a string id against integer ids: unknown
    r = client.post("/v1/decide/batch", json={"requests": bodies})
    assert r.status_code == 200, r.text
    batch = r.json()["decisions"]
    for b, d in zip(bodies, batch, strict=True):
        single = client.post("/v1/decide", json=b).json()
        assert single["enabled"] == d["enabled"] and single["reason"] == d["reason"]
        assert single["weights"] == pytest.approx(d["weights"], abs=1e-6)
        if single["phi"] is not None:
            assert single["phi"] == pytest.approx(d["phi"], abs=1e-6)


# --- validation: 422 naming the field -----------------------------------------------------


def _message(r) -> str:
    assert r.status_code == 422, r.text
    return r.json()["message"]


def test_malformed_json_is_422(client):
    r = client.post("/v1/decide", content=b'{"user_id": 1, "candidates": {',
                    headers={"content-type": "application/json"})
    assert "Invalid JSON" in _message(r)


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b["candidates"]["category"].__setitem__(3, "x"), "candidates.category[3]"),
    (lambda b: b["candidates"]["category"].__setitem__(2, 1.5), "candidates.category[2]"),
    (lambda b: b["recent"]["author_tier"].__setitem__(0, -1), "recent.author_tier[0]"),
    (lambda b: b.__setitem__("user_id", [1]), "user_id"),
    (lambda b: b.__setitem__("extra", 1), "extra"),
    (lambda b: b["candidates"].pop("category"), "candidates.category"),
    (lambda b: b["candidates"].__setitem__("colour", [1] * 20), "candidates.colour"),
    (lambda b: b["candidates"]["category"].pop(), "candidates.duration_band: holds 20 items"),
])
def test_bad_fields_are_422_naming_the_field(client, vw, mutate, field):
    body = request_body(vw[3], 0, int(USERS[0]))
    mutate(body)
    assert _message(client.post("/v1/decide", json=body)).startswith(field)


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_nan_and_inf_are_422(client, vw, token):
    body = json.dumps(request_body(vw[3], 0, int(USERS[0]))).encode()
    body = body.replace(b'"category": [', b'"category": [' + token + b", ", 1)
    r = client.post("/v1/decide", content=body, headers={"content-type": "application/json"})
    assert _message(r).startswith("candidates.category[0]")


def test_too_many_candidates_is_422(vw, tmp_path, sqlite_store):
    app = create_app(make_config(vw, tmp_path, max_candidates=10, max_batch=2))
    with TestClient(app) as c:
        m = _message(c.post("/v1/decide", json=request_body(vw[3], 0, 1000)))
        assert m.startswith("candidates.category") and "between 1 and 10" in m
        ok = request_body(vw[3], 0, 1000, n_cand=10)
        assert c.post("/v1/decide", json=ok).status_code == 200
        m = _message(c.post("/v1/decide/batch", json={"requests": [ok] * 3}))
        assert m.startswith("requests") and "at most 2" in m
        bad = [ok, request_body(vw[3], 1, 1000)]
        assert _message(c.post("/v1/decide/batch", json={"requests": bad})).startswith(
            "requests[1].candidates.category")


def test_oversized_body_is_413_before_parsing(vw, tmp_path, sqlite_store):
    app = create_app(make_config(vw, tmp_path, max_candidates=10, max_recent=10))
    with TestClient(app) as c:
        body = request_body(vw[3], 0, 1000)
        body["candidates"]["category"] = [1] * 5000
        r = c.post("/v1/decide", json=body)
        assert r.status_code == 413 and r.json()["message"].startswith("body")


# --- store failures, breaker, recovery -----------------------------------------------------


class FlakyStore:
    """Wraps a store; ``mode`` None passes reads through, else raises that exception."""

    def __init__(self, inner):
        self.inner, self.mode, self.calls = inner, None, 0

    def get(self, ids, *, timeout="default", version=None):
        self.calls += 1
        if self.mode is not None:
            raise self.mode
        return self.inner.get(ids, timeout=timeout, version=version)

    def info(self, version):
        return self.inner.info(version)


def test_store_failures_degrade_open_breaker_and_recover(vw, tmp_path, sqlite_store):
    now = [0.0]
    flaky = FlakyStore(sqlite_store)
    app = create_app(make_config(vw, tmp_path, breaker_failures=3, breaker_cooldown_s=5.0),
                     store=flaky, clock=lambda: now[0])
    body = request_body(vw[3], 0, int(USERS[0]))
    with TestClient(app) as c:
        assert c.post("/v1/decide", json=body).json()["degraded"] is False
        flaky.mode = StoreTimeout("frozen")
        reasons = [c.post("/v1/decide", json=body).json() for _ in range(3)]
        assert [d["reason"] for d in reasons] == ["store_timeout"] * 3
        assert all(d["degraded"] and d["enabled"] == [] for d in reasons)
        calls = flaky.calls
        d = c.post("/v1/decide", json=body).json()  # breaker open: the store is not asked
        assert d["reason"] == "breaker_open" and flaky.calls == calls
        assert c.get("/readyz").status_code == 503
        flaky.mode = ConnectionError("refused")
        now[0] += 5.0  # cool-down over: one probe, which fails and re-opens
        assert c.post("/v1/decide", json=body).json()["reason"] == "store_error"
        assert c.post("/v1/decide", json=body).json()["reason"] == "breaker_open"
        flaky.mode = None
        now[0] += 5.0
        d = c.post("/v1/decide", json=body).json()  # probe succeeds: closed again
        assert d["degraded"] is False and d["phi"] is not None
        assert c.get("/readyz").status_code == 200
        text = c.get("/metrics").text
    assert 'hmum_degraded_total{reason="store_timeout"} 3.0' in text
    assert 'hmum_degraded_total{reason="breaker_open"} 2.0' in text
    assert 'hmum_store_errors_total{kind="timeout"} 3.0' in text
    assert 'hmum_store_errors_total{kind="ConnectionError"} 1.0' in text


def test_breaker_states():
    now = [0.0]
    b = CircuitBreaker(failures=2, cooldown_s=1.0, clock=lambda: now[0])
    b.failure()
    assert b.allow() and b.state == "closed"
    b.success()
    b.failure()
    assert b.state == "closed"  # success reset the count: not 2 consecutive
    b.failure()
    assert b.state == "open" and not b.allow()
    now[0] = 1.0
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # one probe at a time
    b.success()
    assert b.state == "closed" and b.allow()


def test_store_of_other_responses_is_refused(vw, tmp_path):
    st = SQLiteStore(tmp_path / "uplift.sqlite")
    fill_store(st, ["a", "b"])
    app = create_app(make_config(vw, tmp_path))
    with TestClient(app) as c:
        d = c.post("/v1/decide", json=request_body(vw[3], 0, int(USERS[0]))).json()
        assert d["degraded"] and d["reason"] == "store_layout"
        r = c.get("/readyz")
        assert r.status_code == 503 and "responses" in r.json()["store_reason"]
    st.close()


# --- readiness and start-up verification ---------------------------------------------------


def test_ready_health_metrics(client, vw):
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["onnx_max_abs_diff"] < 1e-4
    client.post("/v1/decide", json=request_body(vw[3], 0, int(USERS[0])))
    client.post("/v1/decide", json=request_body(vw[3], 0, 3))
    client.post("/v1/decide", content=b"{", headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert "hmum_decision_latency_seconds_bucket" in text
    assert 'hmum_decisions_total{treatment="none"}' in text
    assert "hmum_unknown_users_total 1.0" in text and "hmum_invalid_requests_total 1.0" in text
    assert 'store_version="v1"' in text and "hmum_ready 1.0" in text


def test_onnx_of_another_model_never_ready(vw, tmp_path, sqlite_store):
    other = vw[2]
    # same fields, other weights: perturb the estimator's module and export it
    import torch

    with torch.no_grad():
        for p in other.module_.parameters():
            p.add_(0.5)
    try:
        other.export_onnx(tmp_path / "other.onnx")
    finally:
        with torch.no_grad():
            for p in other.module_.parameters():
                p.sub_(0.5)
    cfg = make_config(vw, tmp_path, keep_serving_on_error=True).model_copy(
        update={"value_weight_onnx": tmp_path / "other.onnx"})
    with TestClient(create_app(cfg)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and "differ from PyTorch" in r.json()["model_error"]
    with pytest.raises(ModelCheckError, match="differ from PyTorch"):
        create_app(cfg.model_copy(update={"keep_serving_on_error": False}))


def test_onnx_weights_equal_service_weights(vw):
    sess = OnnxValueWeights(vw[1])
    cand, recent = vw[2].encode(vw[3].slice(0, 4))
    np.testing.assert_allclose(sess.weights(cand, recent), vw[2].predict_weights((cand, recent)),
                               atol=1e-5)


# --- configuration -----------------------------------------------------------------------


def test_config_file_env_and_overrides(tmp_path, monkeypatch):
    f = tmp_path / "svc.yaml"
    f.write_text("store_url: redis://127.0.0.1:6390/0\nstore_timeout_ms: 3\nport: 9001\n"
                 "value_weight_model: /m/vw\n")
    monkeypatch.setenv("HMUM_PORT", "9002")
    cfg = load_config(f, sigma=0.5)
    assert cfg.store_url == "redis://127.0.0.1:6390/0" and cfg.store_timeout_ms == 3
    assert cfg.port == 9002 and cfg.sigma == 0.5  # env over file; keyword over both
    assert str(cfg.value_weight_onnx) == "/m/vw.onnx"
    j = tmp_path / "svc.json"
    j.write_text(json.dumps({"breaker_failures": 7}))
    assert load_config(j).breaker_failures == 7


def test_config_refuses_unknown_keys_and_bad_values(tmp_path, monkeypatch):
    f = tmp_path / "svc.json"
    f.write_text(json.dumps({"store_timout_ms": 3}))
    with pytest.raises(ValueError, match="store_timout_ms"):
        load_config(f)
    monkeypatch.setenv("HMUM_STORE_TIMEOUT_MS", "-1")
    with pytest.raises(ValueError, match="HMUM_STORE_TIMEOUT_MS: expected a number > 0"):
        load_config()


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def test_config_errors_are_one_line_naming_the_source(tmp_path, monkeypatch):
    """A bad value is named where it came from (the file, the variable, the flag), with
    what was expected and what was received; no pydantic dump, no URL."""
    monkeypatch.delenv("HMUM_CONFIG_FILE", raising=False)
    f = tmp_path / "config.yaml"
    f.write_text("store_timeout_ms: abc\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = _one_line(str(e.value))
    assert msg.endswith("config.yaml: store_timeout_ms: expected a valid number, unable to "
                        "parse string as a number, got 'abc'")
    assert "\n" not in str(e.value) and "http" not in msg
    monkeypatch.setenv("HMUM_STORE_TIMEOUT_MS", "abc")  # the variable wins over the file
    with pytest.raises(ConfigError, match=r"^HMUM_STORE_TIMEOUT_MS: expected a valid number"):
        load_config(f)
    monkeypatch.delenv("HMUM_STORE_TIMEOUT_MS")
    with pytest.raises(ConfigError, match=r"^--port: expected a number <= 65535, got 70000$"):
        load_config(None, names={"port": "--port"}, port=70000)
    f.write_text("store_timeout_ms: [1\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: not valid YAML at line 2"):
        load_config(f)
    j = tmp_path / "svc.json"
    j.write_text('{"port": 1,}')
    with pytest.raises(ConfigError, match=r"svc\.json: not valid JSON at line 1, column 12"):
        load_config(j)
    with pytest.raises(ConfigError, match=r"missing\.yaml: not found"):
        load_config(tmp_path / "missing.yaml")


def test_openapi_documents_the_request_bodies(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"]
    assert "candidates" in body["schema"]["properties"]


def test_framework_routes_answer_like_the_fast_path(vw, tmp_path, sqlite_store):
    """The FastAPI routes (documented in OpenAPI) run the same handlers as the ASGI fast
    path: without the middleware, the answers are the same."""
    fast = create_app(make_config(vw, tmp_path, max_candidates=10))
    slow = create_app(make_config(vw, tmp_path, max_candidates=10))
    drop_fast_path(slow)
    ok = request_body(vw[3], 0, int(USERS[0]), n_cand=10)
    big = request_body(vw[3], 0, int(USERS[0]))
    big["candidates"]["category"] = [1] * 5000
    with TestClient(fast) as f, TestClient(slow) as s:
        for path, body in (("/v1/decide", ok), ("/v1/decide/batch", {"requests": [ok]}),
                           ("/v1/decide", request_body(vw[3], 0, 1)), ("/v1/decide", big)):
            a, b = f.post(path, json=body), s.post(path, json=body)
            assert a.status_code == b.status_code and a.json() == b.json()


def test_a_store_switch_is_followed(vw, tmp_path, sqlite_store):
    app = create_app(make_config(vw, tmp_path))
    body = request_body(vw[3], 0, int(USERS[0]))
    with TestClient(app) as c:
        a = c.post("/v1/decide", json=body).json()
        fill_store(sqlite_store, vw[2].responses_, version="v2", delta=-DELTA)
        b = c.post("/v1/decide", json=body).json()
        text = c.get("/metrics").text
    assert (a["store_version"], b["store_version"]) == ("v1", "v2")
    assert b["phi"]["t1"] == pytest.approx(-a["phi"]["t1"], abs=1e-6)
    assert 'store_version="v2"' in text and 'store_version="v1"' not in text
