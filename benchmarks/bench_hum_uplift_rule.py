"""HUM's two uplift rules on ground truth: the paper's (tau_k = y^k - y0*) against the
within-branch one (tau_k = branch k's own treated-minus-control difference, added to y0*).

Both rules read the same fitted network (the rule only changes how branches are
aggregated), so one fit per (effect_scale, seed) compares them exactly paired. Each
fit trains on ``--users`` simulated users (8:1:1) and is scored on a fresh population
of ``--eval-users`` users drawn with another seed (``bench_simulator``).

    python benchmarks/bench_hum_uplift_rule.py --effect-scales 1 5 --seeds 0 1 2

Writes results.json and results.md under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hmum.data.datasets.simulated import bench_simulator
from hmum.metrics.truth import uplift_errors
from hmum.models.registry import get_model


def errors(y_hat: np.ndarray, mu: np.ndarray) -> dict:
    """PEHE, correlation with the true uplift and spread ratio as K x R lists
    (``hmum.metrics.truth.uplift_errors``): y_hat, mu (N, K+1, R)."""
    t = uplift_errors(mu, y_hat)
    k, r = mu.shape[1] - 1, mu.shape[2]
    return {"pehe": t["pehe"].to_numpy().reshape(k, r).round(3).tolist(),
            "corr": t["tau_corr"].to_numpy().reshape(k, r).round(3).tolist(),
            "spread": t["spread_ratio"].to_numpy().reshape(k, r).round(3).tolist()}


def spread_cells(p: np.ndarray) -> str:
    """'mean ± std' over the seeds (rows) of p (S, C), one table cell per column."""
    sd = p.std(0, ddof=1) if len(p) > 1 else np.zeros(p.shape[1])
    return " | ".join(f"{m:.2f} ± {d:.2f}" for m, d in zip(p.mean(0), sd, strict=True))


def paired_cells(d: np.ndarray) -> str:
    """'mean difference (seeds lower / seeds)' per column of paired differences d (S, C)."""
    return " | ".join(f"{m:+.2f} ({(v < 0).sum()}/{len(v)} lower)"
                      for m, v in zip(d.mean(0), d.T, strict=True))


def protocol_parser(doc: str, out: str, *, users: int = 100_000,
                    effect_scales: tuple[float, ...] = (1.0, 5.0)) -> argparse.ArgumentParser:
    """The options every ground-truth HUM benchmark shares: --effect-scales, --seeds,
    --users (training population), --eval-users (fresh population), --threads, --out."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--effect-scales", type=float, nargs="+", default=list(effect_scales))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--users", type=int, default=users)
    ap.add_argument("--eval-users", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(out))
    return ap


def one_fit(es: float, seed: int, users: int, eval_users: int, threads: int) -> dict:
    sp = bench_simulator(None, seed, n_users=users, effect_scale=es, eval_users=eval_users)[0]
    t0 = time.perf_counter()
    est = get_model("hum", sp.train.schema, trainer={"seed": seed, "num_threads": threads})
    est.fit(sp.train, sp.valid)
    out = {"effect_scale": es, "seed": seed, "fit_s": round(time.perf_counter() - t0, 1)}
    for rule in ("paper", "within_branch"):
        est.module_.uplift = rule  # same weights, other aggregation
        out[rule] = errors(est.predict_outcomes(sp.test).astype(np.float64), sp.test.mu)
    return out


def markdown(runs: list[dict], cells: list[str]) -> str:
    lines = ["| effect_scale | rule | " + " | ".join(cells) + " |",
             "|---|---|" + "---|" * len(cells)]
    for es in sorted({r["effect_scale"] for r in runs}):
        group = [r for r in runs if r["effect_scale"] == es]
        for rule in ("paper", "within_branch"):
            p = np.array([np.ravel(r[rule]["pehe"]) for r in group])
            lines.append(f"| {es:g} | {rule} | " + spread_cells(p) + " |")
        d = np.array([np.ravel(r["within_branch"]["pehe"]) - np.ravel(r["paper"]["pehe"])
                      for r in group])
        lines.append(f"| {es:g} | within − paper (paired) | " + paired_cells(d) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = protocol_parser(__doc__, "benchmarks/results/hum_quality/uplift-rule-u100000")
    args = ap.parse_args()
    runs = []
    for es in args.effect_scales:
        for seed in args.seeds:
            runs.append(one_fit(es, seed, args.users, args.eval_users, args.threads))
            print(json.dumps(runs[-1]), flush=True)
    cells = ["t1 / usage_time", "t1 / video_views", "t2 / usage_time", "t2 / video_views"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                        "runs": runs}, indent=1) + "\n")
    md = "PEHE on a fresh population, mean ± std over seeds\n\n" + markdown(runs, cells)
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
