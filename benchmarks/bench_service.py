"""Decision-service benchmark: in-process decision latency and HTTP load with wrk.

Setup: a value-weight model with the default network (ValueWeightConfig defaults:
d = 32, 4 experts [64, 32]) fitted for one epoch on simulated requests (L = 50
candidates, Lr = 20 recent items, 5 item fields), exported to ONNX; ``--users``
users with delta (K = 2, R = 2) in Redis (a throwaway ``redis-server`` on a free
127.0.0.1 port, or ``--redis-url``) or SQLite (``--store sqlite``).

1. In process (``DecisionService``, no HTTP): per call p50 / p99 / max of
   (a) the ONNX value weights alone, (b) the store read alone, (c) the whole
   decision (JSON parse + validation + ONNX + store + phi + JSON encoding), and
   (d) the same with an in-memory store (the decision logic without store I/O),
   over ``--calls`` calls with rotating users.
2. HTTP: one uvicorn process (``--workers``) on 127.0.0.1, loaded by ``wrk``
   (Debian: ``apt-get install wrk``) with a Lua script that POSTs real request
   bodies, for ``--duration`` seconds per point: p50 / p99 and requests/s at 1 and
   16 connections, then a sweep over connections to find the highest rate with
   p99 <= 10 ms. Everything (server, Redis, wrk) shares the machine's cores.

3. ``--mode mixed`` (issue 13, item 10): small requests (``wrk``, ``--connections``)
   while one client keeps sending the largest valid batch, 256 requests x 512
   candidates x 512 recent items (~15 MB of JSON, ``max_batch_items`` raised to hold
   it), one after another with ``--batch-interval`` seconds between them. Three
   phases of ``--duration`` seconds: small requests alone; with the batches; with the
   batches on a server whose batch path is made blocking again (no slices, model on
   the event loop: what the service did before). Also, in process: the cost of a
   thread hand-off (``anyio.to_thread``) next to a small request's decision, which is
   why small requests stay on the event loop.

4. ``--mode rules`` (issue 16, item 5; in process, no wrk): the cost of the decision
   rule a store version carries. Three versions of the same users side by side: no
   rule (phi > sigma), a frozen point rule (per-treatment sigma, guardrail bonus), and
   a rule that switches on the lower bound of phi from the members' spread stored
   beside delta (``--members`` M; S = 10 more float32 per user for K = R = 2). Calls
   rotate over the three in a rotating order, one request each (p50 / p99), then
   batches of ``--batch`` requests (per decision); with the store's bytes per user.

Usage: python benchmarks/bench_service.py [--duration 5] [--users 100000]
       [--workers 1] [--store redis|sqlite] [--json out.json]
       python benchmarks/bench_service.py --mode mixed [--duration 8] [--store sqlite]
       python benchmarks/bench_service.py --mode rules --store sqlite [--users 100000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from hmum.data.simulator import SimulatorConfig, simulate_requests
from hmum.models.value_weight import ValueWeightEstimator
from hmum.serving.config import ServiceConfig
from hmum.serving.service import DecideRequest, DecisionService, _dumps
from hmum.serving.store import (
    Lookup,
    SQLiteStore,
    VersionInfo,
    free_loopback_port,
    local_redis_server,
    open_store,
    stop_process,
)

ROOT = Path(__file__).resolve().parents[1]
UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def build(root: Path, n_cand: int, n_recent: int):
    sim = SimulatorConfig(n_users=2000, n_requests=6000, n_candidates=n_cand,
                          n_recent=n_recent, n_exposed=8, n_items=5000, seed=1)
    table = simulate_requests(sim)
    est = ValueWeightEstimator(trainer={"max_epochs": 1, "seed": 0}).fit(table)
    est.save(root / "vw")
    est.export_onnx(root / "vw.onnx")
    return est, table


def bodies(table, user_ids, n: int) -> list[bytes]:
    out = []
    cols = [c for c in table.column_names if c.startswith(("cand_", "recent_"))
            and not c.startswith("cand_score_")]
    for i in range(n):
        b = {"user_id": int(user_ids[i % len(user_ids)]), "candidates": {}, "recent": {}}
        for c in cols:
            key, f = ("candidates", c[5:]) if c.startswith("cand_") else ("recent", c[7:])
            b[key][f] = table.column(c)[i % table.num_rows].as_py()
        out.append(_dumps(b))
    return out


def fill(url: str, users: int, responses) -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = rng.choice(50 * users, users, replace=False).astype(np.int64)
    st = open_store(url, read_timeout=None)
    st.create_version(VersionInfo(version="bench", K=2, R=2, arms=["control", "t1", "t2"],
                                  responses=list(responses)), expected_rows=users)
    delta = rng.normal(0, 0.05, (users, 2, 2)).astype(np.float32)
    for s in range(0, users, 50_000):
        st.put("bench", ids[s:s + 50_000], delta[s:s + 50_000])
    st.mark_ready("bench", users)
    st.switch("bench")
    st.close()
    return ids


def pct(x: list[float]) -> dict:
    a = np.asarray(x) * 1e6
    return {"p50_us": round(float(np.percentile(a, 50)), 1),
            "p99_us": round(float(np.percentile(a, 99)), 1), "max_us": round(float(a.max()), 1)}


class MemoryStore:
    """A store without I/O (every user found, delta fixed): isolates the decision logic."""

    def __init__(self, info: VersionInfo) -> None:
        self._info = info
        self._lookup = Lookup(np.full((1, info.K, info.R), 0.01, np.float32),
                              np.ones(1, bool), info.version)

    def get(self, ids, *, timeout=None, version=None) -> Lookup:
        return self._lookup

    def info(self, version: str) -> VersionInfo:
        return self._info


def in_process(cfg: ServiceConfig, reqs: list[bytes], calls: int) -> dict:
    svc = DecisionService(cfg)
    if svc.model is None:
        raise RuntimeError(svc.model_error)
    mem = DecisionService(cfg, store=MemoryStore(VersionInfo(
        version="mem", K=2, R=2, arms=["control", "t1", "t2"], responses=svc.model.responses)))
    items = [svc.prepare(DecideRequest.model_validate_json(b)) for b in reqs]
    t_onnx, t_store, t_all, t_mem = [], [], [], []
    for i in range(calls + 200):  # the first 200: warm-up
        uid, c, r = items[i % len(items)]
        t0 = time.perf_counter()
        svc.model.session.weights(c[None], r[None])
        t1 = time.perf_counter()
        svc.lookup([uid])
        t2 = time.perf_counter()
        _dumps(svc.decide([svc.prepare(DecideRequest.model_validate_json(reqs[i % len(reqs)]))
                           ])[0])
        t3 = time.perf_counter()
        _dumps(mem.decide([mem.prepare(DecideRequest.model_validate_json(reqs[i % len(reqs)]))
                           ])[0])
        t4 = time.perf_counter()
        if i >= 200:
            t_onnx.append(t1 - t0)
            t_store.append(t2 - t1)
            t_all.append(t3 - t2)
            t_mem.append(t4 - t3)
    degraded = svc.metrics.degraded._metrics  # a sanity count only
    return {"onnx": pct(t_onnx), "store": pct(t_store), "decision_with_store": pct(t_all),
            "decision_without_store_io": pct(t_mem),
            "degraded_reasons": sorted(k[0] for k in degraded)}


def fill_rule_versions(url: str, ids: np.ndarray, responses, members: int) -> dict:
    """Namespaces "plain", "point" and "bound", each with a current version of the users
    ``ids`` (the same deltas); the latter two with a frozen rule, "bound" with the
    members' spread too. Returns each version's bytes per user."""
    from hmum.decision.bounds import pack_spread
    from hmum.decision.rules import DecisionRule, rule_to_version_extra

    rng = np.random.default_rng(1)
    n, rn, tn = len(ids), list(responses), ["t1", "t2"]
    rules = {"plain": None,
             "point": DecisionRule(rn, tn, sigma=[0.001, 0.002], response_bonus=[0.0, 0.3]),
             "bound": DecisionRule(rn, tn, sigma=[0.001, 0.002],
                                   bound={"level": 0.9, "source": "crossfit"})}
    out = {}
    for name, rule in rules.items():
        st = open_store(url, name, read_timeout=None)
        info = st.create_version(VersionInfo(
            version=name, K=2, R=2, arms=["control", *tn], responses=rn,
            members=members if name == "bound" else None,
            extra={} if rule is None else rule_to_version_extra(rule)), expected_rows=n)
        for s0 in range(0, n, 50_000):
            part = slice(s0, s0 + 50_000)
            md = rng.normal(0.01, 0.03, (members, len(ids[part]), 2, 2))
            spread = pack_spread(md).astype(np.float32) if name == "bound" else None
            st.put(name, ids[part], md.mean(0).astype(np.float32), spread=spread)
        st.mark_ready(name, n)
        st.switch(name)
        st.close()
        out[name] = info.value_bytes
    return out


def rules_cost(args, url: str, root: Path, ids: np.ndarray, reqs: list[bytes], est) -> dict:
    """Side by side: one decision (p50 / p99) and a batch's per-decision cost per rule."""
    value_bytes = fill_rule_versions(url, ids, est.responses_, args.members)
    svcs = {}
    for name in value_bytes:  # one namespace per rule: one service each
        svc = DecisionService(ServiceConfig(value_weight_model=root / "vw", store_url=url,
                                            namespace=name))
        svc.decide([svc.prepare(DecideRequest.model_validate_json(reqs[0]))])
        svcs[name] = svc
    one: dict[str, list[float]] = {k: [] for k in svcs}
    batch: dict[str, list[float]] = {k: [] for k in svcs}
    items = {k: [v.prepare(DecideRequest.model_validate_json(b)) for b in reqs]
             for k, v in svcs.items()}
    names = list(svcs)
    for i in range(args.calls + 200):
        for name in names[i % 3:] + names[:i % 3]:  # rotated: no rule always runs first
            svc = svcs[name]
            t0 = time.perf_counter()
            svc.decide([items[name][i % len(reqs)]])
            if i >= 200:
                one[name].append(time.perf_counter() - t0)
    for i in range(max(5, args.calls // args.batch)):
        for name in names[i % 3:] + names[:i % 3]:
            svc = svcs[name]
            chunk = [items[name][(i * args.batch + j) % len(reqs)] for j in range(args.batch)]
            t0 = time.perf_counter()
            out = svc.decide(chunk)
            batch[name].append((time.perf_counter() - t0) / args.batch)
    enabled = {k: float(np.mean([len(d["enabled"]) for d in v.decide(items[k][:256])]))
               for k, v in svcs.items()}
    return {"value_bytes": value_bytes, "members": args.members, "one_request": {
        k: pct(v) for k, v in one.items()}, "batch_per_decision": {
        k: pct(v) for k, v in batch.items()}, "batch": args.batch,
        "mean_enabled_per_decision": enabled, "last_batch_degraded": any(
            d["degraded"] for d in out)}


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "/v1/decide", nil, bodies[(i %% #bodies) + 1])
end
"""


def parse_wrk(text: str) -> dict:
    def lat(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * UNIT[m.group(2)] * 1e3 if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {"p50_ms": round(lat("50"), 3), "p99_ms": round(lat("99"), 3),
            "rps": round(float(rps.group(1)), 1) if rps else 0.0,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else ""}


def wrk(base: str, script: Path, connections: int, duration: float) -> dict:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:g}s", "--latency",
         "-s", str(script), "--timeout", "2s", base],
        capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    return {"connections": connections, **parse_wrk(out)}


@contextlib.contextmanager
def server(cfg_env: dict, workers: int, factory: str = "hmum.serving.service:app_from_env"):
    port = free_loopback_port()
    env = {**os.environ, **cfg_env,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", factory,
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning", "--no-access-log", "--http", "httptools"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):  # bounded: 60 s
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None:
                raise RuntimeError("uvicorn exited")
            time.sleep(0.1)
        else:
            raise RuntimeError("service never became ready")
        yield base
    finally:
        stop_process(proc, timeout=10)


def blocking_app():
    """The service with its batch path made blocking again (no slices, the model on the
    event loop): the behaviour before issue 13, for the comparison phase of --mode mixed."""
    from hmum.serving import service

    service._Pauser.EVERY_S = float("inf")
    os.environ["HMUM_OFFLOAD_ITEMS"] = str(10**8)
    return service.app_from_env()


def big_batch(fields: list[str], n: int = 256, length: int = 512, seed: int = 0) -> bytes:
    """The largest batch of the default limits: n requests x ``length`` candidates and
    ``length`` recent items in every field; codes up to 2**31 - 1 (~15 MB of JSON)."""
    rng = np.random.default_rng(seed)
    top = 2**31 - 1
    reqs = [{"user_id": int(i), "candidates": {f: rng.integers(0, top, length).tolist()
                                               for f in fields},
             "recent": {f: rng.integers(0, top, length).tolist() for f in fields}}
            for i in range(n)]
    return _dumps({"requests": reqs})


def handoff_cost(n: int = 3000) -> dict:
    """p50 / p99 of one anyio.to_thread.run_sync round trip of a no-op (µs)."""
    import anyio

    async def run() -> list[float]:
        out = []
        for _ in range(n + 200):
            t0 = time.perf_counter()
            await anyio.to_thread.run_sync(lambda: None)
            out.append(time.perf_counter() - t0)
        return out[200:]

    return pct(anyio.run(run))


def small_decision_cost(cfg: ServiceConfig, reqs: list[bytes], n: int = 3000) -> dict:
    svc = DecisionService(cfg)
    out = []
    for i in range(n + 200):
        t0 = time.perf_counter()
        _dumps(svc.decide([svc.prepare(DecideRequest.model_validate_json(reqs[i % len(reqs)]))
                           ])[0])
        out.append(time.perf_counter() - t0)
    return pct(out[200:])


def send_batches(base: str, body: bytes, stop: threading.Event, interval: float,
                 max_batches: int, out: list) -> None:
    """POST ``body`` to /v1/decide/batch until ``stop`` (or ``max_batches``): one at a
    time, ``interval`` s apart. Appends (status, seconds, decisions) to ``out``."""
    import httpx

    with httpx.Client(base_url=base, timeout=60.0) as c:
        while not stop.is_set() and len(out) < max_batches:
            t0 = time.perf_counter()
            r = c.post("/v1/decide/batch", content=body,
                       headers={"content-type": "application/json"})
            n = len(r.json().get("decisions", [])) if r.status_code == 200 else 0
            out.append((r.status_code, time.perf_counter() - t0, n))
            stop.wait(interval)


def mixed(args, root: Path, url: str, est, reqs: list[bytes]) -> dict:
    """Small requests' latency (wrk) alone, with 15 MB batches arriving, and with them on
    the old blocking batch path."""
    res: dict = {}
    cfg = ServiceConfig(value_weight_model=root / "vw", store_url=url)
    res["in_process_us"] = {"thread_handoff": handoff_cost(),
                            "small_decision": small_decision_cost(cfg, reqs)}
    print("in process (µs):", json.dumps(res["in_process_us"]), flush=True)
    body = big_batch(list(est.cand_fields_))
    res["batch_bytes"] = len(body)
    print(f"batch: 256 requests x (512 + 512) items x {len(est.cand_fields_)} fields, "
          f"{len(body) / 1e6:.1f} MB", flush=True)
    script = root / "post.lua"
    script.write_text(LUA % ",".join("[==[" + b.decode() + "]==]" for b in reqs))
    env = {"HMUM_VALUE_WEIGHT_MODEL": str(root / "vw"), "HMUM_STORE_URL": url,
           "HMUM_MAX_BATCH_ITEMS": str(256 * 1024)}
    phases = [("small requests alone", "hmum.serving.service:app_from_env", False),
              ("with 15 MB batches", "hmum.serving.service:app_from_env", True),
              ("with 15 MB batches, blocking batch path (before)", "bench_service:blocking_app",
               True)]
    res["phases"] = []
    for name, factory, batches in phases:
        with server(env, 1, factory=factory) as base:
            wrk(base, script, args.connections, 1.0)  # warm-up
            sent: list = []
            stop = threading.Event()
            sender = threading.Thread(target=send_batches, args=(
                base, body, stop, args.batch_interval, 1000, sent)) if batches else None
            if sender:
                sender.start()
                time.sleep(0.2)  # the first batch is on its way
            try:
                p = wrk(base, script, args.connections, args.duration)
            finally:
                stop.set()
                if sender:
                    sender.join(timeout=120)
        ok = [t for s, t, n in sent if s == 200 and n == 256]
        row = {"phase": name, "small": p, "batches_sent": len(sent), "batches_ok": len(ok),
               "batch_statuses": sorted({s for s, _, _ in sent}),
               "batch_latency_s": {"p50": round(float(np.median(ok)), 3),
                                   "max": round(max(ok), 3)} if ok else None}
        res["phases"].append(row)
        print("mixed:", json.dumps(row), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk point")
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=5000, help="in-process calls")
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--recent", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--store", choices=["redis", "sqlite"], default="redis")
    ap.add_argument("--redis-url", default=None)
    ap.add_argument("--sweep", default="1,2,4,8,16,32,64", help="connections to try")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--mode", choices=["load", "mixed", "rules"], default="load")
    ap.add_argument("--members", type=int, default=5, help="--mode rules: M of the bound")
    ap.add_argument("--batch", type=int, default=64, help="--mode rules: requests per batch")
    ap.add_argument("--connections", type=int, default=2,
                    help="--mode mixed: wrk connections of small requests")
    ap.add_argument("--batch-interval", type=float, default=0.25,
                    help="--mode mixed: seconds between the end of a batch and the next")
    args = ap.parse_args()
    if shutil.which("wrk") is None and args.mode != "rules":
        sys.exit("wrk not found: apt-get install wrk")
    res: dict = {"cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="hmum-bench-svc-") as tmp, contextlib.ExitStack() as es:
        root = Path(tmp)
        t0 = time.perf_counter()
        est, table = build(root, args.candidates, args.recent)
        print(f"model fitted and exported in {time.perf_counter() - t0:.1f}s", flush=True)
        if args.store == "redis":
            url = args.redis_url or es.enter_context(local_redis_server())
        else:
            url = f"sqlite:///{root / 'uplift.sqlite'}"
            SQLiteStore(root / "uplift.sqlite").close()
        ids = fill(url, args.users, est.responses_)
        reqs = bodies(table, ids, 512)
        if args.mode in ("mixed", "rules"):
            res[args.mode] = mixed(args, root, url, est, reqs) if args.mode == "mixed" else \
                rules_cost(args, url, root, ids, reqs, est)
            print(json.dumps(res, indent=2))
            if args.json:
                args.json.write_text(json.dumps(res, indent=2) + "\n")
            return
        cfg = ServiceConfig(value_weight_model=root / "vw", store_url=url)
        res["in_process"] = in_process(cfg, reqs, args.calls)
        print("in process:", json.dumps(res["in_process"]), flush=True)
        script = root / "post.lua"
        script.write_text(LUA % ",".join("[==[" + b.decode() + "]==]" for b in reqs))
        env = {"HMUM_VALUE_WEIGHT_MODEL": str(root / "vw"), "HMUM_STORE_URL": url}
        with server(env, args.workers) as base:
            wrk(base, script, 4, 1.0)  # warm-up
            points = []
            for c in sorted({int(x) for x in args.sweep.split(",")} | {1, 16}):
                p = wrk(base, script, c, args.duration)
                points.append(p)
                print("wrk:", json.dumps(p), flush=True)
        res["http"] = points
        ok = [p for p in points if p["p99_ms"] <= 10.0 and p["non_2xx"] == 0]
        res["best_rps_p99_le_10ms"] = max(ok, key=lambda p: p["rps"]) if ok else None
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
