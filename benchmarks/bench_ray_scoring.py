"""Batch scoring on Ray Data against the local runner, side by side on one input.

Every run scores the same input -- simulated users written as partitioned Parquet
(a folder of hive-style files) -- with the same HUM artifact and shard plan, into
its own record folder and SQLite store, each in a fresh process:

* local runner, 1 torch thread; local runner, ``--cores`` threads;
* Ray, 1 worker and ``--cores`` workers (1 torch thread and 1 CPU each), each run
  starting its own local cluster (num_cpus = workers), as ``hmum score --engine ray``.

Reported per run: end-to-end seconds and users/s (Ray: including the start of
the cluster and of its actors, also shown apart as "start-up", the time to the
first committed shard less that shard's own work), per-worker throughput (rows /
busy seconds of read + score + record: what one worker sustains, the figure
for capacity plans) and peak RSS per worker and of the driver. Every run's part
files are checked to be byte-identical to the first run's.

The speed-up from 1 to N workers is given end to end and in steady state (rows
after the first committed shard over the time from it to the last).

Usage: python benchmarks/bench_ray_scoring.py [--users 1000000] [--files 8]
       [--shard-rows 50000] [--cores 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _train(users: Path, schema_path: Path, out: Path) -> None:
    import numpy as np
    import torch

    from hmum.data.schema import Schema
    from hmum.data.validate import load_experiment
    from hmum.models.hum import HUMEstimator

    torch.set_num_threads(2)
    schema = Schema.from_json(schema_path)
    data = load_experiment(users, schema)
    est = HUMEstimator(schema, trainer={"max_epochs": 1, "seed": 0})
    est.fit(data.take(np.arange(min(len(data), 20_000))))
    est.save(out)


def _partition(users: Path, out: Path, files: int) -> None:
    """Split the users into ``files`` hive-style partitions (contiguous row ranges)."""
    import pyarrow.parquet as pq

    t = pq.read_table(users)
    step = -(-t.num_rows // files)
    for i in range(files):
        d = out / f"bucket={i:03d}"
        d.mkdir(parents=True)
        pq.write_table(t.slice(i * step, step), d / "users.parquet", row_group_size=25_000)


def _score(engine: str, model: str, users: str, out: str, store: str, workers: int,
           threads: int, shard_rows: int) -> dict:
    """One scoring run in this (fresh) process."""
    import resource

    import torch

    torch.set_num_threads(threads)
    from hmum.serving.scoring import ScoringConfig, run_scoring

    cfg = ScoringConfig(shard_rows=shard_rows, threads=threads)
    commits: list[float] = []

    def progress(stage: str, done: int, total: int) -> None:
        commits.append(time.perf_counter())

    t0 = time.perf_counter()
    if engine == "ray":
        from hmum.serving.ray_runner import run_scoring_ray

        rep = run_scoring_ray(model, users, out, store, cfg, workers=workers, progress=progress)
    else:
        rep = run_scoring(model, users, out, store, cfg, progress=progress)
    wall = time.perf_counter() - t0
    commits = commits[1:]  # the first call reports the shards done before the run (none)
    per_shard_busy = sum(w["busy_s"] for w in rep.workers) / rep.n_shards
    steady_rows = rep.rows - rep.rows / rep.n_shards
    steady_s = commits[-1] - commits[0] if len(commits) > 1 else float("nan")
    part = Path(rep.partition)
    return {
        "engine": engine, "workers": workers, "threads": threads, "rows": rep.rows,
        "n_shards": rep.n_shards, "seconds": wall, "users_per_s": rep.rows / wall,
        "startup_s": commits[0] - t0 - per_shard_busy,
        "steady_users_per_s": steady_rows / steady_s,
        "timings": rep.timings,
        "per_worker": [{"pid": w["pid"], "shards": w["shards"],
                        "users_per_busy_s": w["rows"] / w["busy_s"],
                        "peak_rss_mib": w["peak_rss_mib"]} for w in rep.workers],
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parts_sha256": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in sorted(part.glob("part-*.parquet"))},
    }


def _in_child(fn, *args):
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--shard-rows", type=int, default=50_000)
    ap.add_argument("--cores", type=int, default=2, help="threads / workers of the wide runs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from hmum.data.simulator import SimulatorConfig, simulate

    res: dict = {"users": args.users, "files": args.files, "shard_rows": args.shard_rows,
                 "cpu_count": os.cpu_count(), "load_before": _load(), "runs": []}
    print(f"load average before (1/5/15 min): {res['load_before']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        sim = simulate(SimulatorConfig(n_users=args.users, n_requests=0), t / "sim")
        _partition(sim.users_path, t / "users", args.files)
        _in_child(_train, sim.users_path, sim.schema_path, t / "model")
        plan = [("local", 1, 1), ("local", 1, args.cores), ("ray", 1, 1),
                ("ray", args.cores, 1)]
        for i, (engine, workers, threads) in enumerate(plan):
            run = _in_child(_score, engine, str(t / "model"), str(t / "users"),
                            str(t / f"out{i}"), str(t / f"store{i}.sqlite"), workers, threads,
                            args.shard_rows)
            run["load_after"] = _load()
            res["runs"].append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "parts_sha256"}), flush=True)
    runs = res["runs"]
    res["identical_parts"] = all(r["parts_sha256"] == runs[0]["parts_sha256"] for r in runs)
    for r in runs:
        del r["parts_sha256"]
    one, wide = runs[2], runs[3]
    res["ray_speedup_end_to_end"] = wide["users_per_s"] / one["users_per_s"]
    res["ray_speedup_steady"] = wide["steady_users_per_s"] / one["steady_users_per_s"]

    print(f"\n{args.users:,} users, {args.files} Parquet files, shards of {args.shard_rows:,}"
          f" ({runs[0]['n_shards']} shards), {os.cpu_count()} CPUs; record files identical "
          f"across runs: {res['identical_parts']}")
    print("| run | wall (s) | users/s end to end | start-up (s) | users/s steady | "
          "per worker users/busy-s | peak RSS per worker (MiB) | driver peak RSS (MiB) | "
          "load after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        name = (f"local, {r['threads']} thread(s)" if r["engine"] == "local"
                else f"ray, {r['workers']} worker(s)")
        per = ", ".join(f"{w['users_per_busy_s']:,.0f}" for w in r["per_worker"])
        rss = ", ".join(f"{w['peak_rss_mib']:,.0f}" for w in r["per_worker"])
        print(f"| {name} | {r['seconds']:.1f} | {r['users_per_s']:,.0f} | "
              f"{r['startup_s']:.1f} | {r['steady_users_per_s']:,.0f} | {per} | {rss} | "
              f"{r['driver_peak_rss_mib']:,.0f} | {r['load_after']} |")
    print(f"\nray speed-up 1 -> {args.cores} workers: {res['ray_speedup_end_to_end']:.2f}x end "
          f"to end, {res['ray_speedup_steady']:.2f}x steady state")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
