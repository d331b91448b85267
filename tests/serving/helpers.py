"""Helpers shared by the scoring tests (local runner, Ray runner, CLI) and the decision
service tests (in process, over real HTTP, with the store and the decision rule)."""

import contextlib
import datetime as dt
import hashlib
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer

from hmum.cli.store import score, store_app
from hmum.data.simulator import SimulatorConfig, simulate_requests
from hmum.serving import scoring

DAY = dt.date(2024, 1, 2)
CFG = {"shard_rows": 500, "date": DAY, "sample_reads": 64}  # 3000 users -> 6 shards


def snapshot(part_dir: Path, store, version: str) -> dict:
    """Everything a run leaves behind: every record file's bytes and the store's content."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(part_dir.iterdir()) if p.name != scoring.LOCK_FILE}
    ids, delta = store.dump(version)
    return {"files": files, "ids": ids, "delta": delta, "count": store.count(version),
            "shards": store.loaded_shards(version), "status": store.info(version).status,
            "pointers": store.pointers()}


def assert_same(a: dict, b: dict) -> None:
    assert a["files"] == b["files"]
    np.testing.assert_array_equal(a["ids"], b["ids"])
    np.testing.assert_array_equal(a["delta"], b["delta"])
    assert (a["count"], a["shards"], a["status"], a["pointers"]) == (
        b["count"], b["shards"], b["status"], b["pointers"])


class Boom(RuntimeError):
    pass


def fail_on(monkeypatch, target, name: str, nth: int, when=lambda *a, **k: True):
    """Make ``target.name`` raise Boom on its nth matching call."""
    orig = getattr(target, name)
    calls = {"n": 0}

    def wrapped(*a, **k):
        if when(*a, **k):
            calls["n"] += 1
            if calls["n"] == nth:
                raise Boom(f"injected failure in {name}")
        return orig(*a, **k)

    monkeypatch.setattr(target, name, wrapped)


class ConstantModel:
    """A stand-in estimator for ``run_scoring``: the users table's features (seg, x1),
    the given arms and responses, y_hat (N, K+1, R) = ``base * (1 + 0.1 * arm)``."""

    def __init__(self, responses, arms=("control", "t1", "t2"), base: float = 2.0) -> None:
        from hmum.data.schema import FeatureSpec, ResponseSpec, Schema

        self.schema = Schema(
            features=[FeatureSpec(name="seg", kind="categorical"),
                      FeatureSpec(name="x1", kind="numeric")],
            arms=list(arms), responses=[ResponseSpec(name=r) for r in responses])
        self.base = base

    def predict_outcomes(self, table, batch_size=None):
        n, k1, r = table.num_rows, self.schema.K + 1, self.schema.R
        per_arm = self.base * (1 + 0.1 * np.arange(k1, dtype=np.float32))
        return np.broadcast_to(per_arm[None, :, None], (n, k1, r)).copy()


#: the score and store commands on a Typer app of their own
app = typer.Typer()
app.command()(score)
app.add_typer(store_app, name="store")


# --- the decision service: a tiny value-weight model, a filled store, requests, a process --

#: requests of the service tests, and the tiny value-weight model trained on them
SIM = SimulatorConfig(n_users=300, n_requests=800, n_candidates=20, n_recent=8, n_exposed=5,
                      n_items=500, seed=3)
SMALL_VW = {"embed_dim": 8, "n_experts": 2, "expert_sizes": [16, 8], "tower_sizes": [8]}
#: a smaller request set and model, for tests that need the artifact more than its quality
TINY_SIM = SimulatorConfig(n_users=300, n_requests=400, n_candidates=10, n_recent=4,
                           n_exposed=3, n_items=200, seed=5)
TINY_VW = {"embed_dim": 4, "n_experts": 2, "expert_sizes": [8], "tower_sizes": [4]}
ARMS = ["control", "t1", "t2"]
USERS = 1000 + np.arange(200)
#: delta (K=2, R=2) of every stored user: t1 trades usage time against views, t2 loses both
DELTA = np.array([[0.10, -0.10], [-0.20, -0.30]], dtype=np.float32)
ROOT = Path(__file__).resolve().parents[2]


def require_service():
    """Skip the calling test module unless the decision service's dependencies are
    installed; returns fastapi's TestClient (imported without starlette's notice about
    httpx vs httpx2: not ours)."""
    for module in ("fastapi", "onnxruntime", "pydantic_settings", "prometheus_client"):
        pytest.importorskip(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient


def build_model(root: Path, seed: int = 0, sim: SimulatorConfig = SIM, model=None):
    """(artifact folder, onnx path, estimator, request table) of a tiny value-weight model
    (``model``: SMALL_VW by default) trained one epoch on ``sim``'s requests."""
    from hmum.models.value_weight import ValueWeightEstimator

    table = simulate_requests(sim)
    est = ValueWeightEstimator(model=model or SMALL_VW,
                               trainer={"max_epochs": 1, "seed": seed,
                                        "batch_size": 256}).fit(table)
    path = est.save(root / "vw")
    onnx = est.export_onnx(root / "vw.onnx")
    return path, onnx, est, table


def build_tiny_model(root: Path):
    """(artifact folder, estimator, request table) of the TINY_VW model on TINY_SIM."""
    path, _, est, table = build_model(root, sim=TINY_SIM, model=TINY_VW)
    return path, est, table


def fill_store(st, responses, version: str = "v1", users=USERS, delta=DELTA, *,
               id_kind: str = "int", extra: dict | None = None, switch: bool = True) -> None:
    """Load ``users`` with delta (K, R) each into ``version`` and (``switch``) make it
    current."""
    from hmum.serving.store import VersionInfo

    st.create_version(VersionInfo(version=version, K=2, R=2, arms=ARMS,
                                  responses=list(responses), id_kind=id_kind,
                                  extra=extra or {}), expected_rows=len(users))
    st.put(version, users, np.broadcast_to(delta, (len(users), 2, 2)))
    st.mark_ready(version, len(users))
    if switch:
        st.switch(version)


def request_body(table, row: int, user_id, n_cand: int | None = None) -> dict:
    """The JSON request of row ``row`` of a request table (first n_cand candidates)."""
    out = {"user_id": user_id, "candidates": {}, "recent": {}}
    for c in table.column_names:
        for prefix, key in (("cand_", "candidates"), ("recent_", "recent")):
            if c.startswith(prefix) and not c.startswith("cand_score_"):
                codes = table.column(c)[row].as_py()
                out[key][c[len(prefix):]] = codes[:n_cand] if key == "candidates" else codes
    return out


def make_config(vw, tmp_path, **kw):
    """The ServiceConfig of ``vw``'s model reading tmp_path/uplift.sqlite."""
    from hmum.serving.config import ServiceConfig

    kw.setdefault("store_timeout_ms", 1000)  # busy shared CI cores: no accidental timeouts
    return ServiceConfig(value_weight_model=vw[0], store_url=str(tmp_path / "uplift.sqlite"),
                         verify_samples=16, **kw)


def drop_fast_path(app) -> None:
    """Remove the ASGI fast path (before the first request builds the middleware stack):
    the FastAPI routes answer the decide endpoints."""
    from hmum.serving.service import _FastPath

    app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not _FastPath]


@contextlib.contextmanager
def live_service(env: dict, log: Path, ready_path: str = "/readyz") -> Iterator[str]:
    """A uvicorn process serving ``hmum.serving.service:app_from_env`` on a free loopback
    port, configured by ``env`` (this checkout's src on PYTHONPATH), its output in
    ``log``; yields its base URL once ``ready_path`` answers 200; stopped on exit."""
    import httpx

    from hmum.serving.store import free_loopback_port, stop_process

    port = free_loopback_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "hmum.serving.service:app_from_env",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--no-access-log"], env={**env, "PYTHONPATH": str(ROOT / "src")},
            stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # bounded: up to ~30 s for imports and the model check
            try:
                if httpx.get(base + ready_path, timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"service never answered {ready_path} with 200: "
                               f"{log.read_text()[-2000:]}")
        yield base
    finally:
        stop_process(proc, timeout=10)
