"""BLP calibration of the uplift on the validation split (Chernozhukov et al. 2018):
regress a doubly robust pseudo-outcome Z on tau_hat per (treatment, response), then
score raw and calibrated uplift on a fresh population (a negative result, kept so it
can be rerun).

    python benchmarks/bench_uplift_blp_calibration.py EFFECT_SCALE SEED USERS hum,slearner

Prints one JSON line per model: PEHE, correlation and spread ratio, raw and calibrated,
and the fitted (intercept, slope) per treatment and response.
"""
import json
import sys
import time

import numpy as np

from bench_hum_uplift_rule import errors
from hmum.data.datasets.simulated import bench_simulator
from hmum.models.registry import get_model

es, seed, users = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
names = sys.argv[4].split(",")
sp = bench_simulator(None, seed, n_users=users, effect_scale=es, eval_users=100_000)[0]
mu = sp.test.mu
tau = mu[:, 1:] - mu[:, :1]
K, R = tau.shape[1], tau.shape[2]


def blp(yv, arm, y, k):
    """(a, b) of Z ~ a + b (tau_hat - mean) on rows with arm in {0, k}; Z doubly robust."""
    p = np.bincount(arm, minlength=K + 1) / len(arm)
    th = yv[:, k] - yv[:, 0]  # (N, R)
    t1, t0 = (arm == k), (arm == 0)
    res = np.zeros((2, R))
    for r in range(R):
        z = th[:, r] + t1 / p[k] * (y[:, r] - yv[:, k, r]) - t0 / p[0] * (y[:, r] - yv[:, 0, r])
        x = th[:, r] - th[:, r].mean()
        b = (x * (z - z.mean())).sum() / (x * x).sum()
        res[:, r] = (z.mean(), b)
    return res  # (2, R): intercept, slope

out = {}
for name in names:
    t0 = time.time()
    est = get_model(name, sp.train.schema, trainer={"seed": seed, "num_threads": 2})
    est.fit(sp.train, sp.valid)
    fit = time.time() - t0
    yv = est.predict_outcomes(sp.valid).astype(np.float64)
    yt = est.predict_outcomes(sp.test).astype(np.float64)
    th_t = yt[:, 1:] - yt[:, :1]
    cal = th_t.copy()
    coefs = []
    for k in range(1, K + 1):
        ab = blp(yv, sp.valid.arm, sp.valid.y, k)
        thv = yv[:, k] - yv[:, 0]
        cal[:, k - 1] = ab[0] + ab[1] * (th_t[:, k - 1] - thv.mean(0))
        coefs.append(ab.round(3).tolist())
    for v, t in {"raw": th_t, "blp": cal}.items():
        out[f"{name}:{v}"] = errors(np.concatenate([yt[:, :1], yt[:, :1] + t], axis=1), mu)
    out[f"{name}:coef"] = coefs
    mine = {k: v for k, v in out.items() if k.startswith(name)}
    print(name, f"fit {fit:.0f}s", json.dumps(mine), flush=True)
print("true sd", tau.std(0).round(3).tolist())
