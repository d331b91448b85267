"""M³TN, EFIN, EUEN, FlexTENet, SNet: structure, penalties, recovery.

Shapes, ranges, artifacts, refusals and registration: the common check
(test_estimator_checks.py) and test_registry.py."""

import numpy as np
import pytest
import torch

from hmum.models.baseline import factual_loss
from hmum.models.multitask import (
    EFIN,
    EUEN,
    M3TN,
    EFINConfig,
    EFINEstimator,
    EUENConfig,
    EUENEstimator,
    FlexTENet,
    FlexTENetConfig,
    FlexTENetEstimator,
    M3TNConfig,
    M3TNEstimator,
    SNet,
    SNetConfig,
    SNetEstimator,
    ite_balance_penalty,
    orthogonality_penalty,
    subspace_orthogonality_penalty,
)
from tests.synth import make_experiment

torch.set_num_threads(1)

#: estimator, K used in the tests (multi-treatment models get 2, single-treatment ones 1)
MODELS = {
    "m3tn": (M3TNEstimator, 2),
    "efin": (EFINEstimator, 2),
    "euen": (EUENEstimator, 1),
    "flextenet": (FlexTENetEstimator, 1),
    "snet": (SNetEstimator, 1),
}
SMALL = {"hidden_sizes": [32, 16], "head_sizes": [8], "embed_dim": 8}


# ----------------------------------------------------------------- every model


@pytest.mark.parametrize("name", list(MODELS))
def test_recovers_strong_heterogeneous_effects(name):
    """effect 2.0 with opposite signs in the two segments: the predicted uplift of
    every (treatment, response) follows the true one."""
    cls, K = MODELS[name]
    data = make_experiment(n=1500, K=K, R=2, effect=2.0, seed=1)
    est = cls(data.schema, trainer={"max_epochs": 5, "batch_size": 128}).fit(data)
    tau_hat, tau = est.predict_uplift(data), data.tau
    for k in range(K):
        for r in range(2):
            assert np.corrcoef(tau_hat[:, k, r], tau[:, k, r])[0, 1] > 0.8, (k, r)


# ----------------------------------------------------------------- structure


def _net(cls, cfg_cls, K=2, R=2, links=None, **cfg):
    torch.manual_seed(0)
    links = links or ["softplus"] * R
    return cls([3, 5, 4], K, links, torch.full((R,), 4.0), torch.full((R,), 2.0),
               cfg_cls(**{**SMALL, **cfg}))


X = torch.tensor([[0, 1, 2], [1, 4, 0], [2, 0, 3], [0, 3, 1], [1, 2, 2]])


def test_m3tn_treated_outcome_is_control_plus_explicit_uplift():
    m = _net(M3TN, M3TNConfig, K=3, links=["identity", "identity"])
    z0, tau = m.raw(X)
    y = m(X)
    assert y.shape == (5, 4, 2)
    # identity link: y = mean + std * z, so y_k - y_0 = std * tau_k
    torch.testing.assert_close(y[:, 1:] - y[:, :1], 2.0 * tau)
    # silence the uplift towers (tasks R.. of the last tower layer): every arm equals control
    with torch.no_grad():
        last = m.mmoe.towers.layers[-1]
        last.weight[m.R:] = 0
        last.bias[m.R:] = 0
    y = m(X)
    torch.testing.assert_close(y[:, 1:], y[:, :1].expand(-1, 3, -1))


def test_m3tn_starts_at_the_training_mean():
    m = _net(M3TN, M3TNConfig, links=["identity", "identity"])
    with torch.no_grad():
        for layer in m.mmoe.towers.layers:
            layer.weight.zero_()
    torch.testing.assert_close(m(X), torch.full((5, 3, 2), 4.0))


def test_euen_control_rows_train_only_the_control_net():
    m = _net(EUEN, EUENConfig, K=1)
    y = torch.rand(5, 2) * 5
    factual_loss(m(X), torch.zeros(5, dtype=torch.long), y, m).sum().backward()
    for layer in m.nets.layers:
        assert layer.weight.grad[1:].abs().max() == 0  # uplift net untouched
        assert layer.weight.grad[0].abs().max() > 0
    m.zero_grad()
    factual_loss(m(X), torch.ones(5, dtype=torch.long), y, m).sum().backward()
    for layer in m.nets.layers:  # treated rows: y_1 = y_0 + u trains both nets
        assert layer.weight.grad[0].abs().max() > 0
        assert layer.weight.grad[1].abs().max() > 0


def test_euen_zero_uplift_net_means_no_effect():
    m = _net(EUEN, EUENConfig, K=1)
    with torch.no_grad():
        m.nets.layers[-1].weight[1:] = 0
        m.nets.layers[-1].bias[1:] = 0
    y = m(X)
    torch.testing.assert_close(y[:, 1], y[:, 0])


def test_efin_control_response_ignores_the_treatment_embeddings():
    m = _net(EFIN, EFINConfig, K=2)
    out = m(X)
    assert out.y_hat.shape == (5, 3, 2) and out.tau.shape == (5, 2, 2)
    assert out.attention.shape == (5, 2, 3)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(5, 2))
    out.y_hat[:, 0].sum().backward(retain_graph=True)
    assert m.treatment_embed.grad is None or m.treatment_embed.grad.abs().max() == 0
    out.y_hat[:, 2].sum().backward()  # treatment 2 uses its own embedding, not treatment 1's
    assert m.treatment_embed.grad[0].abs().max() == 0
    assert m.treatment_embed.grad[1].abs().max() > 0


def test_ite_balance_penalty_by_hand():
    # K=1, R=1: tau_1 over control rows (1, 3) has mean 2, over treated rows (2, 6) mean 4
    tau = torch.tensor([1.0, 3.0, 2.0, 6.0]).view(4, 1, 1)
    arm = torch.tensor([0, 0, 1, 1])
    assert float(ite_balance_penalty(tau, arm)) == pytest.approx(4.0)
    # same values in both groups: balanced
    tau = torch.tensor([1.0, 5.0, 5.0, 1.0]).view(4, 1, 1)
    assert float(ite_balance_penalty(tau, arm)) == 0.0
    # K=2, R=2; arm 1 rows: 0, 3; arm 2 rows: 1; control rows: 2, 4
    tau = torch.tensor([
        [[1.0, 0.0], [9.0, 9.0]],
        [[9.0, 9.0], [4.0, 1.0]],
        [[0.0, 1.0], [2.0, 0.0]],
        [[3.0, 2.0], [9.0, 9.0]],
        [[2.0, 1.0], [0.0, 2.0]],
    ])
    arm = torch.tensor([1, 2, 0, 1, 0])
    # tau_1: arm-1 mean (2, 1) vs control mean (1, 1) -> 1; tau_2: (4, 1) vs (1, 1) -> 9
    assert float(ite_balance_penalty(tau, arm)) == pytest.approx((1.0 + 9.0) / 2)
    # a treatment absent from the batch does not count
    arm = torch.tensor([1, 1, 0, 1, 0])
    tau[1, 0] = torch.tensor([5.0, 1.0])  # arm-1 mean of tau_1 is now (3, 1)
    assert float(ite_balance_penalty(tau, arm)) == pytest.approx(4.0)


def test_flextenet_orthogonality_penalty_by_hand():
    ws = torch.tensor([[1.0], [0.0]])  # (I=2, S=1)
    assert float(orthogonality_penalty([(ws, torch.tensor([[[0.0], [3.0]]]))])) == 0.0
    wp = torch.tensor([[[2.0], [1.0]], [[0.0], [5.0]], [[-1.0], [0.0]]])  # (A=3, I=2, P=1)
    assert float(orthogonality_penalty([(ws, wp)])) == pytest.approx(4.0 + 0.0 + 1.0)


def test_flextenet_penalty_matches_a_loop_over_layers_and_arms():
    m = _net(FlexTENet, FlexTENetConfig, K=1).requires_grad_(False)
    ref = 0.0
    for s, p in [*zip(m.shared, m.private, strict=True), (m.out_shared, m.out_private)]:
        ws = s.weight[0]
        for a in range(2):
            ref += float(((ws.T @ p.weight[a, : ws.shape[0]]) ** 2).sum())
    assert float(orthogonality_penalty(m.orthogonal_pairs())) == pytest.approx(ref, rel=1e-5)


def test_flextenet_arms_differ_only_through_private_subspaces():
    m = _net(FlexTENet, FlexTENetConfig, K=1)
    y = m(X)
    assert y.shape == (5, 2, 2)
    assert not torch.allclose(y[:, 0], y[:, 1])
    with torch.no_grad():
        m.out_private.weight.zero_()
        m.out_private.bias.zero_()
    y = m(X)
    torch.testing.assert_close(y[:, 1], y[:, 0])


def test_snet_subspaces_and_penalty():
    m = _net(SNet, SNetConfig, K=1).requires_grad_(False)
    out = m(X)
    assert out.y_hat.shape == (5, 2, 2) and out.propensity_logits.shape == (5, 2)
    # 5 subspaces (confounder, outcome, propensity, mu_0, mu_1): all 10 pairs but (mu_0, mu_1)
    pairs = m.orthogonal_pairs()
    assert len(pairs) == 9 and (3, 4) not in pairs
    w = m.first_layer_weights()
    ref = sum(float(((w[i].T @ w[j]) ** 2).sum()) for i, j in pairs)
    assert float(subspace_orthogonality_penalty(w, pairs)) == pytest.approx(ref, rel=1e-5)
    # by hand: (D=2, H=1) subspaces e1, e2, e1+e2 -> pairs (0,1): 0, (0,2): 1, (1,2): 1
    w = torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]], [[1.0], [1.0]]])
    assert float(subspace_orthogonality_penalty(w, [(0, 1)])) == 0.0
    assert float(subspace_orthogonality_penalty(w, [(0, 1), (0, 2), (1, 2)])) == 2.0


def test_snet_control_rows_do_not_reach_the_treated_subspace():
    m = _net(SNet, SNetConfig, K=1)
    y = torch.rand(5, 2) * 5
    factual_loss(m(X).y_hat, torch.zeros(5, dtype=torch.long), y, m).sum().backward()
    for layer in m.reps.layers:
        assert layer.weight.grad[4].abs().max() == 0  # mu_1's subspace
        assert layer.weight.grad[3].abs().max() > 0  # mu_0's subspace
        assert layer.weight.grad[2].abs().max() == 0  # propensity-only subspace
