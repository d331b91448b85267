"""Can the experiment itself tell whether a phi interval is calibrated? (issue 16)

The coverage of a per-user interval of phi can be checked on simulated ground truth,
but a platform has only its logged experiment. The best it could do is estimate the
mean squared error of phi-hat from the outcomes: with a doubly robust pseudo-outcome
psi (unbiased for the user's true phi given x), E[(psi - phi_hat)^2] = MSE(phi_hat) +
E[(psi - phi)^2], so an MSE estimate needs the pseudo-outcome's noise E[(psi - phi)^2]
(which no user reveals) and, even when it is known exactly, has a sampling error of
sd((psi - phi_hat)^2) / sqrt(n).

This script measures that sampling error with everything in the platform's favour: the
simulator's true mu as the nuisance (no outcome-model error), the logged propensities,
the users' true weights, and the noise term taken from the truth. phi_hat is the
per-arm means' phi fitted on a separate training population (a real estimator whose
MSE is known here). It prints, per world and effect_scale, the MSE of phi_hat, the
noise variance of psi, the standard error of the MSE estimate at --users users, and the
users an estimate within +-25 % of the MSE would need.

Usage: python benchmarks/bench_bound_checkability.py [--users 100000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench_decisions import population as validated_population
from hmum.data.simulator import CONTESTED_WORLD, SimulatorConfig
from hmum.decision.core import relative_uplift
from hmum.decision.evaluation import ope_terms


def population(world: str, effect_scale: float, seed: int, n: int):
    """Validated users and their true weights (N, R) of ``world`` (bench_decisions')."""
    extra = CONTESTED_WORLD if world == "contested" else {}
    return validated_population(SimulatorConfig(n_users=n, seed=seed,
                                                effect_scale=effect_scale, **extra))


def dr_delta(d) -> np.ndarray:
    """Per-user DR pseudo-outcome of delta (N, K, R) with the true mu as the nuisance.

    m_k (N, R) = the DR term of "everyone gets arm k" (``ope_terms``: mu_k + 1{a=k}(y -
    mu_k) / p_k, with the logged propensity); delta_k = m_k / m_0 - 1 linearized at mu:
    psi = delta + (m_k - mu_k) / mu_0 - (mu_k / mu_0) (m_0 - mu_0) / mu_0.
    """
    mu = d.mu
    m = np.stack([ope_terms(d.y, d.arm, np.full(len(d.arm), a), y_hat=mu,
                            propensity=d.propensity, method="dr")[0]
                  for a in range(mu.shape[1])], axis=1)  # (N, K+1, R)
    mu0 = mu[:, :1]
    return (relative_uplift(mu) + (m[:, 1:] - mu[:, 1:]) / mu0
            - (mu[:, 1:] / mu0) * (m[:, :1] - mu0) / mu0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000, help="experiment users scored")
    ap.add_argument("--train-users", type=int, default=60_000)
    ap.add_argument("--effect-scales", type=float, nargs="+", default=[1.0, 5.0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    out = {"args": {k: v for k, v in vars(args).items() if k != "json"}, "results": []}
    for world in ("contested", "today"):
        for es in args.effect_scales:
            d, w = population(world, es, 0, args.users)
            train, _ = population(world, es, 1, args.train_users)
            # the per-arm means' delta: one (K, R) value for everyone
            means = np.stack([train.y[train.arm == a].mean(0) for a in range(d.mu.shape[1])])
            delta_hat = means[1:] / means[:1] - 1
            phi = np.einsum("nkr,nr->nk", relative_uplift(d.mu), w)
            phi_hat = np.einsum("kr,nr->nk", delta_hat, w)
            psi = np.einsum("nkr,nr->nk", dr_delta(d), w)
            mse = np.mean((phi_hat - phi) ** 2, axis=0)
            noise = np.mean((psi - phi) ** 2, axis=0)
            sq = (psi - phi_hat) ** 2
            se = sq.std(0, ddof=1) / np.sqrt(len(psi))
            # users for a standard error of a quarter of the MSE
            needed = (sq.std(0, ddof=1) / (0.25 * mse)) ** 2
            row = {"world": world, "effect_scale": es, "rmse_phi_hat": np.sqrt(mse).tolist(),
                   "noise_sd_psi": np.sqrt(noise).tolist(), "se_mse_estimate": se.tolist(),
                   "mse": mse.tolist(), "users_needed_25pct": needed.tolist()}
            out["results"].append(row)
            for k, name in enumerate(["t1", "t2"]):
                print(f"{world:9s} effect_scale {es:g} {name}: "
                      f"RMSE(phi_hat) {np.sqrt(mse[k]):.4f}, "
                      f"sd(psi - phi) {np.sqrt(noise[k]):.3f}; MSE {mse[k]:.2e} estimated with "
                      f"SE {se[k]:.2e} ({se[k] / mse[k]:.1f}x the MSE) at {len(psi)} users; "
                      f"+-25 % needs {needed[k]:.2e} users")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
