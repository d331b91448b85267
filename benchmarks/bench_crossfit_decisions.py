"""What the cross-fit shrinkage does to *decisions*: each model (--models, default HUM)
with one network (crossfit 1) and with shrunk members (crossfit M), per seed, deciding
with the users' true value weights on the model's relative uplift (exclusive mode,
phi > 0), scored on a fresh population by the true value as a share of the oracle's
(``hmum.decision``). For M > 1 the same members' mean without the shrinkage (alpha = 1)
is scored too.

    python benchmarks/bench_crossfit_decisions.py --seeds 0 1 2 --users 200000 \
        [--effect-scales 1 5]

Writes runs.jsonl and results.md under --out.
"""

from __future__ import annotations

import json
import time

import numpy as np

from bench_hum_uplift_rule import protocol_parser


def population(n: int, seed: int, effect_scale: float):
    """Validated users with ground truth, and their true weights (N, R)."""
    from bench_decisions import population as users_and_weights
    from hmum.data.simulator import SimulatorConfig

    return users_and_weights(SimulatorConfig(n_users=n, seed=seed, effect_scale=effect_scale))


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
    oracle = ground_truth_effects(oracle_policy(ev.mu, None, w, mode="exclusive"), ev.mu, None,
                                  w_true=w)["value"]
    def share(est) -> tuple[float, list[float]]:
        enabled = decide(hum_deltas(est, ev)["delta"], w, mode="exclusive")[1]
        eff = ground_truth_effects(enabled, ev.mu, None, w_true=w)
        # exclusive: at most one treatment per user (arm 0 = none)
        arms = np.bincount(enabled.argmax(1) + enabled.any(1), minlength=3) / len(enabled)
        return round(float(eff["value"] / oracle), 4), arms.round(3).tolist()

    out = []
    for model in args.models:
        for cf in args.crossfit:
            t0 = time.perf_counter()
            est = get_model(model, d.schema, trainer={
                "seed": seed, "num_threads": args.threads, "crossfit": cf})
            est.fit(train, valid)
            fit_s = round(time.perf_counter() - t0, 1)
            row = {"es": es, "seed": seed, "model": model, "crossfit": cf, "fit_s": fit_s}
            row["oracle_share"], row["arm_share"] = share(est)
            row["alpha"] = None
            if cf > 1:
                # the same members' mean without the shrinkage: what alpha itself adds
                alpha = est.module_.alpha.clone()
                row["alpha"] = alpha.numpy().round(3).tolist()
                est.module_.alpha.fill_(1.0)
                row["oracle_share_unshrunk"], row["arm_share_unshrunk"] = share(est)
                est.module_.alpha.copy_(alpha)
            out.append(row)
            print(json.dumps(row), flush=True)
    return out


def main() -> None:
    ap = protocol_parser(__doc__, "benchmarks/results/hum_quality/crossfit-decisions",
                         users=200_000, effect_scales=(1.0,))
    ap.add_argument("--crossfit", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--models", nargs="+", default=["hum"], help="registry names")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [r for es in args.effect_scales for s in args.seeds for r in one_seed(s, es, args)]
    (args.out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    md = []
    for es in args.effect_scales:
        lines = ["| model | crossfit | " + " | ".join(f"seed {s}" for s in args.seeds)
                 + " | mean |", "|---|---|" + "---|" * (len(args.seeds) + 1)]
        for model in args.models:
            for cf in args.crossfit:
                mine = [r for r in runs if (r.get("model", "hum"), r["crossfit"], r["es"])
                        == (model, cf, es)]
                keys = ["oracle_share"] + (["oracle_share_unshrunk"] if cf > 1 else [])
                for key in keys:
                    v = [r[key] for r in mine]
                    label = f"{cf}" + (" unshrunk" if key.endswith("unshrunk") else "")
                    lines.append(f"| {model} | {label} | " + " | ".join(f"{x:.3f}" for x in v)
                                 + f" | {np.mean(v):.3f} |")
        md.append(f"Oracle share of decisions with the true weights on each model's delta "
                  f"(exclusive, phi > 0), {args.users:,} users, effect_scale {es:g}, fresh "
                  f"{args.eval_users:,}-user population\n\n" + "\n".join(lines) + "\n")
    (args.out / "results.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
