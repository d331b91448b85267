"""Uplift and Qini curves, their normalized areas (AUUC, Qini) and uplift at k.

Two-arm functions, ``f(y, score, treatment, *, ...)``:

* ``y`` (N,): observed responses (binary 0/1, or continuous / counts),
* ``score`` (N,): the model's predicted uplift (higher = target first),
* ``treatment`` (N,): 0/1 indicator, 1 = treated, 0 = control.

Definitions (identical to scikit-uplift 0.5.1 for binary labels)
---------------------------------------------------------------
Rows are ranked by descending score; a block of tied scores is one point. At the
end of each block, with ``n`` rows so far of which ``n_t`` treated and ``n_c``
control, and ``Y_t``, ``Y_c`` the sums of their labels:

* uplift curve ``U(n) = (Y_t / n_t - Y_c / n_c) * n`` (a mean over an empty arm is 0),
* Qini curve ``Q(n) = Y_t - Y_c * n_t / n_c`` (``Q = Y_t`` while ``n_c = 0``),

both starting at (0, 0). The *random line* joins (0, 0) to the curve's last point
(N, V). An area is the trapezoid area between a curve and the random line, and the
normalized score is

    score = area(model curve) / area(perfect curve).

Binary labels (``kind='binary'``) use scikit-uplift's perfect curves:

* perfect Qini (``negative_effect=True``): the ranking ``y * (2 t - 1)``: treated
  responders first, then non-responders of both arms tied, control responders last;
* perfect Qini (``negative_effect=False``): the three points (0, 0), (rho, rho),
  (N, rho), with ``rho = Y_t - n_t * Y_c / n_c`` over all rows (each targeted row
  adds at most one response, and no row is harmed); needs ``rho > 0``;
* perfect uplift: treated responders, control non-responders, then control
  responders and treated non-responders, the larger group of these two first.

Continuous and count labels (``kind='continuous'``): labels are min-max normalized
over the evaluated rows, ``y' = (y - min y) / (max y - min y)`` (a constant response
is an error), the curves are computed on ``y'``, and both perfect curves use the
ranking ``y' * (2 t - 1)``: treated rows first by descending response, then control
rows by ascending response; the rows at the minimum response of both arms
(``y' = 0``) tie in one block, exactly as scikit-uplift's perfect Qini ranking does
for binary labels. ``negative_effect=False`` uses the three-point curve above with
``rho`` on the normalized labels. On 0/1 labels the continuous definition gives the
same Qini as the binary one, but not the same AUUC: scikit-uplift's binary perfect
uplift curve uses its own ranking (above).

Bounds
------
The perfect ranking scores exactly 1, a score that ties all rows exactly 0, and a
random ranking about 0 on average. The perfect curve is an upper bound -- no ranking
scores above 1 -- for the binary Qini with ``negative_effect=True`` whenever the
control arm has at most as many responders as the treated arm has rows: every
model curve then lies below the concave perfect curve at each of its points. It is
not a bound in general, and scores above 1 are reported as computed (as
scikit-uplift does), not clipped:

* binary Qini with more control responders than treated rows (one treated
  non-responder and four control responders: ranking the treated row last scores 4,
  as the curve stays at 0 until a treated row comes in);
* ``negative_effect=False``, whose three-point curve ignores what a model gains by
  ranking control responders last;
* the uplift curve, which multiplies a difference of means by n, so rankings that
  mix the arms early can beat the perfect ranking's curve;
* continuous labels, whose perfect Qini curve need not be concave.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _engine
from ._engine import (
    Blocks,
    ContinuousLabels,
    GroupRows,
    Labels,
    SortedRows,
    area_above_chord,
    codes,
    num_threads,
    perfect_rows,
    qini_values,
    score_rows,
    uplift_values,
)
from ._validation import (
    as_1d,
    as_indicator,
    check_arms,
    check_bool,
    check_finite,
    check_not_constant,
    resolve_kind,
    two_arm_inputs,
)

__all__ = [
    "uplift_curve",
    "qini_curve",
    "perfect_uplift_curve",
    "perfect_qini_curve",
    "uplift_auc_score",
    "qini_auc_score",
    "uplift_at_k",
]


# ----------------------------------------------------------------------- helpers


def _labels(y: np.ndarray, t: np.ndarray, kind: str) -> Labels:
    """Checked labels in the engine's form: binary codes ``2 t + y`` (N,) uint8, or
    continuous labels with their min-max normalization."""
    lo, hi = check_not_constant(y)
    if kind == "binary":
        return codes(y, t)
    return ContinuousLabels(y, t, lo, hi - lo)


def _prepare(y, score, treatment, kind: str):
    y, score, t = two_arm_inputs(y, score, treatment)
    kind = resolve_kind(y, kind)
    return score, kind, _labels(y, t, kind)


def _prepare_labels(y, treatment, kind: str):
    y = as_1d("y", y)
    treatment = as_1d("treatment", treatment, n=y.shape[0])
    check_finite("y", y)
    t = as_indicator("treatment", treatment)
    check_arms(t)
    kind = resolve_kind(y, kind)
    return kind, _labels(y, t, kind)


def _with_origin(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate(([0], x)), np.concatenate(([0.0], v))


def _group_blocks(groups: list[tuple[int, int, float, float]]) -> Blocks:
    """Blocks from (rows, treated rows, treated label sum, control label sum) per block;
    empty blocks are dropped (scikit-uplift has no point for a missing group)."""
    groups = [g for g in groups if g[0] > 0]
    arr = np.cumsum(np.array(groups, dtype=np.float64), axis=0)
    return Blocks(n=arr[:, 0].astype(np.int64), nt=arr[:, 1], yt=arr[:, 2], yc=arr[:, 3])


def _binary_counts(g: np.ndarray) -> tuple[int, int, int, int]:
    """(treated responders, treated non-responders, control responders, control
    non-responders) from binary codes."""
    counts = np.zeros(4, dtype=np.int64)
    # by chunks: np.bincount first copies its input to int64 (8 bytes a row)
    for a in range(0, g.shape[0], 1 << 20):
        counts += np.bincount(g[a : a + (1 << 20)], minlength=4)
    cn, cr, tn, tr = counts.tolist()
    return tr, tn, cr, cn


def perfect_blocks_binary(curve: str, tr, tn, cr, cn) -> Blocks:
    """Blocks of scikit-uplift's perfect ranking of binary labels from the counts of
    treated/control responders and non-responders."""
    if curve == "qini":
        # the ranking y (2t - 1): TR (1), then TN and CN tied (0), then CR (-1)
        return _group_blocks([(tr, tr, tr, 0), (tn + cn, tn, 0, 0), (cr, 0, 0, cr)])
    # scikit-uplift's ranking 2 (y == t) + (y if cr > tn else t):
    # TR (3), CN (2), then CR and TN (1 and 0, in the order the counts decide)
    tail = [(cr, 0, 0, cr), (tn, tn, 0, 0)]
    if not cr > tn:
        tail.reverse()
    return _group_blocks([(tr, tr, tr, 0), (cn, 0, 0, 0), *tail])


def _rho(labels: Labels) -> float:
    """Final Qini value written as scikit-uplift writes it: Y_t - n_t * Y_c / n_c."""
    if not isinstance(labels, ContinuousLabels):
        tr, tn, cr, cn = _binary_counts(labels)
        return rho(tr, tn + tr, cr, cn + cr)
    yn = labels.normalized(labels.y)
    n_t = int(np.count_nonzero(labels.t))
    y_t = float(np.sum(yn, where=labels.t))
    y_c = float(np.sum(yn, where=~labels.t))
    return rho(y_t, n_t, y_c, yn.shape[0] - n_t)


def rho(y_t, n_t, y_c, n_c) -> float:
    """The final Qini value ``Y_t - n_t * Y_c / n_c``, in scikit-uplift's order of operations."""
    return y_t - n_t * y_c / n_c


def _no_harm_curve(labels: Labels) -> tuple[np.ndarray, np.ndarray]:
    """scikit-uplift's perfect Qini curve without negative effects: (0,0), (rho,rho), (N,rho)."""
    n = labels.y.shape[0] if isinstance(labels, ContinuousLabels) else labels.shape[0]
    return no_harm_curve(_rho(labels), n)


def no_harm_curve(r: float, n: float) -> tuple[np.ndarray, np.ndarray]:
    """The points (0, 0), (r, r), (n, r); an error unless r > 0 (x would go back)."""
    if not r > 0:
        raise ValueError(
            "negative_effect=False needs a positive overall effect (treated responses above "
            f"what the control rate predicts), got Y_t - n_t * Y_c / n_c = {r!r}; "
            "use negative_effect=True"
        )
    return np.array([0.0, r, float(n)]), np.array([0.0, r, r])


def _perfect_rows(labels: Labels, curve: str, threads: int) -> SortedRows:
    if isinstance(labels, ContinuousLabels):
        return perfect_rows(labels, threads)
    return GroupRows(perfect_blocks_binary(curve, *_binary_counts(labels)))


def _normalized(model_area: float, perfect_area: float, name: str) -> float:
    if perfect_area == 0:
        raise ValueError(
            f"the perfect {name} curve coincides with the random line (zero area), so the "
            "normalized score is undefined for these labels"
        )
    return model_area / perfect_area


def perfect_areas(
    labels: Labels,
    curves: tuple[str, ...],
    negative_effect: bool,
    threads: int,
    out: np.ndarray | None = None,
) -> dict[str, float]:
    """Areas of the perfect curves ('qini' and/or 'uplift'): they depend on the labels
    only, so several scores of the same rows can share them. ``out``: a free uint64
    buffer of N for the continuous sort."""
    best: dict[str, float] = {}
    from_perfect = tuple(c for c in curves if c == "uplift" or negative_effect)
    if isinstance(labels, ContinuousLabels):
        if from_perfect:
            best = perfect_rows(labels, threads, out=out).areas(from_perfect)
    else:
        for c in from_perfect:
            best.update(_perfect_rows(labels, c, threads).areas((c,)))
    if "qini" in curves and not negative_effect:
        x, v = _no_harm_curve(labels)
        best["qini"] = area_above_chord(x[1:], v[1:])
    return best


def evaluate(
    score: np.ndarray,
    labels: Labels,
    *,
    qini: bool = True,
    auuc: bool = True,
    negative_effect: bool = True,
    threads: int | None = None,
    best: dict[str, float] | None = None,
) -> dict[str, float]:
    """Normalized Qini and/or AUUC of checked inputs, sharing one sort of the scores.

    Args:
        score: (N,) scores.
        labels: binary codes or continuous labels (see :func:`_labels`).
        best: the :func:`perfect_areas` of these labels, if already known.

    For continuous labels the perfect ranking needs its own sort; with two or more
    threads it runs concurrently with the score sort.
    """
    if threads is None:
        threads = num_threads()
    curves = tuple(c for c, want in (("qini", qini), ("uplift", auuc)) if want)
    sort_perfect = best is None and isinstance(labels, ContinuousLabels)
    if sort_perfect and threads >= 2 and score.shape[0] >= _engine._PARALLEL_MIN:
        # the two sorts run side by side (not worth a thread for small inputs)
        with ThreadPoolExecutor(max_workers=1) as pool:
            job = pool.submit(perfect_areas, labels, curves, negative_effect, 1)
            model = score_rows(score, labels, threads=threads - 1).areas(curves)
            best = job.result()
    else:
        rows = score_rows(score, labels, threads=threads)
        model = rows.areas(curves)
        if best is None:
            # one after the other: the perfect sort reuses the score sort's buffer
            best = perfect_areas(labels, curves, negative_effect, threads, rows.buffer())
    out: dict[str, float] = {}
    if qini:
        out["qini"] = _normalized(model["qini"], best["qini"], "Qini")
    if auuc:
        out["auuc"] = _normalized(model["uplift"], best["uplift"], "uplift")
    return out


# ------------------------------------------------------------------------ curves


def uplift_curve(y, score, treatment, *, kind: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Uplift curve of a ranking: ``U(n) = (Y_t / n_t - Y_c / n_c) * n`` per block of tied scores.

    Args:
        y: (N,) responses.
        score: (N,) predicted uplift; rows are ranked by descending score.
        treatment: (N,) 0/1 treatment indicator.
        kind: 'binary', 'continuous' (labels min-max normalized first; 'count' is the
            same), or 'auto' (binary when every label is 0 or 1).

    Returns:
        x: (B+1,) int64 rows targeted, starting at 0, one point per block of tied scores.
        values: (B+1,) float64 curve values, starting at 0.
    """
    score, kind, labels = _prepare(y, score, treatment, kind)
    b = score_rows(score, labels).blocks()
    return _with_origin(b.n, uplift_values(b))


def qini_curve(y, score, treatment, *, kind: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Qini curve of a ranking: ``Q(n) = Y_t - Y_c * n_t / n_c`` per block of tied scores.

    Args and returns as :func:`uplift_curve`.
    """
    score, kind, labels = _prepare(y, score, treatment, kind)
    b = score_rows(score, labels).blocks()
    return _with_origin(b.n, qini_values(b))


def perfect_uplift_curve(y, treatment, *, kind: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The perfect uplift curve (see the module docstring for its ranking).

    Args:
        y: (N,) responses.
        treatment: (N,) 0/1 treatment indicator.
        kind: 'binary', 'continuous' or 'auto'.

    Returns:
        x: (B+1,) int64 rows targeted; values: (B+1,) float64, both starting at 0.
    """
    kind, labels = _prepare_labels(y, treatment, kind)
    b = _perfect_rows(labels, "uplift", num_threads()).blocks()
    return _with_origin(b.n, uplift_values(b))


def perfect_qini_curve(
    y, treatment, *, kind: str = "auto", negative_effect: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The perfect Qini curve (see the module docstring for its ranking).

    Args:
        y: (N,) responses.
        treatment: (N,) 0/1 treatment indicator.
        kind: 'binary', 'continuous' or 'auto'.
        negative_effect: if False, the curve (0, 0), (rho, rho), (N, rho) of a model that
            finds every incremental response and harms no row (its x are floats).

    Returns:
        x: (B+1,) rows targeted; values: (B+1,) float64, both starting at 0.
    """
    negative_effect = check_bool("negative_effect", negative_effect)
    kind, labels = _prepare_labels(y, treatment, kind)
    if not negative_effect:
        return _no_harm_curve(labels)
    b = _perfect_rows(labels, "qini", num_threads()).blocks()
    return _with_origin(b.n, qini_values(b))


# ------------------------------------------------------------------------ scores


def uplift_auc_score(y, score, treatment, *, kind: str = "auto") -> float:
    """Normalized area under the uplift curve (AUUC).

    ``area(model) / area(perfect)``, each area taken between the curve and the random
    line from (0, 0) to (N, U(N)). 1 for the perfect ranking, 0 for an all-tied score.

    Args:
        y: (N,) responses.
        score: (N,) predicted uplift.
        treatment: (N,) 0/1 treatment indicator.
        kind: 'binary', 'continuous' or 'auto' (see the module docstring).

    Returns:
        The normalized AUUC (a float; may be negative, and for some rankings above 1).
    """
    score, kind, labels = _prepare(y, score, treatment, kind)
    return evaluate(score, labels, qini=False)["auuc"]


def qini_auc_score(
    y, score, treatment, *, kind: str = "auto", negative_effect: bool = True
) -> float:
    """Normalized area under the Qini curve (the Qini coefficient).

    ``area(model) / area(perfect)``, each area taken between the curve and the random
    line from (0, 0) to (N, Q(N)).

    Args:
        y: (N,) responses.
        score: (N,) predicted uplift.
        treatment: (N,) 0/1 treatment indicator.
        kind: 'binary', 'continuous' or 'auto' (see the module docstring).
        negative_effect: whether the perfect curve may contain negative effects
            (scikit-uplift's parameter; see the module docstring).

    Returns:
        The normalized Qini (a float; may be negative).
    """
    negative_effect = check_bool("negative_effect", negative_effect)
    score, kind, labels = _prepare(y, score, treatment, kind)
    return evaluate(score, labels, auuc=False, negative_effect=negative_effect)["qini"]


def uplift_at_k(y, score, treatment, *, k: float | int = 0.3, strategy: str = "overall") -> float:
    """Mean response of treated minus control rows among the top-k by score.

    The labels are used as they are (no normalization): the result is in the
    response's own units.

    Args:
        y: (N,) responses.
        score: (N,) predicted uplift.
        treatment: (N,) 0/1 treatment indicator.
        k: a float in (0, 1), the share of rows, or an int in [1, N), a number of rows.
        strategy: 'overall' takes the top ``int(N * k)`` (or ``k``) rows of all rows and
            compares the arms among them; 'by_group' takes the top ``int(n_t * k)``
            treated and ``int(n_c * k)`` control rows (or ``k`` of each).

    Rows are taken as scikit-uplift takes them: by descending score, and among tied
    scores the later row first. Only when the cut falls inside a block of tied scores
    does the result depend on the order of the rows.

    Returns:
        ``mean(y | treated, top) - mean(y | control, top)``.
    """
    y, score, t = two_arm_inputs(y, score, treatment)
    if strategy not in ("overall", "by_group"):
        raise ValueError(f"strategy must be 'overall' or 'by_group', got {strategy!r}")
    n = y.shape[0]
    k_kind = np.asarray(k).dtype.kind
    if k_kind not in "iuf" or np.ndim(k) != 0:
        raise ValueError(f"k must be a float in (0, 1) or an int in [1, N), got {k!r}")
    if (k_kind == "f" and not 0 < k < 1) or (k_kind in "iu" and not 0 < k < n):
        raise ValueError(
            f"k={k!r} should be either a positive int smaller than the number of rows {n} "
            "or a float in the (0, 1) range"
        )
    if strategy == "overall":
        size = int(n * k) if k_kind == "f" else int(k)
        top = _top_rows(score, size)
        return _arm_mean(y[top], t[top], True, size) - _arm_mean(y[top], t[top], False, size)
    means = []
    for arm in (True, False):
        rows = np.flatnonzero(t == arm)
        size = int(rows.size * k) if k_kind == "f" else int(k)
        if size > rows.size:
            name = "treated" if arm else "control"
            raise ValueError(f"k={k!r} is more than the {rows.size} {name} rows")
        if size == 0:
            name = "treated" if arm else "control"
            raise ValueError(f"k={k!r} selects no {name} rows (int({rows.size} * k) == 0)")
        means.append(float(y[rows[_top_rows(score[rows], size)]].mean()))
    return means[0] - means[1]


def _top_rows(score: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` best rows, ties broken towards later rows. O(N)."""
    n = score.shape[0]
    if size >= n:
        return np.arange(n)
    threshold = np.partition(score, n - size)[n - size]
    above = np.flatnonzero(score > threshold)
    tied = np.flatnonzero(score == threshold)
    return np.concatenate((above, tied[tied.size - (size - above.size) :]))


def _arm_mean(y: np.ndarray, t: np.ndarray, arm: bool, size: int) -> float:
    sel = y[t == arm]
    if sel.size == 0:
        name = "treated" if arm else "control"
        raise ValueError(f"the top {size} rows contain no {name} rows, so uplift at k is undefined")
    return float(sel.mean())
