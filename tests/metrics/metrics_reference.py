"""Slow, obvious reference implementations of the ranking metrics, for tests only.

Written straight from the definitions in hmum.metrics.ranking: a Python loop over
the distinct scores, sums taken by masks, a trapezoid loop. No sorting tricks, no
chunks, no shared code with the library.
"""

from __future__ import annotations

import numpy as np


def normalized_labels(y, kind):
    y = np.asarray(y, dtype=float)
    if kind == "binary":
        return y
    return (y - y.min()) / (y.max() - y.min())


def curve(y, score, t, kind, which):
    """Points (x, v) of the Qini or uplift curve, one per distinct score, from (0, 0)."""
    y = normalized_labels(y, kind)
    t = np.asarray(t).astype(bool)
    score = np.asarray(score, dtype=float)
    xs, vs = [0], [0.0]
    for s in sorted(set(score.tolist()), reverse=True):
        top = score >= s
        n = int(top.sum())
        nt = int((top & t).sum())
        nc = n - nt
        yt = float(y[top & t].sum())
        yc = float(y[top & ~t].sum())
        if which == "qini":
            v = yt - yc * nt / nc if nc else yt
        else:
            v = ((yt / nt if nt else 0.0) - (yc / nc if nc else 0.0)) * n
        xs.append(n)
        vs.append(v)
    return np.array(xs), np.array(vs)


def area_above_random(x, v):
    """Trapezoid area under the curve minus the area under the line to its last point."""
    area = 0.0
    for i in range(1, len(x)):
        area += (x[i] - x[i - 1]) * (v[i] + v[i - 1]) / 2
    return area - x[-1] * v[-1] / 2


def perfect_score(y, t, kind, which):
    """A score whose ranking is the perfect one of the definitions."""
    y = normalized_labels(y, kind)
    t = np.asarray(t).astype(bool)
    if kind == "binary" and which == "uplift":
        cr = int((y[~t] == 1).sum())
        tn = int((y[t] == 0).sum())
        summand = y if cr > tn else t.astype(float)
        return 2.0 * (y == t) + summand
    return np.where(t, y, -y)


def perfect_curve(y, t, kind, which, negative_effect=True):
    if which == "qini" and not negative_effect:
        yn = normalized_labels(y, kind)
        t = np.asarray(t).astype(bool)
        rho = yn[t].sum() - t.sum() * yn[~t].sum() / (~t).sum()
        return np.array([0.0, rho, len(yn)]), np.array([0.0, rho, rho])
    return curve(y, perfect_score(y, t, kind, which), t, kind, which)


def score(y, s, t, kind, which, negative_effect=True):
    """Normalized AUUC ('uplift') or Qini ('qini')."""
    model = area_above_random(*curve(y, s, t, kind, which))
    best = area_above_random(*perfect_curve(y, t, kind, which, negative_effect))
    return model / best


def uplift_at_k(y, s, t, k, strategy):
    """scikit-uplift's rule: descending score, ties in reverse row order."""
    y = np.asarray(y, dtype=float)
    t = np.asarray(t).astype(bool)
    order = sorted(range(len(y)), key=lambda i: (-s[i], -i))
    if strategy == "overall":
        size = int(len(y) * k) if isinstance(k, float) else k
        top = order[:size]
        return np.mean([y[i] for i in top if t[i]]) - np.mean([y[i] for i in top if not t[i]])
    means = []
    for arm in (True, False):
        rows = [i for i in order if t[i] == arm]
        size = int(len(rows) * k) if isinstance(k, float) else k
        means.append(np.mean([y[i] for i in rows[:size]]))
    return means[0] - means[1]


def random_case(rng, kind="binary", n_max=40):
    """Random (y, score, t) with many ties, tiny samples and unbalanced arms.

    Both arms are present and y is not constant. Scores are drawn from a handful of
    styles: few distinct values, distinct floats, all tied, signed zeros, huge range.
    """
    n = int(rng.integers(2, n_max + 1))
    t = rng.random(n) < rng.choice([0.05, 0.2, 0.5, 0.8, 0.95])
    i, j = rng.choice(n, 2, replace=False)
    t[i], t[j] = True, False
    if kind == "binary":
        y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype(rng.choice([np.int64, np.float64]))
    else:
        style = rng.integers(3)
        y = [rng.poisson(2.0, n), rng.exponential(5.0, n), rng.normal(100.0, 3.0, n).round(1)][
            style
        ].astype(float)
    a, b = rng.choice(n, 2, replace=False)
    y[a], y[b] = (1, 0) if kind == "binary" else (y[a] + 1.0, y[a])
    style = rng.integers(6)
    if style == 0:
        s = rng.integers(0, rng.integers(1, 6), n).astype(float)
    elif style == 1:
        s = rng.normal(size=n)
    elif style == 2:
        s = np.full(n, 0.3)
    elif style == 3:
        s = rng.choice([-0.0, 0.0, 1.0, -1.0], n)
    elif style == 4:
        s = rng.choice([1e-300, -1e300, 1e300, 1.0, 1.0 + 2**-52, 0.0], n)
    else:
        s = rng.integers(-3, 3, n)  # integer dtype
    return y, s, t.astype(np.int64)
