"""Reliability under faults: steady load against a live ``hmum serve`` while its store and
its model are disturbed; every answer is checked against the known per-version, per-user
data.

Each scenario runs the real command (``hmum serve`` in a subprocess, 127.0.0.1 only,
bearer token on) loaded by ``--clients`` threads (90 % single decisions, 10 % batches of
8), for a fixed timeline, then stops:

A. SQLite store: switch v1 -> v2, roll back, switch to v3; the store file replaced by
   another one holding v4 (``os.replace``, like ``mv``: the old file's -wal and -shm
   stay, which the store refuses to pair with the new file) and 2 s later the old -wal
   and -shm removed (what its /readyz reason asks); the file deleted (with its -wal and
   -shm), then a new one written
   with v5 (what ``hmum score`` does after a delete); the model artifact made unreadable
   while serving (weights moved away, the .onnx truncated: root ignores permission
   bits) -- a second ``hmum serve`` started on it must exit with the reason -- then
   restored.
B. Redis store (a throwaway ``redis-server`` on a loopback port; skipped when the binary
   is absent): switch, roll back, Redis paused (SIGSTOP) for 2 s, killed (SIGKILL),
   restarted on the same port and loaded again.

Every version holds seeded random delta (K = 2, R = 2) per user, so an answer can only
match the user and version it names: for a found user, phi must equal
delta[version][user] @ weights (the answer's own weights); a user the version lacks
must get phi null and reason unknown_user; a degraded answer must enable nothing; a
batch's decisions must keep their requests' order. An answer naming a version that was
not current at any time between ``--allowed-lag`` seconds before it was sent and when it
came back (a switch counts from the start of its write) is stale (the pointer is
cached ``pointer_ttl_s`` = 0.5 s and the SQLite file identity is checked every 1 s).
The report: requests, non-2xx by cause, degraded answers by reason, p50/p99 (client
side, Python httpx), the checks, and for each switch the longest time the previous
version was still answered.

Usage: python benchmarks/bench_reliability.py [--clients 3] [--json out.json]
(about 2 minutes; every loop is bounded by time and count)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from hmum.data.simulator import SimulatorConfig, simulate_requests
from hmum.models.value_weight import ValueWeightEstimator
from hmum.serving.store import (
    RedisStore,
    SQLiteStore,
    VersionInfo,
    free_loopback_port,
    stop_process,
)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "reliability-bench-token"
ARMS = ["control", "t1", "t2"]
N_USERS = 2000  # ids 1..2000 are stored; 2001..2100 never are
MAX_REQUESTS = 200_000  # per scenario, whatever the timeline says


# --- the data: seeded delta per (version, user) --------------------------------------------


def version_users(version: str) -> np.ndarray:
    """Users stored in ``version``: all 2000, except v2 lacks 1801..2000."""
    n = 1800 if version == "v2" else N_USERS
    return np.arange(1, n + 1, dtype=np.int64)


def version_delta(version: str) -> np.ndarray:
    """delta (N_USERS + 1, K, R) of ``version`` indexed by user id (row 0 unused)."""
    seed = 1000 + sum(ord(c) * 31**i for i, c in enumerate(version))
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (N_USERS + 1, 2, 2)).astype(np.float32)


def load_version(store, version: str, responses, switch: bool = True) -> None:
    users = version_users(version)
    store.create_version(VersionInfo(version=version, K=2, R=2, arms=ARMS,
                                     responses=list(responses)), expected_rows=len(users))
    store.put(version, users, version_delta(version)[users])
    store.mark_ready(version, len(users))
    if switch:
        store.switch(version)


# --- the model and the requests -----------------------------------------------------------


def build_model(root: Path):
    sim = SimulatorConfig(n_users=300, n_requests=800, n_candidates=20, n_recent=8,
                          n_exposed=5, n_items=500, seed=3)
    table = simulate_requests(sim)
    est = ValueWeightEstimator(
        model={"embed_dim": 8, "n_experts": 2, "expert_sizes": [16, 8], "tower_sizes": [8]},
        trainer={"max_epochs": 1, "seed": 0, "batch_size": 256}).fit(table)
    est.save(root / "vw")
    est.export_onnx(root / "vw.onnx")
    return est, table


def request_items(table, n: int = 64) -> list[dict]:
    """n (candidates, recent) mappings of real simulated requests."""
    out = []
    for row in range(n):
        d = {"candidates": {}, "recent": {}}
        for c in table.column_names:
            if c.startswith("cand_") and not c.startswith("cand_score_"):
                d["candidates"][c[5:]] = table.column(c)[row].as_py()
            elif c.startswith("recent_"):
                d["recent"][c[7:]] = table.column(c)[row].as_py()
        out.append(d)
    return out


# --- the server and Redis ------------------------------------------------------------------


def env_for_server() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMUM_")}
    env.update({"PYTHONPATH": str(ROOT / "src"), "HMUM_TOKEN": TOKEN,
                "HMUM_STORE_TIMEOUT_MS": "20",  # shared busy cores: 5 ms misses too often
                "HMUM_BREAKER_FAILURES": "3", "HMUM_BREAKER_COOLDOWN_S": "0.5",
                "HMUM_POINTER_TTL_S": "0.5", "HMUM_VERIFY_SAMPLES": "16"})
    return env


def serve_cmd(model: Path, store_url: str, port: int) -> list[str]:
    return [sys.executable, "-c", "from hmum.cli.app import app; app(prog_name='hmum')", "serve",
            "--model", str(model), "--store", store_url, "--port", str(port)]


@contextlib.contextmanager
def live_server(model: Path, store_url: str, log: Path):
    import httpx

    port = free_loopback_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(serve_cmd(model, store_url, port), env=env_for_server(),
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # bounded: 60 s for imports and the model checks
            with contextlib.suppress(httpx.TransportError):
                r = httpx.get(base + "/readyz", timeout=1.0,
                              headers={"authorization": f"Bearer {TOKEN}"})
                if r.status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"hmum serve exited: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"hmum serve never became ready: {log.read_text()[-2000:]}")
        yield base
    finally:
        stop_process(proc, timeout=10)


class RedisProcess:
    """redis-server on a fixed loopback port: paused, killed and restarted at will."""

    def __init__(self, binary: str) -> None:
        self.binary, self.port = binary, free_loopback_port()
        self.dir = tempfile.mkdtemp(prefix="hmum-rel-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.dir], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        for _ in range(100):  # bounded: ~5 s
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(self.url, socket_timeout=0.2).ping():
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- load and checks -----------------------------------------------------------------------


class Load:
    """``clients`` threads posting decisions until stopped; every answer recorded as
    (sent, received, kind, status, user ids, answer json or None)."""

    def __init__(self, base: str, items: list[dict], clients: int, seed: int = 0) -> None:
        self.base, self.items, self.clients = base, items, clients
        self.stop = threading.Event()
        self.records: list[tuple] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(seed + i,), daemon=True)
                         for i in range(clients)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, seed: int) -> None:
        import httpx

        rng = np.random.default_rng(seed)
        headers = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=self.base, timeout=10.0, headers=headers) as c:
            while not self.stop.is_set() and len(self.records) < MAX_REQUESTS:
                batch = rng.random() < 0.1
                users = [int(u) for u in rng.integers(1, N_USERS + 101, 8 if batch else 1)]
                reqs = [{"user_id": u, **self.items[int(rng.integers(len(self.items)))]}
                        for u in users]
                t0 = time.monotonic()
                try:
                    if batch:
                        r = c.post("/v1/decide/batch", json={"requests": reqs})
                    else:
                        r = c.post("/v1/decide", json=reqs[0])
                    status, body = r.status_code, r.json()
                except (httpx.HTTPError, ValueError) as e:
                    status, body = f"transport:{type(e).__name__}", None
                t1 = time.monotonic()
                with self._lock:
                    self.records.append((t0, t1, "batch" if batch else "one", status, users,
                                         body))


class Timeline:
    """Which version was current when (recorded by the fault driver). A switch becomes
    visible at some instant while its write runs: each event keeps when the write began
    (``begin``, set by run_timeline) and when it returned."""

    def __init__(self, version: str | None) -> None:
        now = time.monotonic()
        self.events: list[tuple[float, float, str | None, str]] = [(now, now, version,
                                                                    "start")]
        self.begin = now

    def set(self, version: str | None, what: str) -> None:
        self.events.append((self.begin, time.monotonic(), version, what))

    def current_during(self, t0: float, t1: float) -> set:
        """Versions that may have been current at some time in [t0, t1]: from the
        start of their switch to the end of the next one."""
        out = set()
        for i, (began, _, v, _) in enumerate(self.events):
            t_next = self.events[i + 1][1] if i + 1 < len(self.events) else float("inf")
            if began <= t1 and t_next >= t0:
                out.add(v)
        return out


def check(records: list[tuple], timeline: Timeline, allowed_lag: float,
          phases: list[tuple[float, str]]) -> dict:
    """Verify every answer (see the module docstring) and summarise."""
    tables = {}
    members = {}
    statuses, degraded, per_phase = Counter(), Counter(), {}
    bad: Counter = Counter()
    examples: list[str] = []
    lat = []
    verified = unknown_ok = 0
    answered: list[tuple[float, str]] = []  # (sent, store_version) of found-user answers

    def phase_of(t: float) -> str:
        name = phases[0][1]
        for ts, n in phases:
            if t >= ts:
                name = n
        return name

    def wrong(kind: str, msg: str) -> None:
        bad[kind] += 1
        if len(examples) < 5:
            examples.append(msg)

    t_start = timeline.events[0][1]
    for t0, t1, kind, status, users, body in records:
        ph = per_phase.setdefault(phase_of(t0), Counter())
        ph["requests"] += 1
        if status != 200:
            cause = f"{status}: {(body or {}).get('message', '')[:60]}"
            statuses[cause] += 1
            ph[f"non_2xx {status}"] += 1
            continue
        lat.append(t1 - t0)
        decisions = body["decisions"] if kind == "batch" else [body]
        if len(decisions) != len(users):
            wrong("batch_length", f"{len(users)} requests, {len(decisions)} decisions")
            continue
        for u, d in zip(users, decisions, strict=True):
            if d["user_id"] != u:
                wrong("other_user", f"asked for user {u}, answer names {d['user_id']}")
                continue
            if d["degraded"]:
                degraded[d["reason"]] += 1
                ph[f"degraded {d['reason']}"] += 1
                if d["enabled"] or d["phi"] is not None:
                    wrong("degraded_with_treatment", json.dumps(d)[:200])
                continue
            v = d["store_version"]
            if v not in timeline.current_during(t0 - allowed_lag, t1):
                wrong("stale_version", f"user {u} ({kind}, sent at {t0 - t_start:.2f} s, "
                                       f"answered in {t1 - t0:.3f} s, phase {phase_of(t0)!r}):"
                                       f" version {v} not current within {allowed_lag} s")
            if v not in tables:
                tables[v] = version_delta(v)
                members[v] = set(version_users(v).tolist())
            w = np.array(list(d["weights"].values()), dtype=np.float64)
            if u not in members[v]:
                if d["phi"] is not None or d["reason"] != "unknown_user":
                    wrong("uplift_for_absent_user", f"user {u} is not in {v}: {d['phi']}")
                else:
                    unknown_ok += 1
                continue
            if d["phi"] is None:
                wrong("missing_uplift", f"user {u} is in {v}, answer {d['reason']}")
                continue
            want = tables[v][u].astype(np.float64) @ w
            got = np.array([d["phi"]["t1"], d["phi"]["t2"]])
            if not np.allclose(got, want, atol=1e-4):
                wrong("wrong_uplift", f"user {u} version {v}: phi {got}, expected {want}")
                continue
            verified += 1
            answered.append((t0, v))
    lag = {}
    events = timeline.events
    for i, (_, t, v, what) in enumerate(events[1:], start=1):
        if not what.startswith(("switch", "rollback", "replace", "new file", "reload")):
            continue
        t_next = events[i + 1][0] if i + 1 < len(events) else float("inf")
        before = [tv for tv in answered if tv[0] < t]
        prev = before[-1][1] if before else None
        after_old = [s for s, ver in answered if t <= s < t_next and ver == prev and ver != v]
        lag[what] = round(max(after_old) - t, 3) if after_old else 0.0
    a = np.array(lat) * 1e3 if lat else np.array([np.nan])
    return {"requests": len(records), "answered_200": len(lat),
            "non_2xx_by_cause": dict(statuses.most_common()),
            "degraded_by_reason": dict(degraded.most_common()),
            "decisions_verified": verified, "unknown_users_verified": unknown_ok,
            "violations": dict(bad), "violation_examples": examples,
            "timeline": [(round(t - t_start, 3), v, what) for _, t, v, what in timeline.events],
            "latency_ms": {"p50": round(float(np.percentile(a, 50)), 2),
                           "p99": round(float(np.percentile(a, 99)), 2),
                           "max": round(float(np.max(a)), 1)},
            "previous_version_answered_for_s_after": lag,
            "per_phase": {k: dict(v) for k, v in per_phase.items()}}


def run_timeline(steps: list[tuple[float, str, callable]], t_end: float,
                 phases: list[tuple[float, str]], timeline: Timeline) -> None:
    """Run each step's action at its time (seconds from now), then wait until t_end."""
    t_start = time.monotonic()
    for at, name, action in steps:
        time.sleep(max(0.0, t_start + at - time.monotonic()))
        phases.append((time.monotonic(), name))
        print(f"  t={time.monotonic() - t_start:5.1f}s {name}", flush=True)
        timeline.begin = time.monotonic()
        action()
    time.sleep(max(0.0, t_start + t_end - time.monotonic()))


# --- scenarios -----------------------------------------------------------------------------


def scenario_sqlite(root: Path, est, items, args) -> dict:
    path = root / "uplift.sqlite"
    st = SQLiteStore(path, create=True)
    for v in ("v1", "v2", "v3"):
        load_version(st, v, est.responses_, switch=(v == "v1"))
    st.close()
    timeline = Timeline("v1")
    phases: list[tuple[float, str]] = [(time.monotonic(), "steady v1")]
    out: dict = {}

    def switch(v: str):
        def go():
            with contextlib.closing(SQLiteStore(path)) as s:
                s.switch(v)
            timeline.set(v, f"switch {v}")
        return go

    def rollback():
        with contextlib.closing(SQLiteStore(path)) as s:
            cur, _ = s.rollback()  # the new (current, previous)
        timeline.set(cur, "rollback")

    def replace_file():
        new = root / "next.sqlite"
        with contextlib.closing(SQLiteStore(new, create=True)) as s:
            load_version(s, "v4", est.responses_)
        os.replace(new, path)  # a plain `mv`: the old file's -wal and -shm stay beside it
        timeline.set("v4", "replace file (v4)")

    def drop_old_wal():
        # what the store's /readyz reason asks for: the old file's -wal and -shm removed
        for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)
        timeline.set("v4", "old -wal/-shm removed")

    def delete_file():
        # with its -wal and -shm, as the store asks (a new file beside an orphan WAL is
        # refused); the service still holds the deleted ones open
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)
        timeline.set(None, "delete file")

    def new_file():
        with contextlib.closing(SQLiteStore(path, create=True)) as s:
            load_version(s, "v5", est.responses_)
        timeline.set("v5", "new file (v5)")

    moved = root / "vw.moved"
    onnx_bytes = (root / "vw.onnx").read_bytes()

    def break_model():
        (root / "vw").rename(moved)
        (root / "vw.onnx").write_bytes(onnx_bytes[:100])
        # a new `hmum serve` on the broken artifact must refuse, saying why
        port = free_loopback_port()
        p = subprocess.run(serve_cmd(root / "vw", f"sqlite:///{path}", port),
                           env=env_for_server(), capture_output=True, text=True, timeout=120)
        out["restart_on_broken_model"] = {"exit_code": p.returncode,
                                          "stderr": " ".join(p.stderr.split())[:300]}

    def restore_model():
        moved.rename(root / "vw")
        (root / "vw.onnx").write_bytes(onnx_bytes)

    steps = [(4, "switch v2", switch("v2")), (8, "rollback", rollback),
             (12, "switch v3", switch("v3")), (16, "replace file", replace_file),
             (18, "old -wal/-shm removed", drop_old_wal), (22, "delete file", delete_file),
             (25, "new file", new_file),
             (30, "model unreadable", break_model), (36, "model restored", restore_model)]
    with live_server(root / "vw", f"sqlite:///{path}", root / "serve-sqlite.log") as base:
        with Load(base, items, args.clients) as load:
            run_timeline(steps, 40, phases, timeline)
        records = load.records
    out.update(check(records, timeline, args.allowed_lag, phases))
    return out


def scenario_redis(root: Path, est, items, args, binary: str) -> dict:
    rp = RedisProcess(binary)
    rp.start()
    try:
        with contextlib.closing(RedisStore(rp.url, pointer_ttl=0.0)) as st:
            for v in ("v1", "v2"):
                load_version(st, v, est.responses_, switch=(v == "v1"))
        timeline = Timeline("v1")
        phases: list[tuple[float, str]] = [(time.monotonic(), "steady v1")]

        def switch_v2():
            with contextlib.closing(RedisStore(rp.url)) as s:
                s.switch("v2")
            timeline.set("v2", "switch v2")

        def rollback():
            with contextlib.closing(RedisStore(rp.url)) as s:
                cur, _ = s.rollback()  # the new (current, previous)
            timeline.set(cur, "rollback")

        def reload():
            rp.start()  # same port, empty: the data went with the process
            with contextlib.closing(RedisStore(rp.url, pointer_ttl=0.0)) as s:
                load_version(s, "v6", est.responses_)
            timeline.set("v6", "reload v6 after restart")

        steps = [(4, "switch v2", switch_v2), (8, "rollback", rollback),
                 (11, "redis paused", lambda: rp.signal(signal.SIGSTOP)),
                 (13, "redis resumed", lambda: rp.signal(signal.SIGCONT)),
                 (17, "redis killed", rp.kill), (19, "redis restarted", reload)]
        with live_server(root / "vw", rp.url, root / "serve-redis.log") as base:
            with Load(base, items, args.clients, seed=100) as load:
                run_timeline(steps, 26, phases, timeline)
            records = load.records
        return check(records, timeline, args.allowed_lag, phases)
    finally:
        rp.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=3, help="load threads")
    ap.add_argument("--allowed-lag", type=float, default=2.0,
                    help="seconds an answer may lag a switch before it counts as stale")
    ap.add_argument("--skip-redis", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    res: dict = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="hmum-bench-rel-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        est, table = build_model(root)
        items = request_items(table)
        print(f"model fitted and exported in {time.perf_counter() - t0:.1f}s", flush=True)
        print("scenario A: SQLite store", flush=True)
        res["sqlite"] = scenario_sqlite(root, est, items, args)
        print(json.dumps(res["sqlite"], indent=1), flush=True)
        binary = shutil.which("redis-server")
        if args.skip_redis or binary is None:
            res["redis"] = "skipped: " + ("--skip-redis" if args.skip_redis else
                                          "redis-server not found (apt-get install "
                                          "redis-server)")
            print(res["redis"], flush=True)
        else:
            print("scenario B: Redis store", flush=True)
            res["redis"] = scenario_redis(root, est, items, args, binary)
            print(json.dumps(res["redis"], indent=1), flush=True)
    res["load_average_at_end"] = os.getloadavg()
    violations = sum(sum(r["violations"].values()) for r in (res["sqlite"], res["redis"])
                     if isinstance(r, dict))
    res["violations_total"] = violations
    print(f"violations (another user's or a stale version's uplift, wrong answers): "
          f"{violations}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
