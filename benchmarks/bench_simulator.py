"""Simulator throughput (users/s) and peak memory (process RSS) per population size.

Each size runs ``hmum.data.simulator.simulate`` in a fresh subprocess, writing to a
temporary folder, so the peak resident set size (``ru_maxrss``) of that process is
the peak of one simulation alone. Usage::

    python benchmarks/bench_simulator.py                     # 1 M and 10 M users
    python benchmarks/bench_simulator.py --users 200000,1000000 --chunk-size 250000

Prints one line per size and, with ``--json PATH``, writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _worker(n_users: int, n_requests: int, chunk_size: int, seed: int) -> None:
    """Runs in the child: simulate once and print a JSON line of figures."""
    from hmum.data.simulator import SimulatorConfig, simulate

    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if done == total:
            marks[stage] = time.perf_counter()

    cfg = SimulatorConfig(
        n_users=n_users, n_requests=n_requests, chunk_size=chunk_size, seed=seed
    )
    with tempfile.TemporaryDirectory(prefix="hmum-bench-sim-") as tmp:
        t0 = time.perf_counter()
        res = simulate(cfg, tmp, progress=progress)
        t1 = time.perf_counter()
        users_s = marks["users"] - t0
        out = {
            "n_users": n_users,
            "n_requests": n_requests,
            "chunk_size": chunk_size,
            "total_s": t1 - t0,
            "users_s": users_s,
            "users_per_s": n_users / users_s,
            "requests_s": t1 - marks["users"],
            # Linux reports ru_maxrss in KiB.
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "users_file_mib": res.users_path.stat().st_size / 2**20,
            "requests_file_mib": res.requests_path.stat().st_size / 2**20,
            "true_relative_effect": res.summary["true_relative_effect"],
            "oracle_relative_effect": res.summary["oracle_policy"]["relative_effect"],
        }
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", default="1000000,10000000",
                    help="comma-separated population sizes (default: 1000000,10000000)")
    ap.add_argument("--requests", type=int, default=20_000, help="requests per run")
    ap.add_argument("--chunk-size", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker is not None:
        _worker(args.worker, args.requests, args.chunk_size, args.seed)
        return

    rows = []
    for n in (int(s) for s in args.users.split(",") if s.strip()):
        cmd = [sys.executable, __file__, "--worker", str(n), "--requests", str(args.requests),
               "--chunk-size", str(args.chunk_size), "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"simulation of {n} users failed:\n{proc.stderr}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{n:>11,d} users: {row['users_s']:7.1f} s for users "
            f"({row['users_per_s']:,.0f} users/s), {row['requests_s']:5.1f} s for "
            f"{args.requests:,d} requests, peak RSS {row['peak_rss_mib']:,.0f} MiB, "
            f"users.parquet {row['users_file_mib']:,.0f} MiB",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
