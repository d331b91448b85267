import json

import numpy as np
import pytest

from hmum.training.artifacts import ArtifactError
from hmum.training.estimator import HUMEstimator, NotFittedError, load_estimator
from tests.synth import make_experiment

SMALL = {"expert_sizes": [16, 8], "tower_sizes": [8], "embed_dim": 8}


def fit(d, seed=0, epochs=3, **model):
    est = HUMEstimator(d.schema, model={**SMALL, **model},
                       trainer={"batch_size": 128, "max_epochs": epochs, "seed": seed})
    return est.fit(d)


@pytest.fixture(scope="module")
def data():
    return make_experiment(n=1500, K=2, R=2, effect=0.5)


@pytest.fixture(scope="module")
def fitted(data):
    return fit(data)


def test_predict_before_fit(data):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        HUMEstimator(data.schema).predict_outcomes(data)


def test_output_shapes(fitted, data):
    out = fitted.predict_all(data)
    assert out["y_hat"].shape == (1500, 3, 2)
    assert out["y0_branch"].shape == (1500, 2, 2)
    np.testing.assert_allclose(out["y_hat"][:, 0], out["y0_branch"].mean(1), rtol=1e-6)
    tau = fitted.predict_uplift(data)
    np.testing.assert_allclose(tau, out["y_hat"][:, 1:] - out["y_hat"][:, :1], rtol=1e-6)


def test_same_seed_same_predictions(data, fitted):
    again = fit(data)
    np.testing.assert_array_equal(again.predict_outcomes(data), fitted.predict_outcomes(data))
    other = fit(data, seed=1)
    assert not np.array_equal(other.predict_outcomes(data), fitted.predict_outcomes(data))


def test_save_load_round_trip(tmp_path, fitted, data):
    fitted.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "encoder.json", "history.json", "manifest.json",
                     "schema.json", "weights.safetensors"]
    loaded = load_estimator(tmp_path / "m")
    assert isinstance(loaded, HUMEstimator)
    np.testing.assert_array_equal(loaded.predict_outcomes(data), fitted.predict_outcomes(data))


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
    part = HUMEstimator(data.schema, model=SMALL,
                        trainer={"batch_size": 256, "max_epochs": 2, "early_stopping_patience": 9})
    part.fit(data, checkpoint_dir=tmp_path / "ck")
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


def test_hum_learns_heterogeneous_effect():
    """Strong known effect: HUM's PEHE is far below the zero-uplift predictor's."""
    d = make_experiment(n=6000, K=2, R=2, effect=0.5, seed=3)
    est = HUMEstimator(d.schema, model=SMALL, trainer={"batch_size": 256, "max_epochs": 10})
    est.fit(d)
    tau_true = d.mu[:, 1:] - d.mu[:, :1]
    pehe = np.sqrt(((est.predict_uplift(d) - tau_true) ** 2).mean(0))
    pehe_zero = np.sqrt((tau_true ** 2).mean(0))
    assert (pehe < 0.5 * pehe_zero).all(), (pehe, pehe_zero)
    # on fresh rows, the Qini of HUM's ranking is clearly positive in every (k, r) cell
    # and close to the Qini of the true uplift used as the score
    from hmum.metrics import ground_truth_table
    test = make_experiment(n=3000, K=2, R=2, effect=0.5, seed=4)
    tab = ground_truth_table(test.y, test.mu[:, 1:] - test.mu[:, :1],
                             est.predict_uplift(test), test.arm, kind="continuous")
    assert (tab["qini"] > 0.1).all(), tab
    assert (tab["qini"] > 0.7 * tab["oracle_qini"]).all(), tab


def test_single_treatment_and_three_responses():
    d = make_experiment(n=900, K=1, R=3, kinds=["continuous", "count", "continuous"])
    est = fit(d, epochs=2)
    assert est.predict_outcomes(d).shape == (900, 2, 3)
    assert est.module_.B == 3


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
    from hmum.pipeline import held_out_indices, test_indices, train_hum

    d = make_experiment(n=300, K=2, R=1)
    est, _ = train_hum(d, trainer={"max_epochs": 1, "batch_size": 128, "seed": 4})
    assert est.split_ == {"rule": "stratified", "fractions": [0.8, 0.1, 0.1], "seed": 4}
    est.save(tmp_path / "m")
    back = load_estimator(tmp_path / "m")
    assert back.split_ == est.split_
    # evaluate --test-split uses the recorded seed, whatever --seed says
    np.testing.assert_array_equal(held_out_indices(back, d.arm, seed=0), test_indices(d.arm, 4))
