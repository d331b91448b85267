"""Cross-fit reliability shrinkage (``TrainerConfig.crossfit``) on ground truth: HUM and
the S-Learner with one network (crossfit 1) and with two members on disjoint folds
whose uplift is shrunk by its measured reliability (crossfit 2), next to the arm means
(and HUM with two selector heads, another variant measured the same way).

One fit per (effect_scale, seed, variant) on ``--users`` simulated users (8:1:1), scored
on a fresh population of ``--eval-users`` users drawn with another seed.

    python benchmarks/bench_hum_crossfit.py --effect-scales 1 5 --seeds 0 1 2

Writes runs.jsonl (one line per fit, appended as they finish), results.json and
results.md (PEHE mean ± std over seeds; paired differences to --baseline) under --out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench_hum_uplift_rule import errors, paired_cells, protocol_parser, spread_cells
from hmum.data.datasets.simulated import bench_simulator
from hmum.models.registry import get_model

CELLS = ["t1 / usage_time", "t1 / video_views", "t2 / usage_time", "t2 / video_views"]
#: label -> (registry name, trainer overrides, model overrides)
VARIANTS = {
    "hum": ("hum", {"crossfit": 1}, None),
    "hum crossfit 2": ("hum", {"crossfit": 2}, None),
    "hum crossfit 4": ("hum", {"crossfit": 4}, None),
    "hum selector_heads 2": ("hum", {"crossfit": 1}, {"selector_heads": 2}),
    "slearner": ("slearner", {"crossfit": 1}, None),
    "slearner crossfit 2": ("slearner", {"crossfit": 2}, None),
    "slearner crossfit 4": ("slearner", {"crossfit": 4}, None),
    "arm_means": ("arm_means", None, None),
}


def one_fit(sp, es: float, seed: int, label: str, threads: int) -> dict:
    name, trainer, model = VARIANTS[label]
    kw = {} if trainer is None else {"trainer": {"seed": seed, "num_threads": threads, **trainer}}
    est = get_model(name, sp.train.schema, model=model, **kw)
    t0 = time.perf_counter()
    est.fit(sp.train, sp.valid)
    fit_s = time.perf_counter() - t0
    err = errors(est.predict_outcomes(sp.test).astype(np.float64), sp.test.mu)
    alpha = getattr(getattr(est, "module_", None), "alpha", None)
    return {"es": es, "seed": seed, "variant": label, "fit_s": round(fit_s, 1), **err,
            "alpha": None if alpha is None else alpha.numpy().round(3).tolist()}


def markdown(runs: list[dict], baselines: list[str]) -> str:
    labels = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    lines = ["| effect_scale | variant | " + " | ".join(CELLS) + " | fit s (median) |",
             "|---|---|" + "---|" * (len(CELLS) + 1)]
    for es in sorted({r["es"] for r in runs}):
        by = {v: {r["seed"]: r for r in runs if r["es"] == es and r["variant"] == v}
              for v in labels}
        for v in labels:
            if not by[v]:
                continue
            p = np.array([np.ravel(r["pehe"]) for r in by[v].values()])
            fit = np.median([r["fit_s"] for r in by[v].values()])
            lines.append(f"| {es:g} | {v} | " + spread_cells(p) + f" | {fit:.1f} |")
        for baseline in baselines:
            for v in labels:
                seeds = sorted(set(by[v]) & set(by.get(baseline, {})))
                if v == baseline or not seeds:
                    continue
                d = np.array([np.ravel(by[v][s]["pehe"]) - np.ravel(by[baseline][s]["pehe"])
                              for s in seeds])
                lines.append(f"| {es:g} | {v} − {baseline} (paired) | " + paired_cells(d)
                             + " | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = protocol_parser(__doc__, "benchmarks/results/hum_quality/crossfit-u100000")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                    metavar="VARIANT", help=f"of {list(VARIANTS)}; none: only tabulate")
    ap.add_argument("--baselines", nargs="+", default=["slearner", "hum"],
                    choices=list(VARIANTS), metavar="VARIANT",
                    help="paired differences of every variant to each of these")
    ap.add_argument("--from-runs", type=Path, nargs="*", default=[],
                    help="runs.jsonl files of earlier runs to tabulate with (no refit)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [json.loads(line) for f in args.from_runs for line in f.read_text().splitlines()]
    with (args.out / "runs.jsonl").open("a") as log:
        for es in args.effect_scales if args.variants else []:
            for seed in args.seeds:
                sp = bench_simulator(None, seed, n_users=args.users, effect_scale=es,
                                     eval_users=args.eval_users)[0]
                for label in args.variants:
                    runs.append(one_fit(sp, es, seed, label, args.threads))
                    print(json.dumps(runs[-1]), file=log, flush=True)
                    print(json.dumps(runs[-1]), flush=True)
    meta = vars(args) | {"out": str(args.out), "from_runs": [str(f) for f in args.from_runs]}
    (args.out / "results.json").write_text(json.dumps({"args": meta, "runs": runs}, indent=1)
                                           + "\n")
    md = ("PEHE on a fresh population, mean ± std over seeds; paired: mean difference "
          "to a baseline and in how many seeds it is lower\n\n"
          + markdown(runs, args.baselines))
    (args.out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
