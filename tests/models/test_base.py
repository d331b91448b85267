"""What every neural estimator shares (hmum.models.base.NeuralUpliftEstimator), through
HUM: seeds, artifacts (files, sums, forgeries), checkpoints and resume, early stopping,
EMA, the recorded split, input checks and trainer defaults.

Shapes, determinism, save/load identity and the not-fitted error of every model: the
common check (test_estimator_checks.py); HUM's own estimator behaviour: test_hum.py."""

import json

import numpy as np
import pytest

from hmum.exceptions import ArtifactError
from hmum.models.hum import HUMEstimator
from hmum.models.registry import load_estimator
from tests.models.helpers import HUM_SMALL as SMALL
from tests.models.helpers import fit_hum as fit
from tests.models.helpers import fit_killed_at
from tests.synth import make_experiment


@pytest.fixture(scope="module")
def data():
    return make_experiment(n=1500, K=2, R=2, effect=0.5)


@pytest.fixture(scope="module")
def fitted(data):
    return fit(data)


def test_another_seed_gives_another_model(data, fitted):
    other = fit(data, seed=1)
    assert not np.array_equal(other.predict_outcomes(data), fitted.predict_outcomes(data))


def test_artifact_files(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "encoder.json", "history.json", "manifest.json",
                     "schema.json", "weights.safetensors"]


def test_tampered_artifact_refused(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    w = tmp_path / "m" / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="'weights.safetensors' does not match its sha256"):
        load_estimator(tmp_path / "m")


def test_tampered_config_refused(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    c = tmp_path / "m" / "config.json"
    cfg = json.loads(c.read_text())
    cfg["model"]["kl_weight"] = 0.5
    c.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="'config.json' does not match"):
        load_estimator(tmp_path / "m")


def test_partial_artifact_refused(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    (tmp_path / "m" / "encoder.json").unlink()
    with pytest.raises(ArtifactError, match="'encoder.json' listed in the manifest is missing"):
        load_estimator(tmp_path / "m")


def test_missing_manifest_refused(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_estimator(tmp_path / "m")


def test_resume_equals_uninterrupted(tmp_path, data):
    full = HUMEstimator(data.schema, model=SMALL,
                        trainer={"batch_size": 256, "max_epochs": 4, "early_stopping_patience": 9})
    full.fit(data)
    # killed during epoch 3 of the same 4-epoch run (EMA's horizon is a share of it)
    part = HUMEstimator(data.schema, model=SMALL,
                        trainer={"batch_size": 256, "max_epochs": 4, "early_stopping_patience": 9})
    fit_killed_at(part, data, 3, tmp_path / "ck")
    resumed = HUMEstimator(data.schema, model=SMALL,
                           trainer={"batch_size": 256, "max_epochs": 4, "early_stopping_patience": 9})
    resumed.fit(data, checkpoint_dir=tmp_path / "ck", resume=True)
    assert [e["epoch"] for e in resumed.history_.epochs] == [1, 2, 3, 4]
    np.testing.assert_array_equal(resumed.predict_outcomes(data), full.predict_outcomes(data))


def test_early_stopping_restores_best(data):
    est = HUMEstimator(data.schema, model=SMALL,
                       trainer={"batch_size": 64, "max_epochs": 40, "lr": 3e-2,
                                "early_stopping_patience": 1})
    est.fit(data)
    h = est.history_
    assert h.stopped_early and len(h.epochs) < 40
    assert h.best_valid_loss == min(e["valid_loss"] for e in h.epochs)


def test_wrong_training_input(data):
    with pytest.raises(TypeError, match="expected ExperimentData"):
        HUMEstimator(data.schema).fit(data.features)


def test_ema_weights_resume_equals_uninterrupted(tmp_path, data):
    cfg = {"batch_size": 256, "early_stopping_patience": 9, "ema_decay": 0.9}
    full = HUMEstimator(data.schema, model=SMALL, trainer={**cfg, "max_epochs": 3}).fit(data)
    HUMEstimator(data.schema, model=SMALL, trainer={**cfg, "max_epochs": 2}).fit(
        data, checkpoint_dir=tmp_path / "ck")
    resumed = HUMEstimator(data.schema, model=SMALL, trainer={**cfg, "max_epochs": 3})
    resumed.fit(data, checkpoint_dir=tmp_path / "ck", resume=True)
    np.testing.assert_array_equal(resumed.predict_outcomes(data), full.predict_outcomes(data))
    no_ema = {k: v for k, v in cfg.items() if k != "ema_decay"}
    plain = HUMEstimator(data.schema, model=SMALL, trainer={**no_ema, "max_epochs": 3}).fit(data)
    assert not np.array_equal(full.predict_outcomes(data), plain.predict_outcomes(data))


def test_held_out_split_is_recorded_in_the_artifact(tmp_path):
    from hmum.workflows.train import held_out_indices, test_indices, train_hum

    d = make_experiment(n=300, K=2, R=1)
    est, _ = train_hum(d, trainer={"max_epochs": 1, "batch_size": 128, "seed": 4})
    assert est.split_ == {"rule": "stratified", "fractions": [0.8, 0.1, 0.1], "seed": 4}
    est.save(tmp_path / "m")
    back = load_estimator(tmp_path / "m")
    assert back.split_ == est.split_
    # evaluate --test-split uses the recorded seed, whatever --seed says
    np.testing.assert_array_equal(held_out_indices(back, d.arm, seed=0), test_indices(d.arm, 4))
    # ... and the fingerprint of the table it split (no user ids here: a hash of the rows)
    assert back.data_fingerprint_ == est.data_fingerprint_
    assert est.data_fingerprint_["rows"] == 300 and est.data_fingerprint_["key"] == "rows"


def _rewrite(artifact, name, payload):
    """Replace one JSON file of an artifact and its manifest sum (a consistent forgery)."""
    from hmum.models.artifacts import sha256_file

    (artifact / name).write_text(json.dumps(payload))
    m = json.loads((artifact / "manifest.json").read_text())
    m["files"][name] = sha256_file(artifact / name)
    (artifact / "manifest.json").write_text(json.dumps(m))


def test_held_out_rows_refuse_a_table_the_model_was_not_split_from(tmp_path):
    """Issue 13 #3: on a subset (or superset) of the training file the recorded rule
    picks training rows as "test" rows; held_out_rows refuses such a table."""
    from hmum.data.split import split_from_record
    from hmum.exceptions import DataError
    from hmum.workflows.train import held_out_rows, train_hum

    d = make_experiment(n=2000, K=2, R=1)
    est, _ = train_hum(d, trainer={"max_epochs": 1, "batch_size": 512, "seed": 3})
    est.save(tmp_path / "m")
    back = load_estimator(tmp_path / "m")
    np.testing.assert_array_equal(held_out_rows(back, d),
                                  split_from_record(est.split_, d.arm)[2])
    # the failure: the first 1,000 rows, split by the same rule, give mostly training rows
    sub = d.take(np.arange(1000))
    train_rows = set(split_from_record(est.split_, d.arm)[0].tolist())
    leaked = set(split_from_record(est.split_, sub.arm)[2].tolist()) & train_rows
    assert len(leaked) > 50
    with pytest.raises(DataError, match=r"held_out_rows: data is not the table the model was "
                                        r"split from \(1,000 rows, rows hash [0-9a-f]{12}; the "
                                        r"model's: 2,000 rows, rows hash [0-9a-f]{12}\)"):
        held_out_rows(back, sub)
    sup = d.take(np.r_[np.arange(2000), np.arange(100)])
    with pytest.raises(DataError, match=r"2,100 rows"):
        held_out_rows(back, sup)
    # same rows, one response changed: another table
    changed = d.take(np.arange(2000))
    changed.y = changed.y.copy()
    changed.y[5, 0] += 1.0
    with pytest.raises(DataError, match="is not the table the model was split from"):
        held_out_rows(back, changed)


def test_held_out_rows_refuse_models_without_a_record(tmp_path, fitted, data):
    from hmum.exceptions import DataError
    from hmum.workflows.train import held_out_rows

    with pytest.raises(DataError, match="the model records no held-out test rows"):
        held_out_rows(fitted, data)
    # an artifact written before fingerprints were kept: refused, not guessed
    fitted.split_ = {"rule": "stratified", "fractions": [0.8, 0.1, 0.1], "seed": 0}
    try:
        fitted.save(tmp_path / "old")
    finally:
        del fitted.split_
    with pytest.raises(DataError, match="records its split but no fingerprint"):
        held_out_rows(load_estimator(tmp_path / "old"), data)


def test_refit_forgets_the_old_split_record(data):
    from hmum.workflows.train import train_hum

    est, _ = train_hum(data, model=SMALL, trainer={"max_epochs": 1, "batch_size": 512})
    assert est.data_fingerprint_ is not None
    est.fit(data.take(np.arange(900)))
    assert not hasattr(est, "split_") and not hasattr(est, "data_fingerprint_")


def test_encoder_of_another_schema_refused_at_load(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    enc = json.loads((tmp_path / "m" / "encoder.json").read_text())
    enc["fields"] = enc["fields"][:1]  # an encoder fitted for a one-field schema
    _rewrite(tmp_path / "m", "encoder.json", enc)
    with pytest.raises(ArtifactError, match=r"m: encoder.json encodes 1 field\(s\) \['seg "
                                            r"\(categorical\)'\], schema.json has 2 feature\(s\) "
                                            r".*the encoder belongs to another schema"):
        load_estimator(tmp_path / "m")


def test_encoder_with_other_vocabulary_refused_at_load(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    enc = json.loads((tmp_path / "m" / "encoder.json").read_text())
    enc["vocab"]["seg"] = enc["vocab"]["seg"] + ["extra"]
    _rewrite(tmp_path / "m", "encoder.json", enc)
    with pytest.raises(ArtifactError, match=r"encoder.json gives field sizes .* config.json"):
        load_estimator(tmp_path / "m")


def test_artifact_schema_errors_are_one_line(tmp_path, fitted):
    fitted.save(tmp_path / "m")
    sch = json.loads((tmp_path / "m" / "schema.json").read_text())
    sch["responses"][0]["kind"] = "continous"
    _rewrite(tmp_path / "m", "schema.json", sch)
    with pytest.raises(ArtifactError, match=r"m: schema.json: responses\[0\].kind: expected "
                                            r"one of continuous, count, binary, got 'continous'$"):
        load_estimator(tmp_path / "m")


def test_save_never_replaces_a_folder_that_is_not_an_artifact(tmp_path, fitted):
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "thesis.tex").write_text("precious")
    with pytest.raises(ArtifactError, match="a folder that is not an hmum artifact"):
        fitted.save(keep)
    assert (keep / "thesis.tex").read_text() == "precious"
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArtifactError, match="expected a folder for the model artifact, got a file"):
        fitted.save(tmp_path / "f")
    fitted.save(tmp_path / "m")
    fitted.save(tmp_path / "m")  # an artifact is replaced
    assert (tmp_path / "m" / "manifest.json").is_file()


def test_weights_of_another_model_refused_at_load(tmp_path, fitted, data):
    from hmum.models.artifacts import sha256_file

    fitted.save(tmp_path / "m")
    fit(data, epochs=1, embed_dim=4).save(tmp_path / "other")
    w = tmp_path / "m" / "weights.safetensors"
    w.write_bytes((tmp_path / "other" / "weights.safetensors").read_bytes())
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    m["files"]["weights.safetensors"] = sha256_file(w)
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="weights.safetensors does not fit the model "
                                            "config.json describes: .*size mismatch"):
        load_estimator(tmp_path / "m")


def test_model_trainer_defaults_yield_to_an_explicit_ema_setting():
    from hmum.models.base import trainer_config

    defaults = {"ema_share": 0.1, "batch_size": 1024}
    assert trainer_config(None, defaults).ema_share == 0.1
    cfg = trainer_config({"ema_decay": 0.99}, defaults)  # no "at most one" conflict
    assert cfg.ema_decay == 0.99 and cfg.ema_share is None and cfg.batch_size == 1024
    off = trainer_config({"ema_share": None}, defaults)
    assert off.ema_horizon(10) is None
    assert trainer_config({"batch_size": 64}, defaults).batch_size == 64
