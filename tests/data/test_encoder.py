import numpy as np
import pyarrow as pa
import pytest

from hmum.data.encoder import MISSING, OOV, FeatureEncoder
from hmum.data.schema import FeatureSpec
from hmum.exceptions import DataError

FIELDS = [FeatureSpec(name="city", kind="categorical"), FeatureSpec(name="x", kind="numeric")]


def table(city, x):
    return pa.table({"city": pa.array(city), "x": pa.array(x, type=pa.float64())})


def test_numeric_quantile_bins_and_missing():
    x = np.arange(100, dtype=float)
    enc = FeatureEncoder(FIELDS, n_bins=4).fit(table(["a"] * 100, x))
    assert enc.edges_["x"] == pytest.approx([24.75, 49.5, 74.25])
    ids = enc.transform(table(["a"] * 5, [0.0, 24.75, 50.0, 1e9, np.nan]))[:, 1]
    assert ids.tolist() == [1, 2, 3, 4, MISSING]
    assert enc.cardinalities[1] == 5  # missing + 4 bins


def test_bins_fitted_on_training_data_only():
    enc = FeatureEncoder(FIELDS, n_bins=2).fit(table(["a"] * 4, [0.0, 1.0, 2.0, 3.0]))
    # values far outside the training range fall in the edge bins, no new ids
    ids = enc.transform(table(["a", "a"], [-100.0, 100.0]))[:, 1]
    assert ids.tolist() == [1, 2]


def test_categorical_vocab_oov_and_missing():
    enc = FeatureEncoder(FIELDS).fit(table(["b", "a", "b", None, "c", "b", "a"], [1.0] * 7))
    assert enc.vocab_["city"] == ["b", "a", "c"]  # by frequency, ties by value
    ids = enc.transform(table(["a", "b", "zzz", None], [1.0] * 4))[:, 0]
    assert ids.tolist() == [3, 2, OOV, MISSING]
    assert enc.cardinalities[0] == 5


def test_min_count_and_max_vocab():
    cities = ["a"] * 5 + ["b"] * 3 + ["c"]
    enc = FeatureEncoder(FIELDS, min_count=2, max_vocab=1).fit(table(cities, [0.0] * 9))
    assert enc.vocab_["city"] == ["a"]
    assert enc.transform(table(["b", "c"], [0.0, 0.0]))[:, 0].tolist() == [OOV, OOV]


def test_integer_and_float_categories_are_the_same():
    fields = [FeatureSpec(name="c", kind="categorical")]
    enc = FeatureEncoder(fields).fit(pa.table({"c": pa.array([1, 2, 2])}))
    ids = enc.transform(pa.table({"c": pa.array([2.0, 1.0, 7.0])}))[:, 0]
    assert ids.tolist() == [2, 3, OOV]


def test_json_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    t = table(rng.choice(list("abcdef"), 500).tolist(), rng.normal(size=500))
    enc = FeatureEncoder(FIELDS, n_bins=8).fit(t)
    enc.to_json(tmp_path / "enc.json")
    enc2 = FeatureEncoder.from_json(tmp_path / "enc.json")
    np.testing.assert_array_equal(enc.transform(t), enc2.transform(t))
    assert enc2.cardinalities == enc.cardinalities
    out = enc.transform(t)
    assert out.dtype == np.int32 and out.shape == (500, 2)
    assert (out >= 0).all() and (out < np.array(enc.cardinalities)).all()


def test_transform_before_fit():
    with pytest.raises(RuntimeError, match="not fitted"):
        FeatureEncoder(FIELDS).transform(table(["a"], [1.0]))


def test_missing_feature_column():
    enc = FeatureEncoder(FIELDS).fit(table(["a"], [1.0]))
    with pytest.raises(DataError, match=r"missing feature column\(s\) \['x'\]"):
        enc.transform(pa.table({"city": pa.array(["a"])}))


def test_bad_parameters():
    with pytest.raises(ValueError, match="n_bins\n  Input should be greater than or equal to 1"):
        FeatureEncoder(FIELDS, n_bins=0)
