"""Eqs. 6-11 of the paper on hand-computed cases, and their properties."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hmum.decision.core import balanced_score, relative_uplift, value_weights, y0_star
from hmum.decision.policies import decide, decide_from_phi


def test_hand_computed_pipeline_eqs_6_to_11():
    # one user, K = 2 treatments, R = 2 responses
    y0_branch = np.array([[[10.0, 4.0], [12.0, 6.0]]])  # (1, K, R)
    y0 = y0_star(y0_branch)  # eq. 6: mean over branches
    np.testing.assert_allclose(y0, [[11.0, 5.0]])
    y_treated = np.array([[[12.1, 4.5], [11.0, 5.5]]])  # (1, K, R)
    y_hat = np.concatenate([y0[:, None], y_treated], axis=1)
    delta = relative_uplift(y_hat)  # eq. 7
    np.testing.assert_allclose(delta, [[[0.1, -0.1], [0.0, 0.1]]])
    o_hat = np.array([[0.6, 0.2]])  # predicted shares (eq. 9)
    w = value_weights(o_hat)  # eq. 10
    np.testing.assert_allclose(w, [[0.75, 0.25]])
    phi = balanced_score(delta, w)  # eq. 11
    np.testing.assert_allclose(phi, [[0.75 * 0.1 - 0.25 * 0.1, 0.25 * 0.1]])  # [0.05, 0.025]
    _, en = decide(delta, w, sigma=0.0, mode="independent")
    assert en.tolist() == [[True, True]]
    _, en = decide(delta, w, sigma=0.03, mode="independent")
    assert en.tolist() == [[True, False]]
    _, en = decide(delta, w, sigma=0.0, mode="exclusive")
    assert en.tolist() == [[True, False]]
    _, en = decide(delta, w, sigma=0.06, mode="exclusive")
    assert en.tolist() == [[False, False]]


def test_value_weights_clip_negative_shares():
    w = value_weights(np.array([[-0.2, 0.4, 0.4], [0.0, 0.0, 0.0], [-1.0, -2.0, -3.0]]))
    np.testing.assert_allclose(w, [[0.0, 0.5, 0.5], [1 / 3] * 3, [1 / 3] * 3])


def test_value_weights_torch_matches_numpy():
    o = np.array([[0.3, -0.1], [0.2, 0.6], [0.0, 0.0]], dtype=np.float32)
    wt = value_weights(torch.from_numpy(o)).numpy()
    np.testing.assert_allclose(wt, value_weights(o), rtol=1e-6)


def test_value_weights_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(N, R\)"):
        value_weights(np.ones(3))


def test_relative_uplift_floor_keeps_delta_finite():
    y_hat = np.array([[[0.0, 1.0], [0.5, 2.0]]])  # y0* = 0 for response 0
    delta = relative_uplift(y_hat, floor=1e-3)
    assert np.isfinite(delta).all()
    np.testing.assert_allclose(delta, [[[0.5 / 1e-3 - 1, 1.0]]])


finite = st.floats(-5, 5, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (7, 3), elements=finite))
def test_weights_in_unit_interval_and_sum_to_one(o_hat):
    w = value_weights(o_hat)
    assert (w >= 0).all() and (w <= 1).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (6, 4, 2), elements=st.floats(0.01, 100)))
def test_y0_star_between_branch_min_and_max(y0_branch):
    y0 = y0_star(y0_branch)
    assert (y0 >= y0_branch.min(axis=1) - 1e-9).all()
    assert (y0 <= y0_branch.max(axis=1) + 1e-9).all()


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, (9, 3), elements=finite), st.floats(-1, 1), st.floats(0, 2),
       st.sampled_from(["independent", "exclusive"]))
def test_raising_sigma_never_enables_more(phi, sigma, step, mode):
    low = decide_from_phi(phi, sigma=sigma, mode=mode)
    high = decide_from_phi(phi, sigma=sigma + step, mode=mode)
    assert not (high & ~low).any()  # every treatment on at the higher sigma was on before
    assert high.sum() <= low.sum()


def test_exclusive_enables_at_most_one_and_only_positive():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(200, 4))
    en = decide_from_phi(phi, sigma=0.0, mode="exclusive")
    assert (en.sum(axis=1) <= 1).all()
    on = en.any(axis=1)
    np.testing.assert_array_equal(on, phi.max(axis=1) > 0)
    np.testing.assert_array_equal(en[on].argmax(axis=1), phi[on].argmax(axis=1))


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        decide_from_phi(np.zeros((2, 2)), mode="both")
