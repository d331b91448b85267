"""Daily batch scoring (``hmum score``) throughput and memory on this machine.

Measured, each run in a fresh process (so timings and peak memory are clean):

1. end to end ``run_scoring``: simulated users (Parquet) -> HUM -> delta -> Parquet
   record + SQLite store (+ checks and switch), in users/s, median of ``--repeats``;
   with the time per stage (read, score = encode + HUM + delta, record, store);
2. the same with a small HUM (expert sizes [16, 8]) to show the pipeline's own
   ceiling when the network is cheap;
3. HUM alone (``predict_outcomes`` on pre-encoded ids), users/s, for reference;
4. memory flatness: peak RSS of a run over N users and over 4 N users.

Target of the issue: >= 50k users/s on 2 cores.

Usage: python benchmarks/bench_scoring.py [--threads 2] [--users 200000] [--repeats 3]
       [--store redis://127.0.0.1:PORT/0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _train(users: Path, schema_path: Path, out: Path, model: dict | None) -> None:
    import numpy as np

    from hmum.data.schema import Schema
    from hmum.data.validate import load_experiment
    from hmum.models.hum import HUMEstimator

    schema = Schema.from_json(schema_path)
    data = load_experiment(users, schema)
    est = HUMEstimator(schema, model=model, trainer={"max_epochs": 1, "seed": 0})
    est.fit(data.take(np.arange(min(len(data), 20_000))))
    est.save(out)


def _score(model: str, users: str, out: str, store: str, threads: int, shard_rows: int,
           namespace: str) -> dict:
    """One scoring run in this (fresh) process: report + peak RSS."""
    import torch

    torch.set_num_threads(threads)
    from hmum.serving.scoring import ScoringConfig, run_scoring

    rep = run_scoring(model, users, out, store,
                      ScoringConfig(shard_rows=shard_rows, threads=threads), namespace=namespace)
    return {"users_per_s": rep.users_per_s, "seconds": rep.seconds, "rows": rep.rows,
            "timings": rep.timings,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _model_only(model: str, users: str, threads: int) -> float:
    import pyarrow.parquet as pq
    import torch

    torch.set_num_threads(threads)
    from hmum.models.registry import load_estimator

    est = load_estimator(model)
    x = est.encode(pq.read_table(users, columns=est.schema.feature_names))
    est.predict_outcomes(x[:65536])  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        est.predict_outcomes(x)
        times.append(time.perf_counter() - t0)
    return len(x) / statistics.median(times)


def _in_child(fn, *args):
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--store", default=None, help="store URL (default: a fresh SQLite file)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from hmum.data.simulator import SimulatorConfig, simulate

    res: dict = {"threads": args.threads, "users": args.users, "shard_rows": args.shard_rows}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        sims = {n: simulate(SimulatorConfig(n_users=n, n_requests=0), t / f"sim{n}")
                for n in ([args.users] if args.skip_memory else [args.users, 4 * args.users])}
        sim = sims[args.users]
        models = {"default": None, "small": {"expert_sizes": [16, 8], "tower_sizes": [8],
                                             "embed_dim": 8}}
        for name, cfg in models.items():
            _in_child(_train, sim.users_path, sim.schema_path, t / f"model_{name}", cfg)

        for name in models:
            runs = []
            for r in range(args.repeats):
                store = args.store or str(t / f"store_{name}_{r}.sqlite")
                runs.append(_in_child(_score, str(t / f"model_{name}"), str(sim.users_path),
                                      str(t / f"out_{name}_{r}"), store, args.threads,
                                      args.shard_rows, f"bench{r}{name}"))
            med = statistics.median(x["users_per_s"] for x in runs)
            stages = {k: round(statistics.median(x["timings"][k] for x in runs), 2)
                      for k in runs[0]["timings"]}
            res[f"{name}_hum"] = {
                "end_to_end_users_per_s_median": round(med),
                "end_to_end_users_per_s_all": [round(x["users_per_s"]) for x in runs],
                "stage_seconds_median": stages,
                "pipeline_without_hum_users_per_s": round(
                    args.users / max(1e-9, sum(v for k, v in stages.items() if k != "score"))),
                "hum_only_users_per_s": round(_in_child(
                    _model_only, str(t / f"model_{name}"), str(sim.users_path), args.threads)),
            }
            print(name, json.dumps(res[f"{name}_hum"]), flush=True)

        if not args.skip_memory:
            mem = {}
            for n, s in sims.items():
                run = _in_child(_score, str(t / "model_default"), str(s.users_path),
                                str(t / f"mem_{n}"), str(t / f"mem_{n}.sqlite"), args.threads,
                                args.shard_rows, "mem")
                mem[str(n)] = round(run["peak_rss_mib"])
            res["peak_rss_mib_by_users"] = mem
            print("memory", mem, flush=True)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
