"""Binary labels: identical to scikit-uplift 0.5.1 (within 1e-9), ties included."""

import warnings

import numpy as np
import pytest

import hmum.metrics as hm
from tests.metrics.metrics_reference import random_case

sk = pytest.importorskip("sklift.metrics")

CASES = 250


def _sk(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's stable_cumsum deprecation
        return f(*args, **kwargs)


def _cases(seed, count=CASES):
    rng = np.random.default_rng(seed)
    return [random_case(rng, "binary") for _ in range(count)]


@pytest.mark.parametrize("engine", ["default", "tiny"])
def test_curves_identical(engine, request):
    if engine == "tiny":
        request.getfixturevalue("tiny_engine")
    for y, s, t in _cases(1):
        for ours, theirs in [(hm.qini_curve, sk.qini_curve), (hm.uplift_curve, sk.uplift_curve)]:
            x, v = ours(y, s, t)
            x_ref, v_ref = _sk(theirs, y, s, t)
            np.testing.assert_array_equal(x, x_ref)
            np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-9)


def test_perfect_curves_identical():
    for y, _, t in _cases(2):
        x, v = hm.perfect_uplift_curve(y, t)
        x_ref, v_ref = _sk(sk.perfect_uplift_curve, y, t)
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-9)
        x, v = hm.perfect_qini_curve(y, t)
        x_ref, v_ref = _sk(sk.perfect_qini_curve, y, t)
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_allclose(v, v_ref, rtol=0, atol=1e-9)


def _outcome(f, *args, **kwargs):
    """The score, or 'error' where the library refuses (ours: ValueError; scikit-uplift
    divides by zero or raises in sklearn.metrics.auc)."""
    try:
        return f(*args, **kwargs)
    except (ValueError, ZeroDivisionError):
        return "error"


@pytest.mark.parametrize("engine", ["default", "tiny"])
def test_scores_identical(engine, request):
    if engine == "tiny":
        request.getfixturevalue("tiny_engine")
    compared = 0
    for y, s, t in _cases(3):
        pairs = [
            (hm.uplift_auc_score, sk.uplift_auc_score, {}),
            (hm.qini_auc_score, sk.qini_auc_score, {"negative_effect": True}),
            (hm.qini_auc_score, sk.qini_auc_score, {"negative_effect": False}),
        ]
        for ours, theirs, kw in pairs:
            got = _outcome(ours, y, s, t, **kw)
            ref = _outcome(_sk, theirs, y, s, t, **kw)
            if isinstance(ref, float) and not np.isfinite(ref):
                ref = "error"  # scikit-uplift's 0/0 with numpy floats
            if got == "error" or ref == "error":
                assert got == ref, (ours.__name__, kw, y, s, t, ref)
            else:
                assert got == pytest.approx(ref, abs=1e-9), (ours.__name__, kw, y, s, t)
                compared += 1
    assert compared > 500


def test_scores_identical_on_a_larger_sample():
    rng = np.random.default_rng(4)
    n = 20_000
    t = (rng.random(n) < 0.3).astype(int)
    y = (rng.random(n) < 0.1 + 0.05 * t).astype(int)
    s = np.round(rng.normal(size=n) + 0.3 * t * y, 2)  # many ties
    assert hm.qini_auc_score(y, s, t) == pytest.approx(_sk(sk.qini_auc_score, y, s, t), abs=1e-9)
    assert hm.uplift_auc_score(y, s, t) == pytest.approx(
        _sk(sk.uplift_auc_score, y, s, t), abs=1e-9
    )


@pytest.mark.parametrize("strategy", ["overall", "by_group"])
def test_uplift_at_k_identical(strategy):
    compared = 0
    for y, s, t in _cases(5):
        n = len(y)
        for k in (0.3, 0.5, 0.9, 1, 2, n - 1):
            got = _outcome(hm.uplift_at_k, y, s, t, k=k, strategy=strategy)
            ref = _outcome(_sk, sk.uplift_at_k, y, s, t, strategy=strategy, k=k)
            if isinstance(ref, float) and not np.isfinite(ref):
                ref = "error"  # an empty arm among the top rows: the mean of nothing
            if got == "error" or ref == "error":
                assert got == ref, (k, y, s, t)
            else:
                assert got == pytest.approx(ref, abs=1e-12), (k, y, s, t)
                compared += 1
    assert compared > 300
