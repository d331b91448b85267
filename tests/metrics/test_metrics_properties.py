"""Property tests (hypothesis) of the normalized scores and curves."""

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import hmum.metrics as hm

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def experiments(draw, kind=None, n_max=30):
    """(y, score, t, kind): both arms present, y not constant, scores with many ties."""
    n = draw(st.integers(2, n_max))
    t = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    assume(t.any() and not t.all())
    kind = kind or draw(st.sampled_from(["binary", "continuous"]))
    if kind == "binary":
        y = np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=float)
    else:
        values = st.one_of(st.integers(0, 5).map(float), st.floats(-50, 50, width=32))
        y = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=float)
    assume(y.min() < y.max())
    scores = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6, allow_subnormal=False))
    s = np.array(draw(st.lists(scores, min_size=n, max_size=n)), dtype=float)
    return y, s, t.astype(int), kind


def _scores(y, s, t, kind):
    """All three normalized scores, or None where they are undefined for these labels."""
    out = {}
    for name, f, kw in [
        ("qini", hm.qini_auc_score, {}),
        ("qini_no_harm", hm.qini_auc_score, {"negative_effect": False}),
        ("auuc", hm.uplift_auc_score, {}),
    ]:
        try:
            out[name] = f(y, s, t, kind=kind, **kw)
        except ValueError as exc:
            assert "perfect" in str(exc) or "negative_effect=False" in str(exc)
            out[name] = None
    return out


def _close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if a[k] is None or b[k] is None:
            assert a[k] is b[k], k
        else:
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), k


@SETTINGS
@given(experiments(), st.randoms(use_true_random=False))
def test_shuffling_rows_changes_nothing(case, random):
    y, s, t, kind = case
    order = list(range(len(y)))
    random.shuffle(order)
    _close(_scores(y, s, t, kind), _scores(y[order], s[order], t[order], kind))
    x, v = hm.qini_curve(y, s, t, kind=kind)
    x2, v2 = hm.qini_curve(y[order], s[order], t[order], kind=kind)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_allclose(v, v2, rtol=1e-12, atol=1e-9)


@SETTINGS
@given(experiments())
def test_perfect_ranking_scores_exactly_one(case):
    y, _, t, kind = case
    tb = t.astype(bool)
    yn = y if kind == "binary" else (y - y.min()) / (y.max() - y.min())
    perfect_qini = np.where(tb, yn, -yn)  # y'(2t - 1), signed zeros tie
    if kind == "binary":
        cr, tn = int((y[~tb] == 1).sum()), int((y[tb] == 0).sum())
        perfect_uplift = 2.0 * (y == t) + (y if cr > tn else t)
    else:
        perfect_uplift = perfect_qini
    try:
        assert hm.qini_auc_score(y, perfect_qini, t, kind=kind) == 1.0
    except ValueError:
        pass  # the perfect curve is the random line: undefined, checked elsewhere
    try:
        assert hm.uplift_auc_score(y, perfect_uplift, t, kind=kind) == 1.0
    except ValueError:
        pass


@SETTINGS
@given(experiments(), st.sampled_from(["rank", "cube", "exp", "shift"]))
def test_strictly_increasing_transform_changes_nothing(case, transform):
    y, s, t, kind = case
    ranks = np.unique(s, return_inverse=True)[1].astype(float)  # dense ranks: exact
    s2 = {
        "rank": ranks,
        "cube": 2 * ranks**3 + 5 * ranks + 7,
        "exp": np.exp(ranks / 10),
        "shift": ranks * 0.5 - 1e3,
    }[transform]
    # the same ties, so the very same blocks and bit-identical scores
    assert _scores(y, ranks, t, kind) == _scores(y, s2, t, kind)
    _close(_scores(y, s, t, kind), _scores(y, ranks, t, kind))


@SETTINGS
@given(experiments(), st.floats(-1e9, 1e9))
def test_constant_score_scores_exactly_zero(case, c):
    y, _, t, kind = case
    for name, value in _scores(y, np.full(len(y), c), t, kind).items():
        assert value is None or value == 0.0, name


@SETTINGS
@given(experiments(kind="binary"))
def test_no_ranking_beats_the_perfect_binary_qini(case):
    """Holds when control responders <= treated rows (see the ranking module)."""
    y, s, t, _ = case
    tb = t.astype(bool)
    assume(y[~tb].sum() <= tb.sum())
    try:
        assert hm.qini_auc_score(y, s, t) <= 1.0 + 1e-12
    except ValueError:
        pass


@settings(max_examples=40, deadline=None)
@given(experiments(kind="binary", n_max=5))
def test_no_ranking_beats_the_perfect_binary_qini_all_rankings(case):
    """The same bound against every ordering of tiny samples (exhaustive, <= 5 rows)."""
    y, _, t, _ = case
    tb = t.astype(bool)
    assume(y[~tb].sum() <= tb.sum())
    for perm in itertools.permutations(range(len(y))):
        try:
            assert hm.qini_auc_score(y, np.array(perm, dtype=float), t) <= 1.0 + 1e-12
        except ValueError:
            return


def test_random_ranking_scores_zero_on_average():
    rng = np.random.default_rng(7)
    n = 2_000
    t = rng.random(n) < 0.5
    yb = (rng.random(n) < 0.2 + 0.1 * t).astype(float)
    yc = rng.gamma(2.0, 3.0, n) + 2.0 * t
    for y in (yb, yc):
        q = [hm.qini_auc_score(y, rng.random(n), t) for _ in range(200)]
        a = [hm.uplift_auc_score(y, rng.random(n), t) for _ in range(200)]
        for values in (q, a):
            mean, se = np.mean(values), np.std(values) / np.sqrt(len(values))
            assert abs(mean) < 4 * se
            assert se > 0
