"""The issue's smoke test: every model, one epoch, a few hundred simulated users.

Runs each registered estimator (HUM and every baseline) and the reference and
causalml learners through the same ``fit`` / ``predict_outcomes`` interface on
the short-video simulator's data, with K = 2 for the multi-treatment models and
K = 1 for all of them.
"""

import numpy as np
import pytest

from hmum.data.datasets import load_benchmark
from hmum.models.registry import get_entry, list_models


@pytest.fixture(scope="module")
def splits():
    return {k: load_benchmark("simulator", seed=0, n_users=400, n_treatments=k)[0]
            for k in (1, 2)}


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("k", [1, 2])
def test_one_epoch_on_simulated_users(name, k, splits):
    spec = get_entry(name)
    cls = spec.cls
    split = splits[k]
    est = spec.build(split.train.schema,
                     trainer={"max_epochs": 1, "batch_size": 128, "num_threads": 1})
    limit = getattr(cls, "max_treatments", None)
    if limit is not None and k > limit:
        with pytest.raises(ValueError, match=f"K={k}"):
            est.fit(split.train, split.valid)
        return
    est.fit(split.train, split.valid)
    y_hat = est.predict_outcomes(split.test)
    assert y_hat.shape == (len(split.test), k + 1, 2)
    assert np.isfinite(y_hat).all()
    if not spec.model_type.startswith("causalml_"):  # LightGBM regressors have no link
        assert (y_hat > 0).all()  # usage time and views: positive links
