"""Unit tests of the engine's building blocks: keys, sorts, areas."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hmum.metrics import _engine


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_desc_key_orders_floats_and_ties_zeros(values):
    x = np.array(values)
    key = _engine.desc_key(x)
    for i in range(len(x)):
        for j in range(len(x)):
            assert (key[i] < key[j]) == (x[i] > x[j])
            assert (key[i] == key[j]) == (x[i] == x[j])  # -0.0 == 0.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=30),
    st.sampled_from([np.int64, np.int8]),
)
def test_desc_key_orders_integers(values, dtype):
    x = np.array(values, dtype=np.int64)
    if dtype is np.int8:
        x = (x % 200 - 100).astype(np.int8)
    key = _engine.desc_key(x)
    order = np.argsort(key, kind="stable")
    assert (np.diff(x[order].astype(object)) <= 0).all()


def test_signed_key_keeps_zero_signs_apart_and_is_its_own_inverse():
    x = np.array([1.5, -0.0, 0.0, -2.0, 0.0, -0.0, 3.0])
    key = _engine.signed_desc_key(x)
    back = _engine.signed_desc_key(key).view(np.float64)
    np.testing.assert_array_equal(np.signbit(back), np.signbit(x))
    np.testing.assert_array_equal(back, x)
    assert int(key[2]) == 2**63 - 1 and int(key[1]) == 2**63  # +0 then -0: adjacent


def test_perfect_rows_keep_the_arm_of_zero_labels():
    """The reason for sorting keys: a float sort may turn -0.0 into +0.0."""
    y = np.array([0.0] * 100_000 + [0.5, 0.5])
    t = np.array([True, False] * 50_001)
    b = _engine.perfect_rows(_engine.ContinuousLabels(y, t, 0.0, 0.5), threads=2).blocks()
    # the treated 1, then the zeros of both arms in one block, then the control 1
    np.testing.assert_array_equal(b.n, [1, 100_001, 100_002])
    np.testing.assert_array_equal(b.nt, [1, 50_001, 50_001])
    np.testing.assert_array_equal(b.yc, [0, 0, 1])


def test_compress_key_removes_the_gap_around_zero():
    x = np.array([-1.0, -0.5, 0.25, 1.0])
    key = _engine.desc_key(x)
    span = _engine.compress_key(key)
    assert span < 2**58 and int(key.min()) == 0
    assert (np.argsort(key) == np.argsort(-x)).all()


def test_parallel_sort_equals_a_sort(monkeypatch):
    monkeypatch.setattr(_engine, "_PARALLEL_MIN", 10)
    rng = np.random.default_rng(0)
    for threads in (2, 3, 4):
        a = rng.integers(0, 50, 1001).astype(np.uint64)  # many ties across the cuts
        want = np.sort(a)
        np.testing.assert_array_equal(_engine.sort_values(a, threads), want)


def test_area_above_chord_by_hand():
    # (0,0) -> (1,1) -> (3,1) -> (4,0): trapezoids 0.5 + 2 + 0.5, chord 0
    assert _engine.area_above_chord(np.array([1, 3, 4]), np.array([1.0, 1.0, 0.0])) == 3.0
    # one block: the curve is its own chord
    assert _engine.area_above_chord(np.array([7]), np.array([3.3])) == 0.0


def test_num_threads(monkeypatch):
    monkeypatch.setenv("HMUM_NUM_THREADS", "3")
    assert _engine.num_threads() == 3
    monkeypatch.setenv("HMUM_NUM_THREADS", "many")
    try:
        _engine.num_threads()
    except ValueError as exc:
        assert "HMUM_NUM_THREADS" in str(exc)
    else:
        raise AssertionError("no error")
