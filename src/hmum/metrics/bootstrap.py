"""Seeded bootstrap confidence intervals for any two-arm score.

A resample draws rows with replacement -- by default within each arm, so every
resample keeps the arm sizes and never loses an arm. The interval is the
percentile interval of the resampled scores.

For :func:`~hmum.metrics.qini_auc_score` and :func:`~hmum.metrics.uplift_auc_score`
the rows are sorted once: a resample is the same rows with integer weights (how
often each was drawn), so a replicate costs a few passes over the sorted rows
instead of a sort. It gives the same numbers as calling the score on the resampled
arrays (tested), because a row drawn w times is w tied rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._engine import AreaAccumulator, Blocks, area_above_chord, desc_key
from ._validation import check_bool, resolve_kind, two_arm_inputs
from .ranking import (
    _labels,
    _normalized,
    evaluate,
    no_harm_curve,
    perfect_blocks_binary,
    qini_auc_score,
    rho,
    uplift_auc_score,
)

__all__ = ["BootstrapCI", "bootstrap_ci"]


@dataclass(frozen=True)
class BootstrapCI:
    """A score, its percentile bootstrap interval and the resampled scores.

    Attributes:
        estimate: the score on the data as given.
        low, high: the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of ``samples``.
        alpha: one minus the nominal coverage.
        samples: (n_boot,) the score of each resample.
    """

    estimate: float
    low: float
    high: float
    alpha: float
    samples: np.ndarray


def _check_params(n_boot, alpha) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def _resample(rng: np.random.Generator, t: np.ndarray, stratify: bool) -> np.ndarray:
    """Row indices of one resample: (N,), drawn within each arm when ``stratify``."""
    n = t.shape[0]
    if not stratify:
        return rng.integers(0, n, n)
    treated = np.flatnonzero(t)
    control = np.flatnonzero(~t)
    return np.concatenate(
        (
            treated[rng.integers(0, treated.size, treated.size)],
            control[rng.integers(0, control.size, control.size)],
        )
    )


def _interval(estimate: float, samples: np.ndarray, alpha: float) -> BootstrapCI:
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(estimate), float(low), float(high), float(alpha), samples)


def bootstrap_ci(
    metric: Callable[..., float],
    y,
    score,
    treatment,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stratify: bool = True,
    **metric_kwargs,
) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric(y, score, treatment, **metric_kwargs)``.

    Args:
        metric: any two-arm score ``f(y, score, treatment, **kwargs) -> float``.
        y: (N,) responses.
        score: (N,) predicted uplift.
        treatment: (N,) 0/1 treatment indicator.
        n_boot: number of resamples.
        alpha: the interval covers 1 - alpha.
        seed: seed of the resampling; the same seed gives the same interval.
        stratify: resample within each arm (keeps the arm sizes; recommended).
        **metric_kwargs: passed to ``metric`` (e.g. ``kind``, ``negative_effect``).

    Returns:
        A :class:`BootstrapCI`. For the AUUC and Qini scores, ``kind='auto'`` is decided
        once on the full data and kept for every resample.
    """
    _check_params(n_boot, alpha)
    stratify = check_bool("stratify", stratify)
    y, score, t = two_arm_inputs(y, score, treatment)
    fast = {qini_auc_score: "qini", uplift_auc_score: "auuc"}.get(metric)
    if fast is not None and set(metric_kwargs) <= {"kind", "negative_effect"}:
        kind = resolve_kind(y, metric_kwargs.get("kind", "auto"))
        negative_effect = check_bool("negative_effect", metric_kwargs.get("negative_effect", True))
        return _fast_bootstrap(
            y,
            score,
            t,
            kind,
            (fast,),
            negative_effect,
            n_boot=n_boot,
            alpha=alpha,
            seed=seed,
            stratify=stratify,
        )[fast]
    estimate = metric(y, score, t.astype(np.int8), **metric_kwargs)
    rng = np.random.default_rng(seed)
    samples = np.empty(n_boot)
    for i in range(n_boot):
        rows = _resample(rng, t, stratify)
        try:
            samples[i] = metric(y[rows], score[rows], t[rows].astype(np.int8), **metric_kwargs)
        except ValueError as exc:
            raise ValueError(f"bootstrap resample {i}: {exc}") from exc
    return _interval(estimate, samples, alpha)


# --------------------------------------------------------------------- fast path


class _Order:
    """Rows in one order with its block ends, read back under resample weights."""

    def __init__(self, order: np.ndarray, change: np.ndarray, y: np.ndarray, t: np.ndarray):
        self.order = order
        self.change = change
        self.y = y[order].astype(np.float64)
        self.t = t[order]

    def areas(self, w: np.ndarray, lo: float, span: float, curves, change=None) -> dict:
        """Areas above the random line of the weighted rows. w: (N,) weights in row order."""
        change = self.change if change is None else change
        ws = w[self.order].astype(np.float64)
        yn = self.y - lo
        yn /= span
        yn *= ws  # label mass of each row
        wt = np.where(self.t, ws, 0.0)
        ends = np.flatnonzero(change)
        n = np.cumsum(ws)[ends]
        nt = np.cumsum(wt)[ends]
        y_all = np.cumsum(yn)
        np.multiply(yn, self.t, out=yn)
        yt = np.cumsum(yn)[ends]
        acc = AreaAccumulator(curves)
        # blocks no resampled row falls in repeat the previous point and add no area
        acc.add(Blocks(n=n, nt=nt, yt=yt, yc=y_all[ends] - yt))
        return acc.finish()


def _fast_bootstrap(
    y, score, t, kind, metrics, negative_effect, *, n_boot, alpha, seed, stratify
) -> dict:
    """Bootstrap intervals of 'qini' and/or 'auuc' of checked inputs, sorting once.

    Args:
        y: (N,) raw labels; score: (N,); t: (N,) bool; kind: 'binary' or 'continuous';
        metrics: a tuple of 'qini' and/or 'auuc'.
    """
    _check_params(n_boot, alpha)
    labels = _labels(y, t, kind)
    estimate = evaluate(
        score,
        labels,
        qini="qini" in metrics,
        auuc="auuc" in metrics,
        negative_effect=negative_effect,
    )
    curves = tuple({"qini": "qini", "auuc": "uplift"}[m] for m in metrics)
    from_perfect = tuple(c for c in curves if c == "uplift" or negative_effect)
    key = desc_key(score)
    order = np.argsort(key, kind="stable")
    key = key[order]
    change = np.ones(y.shape[0], dtype=bool)
    np.not_equal(key[1:], key[:-1], out=change[:-1])
    by_score = _Order(order, change, y, t)
    binary = kind == "binary"
    if not binary:
        by_perfect, y_treated, y_control = _perfect_order(y, t)
        n_t = y_treated.size
    rng = np.random.default_rng(seed)
    samples = {m: np.empty(n_boot) for m in metrics}
    for i in range(n_boot):
        w = np.bincount(_resample(rng, t, stratify), minlength=y.shape[0])
        drawn = w > 0
        if not (drawn & t).any() or not (drawn & ~t).any():
            raise ValueError(f"bootstrap resample {i} lost an arm; use stratify=True")
        y_drawn = y[drawn]
        lo, hi = float(y_drawn.min()), float(y_drawn.max())
        if lo == hi:
            raise ValueError(f"bootstrap resample {i}: y is constant ({lo!r})")
        if binary:
            lo, hi = 0.0, 1.0
        model = by_score.areas(w, lo, hi - lo, curves)
        if binary:
            groups = np.left_shift(t.view(np.uint8), 1) | (y != 0)
            cn, cr, tn, tr = np.bincount(groups, weights=w, minlength=4).tolist()
            best = {
                c: _block_area(c, perfect_blocks_binary(c, tr, tn, cr, cn)) for c in from_perfect
            }
            y_t, n_t_w, y_c, n_c_w = tr, tr + tn, cr, cr + cn
        else:
            # the rows at the resample's minimum response of both arms are one block:
            # they end the treated part and start the control part, with only undrawn
            # rows between them
            change = by_perfect.change
            n_t_at_least = n_t - int(np.searchsorted(y_treated, lo, side="left"))
            n_c_at_most = int(np.searchsorted(y_control, lo, side="right"))
            if (
                n_t_at_least
                and y_treated[n_t - n_t_at_least] == lo
                and n_c_at_most
                and y_control[n_c_at_most - 1] == lo
            ):
                change = change.copy()
                change[n_t_at_least - 1 : n_t + n_c_at_most - 1] = False
            best = by_perfect.areas(w, lo, hi - lo, from_perfect, change)
            yn = (y - lo) / (hi - lo)
            y_t, n_t_w = float(np.sum(w[t] * yn[t])), float(np.sum(w[t]))
            y_c, n_c_w = float(np.sum(w[~t] * yn[~t])), float(np.sum(w[~t]))
        if "qini" in curves and not negative_effect:
            x, v = no_harm_curve(rho(y_t, n_t_w, y_c, n_c_w), n_t_w + n_c_w)
            best["qini"] = area_above_chord(x[1:], v[1:])
        for m, c in zip(metrics, curves, strict=True):
            samples[m][i] = _normalized(model[c], best[c], "Qini" if c == "qini" else "uplift")
    return {m: _interval(estimate[m], samples[m], alpha) for m in metrics}


def _perfect_order(y: np.ndarray, t: np.ndarray):
    """The perfect ranking of continuous labels over all rows: treated rows by
    descending y, then control rows by ascending y; blocks of equal y within an arm.

    Returns the order as an :class:`_Order`, and the sorted treated and control labels.
    """
    treated = np.flatnonzero(t)
    control = np.flatnonzero(~t)
    by_t = np.argsort(y[treated], kind="stable")
    by_c = np.argsort(y[control], kind="stable")
    order = np.concatenate((treated[by_t[::-1]], control[by_c]))
    ys = y[order]
    change = np.ones(y.shape[0], dtype=bool)
    np.not_equal(ys[1:], ys[:-1], out=change[:-1])
    change[treated.size - 1] = True
    return _Order(order, change, y, t), y[treated][by_t], y[control][by_c]


def _block_area(curve: str, blocks: Blocks) -> float:
    acc = AreaAccumulator((curve,))
    acc.add(blocks)
    return acc.finish()[curve]


def uplift_replicates(
    y,
    tau_hat,
    arm,
    *,
    kind="auto",
    n_boot: int = 200,
    seed: int = 0,
    negative_effect: bool = True,
) -> dict[str, np.ndarray]:
    """Normalized Qini and AUUC of every (treatment, response) under ``n_boot`` resamples.

    Treatment k is scored on the rows with ``arm`` 0 or k (as ``uplift_table``); the
    resamples are drawn within each arm with ``seed`` and depend only on (arm, seed),
    so two models scored on the same rows with the same seed are resampled on the
    *same* rows: the replicate-wise difference is a paired bootstrap. Each replicate
    is the sort-once fast path of :func:`bootstrap_ci` (no per-row Python).

    Args:
        y: (N, R) responses; tau_hat: (N, K, R) predicted uplift; arm: (N,) in [0, K].
        kind: 'auto', 'binary', 'continuous' or 'count', or one per response.

    Returns:
        {"qini": (n_boot, K, R), "auuc": (n_boot, K, R)}; a cell whose resamples cannot
        be scored (a response constant in a resample) is NaN.
    """
    _check_params(n_boot, alpha=0.05)
    y = np.asarray(y, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    tau_hat = np.asarray(tau_hat, dtype=np.float64)
    arm = np.asarray(arm)
    _, k_count, r_count = tau_hat.shape
    if y.shape[1] != r_count or arm.shape[0] != y.shape[0] or tau_hat.shape[0] != y.shape[0]:
        raise ValueError(f"y (N, R), tau_hat (N, K, R) and arm (N,) disagree: {y.shape}, "
                         f"{tau_hat.shape}, {arm.shape}")
    kinds = [kind] * r_count if isinstance(kind, str) else list(kind)
    out = {m: np.full((n_boot, k_count, r_count), np.nan) for m in ("qini", "auuc")}
    for k in range(1, k_count + 1):
        rows = np.flatnonzero((arm == 0) | (arm == k))
        t = arm[rows] == k
        for j in range(r_count):
            yk = y[rows, j]
            try:
                got = _fast_bootstrap(yk, tau_hat[rows, k - 1, j], t, resolve_kind(yk, kinds[j]),
                                      ("qini", "auuc"), negative_effect, n_boot=n_boot,
                                      alpha=0.05, seed=seed, stratify=True)
            except ValueError:
                continue
            for m in ("qini", "auuc"):
                out[m][:, k - 1, j] = got[m].samples
    return out
