"""Where HUM's uplift error at weak effects comes from, and whether it can be measured.

Two screens on the simulator (``--users`` users, ``--effect-scale``, scored on a fresh
200 000-user population drawn with another seed, as ``bench_hum_quality.py``):

* ``--mode seeds``: ``--members`` fits of one model on the *same* rows with different
  initialization seeds, and the PEHE of their mean. If the error were the optimizer's
  (initialization, batch order), the mean of the fits would remove it; if it is the
  sample's, every fit repeats it.
* ``--mode blp``: a cross-fit model (``trainer={"crossfit": 2}``), its shrinkage alpha
  from the members' agreement (``hmum.models.crossfit``) against alpha from a
  cross-fitted best linear predictor: member j's uplift on the rows it never trained on
  (the other fold and the validation rows), regressed on a doubly robust pseudo-outcome
  (unbiased for the true uplift in a randomized experiment, arm shares as the
  propensities; ``hmum.decision.evaluation.ope_terms``). Reported: both alphas, the
  BLP's standard error and the PEHE with each alpha and with none.

Usage: python benchmarks/bench_hum_noise.py --mode seeds --model hum --seeds 0
       python benchmarks/bench_hum_noise.py --mode blp --model hum_crossfit --seeds 0
Results: one JSON line per fit in --out (default
runs/bench_hum_noise/<mode>-<model>-u<users>-es<scale>.jsonl).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from hmum.decision.evaluation import ope_terms
from hmum.metrics.truth import uplift_errors
from hmum.models.crossfit import fold_ids
from hmum.models.registry import get_entry, get_model
from hmum.workflows.bench import load_dataset_splits


def pehe(y_hat: np.ndarray, mu: np.ndarray) -> list[float]:
    """(N, K+1, R) estimated and true outcomes -> PEHE per (k, r), row-major."""
    return uplift_errors(mu, y_hat)["pehe"].round(3).tolist()


def seed_members(split, args, seed: int):
    mu = split.test.mu
    preds = []
    for j in range(args.members):
        # member 0 is the bench's own fit of this seed (same trainer seed)
        est = get_model(args.model, split.train.schema,
                        trainer={"seed": seed + 1000 * j, "num_threads": args.threads})
        t0 = time.perf_counter()
        est.fit(split.train, split.valid)
        preds.append(est.predict_outcomes(split.test))
        yield {"member": j, "fit_s": round(time.perf_counter() - t0, 1),
               "pehe": pehe(preds[-1], mu), "pehe_of_mean": pehe(np.mean(preds, 0), mu)}


def _outcomes(est, member, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([est._outcomes(member, x[s:s + 65536])["y_hat"].double().numpy()
                               for s in range(0, len(x), 65536)])


def blp_alpha(est, split, seed: int) -> dict:
    """alpha (K, R) of the cross-fitted BLP and its standard error (see the docstring)."""
    mod, tr, va = est.module_, split.train, split.valid
    K = tr.schema.K  # noqa: N806
    ratio, center = mod.ratio.numpy(), mod.center.numpy()
    x_tr = torch.from_numpy(np.ascontiguousarray(est.encode(tr)))
    fold = fold_ids((x_tr, torch.from_numpy(tr.arm), torch.from_numpy(tr.y.astype(np.float32))),
                    len(mod.members), seed).numpy()
    x = torch.cat([x_tr, torch.from_numpy(np.ascontiguousarray(est.encode(va)))])
    arm, y = np.concatenate([tr.arm, va.arm]), np.concatenate([tr.y, va.y]).astype(np.float64)
    fold = np.concatenate([fold, np.full(len(va.arm), -1)])  # -1: no member trained on it

    def u_of(yy):  # the module's uplift scale: log ratio (positive link) or difference
        return mod.uplift_scale(torch.from_numpy(yy)).numpy()

    def dev(y0, u):  # linearized deviation of the response-scale uplift from the center
        return np.where(ratio, y0 * np.exp(center) * (u - center), u - center)

    def offset(y0):
        return np.where(ratio, y0 * (np.exp(center) - 1), center + 0 * y0)

    ys = [_outcomes(est, m, x) for m in mod.members]
    val = fold == -1
    z_bar = dev(np.mean([yy[val][:, :1] for yy in ys], 0), np.mean([u_of(yy[val]) for yy in ys], 0))
    den = (z_bar ** 2).mean(0)
    num, se = [], []
    for j, yy in enumerate(ys):
        held = fold != j
        yh, ah, obs = yy[held], arm[held], y[held]
        # doubly robust pseudo-outcome (n, K, R): the DR terms of "always arm k" minus
        # those of "always control" (arm shares of these rows as the propensities)
        dr = [ope_terms(obs, ah, np.full_like(ah, k), y_hat=yh, method="dr")[0]
              for k in range(K + 1)]
        psi = np.stack([dr[k] - dr[0] for k in range(1, K + 1)], 1)
        prod = (psi - offset(yh[:, :1])) * dev(yh[:, :1], u_of(yh))
        num.append(prod.mean(0))
        se.append(prod.std(0) / np.sqrt(len(prod)))
    raw = np.mean(num, 0) / den
    return {"alpha": np.clip(raw, 0.0, 1.0), "raw": raw, "se": np.mean(se, 0) / den}


def blp_fit(split, args, seed: int):
    est = get_model(args.model, split.train.schema,
                    trainer={"seed": seed, "num_threads": args.threads})
    t0 = time.perf_counter()
    est.fit(split.train, split.valid)
    fit_s = time.perf_counter() - t0
    mod = est.module_
    center, agree = mod.center.numpy().copy(), mod.alpha.numpy().copy()
    blp = blp_alpha(est, split, seed)
    rec = {"fit_s": round(fit_s, 1), "alpha_agreement": agree.ravel().round(3).tolist(),
           "alpha_blp": blp["alpha"].ravel().round(3).tolist(),
           "blp_unclipped": blp["raw"].ravel().round(3).tolist(),
           "blp_se": blp["se"].ravel().round(3).tolist()}
    for name, a in [("agreement", agree), ("blp", blp["alpha"]), ("none", np.ones_like(agree))]:
        mod.set_shrinkage(center, a)
        rec[f"pehe_{name}"] = pehe(est.predict_outcomes(split.test), split.test.mu)
    mod.set_shrinkage(center, agree)
    yield rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["seeds", "blp"], required=True)
    ap.add_argument("--model", default="hum")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--eval-users", type=int, default=200_000)
    ap.add_argument("--effect-scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(f"runs/bench_hum_noise/{args.mode}-{args.model}-u{args.users}"
                           f"-es{args.effect_scale:g}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.mode == "blp" and get_entry(args.model).trainer.get("crossfit", 1) < 2:
        raise SystemExit(f"--model {args.model}: --mode blp needs a cross-fit model, "
                         "e.g. hum_crossfit")
    run = seed_members if args.mode == "seeds" else blp_fit
    with out.open("a") as f:
        for seed in args.seeds:
            split = load_dataset_splits("simulator", None, seed=seed, n_users=args.users,
                                        effect_scale=args.effect_scale,
                                        eval_users=args.eval_users)[0]
            for rec in run(split, args, seed):
                rec = {"mode": args.mode, "model": args.model, "seed": seed, **rec}
                print(json.dumps(rec), flush=True)
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
