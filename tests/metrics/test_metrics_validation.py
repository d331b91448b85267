"""Bad input gets a clear error naming the parameter, never a silent NaN."""

import numpy as np
import pytest

import hmum.metrics as hm

Y = np.array([1, 0, 1, 0])
S = np.array([0.4, 0.3, 0.2, 0.1])
T = np.array([1, 1, 0, 0])

SCORES = [hm.qini_auc_score, hm.uplift_auc_score, hm.qini_curve, hm.uplift_curve]


@pytest.mark.parametrize("f", SCORES)
def test_lengths_differ(f):
    with pytest.raises(ValueError, match="y has 4 rows but score has 3"):
        f(Y, S[:3], T)


@pytest.mark.parametrize("f", SCORES)
def test_treatment_length(f):
    with pytest.raises(ValueError, match="y has 4 rows but treatment has 5"):
        f(Y, S, np.r_[T, 1])


@pytest.mark.parametrize("f", SCORES)
def test_no_control_rows(f):
    with pytest.raises(ValueError, match=r"treatment: no control rows \(treatment == 0\)"):
        f(Y, S, np.ones(4))


@pytest.mark.parametrize("f", SCORES)
def test_no_treated_rows(f):
    with pytest.raises(ValueError, match=r"treatment: no treated rows \(treatment == 1\)"):
        f(Y, S, np.zeros(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("f", SCORES)
def test_non_finite_score(f, bad):
    s = S.astype(float)
    s[[0, 2]] = bad
    with pytest.raises(ValueError, match="score contains 2 NaN/inf values"):
        f(Y, s, T)


@pytest.mark.parametrize("f", SCORES)
def test_non_finite_labels(f):
    with pytest.raises(ValueError, match="y contains 1 NaN/inf values"):
        f(np.array([1.0, np.nan, 0.0, 1.0]), S, T)


@pytest.mark.parametrize("f", SCORES)
def test_treatment_not_an_indicator(f):
    with pytest.raises(ValueError, match="treatment must be a 0/1 indicator, got other values: 2"):
        f(Y, S, np.array([1, 2, 0, 0]))


@pytest.mark.parametrize("f", SCORES)
def test_constant_response(f):
    with pytest.raises(ValueError, match=r"y is constant \(every value is 3.5\)"):
        f(np.full(4, 3.5), S, T)


def test_constant_binary_response():
    with pytest.raises(ValueError, match=r"y is constant \(every value is 0\)"):
        hm.qini_auc_score(np.zeros(4, dtype=int), S, T)


def test_two_dimensional_y():
    with pytest.raises(ValueError, match=r"y must be 1-D with shape \(N,\), got shape \(4, 1\)"):
        hm.qini_auc_score(Y[:, None], S, T)


def test_non_numeric_score():
    with pytest.raises(TypeError, match="score must be numeric"):
        hm.qini_auc_score(Y, np.array(["a", "b", "c", "d"]), T)


def test_empty():
    with pytest.raises(ValueError, match="y is empty"):
        hm.qini_auc_score([], [], [])


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        hm.qini_auc_score(Y, S, T, kind="ordinal")


def test_binary_kind_with_other_labels():
    with pytest.raises(ValueError, match=r"kind='binary' needs y in \{0, 1\}, got other values: 2"):
        hm.qini_auc_score(np.array([1, 0, 2, 0]), S, T, kind="binary")


def test_negative_effect_must_be_bool():
    with pytest.raises(TypeError, match="negative_effect must be a bool, got str"):
        hm.qini_auc_score(Y, S, T, negative_effect="no")


def test_no_harm_curve_needs_a_positive_effect():
    # rho = Y_t - n_t * Y_c / n_c = 1 - 2 * 1 / 2 = 0
    with pytest.raises(ValueError, match="negative_effect=False needs a positive overall effect"):
        hm.qini_auc_score(Y, S, T, negative_effect=False)


def test_undefined_normalization():
    # y == t everywhere: every ranking's uplift curve is the line U(n) = n
    with pytest.raises(ValueError, match="perfect uplift curve coincides with the random line"):
        hm.uplift_auc_score(T, S, T)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0.0}, r"k=0.0 should be"),
        ({"k": 1.0}, r"k=1.0 should be"),
        ({"k": 4}, r"k=4 should be"),
        ({"k": True}, "k must be a float in"),
        ({"k": 0.5, "strategy": "top"}, "strategy must be 'overall' or 'by_group'"),
        ({"k": 3, "strategy": "by_group"}, "k=3 is more than the 2 treated rows"),
        ({"k": 0.1, "strategy": "by_group"}, "selects no treated rows"),
        ({"k": 1}, "the top 1 rows contain no control rows"),
    ],
)
def test_uplift_at_k_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hm.uplift_at_k(Y, S, T, **kwargs)


def test_no_silent_nan_anywhere():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        y = rng.integers(0, 2, n)
        t = rng.integers(0, 2, n)
        s = rng.integers(0, 3, n).astype(float)
        for f in (hm.qini_auc_score, hm.uplift_auc_score):
            try:
                value = f(y, s, t)
            except ValueError:
                continue
            assert np.isfinite(value)
