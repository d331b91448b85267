"""Uplift store benchmark: bulk load, point reads, batch reads, Redis memory per user.

For each backend (SQLite file; Redis at --redis-url or a throwaway local
``redis-server`` on a free 127.0.0.1 port):

* bulk load: ``put`` of N users in shards of ``--shard`` rows (one transaction /
  pipelined HSETs per shard), users/s, median of ``--repeats`` fresh loads;
* point reads: ``get([user])`` of random users through the current pointer, as a
  request would: p50 / p99 / max latency in microseconds over ``--reads`` calls;
* batch reads: ``get`` of ``--batch`` random users, p50 / p99;
* Redis: used_memory (INFO memory) growth per user for the bucketed layout, and
  for comparison one string key per user (``SET hmum:..:u:{id}``) on 200k users.

Values are K x R float32 (default K = 2, R = 2: 16 bytes).

Usage: python benchmarks/bench_store.py [--users 1000000] [--backends sqlite,redis]
       [--redis-url redis://127.0.0.1:PORT/0] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from hmum.serving.store import (
    RedisStore,
    SQLiteStore,
    UpliftStore,
    VersionInfo,
    encode_values,
    local_redis_server,
)


def _info(version: str, K: int, R: int) -> VersionInfo:  # noqa: N803
    return VersionInfo(version=version, K=K, R=R, arms=[f"a{k}" for k in range(K + 1)],
                       responses=[f"r{r}" for r in range(R)])


def _load(st: UpliftStore, version: str, ids: np.ndarray, delta: np.ndarray,
          shard: int) -> float:
    st.create_version(_info(version, delta.shape[1], delta.shape[2]), expected_rows=len(ids))
    t0 = time.perf_counter()
    for s, lo in enumerate(range(0, len(ids), shard)):
        st.put(version, ids[lo:lo + shard], delta[lo:lo + shard], shard=s)
    dt = time.perf_counter() - t0
    st.mark_ready(version, len(ids))
    return len(ids) / dt


def _latencies(fn, n: int) -> dict:
    lat = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        lat[i] = (time.perf_counter_ns() - t0) / 1e3
    return {"p50_us": round(float(np.percentile(lat, 50)), 1),
            "p99_us": round(float(np.percentile(lat, 99)), 1),
            "max_us": round(float(lat.max()), 1)}


def bench_backend(make, args, ids, delta) -> dict:
    loads, st = [], None
    for r in range(args.repeats):
        if st is not None:
            st.close()
        st = make(r)
        mem0 = st.memory_used() if isinstance(st, RedisStore) else None
        loads.append(_load(st, "v1", ids, delta, args.shard))
        if mem0 is not None:
            mem_per_user = (st.memory_used() - mem0) / len(ids)
    st.switch("v1")
    rng = np.random.default_rng(0)
    q = rng.choice(ids, args.reads)
    st.get(q[:100], timeout=1.0)  # warm up connection / statement cache
    point = _latencies(lambda i: st.get(q[i:i + 1], timeout=1.0), args.reads)
    hits = st.get(q[:1000], timeout=1.0).found.mean()
    qb = rng.choice(ids, (args.reads // 10, args.batch))
    batch = _latencies(lambda i: st.get(qb[i], timeout=1.0), len(qb))
    out = {
        "bulk_load_users_per_s_median": round(statistics.median(loads)),
        "bulk_load_users_per_s_all": [round(x) for x in loads],
        "point_read": point,
        f"batch_read_{args.batch}": batch,
        "hit_rate": float(hits),
    }
    if isinstance(st, RedisStore):
        out["redis_used_memory_bytes_per_user"] = round(mem_per_user, 1)
        out["redis_n_buckets"] = st.info("v1").n_buckets
        out["redis_bucket_encoding"] = st.client.object(
            "encoding", st.key_bucket("v1", 0)).decode()
        out["redis_one_key_per_user_bytes_per_user"] = round(_per_key_memory(st, delta), 1)
    else:
        out["sqlite_file_bytes_per_user"] = round(
            sum(p.stat().st_size for p in st.path.parent.glob(st.path.name + "*")) / len(ids), 1)
    st.close()
    return out


def _per_key_memory(st: RedisStore, delta: np.ndarray, n: int = 200_000) -> float:
    """Memory per user of the naive layout: one string key per user."""
    c = st.client
    vals = encode_values(delta[:n])
    keys = [f"hmum:{st.namespace}:keycmp:u:{i}" for i in range(len(vals))]
    mem0 = st.memory_used()
    pipe = c.pipeline(transaction=False)
    for s in range(0, len(vals), 5000):
        pipe.mset(dict(zip(keys[s:s + 5000], vals[s:s + 5000], strict=True)))
    pipe.execute()
    per = (st.memory_used() - mem0) / len(vals)
    for s in range(0, len(keys), 5000):
        c.unlink(*keys[s:s + 5000])
    return per


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--K", type=int, default=2)
    ap.add_argument("--R", type=int, default=2)
    ap.add_argument("--shard", type=int, default=200_000)
    ap.add_argument("--reads", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default="sqlite,redis")
    ap.add_argument("--redis-url", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    # sparse, shuffled int64 ids as in production (not 0..N-1 in order)
    ids = rng.choice(50 * args.users, args.users, replace=False).astype(np.int64)
    delta = rng.normal(scale=0.05, size=(args.users, args.K, args.R)).astype(np.float32)
    res: dict = {"users": args.users, "K": args.K, "R": args.R, "shard": args.shard}
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if "sqlite" in backends:
            res["sqlite"] = bench_backend(
                lambda r: SQLiteStore(Path(tmp) / f"s{r}.sqlite"), args, ids, delta)
            print("sqlite", json.dumps(res["sqlite"]), flush=True)
        if "redis" in backends:
            with contextlib.ExitStack() as stack:
                url = args.redis_url or stack.enter_context(local_redis_server())
                tag = uuid.uuid4().hex[:8]

                def make(r):
                    st = RedisStore(url, f"bench{tag}{r}", read_timeout=1.0)
                    if r:  # drop the previous repeat's data so memory is measured alone
                        prev = RedisStore(url, f"bench{tag}{r - 1}")
                        prev._delete(prev.info("v1"))
                        prev.close()
                    return st

                res["redis"] = bench_backend(make, args, ids, delta)
                last = RedisStore(url, f"bench{tag}{args.repeats - 1}")
                last.client.delete(last.key_current(), last.key_previous())
                last._delete(last.info("v1"))
                last.close()
            print("redis", json.dumps(res["redis"]), flush=True)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
