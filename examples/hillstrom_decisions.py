"""The whole decision path on a real randomized experiment: the Hillstrom e-mail test.

MineThatData E-mail Analytics and Data Mining Challenge (Kevin Hillstrom, 2008):
64,000 customers, one third each randomly sent the Mens e-mail, the Womens e-mail or
no e-mail; two treatments (K = 2) and, here, two responses (R = 2): ``visit`` (the
site within two weeks, 0/1) and ``spend`` (dollars). hmum never downloads data: get
the file ``Kevin_Hillstrom_MineThatData_E-MailAnalytics_DataMiningChallenge_2008.03.20.csv``
from the challenge's page on the MineThatData blog (minethatdata.com, March 2008) or a
mirror of it (it is also packaged by scikit-uplift as ``fetch_hillstrom``), then run

    .venv/bin/python examples/hillstrom_decisions.py --data PATH/TO/THE.csv --out runs/hillstrom

What it does (docs/decisions.md, "Real logged data"):

1. reads the file with ``hmum.data.datasets.load_hillstrom`` (visit, spend) and splits
   it, stratified by arm and seeded, into train (40 %), valid (10 %, early stopping),
   calibration (25 %, fits the guardrail rule) and evaluation (25 %, never seen by
   any fit);
2. trains HUM on train / valid;
3. decides per customer with fixed *business* weights on the relative uplifts
   (``--weights visit,spend``; default 0.5,0.5: a 1 % lift in visits is worth as much
   as a 1 % lift in spend) in exclusive mode (at most one e-mail: only the logged
   arms can be evaluated off-policy), plus a guardrail rule (``--guardrail``, default
   ``visit>=0``: spend as high as possible without losing visits) fitted on the
   calibration part with the doubly-robust lower bound;
4. evaluates every strategy off-policy on the evaluation part: IPW, self-normalized
   IPW and doubly robust (HUM as the outcome model), each with a seeded percentile
   bootstrap interval, against every whole-population strategy (nobody, everyone the
   Mens e-mail, everyone the Womens e-mail) and a random policy.

Writes ``ope_table.{csv,md}``, ``decision_config/`` (the frozen rule) and
``report.md`` to ``--out``; prints the table. ``main(argv)`` returns the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True,
                   help="the Hillstrom CSV (or a folder holding it)")
    p.add_argument("--out", type=Path, default=Path("runs/hillstrom"), help="report folder")
    p.add_argument("--weights", default="0.5,0.5",
                   help="fixed business weights of visit and spend (relative uplifts)")
    p.add_argument("--guardrail", default="visit>=0",
                   help="RESPONSE>=FLOOR for the guardrail rule ('' for none)")
    p.add_argument("--epochs", type=int, default=10, help="HUM's maximum epochs")
    p.add_argument("--batch-size", type=int, default=1024, help="HUM's training batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--n-boot", type=int, default=500, help="bootstrap resamples")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from hmum.data.datasets import load_hillstrom
    from hmum.data.split import split_indices
    from hmum.decision.evaluation import off_policy_table
    from hmum.decision.guardrails import fit_rule, parse_guardrail
    from hmum.decision.policies import logged_arm, population_policy, random_policy
    from hmum.decision.rules import DecisionRule, save_rule
    from hmum.exceptions import DecisionConfigError
    from hmum.models.hum import HUMEstimator
    from hmum.workflows.ddm import hum_deltas, ope_markdown

    args = parse_args(argv)
    try:
        weights = [float(v) for v in args.weights.split(",")]
    except ValueError:
        raise SystemExit(f"error: --weights: expected two comma-separated numbers, got "
                         f"{args.weights!r}") from None
    if len(weights) != 2 or min(weights) < 0 or sum(weights) <= 0:
        raise SystemExit(f"error: --weights: expected two numbers >= 0 (visit, spend) with a "
                         f"positive sum, got {args.weights!r}")
    t0 = time.perf_counter()
    data = load_hillstrom(args.data, responses=("visit", "spend"))
    s = data.schema
    rn, tn = s.response_names, s.arms[1:]
    tr, va, cal, ev = split_indices(data.arm, (0.4, 0.1, 0.25, 0.25), seed=args.seed)
    print(f"{len(data):,} customers: {len(tr):,} train, {len(va):,} valid, {len(cal):,} "
          f"calibration, {len(ev):,} evaluation")

    if args.epochs < 1 or args.batch_size < 1:
        raise SystemExit(f"error: --epochs and --batch-size must be >= 1, got {args.epochs} and "
                         f"{args.batch_size}")
    trainer = {"max_epochs": args.epochs, "seed": args.seed, "batch_size": args.batch_size}
    if args.threads:
        trainer["num_threads"] = args.threads
    hum = HUMEstimator(s, trainer=trainer).fit(data.take(tr), data.take(va))
    print(f"HUM trained ({time.perf_counter() - t0:.0f}s)")

    rule = DecisionRule(rn, tn, mode="exclusive", weights="fixed", fixed_weights=weights)
    d_cal, d_ev = data.take(cal), data.take(ev)
    x_cal, x_ev = hum_deltas(hum, d_cal), hum_deltas(hum, d_ev)
    n = len(d_ev)
    pols = {
        "nobody (no e-mail)": population_policy(n, 2, 0),
        "everyone mens_email": population_policy(n, 2, 1),
        "everyone womens_email": population_policy(n, 2, 2),
        f"HMUM, business weights {weights}": rule.decide(x_ev["delta"]),
        "random": random_policy(n, 2, seed=args.seed, mode="exclusive"),
    }
    for r, name in enumerate(rn):  # one response alone: what the business weights trade
        one = [1.0 if j == r else 0.0 for j in range(len(rn))]
        pols[f"{name} only"] = DecisionRule(rn, tn, mode="exclusive", weights="fixed",
                                            fixed_weights=one).decide(x_ev["delta"])
    guard_info = None
    if args.guardrail:
        try:
            g = parse_guardrail(args.guardrail, rn)
            grule, rep = fit_rule(
                x_cal["delta"], None, x_cal["y_hat"][:, 0], responses=rn, treatments=tn,
                guardrails=[g], mode="exclusive", weights="fixed", fixed_weights=weights,
                estimate="dr", logged={"y": d_cal.y, "arm": d_cal.arm, "y_hat": x_cal["y_hat"]})
            pols[f"guardrail {g.text()} (dr fit)"] = grule.decide(x_ev["delta"])
            save_rule(grule, args.out / "decision_config")
            guard_info = {"rule": grule.to_dict(), "fit": rep}
        except DecisionConfigError as e:
            print(f"guardrail rule not available: {e}")
    arms = {name: logged_arm(e) for name, e in pols.items()}
    table = off_policy_table(arms, d_ev.y, d_ev.arm, y_hat=x_ev["y_hat"],
                             methods=("ipw", "snipw", "dr"), response_names=rn,
                             n_boot=args.n_boot, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "ope_table.csv", index=False)
    md = ope_markdown(table, rn)
    (args.out / "ope_table.md").write_text(md + "\n")
    shares = {name: np.bincount(a, minlength=3).tolist() for name, a in arms.items()}
    lines = [
        "# Hillstrom e-mail test: decisions evaluated off-policy", "",
        f"{len(data):,} customers; HUM trained on {len(tr):,} (+{len(va):,} valid); every "
        f"strategy scored on {n:,} evaluation customers no fit has seen. Δ: change vs nobody "
        "e-mailed, 95 % percentile bootstrap intervals "
        f"({args.n_boot} seeded resamples); ipw / snipw / dr as in docs/decisions.md.", "",
        md, "",
        "Customers per arm (no e-mail, mens, womens) under each strategy: "
        + json.dumps(shares), "",
    ]
    if guard_info is not None:
        ch = guard_info["fit"]["chosen"]
        lines += [f"Guardrail rule {args.guardrail}: fitted on {len(cal):,} calibration "
                  f"customers, multiplier per response {ch['response_bonus']}, sigma "
                  f"{[round(x, 6) for x in ch['sigma']]}; calibration dr lower bound of Δ: "
                  + ", ".join(f"{r} {100 * v:+.3f}%" for r, v in ch["dr_lower"].items()), ""]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(md)
    print(f"wrote {args.out / 'report.md'} ({time.perf_counter() - t0:.0f}s)")
    return {"table": table, "policies": pols, "arms": arms, "guardrail": guard_info,
            "evaluation": d_ev, "y_hat": x_ev["y_hat"]}


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ValueError, OSError) as e:  # the loader's DataError names the file and column
        raise SystemExit(f"error: {e}") from None
