"""The decision service and its uplift store (issue 13): a deleted or replaced SQLite
file is noticed (new version served, or /readyz 503 with the reason), string ids never
reach another user, a missing store path is never created."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
pytest.importorskip("pydantic_settings")
pytest.importorskip("prometheus_client")

with warnings.catch_warnings():  # starlette's notice about httpx vs httpx2: not ours
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from hmum.data.simulator import SimulatorConfig, simulate_requests  # noqa: E402
from hmum.serving.config import ServiceConfig  # noqa: E402
from hmum.serving.scoring import run_scoring  # noqa: E402
from hmum.serving.service import create_app  # noqa: E402
from hmum.serving.store import SQLiteStore, VersionInfo  # noqa: E402
from hmum.training.value_weight import ValueWeightEstimator  # noqa: E402
from tests.serving.helpers import DAY, ConstantModel  # noqa: E402

SIM = SimulatorConfig(n_users=300, n_requests=400, n_candidates=10, n_recent=4, n_exposed=3,
                      n_items=200, seed=5)
USERS = 1000 + np.arange(50)
DELTA = np.array([[0.10, -0.10], [-0.20, -0.30]], dtype=np.float32)  # (K, R) of v1


@pytest.fixture(scope="module")
def vw(tmp_path_factory):
    """(artifact folder, estimator, request table) of a tiny value-weight model."""
    root = tmp_path_factory.mktemp("vw")
    table = simulate_requests(SIM)
    est = ValueWeightEstimator(model={"embed_dim": 4, "n_experts": 2, "expert_sizes": [8],
                                      "tower_sizes": [4]},
                               trainer={"max_epochs": 1, "seed": 0, "batch_size": 256}).fit(table)
    path = est.save(root / "vw")
    est.export_onnx(root / "vw.onnx")
    return path, est, table


def body(table, user_id) -> dict:
    out = {"user_id": user_id, "candidates": {}, "recent": {}}
    for c in table.column_names:
        for prefix, key in (("cand_", "candidates"), ("recent_", "recent")):
            if c.startswith(prefix) and not c.startswith("cand_score_"):
                out[key][c[len(prefix):]] = table.column(c)[0].as_py()
    return out


def fill(path, responses, id_kind="int", users=USERS) -> None:
    with SQLiteStore(path) as st:
        st.create_version(VersionInfo(version="v1", K=2, R=2, arms=["control", "t1", "t2"],
                                      responses=list(responses), id_kind=id_kind))
        st.put("v1", users, np.broadcast_to(DELTA, (len(users), 2, 2)))
        st.mark_ready("v1", len(users))
        st.switch("v1")


def config(vw, store_path, **kw) -> ServiceConfig:
    kw.setdefault("store_timeout_ms", 1000)  # busy shared cores: no accidental timeouts
    return ServiceConfig(value_weight_model=vw[0], store_url=str(store_path),
                         verify_samples=8, **kw)


def remove_store_files(path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def wait_for(fn, seconds: float = 5.0):
    """fn() until it returns something truthy, for at most ``seconds``."""
    t_end = time.monotonic() + seconds
    while True:
        got = fn()
        if got or time.monotonic() > t_end:
            return got
        time.sleep(0.05)


# --- a deleted or replaced store file (item 1) --------------------------------------------


def test_deleted_store_rebuilt_by_scoring_is_served(vw, tmp_path, caplog):
    db = tmp_path / "uplift.sqlite"
    fill(db, vw[1].responses_)
    # breaker_failures high: this test measures the store's file check, not the breaker
    app = create_app(config(vw, db, breaker_failures=1000))
    req = body(vw[2], int(USERS[3]))
    with TestClient(app) as c, caplog.at_level("WARNING", logger="hmum.serving.store"):
        assert c.post("/v1/decide", json=req).json()["store_version"] == "v1"
        remove_store_files(db)
        r = c.get("/readyz")
        assert r.status_code == 503, r.text
        assert "the store file was deleted while open" in r.json()["store_reason"]
        assert str(db) in r.json()["store_reason"] and not r.json()["store_health"]["available"]
        d = c.post("/v1/decide", json=req).json()
        assert d["degraded"] and d["reason"] == "store_error" and d["phi"] is None

        # `hmum score` builds a new file at the same path with a new current version
        users = tmp_path / "users.parquet"
        pq.write_table(pa.table({"user_id": pa.array(USERS, pa.int64()),
                                 "seg": pa.array(["0", "1"] * (len(USERS) // 2)),
                                 "x1": pa.array(np.linspace(-1, 1, len(USERS)))}), users)
        rep = run_scoring(ConstantModel(vw[1].responses_), users, tmp_path / "out", str(db),
                          {"date": DAY, "model_version": "rebuilt", "sample_reads": 8})
        assert rep.current == "20240102-rebuilt"
        # within the store's check interval (1 s by default), without any /readyz call
        d = wait_for(lambda: (x := c.post("/v1/decide", json=req).json())["store_version"]
                     == rep.current and x)
        assert d, "the rebuilt store was not served"
        assert not d["degraded"]
        # ConstantModel: delta of arm k is 0.1 * k for every response, so phi_k = 0.1 * k
        assert [d["phi"]["t1"], d["phi"]["t2"]] == pytest.approx([0.1, 0.2], abs=1e-5)
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["store_version"] == rep.current
        assert r.json()["store_health"]["reopens"] == 1
    logged = [rec.getMessage() for rec in caplog.records]
    assert any("deleted while open" in m and str(db) in m for m in logged)
    assert any(f"the store file {db} was replaced; reopened it" in m for m in logged)


def test_deleted_store_without_replacement_is_not_ready(vw, tmp_path):
    db = tmp_path / "uplift.sqlite"
    fill(db, vw[1].responses_)
    app = create_app(config(vw, db))
    req = body(vw[2], int(USERS[0]))
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
        remove_store_files(db)
        r = c.get("/readyz")
        assert r.status_code == 503 and "deleted while open" in r.json()["store_reason"]
        for _ in range(8):  # past the breaker's threshold: still never the old version
            d = c.post("/v1/decide", json=req).json()
            assert d["degraded"] and d["phi"] is None and d["enabled"] == []
        r = c.get("/readyz")  # the breaker is open now; the reason is still the file
        assert r.status_code == 503 and "deleted while open" in r.json()["store_reason"]
    assert not db.exists()  # the service did not create an empty one


# --- a missing store path (item 6) ----------------------------------------------------------


def test_service_never_creates_a_missing_store(vw, tmp_path):
    db = tmp_path / "typo.sqlite"
    app = create_app(config(vw, db, breaker_failures=1000))
    with TestClient(app) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and f"no store at {db}" in r.json()["store_reason"]
        assert not db.exists()
        fill(db, vw[1].responses_)  # the store appears: opened on the next read
        assert wait_for(lambda: c.get("/readyz").status_code == 200)


# --- user ids are matched exactly (item 2) --------------------------------------------------


@pytest.fixture
def int_client(vw, tmp_path):
    db = tmp_path / "uplift.sqlite"
    fill(db, vw[1].responses_, users=np.array([3, 7, 1003]))
    with TestClient(create_app(config(vw, db))) as c:
        yield c


@pytest.mark.parametrize("uid", ["7", "007", " 7", "7 ", "+7", "٣", "1003", "7.0"])
def test_string_ids_on_an_integer_store_are_unknown_users(int_client, vw, uid):
    d = int_client.post("/v1/decide", json=body(vw[2], uid)).json()
    assert d["user_id"] == uid and d["reason"] == "unknown_user" and not d["degraded"]
    assert d["phi"] is None and d["enabled"] == [] and d["store_version"] == "v1"


def test_mixed_batch_matches_each_id_in_its_own_kind(int_client, vw):
    ids = [7, "7", 3, "٣", 1003, "01003"]
    r = int_client.post("/v1/decide/batch", json={"requests": [body(vw[2], u) for u in ids]})
    ds = r.json()["decisions"]
    assert [d["phi"] is not None for d in ds] == [True, False, True, False, True, False]
    assert {d["store_version"] for d in ds} == {"v1"}
    assert [d["reason"] for d in ds if d["phi"] is None] == ["unknown_user"] * 3


def test_integer_id_on_a_string_store_is_an_unknown_user(vw, tmp_path):
    db = tmp_path / "uplift.sqlite"
    fill(db, vw[1].responses_, id_kind="str", users=np.array(["7", "alice"], dtype=object))
    with TestClient(create_app(config(vw, db))) as c:
        assert c.post("/v1/decide", json=body(vw[2], "7")).json()["phi"] is not None
        d = c.post("/v1/decide", json=body(vw[2], 7)).json()
        assert d["reason"] == "unknown_user" and d["store_version"] == "v1"
