"""What the cross-fit shrinkage does to *decisions*: HUM with one network (crossfit 1) and
with two shrunk members (crossfit 2), per seed, deciding with the users' true value
weights on HUM's relative uplift (exclusive mode, phi > 0), scored on a fresh population
by the true value as a share of the oracle's (``hmum.decision``).

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
    out = []
    for cf in args.crossfit:
        t0 = time.perf_counter()
        est = get_model("hum", d.schema, trainer={"seed": seed, "num_threads": args.threads,
                                                  "crossfit": cf})
        est.fit(train, valid)
        delta = hum_deltas(est, ev)["delta"]
        enabled = decide(delta, w, mode="exclusive")[1]
        eff = ground_truth_effects(enabled, ev.mu, None, w_true=w)
        out.append({"es": es, "seed": seed, "crossfit": cf,
                    "fit_s": round(time.perf_counter() - t0, 1),
                    "oracle_share": round(float(eff["value"] / oracle), 4),
                    # exclusive: at most one treatment per user (arm 0 = none)
                    "arm_share": (np.bincount(enabled.argmax(1) + enabled.any(1), minlength=3)
                                  / len(enabled)).round(3).tolist(),
                    "alpha": None if cf == 1 else est.module_.alpha.numpy().round(3).tolist()})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = protocol_parser(__doc__, "benchmarks/results/hum_quality/crossfit-decisions",
                         users=200_000, effect_scales=(1.0,))
    ap.add_argument("--crossfit", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [r for es in args.effect_scales for s in args.seeds for r in one_seed(s, es, args)]
    (args.out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    md = []
    for es in args.effect_scales:
        lines = ["| crossfit | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |",
                 "|---|" + "---|" * (len(args.seeds) + 1)]
        for cf in args.crossfit:
            v = [r["oracle_share"] for r in runs if r["crossfit"] == cf and r["es"] == es]
            lines.append(f"| {cf} | " + " | ".join(f"{x:.3f}" for x in v)
                         + f" | {np.mean(v):.3f} |")
        md.append(f"Oracle share of decisions with the true weights on HUM's delta (exclusive, "
                  f"phi > 0), {args.users:,} users, effect_scale {es:g}, fresh "
                  f"{args.eval_users:,}-user population\n\n" + "\n".join(lines) + "\n")
    (args.out / "results.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
