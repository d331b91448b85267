"""The decision service and its uplift store (issue 13): a deleted or replaced SQLite
file is noticed (new version served, or /readyz 503 with the reason), string ids never
reach another user, a missing store path is never created."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
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

from hmum.serving.config import ServiceConfig  # noqa: E402
from hmum.serving.scoring import run_scoring  # noqa: E402
from hmum.serving.service import create_app  # noqa: E402
from hmum.serving.store import SQLiteStore  # noqa: E402

USERS = 1000 + np.arange(50)  # their delta (K, R) in v1: helpers.DELTA


@pytest.fixture(scope="module")
def vw(tmp_path_factory):
    """(artifact folder, estimator, request table) of a tiny value-weight model."""
    return build_tiny_model(tmp_path_factory.mktemp("vw"))


def fill(path, responses, id_kind="int", users=USERS) -> None:
    with SQLiteStore(path) as st:
        fill_store(st, responses, users=users, id_kind=id_kind)


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
    req = request_body(vw[2], 0, int(USERS[3]))
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
    req = request_body(vw[2], 0, int(USERS[0]))
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
    d = int_client.post("/v1/decide", json=request_body(vw[2], 0, uid)).json()
    assert d["user_id"] == uid and d["reason"] == "unknown_user" and not d["degraded"]
    assert d["phi"] is None and d["enabled"] == [] and d["store_version"] == "v1"


def test_mixed_batch_matches_each_id_in_its_own_kind(int_client, vw):
    ids = [7, "7", 3, "٣", 1003, "01003"]
    reqs = [request_body(vw[2], 0, u) for u in ids]
    r = int_client.post("/v1/decide/batch", json={"requests": reqs})
    ds = r.json()["decisions"]
    assert [d["phi"] is not None for d in ds] == [True, False, True, False, True, False]
    assert {d["store_version"] for d in ds} == {"v1"}
    assert [d["reason"] for d in ds if d["phi"] is None] == ["unknown_user"] * 3


def test_integer_id_on_a_string_store_is_an_unknown_user(vw, tmp_path):
    db = tmp_path / "uplift.sqlite"
    fill(db, vw[1].responses_, id_kind="str", users=np.array(["7", "alice"], dtype=object))
    with TestClient(create_app(config(vw, db))) as c:
        assert c.post("/v1/decide", json=request_body(vw[2], 0, "7")).json()["phi"] is not None
        d = c.post("/v1/decide", json=request_body(vw[2], 0, 7)).json()
        assert d["reason"] == "unknown_user" and d["store_version"] == "v1"
