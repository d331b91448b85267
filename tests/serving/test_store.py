import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hmum.exceptions import StoreError, StoreTimeout
from hmum.serving.store import (
    RedisStore,
    SQLiteStore,
    VersionInfo,
    decode_values,
    encode_values,
    open_store,
)

K, R = 2, 3


def info(version="v1", **kw):
    return VersionInfo(version=version, K=K, R=R, arms=["control", "t1", "t2"],
                       responses=["time", "views", "likes"], **kw)


def rand_delta(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, K, R)).astype(np.float32)


def load(st, version="v1", ids=None, seed=0, ready=True, **kw):
    ids = np.arange(100, 400) * 5 if ids is None else ids
    d = rand_delta(len(ids), seed)
    st.create_version(info(version, **kw), expected_rows=len(ids))
    st.put(version, ids, d, shard=0)
    if ready:
        st.mark_ready(version, len(ids))
    return ids, d


# --- values ---------------------------------------------------------------------------


def test_value_encoding_is_k_major_float32_le():
    d = np.arange(2 * K * R, dtype=np.float64).reshape(2, K, R) / 4
    vals = encode_values(d)
    assert vals[1] == (np.array([6, 7, 8, 9, 10, 11], "<f4") / 4).tobytes() and len(vals[0]) == K * R * 4
    got, spread = decode_values(vals, info())
    np.testing.assert_array_equal(got, d.astype(np.float32))
    assert spread is None


def test_decode_rejects_wrong_size():
    with pytest.raises(StoreError, match="value of 5 bytes where version 'v1' holds 24"):
        decode_values([b"12345"], info())


def test_value_with_members_appends_the_spread():
    # K = 2, R = 3: S = 6 means + 2 * 6 covariance entries = 18 floats after delta's 6
    d = np.arange(2 * K * R, dtype=np.float32).reshape(2, K, R)
    sp = -np.arange(2 * 18, dtype=np.float32).reshape(2, 18)
    vi = info(members=4)
    assert vi.spread_width == 18 and vi.value_bytes == (6 + 18) * 4
    vals = encode_values(d, sp)
    assert vals[1] == np.concatenate([d[1].ravel(), sp[1]]).astype("<f4").tobytes()
    got, spread = decode_values(vals, vi)
    np.testing.assert_array_equal(got, d)
    np.testing.assert_array_equal(spread, sp)
    with pytest.raises(StoreError, match="holds 96"):
        decode_values(encode_values(d), vi)  # a value without its spread
    with pytest.raises(ValueError, match="members must be None or an integer >= 2"):
        info(members=1)


def test_round_trip_with_the_members_spread(store):
    ids = np.arange(50) * 3
    d = rand_delta(50)
    sp = np.random.default_rng(1).normal(size=(50, 18)).astype(np.float32)
    store.create_version(info("vs", members=5), expected_rows=50)
    with pytest.raises(ValueError, match="holds the spread of its members: pass spread"):
        store.put("vs", ids, d)
    with pytest.raises(ValueError, match=r"spread must have shape \(n, S\) = \(50, 18\)"):
        store.put("vs", ids, d, spread=sp[:, :4])
    store.put("vs", ids, d, spread=sp, shard=0)
    store.mark_ready("vs", 50)
    got = store.get([ids[4], 1, ids[0]], version="vs")
    assert got.members == 5
    np.testing.assert_array_equal(got.found, [True, False, True])
    np.testing.assert_array_equal(got.spread[[0, 2]], sp[[4, 0]])
    assert np.isnan(got.spread[1]).all() and np.isnan(got.delta[1]).all()
    np.testing.assert_array_equal(got.delta[[0, 2]], d[[4, 0]])
    store.verify("vs", rows=50, sample_ids=ids[:7], sample_delta=d[:7], sample_spread=sp[:7])
    bad = sp[:7].copy()
    bad[2, 3] += 1
    with pytest.raises(StoreError, match=rf"users \[{ids[2]}\]"):
        store.verify("vs", rows=50, sample_ids=ids[:7], sample_delta=d[:7], sample_spread=bad)
    np.testing.assert_array_equal(store.dump("vs")[1], d)
    # a version of delta only refuses a spread, and reads without one
    load(store, "v1")
    with pytest.raises(ValueError, match="holds delta only"):
        store.put("v1", ids, d, spread=sp)
    assert store.get([500], version="v1").spread is None


# --- round trip -------------------------------------------------------------------------


def test_round_trip_and_found_mask(store):
    ids, d = load(store)
    store.switch("v1")
    q = np.array([ids[3], 7, ids[0], ids[-1]])
    got = store.get(q)
    assert got.version == "v1"
    np.testing.assert_array_equal(got.found, [True, False, True, True])
    np.testing.assert_array_equal(got.delta[[0, 2, 3]], d[[3, 0, -1]])
    assert got.delta.dtype == np.float32 and got.delta.shape == (4, K, R)
    assert np.isnan(got.delta[1]).all()
    one = store.get(ids[5])
    np.testing.assert_array_equal(one.delta, d[5:6])
    assert store.get([]).delta.shape == (0, K, R)
    all_ids, all_d = store.dump("v1")
    np.testing.assert_array_equal(all_ids, ids)
    np.testing.assert_array_equal(all_d, d)
    assert store.count("v1") == len(ids)
    assert store.loaded_shards("v1") == {0: len(ids)}


def test_stored_bytes_follow_the_documented_layout(store):
    ids, d = load(store)
    if isinstance(store, SQLiteStore):
        raw = store._conn().execute(
            'SELECT delta FROM "hmum_delta__default__v1" WHERE user_id=?', (int(ids[7]),)
        ).fetchone()[0]
    else:  # hmum:{ns}:v:{v}:b:{user_id mod n_buckets}, field = decimal id
        nb = store.info("v1").n_buckets
        assert nb == -(-len(ids) // 64)
        key = f"hmum:{store.namespace}:v:v1:b:{int(ids[7]) % nb}"
        raw = store.client.hget(key, str(int(ids[7])))
        assert store.client.object("encoding", key) == b"listpack"
        assert store.client.get(f"hmum:{store.namespace}:current") is None
        store.switch("v1")
        assert store.client.get(f"hmum:{store.namespace}:current") == b"v1"
        assert store.client.hget(f"hmum:{store.namespace}:v:v1:shards", "0") == b"300"
    assert raw == d[7].astype("<f4").tobytes()


def test_put_is_an_idempotent_upsert(store):
    ids, d = load(store, ready=False)
    store.put("v1", ids, d)
    assert store.count("v1") == len(ids)
    d2 = d.copy()
    d2[:10] += 1
    store.put("v1", ids[:10], d2[:10])
    np.testing.assert_array_equal(store.dump("v1")[1], d2)


def test_string_user_ids(store):
    ids = np.array(["alice", "bob", "carol", "dave"], dtype=object)
    _, d = load(store, ids=ids, id_kind="str")
    got = store.get(["carol", "zed", "alice"], version="v1")
    np.testing.assert_array_equal(got.found, [True, False, True])
    np.testing.assert_array_equal(got.delta[[0, 2]], d[[2, 0]])
    assert sorted(store.dump("v1")[0].tolist()) == sorted(ids.tolist())


# --- validation -------------------------------------------------------------------------


def test_put_wrong_shape_names_delta(store):
    store.create_version(info())
    with pytest.raises(ValueError, match=r"delta must have shape \(n, K, R\) = \(3, 2, 3\)"):
        store.put("v1", [1, 2, 3], np.zeros((3, 3, 2)))


def test_put_nonfinite_refused(store):
    store.create_version(info())
    with pytest.raises(ValueError, match="NaN or inf"):
        store.put("v1", [1], np.full((1, K, R), np.nan))


def test_get_two_dimensional_ids_refused(store):
    load(store)
    with pytest.raises(ValueError, match="user_ids must be one-dimensional"):
        store.get(np.zeros((2, 2), int), version="v1")


def test_bad_version_name():
    with pytest.raises(ValueError, match="version must match"):
        info("a:b")


def test_same_version_other_layout_refused(store):
    store.create_version(info())
    other = VersionInfo(version="v1", K=1, R=3, arms=["c", "t"], responses=["a", "b", "c"])
    with pytest.raises(StoreError, match="already exists with another layout"):
        store.create_version(other)


def test_unknown_version(store):
    with pytest.raises(StoreError, match="version 'nope' not found"):
        store.info("nope")


def test_get_without_current_version(store):
    load(store)
    with pytest.raises(StoreError, match="no current version yet"):
        store.get([1])


# --- versions -----------------------------------------------------------------------------


def test_switch_requires_ready(store):
    load(store, ready=False)
    with pytest.raises(StoreError, match="status 'loading'"):
        store.switch("v1")


def test_switch_rollback_cleanup(store):
    ids, d1 = load(store, "v1", seed=1)
    _, d2 = load(store, "v2", seed=2)
    _, d3 = load(store, "v3", seed=3)
    load(store, "v4", seed=4, ready=False)
    assert store.switch("v1") == ("v1", None)
    assert store.switch("v2") == ("v2", "v1")
    assert store.switch("v2") == ("v2", "v1")  # no-op
    np.testing.assert_array_equal(store.get(ids).delta, d2)
    assert store.rollback() == ("v1", None)
    np.testing.assert_array_equal(store.get(ids).delta, d1)
    with pytest.raises(StoreError, match="no previous version to roll back to"):
        store.rollback()
    assert store.switch("v3") == ("v3", "v1")
    with pytest.raises(StoreError, match="current or previous"):
        store.delete_version("v1")
    assert store.cleanup() == ["v2"]  # v4 is still loading: kept
    assert [i.version for i in store.versions()] == ["v1", "v3", "v4"]
    assert store.cleanup(include_loading=True) == ["v4"]
    assert store.rollback() == ("v1", None)
    st = store.status()
    assert (st["current"], st["previous"]) == ("v1", None)
    assert [v["version"] for v in st["versions"]] == ["v1", "v3"]
    np.testing.assert_array_equal(store.get(ids, version="v3").delta, d3)


def test_verify_counts_and_samples(store):
    ids, d = load(store, ready=False)
    store.verify("v1", rows=len(ids), sample_ids=ids[:5], sample_delta=d[:5])
    with pytest.raises(StoreError, match="holds 300 users but 301 rows were scored; are some"):
        store.verify("v1", rows=301)
    with pytest.raises(StoreError, match="sample reads differ"):
        store.verify("v1", rows=len(ids), sample_ids=ids[:5], sample_delta=d[:5] + 1)


def test_two_namespaces_are_separate(store_factory):
    a, b = store_factory("nsa"), store_factory("nsb")
    load(a, "v1", seed=1)
    a.switch("v1")
    assert b.versions() == [] and b.pointers() == (None, None)


# --- reads: timeouts, threads ----------------------------------------------------------------


def test_sqlite_timeout_interrupts_the_query(tmp_path):
    st = SQLiteStore(tmp_path / "s.db")
    ids, d = load(st, ids=np.arange(60_000))
    with pytest.raises(StoreTimeout, match="did not finish within its timeout"):
        st.get(ids, version="v1", timeout=1e-4)
    np.testing.assert_array_equal(st.get(ids[:3], version="v1", timeout=1.0).delta, d[:3])
    st.close()


def test_redis_timeout_drops_the_connection(redis_store_factory):
    st = redis_store_factory()
    ids, d = load(st)
    st.switch("v1")
    blocker = st.client  # a separate pooled connection runs a busy script for ~0.4 s
    busy = "local t0 = redis.call('TIME') repeat local t = redis.call('TIME') " \
           "until (t[1] - t0[1]) * 1e6 + (t[2] - t0[2]) > 400000 return 1"
    th = threading.Thread(target=lambda: blocker.eval(busy, 0))
    th.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    with pytest.raises(StoreTimeout):
        st.get(ids[:3], timeout=0.05)
    assert time.monotonic() - t0 < 0.3
    th.join()
    np.testing.assert_array_equal(st.get(ids[:3], timeout=1.0).delta, d[:3])


def test_redis_pointer_cache_sees_switches_within_ttl(redis_store_factory):
    writer = redis_store_factory()
    reader = redis_store_factory(writer.namespace, pointer_ttl=0.2)
    ids, d1 = load(writer, "v1", seed=1)
    _, d2 = load(writer, "v2", seed=2)
    writer.switch("v1")
    assert reader.get(ids[:2]).version == "v1"
    writer.switch("v2")
    assert reader.get(ids[:2]).version == "v1"  # cached; v1 still exists as previous
    np.testing.assert_array_equal(reader.get(ids[:2]).delta, d1[:2])
    time.sleep(0.25)
    got = reader.get(ids[:2])
    assert got.version == "v2"
    np.testing.assert_array_equal(got.delta, d2[:2])


def test_concurrent_reads_while_loading(store):
    ids, d = load(store)
    store.switch("v1")
    store.create_version(info("v2"))
    stop = threading.Event()

    def reader(_):
        n = 0
        while not stop.is_set() and n < 200:
            got = store.get(ids[n % 50:n % 50 + 20], timeout=5.0)
            assert got.version == "v1" and got.found.all()
            n += 1
        return n

    with ThreadPoolExecutor(3) as ex:
        futs = [ex.submit(reader, i) for i in range(3)]
        for s in range(5):
            store.put("v2", ids + s, rand_delta(len(ids), s))
        stop.set()
        assert all(f.result() > 0 for f in futs)


# --- opening ------------------------------------------------------------------------------


def test_open_store_urls(tmp_path):
    st = open_store(f"sqlite:///{tmp_path}/a.db", "ns1", create=True)
    assert isinstance(st, SQLiteStore) and st.path == tmp_path / "a.db" and st.namespace == "ns1"
    st.close()
    st = open_store(tmp_path / "b.sqlite", create=True)
    assert isinstance(st, SQLiteStore)
    st.close()
    st = open_store(tmp_path / "b.sqlite")  # exists: opened for reading
    assert st.pointers() == (None, None)
    st.close()
    assert isinstance(open_store("redis://127.0.0.1:1/0"), RedisStore)  # lazy: no connection yet
    with pytest.raises(ValueError, match="expected redis://host:port/db, sqlite:///path"):
        open_store("http://x")


def test_half_deleted_version_cannot_be_switched_to(store, monkeypatch):
    load(store, "v1")
    load(store, "v2")
    store.switch("v2")

    def killed(info):
        raise KeyboardInterrupt("killed during cleanup")

    monkeypatch.setattr(store, "_delete", killed)
    with pytest.raises(KeyboardInterrupt):
        store.cleanup()
    assert store.info("v1").status == "deleting"
    monkeypatch.undo()
    with pytest.raises(StoreError, match="status 'deleting'"):
        store.switch("v1")
    assert store.cleanup() == ["v1"]  # the next cleanup finishes the job
    assert [i.version for i in store.versions()] == ["v2"]


# --- ids are matched exactly, in the kind the version recorded (issue 13, item 2) -------------

#: strings that int() or numpy would read as 7 or 3: never user 7 or 3 of an integer store
LOOKALIKES = ["7", "007", " 7", "7 ", "+7", "٣", "7.0", "0x7"]


def test_string_ids_never_match_integer_users(store):
    ids = np.array([3, 7, 8])
    _, d = load(store, ids=ids)
    store.switch("v1")
    for version in (None, "v1"):
        got = store.get(LOOKALIKES, version=version)
        assert got.found.tolist() == [False] * len(LOOKALIKES) and got.version == "v1"
        assert np.isnan(got.delta).all()
        one = store.get(["٣"], version=version)  # the single-id path too
        assert one.found.tolist() == [False] and one.version == "v1"
        got = store.get([7, "7", 3, "٣", np.int32(8), True, 7.0], version=version)
        assert got.found.tolist() == [True, False, True, False, True, False, False]
        np.testing.assert_array_equal(got.delta[[0, 2, 4]], d[[1, 0, 2]])
        assert not store.get(np.array(["7", "3"]), version=version).found.any()


def test_integer_ids_never_match_string_users(store):
    ids = np.array(["7", "007", "alice"], dtype=object)
    _, d = load(store, ids=ids, id_kind="str")
    store.switch("v1")
    got = store.get([7, np.int64(7), "7", "007", " 7"])
    assert got.found.tolist() == [False, False, True, True, False] and got.version == "v1"
    np.testing.assert_array_equal(got.delta[[2, 3]], d[[0, 1]])
    assert not store.get(np.array([7, 0])).found.any()


def test_put_refuses_ids_of_the_other_kind(store):
    store.create_version(info("v1"))
    store.create_version(info("v2", id_kind="str"))
    one = np.zeros((1, K, R))
    with pytest.raises(ValueError, match=r"stores integer user ids, got \['9'\]"):
        store.put("v1", ["9"], one)
    with pytest.raises(ValueError, match=r"stores integer user ids, got \[9.0\]"):
        store.put("v1", np.array([9.0]), one)
    with pytest.raises(ValueError, match=r"stores string user ids, got \[9\]"):
        store.put("v2", [9], one)
    assert store.count("v1") == store.count("v2") == 0


# --- reading never creates a store (issue 13, item 6) ------------------------------------------


def test_reading_open_of_a_missing_file_creates_nothing(tmp_path):
    path = tmp_path / "typo" / "uplift.sqlite"
    with pytest.raises(StoreError, match=f"^no store at {path}$"):
        open_store(path)
    with pytest.raises(StoreError, match="^no store at"):
        open_store(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="^no store at"):
        SQLiteStore(path, create=False)
    assert not path.parent.exists()


def test_reading_open_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="is a folder; expected an SQLite store file"):
        open_store(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a database\n" * 10)
    with pytest.raises(StoreError, match="notes.txt: not an SQLite database"):
        open_store(text)
    with pytest.raises(StoreError, match="notes.txt: not an SQLite database"):
        open_store(text, create=True)  # a writer does not overwrite it either
    import sqlite3

    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="an SQLite database but not an hmum uplift store"):
        open_store(other)
    assert other.read_bytes() == before  # not even switched to WAL


def test_writer_refuses_a_wal_left_by_a_deleted_store(tmp_path):
    path = tmp_path / "s.sqlite"
    (tmp_path / "s.sqlite-wal").write_bytes(b"")
    with pytest.raises(StoreError, match="does not exist but s.sqlite-wal beside it do"):
        SQLiteStore(path)
    assert not path.exists()


# --- a replaced or deleted file is noticed (issue 13, item 1) ----------------------------------


def remove_store_files(path):
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def test_deleted_then_rebuilt_file_is_reopened(tmp_path, caplog):
    path = tmp_path / "s.sqlite"
    writer = SQLiteStore(path)
    ids, d1 = load(writer, "v1", seed=1)
    writer.switch("v1")
    writer.close()
    reader = open_store(path, check_interval=0)
    np.testing.assert_array_equal(reader.get(ids[:3]).delta, d1[:3])
    assert reader.health()["available"] and reader.health()["reopens"] == 0

    remove_store_files(path)
    with caplog.at_level("WARNING", logger="hmum.serving.store"):
        with pytest.raises(StoreError, match="store file was deleted while open"):
            reader.get(ids[:3])  # not the deleted file's v1
        h = reader.health()
    assert not h["available"] and "deleted" in h["reason"] and str(path) in h["reason"]
    assert h["last_event"]["event"] == "deleted"
    assert [r.getMessage() for r in caplog.records].count(
        f"uplift store: {h['reason']}") == 1  # logged once, not on every read
    assert not path.exists()  # the reader did not make an empty one

    writer = SQLiteStore(path)
    _, d2 = load(writer, "v2", seed=2)
    writer.switch("v2")
    with caplog.at_level("WARNING", logger="hmum.serving.store"):
        got = reader.get(ids[:3])
    assert got.version == "v2"
    np.testing.assert_array_equal(got.delta, d2[:3])
    assert any(f"the store file {path} was replaced; reopened it" in r.getMessage()
               for r in caplog.records)
    h = reader.health()
    assert h["available"] and h["reopens"] == 1 and h["last_event"]["event"] == "replaced"
    with pytest.raises(StoreError, match="version 'v1' not found"):
        reader.info("v1")  # the old file's versions are gone with it
    reader.close()
    writer.close()


def test_identity_is_checked_every_check_interval(tmp_path):
    path = tmp_path / "s.sqlite"
    writer = SQLiteStore(path)
    ids, _ = load(writer, "v1")
    writer.switch("v1")
    writer.close()
    reader = open_store(path, check_interval=0.3)
    assert reader.get(ids[:1]).found.all()
    remove_store_files(path)
    assert reader.get(ids[:1]).version == "v1"  # within the interval: not checked yet
    time.sleep(0.35)
    with pytest.raises(StoreError, match="deleted while open"):
        reader.get(ids[:1])
    reader.close()


def test_a_file_renamed_over_the_store_is_not_paired_with_the_old_wal(tmp_path):
    path = tmp_path / "s.sqlite"
    writer = SQLiteStore(path)
    ids, d1 = load(writer, "v1", seed=1)
    writer.switch("v1")
    reader = open_store(path, check_interval=0)
    assert reader.get(ids[:2]).version == "v1"
    # updates still in the old -wal (the reader keeps it open, so it is not checkpointed away)
    writer.put("v1", ids[:2], d1[:2] + 1)
    writer.close()
    built = SQLiteStore(tmp_path / "new.sqlite")
    _, d2 = load(built, "v2", seed=2)
    built.switch("v2")
    built.close()  # the last connection: checkpointed, its own -wal removed
    os.replace(tmp_path / "new.sqlite", path)
    with pytest.raises(StoreError, match="s.sqlite-wal beside it still belongs to the old file"):
        reader.get(ids[:2])
    assert "still belongs to the old file" in reader.health()["reason"]
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink()
    got = reader.get(ids[:2])
    assert got.version == "v2"
    np.testing.assert_array_equal(got.delta, d2[:2])
    reader.close()
