"""The decision service as a real uvicorn process on loopback, reading a real Redis:
Redis frozen (SIGSTOP) and killed in the middle of traffic -> degraded decisions, no 5xx,
recovery once it is back; malformed requests -> 422 over real HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from tests.serving.helpers import USERS, fill_store, live_service, request_body, require_service

require_service()
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("redis")

from hmum.serving.store import RedisStore, free_loopback_port  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not installed (apt-get install "
                                "redis-server)")


class RedisProcess:
    """A redis-server on a fixed loopback port that can be frozen, killed and restarted."""

    def __init__(self) -> None:
        self.port = free_loopback_port()
        self.dir = tempfile.mkdtemp(prefix="hmum-svc-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        for _ in range(100):  # bounded: up to ~5 s
            try:
                if redis.Redis.from_url(self.url, socket_timeout=0.2).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def load(url: str, responses) -> None:
    st = RedisStore(url, read_timeout=5.0)
    fill_store(st, responses)
    st.close()


@pytest.fixture(scope="module")
def live(vw, tmp_path_factory):
    """(base URL, RedisProcess) of a uvicorn process serving the tiny model from Redis."""
    rp = RedisProcess()
    rp.start()
    try:
        load(rp.url, vw[2].responses_)
        env = {**os.environ, "HMUM_VALUE_WEIGHT_MODEL": str(vw[0]), "HMUM_STORE_URL": rp.url,
               "HMUM_STORE_TIMEOUT_MS": "20", "HMUM_BREAKER_FAILURES": "3",
               "HMUM_BREAKER_COOLDOWN_S": "0.2", "HMUM_POINTER_TTL_S": "0.5",
               "HMUM_VERIFY_SAMPLES": "16"}
        env.pop("HMUM_CONFIG_FILE", None)
        with live_service(env, tmp_path_factory.mktemp("uvicorn") / "log.txt") as base:
            yield base, rp
    finally:
        rp.stop()


def traffic(client, body, seconds: float, during=None) -> list[tuple[int, dict, float]]:
    """POST ``body`` for ``seconds``; call ``during()`` once after a third of the time.
    Returns [(status, json, seconds taken)]."""
    out, t_end, fired = [], time.monotonic() + seconds, during is None
    t_fire = time.monotonic() + seconds / 3
    while time.monotonic() < t_end:
        if not fired and time.monotonic() >= t_fire:
            during()
            fired = True
        t0 = time.perf_counter()
        r = client.post("/v1/decide", json=body)
        out.append((r.status_code, r.json(), time.perf_counter() - t0))
    return out


def wait_recovered(client, body, seconds: float = 10.0) -> dict:
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        d = client.post("/v1/decide", json=body).json()
        if not d["degraded"]:
            return d
        time.sleep(0.05)
    raise AssertionError(f"the service did not recover within {seconds} s: {d}")


def test_live_decisions_and_validation(live, vw):
    base, _ = live
    body = request_body(vw[3], 0, int(USERS[0]))
    with httpx.Client(base_url=base, timeout=5.0) as c:
        d = wait_recovered(c, body)  # a busy CI core can miss one read deadline
        assert d["store_version"] == "v1" and d["phi"] is not None
        r = c.post("/v1/decide", content=b"{not json", headers={"content-type": JSON})
        assert r.status_code == 422 and "Invalid JSON" in r.json()["message"]
        bad = request_body(vw[3], 0, 1)
        bad["recent"]["category"][0] = 1.5
        r = c.post("/v1/decide", json=bad)
        assert r.status_code == 422 and r.json()["message"].startswith("recent.category[0]")
        assert "hmum_decisions_total" in c.get("/metrics").text


JSON = "application/json"


def test_redis_frozen_then_thawed(live, vw):
    base, rp = live
    body = request_body(vw[3], 1, int(USERS[1]))
    with httpx.Client(base_url=base, timeout=5.0) as c:
        wait_recovered(c, body)
        try:
            got = traffic(c, body, 1.5, during=lambda: rp.proc.send_signal(signal.SIGSTOP))
            assert all(s == 200 for s, _, _ in got), {s for s, _, _ in got}
            degraded = [(d, t) for _, d, t in got if d["degraded"]]
            assert degraded, "freezing Redis produced no degraded decision"
            assert {d["reason"] for d, _ in degraded} <= {"store_timeout", "breaker_open"}
            assert all(d["enabled"] == [] for d, _ in degraded)
            assert c.get("/readyz").status_code == 503
            # latency of degraded answers is bounded by the read deadline (20 ms) plus HTTP;
            # generous bound for shared CI cores, far below any socket timeout
            assert sorted(t for _, t in degraded)[len(degraded) // 2] < 0.1
        finally:
            rp.proc.send_signal(signal.SIGCONT)
        d = wait_recovered(c, body)
        assert d["phi"] is not None
        assert c.get("/readyz").status_code == 200
        text = c.get("/metrics").text
    assert 'hmum_degraded_total{reason="store_timeout"}' in text


def test_redis_killed_then_restarted(live, vw):
    base, rp = live
    body = request_body(vw[3], 2, int(USERS[2]))
    with httpx.Client(base_url=base, timeout=5.0) as c:
        wait_recovered(c, body)
        got = traffic(c, body, 1.0, during=rp.kill)
        assert all(s == 200 for s, _, _ in got), {s for s, _, _ in got}
        reasons = {d["reason"] for _, d, _ in got if d["degraded"]}
        assert reasons and reasons <= {"store_error", "store_timeout", "breaker_open"}
        rp.start()  # same port; data lost with the process: load it again
        load(rp.url, vw[2].responses_)
        d = wait_recovered(c, body)
        assert d["phi"] is not None and d["store_version"] == "v1"
        text = c.get("/metrics").text
    assert "hmum_store_errors_total" in text
