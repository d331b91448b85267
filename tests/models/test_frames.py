"""pandas in, pandas out (issue 15 #5): estimators take a DataFrame with their schema and
return labelled frames; the DataFrame path equals the file / ExperimentData path exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmum.data.schema import Schema
from hmum.data.validate import load_experiment
from hmum.models.registry import get_model

TINY = {"embed_dim": 4, "hidden_sizes": [8], "head_sizes": [4]}
TRAINER = {"max_epochs": 1, "batch_size": 128, "num_threads": 1, "seed": 5}


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(1)
    n = 600
    arm = rng.choice(["none", "coupon", "banner"], n)
    spend = rng.uniform(0, 100, n)
    df = pd.DataFrame({
        "spend": spend, "region": rng.choice(["n", "s", "e", "w"], n),
        "offer": arm, "orders": rng.poisson(1 + (arm == "coupon") * (spend > 50)),
        "basket": rng.gamma(2.0, 10.0, n),
    })
    df.index = pd.Index(np.arange(n) * 7 + 3, name="row")  # an index of the user's own
    return df


@pytest.fixture(scope="module")
def schema(frame):
    return Schema.infer(frame, arm="offer", responses=["orders", "basket"], control="none")


def test_dataframe_fit_and_predict_equal_the_file_path(frame, schema, tmp_path):
    path = tmp_path / "exp.parquet"
    frame.reset_index(drop=True).to_parquet(path, index=False)
    d = load_experiment(path, schema)
    a = get_model("slearner", schema, model=TINY, trainer=TRAINER).fit(frame)
    b = get_model("slearner", schema, model=TINY, trainer=TRAINER).fit(d)
    np.testing.assert_array_equal(a.predict_outcomes(frame), b.predict_outcomes(d))
    np.testing.assert_array_equal(a.predict_uplift(frame), b.predict_uplift(d))
    np.testing.assert_array_equal(a.predict_outcomes(frame.drop(columns=["orders", "basket"])),
                                  b.predict_outcomes(d))


def test_as_frame_labels_and_index(frame, schema):
    est = get_model("slearner", schema, model=TINY, trainer=TRAINER).fit(frame)
    y = est.predict_outcomes(frame, as_frame=True)
    assert list(y.columns) == [f"y_hat__{a}__{r}" for a in ("none", "banner", "coupon")
                               for r in ("orders", "basket")]
    assert y.index.equals(frame.index)
    arr = est.predict_outcomes(frame)
    np.testing.assert_array_equal(y["y_hat__coupon__basket"].to_numpy(), arr[:, 2, 1])
    tau = est.predict_uplift(frame, as_frame=True)
    assert list(tau.columns) == [f"tau__{a}__{r}" for a in ("banner", "coupon")
                                 for r in ("orders", "basket")]
    assert tau.index.equals(frame.index)
    np.testing.assert_allclose(tau["tau__banner__orders"].to_numpy(),
                               arr[:, 1, 0] - arr[:, 0, 0])


def test_arm_means_take_and_give_frames(frame, schema):
    est = get_model("arm_means", schema).fit(frame)
    tau = est.predict_uplift(frame.iloc[:5], as_frame=True)
    assert tau.index.equals(frame.index[:5])
    treated = frame[frame["offer"] == "coupon"]["orders"].mean()
    control = frame[frame["offer"] == "none"]["orders"].mean()
    assert tau["tau__coupon__orders"].iloc[0] == pytest.approx(treated - control)


def test_causalml_takes_and_gives_frames(frame, schema):
    from hmum.models.causalml import causalml_available

    if not causalml_available():
        pytest.skip("causalml is not installed")
    est = get_model("causalml_t", schema, model={"lgbm": {"n_estimators": 5}}).fit(frame)
    y = est.predict_outcomes(frame, as_frame=True)
    assert y.shape == (len(frame), 6) and y.index.equals(frame.index)
