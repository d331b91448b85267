"""Seeded bootstrap intervals."""

import numpy as np
import pytest

import hmum.metrics as hm
from tests.metrics.metrics_reference import random_case


def _generic(f):
    """The same score through the generic path (a plain resample-and-call loop)."""
    return lambda *args, **kwargs: f(*args, **kwargs)


@pytest.mark.parametrize("kind", ["binary", "continuous"])
@pytest.mark.parametrize("stratify", [True, False])
def test_fast_path_equals_calling_the_score_on_resamples(kind, stratify):
    rng = np.random.default_rng(8)
    checked = 0
    for i in range(60):
        y, s, t = random_case(rng, kind, n_max=50)
        for f, kw in [
            (hm.qini_auc_score, {}),
            (hm.qini_auc_score, {"negative_effect": False}),
            (hm.uplift_auc_score, {}),
        ]:
            args = dict(n_boot=15, seed=i, stratify=stratify, kind=kind, **kw)
            try:
                fast = hm.bootstrap_ci(f, y, s, t, **args)
            except ValueError as exc:
                with pytest.raises(ValueError, match="bootstrap resample|perfect|negative_eff"):
                    hm.bootstrap_ci(_generic(f), y, s, t, **args)
                assert "resample" in str(exc) or "perfect" in str(exc) or "negative" in str(exc)
                continue
            slow = hm.bootstrap_ci(_generic(f), y, s, t, **args)
            np.testing.assert_allclose(fast.samples, slow.samples, rtol=1e-9, atol=1e-9)
            assert fast.estimate == pytest.approx(slow.estimate)
            checked += 1
    assert checked > 60


def test_seeded_and_sensible():
    rng = np.random.default_rng(9)
    n = 4000
    t = rng.random(n) < 0.5
    x = rng.normal(size=n)
    y = (rng.random(n) < 0.2 + 0.1 * t * (x > 0)).astype(int)
    a = hm.bootstrap_ci(hm.qini_auc_score, y, x, t, n_boot=200, seed=3)
    b = hm.bootstrap_ci(hm.qini_auc_score, y, x, t, n_boot=200, seed=3)
    assert a.low == b.low and a.high == b.high
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.low < a.estimate < a.high
    assert a.samples.shape == (200,)
    assert a.estimate == hm.qini_auc_score(y, x, t)
    c = hm.bootstrap_ci(hm.qini_auc_score, y, x, t, n_boot=200, seed=4)
    assert c.low != a.low


def test_any_score():
    rng = np.random.default_rng(10)
    n = 500
    t = rng.random(n) < 0.5
    y = rng.normal(size=n) + t
    ci = hm.bootstrap_ci(hm.uplift_at_k, y, rng.random(n), t, n_boot=50, k=0.5)
    assert ci.low < 1 < ci.high


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_boot": 0}, "n_boot must be a positive int"), ({"alpha": 1.5}, "alpha must be in")],
)
def test_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hm.bootstrap_ci(hm.qini_auc_score, [1, 0, 1, 0], [1, 2, 3, 4], [1, 1, 0, 0], **kwargs)


def test_unstratified_resample_losing_an_arm():
    y, s, t = [1, 0, 1, 0, 1], [1, 2, 3, 4, 5], [1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="lost an arm; use stratify=True"):
        hm.bootstrap_ci(hm.qini_auc_score, y, s, t, n_boot=50, stratify=False)
