"""The Ray runner against the local runner: same files (bytes), same store, same resume.

One local Ray cluster (num_cpus=2) serves the whole module: Ray's start-up is slow.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hmum.exceptions import DataError
from hmum.serving import scoring
from hmum.serving.scoring import StoreSink, run_scoring
from hmum.serving.store import SQLiteStore
from tests.cli_output import flat
from tests.serving.conftest import N_USERS, users_table
from tests.serving.helpers import CFG, Boom, app, assert_same, fail_on, snapshot

ray = pytest.importorskip("ray")
from hmum.serving.ray_runner import (  # noqa: E402
    ShardScorer,
    import_ray,
    local_temp_dir,
    run_scoring_ray,
    shard_result_of,
)


@pytest.fixture(scope="module")
def ray_address():
    """A local cluster for the module; yields its address (subprocess drivers join it)."""
    if ray.is_initialized():
        pytest.fail("a Ray session is already open in this process")
    temp = local_temp_dir()  # a long TMPDIR would overflow Ray's socket paths
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, object_store_memory=256 * 1024**2,
             **({"_temp_dir": temp} if temp else {}))
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


# --- the engine end to end --------------------------------------------------------------


def test_ray_output_is_identical_to_the_local_runner(ray_address, reference, model_dir,
                                                     users_path, tmp_path):
    st = SQLiteStore(tmp_path / "s.sqlite")
    rep = run_scoring_ray(model_dir, users_path, tmp_path / "out", st, CFG, workers=2)
    assert (rep.engine, rep.n_shards, rep.shards_scored, rep.shards_loaded) == ("ray", 6, 6, 6)
    assert rep.store_version == reference[0].store_version
    # every part file, marker, _run.json and _SUCCESS byte for byte; the store's content
    assert_same(snapshot(rep.partition, st, rep.store_version), reference[1])
    # the shards were computed by actors, not by this (driver) process
    assert 1 <= len(rep.workers) <= 2 and os.getpid() not in {w["pid"] for w in rep.workers}
    assert sum(w["rows"] for w in rep.workers) == N_USERS
    assert all(w["peak_rss_mib"] > 0 for w in rep.workers)
    # a rerun finds everything done and starts no actor
    again = run_scoring_ray(model_dir, users_path, tmp_path / "out", st, CFG, workers=2)
    assert (again.shards_scored, again.shards_loaded, again.workers) == (0, 0, [])
    st.close()


def test_ray_scores_the_members_spread_like_the_local_runner(ray_address, users_path,
                                                            tmp_path):
    # a decision rule with a lower bound of phi: both runners store the members' spread
    from hmum.decision.rules import DecisionRule
    from tests.serving.conftest import train_model

    est = train_model(tmp_path / "m", branches_per_treatment=2)
    rule = DecisionRule(est.schema.response_names, est.schema.arms[1:],
                        bound={"level": 0.9, "source": "branches"})
    cfg = {**CFG, "decision": rule.to_dict()}
    local, remote = SQLiteStore(tmp_path / "a.sqlite"), SQLiteStore(tmp_path / "b.sqlite")
    a = run_scoring(tmp_path / "m", users_path, tmp_path / "oa", local, cfg)
    b = run_scoring_ray(tmp_path / "m", users_path, tmp_path / "ob", remote, cfg, workers=2)
    assert_same(snapshot(a.partition, local, a.store_version),
                snapshot(b.partition, remote, b.store_version))
    ids = local.dump(a.store_version)[0]
    sa, sb = local.get(ids), remote.get(ids)
    assert sa.members == sb.members == 2 and sa.found.all()
    np.testing.assert_array_equal(sa.spread, sb.spread)
    local.close()
    remote.close()


def test_cli_ray_resumes_a_broken_local_run(ray_address, reference, model_dir, users_path,
                                            tmp_path, monkeypatch):
    """Partial state of every kind, left by the local runner; ``hmum score --engine ray``
    finishes it (store load throttled) with exactly the local runner's output."""
    st = SQLiteStore(tmp_path / "s.sqlite")
    with monkeypatch.context() as m:  # shards 0, 1 loaded; 2 recorded, not loaded; 3-5 none
        fail_on(m, SQLiteStore, "_put", 3)
        with pytest.raises(Boom):
            run_scoring(model_dir, users_path, tmp_path / "out", st, CFG)
    part = next((tmp_path / "out").glob("date=*/model_version=*"))
    (part / "part-00001.parquet").unlink()  # record lost, store still has shard 1
    (part / "_part-00004.json").write_text("{not json")  # a torn marker without its part
    (part / ".part-00005.parquet.tmp").write_bytes(b"half a file")  # a dead writer's temp
    assert st.loaded_shards(reference[0].store_version) == {0: 500, 1: 500}
    args = ["score", "--model", model_dir, "--input", users_path, "--out", tmp_path / "out",
            "--store", tmp_path / "s.sqlite", "--shard-rows", 500, "--date", "2024-01-02",
            "--engine", "ray", "--workers", 2, "--store-max-rows-per-s", 10_000]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    # scored: 1, 3, 4, 5; loaded: 2 (from its record), 3, 4, 5
    assert "scored 3,000 users in 6 shard(s) (4 scored, 4 loaded now)" in flat(r)
    assert "ray workers: pid" in flat(r) and "peak RSS" in flat(r)
    assert_same(snapshot(part, st, reference[0].store_version), reference[1])
    st.close()


KILL_SCRIPT = """
import sys, time
import datetime as dt
from hmum.serving.ray_runner import run_scoring_ray
def progress(stage, done, total):
    time.sleep(0.5)  # slow commits down so that the parent kills between shards' work
run_scoring_ray(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4],
                {"shard_rows": 500, "date": dt.date(2024, 1, 2), "sample_reads": 64},
                workers=2, address=sys.argv[5], progress=progress)
"""


def test_killed_ray_job_then_rerun_is_identical(ray_address, reference, model_dir, users_path,
                                                tmp_path):
    """SIGKILL a Ray scoring driver after 2 shards; run it again: the local runner's output."""
    out, db = tmp_path / "out", tmp_path / "s.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with open(tmp_path / "driver.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(model_dir),
                                 str(users_path), str(out), str(db), ray_address],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        t_end = time.monotonic() + 120
        while time.monotonic() < t_end and proc.poll() is None:
            if len(list(out.glob("date=*/model_version=*/_part-*.json"))) >= 2:
                break
            time.sleep(0.05)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert alive, (tmp_path / "driver.log").read_text()[-3000:]
    done = list(out.glob("date=*/model_version=*/_part-*.json"))
    assert 2 <= len(done) < 6
    st = SQLiteStore(db)
    assert st.versions()[0].status == "loading" and st.current() is None
    rep = run_scoring_ray(model_dir, users_path, out, st, CFG, workers=2)
    assert rep.shards_scored == 6 - len(done)
    assert_same(snapshot(rep.partition, st, rep.store_version), reference[1])
    st.close()


# --- pieces (no cluster needed) ---------------------------------------------------------


def test_shard_scorer_returns_the_local_bytes_and_its_data_errors(model_dir, tmp_path):
    """The map_batches class, called as Ray calls it: the bytes of the local runner's
    ``score_shard``; a DataError travels as a row and is raised again, with its type."""
    t = users_table(100)
    t = t.set_column(0, "user_id", pa.array(np.r_[np.arange(99), 60], pa.int64()))
    pq.write_table(t, tmp_path / "u.parquet", row_group_size=30)
    job = scoring.prepare_job(model_dir, tmp_path / "u.parquet", tmp_path / "out",
                              scoring.as_config({**CFG, "shard_rows": 50}))
    scorer = ShardScorer(model_dir, job.plan, "user_id", job.batch_size, threads=1)
    out = scorer(pa.table({"shard": [0], "start": [0], "stop": [50]}))
    res = shard_result_of(out.to_pylist()[0])
    assert res.data == job.score(0).data and (res.shard, res.start, res.rows) == (0, 0, 50)
    assert res.worker["pid"] == os.getpid() and set(res.timings) == {"read", "score", "record"}
    bad = scorer(pa.table({"shard": [1], "start": [50], "stop": [100]}))
    with pytest.raises(DataError, match=r"user ids must be unique; rows 50..99 repeat \[60\]"):
        shard_result_of(bad.to_pylist()[0])


def test_cli_engine_errors(model_dir, users_path, tmp_path):
    args = ["score", "--model", model_dir, "--input", users_path, "--out", tmp_path / "out",
            "--store", tmp_path / "s.sqlite"]
    r = CliRunner().invoke(app, [str(a) for a in [*args, "--engine", "spark"]])
    assert r.exit_code == 2 and "spark" in flat(r)
    r = CliRunner().invoke(app, [str(a) for a in [*args, "--ray-address", "x"]])
    assert r.exit_code == 2 and "--ray-address needs --engine ray" in flat(r)
    r = CliRunner().invoke(app, [str(a) for a in [*args, "--engine", "ray", "--workers", 0]])
    assert r.exit_code == 2 and "--workers: expected at least 1, got 0" in flat(r)


def test_missing_ray_names_the_extra(monkeypatch, model_dir, users_path, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'hmum\[ray\]'"):
        import_ray()
    with pytest.raises(ImportError, match=r"Ray Data, which is not installed"):
        run_scoring_ray(model_dir, users_path, tmp_path / "out", tmp_path / "s.db", CFG)
    assert not (tmp_path / "out").exists()  # refused before any work
    r = CliRunner().invoke(app, [str(a) for a in [
        "score", "--model", model_dir, "--input", users_path, "--out", tmp_path / "out",
        "--store", tmp_path / "s.db", "--engine", "ray"]])
    assert r.exit_code == 2 and "hmum[ray]" in flat(r)


def test_bad_worker_count(model_dir, users_path, tmp_path):
    with pytest.raises(ValueError, match="workers: expected at least 1 Ray worker, received 0"):
        run_scoring_ray(model_dir, users_path, tmp_path / "out", tmp_path / "s.db", CFG,
                        workers=0)


# --- the throttled sink -----------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t, self.sleeps = 0.0, []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(round(s, 9))
        self.t += s


class FakeStore:
    def __init__(self, clock, put_seconds: float = 0.0):
        self.clock, self.put_seconds, self.puts = clock, put_seconds, []

    def put(self, version, ids, delta, *, spread=None, shard=None):
        self.puts.append((version, ids.tolist(), delta.shape, shard, self.clock.t))
        self.clock.t += self.put_seconds


def test_sink_paces_whole_shards():
    clock = Clock()
    st = FakeStore(clock)
    sink = StoreSink(st, "v1", max_rows_per_s=1000, clock=clock, sleep=clock.sleep)
    for shard, n in [(0, 250), (7, 100), (2, 50)]:
        sink.load(shard, np.arange(n), np.zeros((n, 2, 3), np.float32))
    # 250 rows at 1000 rows/s hold the next shard back 0.25 s, 100 rows 0.1 s
    assert [(p[3], len(p[1]), p[4]) for p in st.puts] == [(0, 250, 0.0), (7, 100, 0.25),
                                                          (2, 50, 0.35)]
    assert clock.sleeps == [0.25, 0.1] and sink.waited == pytest.approx(0.35)
    assert sink.rows == 400 and st.puts[0][2] == (250, 2, 3)


def test_sink_does_not_wait_for_a_slow_store_nor_without_a_limit():
    clock = Clock()
    st = FakeStore(clock, put_seconds=0.5)  # 100 rows per 0.5 s: slower than the limit
    sink = StoreSink(st, "v1", max_rows_per_s=1000, clock=clock, sleep=clock.sleep)
    for shard in range(3):
        sink.load(shard, np.arange(100), np.zeros((100, 1, 1), np.float32))
    assert clock.sleeps == [] and [p[4] for p in st.puts] == [0.0, 0.5, 1.0]
    free = FakeStore(clock)
    StoreSink(free, "v1", clock=clock, sleep=clock.sleep).load(
        3, np.arange(10**5), np.zeros((10**5, 1, 1), np.float32))
    assert [(len(p[1]), p[3]) for p in free.puts] == [(10**5, 3)] and clock.sleeps == []


def test_sink_rejects_a_bad_rate():
    with pytest.raises(ValueError, match="max_rows_per_s: expected a positive number"):
        StoreSink(FakeStore(Clock()), "v1", max_rows_per_s=0)


def test_local_run_reports_its_own_process(reference):
    rep = reference[0]
    assert rep.engine == "local"
    assert [(w["pid"], w["shards"], w["rows"]) for w in rep.workers] == [
        (os.getpid(), 6, N_USERS)]


def test_a_long_tmpdir_moves_the_local_ray_session_to_a_short_folder(monkeypatch):
    """Ray's sockets under a long TMPDIR overflow AF_UNIX's 107 bytes (a newcomer's
    `make test` failed so): a local cluster then starts in a short folder."""
    monkeypatch.setattr("tempfile.gettempdir", lambda: "/tmp/" + "x" * 60)
    short = local_temp_dir()
    assert short is not None and len(short) + 80 <= 107 and os.path.isdir(short)
    monkeypatch.setattr("tempfile.gettempdir", lambda: "/tmp")
    assert local_temp_dir() is None
