"""Per-request decision latency (PyTorch vs ONNX Runtime) and batch decision throughput.

One request, in process: the value-weight forward (L candidates and Lr recent
items per request, 5 item fields each) -> w (eq. 10) -> phi (eq. 11) against the
user's stored delta (K, R) -> enable (phi > sigma). PyTorch and ONNX Runtime
run side by side: alternating blocks of calls, so that load from other
processes hits both alike; the script reports p50 / p99 per engine and their
ratio. Both run one thread (a serving process handles one request per core).

Batch: requests per second for whole batches (forward + phi + decision);
PyTorch runs the training layout (histogram pooling, as ``predict_weights``),
ONNX Runtime the exported serving graph.

    python benchmarks/bench_decision_latency.py [--calls 5000] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hmum.data.simulator import ITEM_FIELDS, SimulatorConfig, simulate_requests
from hmum.decision.core import value_weights
from hmum.decision.policies import decide_from_phi
from hmum.models.value_weight import OnnxValueWeights, ValueWeightEstimator, ValueWeightGraph


def build(n_candidates: int, n_recent: int, seed: int = 0):
    """A value-weight model of the default size, trained one epoch on 2 000 requests."""
    cfg = SimulatorConfig(n_users=1000, n_requests=2000, n_candidates=n_candidates,
                          n_recent=n_recent, n_items=5000, seed=seed)
    req = simulate_requests(cfg)
    est = ValueWeightEstimator(trainer={"max_epochs": 1, "seed": seed}).fit(req)
    return est, req


def percentiles(t: list[float]) -> dict:
    a = np.asarray(t) * 1e6
    return {"p50_us": float(np.percentile(a, 50)), "p90_us": float(np.percentile(a, 90)),
            "p99_us": float(np.percentile(a, 99)), "mean_us": float(a.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000, help="timed calls per engine")
    ap.add_argument("--block", type=int, default=1000,
                    help="calls per alternating block (large: a switch costs a cold call)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats (medians are reported)")
    ap.add_argument("--candidates", type=int, default=100, help="L")
    ap.add_argument("--recent", type=int, default=20, help="Lr")
    ap.add_argument("--batch", type=int, nargs="*", default=[256, 4096])
    ap.add_argument("--batch-threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    torch.set_num_threads(1)
    est, req = build(args.candidates, args.recent)
    tmp = Path(tempfile.mkdtemp())
    onnx_path = est.export_onnx(tmp / "vw.onnx")
    sess = OnnxValueWeights(onnx_path, threads=1)
    module = est.module_.eval()
    graph = ValueWeightGraph(module).eval()  # the serving layout, as exported to ONNX
    k, r, sigma = 2, len(est.responses_), 0.0
    cand, recent = est.encode(req)
    cand, recent = cand.astype(np.int64), recent.astype(np.int64)
    rng = np.random.default_rng(0)
    delta_store = rng.normal(0, 0.01, size=(len(cand), k, r))  # HUM's stored delta per user

    def torch_one(i: int) -> np.ndarray:
        with torch.inference_mode():
            _, w = graph(torch.from_numpy(cand[i:i + 1]), torch.from_numpy(recent[i:i + 1]))
            w = w.numpy()
        phi = delta_store[i] @ w[0]  # (K,) eq. 11 for one request
        return decide_from_phi(phi[None], sigma=sigma)[0]

    def onnx_one(i: int) -> np.ndarray:
        w = sess.weights(cand[i:i + 1], recent[i:i + 1])
        phi = delta_store[i] @ w[0]
        return decide_from_phi(phi[None], sigma=sigma)[0]

    # same decisions from both engines
    n_req = len(cand)
    same = sum(np.array_equal(torch_one(i), onnx_one(i)) for i in range(200))
    for i in range(300):  # warm-up
        torch_one(i % n_req)
        onnx_one(i % n_req)
    fns = {"pytorch": torch_one, "onnxruntime": onnx_one}

    def measure_once() -> dict:
        times: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
        done = 0
        while done < args.calls:
            for name, fn in fns.items():
                ts = times[name]
                for j in range(done, min(done + args.block, args.calls)):
                    i = j % n_req
                    t0 = time.perf_counter()
                    fn(i)
                    ts.append(time.perf_counter() - t0)
            done += args.block
        # ONNX Runtime once more on its own: interleaving with PyTorch evicts its caches
        alone = []
        for j in range(args.calls):
            i = j % n_req
            t0 = time.perf_counter()
            onnx_one(i)
            alone.append(time.perf_counter() - t0)
        times["onnxruntime_alone"] = alone
        return {name: percentiles(ts) for name, ts in times.items()}

    # the machine may be shared: repeat, and report the median of each statistic
    runs = [measure_once() for _ in range(args.repeats)]
    single = {name: {stat: float(np.median([r_[name][stat] for r_ in runs]))
                     for stat in runs[0][name]} for name in runs[0]}
    single["repeats"] = runs
    single["ratio_p50_pytorch_over_onnx"] = (single["pytorch"]["p50_us"]
                                             / single["onnxruntime"]["p50_us"])
    single["ratio_p99_pytorch_over_onnx"] = (single["pytorch"]["p99_us"]
                                             / single["onnxruntime"]["p99_us"])

    # decision arithmetic alone (phi + enable), per request
    t0 = time.perf_counter()
    for i in range(args.calls):
        decide_from_phi((delta_store[i % n_req] @ np.array([0.5, 0.5]))[None], sigma=sigma)
    arith_us = (time.perf_counter() - t0) / args.calls * 1e6

    # batches
    torch.set_num_threads(args.batch_threads)
    sess_b = OnnxValueWeights(onnx_path, threads=args.batch_threads)
    batch = {}
    for b in args.batch:
        reps = max(5, 40000 // b)
        idx = np.arange(b) % n_req
        cb, rb, db = cand[idx], recent[idx], delta_store[idx]
        res = {}
        for name in ("pytorch", "onnxruntime"):
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                if name == "pytorch":
                    with torch.inference_mode():  # as predict_weights: histogram pooling
                        w = value_weights(module(torch.from_numpy(cb), torch.from_numpy(rb)))
                        w = w.numpy()
                else:
                    w = sess_b.run(cb, rb)[1]
                phi = np.einsum("nkr,nr->nk", db, w)
                decide_from_phi(phi, sigma=sigma)
                ts.append(time.perf_counter() - t0)
            res[name] = {"median_s": float(np.median(ts)),
                         "requests_per_s": float(b / np.median(ts))}
        batch[str(b)] = res
    out = {
        "setup": {"K": k, "R": r, "L": args.candidates, "Lr": args.recent,
                  "item_fields": len(ITEM_FIELDS), "model": est.model_config_.model_dump(),
                  "calls": args.calls, "torch": torch.__version__,
                  "onnxruntime": __import__("onnxruntime").__version__,
                  "cpu": platform.processor() or platform.machine(),
                  "same_decisions_of_200": int(same),
                  "load_average_1_5_15": list(os.getloadavg())},
        "single_request": single,
        "decision_arithmetic_us": arith_us,
        "batch": batch,
    }
    print(f"one request (K={k}, R={r}, L={args.candidates}, Lr={args.recent}), "
          f"{args.calls} calls per engine, side by side, median of {args.repeats} repeats:")
    for name in ("pytorch", "onnxruntime", "onnxruntime_alone"):
        s = single[name]
        print(f"  {name:17s} p50 {s['p50_us']:7.1f} us   p90 {s['p90_us']:7.1f} us   "
              f"p99 {s['p99_us']:7.1f} us")
    print(f"  PyTorch / ONNX Runtime: p50 x{single['ratio_p50_pytorch_over_onnx']:.2f}, "
          f"p99 x{single['ratio_p99_pytorch_over_onnx']:.2f}; phi + decision alone "
          f"{arith_us:.1f} us; identical decisions {same}/200")
    for b, res in batch.items():
        print(f"batch {b:>5s} ({args.batch_threads} threads): "
              + ", ".join(f"{n} {v['requests_per_s']:,.0f} req/s" for n, v in res.items()))
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
