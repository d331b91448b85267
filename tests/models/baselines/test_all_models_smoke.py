"""The issue's smoke test: every model, one epoch, a few hundred simulated users.

Runs each registered estimator (HUM and every baseline) and the reference and
causalml learners through the same ``fit`` / ``predict_outcomes`` interface on
the short-video simulator's data, with K = 2 for the multi-treatment models and
K = 1 for all of them.
"""

import numpy as np
import pytest

from hmum.bench import MODEL_SPECS, _estimator_classes
from hmum.data.datasets import load_benchmark

CLASSES, PROBLEM = _estimator_classes()


@pytest.fixture(scope="module")
def splits():
    return {k: load_benchmark("simulator", seed=0, n_users=400, n_treatments=k)[0]
            for k in (1, 2)}


def test_every_model_the_harness_knows_is_buildable():
    assert PROBLEM is None
    missing = [s.name for s in MODEL_SPECS.values() if s.model_type not in CLASSES]
    assert missing == []


@pytest.mark.parametrize("name", list(MODEL_SPECS))
@pytest.mark.parametrize("k", [1, 2])
def test_one_epoch_on_simulated_users(name, k, splits):
    spec = MODEL_SPECS[name]
    cls = CLASSES[spec.model_type]
    split = splits[k]
    est = cls(split.train.schema, model=dict(spec.model) or None,
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
