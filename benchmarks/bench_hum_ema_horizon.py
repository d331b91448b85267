"""HUM's weight-averaging horizon on ground truth: PEHE of the default HUM with
``ema_share`` (the EMA horizon as a share of the run's planned optimizer steps) set to
each value given, one fit per (effect_scale, seed, share), scored on a fresh population.

    python benchmarks/bench_hum_ema_horizon.py --shares 0.1 0.3 --effect-scales 1 5

Writes results.json and results.md (mean ± std over seeds, paired difference of each
share to the first) under --out.
"""

from __future__ import annotations

import json

import numpy as np

from bench_hum_uplift_rule import errors, paired_cells, protocol_parser, spread_cells
from hmum.data.datasets.simulated import bench_simulator
from hmum.models.registry import get_model

CELLS = ["t1 / usage_time", "t1 / video_views", "t2 / usage_time", "t2 / video_views"]


def one_fit(es: float, seed: int, share: float, users: int, eval_users: int,
            threads: int) -> dict:
    sp = bench_simulator(None, seed, n_users=users, effect_scale=es, eval_users=eval_users)[0]
    est = get_model("hum", sp.train.schema,
                    trainer={"seed": seed, "num_threads": threads, "ema_share": share})
    est.fit(sp.train, sp.valid)
    err = errors(est.predict_outcomes(sp.test).astype(np.float64), sp.test.mu)
    return {"es": es, "seed": seed, "ema_share": share, "pehe": err["pehe"],
            "spread": err["spread"]}


def markdown(runs: list[dict]) -> str:
    shares = sorted({r["ema_share"] for r in runs})
    lines = ["| effect_scale | ema_share | " + " | ".join(CELLS) + " |",
             "|---|---|" + "---|" * len(CELLS)]
    for es in sorted({r["es"] for r in runs}):
        by = {s: {r["seed"]: np.ravel(r["pehe"]) for r in runs
                  if r["es"] == es and r["ema_share"] == s} for s in shares}
        for s in shares:
            p = np.array(list(by[s].values()))
            if len(p) == 0:
                continue
            lines.append(f"| {es:g} | {s:g} | " + spread_cells(p) + " |")
        base = shares[0]
        for s in shares[1:]:
            seeds = sorted(set(by[s]) & set(by[base]))
            if not seeds:
                continue
            d = np.array([by[s][k] - by[base][k] for k in seeds])
            lines.append(f"| {es:g} | {s:g} − {base:g} (paired) | " + paired_cells(d) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = protocol_parser(__doc__, "benchmarks/results/hum_quality/ema-horizon-u100000")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.3])
    args = ap.parse_args()
    runs = []
    for es in args.effect_scales:
        for seed in args.seeds:
            for share in args.shares:
                runs.append(one_fit(es, seed, share, args.users, args.eval_users, args.threads))
                print(json.dumps(runs[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"args": {**vars(args), "out": str(args.out)}, "runs": runs}, indent=1) + "\n")
    md = "PEHE on a fresh population, mean ± std over seeds\n\n" + markdown(runs)
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
