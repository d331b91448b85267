"""The value-weight model (eqs. 8-10): pooling, buckets, estimator, artifacts, ONNX parity."""

import numpy as np
import pyarrow as pa
import pytest
import torch

from hmum.data.simulator import SimulatorConfig, simulate_requests
from hmum.exceptions import ArtifactError, DataError, NotFittedError
from hmum.models.value_weight import (
    OnnxValueWeights,
    ValueWeightConfig,
    ValueWeightEstimator,
    ValueWeightGraph,
    ValueWeightModel,
    load_value_weight_model,
)

SMALL = {"embed_dim": 8, "n_experts": 2, "expert_sizes": [16, 8], "tower_sizes": [8]}
CFG = SimulatorConfig(n_users=1000, n_requests=2500, n_candidates=30, n_recent=8, n_exposed=5,
                      n_items=2000, seed=3)


@pytest.fixture(scope="module")
def requests():
    return simulate_requests(CFG)


def fit(table, seed=0, epochs=4, **trainer):
    return ValueWeightEstimator(model=SMALL, trainer={"max_epochs": epochs, "seed": seed,
                                                      "batch_size": 256, **trainer}).fit(table)


@pytest.fixture(scope="module")
def fitted(requests):
    return fit(requests.slice(0, 2000))


# --- the network ----------------------------------------------------------------------


def _reference_pool(model, cand, recent):
    """Eq. 8 the slow way: look up every item's embedding and average over L."""
    cards = model.card.tolist()
    x = torch.cat([cand, recent], dim=1)  # same L in this test
    rows = []
    for j in range(x.shape[1]):
        codes = x[:, j].clone()
        codes[(codes < 0) | (codes >= cards[j])] = cards[j]
        e = model.embed.table.weight[codes + model.embed.offsets[j]]  # (N, L, d)
        rows.append(e.mean(dim=1))
    return torch.cat(rows, dim=1)


def test_histogram_pooling_equals_average_of_embeddings():
    torch.manual_seed(0)
    m = ValueWeightModel([5, 3], [5, 3], 2, ValueWeightConfig(**SMALL))
    cand = torch.randint(-1, 7, (6, 2, 9))  # includes out-of-range codes
    recent = torch.randint(0, 5, (6, 2, 9))
    torch.testing.assert_close(m.pooled(cand, recent), _reference_pool(m, cand, recent))


def test_out_of_range_codes_share_one_bucket():
    torch.manual_seed(0)
    m = ValueWeightModel([4], [4], 2, ValueWeightConfig(**SMALL)).eval()
    cand = torch.tensor([[[0, 1, 9]]])
    recent = torch.tensor([[[2, 3, 3]]])
    a = m(cand, recent)
    torch.testing.assert_close(a, m(torch.tensor([[[0, 1, 4]]]), recent))
    torch.testing.assert_close(a, m(torch.tensor([[[0, 1, -3]]]), recent))


def test_forward_shapes_and_range():
    m = ValueWeightModel([5, 3], [5], 3, ValueWeightConfig(**SMALL))
    o = m(torch.randint(0, 5, (4, 2, 11)), torch.randint(0, 5, (4, 1, 6)))
    assert o.shape == (4, 3)
    assert ((o > 0) & (o < 1)).all()  # sigmoid link
    _, w = ValueWeightGraph(m)(torch.randint(0, 5, (4, 2, 11)), torch.randint(0, 5, (4, 1, 6)))
    torch.testing.assert_close(w.sum(1), torch.ones(4))


# --- the estimator --------------------------------------------------------------------


def test_predict_before_fit_raises(requests):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ValueWeightEstimator().predict_weights(requests)


def test_fit_infers_fields_and_responses(fitted):
    assert fitted.responses_ == ["usage_time", "video_views"]
    assert fitted.cand_fields_ == fitted.recent_fields_ == [
        "category", "duration_band", "commercial_flag", "popularity_bucket", "author_tier"]
    assert fitted.n_candidates_ == 30 and fitted.n_recent_ == 8
    assert fitted.cand_cardinalities_[2] == 2  # commercial_flag: codes 0, 1


def test_weights_sum_to_one_in_unit_interval(fitted, requests):
    w = fitted.predict_weights(requests.slice(2000))
    assert w.shape == (500, 2)
    assert (w >= 0).all() and (w <= 1).all()
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)


def test_learns_the_request_value_weights(requests):
    est = fit(requests.slice(0, 2000), epochs=8)
    test = requests.slice(2000)
    w = est.predict_weights(test)[:, 0]
    true_w = test.column("true_w_usage_time").to_numpy()
    assert np.corrcoef(w, true_w)[0, 1] > 0.5


def test_same_seed_same_model(fitted, requests):
    again = fit(requests.slice(0, 2000))
    test = requests.slice(2000)
    np.testing.assert_array_equal(again.predict_shares(test), fitted.predict_shares(test))


def test_save_load_round_trip(tmp_path, fitted, requests):
    fitted.save(tmp_path / "vw")
    loaded = load_value_weight_model(tmp_path / "vw")
    test = requests.slice(2000)
    np.testing.assert_array_equal(loaded.predict_weights(test), fitted.predict_weights(test))
    assert loaded.cand_cardinalities_ == fitted.cand_cardinalities_


def test_tampered_artifact_refused(tmp_path, fitted):
    p = fitted.save(tmp_path / "vw")
    (p / "config.json").write_text((p / "config.json").read_text().replace("sigmoid", "identity"))
    with pytest.raises(ArtifactError, match="sha256"):
        load_value_weight_model(p)


def test_wrong_artifact_kind_refused(tmp_path):
    from hmum.models.artifacts import write_artifact

    write_artifact(tmp_path / "x", json_files={"config": {"model_type": "hum"}},
                   tensors={"a": torch.zeros(1)})
    with pytest.raises(ArtifactError, match="not a value-weight model"):
        load_value_weight_model(tmp_path / "x")


def test_missing_column_is_named(fitted, requests):
    with pytest.raises(DataError, match="'recent_author_tier' is missing"):
        fitted.predict_weights(requests.drop_columns(["recent_author_tier"]))


def test_labels_outside_unit_interval_refused(requests):
    t = requests.slice(0, 50)
    t = t.set_column(t.column_names.index("o_usage_time"), "o_usage_time",
                     pa.array(np.full(50, 1.5)))
    with pytest.raises(DataError, match="'o_usage_time' must hold shares in"):
        ValueWeightEstimator(model=SMALL, trainer={"max_epochs": 1}).fit(t)


def test_non_integer_item_column_refused(requests):
    t = requests.slice(0, 50)
    with pytest.raises(DataError, match="'cand_score_usage_time' must be a list of integer"):
        ValueWeightEstimator(cand_fields=["score_usage_time"]).fit(t)


def test_ragged_lists_refused(fitted):
    t = pa.table({"cand_category": pa.array([[1, 2], [1]], pa.list_(pa.int32()))})
    with pytest.raises(DataError, match="same number of items"):
        fitted.encode(t)


def test_onnx_parity(tmp_path, fitted, requests):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = fitted.export_onnx(tmp_path / "vw.onnx")
    sess = OnnxValueWeights(path)
    assert sess.meta["responses"] == ["usage_time", "video_views"]
    cand, recent = fitted.encode(requests.slice(2000, 64))
    o_onnx, w_onnx = sess.run(cand, recent)
    np.testing.assert_allclose(o_onnx, fitted.predict_shares((cand, recent)), atol=1e-5)
    np.testing.assert_allclose(w_onnx, fitted.predict_weights((cand, recent)), atol=1e-5)
    # one request, and other list lengths (dynamic axes), out-of-range codes too
    c1, r1 = cand[:1, :, :11].copy(), recent[:1, :, :3].copy()
    c1[0, 0, 0] = 99
    np.testing.assert_allclose(sess.run(c1, r1)[1], fitted.predict_weights((c1, r1)), atol=1e-5)


@pytest.mark.parametrize("cfg", [
    SMALL,
    {"embed_dim": 4, "n_experts": 3, "expert_sizes": [8], "tower_sizes": []},
    {"embed_dim": 4, "n_experts": 2, "expert_sizes": [8, 6, 5], "tower_sizes": [4, 3],
     "link": "identity"},
])
def test_serving_graph_equals_training_layout(cfg):
    """ValueWeightGraph rearranges BlockMMoE for export: same function, same parameters."""
    torch.manual_seed(1)
    m = ValueWeightModel([20, 5, 2], [20, 5], 3, ValueWeightConfig(**cfg)).eval()
    cand, recent = torch.randint(0, 22, (7, 3, 30)), torch.randint(0, 6, (7, 2, 9))
    o_hat, w = ValueWeightGraph(m)(cand, recent)
    torch.testing.assert_close(o_hat, m(cand, recent), rtol=1e-5, atol=1e-6)
    assert w.shape == (7, 3)
