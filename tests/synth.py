"""Tiny synthetic experiments for unit tests (not the simulator: no realism needed)."""

import numpy as np
import pyarrow as pa

from hmum.data.schema import FeatureSpec, ResponseSpec, Schema
from hmum.data.validate import ExperimentData, validate_table


def make_experiment(n=600, K=2, R=2, effect=0.5, seed=0, kinds=None) -> ExperimentData:
    """n rows, K treatments, R responses; treatment k shifts response r by
    effect * (+1 if segment == k % 2 else -1), so the uplift is heterogeneous."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, 2, n)
    x1 = rng.normal(size=n)
    arm = np.arange(n) % (K + 1)
    rng.shuffle(arm)
    kinds = kinds or ["continuous"] * R
    base = 3.0 + 0.5 * x1[:, None] + np.arange(R)[None, :]
    sign = np.where(seg[:, None] == (np.arange(1, K + 1)[None, :] % 2), 1.0, -1.0)  # (n, K)
    mu = np.empty((n, K + 1, R))
    mu[:, 0] = base
    mu[:, 1:] = base[:, None, :] + effect * sign[:, :, None]
    y = mu[np.arange(n), arm] + rng.normal(scale=0.3, size=(n, R))
    y = np.abs(y)
    cols = {
        "seg": pa.array(seg.astype(str)),
        "x1": pa.array(x1),
        "arm": pa.array(arm),
    }
    for r in range(R):
        cols[f"y{r}"] = pa.array(np.round(y[:, r]) if kinds[r] == "count" else y[:, r])
    schema = Schema(
        features=[FeatureSpec(name="seg", kind="categorical"), FeatureSpec(name="x1", kind="numeric")],
        arms=["control"] + [f"t{k}" for k in range(1, K + 1)],
        responses=[ResponseSpec(name=f"y{r}", kind=kinds[r]) for r in range(R)],
    )
    d = validate_table(pa.table(cols), schema)
    d.mu = mu
    return d
