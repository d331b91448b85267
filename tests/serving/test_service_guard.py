"""The decision service's guards, in process: start-up failures (exit or 503 with the
reason, never 413), the bearer token and the rate limit (on the ASGI fast path and on
the FastAPI routes alike), Content-Type, capped 422 bodies, and large batches (decoded
in slices that let the event loop answer other requests, bounded by their item count)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading

import pytest

from tests.serving.helpers import (
    USERS,
    drop_fast_path,
    make_config,
    request_body,
    require_service,
)

TestClient = require_service()
httpx = pytest.importorskip("httpx")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hmum.exceptions import (  # noqa: E402
    ConfigError,  # noqa: E402
    ModelCheckError,
)
from hmum.serving import service as service_mod  # noqa: E402
from hmum.serving.config import ServiceConfig, is_loopback, load_config  # noqa: E402
from hmum.serving.service import MAX_ERRORS, _RateLimit, _request_spans, _Unscannable, create_app  # noqa: E402

TOKEN = "s3cret-token-for-tests"


def both_apps(cfg, **kw):
    """(fast, routes): the app as served, and the same without the ASGI fast path."""
    fast, slow = create_app(cfg, **kw), create_app(cfg, **kw)
    drop_fast_path(slow)
    return fast, slow


def big_body(vw, user_id, n_cand: int = 300) -> dict:
    """A valid request of > 2048 bytes (the body limit the service used when its model
    had failed, so such requests got 413 instead of 503)."""
    body = request_body(vw[3], 0, user_id)
    for f in body["candidates"]:
        body["candidates"][f] = (body["candidates"][f] * 40)[:n_cand]
    return body


# --- start-up failures -------------------------------------------------------------------


def _tampered(vw, root):
    bad = root / "tampered"
    shutil.copytree(vw[0], bad)
    raw = bytearray((bad / "weights.safetensors").read_bytes())
    raw[-3] ^= 0x01
    (bad / "weights.safetensors").write_bytes(bytes(raw))
    return {"value_weight_model": bad, "value_weight_onnx": vw[1]}


def _no_manifest(vw, root):
    bad = root / "no_manifest"
    shutil.copytree(vw[0], bad)
    (bad / "manifest.json").unlink()
    return {"value_weight_model": bad, "value_weight_onnx": vw[1]}


def _bad_onnx(vw, root):
    (root / "bad.onnx").write_bytes(b"\x08\x07garbage, not an ONNX graph")
    return {"value_weight_model": vw[0], "value_weight_onnx": root / "bad.onnx"}


def _hum_artifact(vw, root, model_dir):
    return {"value_weight_model": model_dir, "value_weight_onnx": vw[1]}


FAILURES = {
    "tampered_weights": (_tampered, "weights.safetensors"),
    "missing_manifest": (_no_manifest, "manifest.json"),
    "bad_onnx": (_bad_onnx, "bad.onnx"),
    "hum_artifact": (_hum_artifact, "hum"),
}


@pytest.fixture(params=sorted(FAILURES))
def failing(request, vw, tmp_path):
    """(config updates of a model that fails its start-up checks, text its reason names)."""
    make, named = FAILURES[request.param]
    if request.param == "hum_artifact":
        return make(vw, tmp_path, request.getfixturevalue("model_dir")), named
    return make(vw, tmp_path), named


def test_a_failing_model_stops_create_app_with_the_reason(vw, tmp_path, sqlite_store, failing):
    update, named = failing
    cfg = make_config(vw, tmp_path).model_copy(update=update)
    with pytest.raises(ModelCheckError) as e:
        create_app(cfg)
    msg = str(e.value)
    assert "failed its start-up checks" in msg and named in msg
    assert "--keep-serving-on-error" in msg


def test_keep_serving_answers_503_with_the_reason_not_413(vw, tmp_path, sqlite_store, failing):
    """The original failure: a request larger than 2048 bytes got 413 'body larger than
    2048 bytes' from a service whose model had failed."""
    update, named = failing
    cfg = make_config(vw, tmp_path, keep_serving_on_error=True).model_copy(update=update)
    body = big_body(vw, int(USERS[0]))
    assert len(json.dumps(body)) > 2048
    for app in both_apps(cfg):
        with TestClient(app) as c:
            for path, b in (("/v1/decide", body), ("/v1/decide/batch", {"requests": [body]})):
                r = c.post(path, json=b)
                assert r.status_code == 503, (path, r.text)
                assert r.json()["message"].startswith("model not loaded") and named in r.text
                assert "retry-after" not in r.headers  # waiting does not fix a bad model
            r = c.get("/readyz")
            assert r.status_code == 503 and named in r.json()["model_error"]
            assert c.get("/healthz").status_code == 200


# --- Content-Type --------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx"])
def test_post_without_json_content_type_is_415(vw, tmp_path, sqlite_store, content_type):
    raw = json.dumps(request_body(vw[3], 0, int(USERS[0]))).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    for app in both_apps(make_config(vw, tmp_path)):
        with TestClient(app) as c:
            for path, b in (("/v1/decide", raw), ("/v1/decide/batch", b'{"requests": [%s]}' % raw)):
                r = c.post(path, content=b, headers=headers)
                assert r.status_code == 415, (path, r.text)
                want = "none" if content_type is None else repr(content_type)
                assert r.json()["message"] == f"content-type: expected application/json, got {want}"
            ok = c.post("/v1/decide", content=raw,
                        headers={"content-type": "Application/JSON; charset=utf-8"})
            assert ok.status_code == 200, ok.text
            assert 'hmum_rejected_requests_total{reason="content_type"} 2.0' in \
                c.get("/metrics").text


# --- capped 422 ----------------------------------------------------------------------------


def test_a_big_bad_body_gets_a_small_422(client_app):
    """A ~13 kB request whose every code is a string: thousands of errors, of which the
    answer lists MAX_ERRORS and counts the rest (it was a 275 kB answer)."""
    c, vw = client_app
    body = big_body(vw, int(USERS[0]), n_cand=300)
    for f in body["candidates"]:
        body["candidates"][f] = ["abcd"] * 300
    raw = json.dumps(body).encode()
    assert len(raw) > 12_000
    for path, b in (("/v1/decide", raw), ("/v1/decide/batch", b'{"requests": [%s]}' % raw)):
        r = c.post(path, content=b, headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert len(r.content) < 3000, len(r.content)
        d = r.json()
        assert len(d["detail"]) == MAX_ERRORS and d["error_count"] == 1500
        prefix = "requests[0]." if path.endswith("batch") else ""
        assert d["message"].startswith(prefix + "candidates.")


def test_a_422_clips_client_field_names(client_app):
    c, vw = client_app
    body = request_body(vw[3], 0, int(USERS[0]))
    body["candidates"]["f" * 20_000] = [1] * 20
    r = c.post("/v1/decide", json=body)
    assert r.status_code == 422 and len(r.content) < 2000
    assert r.json()["message"].startswith("candidates.fff") and "..." in r.json()["message"]


@pytest.fixture
def client_app(vw, tmp_path, sqlite_store):
    with TestClient(create_app(make_config(vw, tmp_path))) as c:
        yield c, vw


# --- bearer token --------------------------------------------------------------------------


def test_token_required_on_the_fast_path_routes_metrics_and_docs(vw, tmp_path, sqlite_store):
    cfg = make_config(vw, tmp_path, token=TOKEN)
    body = request_body(vw[3], 0, int(USERS[0]))
    good = {"authorization": f"Bearer {TOKEN}"}
    for app in both_apps(cfg):
        with TestClient(app) as c:
            for headers in ({}, {"authorization": "Bearer wrong"},
                            {"authorization": f"Basic {TOKEN}"}, {"authorization": TOKEN}):
                for path in ("/v1/decide", "/v1/decide/batch"):
                    b = body if path == "/v1/decide" else {"requests": [body]}
                    r = c.post(path, json=b, headers=headers)
                    assert r.status_code == 401, (path, headers, r.text)
                    assert r.headers["www-authenticate"].startswith("Bearer")
                    assert "Authorization: Bearer" in r.json()["message"]
                for path in ("/metrics", "/docs", "/openapi.json"):
                    assert c.get(path, headers=headers).status_code == 401, path
            assert c.post("/v1/decide", json=body, headers=good).json()["phi"] is not None
            r = c.post("/v1/decide/batch", json={"requests": [body]}, headers=good)
            assert r.status_code == 200
            for path in ("/metrics", "/docs", "/openapi.json"):
                assert c.get(path, headers=good).status_code == 200, path
            # probes stay open; the checks' details need the token
            assert c.get("/healthz").status_code == 200
            r = c.get("/readyz")
            assert r.status_code == 200 and set(r.json()) == {"ready", "detail"}
            r = c.get("/readyz", headers=good)
            assert r.status_code == 200 and r.json()["store_version"] == "v1"
            assert 'hmum_rejected_requests_total{reason="unauthorized"}' in \
                c.get("/metrics", headers=good).text


def test_token_from_a_file(vw, tmp_path, sqlite_store, monkeypatch):
    monkeypatch.delenv("HMUM_TOKEN", raising=False)
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    cfg = make_config(vw, tmp_path, token_file=f, host="0.0.0.0")
    assert cfg.token.get_secret_value() == TOKEN and TOKEN not in repr(cfg)
    with TestClient(create_app(cfg)) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_no_token_beyond_loopback_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("HMUM_TOKEN", raising=False)
    monkeypatch.delenv("HMUM_CONFIG_FILE", raising=False)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(ConfigError, match=rf"^host '{host}' is not a loopback address: "
                                              r"a bearer token is required .*--token-file"):
            load_config(host=host)
    for host in ("127.0.0.1", "127.8.9.1", "::1", "localhost"):
        assert is_loopback(host) and load_config(host=host).token is None
    monkeypatch.setenv("HMUM_TOKEN", TOKEN)
    assert load_config(host="0.0.0.0").token.get_secret_value() == TOKEN
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.delenv("HMUM_TOKEN")
    with pytest.raises(ConfigError, match="token_file .*empty: expected a bearer token"):
        load_config(token_file=empty)
    with pytest.raises(ConfigError, match="token_file .*absent: cannot read it"):
        load_config(token_file=tmp_path / "absent")
    monkeypatch.setenv("HMUM_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="not both"):
        load_config(token_file=empty)


# --- rate limit ----------------------------------------------------------------------------


def test_rate_limit_on_the_fast_path_and_routes(vw, tmp_path, sqlite_store):
    now = [100.0]
    cfg = make_config(vw, tmp_path, rate_limit_rps=2.0, rate_limit_burst=3)
    body = request_body(vw[3], 0, int(USERS[0]))
    for app in both_apps(cfg, clock=lambda: now[0]):
        with TestClient(app) as c:
            got = [c.post("/v1/decide", json=body).status_code for _ in range(3)]
            assert got == [200, 200, 200]  # the burst
            r = c.post("/v1/decide/batch", json={"requests": [body]})
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["message"].startswith("rate limit: more than 2 requests/s (burst 3)")
            assert "retry in 0.5 s" in r.json()["message"]
            assert c.get("/metrics").status_code == 429  # every endpoint but the probes
            assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
            now[0] += 0.5  # one token back
            assert c.post("/v1/decide", json=body).status_code == 200
            assert c.post("/v1/decide", json=body).status_code == 429
            now[0] += 10.0  # full again, never more than the burst
            got = [c.post("/v1/decide", json=body).status_code for _ in range(4)]
            assert got == [200, 200, 200, 429]


def test_rate_limit_is_per_client(vw, tmp_path, sqlite_store):
    cfg = make_config(vw, tmp_path, rate_limit_rps=1.0)  # burst: one second's worth
    assert cfg.rate_limit_burst == 1
    body = request_body(vw[3], 0, int(USERS[0]))
    app = create_app(cfg, clock=lambda: 0.0)
    with TestClient(app, client=("10.0.0.1", 5000)) as a, \
            TestClient(app, client=("10.0.0.2", 5000)) as b:
        assert a.post("/v1/decide", json=body).status_code == 200
        assert a.post("/v1/decide", json=body).status_code == 429
        assert b.post("/v1/decide", json=body).status_code == 200


def test_rate_limit_forgets_idle_clients_only(monkeypatch):
    async def inner(scope, receive, send):  # pragma: no cover - never called here
        pass

    now = [0.0]
    from hmum.serving.service import Metrics

    rl = _RateLimit(inner, rate=10.0, burst=5, metrics=Metrics(), clock=lambda: now[0])
    monkeypatch.setattr(_RateLimit, "MAX_CLIENTS", 4)
    for k in "abc":
        assert rl.take(k) is None
    now[0] = 1.0  # a, b, c are full again (5 tokens at 10/s: 0.5 s)
    for _ in range(5):
        assert rl.take("d") is None
    assert rl.take("d") == pytest.approx(0.1)  # empty: a token in 0.1 s
    assert rl.take("e") is None  # the fifth client: the idle ones are forgotten
    assert set(rl.buckets) == {"d", "e"}
    assert rl.take("d") == pytest.approx(0.1)  # d's empty bucket was kept


# --- large batches -------------------------------------------------------------------------


def batch_of(vw, n: int, n_cand: int = 20) -> dict:
    return {"requests": [request_body(vw[3], i % 50, int(USERS[i % len(USERS)]), n_cand=n_cand)
                         for i in range(n)]}


def test_batch_items_are_bounded(vw, tmp_path, sqlite_store):
    cfg = make_config(vw, tmp_path, max_batch_items=60, max_batch=4)  # a request: 20 + 8 items
    for app in both_apps(cfg):
        with TestClient(app) as c:
            assert c.post("/v1/decide/batch", json=batch_of(vw, 2)).status_code == 200
            r = c.post("/v1/decide/batch", json=batch_of(vw, 3))
            assert r.status_code == 422
            assert r.json()["message"].startswith("requests[2]: the batch holds more than 60 "
                                                  "candidate and recent items")
            assert "max_batch_items" in r.json()["message"]
            # the body limit follows: 4 requests of at most 60 items' codes, not 4 x 1024
            r = c.post("/v1/decide/batch", json=batch_of(vw, 30))
            assert r.status_code == 413 and r.json()["message"].startswith("body: larger than")


def test_odd_but_valid_batch_bodies_are_decided(client_app):
    """Bodies the slicer does not take apart are parsed whole: same decisions."""
    c, vw = client_app
    reqs = batch_of(vw, 3)["requests"]
    want = c.post("/v1/decide/batch", json={"requests": reqs}).json()
    for raw in (b'{"requ\\u0065sts": %s}' % json.dumps(reqs).encode(),
                b'\n {\t"requests"\r\n:\n%s }\n' % json.dumps(reqs, indent=3).encode()):
        r = c.post("/v1/decide/batch", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json() == want
    for raw, where in ((b'{"requests": [%s,]}' % json.dumps(reqs[0]).encode(), "body: Invalid JSON"),
                       (b'{"requests": []}', "requests: List should have at least 1 item"),
                       (b'{"requests": [1]}', "requests[0]: Input should be an object"),
                       (b'{"requests": [{}], "x": 1}', "requests[0].user_id: Field required")):
        r = c.post("/v1/decide/batch", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["message"].startswith(where), r.text


def test_a_large_batch_lets_the_event_loop_run(vw, tmp_path, sqlite_store, monkeypatch):
    """The original failure: one large batch held the event loop from start to end (every
    concurrent request waited). Now it is decoded in slices with yields between them
    (forced after every request here, so the count does not depend on speed) and its
    model runs on a worker thread; the decisions equal the single-request ones."""
    monkeypatch.setattr(service_mod._Pauser, "EVERY_S", 0.0)
    cfg = make_config(vw, tmp_path, offload_items=100)
    app = create_app(cfg)
    svc = app.state.service
    threads: list[int] = []
    weights = svc.model.session.weights

    def recording(cand, recent):
        threads.append(threading.get_ident())
        return weights(cand, recent)

    svc.model.session.weights = recording
    n = 40
    batch = batch_of(vw, n)

    async def run():
        loop_thread = threading.get_ident()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            ticks = 0
            task = asyncio.ensure_future(c.post("/v1/decide/batch", json=batch))
            while not task.done():
                ticks += 1
                await asyncio.sleep(0)
            r = task.result()
            singles = [(await c.post("/v1/decide", json=b)).json() for b in batch["requests"]]
        return loop_thread, ticks, r, singles

    loop_thread, ticks, r, singles = asyncio.run(run())
    assert r.status_code == 200
    assert ticks > n  # the loop ran between every slice (a blocking batch: a handful)
    assert threads[0] != loop_thread  # the batch's model run: a worker thread
    assert set(threads[1:]) == {loop_thread}  # single requests: inline, no hand-off
    for d, s in zip(r.json()["decisions"], singles, strict=True):
        assert d["enabled"] == s["enabled"] and d["user_id"] == s["user_id"]
        assert d["phi"] == pytest.approx(s["phi"], abs=1e-6)


def test_busy_batches_get_503_with_retry_after(vw, tmp_path, sqlite_store):
    cfg = make_config(vw, tmp_path, max_batches_in_flight=1, max_candidates=20, max_recent=8)
    app = create_app(cfg)
    h = app.state.handlers
    big = batch_of(vw, 40)  # larger than one request's limit: counts as in flight
    small = batch_of(vw, 1)
    assert len(json.dumps(big)) > h.limit >= len(json.dumps(small))
    with TestClient(app) as c:
        h.in_flight = 1  # another large batch is being processed
        r = c.post("/v1/decide/batch", json=big)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "max_batches_in_flight" in r.json()["message"]
        assert c.post("/v1/decide/batch", json=small).status_code == 200  # small: never busy
        h.in_flight = 0
        assert c.post("/v1/decide/batch", json=big).status_code == 200
        assert h.in_flight == 0


# --- the slicer --------------------------------------------------------------------------

_codes = st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=4)
_ids = st.one_of(st.integers(-(2**63), 2**63 - 1),
                 st.text(alphabet=st.sampled_from('ab{}[]",\\: é'), min_size=1, max_size=6))
_request = st.fixed_dictionaries({"user_id": _ids,
                                  "candidates": st.dictionaries(st.sampled_from("xyz"), _codes),
                                  "recent": st.dictionaries(st.sampled_from("xy]"), _codes)})


@settings(max_examples=150, deadline=None)
@given(reqs=st.lists(_request, min_size=0, max_size=5), indent=st.sampled_from([None, 0, 2]),
       ascii_only=st.booleans())
def test_spans_are_the_request_objects(reqs, indent, ascii_only):
    body = json.dumps({"requests": reqs}, indent=indent, ensure_ascii=ascii_only).encode()
    spans = list(_request_spans(body))
    assert [json.loads(body[a:b]) for a, b in spans] == reqs


@pytest.mark.parametrize("body", [b'[{"user_id": 1}]', b'{"requests": [{}], "requests": [{}]}',
                                  b'{"requests": [{}] }]', b'{"requests": [{"a": [1}]}',
                                  b'{"requests": [{}]} {}', b'{"other": [{}]}',
                                  b'{"requests": [{"a": "open]}', b'{"requests": [{} {}]}',
                                  b'{"requests": {"a": {}}}', b'{"requests": [null, {}]}'])
def test_other_shapes_are_not_sliced(body):
    with pytest.raises(_Unscannable):
        list(_request_spans(body))


def test_service_config_keeps_the_token_out_of_dumps():
    cfg = ServiceConfig(token=TOKEN)
    assert TOKEN not in repr(cfg) and TOKEN not in str(cfg.model_dump())


def _asgi_post(app, path: str, body: bytes, chunk: int, length: bool = True):
    """POST ``body`` to the ASGI app in chunks of ``chunk`` bytes: (status, body)."""
    headers = [(b"content-type", b"application/json")]
    if length:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers,
             "client": ("127.0.0.1", 1), "query_string": b"", "root_path": "",
             "scheme": "http", "server": ("t", 80), "http_version": "1.1",
             "asgi": {"version": "3.0"}}
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    sent: dict = {"body": b""}

    async def receive():
        part = parts.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        else:
            sent["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return sent["status"], json.loads(sent["body"])


def test_bodies_in_many_chunks(vw, tmp_path, sqlite_store):
    """The fast path reads a body chunk by chunk (into a bytearray past the first one):
    the same answers as one chunk; a body growing past the limit is refused as it
    arrives, without a content-length."""
    app = create_app(make_config(vw, tmp_path, max_candidates=20, max_recent=8))
    one = json.dumps(request_body(vw[3], 0, int(USERS[0]))).encode()
    batch = json.dumps(batch_of(vw, 5)).encode()
    for path, body in (("/v1/decide", one), ("/v1/decide/batch", batch)):
        whole = _asgi_post(app, path, body, len(body))
        assert whole[0] == 200
        assert _asgi_post(app, path, body, 97) == whole
    limit = app.state.handlers.limit
    big = json.dumps(request_body(vw[3], 0, int(USERS[0]))).encode()
    big = big[:-1] + b', "pad": "' + b"x" * limit + b'"}'
    status, d = _asgi_post(app, "/v1/decide", big, 1000, length=False)
    assert status == 413 and d["message"].startswith(f"body: larger than {limit} bytes")
