"""Level diagnostics (hmum.metrics.levels) against hand-computed values."""

import numpy as np
import pytest

from hmum.metrics.levels import level_table


def test_level_table_hand_computed():
    # K = 1, R = 1: control rows y = 1, 3; treated rows y = 2, 4, 9
    y = np.array([[1.0], [3.0], [2.0], [4.0], [9.0]])
    arm = np.array([0, 0, 1, 1, 1])
    y_hat = np.empty((5, 2, 1))
    y_hat[:, 0, 0] = [2.5, 2.5, 1e6, 1e6, 1e6]  # control prediction; treated rows' ignored
    y_hat[:, 1, 0] = [-1e6, -1e6, 9.0, 9.0, 12.0]  # treated prediction; control rows' ignored
    t = level_table(y, arm, y_hat, arm_names=["c", "t"], response_names=["v"]).set_index("arm")
    # control: observed 2, sd (ddof 1) sqrt(2), se = sqrt(2) / sqrt(2) = 1; predicted 2.5
    c = t.loc["c"]
    assert c["n"] == 2 and c["observed_mean"] == 2.0 and c["predicted_mean"] == 2.5
    assert c["observed_se"] == pytest.approx(1.0)
    assert c["gap"] == 0.5 and c["relative_gap"] == 0.25 and c["gap_se"] == pytest.approx(0.5)
    assert not c["flagged"]
    # treated: observed 5, deviations -3, -1, 4 -> var 26 / 2 = 13, se = sqrt(13 / 3)
    tr = t.loc["t"]
    se = np.sqrt(13 / 3)
    assert tr["observed_mean"] == 5.0 and tr["predicted_mean"] == 10.0
    assert tr["observed_se"] == pytest.approx(se)
    assert tr["gap_se"] == pytest.approx(5.0 / se)  # 2.40 SE: within sampling error at z=3
    assert not tr["flagged"]
    again = level_table(y, arm, y_hat, z=2.0).set_index("arm")
    assert again.loc["1", "flagged"] and not again.loc["0", "flagged"]


def test_level_table_shapes_and_empty_arm():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(40, 2))
    arm = np.zeros(40, dtype=int)  # arm 1 has no rows
    y_hat = np.zeros((40, 2, 2))
    t = level_table(y, arm, y_hat)
    assert list(t["arm"]) == ["0", "0", "1", "1"] and list(t["response"]) == ["0", "1"] * 2
    empty = t[t["arm"] == "1"]
    assert (empty["n"] == 0).all() and empty["observed_mean"].isna().all()
    assert not empty["flagged"].any()


def test_level_table_flags_a_level_shift():
    rng = np.random.default_rng(1)
    n = 20_000
    arm = rng.integers(0, 3, n)
    y = rng.normal(10.0, 2.0, size=(n, 1))
    y_hat = np.full((n, 3, 1), 10.0)
    y_hat[:, 2] = 10.5  # arm 2 predicted 5 % too high; se about 2 / sqrt(6667) = 0.024
    t = level_table(y, arm, y_hat).set_index("arm")
    assert t["flagged"].tolist() == [False, False, True]


def test_level_table_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"y_hat must have shape \(3, K\+1, 1\)"):
        level_table(np.zeros((3, 1)), np.zeros(3, dtype=int), np.zeros((3, 2, 2)))
