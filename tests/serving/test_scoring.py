import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hmum.decision.core import relative_uplift
from hmum.exceptions import DataError, ScoringError, StoreError
from hmum.models.registry import load_estimator
from hmum.serving import scoring
from hmum.serving.scoring import (
    InputPlan,
    model_version_of,
    record_columns,
    record_delta,
    record_table,
    run_scoring,
    score_table,
)
from hmum.serving.store import SQLiteStore
from tests.serving.conftest import N_USERS, users_table
from tests.serving.helpers import CFG, DAY, Boom, ConstantModel, assert_same, fail_on, snapshot

# --- scoring one table ------------------------------------------------------------------


def test_score_table_matches_the_estimator(model_dir):
    est = load_estimator(model_dir)
    t = users_table(50)
    s = score_table(est, t, id_column="user_id", batch_size=16)
    y = est.predict_outcomes(t)
    assert s.y_hat.shape == (50, 3, 2) and s.delta.shape == (50, 2, 2)
    assert s.y_hat.dtype == np.float32 and s.delta.dtype == np.float32
    np.testing.assert_allclose(s.y_hat, y, rtol=1e-6)
    np.testing.assert_array_equal(s.delta, relative_uplift(s.y_hat))
    np.testing.assert_array_equal(s.user_ids, t.column("user_id").to_numpy())


def test_record_table_columns_round_trip(model_dir):
    est = load_estimator(model_dir)
    s = score_table(est, users_table(20), id_column="user_id")
    rec = record_table(s, est.schema, "user_id")
    y_cols, d_cols = record_columns(est.schema)
    assert rec.column_names == ["user_id", *y_cols, *d_cols]
    assert d_cols == ["delta__t1__y0", "delta__t1__y1", "delta__t2__y0", "delta__t2__y1"]
    assert y_cols[0] == "y_hat__control__y0"
    np.testing.assert_array_equal(rec.column("delta__t2__y0").to_numpy(), s.delta[:, 1, 0])
    ids, d, _ = record_delta(rec, est.schema, "user_id")
    np.testing.assert_array_equal(d, s.delta)
    np.testing.assert_array_equal(ids, s.user_ids)


def test_score_table_missing_id_column(model_dir):
    est = load_estimator(model_dir)
    with pytest.raises(DataError, match="missing user id column 'uid'"):
        score_table(est, users_table(5), id_column="uid")


def test_score_table_null_ids(model_dir):
    est = load_estimator(model_dir)
    t = users_table(3).set_column(0, "user_id", pa.array([1, None, 3], pa.int64()))
    with pytest.raises(DataError, match="column 'user_id': expected a user id in every row"):
        score_table(est, t, id_column="user_id")


def test_model_version_from_manifest(model_dir, model_dir_b):
    v = model_version_of(model_dir)
    assert len(v) == 12 and int(v, 16) >= 0
    assert model_version_of(model_dir) == v != model_version_of(model_dir_b)


# --- input plan -------------------------------------------------------------------------


def test_folder_input_reads_like_one_file(tmp_path):
    t = users_table(1000)
    pq.write_table(t, tmp_path / "one.parquet", row_group_size=300)
    folder = tmp_path / "users"
    (folder / "day=1").mkdir(parents=True)
    pq.write_table(t.slice(0, 250), folder / "day=1" / "a.parquet", row_group_size=100)
    pq.write_table(t.slice(250, 600), folder / "day=1" / "b.parquet", row_group_size=1000)
    pq.write_table(t.slice(850, 150), folder / "z.parquet")
    pq.write_table(t.slice(0, 5), folder / "_ignored.parquet")
    pq.write_table(t.slice(0, 5), folder / ".hidden.parquet")
    cols = ["user_id", "seg", "x1"]
    one, many = InputPlan(tmp_path / "one.parquet", cols), InputPlan(folder, cols)
    assert one.total_rows == many.total_rows == 1000
    for lo, hi in [(0, 1000), (90, 410), (240, 260), (999, 1000)]:
        assert one.read(lo, hi, batch_rows=64).equals(many.read(lo, hi, batch_rows=64))
        assert one.read(lo, hi).equals(t.slice(lo, hi - lo))


def test_input_missing_column_names_file(tmp_path):
    pq.write_table(users_table(10).drop_columns(["x1"]), tmp_path / "u.parquet")
    with pytest.raises(DataError, match=r"u.parquet: missing column\(s\) \['x1'\]"):
        InputPlan(tmp_path / "u.parquet", ["user_id", "seg", "x1"])


def test_input_csv_refused(tmp_path):
    (tmp_path / "u.csv").write_text("user_id,seg,x1\n1,a,0.5\n")
    with pytest.raises(DataError, match="scoring reads Parquet"):
        InputPlan(tmp_path / "u.csv", ["user_id"])


# --- the runner -------------------------------------------------------------------------


def test_run_layout_and_store(reference, model_dir):
    rep, snap = reference
    mv = model_version_of(model_dir)
    assert rep.partition.parts[-2:] == ("date=2024-01-02", f"model_version={mv}")
    assert rep.store_version == f"20240102-{mv}"
    assert (rep.rows, rep.n_shards, rep.shards_scored, rep.shards_loaded) == (N_USERS, 6, 6, 6)
    assert (rep.current, rep.previous) == (rep.store_version, None)
    assert sorted(snap["files"]) == sorted(
        ["_SUCCESS", "_run.json"] + [f"part-{i:05d}.parquet" for i in range(6)]
        + [f"_part-{i:05d}.json" for i in range(6)])
    # the record, read as a hive-partitioned dataset, is what the store holds
    import pyarrow.dataset as pads

    rec = pads.dataset(rep.partition.parents[1], format="parquet", partitioning="hive").to_table()
    assert rec.num_rows == N_USERS
    assert set(rec.column("model_version").to_pylist()) == {mv}
    est = load_estimator(model_dir)
    ids, d, _ = record_delta(rec, est.schema, "user_id")
    order = np.argsort(ids)
    np.testing.assert_array_equal(ids[order], snap["ids"])
    np.testing.assert_array_equal(d[order], snap["delta"])
    marker = json.loads((rep.partition / "_part-00002.json").read_text())
    assert marker["rows"] == 500 and marker["start"] == 1000
    assert marker["bytes"] == (rep.partition / "part-00002.parquet").stat().st_size


def test_rerun_skips_everything(reference, model_dir, users_path, tmp_path):
    st = SQLiteStore(tmp_path / "s.sqlite")
    rep = run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    mtimes = {p.name: p.stat().st_mtime_ns for p in rep.partition.glob("part-*")}
    again = run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    assert (again.shards_scored, again.shards_loaded) == (0, 0)
    assert {p.name: p.stat().st_mtime_ns for p in rep.partition.glob("part-*")} == mtimes
    assert_same(snapshot(rep.partition, st, rep.store_version), reference[1])
    st.close()


def test_store_only_resume_reloads_from_the_record(reference, model_dir, users_path, tmp_path):
    """The record survived but the store was lost: the store is refilled from the record."""
    run_scoring(model_dir, users_path, tmp_path / "out", tmp_path / "lost.sqlite", CFG)
    st = SQLiteStore(tmp_path / "s.sqlite")
    rep = run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    assert (rep.shards_scored, rep.shards_loaded) == (0, 6)
    assert_same(snapshot(rep.partition, st, rep.store_version), reference[1])
    st.close()


def test_folder_input_gives_the_same_result(reference, model_dir, tmp_path):
    folder = tmp_path / "users"
    folder.mkdir()
    t = users_table()
    for i, (lo, n) in enumerate([(0, 1234), (1234, 766), (2000, 1000)]):
        pq.write_table(t.slice(lo, n), folder / f"part-{i}.parquet", row_group_size=333)
    st = SQLiteStore(tmp_path / "s.sqlite")
    rep = run_scoring(model_dir, folder, tmp_path / "out", st, CFG)
    snap = snapshot(rep.partition, st, rep.store_version)
    ref = reference[1]
    assert {k: v for k, v in snap["files"].items() if k != "_run.json"} == {
        k: v for k, v in ref["files"].items() if k != "_run.json"}
    np.testing.assert_array_equal(snap["delta"], ref["delta"])
    st.close()


@pytest.mark.parametrize("where", ["store_put", "part_rename", "marker_write", "switch"])
def test_injected_failure_then_rerun_is_identical(where, reference, model_dir, users_path,
                                                  tmp_path, monkeypatch):
    st = SQLiteStore(tmp_path / "s.sqlite")
    with monkeypatch.context() as m:
        if where == "store_put":  # the 3rd shard's load into the store fails
            fail_on(m, SQLiteStore, "_put", 3)
        elif where == "part_rename":  # temp record of shard 4 written, rename fails
            fail_on(m, scoring.os, "replace", 1,
                     when=lambda src, dst: Path(dst).name == "part-00004.parquet")
        elif where == "marker_write":  # record of shard 1 in place, its marker not
            fail_on(m, scoring, "_atomic_write", 1,
                     when=lambda path, data: path.name == "_part-00001.json")
        else:
            fail_on(m, SQLiteStore, "switch", 1)
        with pytest.raises(Boom):
            run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    (failed,) = st.versions()
    if where == "switch":  # complete and verified before the switch failed: still switchable
        assert failed.status == "ready" and "error" not in failed.extra
    else:  # not "loading", which would look like a run still in progress
        assert failed.status == "failed"
        assert failed.extra["error"].startswith("Boom: injected failure in ")
    part = next((tmp_path / "out").glob("date=*/model_version=*"))
    if where == "part_rename":
        assert [p.name for p in part.glob(".*.tmp")] == [".part-00004.parquet.tmp"]
    rep = run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    assert not list(rep.partition.glob(".*.tmp"))
    assert_same(snapshot(rep.partition, st, rep.store_version), reference[1])
    st.close()


KILL_SCRIPT = """
import sys, time
from hmum.serving.scoring import run_scoring
import datetime as dt
def progress(stage, done, total):
    time.sleep(0.5)  # slow enough for the parent to kill between shards' work
run_scoring(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4],
            {"shard_rows": 500, "date": dt.date(2024, 1, 2), "sample_reads": 64},
            progress=progress)
"""


@pytest.mark.parametrize("after_markers, delay", [(2, 0.3), (4, 0.0)])
def test_killed_run_then_rerun_is_identical(after_markers, delay, reference, model_dir,
                                            users_path, tmp_path):
    """SIGKILL the scoring job after some shards; run it again: exactly the reference."""
    out, db = tmp_path / "out", tmp_path / "s.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(model_dir), str(users_path),
                             str(out), str(db)], env=env, stderr=subprocess.PIPE)
    t_end = time.monotonic() + 120
    markers = []
    while time.monotonic() < t_end and proc.poll() is None:
        markers = list(out.glob("date=*/model_version=*/_part-*.json"))
        if len(markers) >= after_markers:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    time.sleep(delay)  # land somewhere inside the next shard's work
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = list(out.glob("date=*/model_version=*/_part-*.json"))
    assert after_markers <= len(done) < 6
    st = SQLiteStore(db)
    assert st.versions()[0].status == "loading" and st.current() is None
    rep = run_scoring(model_dir, users_path, out, st, CFG)
    assert rep.shards_scored == 6 - len(done)
    assert_same(snapshot(rep.partition, st, rep.store_version), reference[1])
    st.close()


def test_redis_run_matches_sqlite(reference, model_dir, users_path, tmp_path,
                                  redis_store_factory):
    st = redis_store_factory()
    with pytest.MonkeyPatch.context() as m:
        fail_on(m, type(st), "_put", 4)
        with pytest.raises(Boom):
            run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    rep = run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    assert rep.shards_loaded == 3
    assert_same(snapshot(rep.partition, st, rep.store_version), reference[1])
    got = st.get(reference[1]["ids"][:100])
    np.testing.assert_array_equal(got.delta, reference[1]["delta"][:100])


def test_new_model_versions_switch_rollback_cleanup(model_dir, model_dir_b, users_path,
                                                    tmp_path):
    st = SQLiteStore(tmp_path / "s.sqlite")
    cfg = {**CFG, "shard_rows": 1500}
    a = run_scoring(model_dir, users_path, tmp_path / "out", st, cfg)
    b = run_scoring(model_dir_b, users_path, tmp_path / "out", st, cfg)
    assert b.store_version != a.store_version
    assert (b.current, b.previous, b.cleaned) == (b.store_version, a.store_version, [])
    ids = st.dump(a.store_version)[0][:5]
    assert st.get(ids).version == b.store_version
    assert st.rollback() == (a.store_version, None)
    assert st.get(ids).version == a.store_version
    c = run_scoring(model_dir_b, users_path, tmp_path / "out", st,
                    {**cfg, "date": DAY + dt.timedelta(days=1)})
    # b was rolled back (neither current nor previous any more): cleaned up
    assert (c.current, c.previous, c.cleaned) == (c.store_version, a.store_version,
                                                  [b.store_version])
    assert (tmp_path / "out" / "date=2024-01-03").is_dir()
    st.close()


def test_no_switch_leaves_the_version_ready(model_dir, users_path, tmp_path):
    st = SQLiteStore(tmp_path / "s.sqlite")
    rep = run_scoring(model_dir, users_path, tmp_path / "out", st,
                      {**CFG, "shard_rows": 3000, "switch": False})
    assert st.pointers() == (None, None) and st.info(rep.store_version).status == "ready"
    st.close()


def test_other_settings_refused_then_restart(model_dir, users_path, tmp_path):
    st = SQLiteStore(tmp_path / "s.sqlite")
    run_scoring(model_dir, users_path, tmp_path / "out", st, {**CFG, "switch": False})
    with pytest.raises(ScoringError, match="started with other settings \\(n_shards, shard_rows"):
        run_scoring(model_dir, users_path, tmp_path / "out", st, {**CFG, "shard_rows": 1000})
    rep = run_scoring(model_dir, users_path, tmp_path / "out", st,
                      {**CFG, "shard_rows": 1000, "restart": True})
    assert (rep.n_shards, rep.shards_scored) == (3, 3)
    assert sorted(p.name for p in rep.partition.glob("part-*")) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    st.close()


def test_locked_partition_refused(model_dir, users_path, tmp_path):
    st = SQLiteStore(tmp_path / "s.sqlite")
    part = tmp_path / "out" / "date=2024-01-02" / f"model_version={model_version_of(model_dir)}"
    part.mkdir(parents=True)
    with scoring._run_lock(part), pytest.raises(ScoringError, match="another scoring run"):
        run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    st.close()


def test_duplicate_user_ids(model_dir, tmp_path):
    t = users_table(100)
    t = t.set_column(0, "user_id", pa.array(np.r_[np.arange(99), 5], pa.int64()))
    pq.write_table(t, tmp_path / "u.parquet")
    with pytest.raises(DataError, match=r"user ids must be unique; rows 0..99 repeat \[5\]"):
        run_scoring(model_dir, tmp_path / "u.parquet", tmp_path / "out", tmp_path / "s.db", CFG)


def test_duplicates_across_shards_fail_the_check(model_dir, tmp_path):
    t = users_table(100)
    t = t.set_column(0, "user_id", pa.array(np.r_[np.arange(99), 5], pa.int64()))
    pq.write_table(t, tmp_path / "u.parquet")
    with pytest.raises(StoreError, match="holds 99 users but 100 rows were scored; are some"):
        run_scoring(model_dir, tmp_path / "u.parquet", tmp_path / "out", tmp_path / "s.db",
                    {**CFG, "shard_rows": 50})
    with SQLiteStore(tmp_path / "s.db") as st:
        (v,) = st.versions()
        assert v.status == "failed" and "holds 99 users" in v.extra["error"]
        with pytest.raises(StoreError, match="status 'failed'"):
            st.switch(v.version)
        assert st.cleanup() == [v.version]  # failed versions are cleaned up


def test_a_bad_shard_marks_the_version_failed_and_a_rerun_resumes(model_dir, tmp_path):
    """Shard 1 of 2 holds an id twice: the run stops there and the version is failed
    (not loading); with the input fixed, a rerun (--restart: other input) ends ready."""
    t = users_table(100)
    bad = t.set_column(0, "user_id", pa.array(np.r_[np.arange(99), 60], pa.int64()))
    pq.write_table(bad, tmp_path / "u.parquet")
    st = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(DataError, match=r"rows 50..99 repeat \[60\]"):
        run_scoring(model_dir, tmp_path / "u.parquet", tmp_path / "out", st,
                    {**CFG, "shard_rows": 50})
    (v,) = st.versions()
    assert (v.status, st.current()) == ("failed", None)
    assert v.extra["error"].startswith("DataError: column 'user_id'")
    pq.write_table(t, tmp_path / "u.parquet")
    rep = run_scoring(model_dir, tmp_path / "u.parquet", tmp_path / "out", st,
                      {**CFG, "shard_rows": 50, "restart": True})
    assert st.info(rep.store_version).status == "ready" and st.current() == rep.store_version
    assert "error" not in st.info(rep.store_version).extra
    st.close()


def test_other_responses_are_not_switched_to_without_force(model_dir, users_path, tmp_path):
    st = SQLiteStore(tmp_path / "s.db")
    first = run_scoring(model_dir, users_path, tmp_path / "out", st, CFG).store_version
    other = ConstantModel(["watch_time", "likes"])
    cfg = {**CFG, "model_version": "other"}
    with pytest.raises(ScoringError) as e:
        run_scoring(other, users_path, tmp_path / "out", st, cfg)
    msg = " ".join(str(e.value).split())
    assert (f"current version {first!r} holds responses ['y0', 'y1'] and treatments "
            "['t1', 't2']; this model scores responses ['watch_time', 'likes'] and "
            "treatments ['t1', 't2']") in msg and "--force" in msg
    assert not list((tmp_path / "out").glob("*/model_version=other"))  # refused before work
    assert [v.version for v in st.versions()] == [first]
    treat = ConstantModel(["y0", "y1"], arms=("control", "t1", "t3"))
    with pytest.raises(ScoringError, match=r"treatments \['t1', 't3'\]"):
        run_scoring(treat, users_path, tmp_path / "out", st, cfg)

    rep = run_scoring(other, users_path, tmp_path / "out", st, {**cfg, "switch": False})
    assert st.current() == first and st.info(rep.store_version).status == "ready"
    rep = run_scoring(other, users_path, tmp_path / "out", st, {**cfg, "force": True})
    assert (rep.current, rep.previous) == (rep.store_version, first)
    st.close()


def test_a_current_version_changed_during_the_run_is_checked_again(model_dir, users_path,
                                                                   tmp_path, monkeypatch):
    """The current version is checked before any work and again right before the switch."""
    st = SQLiteStore(tmp_path / "s.db")
    cfg = {**CFG, "model_version": "same"}
    calls = {"n": 0}
    orig = scoring._check_switchable

    def meanwhile(store, schema, version):
        calls["n"] += 1
        if calls["n"] == 2:  # another job switched to other responses while this one ran
            run_scoring(ConstantModel(["a", "b"]), users_path, tmp_path / "out2", store,
                        {**CFG, "model_version": "ab", "cleanup": False})
        return orig(store, schema, version)

    monkeypatch.setattr(scoring, "_check_switchable", meanwhile)
    with pytest.raises(ScoringError, match=r"responses \['a', 'b'\]"):
        run_scoring(ConstantModel(["y0", "y1"]), users_path, tmp_path / "out", st, cfg)
    assert st.current() == "20240102-ab"
    assert st.info("20240102-same").status == "ready"  # complete: switchable by hand
    st.close()


def test_estimator_needs_a_model_version(model_dir, users_path, tmp_path):
    with pytest.raises(ValueError, match="config.model_version is required"):
        run_scoring(load_estimator(model_dir), users_path, tmp_path / "o", tmp_path / "s.db")


def test_string_ids_end_to_end(model_dir, tmp_path):
    t = users_table(40)
    t = t.set_column(0, "user_id", pa.array([f"u{i:03d}" for i in range(40)]))
    pq.write_table(t, tmp_path / "u.parquet")
    st = SQLiteStore(tmp_path / "s.db")
    rep = run_scoring(model_dir, tmp_path / "u.parquet", tmp_path / "out", st,
                      {**CFG, "shard_rows": 15})
    got = st.get(["u007", "nobody"])
    assert got.found.tolist() == [True, False] and rep.n_shards == 3
    st.close()
