"""The guards over real HTTP: a uvicorn process (httptools when installed) on loopback,
SQLite store, bearer token and rate limit configured through HMUM_* variables (as
``hmum serve`` passes them to its workers). The in-process tests cover the cases; this
checks that real headers reach the ASGI fast path the same way."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from hmum.serving.store import SQLiteStore, free_loopback_port, stop_process  # noqa: E402
from tests.serving.test_service import USERS, build_model, fill_store, request_body  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "live-guard-token"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live_guard")
    vw = build_model(root)
    st = SQLiteStore(root / "uplift.sqlite")
    fill_store(st, vw[2].responses_)
    st.close()
    port = free_loopback_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMUM_")}
    env.update({"HMUM_VALUE_WEIGHT_MODEL": str(vw[0]),
                "HMUM_STORE_URL": str(root / "uplift.sqlite"), "HMUM_STORE_TIMEOUT_MS": "1000",
                "HMUM_VERIFY_SAMPLES": "16", "HMUM_TOKEN": TOKEN,
                "HMUM_RATE_LIMIT_RPS": "0.01", "HMUM_RATE_LIMIT_BURST": "8",
                "PYTHONPATH": str(ROOT / "src")})
    log = root / "log.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "hmum.serving.service:app_from_env",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--no-access-log"], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # bounded: ~30 s for imports and the model check
            try:
                if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"service never came up: {log.read_text()[-2000:]}")
        yield base, vw
    finally:
        stop_process(proc, timeout=10)


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
