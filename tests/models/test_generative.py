"""CEVAE, GANITE and DESCN: hand-computed losses, structure, recovery.

Shapes, ranges, determinism, artifacts and refusals: the common check
(test_estimator_checks.py)."""

import math

import numpy as np
import pytest
import torch

import hmum.models.generative as gen_models
from hmum.models.descn import DESCN, DESCNConfig, DESCNEstimator, descn_loss
from hmum.models.generative import (
    CEVAE,
    GANITE,
    CEVAEConfig,
    CEVAEEstimator,
    GANITEConfig,
    GANITEEstimator,
    cevae_loss,
    ganite_loss,
    gaussian_kl,
    mean_nll,
    response_nll,
    reverse_gradient,
)
from tests.synth import make_experiment

ESTIMATORS = [CEVAEEstimator, GANITEEstimator, DESCNEstimator]
SMALL = {"hidden_sizes": [16], "head_sizes": [8], "embed_dim": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_descn_network_refuses_two_treatments():
    with pytest.raises(ValueError, match="K=2"):
        DESCN([3], 2, ["identity"], torch.zeros(1), torch.ones(1), DESCNConfig())


# --- recovery of a known heterogeneous effect ---------------------------------------------
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_recovers_heterogeneous_effect(cls):
    d = make_experiment(n=1500, K=1, R=2, effect=2.0, seed=1)
    est = cls(d.schema, trainer={"max_epochs": 6, "batch_size": 128}).fit(d)
    y_hat = est.predict_outcomes(d)
    tau_hat = y_hat[:, 1] - y_hat[:, 0]
    for r in range(2):
        assert np.corrcoef(tau_hat[:, r], d.tau[:, 0, r])[0, 1] > 0.5


# --- likelihoods, hand-computed ---------------------------------------------------------------
def test_response_and_mean_nll_hand_computed():
    links = ["identity", "sigmoid"]
    mean, std = torch.tensor([1.0, 0.5]), torch.tensor([2.0, 0.5])
    binary = torch.tensor([False, True])
    raw = torch.tensor([[0.5, 0.0]])  # identity: 1 + 2 * 0.5 = 2; sigmoid(0) = 0.5
    y = torch.tensor([[4.0, 1.0]])
    expect = 0.5 * ((2 - 4) / 2) ** 2 + math.log(2)
    assert response_nll(raw, y, links, mean, std, binary).item() == pytest.approx(expect)
    means = torch.tensor([[2.0, 0.5]])
    assert mean_nll(means, y, std, binary).item() == pytest.approx(expect)


def test_gaussian_kl_hand_computed():
    assert gaussian_kl(torch.zeros(3), torch.zeros(3)).item() == 0.0
    # 0.5 * (e^1 + 2^2 - 1 - 1) for one coordinate
    val = gaussian_kl(torch.tensor([2.0]), torch.tensor([1.0])).item()
    assert val == pytest.approx(0.5 * (math.e + 4 - 2))


# --- CEVAE ------------------------------------------------------------------------------------
def _cevae(card=(3, 5)):
    torch.manual_seed(0)
    cfg = CEVAEConfig(**SMALL, latent_dim=3)
    return CEVAE(list(card), 1, ["softplus", "sigmoid"], torch.tensor([2.0, 0.4]),
                 torch.tensor([1.0, 0.5]), cfg)


def test_cevae_uniform_decoder_reconstructs_with_log_vocabulary():
    net = _cevae((3, 5))
    with torch.no_grad():  # zero queries and biases: every id equally likely
        net.p_x.net[-1].weight.zero_()
        net.p_x.net[-1].bias.zero_()
    x = torch.tensor([[0, 4], [2, 1]])
    arm, y = torch.tensor([0, 1]), torch.tensor([[1.5, 1.0], [2.5, 0.0]])
    out = net(x, arm, y, sample=False)
    _, logs = cevae_loss(out, x, arm, y, links=net.links, y_mean=net.y_mean,
                         y_std=net.y_std, binary=net.binary)
    assert logs["rec_x"] == pytest.approx(math.log(3) + math.log(5), rel=1e-6)


def test_cevae_prediction_encoder_matches_training_encoder():
    """With q(t|x) certain of arm 0, the inferred z is the mean of q(z|x, t=0, y_0),
    y_0 = mean of q(y|x, t=0): the prediction path agrees with the training path."""
    net = _cevae().eval()
    with torch.no_grad():
        net.q_t.net[-1].bias.copy_(torch.tensor([50.0, -50.0]))
    x = torch.tensor([[0, 4], [2, 1], [1, 3]])
    with torch.no_grad():
        y0 = net.link(net.aux_outcomes(net.flat(x)))[0]  # (N, R) under arm 0
        z_train = net(x, torch.zeros(3, dtype=torch.long), y0, sample=False)["z_mean"]
        torch.testing.assert_close(net.infer_z(x), z_train)
        y_hat = net.potential_outcomes(x)
        torch.testing.assert_close(y_hat, net.link(net.outcome_raw(z_train)).transpose(0, 1))


def test_cevae_per_arm_prediction_uses_each_arms_own_posterior():
    net = _cevae().eval()
    net.config.predict_z = "per_arm"
    x = torch.tensor([[0, 4], [2, 1], [1, 3]])
    with torch.no_grad():
        y_hat = net.potential_outcomes(x)
        y_aux = net.link(net.aux_outcomes(net.flat(x)))  # (A, N, R)
        for a in range(2):
            arm = torch.full((3,), a)
            z = net(x, arm, y_aux[a], sample=False)["z_mean"]
            torch.testing.assert_close(y_hat[:, a], net.link(net.outcome_raw(z))[a])


# --- GANITE ----------------------------------------------------------------------------------
def test_reverse_gradient_negates_and_scales():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    out = reverse_gradient(x, 3.0)
    assert torch.equal(out, x.detach())
    (out * torch.tensor([2.0, 5.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-6.0, -15.0]))


def test_ganite_generators_get_reversed_discriminator_gradient(monkeypatch):
    """alpha = beta = 0 leaves only the games: the discriminators descend their
    loss, the generators (and the shared embedding) get exactly its negated gradient."""
    torch.manual_seed(0)
    net = GANITE([3, 4], 1, ["softplus", "sigmoid"], torch.tensor([2.0, 0.4]),
                 torch.tensor([1.0, 0.5]), GANITEConfig(**SMALL, alpha=0.0, beta=0.0))
    x = torch.tensor([[0, 3], [2, 1], [1, 0], [2, 2]])
    arm = torch.tensor([0, 1, 1, 0])
    y = torch.tensor([[1.5, 1.0], [2.5, 0.0], [0.3, 1.0], [1.0, 0.0]])

    def grads():
        net.zero_grad()
        torch.manual_seed(1)  # same noise in both runs
        loss, _ = ganite_loss(net(x, arm, y), arm, y, links=net.links, y_mean=net.y_mean,
                              y_std=net.y_std, binary=net.binary, alpha=0.0, beta=0.0)
        loss.backward()
        return {k: p.grad.clone() for k, p in net.named_parameters()}

    reversed_ = grads()
    monkeypatch.setattr(gen_models, "reverse_gradient", lambda t, scale=1.0: t)
    plain = grads()
    players = ("g_body", "g_heads", "i_body", "i_heads", "embed")
    for k, g in reversed_.items():
        if k.startswith(players):
            torch.testing.assert_close(g, -plain[k])
        else:
            assert k.startswith(("d_g", "d_i"))
            torch.testing.assert_close(g, plain[k])
    assert reversed_["g_heads.layers.1.weight"].abs().sum() > 0  # the game does reach G


def test_ganite_prediction_is_ite_generator_at_zero_noise():
    torch.manual_seed(0)
    net = GANITE([3], 1, ["identity"], torch.zeros(1), torch.ones(1), GANITEConfig(**SMALL))
    x = torch.tensor([[0], [1], [2]])
    with torch.no_grad():
        e = net.flat(x)
        h = net.i_body(torch.cat([e, torch.zeros(3, net.noise_dim)], dim=-1))
        expect = torch.stack([net.i_heads(torch.stack([h, h]))[a] for a in range(2)], dim=1)
        torch.testing.assert_close(net.potential_outcomes(x), expect)


# --- DESCN -----------------------------------------------------------------------------------
def test_descn_loss_hand_computed_binary():
    """Two rows, one binary response: row 0 treated with y=1, row 1 control with y=0;
    pi = 0.5, mu0 = sigmoid(0) = 0.5, mu1 = sigmoid(log 4) = 0.8, tau' = log 4."""
    l4 = math.log(4.0)
    out = {
        "pi_logit": torch.zeros(2),
        "pi": torch.full((2,), 0.5),
        "raw": torch.tensor([[[0.0], [l4]], [[0.0], [l4]]]),
        "tau_raw": torch.full((2, 1), l4),
    }
    arm, y = torch.tensor([1, 0]), torch.tensor([[1.0], [0.0]])
    cfg = DESCNConfig()
    loss, logs = descn_loss(out, arm, y, links=["sigmoid"], y_mean=torch.tensor([0.5]),
                            y_std=torch.tensor([0.5]), binary=torch.tensor([True]), config=cfg)
    expect = {
        "propensity": math.log(2),
        "estr": -(math.log(0.4) + math.log(0.6)) / 2,  # pi * mu1 = 0.4 vs t*y = (1, 0)
        "escr": -math.log(0.75),  # (1 - pi) * mu0 = 0.25 vs (1-t)*y = (0, 0)
        "tr": -math.log(0.8),  # mu1 on the treated row
        "cr": math.log(2),  # mu0 on the control row
        "cross_tr": -math.log(0.8),  # sigmoid(0 + log 4) on the treated row
        "cross_cr": math.log(2),  # sigmoid(log 4 - log 4) on the control row
    }
    for k, v in expect.items():
        assert logs[k] == pytest.approx(v, rel=1e-5), k
    total = (0.5 * expect["propensity"] + 0.5 * expect["estr"] + 1.0 * expect["escr"]
             + 1.0 * expect["cross_tr"] + 0.5 * expect["cross_cr"])
    assert loss.item() == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("shift", [0.0, 5.0])
def test_descn_entire_space_loss_on_mean_scale_for_continuous(shift):
    """Identity link, mean m, std 2: raw 1 -> mu1 = m + 2; pi = 0.25; treated y = m + 3:
    ESTR = 0.5 * ((0.25 * 2 - 3) / 2)^2 whatever m (products centred at the mean)."""
    out = {
        "pi_logit": torch.tensor([math.log(1 / 3)]),
        "pi": torch.tensor([0.25]),
        "raw": torch.tensor([[[0.0], [1.0]]]),
        "tau_raw": torch.zeros(1, 1),
    }
    _, logs = descn_loss(out, torch.tensor([1]), torch.tensor([[3.0 + shift]]),
                         links=["identity"], y_mean=torch.tensor([shift]),
                         y_std=torch.tensor([2.0]), binary=torch.tensor([False]),
                         config=DESCNConfig())
    assert logs["estr"] == pytest.approx(0.5 * ((0.5 - 3) / 2) ** 2)
    assert logs["escr"] == pytest.approx(0.0)  # (1 - pi) * (mu0 - m) = 0 vs (1 - t) * y = 0
