"""The one registry (hmum.models.registry): registration, lookup, overrides, order,
loading artifacts, and the UpliftModel contract of every registered class."""

import numpy as np
import pytest
import torch

import hmum
from hmum.exceptions import ArtifactError
from hmum.models import registry
from hmum.models.arm_means import ArmMeansEstimator
from hmum.models.artifacts import write_artifact
from hmum.models.base import NeuralUpliftEstimator, UpliftModel
from hmum.models.hum import HUMEstimator
from hmum.models.registry import (
    estimator_classes,
    get_entry,
    get_model,
    list_models,
    load_estimator,
    register,
    registered_estimators,
)
from tests.synth import make_experiment


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that a test may add to; the real one is left as it was."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    return registry._ENTRIES


@pytest.fixture(scope="module")
def schema():
    return make_experiment(60, K=2, R=2).schema


class _Contract:
    """Everything UpliftModel asks for; subclasses below drop one piece."""

    model_type = "scratch"
    max_treatments = None

    def __init__(self, schema, *, model=None, trainer=None):
        self.schema = schema

    def fit(self, train, valid=None, *, progress=False, log=None):
        return self

    def predict_outcomes(self, data):
        raise NotImplementedError

    def predict_uplift(self, data):
        raise NotImplementedError

    def save(self, path):
        raise NotImplementedError


# --- registration -------------------------------------------------------------------------


def test_a_taken_name_is_refused_and_the_entry_kept(scratch_registry):
    with pytest.raises(ValueError, match="'hum' is already registered"):
        register("hum", ArmMeansEstimator)
    assert get_entry("hum").cls is HUMEstimator


def test_a_new_name_is_registered_and_listed_last(scratch_registry):
    entry = register("scratch", _Contract, model={"a": 1}, label="Scratch")
    assert get_entry("scratch") is entry
    assert list_models()[-1] == "scratch"
    assert (entry.model_type, entry.display, entry.ours) == ("scratch", "Scratch", False)


def test_a_class_lacking_the_contract_is_refused(scratch_registry):
    class NoUplift:  # no predict_uplift
        model_type = "bad"

        def fit(self, train, valid=None, **_):
            return self

        def predict_outcomes(self, data):
            raise NotImplementedError

        def save(self, path):
            raise NotImplementedError

    with pytest.raises(TypeError, match=r"NoUplift cannot be registered as 'bad'.*predict_uplift"):
        register("bad", NoUplift)
    assert "bad" not in list_models()


def test_unknown_names_are_refused_naming_the_known_ones(schema):
    with pytest.raises(KeyError, match="unknown model name 'humm'; known: hum, hum_nokl"):
        get_model("humm", schema)


# --- get_model: the entry's overrides and the caller's ---------------------------------------


def test_get_model_merges_the_callers_model_fields_over_the_entrys(schema):
    est = get_model("hum_nokl", schema, model={"embed_dim": 8})
    assert isinstance(est, HUMEstimator)
    assert est.model == {"kl_weight": 0.0, "embed_dim": 8}
    assert get_model("hum_nokl", schema, model={"kl_weight": 0.5}).model == {"kl_weight": 0.5}
    assert get_model("cfrnet_mmd", schema).model == {"ipm": "mmd"}


def test_get_model_lets_the_entrys_trainer_fields_win(schema):
    est = get_model("hum_paper", schema, trainer={"ema_share": 0.3, "max_epochs": 2})
    assert est.trainer == {"ema_share": None, "max_epochs": 2}
    _, trainer, _ = est._configs()
    assert trainer.ema_share is None and trainer.max_epochs == 2
    plus = get_model("slearner_plus", schema, trainer={"ema_share": 0.5, "seed": 4})
    assert plus.trainer == {"ema_share": 0.1, "seed": 4}
    assert plus.model == {"loss": "deviance"}


def test_get_model_passes_other_constructor_arguments(schema):
    est = get_model("hum", schema, encoder={"n_bins": 7})
    assert est.encoder == {"n_bins": 7}
    assert est.model is None and est.trainer is None  # no overrides: the class's defaults


# --- order and the public API -----------------------------------------------------------------


def test_list_models_puts_the_hum_family_first():
    names = list_models()
    assert names[:3] == ["hum", "hum_nokl", "hum_paper"]
    ours = [get_entry(n).ours for n in names]
    assert ours == sorted(ours, reverse=True)  # every HUM entry before every baseline
    assert len(set(names)) == len(names)


def test_the_public_api_is_the_registry():
    assert hmum.list_models() == list_models()
    assert hmum.get_model is get_model and hmum.load_estimator is load_estimator


def test_estimator_classes_map_each_model_type_to_its_class():
    classes = estimator_classes()
    for name in list_models():
        entry = get_entry(name)
        assert classes[entry.model_type] is entry.cls
    neural = registered_estimators()
    assert neural["hum"] is HUMEstimator and neural["tarnet"] is get_entry("tarnet").cls
    assert "arm_means" not in neural and "causalml_t" not in neural
    assert all(issubclass(c, NeuralUpliftEstimator) for c in neural.values())


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_follows_the_contract(name, schema):
    est = get_model(name, schema)
    assert isinstance(est, UpliftModel)
    assert est.schema is schema
    limit = type(est).max_treatments
    assert limit is None or (isinstance(limit, int) and limit >= 1)


def test_the_contract_check_can_fail(schema):
    class NoSave(_Contract):
        save = None

    assert isinstance(_Contract(schema), UpliftModel)
    assert not isinstance(NoSave(schema), UpliftModel)
    assert not isinstance(object(), UpliftModel)
    no_schema = _Contract.__new__(_Contract)  # constructed without storing its schema
    assert not isinstance(no_schema, UpliftModel)


# --- load_estimator -----------------------------------------------------------------------------


def test_load_estimator_reads_an_arm_means_artifact(tmp_path):
    d = make_experiment(300, K=2, R=2)
    est = ArmMeansEstimator(d.schema).fit(d)
    est.save(tmp_path / "m")
    back = load_estimator(tmp_path / "m")
    assert isinstance(back, ArmMeansEstimator)
    assert back.schema == d.schema
    np.testing.assert_array_equal(back.means_, est.means_)
    np.testing.assert_array_equal(back.predict_outcomes(d), est.predict_outcomes(d))


def test_load_estimator_refuses_an_unknown_model_type(tmp_path, schema):
    write_artifact(tmp_path / "m", json_files={"config": {"model_type": "prophet"},
                                               "schema": schema.model_dump()},
                   tensors={"means": torch.zeros(3, 2)})
    with pytest.raises(ArtifactError, match=r"m: unknown model_type 'prophet'; known: \["):
        load_estimator(tmp_path / "m")


def test_load_estimator_refuses_arm_means_of_another_shape(tmp_path, schema):
    write_artifact(tmp_path / "m", json_files={"config": {"model_type": "arm_means"},
                                               "schema": schema.model_dump()},
                   tensors={"means": torch.zeros(2, 2)})
    with pytest.raises(ArtifactError, match=r"means of shape \(2, 2\).*\(K\+1, R\) = \(3, 2\)"):
        load_estimator(tmp_path / "m")
