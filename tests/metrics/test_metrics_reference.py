"""The fast implementation against the slow, obvious one in metrics_reference.py."""

import warnings

import numpy as np
import pytest

import hmum.metrics as hm
from hmum.metrics import _engine
from hmum.metrics.ranking import _labels
from tests.metrics import metrics_reference as ref

KINDS = ["binary", "continuous"]


def _cases(seed, kind, count=120):
    rng = np.random.default_rng(seed)
    return [ref.random_case(rng, kind) for _ in range(count)]


def _outcome(f, *args, **kwargs):
    """The value, or 'error' (the reference's 0/0 and means of nothing warn; silenced)."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return f(*args, **kwargs)
    except (ValueError, ZeroDivisionError):
        return "error"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ["default", "tiny"])
def test_curves_match_reference(kind, engine, request):
    if engine == "tiny":
        request.getfixturevalue("tiny_engine")
    for y, s, t in _cases(10, kind):
        for ours, which in [(hm.qini_curve, "qini"), (hm.uplift_curve, "uplift")]:
            x, v = ours(y, s, t, kind=kind)
            x_ref, v_ref = ref.curve(y, s, t, kind, which)
            np.testing.assert_array_equal(x, x_ref)
            np.testing.assert_allclose(v, v_ref, rtol=1e-12, atol=1e-9)
        for ours, which in [(hm.perfect_qini_curve, "qini"), (hm.perfect_uplift_curve, "uplift")]:
            x, v = ours(y, t, kind=kind)
            x_ref, v_ref = ref.perfect_curve(y, t, kind, which)
            np.testing.assert_array_equal(x, x_ref)
            np.testing.assert_allclose(v, v_ref, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ["default", "tiny"])
def test_scores_match_reference(kind, engine, request):
    if engine == "tiny":
        request.getfixturevalue("tiny_engine")
    compared = 0
    for y, s, t in _cases(11, kind):
        for ours, which, kw in [
            (hm.qini_auc_score, "qini", {"negative_effect": True}),
            (hm.qini_auc_score, "qini", {"negative_effect": False}),
            (hm.uplift_auc_score, "uplift", {}),
        ]:
            got = _outcome(ours, y, s, t, kind=kind, **kw)
            want = _outcome(ref.score, y, s, t, kind, which, **kw)
            if isinstance(want, float) and not np.isfinite(want):
                want = "error"
            if kw.get("negative_effect") is False and isinstance(want, float):
                rho = ref.perfect_curve(y, t, kind, "qini", False)[1][1]
                want = want if rho > 0 else "error"  # a curve going back in x is refused
            if got == "error" or want == "error":
                assert got == want, (ours.__name__, kw, y, s, t)
            else:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (ours.__name__, y, s, t)
                compared += 1
    assert compared > 250


@pytest.mark.parametrize("kind", KINDS)
def test_every_sort_method_gives_the_same_blocks(kind, tiny_engine):
    """bits / index / argsort, one or three threads, chunk boundaries every 5 rows."""
    for y, s, t in _cases(12, kind, count=200):
        labels = _labels(np.asarray(y), np.asarray(t) != 0, kind)
        methods = ["argsort", "index"] + (["bits"] if kind == "binary" else [])
        got = [
            _engine.score_rows(np.asarray(s), labels, method=m, threads=th).blocks()
            for m in methods
            for th in (1, 3)
        ]
        for other in got[1:]:
            for field in _engine._FIELDS:
                np.testing.assert_array_equal(getattr(other, field), getattr(got[0], field))


def test_coarse_keys_are_refined(monkeypatch, tiny_engine):
    """Scores spanning 1e-300..1e300 overflow the packed key; neighbours that differ
    only in their last bits must still be ordered and split exactly."""
    calls = []
    original = _engine._refine_coarse_ties
    monkeypatch.setattr(_engine, "_refine_coarse_ties", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(13)
    for _ in range(200):
        n = int(rng.integers(3, 60))
        s = 1.0 + rng.integers(0, 4, n) * 2.0**-50 + rng.integers(0, 3, n) * 2.0**-30
        s[rng.random(n) < 0.1] = 1e300
        s[rng.random(n) < 0.1] = -1e300
        t = np.arange(n) % 2
        y = (rng.random(n) < 0.5).astype(float)
        y[:2] = [0, 1]
        for kind in KINDS:
            labels = _labels(y, t != 0, kind)
            want = _engine.score_rows(s, labels, method="argsort").blocks()
            got = _engine.score_rows(s, labels, method="index", threads=3).blocks()
            for field in _engine._FIELDS:
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert calls


@pytest.mark.parametrize("strategy", ["overall", "by_group"])
def test_uplift_at_k_matches_reference(strategy):
    for kind in KINDS:
        for y, s, t in _cases(14, kind, count=80):
            s = np.asarray(s, dtype=float)
            for k in (0.3, 0.7, 2):
                got = _outcome(hm.uplift_at_k, y, s, t, k=k, strategy=strategy)
                want = _outcome(ref.uplift_at_k, y, s, t, k, strategy)
                if isinstance(want, float) and not np.isfinite(want):
                    want = "error"
                if got == "error" or want == "error":
                    continue  # the error cases are compared with scikit-uplift
                assert got == pytest.approx(want, abs=1e-12)
