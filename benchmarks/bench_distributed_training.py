"""Data-parallel HUM training: 1 worker vs 2 workers on the same Parquet data.

Measured side by side in one session, on the same file (simulated users, several
row groups), the same settings (paper defaults: batch 4096, Adam 1e-3) and one
torch thread per worker; the runs alternate (1, 2, 1, 2, ...) with --repeats so
that a change in the machine's load hits both. Each worker reports:

* rows/s: training rows of all workers per second of an epoch (the loop plus the
  validation pass), median over the epochs; per worker = that / W;
* data prep: reading its row groups twice, the encoder fit and the encoding;
* RSS before the data (imports, process group), with the data in memory, and
  the peak (ru_maxrss, so it includes the training activations);
* the bytes of its encoded rows (x int32 (n, F), arm int64, y float32 (n, R));
* CPU seconds per epoch of the busiest worker: on a machine whose cores are busy
  with other work the wall-clock speed-up says little; the CPU time says what the
  epoch would take with one free core per worker;
* the time of one gloo all-reduce of the whole gradient (DDP's cost per step).

Usage: python benchmarks/bench_distributed_training.py [--users 400000]
       [--row-group 25000] [--epochs 3] [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch


def _rss_mb() -> float:
    """Current resident set of this process (MB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s() -> float:
    """CPU seconds (user + system) this process used so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _worker(job, out: str) -> None:
    """One rank: train_worker with timings and memory readings written to JSON."""
    import hmum.training.distributed as hd

    rank = int(os.environ["RANK"])
    rec: dict = {"rank": rank, "rss_start_mb": _rss_mb()}
    prepare = hd.prepare_shard

    def timed_prepare(*args, **kw):
        rec["rss_before_data_mb"] = _rss_mb()  # imports and the process group done
        t0 = time.perf_counter()
        shard = prepare(*args, **kw)
        rec["prep_s"] = time.perf_counter() - t0
        rec["rss_data_mb"] = _rss_mb()
        rec["peak_prep_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rec["cpu_after_prep"] = _cpu_s()
        rec["rows"] = int(shard.train[0].shape[0] + shard.valid[0].shape[0])
        rec["tensor_mb"] = sum(t.numel() * t.element_size()
                               for t in (*shard.train, *shard.valid)) / 2**20
        return shard

    hd.prepare_shard = timed_prepare
    ctx = hd.init_distributed("cpu")  # train_worker joins it; kept for the all-reduce below
    try:
        t0 = time.perf_counter()
        est = hd.train_worker(job)
        rec["total_s"] = time.perf_counter() - t0
        rec["cpu_train_s"] = _cpu_s() - rec["cpu_after_prep"]
        rec["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rec["epochs"] = est.history_.epochs
        rec["train_rows"] = est.rows_["train"]
        # what DDP adds per step: one all-reduce of every gradient (P float32 values)
        grad = torch.ones(sum(p.numel() for p in est.module_.parameters()))
        times = []
        for _ in range(15):
            torch.distributed.barrier()
            t0 = time.perf_counter()
            torch.distributed.all_reduce(grad)
            times.append(time.perf_counter() - t0)
        rec["params"] = grad.numel()
        rec["allreduce_ms"] = 1000 * statistics.median(times)
    finally:
        hd.shutdown(ctx)
    Path(out, f"rank{rank}.json").write_text(json.dumps(rec))


def run(data: Path, schema: dict, workers: int, epochs: int, tmp: Path) -> dict:
    import hmum.training.distributed as hd

    out = tmp / f"w{workers}-{time.monotonic_ns()}"
    out.mkdir()
    job = hd.DistributedJob(
        data=data, data_schema=schema, out=out / "model",
        trainer={"max_epochs": epochs, "num_threads": 1, "early_stopping_patience": 99},
    )
    t0 = time.perf_counter()
    hd.launch_local(_worker, workers, job, str(out))
    wall = time.perf_counter() - t0
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(workers)]
    eps = ranks[0]["epochs"]
    rows_s = statistics.median(e["rows_per_s"] for e in eps)
    return {
        "workers": workers,
        "rows_per_s": rows_s,
        "rows_per_s_per_worker": rows_s / workers,
        "epoch_s": statistics.median(e["seconds"] for e in eps),
        "valid_loss": eps[-1]["valid_loss"],
        "prep_s": max(r["prep_s"] for r in ranks),
        "rows_per_worker": [r["rows"] for r in ranks],
        "tensor_mb_per_worker": [round(r["tensor_mb"], 1) for r in ranks],
        "rss_start_mb": max(r["rss_start_mb"] for r in ranks),
        "rss_before_data_mb": max(r["rss_before_data_mb"] for r in ranks),
        "rss_data_mb": max(r["rss_data_mb"] for r in ranks),
        "peak_prep_mb": max(r["peak_prep_mb"] for r in ranks),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks),
        "launch_to_end_s": wall,
        # CPU seconds per epoch of the busiest worker: the epoch time if every worker
        # had a free core (loop + validation; gloo waits block, they do not spin)
        "cpu_epoch_s_max_worker": max(r["cpu_train_s"] for r in ranks) / epochs,
        "params": ranks[0]["params"],
        "allreduce_ms": statistics.median(r["allreduce_ms"] for r in ranks),
        "steps_per_epoch": -(-ranks[0]["train_rows"] // 4096),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=400_000)
    ap.add_argument("--row-group", type=int, default=25_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import pyarrow.parquet as pq

    from hmum.data.simulator import SimulatorConfig, simulate_users, simulation_schema

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores; {load}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg = SimulatorConfig(n_users=args.users, seed=0, n_requests=0)
        t0 = time.perf_counter()
        data = tmp / "users.parquet"
        pq.write_table(simulate_users(cfg), data, row_group_size=args.row_group)
        schema = simulation_schema(cfg).model_dump()
        n_groups = pq.ParquetFile(data).num_row_groups
        print(f"data: {args.users:,} simulated users, {n_groups} row groups, "
              f"{data.stat().st_size / 2**20:.0f} MB Parquet ({time.perf_counter() - t0:.0f}s)")
        results = []
        for rep in range(args.repeats):
            for w in (1, 2):
                r = run(data, schema, w, args.epochs, tmp)
                r["repeat"] = rep
                results.append(r)
                print(f"  repeat {rep}: {w} worker(s) {r['rows_per_s']:,.0f} rows/s", flush=True)
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    def med(w, key):
        return statistics.median(r[key] for r in results if r["workers"] == w)

    base = med(1, "rows_per_s")
    cpu1 = med(1, "cpu_epoch_s_max_worker")
    print(f"\nHUM training, paper defaults (batch 4096), 1 torch thread per worker, "
          f"{args.epochs} epochs, median over epochs and {args.repeats} repeat(s)")
    head = ("| workers | rows/s (all) | rows/s per worker | speed-up | epoch s | data prep s "
            "| encoded rows MB / worker | RSS before data MB | RSS with data MB "
            "| peak RSS in data prep MB | peak RSS MB / worker | valid loss "
            "| CPU s per epoch, busiest worker | speed-up from CPU time |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for w in (1, 2):
        rs = [r for r in results if r["workers"] == w]
        print(f"| {w} | {med(w, 'rows_per_s'):,.0f} | {med(w, 'rows_per_s_per_worker'):,.0f} "
              f"| {med(w, 'rows_per_s') / base:.2f}x | {med(w, 'epoch_s'):.1f} "
              f"| {med(w, 'prep_s'):.1f} | {rs[0]['tensor_mb_per_worker']} "
              f"| {med(w, 'rss_before_data_mb'):.0f} | {med(w, 'rss_data_mb'):.0f} "
              f"| {med(w, 'peak_prep_mb'):.0f} | {med(w, 'peak_rss_mb'):.0f} "
              f"| {med(w, 'valid_loss'):.4f} | {med(w, 'cpu_epoch_s_max_worker'):.1f} "
              f"| {cpu1 / med(w, 'cpu_epoch_s_max_worker'):.2f}x |")
    two = [r for r in results if r["workers"] == 2]
    if two:
        ms = statistics.median(r["allreduce_ms"] for r in two)
        print(f"gloo all-reduce of the gradient ({two[0]['params']:,} float32), 2 workers: "
              f"{ms:.1f} ms per step, about {two[0]['steps_per_epoch']} steps per epoch")
    print(f"load before: {load}\nload after:  {load_after}")
    if args.json:
        args.json.write_text(json.dumps({"load": [load, load_after], "runs": results}, indent=2))


if __name__ == "__main__":
    main()
