"""HUM vs HUM w/o KL on the simulator, over several seeds (the paper's Table 1 layout).

For each seed: simulate (K=2, R=2 by default) with that seed, split 8:1:1, train
both models with the paper's settings, evaluate on the test split. Prints and
writes per-(treatment, response) normalized Qini and AUUC (mean ± std over seeds)
and PEHE, plus the oracle Qini (true uplift as the score) as the ceiling.

Usage: python benchmarks/bench_hum_quality.py [--users 200000] [--seeds 3] [--out runs/bench_q]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--effect-scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_hum_quality"))
    args = ap.parse_args()

    from hmum.data.simulator import SimulatorConfig, simulate
    from hmum.data.validate import load_experiment
    from hmum.pipeline import evaluate_estimator, markdown_table, split_data, train_hum

    rows = []
    for seed in range(args.seeds):
        sim = simulate(
            SimulatorConfig(n_users=args.users, seed=seed, effect_scale=args.effect_scale,
                            n_requests=0),
            args.out / f"data_{seed}",
        )
        data = load_experiment(sim.users_path, sim.schema)
        train, valid, test = split_data(data, seed)
        for name, kl in (("HUM", 1.0), ("HUM w/o KL", 0.0)):
            t0 = time.perf_counter()
            est, _ = train_hum(train, valid, kl_weight=kl, split=False, trainer={
                "max_epochs": args.epochs, "seed": seed, "num_threads": args.threads})
            secs = time.perf_counter() - t0
            res = evaluate_estimator(est, test)
            merged = res["table"].merge(res["truth"], on=["treatment", "response"])
            tau, tau_hat = test.tau, res["tau_hat"]
            for i, rec in enumerate(merged.to_dict(orient="records")):
                k, r = divmod(i, tau.shape[2])  # uplift_table rows: treatment-major
                rows.append({
                    "model": name, "seed": seed, "train_s": secs,
                    "epochs": len(est.history_.epochs), **rec,
                    # references: predicting zero uplift, and the ranking agreement
                    "pehe_zero": float(np.sqrt(np.mean(tau[:, k, r] ** 2))),
                    "tau_corr": float(np.corrcoef(tau_hat[:, k, r], tau[:, k, r])[0, 1]),
                })
            print(f"seed {seed} {name}: {secs:.0f}s, {len(est.history_.epochs)} epochs")
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "per_seed.csv", index=False)
    agg = (
        df.groupby(["model", "treatment", "response"])
        .agg(qini_mean=("qini", "mean"), qini_std=("qini", "std"),
             auuc_mean=("auuc", "mean"), auuc_std=("auuc", "std"),
             pehe_mean=("pehe", "mean"), pehe_zero=("pehe_zero", "mean"),
             tau_corr=("tau_corr", "mean"), oracle_qini=("oracle_qini", "mean"))
        .reset_index()
    )
    table = markdown_table(agg)
    print(table)
    (args.out / "summary.md").write_text(table + "\n")
    (args.out / "summary.json").write_text(json.dumps(agg.to_dict(orient="records"), indent=2))


if __name__ == "__main__":
    main()
