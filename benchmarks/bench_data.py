"""Read + validate + encode throughput of a large Parquet file (streamed in chunks).

Simulates N users (default 10 M) into a temporary folder, then, in a fresh
subprocess so the peak memory is the pipeline's own: fits the encoder on the
first chunk, and streams the whole file through read -> validate -> encode.
Reports rows/s per stage and the peak RSS.

Usage: python benchmarks/bench_data.py [--users 10000000] [--chunk 1000000]
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


def run_pipeline(path: Path, chunk: int) -> dict:
    from hmum.data.encoder import FeatureEncoder
    from hmum.data.io import iter_batches
    from hmum.data.schema import Schema
    from hmum.data.validate import validate_table

    schema = Schema.from_json(path.parent / "schema.json")
    cols = schema.input_columns() + list(schema.ground_truth_columns().values())
    t_read = t_val = t_enc = 0.0
    rows = 0
    enc = None
    it = iter_batches(path, columns=cols, batch_rows=chunk)
    while True:
        t0 = time.perf_counter()
        table = next(it, None)
        t_read += time.perf_counter() - t0
        if table is None:
            break
        t0 = time.perf_counter()
        d = validate_table(table, schema, require_all_arms=False)
        t_val += time.perf_counter() - t0
        t0 = time.perf_counter()
        if enc is None:
            enc = FeatureEncoder(schema.features).fit(d.features)
        x = enc.transform(d.features)
        t_enc += time.perf_counter() - t0
        rows += x.shape[0]
    total = t_read + t_val + t_enc
    return {
        "rows": rows,
        "read_rows_per_s": rows / t_read,
        "validate_rows_per_s": rows / t_val,
        "encode_rows_per_s": rows / t_enc,
        "end_to_end_rows_per_s": rows / total,
        "seconds": total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000_000)
    ap.add_argument("--chunk", type=int, default=1_000_000)
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_pipeline(args.child, args.chunk)))
        return
    from hmum.data.simulator import SimulatorConfig, simulate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = simulate(SimulatorConfig(n_users=args.users, n_requests=0), Path(tmp))
        sim_s = time.perf_counter() - t0
        size = res.users_path.stat().st_size / 2**20
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(res.users_path), "--chunk", str(args.chunk)],
            check=True, capture_output=True, text=True,
        )
        stats = json.loads(out.stdout.strip().splitlines()[-1])
    stats.update({"file_mib": round(size, 1), "simulate_s": round(sim_s, 1), "chunk": args.chunk})
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in stats.items()},
                     indent=2))


if __name__ == "__main__":
    main()
