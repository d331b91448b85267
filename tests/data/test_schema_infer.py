"""Schema.infer (issue 15 #5): a proposed schema from a DataFrame's dtypes and values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmum.data.schema import Schema


def mixed_frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "uid": [f"u{i}" for i in range(n)],
        "age": rng.uniform(18, 80, n),                          # float -> numeric
        "visits": rng.integers(0, 500, n),                       # many ints -> numeric
        "plan": rng.integers(1, 4, n),                            # few ints -> a code
        "city": rng.choice(["a", "b", "c"], n),                   # strings
        "is_new": rng.random(n) < 0.5,                            # bool
        "device": pd.Categorical(rng.choice(["ios", "android"], n)),
        "group": rng.choice(["promo", "base", "discount"], n),
        "bought": rng.integers(0, 2, n),                          # {0, 1} -> binary
        "items": rng.poisson(2.0, n).astype(float),               # integral floats -> count
        "revenue": rng.gamma(2.0, 3.0, n),                        # >= 0 real -> continuous
        "profit": rng.normal(0, 1, n),                            # signed -> continuous
    })


def test_infer_proposes_kinds_from_dtypes_and_values():
    s = Schema.infer(mixed_frame(), arm="group", responses=["bought", "items", "revenue",
                                                            "profit"], user_id="uid")
    assert {f.name: f.kind for f in s.features} == {
        "age": "numeric", "visits": "numeric", "plan": "categorical", "city": "categorical",
        "is_new": "categorical", "device": "categorical"}
    assert [(r.name, r.kind) for r in s.responses] == [
        ("bought", "binary"), ("items", "count"), ("revenue", "continuous"),
        ("profit", "continuous")]
    assert [r.nonnegative for r in s.responses][2:] == [True, False]
    assert s.arms == ["base", "discount", "promo"]  # first sorted is control
    assert s.user_id == "uid" and s.arm_column == "group" and not s.ground_truth


def test_infer_names_the_control_and_round_trips_through_json(tmp_path):
    s = Schema.infer(mixed_frame(), arm="group", responses=["bought"], user_id="uid",
                     control="promo")
    assert s.arms == ["promo", "base", "discount"]
    s.to_json(tmp_path / "schema.json")
    assert Schema.from_json(tmp_path / "schema.json") == s


def test_infer_refuses_a_control_that_is_not_an_arm():
    with pytest.raises(ValueError, match="control='none' is not a value of the arm column"):
        Schema.infer(mixed_frame(), arm="group", responses=["bought"], control="none")


def test_infer_refuses_a_missing_column():
    with pytest.raises(ValueError, match=r"column\(s\) \['clicks'\] not in the frame"):
        Schema.infer(mixed_frame(), arm="group", responses=["clicks"])


def test_infer_integer_arms_are_indices():
    df = mixed_frame().assign(arm=lambda d: d["plan"] - 1)
    s = Schema.infer(df.drop(columns=["group"]), arm="arm", responses=["bought"])
    assert s.arms == ["0", "1", "2"]
    with pytest.raises(ValueError, match="integer arms are indices 0..K"):
        Schema.infer(df, arm="plan", responses=["bought"])
