"""causalml's S-, T- and X-learners: classifier variants, treatment order, recovery,
propensity options, fallbacks, features and the optional extra.

Shapes, determinism, the save refusal and the not-fitted error: the common check
(test_estimator_checks.py)."""

import sys

import numpy as np
import pyarrow as pa
import pytest

from hmum.data.validate import ExperimentData
from hmum.models.causalml import (
    CausalMLSLearner,
    CausalMLTLearner,
    CausalMLXLearner,
    causalml_available,
)
from tests.models.helpers import with_binary
from tests.synth import make_experiment

pytestmark = pytest.mark.skipif(not causalml_available(), reason="needs hmum[causalml]")

LEARNERS = [CausalMLSLearner, CausalMLTLearner, CausalMLXLearner]
SMALL = {"lgbm": {"n_estimators": 30}}


@pytest.fixture(scope="module")
def mixed():
    return with_binary(make_experiment(n=900, K=2, R=2, effect=1.0))


@pytest.mark.parametrize("cls", LEARNERS)
def test_binary_response_uses_the_classifier_variant(cls, mixed):
    est = cls(mixed.schema, model=SMALL, trainer={"max_epochs": 1, "batch_size": 256}).fit(mixed)
    y_hat = est.predict_outcomes(mixed)
    # the binary response goes through the classifier variant: control outcome is a probability
    assert est.classifier_ == [False, True]
    assert ((y_hat[:, 0, 1] >= 0) & (y_hat[:, 0, 1] <= 1)).all()


def test_treatment_order_follows_the_schema_not_causalml_sorting():
    # arm names that sort the other way round ("t2" < "zz") must still land in their column
    d = make_experiment(n=900, K=2, R=1, effect=2.0)
    schema = d.schema.model_copy(update={"arms": ["control", "zz", "t2"]})
    d = ExperimentData(schema=schema, features=d.features, arm=d.arm, y=d.y, mu=d.mu)
    tau = CausalMLTLearner(schema, model=SMALL).fit(d).predict_uplift(d)
    for k in range(2):
        assert np.corrcoef(tau[:, k, 0], d.tau[:, k, 0])[0, 1] > 0.9


def test_t_learner_recovers_the_true_uplift():
    d = make_experiment(n=2000, K=2, R=2, effect=2.0)
    tau = CausalMLTLearner(d.schema, trainer={"seed": 0}).fit(d).predict_uplift(d)
    for k in range(2):
        for r in range(2):
            assert np.corrcoef(tau[:, k, r], d.tau[:, k, r])[0, 1] > 0.5


@pytest.mark.parametrize("propensity", ["elasticnet", "constant"])
def test_x_learner_propensity_options(propensity):
    d = make_experiment(n=1200, K=2, R=1, effect=2.0)
    est = CausalMLXLearner(d.schema, model={**SMALL, "propensity": propensity}).fit(d)
    tau = est.predict_uplift(d)
    assert np.corrcoef(tau[:, 0, 0], d.tau[:, 0, 0])[0, 1] > 0.5
    if propensity == "constant":  # the arm's share among control + arm rows
        share = np.mean(d.arm[(d.arm == 0) | (d.arm == 1)] == 1)
        assert est.propensity_["t1"] == pytest.approx(share)


def test_binary_response_with_one_class_in_an_arm_falls_back_to_regression(mixed):
    y = mixed.y.copy()
    y[mixed.arm == 0, 1] = 0.0  # no positive in the control arm: a classifier cannot fit
    d = ExperimentData(schema=mixed.schema, features=mixed.features, arm=mixed.arm, y=y)
    est = CausalMLTLearner(d.schema, model=SMALL).fit(d)
    assert est.classifier_ == [False, False]
    assert est.predict_outcomes(d).shape == (900, 3, 2)


def test_log_called_once_with_an_epoch(mixed):
    seen = []
    CausalMLTLearner(mixed.schema, model=SMALL).fit(mixed, log=seen.append)
    assert [r["epoch"] for r in seen] == [1]


def test_missing_arm_in_training_rows(mixed):
    d = mixed.take(np.flatnonzero(mixed.arm != 2))
    with pytest.raises(ValueError, match=r"arm\(s\) \['t2'\] have no rows"):
        CausalMLTLearner(d.schema).fit(d)


def test_unknown_config_field(mixed):
    with pytest.raises(ValueError, match="n_trees"):
        CausalMLTLearner(mixed.schema, model={"n_trees": 3}).fit(mixed)


@pytest.mark.parametrize("module", ["lightgbm", "causalml.inference.meta"])
def test_missing_extra_names_it(monkeypatch, mixed, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(ImportError, match=r"hmum\[causalml\]"):
        CausalMLTLearner(mixed.schema).fit(mixed)


def test_features_numeric_as_float_categorical_as_codes(mixed):
    est = CausalMLTLearner(mixed.schema, model=SMALL).fit(mixed)
    table = pa.table({"seg": ["1", "0", "unseen", None], "x1": [0.5, -1.0, 2.0, None]})
    x = est._matrix(table)
    vocab = est.cat_encoder_.vocab_["seg"]
    # ids: 0 missing, 1 unseen, 2.. the vocabulary in training-frequency order
    assert x[:, 0].tolist() == [2 + vocab.index("1"), 2 + vocab.index("0"), 1, 0]
    assert x[:3, 1].tolist() == [0.5, -1.0, 2.0]
    assert np.isnan(x[3, 1])
