"""HUM speed on this machine: training and inference throughput vs the fp32 matmul peak.

Measured side by side in one process with the same thread count:

1. fp32 matmul peak: median GFLOP/s of a square torch.mm (the best the CPU does).
2. HUM inference: users/s for all K+1 arms (one forward gives every arm), and the
   achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter on the same batch)
   as a fraction of the peak.
3. HUM training: rows/s of optimizer steps with the paper's batch size 4096.
4. Fit cost against the S-Learner: whole ``fit`` calls of default HUM, HUM with the
   paper's settings and the S-Learner on the same rows for the same epochs (early
   stopping off), interleaved, median of ``--repeats``; the ratio is the target
   (HUM <= 3x the S-Learner).

With ``--fit-dataset NAME`` (a benchmark dataset, e.g. starbucks or social_pressure,
read from ../shared/data) only part 4 runs, on the first rows of that dataset's
seed-0 training split: the ratio on data of another shape (K, features) than the
simulator's.

Usage: python benchmarks/bench_hum_speed.py [--threads 2] [--users 200000]
       [--fit-rows 80000 --fit-epochs 3 --repeats 3] [--fit-dataset NAME]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def matmul_peak(n: int = 2048, reps: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def fit_costs(data, args) -> dict:
    """Median whole-fit seconds of HUM (default), HUM (paper) and the S-Learner."""
    from hmum.models.registry import get_model
    rows = data.take(np.arange(min(len(data), args.fit_rows)))
    train, valid = rows.take(np.arange(0, len(rows) * 9 // 10)), rows.take(
        np.arange(len(rows) * 9 // 10, len(rows)))
    names = ["hum", "hum_paper", "slearner"]
    secs: dict[str, list[float]] = {n: [] for n in names}
    flops: dict[str, float] = {}
    for _ in range(args.repeats):
        for n in names:  # interleaved: a noisy moment hits every model alike
            trainer = {"max_epochs": args.fit_epochs, "early_stopping_patience": 1000,
                       "num_threads": args.threads}
            est = get_model(n, data.schema, trainer=trainer)
            t0 = time.perf_counter()
            est.fit(train, valid)
            secs[n].append(time.perf_counter() - t0)
            if n not in flops:  # once per model: the count does not change between repeats
                batch = torch.from_numpy(est.encode(train)[:4096])
                n_rows = len(batch)
                flops[n] = train_flops_per_row(est, batch, torch.from_numpy(train.arm[:n_rows]),
                                               torch.from_numpy(train.y[:n_rows].astype(np.float32)))
    med = {n: statistics.median(v) for n, v in secs.items()}
    out = {"rows": len(train), "epochs": args.fit_epochs, "repeats": args.repeats,
           **{f"{n}_fit_s": round(v, 2) for n, v in med.items()},
           **{f"{n}_rows_per_s": round(len(train) * args.fit_epochs / v)
              for n, v in med.items()}}
    for n in names:
        out[f"{n}_train_mflop_per_row"] = round(flops[n] / 1e6, 3)
        if n != "slearner" and "slearner" in med:
            out[f"{n}_over_slearner"] = round(med[n] / med["slearner"], 2)
            # time ratio over FLOP ratio: how much less of the CPU a HUM FLOP gets
            out[f"{n}_flop_ratio"] = round(flops[n] / flops["slearner"], 2)
    return out


def train_flops_per_row(est, x: torch.Tensor, arm: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one training step (the estimator's loss, forward + backward) per row.

    x (n, F) encoded ids, arm (n,), y (n, R) float32; the fitted module's gradients are
    cleared afterwards.
    """
    module = est.module_
    module.train()
    with FlopCounterMode(display=False) as fc:
        loss, _ = est._loss(module, (x, arm, y))
        loss.backward()
    module.zero_grad(set_to_none=True)
    return fc.get_total_flops() / x.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--infer-batch", type=int, default=16384)
    ap.add_argument("--train-steps", type=int, default=40)
    ap.add_argument("--fit-rows", type=int, default=80_000)
    ap.add_argument("--fit-epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fit-dataset", default=None,
                    help="only the fit cost, on this benchmark dataset's training split")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.fit_dataset:
        from hmum.workflows.bench import load_dataset_splits

        train = load_dataset_splits(args.fit_dataset, None, seed=0)[0].train
        emit({"dataset": args.fit_dataset, "threads": args.threads, "K": train.schema.K,
              "features": len(train.schema.features), "fit_vs_slearner": fit_costs(train, args)},
             args.json)
        return

    from hmum.data.simulator import SimulatorConfig, simulate
    from hmum.data.validate import load_experiment
    from hmum.models.hum import HUMEstimator

    with tempfile.TemporaryDirectory() as tmp:
        res = simulate(SimulatorConfig(n_users=args.users, n_requests=0), Path(tmp))
        data = load_experiment(res.users_path, res.schema)
    est = HUMEstimator(data.schema, trainer={"max_epochs": 1})
    est.fit(data.take(np.arange(min(len(data), 50_000))))  # builds encoder + module
    module = est.module_
    x_all = torch.from_numpy(est.encode(data))
    arm = torch.from_numpy(data.arm)
    y = torch.from_numpy(data.y.astype(np.float32))

    peak = matmul_peak()

    # inference: all K+1 arms per user
    module.eval()
    xb = x_all[: args.infer_batch]
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            module.potential_outcomes(module(xb))
        flops_per_user = fc.get_total_flops() / xb.shape[0]
        module.potential_outcomes(module(xb))  # warm-up
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            module.potential_outcomes(module(xb))
            times.append(time.perf_counter() - t0)
    t_inf = statistics.median(times)
    users_s = xb.shape[0] / t_inf
    gflops_inf = flops_per_user * users_s / 1e9

    # end-to-end scoring through the estimator API (encode excluded: pre-encoded ids)
    x_np = x_all.numpy()
    t0 = time.perf_counter()
    est.predict_outcomes(x_np)
    e2e_users_s = x_np.shape[0] / (time.perf_counter() - t0)

    # training steps, batch 4096, the estimator's loss
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    bs = 4096
    perm = torch.randperm(x_all.shape[0])
    idx = perm[:bs]
    step_flops = train_flops_per_row(est, x_all[idx], arm[idx], y[idx])
    step_times = []
    for s in range(args.train_steps):
        idx = perm[(s * bs) % (len(perm) - bs):][:bs]
        t0 = time.perf_counter()
        loss, _ = est._loss(module, (x_all[idx], arm[idx], y[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - t0)
    t_step = statistics.median(step_times[3:])
    rows_s = bs / t_step
    out = {
        "threads": args.threads,
        "matmul_peak_gflops": round(peak, 1),
        "params": sum(p.numel() for p in module.parameters()),
        "inference_mflop_per_user": round(flops_per_user / 1e6, 3),
        "inference_users_per_s": round(users_s),
        "inference_gflops": round(gflops_inf, 1),
        "inference_fraction_of_peak": round(gflops_inf / peak, 3),
        "predict_outcomes_users_per_s": round(e2e_users_s),
        "train_mflop_per_row": round(step_flops / 1e6, 3),
        "train_rows_per_s": round(rows_s),
        "train_gflops": round(step_flops * rows_s / 1e9, 1),
        "train_fraction_of_peak": round(step_flops * rows_s / 1e9 / peak, 3),
    }
    out["fit_vs_slearner"] = fit_costs(data, args)
    emit(out, args.json)


def emit(out: dict, path: Path | None) -> None:
    print(json.dumps(out, indent=2))
    if path:
        path.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
