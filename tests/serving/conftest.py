"""Fixtures of the serving tests: a tiny trained model, user tables, both store backends,
the decision service's value-weight model and its SQLite store.

Redis tests use, in this order: the server at $HMUM_TEST_REDIS_URL; else a
throwaway ``redis-server`` started on a free 127.0.0.1 port (the Debian package
``redis-server``); else they skip -- or fail when $HMUM_REQUIRE_REDIS is set (CI).
"""

from __future__ import annotations

import os
import shutil
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hmum.models.hum import HUMEstimator
from hmum.serving.scoring import run_scoring
from hmum.serving.store import RedisStore, SQLiteStore, local_redis_server
from tests.serving.helpers import CFG, build_model, fill_store, snapshot
from tests.synth import make_experiment

SMALL = {"expert_sizes": [16, 8], "tower_sizes": [8], "embed_dim": 8}
N_USERS = 3000


def users_table(n: int = N_USERS, seed: int = 7, id_offset: int = 1000) -> pa.Table:
    """n users with the synth schema's features (seg, x1) and a unique int64 user_id."""
    rng = np.random.default_rng(seed)
    return pa.table({
        "user_id": pa.array(id_offset + 3 * np.arange(n), pa.int64()),
        "seg": pa.array(rng.integers(0, 2, n).astype(str)),
        "x1": pa.array(rng.normal(size=n)),
    })


def train_model(path, seed: int = 0, R: int = 2, **model):
    d = make_experiment(n=600, K=2, R=R, effect=0.5, seed=3)
    est = HUMEstimator(d.schema, model={**SMALL, **model},
                       trainer={"batch_size": 128, "max_epochs": 1, "seed": seed})
    est.fit(d)
    est.save(path)
    return est


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    p = tmp_path_factory.mktemp("model") / "hum"
    train_model(p)
    return p


@pytest.fixture(scope="session")
def model_dir_b(tmp_path_factory):
    """A second model (another seed): another model version."""
    p = tmp_path_factory.mktemp("model_b") / "hum"
    train_model(p, seed=1)
    return p


@pytest.fixture(scope="session")
def model_dir_r3(tmp_path_factory):
    """A model of three responses (y0, y1, y2): another layout than model_dir's."""
    p = tmp_path_factory.mktemp("model_r3") / "hum"
    train_model(p, R=3)
    return p


@pytest.fixture(scope="session")
def vw(tmp_path_factory):
    """(artifact folder, onnx path, estimator, request table) of the decision service
    tests' tiny value-weight model."""
    return build_model(tmp_path_factory.mktemp("service_model"))


@pytest.fixture
def sqlite_store(tmp_path, vw):
    """tmp_path/uplift.sqlite holding USERS in v1 (current), as ``make_config`` reads it."""
    st = SQLiteStore(tmp_path / "uplift.sqlite", read_timeout=5.0)
    fill_store(st, vw[2].responses_)
    yield st
    st.close()


@pytest.fixture(scope="session")
def users_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("users") / "users.parquet"
    pq.write_table(users_table(), p, row_group_size=700)
    return p


def _unavailable(msg: str, required: bool) -> None:
    if required:
        pytest.fail(f"{msg} (HMUM_REQUIRE_REDIS is set: CI must run the Redis tests)")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def reference(model_dir, users_path, tmp_path_factory):
    """The local runner's uninterrupted run into SQLite: (report, snapshot)."""
    root = tmp_path_factory.mktemp("ref")
    st = SQLiteStore(root / "store.sqlite")
    rep = run_scoring(model_dir, users_path, root / "out", st, CFG)
    snap = snapshot(rep.partition, st, rep.store_version)
    st.close()
    return rep, snap


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("HMUM_TEST_REDIS_URL")
    required = bool(os.environ.get("HMUM_REQUIRE_REDIS"))
    try:
        import redis  # noqa: F401
    except ImportError:
        _unavailable("redis-py is not installed: pip install 'redis>=5' hiredis", required)
    if url:
        yield url
        return
    if shutil.which("redis-server") is None:
        msg = ("redis-server not found on PATH and HMUM_TEST_REDIS_URL not set; to run the "
               "Redis backend tests install it (Debian/Ubuntu: apt-get install redis-server)")
        _unavailable(msg, required)
    with local_redis_server() as url:
        yield url


def _drop_namespace(url: str, namespace: str) -> None:
    import redis

    c = redis.Redis.from_url(url)
    keys = list(c.scan_iter(match=f"hmum:{namespace}:*", count=1000))
    for s in range(0, len(keys), 1000):
        c.unlink(*keys[s:s + 1000])
    c.close()


@pytest.fixture
def redis_store_factory(redis_url):
    """make(**kwargs) -> RedisStore in a fresh namespace; everything dropped afterwards."""
    made: list[RedisStore] = []

    def make(namespace: str | None = None, **kw) -> RedisStore:
        kw.setdefault("read_timeout", 5.0)
        kw.setdefault("pointer_ttl", 0.0)
        st = RedisStore(redis_url, namespace or f"t{uuid.uuid4().hex[:12]}", **kw)
        made.append(st)
        return st

    yield make
    for st in made:
        _drop_namespace(redis_url, st.namespace)
        st.close()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request):
    return request.param


@pytest.fixture
def store_factory(backend, tmp_path, request):
    """make(namespace=None, **kwargs) -> a store of the parametrized backend."""
    if backend == "redis":
        return request.getfixturevalue("redis_store_factory")
    made: list[SQLiteStore] = []

    def make(namespace: str | None = None, **kw) -> SQLiteStore:
        kw.setdefault("read_timeout", 5.0)
        st = SQLiteStore(tmp_path / "store.sqlite", namespace or "default", **kw)
        made.append(st)
        return st

    request.addfinalizer(lambda: [s.close() for s in made])
    return make


@pytest.fixture
def store(store_factory):
    return store_factory()
