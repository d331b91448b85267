"""Small cases computed by hand (the arithmetic is in the comments)."""

import numpy as np
import pytest

import hmum.metrics as hm

# rows in score order: treated responder, treated non-responder, control responder,
# control non-responder
Y = [1, 0, 1, 0]
T = [1, 1, 0, 0]
S = [4, 3, 2, 1]


def test_binary_qini_curve():
    # n=1: Q = Y_t = 1 (no control yet); n=2: 1; n=3: 1 - 1 * 2/1 = -1; n=4: 1 - 1 * 2/2 = 0
    x, v = hm.qini_curve(Y, S, T)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(v, [0, 1, 1, -1, 0])


def test_binary_uplift_curve():
    # n=1: (1/1 - 0) * 1 = 1; n=2: (1/2) * 2 = 1; n=3: (1/2 - 1/1) * 3 = -1.5; n=4: 0
    x, v = hm.uplift_curve(Y, S, T)
    np.testing.assert_array_equal(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(v, [0, 1, 1, -1.5, 0])


def test_binary_qini_score():
    # model area: 0.5 + 1 + 0 - 0.5 = 1 (the random line is 0: Q(4) = 0)
    # perfect ranking y(2t-1): TR | TN, CN tied | CR -> points (1, 1), (3, 1), (4, 0)
    # perfect area: 0.5 + 2 + 0.5 = 3
    x, v = hm.perfect_qini_curve(Y, T)
    np.testing.assert_array_equal(x, [0, 1, 3, 4])
    np.testing.assert_allclose(v, [0, 1, 1, 0])
    assert hm.qini_auc_score(Y, S, T) == pytest.approx(1 / 3)


def test_binary_uplift_score():
    # model area: 0.5 + 1 - 0.25 - 0.75 = 0.5
    # perfect (cr = 1 is not > tn = 1, so TR, CN, TN, CR): values 1, 2, 1.5, 0
    # perfect area: 0.5 + 1.5 + 1.75 + 0.75 = 4.5
    x, v = hm.perfect_uplift_curve(Y, T)
    np.testing.assert_allclose(v, [0, 1, 2, 1.5, 0])
    assert hm.uplift_auc_score(Y, S, T) == pytest.approx(1 / 9)


def test_ties_are_one_point():
    # blocks {0, 1} and {2, 3}: Q(2) = 1, Q(4) = 0; area 1 + 1 = 2; 2 / 3
    x, v = hm.qini_curve(Y, [1, 1, 0, 0], T)
    np.testing.assert_array_equal(x, [0, 2, 4])
    np.testing.assert_allclose(v, [0, 1, 0])
    assert hm.qini_auc_score(Y, [1, 1, 0, 0], T) == pytest.approx(2 / 3)


def test_no_harm_perfect_curve():
    # rho = 2 - 2 * 0 / 2 = 2: points (0, 0), (2, 2), (4, 2); area above the random
    # line to (4, 2): (2 + 4) - 4 = 2; the model reaches Q = 1, 2, 2, 2: also 2
    y, t = [1, 1, 0, 0], [1, 1, 0, 0]
    x, v = hm.perfect_qini_curve(y, t, negative_effect=False)
    np.testing.assert_allclose(x, [0, 2, 4])
    np.testing.assert_allclose(v, [0, 2, 2])
    assert hm.qini_auc_score(y, S, t, negative_effect=False) == pytest.approx(1.0)


def test_continuous_scores():
    # y = [5, 1, 3, 1] -> normalized [1, 0, 0.5, 0]
    # Qini model: 1, 1, 1 - 0.5 * 2/1 = 0, 1 - 0.5 * 2/2 = 0.5; area 2.25 - 1 = 1.25
    # perfect p = [1, +0, -0.5, -0]: (1, 1), (3, 1), (4, 0.5); area 3.25 - 1 = 2.25
    # uplift model: 1, 1, 0, 1; area 2.5 - 2 = 0.5; perfect: 1, 1.5, 1; 4.25 - 2 = 2.25
    y = [5.0, 1.0, 3.0, 1.0]
    x, v = hm.qini_curve(y, S, T)
    np.testing.assert_allclose(v, [0, 1, 1, 0, 0.5])
    x, v = hm.perfect_qini_curve(y, T)
    np.testing.assert_array_equal(x, [0, 1, 3, 4])
    np.testing.assert_allclose(v, [0, 1, 1, 0.5])
    assert hm.qini_auc_score(y, S, T) == pytest.approx(5 / 9)
    assert hm.uplift_auc_score(y, S, T) == pytest.approx(2 / 9)
    # the same numbers for labels shifted and scaled: only the normalized labels count
    assert hm.qini_auc_score(np.array(y) * 7 - 3, S, T) == pytest.approx(5 / 9)


def test_count_is_continuous():
    y = [5, 1, 3, 1]
    assert hm.qini_auc_score(y, S, T, kind="count") == hm.qini_auc_score(y, S, T)


def test_binary_labels_as_continuous_give_the_binary_qini():
    # the continuous perfect ranking y'(2t - 1) is scikit-uplift's perfect Qini ranking
    assert hm.qini_auc_score(Y, S, T, kind="continuous") == hm.qini_auc_score(Y, S, T)


def test_uplift_at_k():
    y, t, s = [1, 0, 1, 0, 1, 0], [1, 1, 0, 0, 1, 0], [6, 5, 4, 3, 2, 1]
    # overall, k=0.5: rows 0, 1 (treated: 1, 0) and 2 (control: 1): 0.5 - 1
    assert hm.uplift_at_k(y, s, t, k=0.5) == pytest.approx(-0.5)
    # by group, k=0.5: int(3 * 0.5) = 1 of each: row 0 (1) and row 2 (1)
    assert hm.uplift_at_k(y, s, t, k=0.5, strategy="by_group") == pytest.approx(0.0)


def test_uplift_at_k_takes_later_tied_rows_first():
    # all tied: the top 2 are the last two rows (treated 1, control 0), as scikit-uplift
    assert hm.uplift_at_k([0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0], k=2) == 1.0


@pytest.mark.parametrize(
    ("y", "t", "s", "value"),
    [
        # one treated non-responder, four control responders, the treated row last:
        # Q = 0 while no treated row is in (n_t = 0), then -1 at n = 5: area -0.5 under
        # the curve, -2.5 under the random line, 2 between them; the perfect ranking
        # (TN first, then the CR block) has points (1, 0), (5, -1): -2 + 2.5 = 0.5
        # -> 2 / 0.5 = 4
        ([0, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 1, 2, 3, 4], 4.0),
    ],
)
def test_documented_case_above_the_perfect_curve(y, t, s, value):
    assert hm.qini_auc_score(y, s, t) == pytest.approx(value)


def test_negative_zero_labels_are_zero():
    # -0.0 - 0.0 is -0.0: without care its sign bit would read as a control row
    y = np.array([0.0, -0.0, 2.0, 0.0, 1.0])
    t = np.array([1, 1, 0, 0, 1])
    perfect = np.where(t == 1, y / 2, -y / 2) + 0.0
    assert hm.qini_auc_score(y, perfect, t, kind="continuous") == 1.0
    s = np.arange(5.0)
    assert hm.qini_auc_score(y, s, t, kind="continuous") == hm.qini_auc_score(
        np.abs(y), s, t, kind="continuous"
    )
