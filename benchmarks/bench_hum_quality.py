"""HUM's uplift quality on the simulator, measured against ground truth on fresh users.

For each seed s: simulate ``--users`` users (seed s, ``--effect-scale``), split 8:1:1,
train every variant on the 80 % (the 10 % valid part drives early stopping and the
LR schedule), and score it on a *fresh* population of ``--eval-users`` users drawn
with another seed (``hmum.data.datasets.simulated``), never on the small test split.
Reported per (treatment, response), mean ± std over seeds: PEHE, ATE bias,
correlation with the true uplift, spread ratio, RMSE of the relative uplift delta,
Qini and the oracle's Qini, plus each model's paired difference to the best
baseline with a bootstrap interval (``hmum bench``'s harness does all of it).

``--study variants`` runs the variant study that chose the default ``hum`` (loss,
weight averaging, batch size, field selector, KL); ``--study final`` the final
defaults against the paper's settings and the baselines.

Usage:
  python benchmarks/bench_hum_quality.py --study variants --users 100000 --effect-scale 5
  python benchmarks/bench_hum_quality.py --study final --users 200000 --effect-scale 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hmum.models.arm_means import ArmMeansEstimator
from hmum.models.hum import HUMEstimator
from hmum.models.meta import SLearnerEstimator
from hmum.models.registry import ModelEntry, get_entry, list_models
from hmum.workflows.bench import run_bench

# The settings a variant varies are explicit; entries labelled "(default)" take HUM's
# current defaults otherwise (their committed results name the defaults of their run).
EMA = {"ema_share": 0.1}
NO_EMA = {"ema_share": None}
DEV = {"loss": "deviance"}
MSE = {"loss": "mse"}

VARIANTS = [
    ModelEntry("hum_paper_v", HUMEstimator, MSE, "HUM, paper settings (MSE, no EMA)", True, NO_EMA),
    ModelEntry("hum_ema", HUMEstimator, MSE, "HUM + EMA", True, EMA),
    ModelEntry("hum_dev", HUMEstimator, DEV, "HUM + deviance", True, NO_EMA),
    ModelEntry("hum_ema_dev", HUMEstimator, DEV, "HUM + EMA + deviance", True, EMA),
    ModelEntry("hum_ema_dev_fw", HUMEstimator, {**DEV, "selector": "fieldwise"},
               "HUM + EMA + dev + fieldwise selector", True, EMA),
    ModelEntry("hum_ema_dev_h2", HUMEstimator, {**DEV, "selector_heads": 2},
               "HUM + EMA + dev + 2 selector heads", True, EMA),
    ModelEntry("hum_ema_dev_b1024", HUMEstimator, DEV, "HUM + EMA + dev, batch 1024", True,
              {**EMA, "batch_size": 1024}),
    ModelEntry("hum_ema_dev_nokl", HUMEstimator, {**DEV, "kl_weight": 0.0},
               "HUM + EMA + dev, w/o KL", True, EMA),
    ModelEntry("hum_ema3_dev", HUMEstimator, DEV, "HUM + EMA (0.3 of the run) + deviance", True,
              {"ema_share": 0.3}),
    ModelEntry("hum_ema_dev_bpt2", HUMEstimator, {**DEV, "branches_per_treatment": 2},
               "HUM + EMA + dev, 2 branches per treatment", True, EMA),
    # weight decay (Adam's L2) against the over-spread uplift at effect_scale 1
    ModelEntry("hum_wd1e4", HUMEstimator, DEV, "HUM (default) + weight decay 1e-4", True,
               {**EMA, "weight_decay": 1e-4}),
    ModelEntry("hum_wd1e3", HUMEstimator, DEV, "HUM (default) + weight decay 1e-3", True,
               {**EMA, "weight_decay": 1e-3}),
    # both passes of a branch query the selector / the gates with the branch's treatment
    # (HUMConfig.selector_query, gate_query)
    ModelEntry("hum_bsel", HUMEstimator, {**DEV, "selector_query": "branch"},
               "HUM (default) + branch-queried selector", True, EMA),
    ModelEntry("hum_bgate", HUMEstimator, {**DEV, "gate_query": "branch"},
               "HUM (default) + branch-queried gates", True, EMA),
    ModelEntry("hum_bboth", HUMEstimator,
               {**DEV, "selector_query": "branch", "gate_query": "branch"},
               "HUM (default) + branch-queried selector and gates", True, EMA),
    # the field-wise selector (the best lead at effect_scale 1) with branch-queried gates
    # (the one query change that lowered PEHE in every cell at effect_scale 1)
    ModelEntry("hum_fw_bgate", HUMEstimator,
               {**DEV, "selector": "fieldwise", "gate_query": "branch"},
               "HUM (default) + fieldwise selector + branch-queried gates", True, EMA),
    # smaller MMoE blocks than the first [128, 64] x 4: the many-arm fit cost (social
    # pressure 4.4x the S-Learner) was the experts' activations; [64, 32] became the default
    ModelEntry("hum_e2", HUMEstimator, {**DEV, "n_experts": 2, "expert_sizes": [128, 64]},
               "HUM (default) with 2 experts of [128, 64] per branch", True, EMA),
    ModelEntry("hum_s64", HUMEstimator, {**DEV, "expert_sizes": [64, 32]},
               "HUM (default) with experts of [64, 32]", True, EMA),
    ModelEntry("slearner_v", SLearnerEstimator, MSE, "S-Learner (paper settings)", False, NO_EMA),
    ModelEntry("slearner_ema_dev", SLearnerEstimator, DEV, "S-Learner + EMA + deviance", False,
               EMA),
    ModelEntry("arm_means_v", ArmMeansEstimator, {}, "Arm means (no personalization)"),
]


def final_specs() -> list:
    names = ["hum", "hum_paper", "hum_nokl", "slearner", "slearner_plus", "arm_means"]
    return [get_entry(n) for n in names if n in list_models()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", choices=["variants", "final"], default="final")
    ap.add_argument("--models", default=None,
                    help="comma-separated models of either study (default: the study's own)")
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--eval-users", type=int, default=200_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--effect-scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    specs = VARIANTS if args.study == "variants" else final_specs()
    if args.models:  # from both studies, so a variant can run beside the final defaults
        pool = {s.name: s for s in [*VARIANTS, *final_specs()]}
        unknown = [m for m in args.models.split(",") if m not in pool]
        if unknown:
            raise SystemExit(f"--models: unknown {unknown}; expected some of {sorted(pool)}")
        specs = [pool[m] for m in args.models.split(",")]
    out = args.out or Path(f"runs/bench_hum_quality/{args.study}-u{args.users}"
                           f"-es{args.effect_scale:g}")
    t0 = time.perf_counter()
    res = run_bench(
        "simulator", specs, args.seeds, out, epochs=args.epochs, threads=args.threads,
        options={"n_users": args.users, "effect_scale": args.effect_scale,
                 "eval_users": args.eval_users},
    )
    print(res.markdown)
    print(f"{res.fitted} cells fitted, {res.reused} reused, {time.perf_counter() - t0:.0f} s; "
          f"tables in {res.files['markdown']}")


if __name__ == "__main__":
    main()
