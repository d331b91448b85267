"""The guards over real HTTP: a uvicorn process (httptools when installed) on loopback,
SQLite store, bearer token and rate limit configured through HMUM_* variables (as
``hmum serve`` passes them to its workers). The in-process tests cover the cases; this
checks that real headers reach the ASGI fast path the same way."""

from __future__ import annotations

import os

import pytest

from tests.serving.helpers import USERS, fill_store, live_service, request_body, require_service

require_service()
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from hmum.serving.store import SQLiteStore  # noqa: E402

TOKEN = "live-guard-token"


@pytest.fixture(scope="module")
def live(vw, tmp_path_factory):
    root = tmp_path_factory.mktemp("live_guard")
    st = SQLiteStore(root / "uplift.sqlite")
    fill_store(st, vw[2].responses_)
    st.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMUM_")}
    env.update({"HMUM_VALUE_WEIGHT_MODEL": str(vw[0]),
                "HMUM_STORE_URL": str(root / "uplift.sqlite"), "HMUM_STORE_TIMEOUT_MS": "1000",
                "HMUM_VERIFY_SAMPLES": "16", "HMUM_TOKEN": TOKEN,
                "HMUM_RATE_LIMIT_RPS": "0.01", "HMUM_RATE_LIMIT_BURST": "8"})
    with live_service(env, root / "log.txt", ready_path="/healthz") as base:
        yield base, vw


def test_token_content_type_and_rate_limit_over_http(live):
    base, vw = live
    body = request_body(vw[3], 0, int(USERS[0]))
    auth = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=10.0) as c:
        # 8 tokens, refilled at 0.01/s: every request below but the probes takes one
        r = c.post("/v1/decide", json=body)  # 1
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/metrics").status_code == 401  # 2
        r = c.post("/v1/decide", content=b"{}", headers={**auth, "content-type": "text/plain"})
        assert r.status_code == 415  # 3
        r = c.post("/v1/decide", json=body, headers=auth)  # 4
        assert r.status_code == 200 and r.json()["store_version"] == "v1"
        r = c.post("/v1/decide/batch", json={"requests": [body, body]}, headers=auth)  # 5
        assert r.status_code == 200 and len(r.json()["decisions"]) == 2
        assert c.get("/readyz").json() == {"ready": True,
                                            "detail": "send the bearer token for the checks"}
        for _ in range(3):  # 6, 7, 8
            assert c.post("/v1/decide", json=body, headers=auth).status_code == 200
        r = c.post("/v1/decide", json=body, headers=auth)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.get("/healthz").status_code == 200  # probes are never limited
