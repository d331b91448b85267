"""Where decisions lose value: the *level* of the uplift or its *shape*, per model and seed.

Decisions with the users' true value weights (exclusive mode, phi > 0), scored on a
fresh population as a share of the oracle's value, on five versions of the relative
uplift delta (N, K, R):

* ``as is``: the model's delta;
* ``model shape + true level``: the model's delta shifted per (treatment, response) so
  that its mean over the users equals the true one (what a perfect level would add);
* ``true shape + model level``: the true delta shifted to the model's mean;
* ``model level, no shape``: the model's mean delta for every user (its level alone:
  what a full shrinkage of its heterogeneity would leave);
* ``model + dr level (train rows)`` / ``(valid rows)``: the model's delta shifted by the
  doubly robust correction of its level, E[y^a] = mean_n y_hat^a(n) + the arm-a rows'
  mean residual y - y_hat^a on the training (or the validation) split;
* ``true shape + dr level``: the true delta shifted by the level error of the doubly
  robust estimate of E[y^k] / E[y^0] - 1 on the training split *with the true means as
  its outcome model* (no model can adjust better: its error is the outcome noise of
  the training split alone), i.e. the ceiling of any estimator of this size;
* ``true shape + raw level``: the same with the arms' raw means.

    python benchmarks/bench_decision_ceiling.py --seeds 0 1 2 --users 200000 \
        [--effect-scales 1] [--models hum slearner]

Writes runs.jsonl and results.md under --out.
"""

from __future__ import annotations

import json
import time

import numpy as np

from bench_crossfit_decisions import population
from bench_hum_uplift_rule import protocol_parser


def arm_mean_residual(y: np.ndarray, arm: np.ndarray, fit: np.ndarray, k: int) -> np.ndarray:
    """(K+1, R): per arm a, the mean of y - fit^a over the rows that got arm a.

    y (N, R), arm (N,), fit (N, >= K+1, R): the true means or a model's predictions.
    """
    resid = y - fit[np.arange(len(arm)), arm]  # (N, R) factual residuals
    return np.stack([resid[arm == a].mean(0) for a in range(k + 1)])


def level_shift(y: np.ndarray, arm: np.ndarray, mu: np.ndarray, k: int, dr: bool):
    """(K, R): estimated minus true E[y^k] / E[y^0] - 1 on these rows (arms 0..K).

    y (N, R), arm (N,), mu (N, >= K+1, R) the true means; ``dr``: mean_n mu^a plus
    the arm-a rows' mean residual y - mu^a (randomized arms), else the raw arm means.
    """
    est = (mu[:, : k + 1].mean(0) + arm_mean_residual(y, arm, mu, k) if dr
           else np.stack([y[arm == a].mean(0) for a in range(k + 1)]))
    true = mu[:, : k + 1].mean(0)
    return (est[1:] / est[:1] - 1) - (true[1:] / true[:1] - 1)


def one_seed(seed: int, es: float, args) -> list[dict]:
    from hmum.data.datasets._common import split3
    from hmum.data.datasets.simulated import EVAL_SEED_OFFSET
    from hmum.decision.evaluation import ground_truth_effects
    from hmum.decision.policies import decide, oracle_policy
    from hmum.models.registry import get_model
    from hmum.workflows.ddm import hum_deltas

    d, _ = population(args.users, seed, es)
    train, valid, _ = split3(d, (0.8, 0.1, 0.1), seed)
    ev, w = population(args.eval_users, seed + EVAL_SEED_OFFSET, es)
    k = d.schema.K
    oracle = ground_truth_effects(oracle_policy(ev.mu, None, w, mode="exclusive"), ev.mu, None,
                                  w_true=w)["value"]
    true_delta = ev.mu[:, 1: k + 1] / ev.mu[:, :1] - 1  # (N, K, R)

    def share(delta: np.ndarray) -> float:
        enabled = decide(delta, w, mode="exclusive")[1]
        return round(float(ground_truth_effects(enabled, ev.mu, None, w_true=w)["value"]
                           / oracle), 4)

    row = {"es": es, "seed": seed, "model": "(truth)"}
    for name, dr in (("dr", True), ("raw", False)):
        shift = level_shift(train.y, train.arm, train.mu, k, dr)
        row[f"true shape + {name} level"] = share(true_delta + shift[None])
        row[f"{name} level error"] = (100 * shift).round(3).tolist()
    print(json.dumps(row), flush=True)
    out = [row]
    for model in args.models:
        t0 = time.perf_counter()
        est = get_model(model, d.schema, trainer={"seed": seed, "num_threads": args.threads})
        est.fit(train, valid)
        pred = hum_deltas(est, ev)
        delta = pred["delta"]
        error = delta.mean(0) - true_delta.mean(0)  # (K, R) the model's level error
        plug = pred["y_hat"].mean(0)[: k + 1]  # (K+1, R) levels on ev
        row = {"es": es, "seed": seed, "model": model,
               "fit_s": round(time.perf_counter() - t0, 1),
               "as is": share(delta),
               "model shape + true level": share(delta - error[None]),
               "true shape + model level": share(true_delta + error[None]),
               "model level, no shape": share(np.broadcast_to(delta.mean(0), delta.shape)),
               "model level error": (100 * error).round(3).tolist()}
        for part_name, part in (("train", train), ("valid", valid)):
            fit = np.asarray(est.predict_outcomes(part), dtype=np.float64)
            lev = plug + arm_mean_residual(part.y, part.arm, fit, k)
            shift = (lev[1:] / lev[:1]) - (plug[1:] / plug[:1])  # (K, R)
            row[f"model + dr level ({part_name} rows)"] = share(delta + shift[None])
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


COLUMNS = ("as is", "model shape + true level", "true shape + model level",
           "model level, no shape",
           "model + dr level (train rows)", "model + dr level (valid rows)",
           "true shape + dr level", "true shape + raw level")


def table(runs: list[dict], es: float, args) -> str:
    """One row per (model, version), one column per seed, and the mean."""
    lines = ["| model | delta | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |",
             "|---|---|" + "---|" * (len(args.seeds) + 1)]
    for model in ["(truth)", *args.models]:
        mine = [r for r in runs if r["model"] == model and r["es"] == es]
        for col in COLUMNS:
            if col in mine[0]:
                v = [r[col] for r in mine]
                lines.append(f"| {model} | {col} | " + " | ".join(f"{x:.3f}" for x in v)
                             + f" | {np.mean(v):.3f} |")
    return (f"Oracle share of decisions with the true weights (exclusive, phi > 0), "
            f"{args.users:,} users (80 % training split), effect_scale {es:g}, fresh "
            f"{args.eval_users:,}-user population\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    ap = protocol_parser(__doc__, "benchmarks/results/hum_quality/decision-ceiling",
                         users=200_000, effect_scales=(1.0,))
    ap.add_argument("--models", nargs="+", default=["hum", "slearner"], help="registry names")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [r for es in args.effect_scales for s in args.seeds for r in one_seed(s, es, args)]
    (args.out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    md = "\n".join(table(runs, es, args) for es in args.effect_scales)
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
