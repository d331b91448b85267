"""TARNet, CFRNet, DragonNet, BNN: penalties, losses, structure, recovery.

Shapes, ranges, artifacts and refusals: the common check (test_estimator_checks.py)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hmum.models.baseline import factual_loss
from hmum.models.representation import (
    BNN,
    ArmHeadsNet,
    BNNConfig,
    BNNEstimator,
    CFRNetConfig,
    CFRNetEstimator,
    DragonNetConfig,
    DragonNetEstimator,
    RepOutput,
    TARNetConfig,
    TARNetEstimator,
    cfr_loss,
    dragonnet_loss,
    ipm,
    linear_discrepancy,
    mmd2_linear,
    mmd2_rbf,
    nearest_in_other_arm,
    wasserstein_sinkhorn,
)
from tests.models.helpers import tau_correlations
from tests.synth import make_experiment

ONE_EPOCH = {"max_epochs": 1, "batch_size": 128}
ESTIMATORS = {
    "tarnet": TARNetEstimator,
    "cfrnet": CFRNetEstimator,
    "dragonnet": DragonNetEstimator,
    "bnn": BNNEstimator,
}


def _k(name):
    return 2 if name == "tarnet" else 1


# --- estimators ---------------------------------------------------------------


@pytest.mark.parametrize("model", [{"ipm": "wasserstein"}, {"ipm": "mmd"},
                                   {"ipm": "mmd", "mmd_kernel": "rbf"}])
def test_cfrnet_trains_with_every_ipm(model):
    d = make_experiment(300, K=1, R=2)
    est = CFRNetEstimator(d.schema, model=model, trainer=ONE_EPOCH).fit(d)
    rec = est.history_.epochs[-1]
    assert np.isfinite(est.predict_outcomes(d)).all()
    assert rec["valid_ipm"] > 0
    assert rec["valid_loss"] == pytest.approx(rec["valid_mse"] + rec["valid_ipm"], rel=1e-4)


def test_dragonnet_propensity_matches_the_randomized_share():
    d = make_experiment(600, K=1, R=1)
    est = DragonNetEstimator(d.schema, trainer={"max_epochs": 5, "batch_size": 64}).fit(d)
    g = est.predict_all(d)["propensity"]
    assert g.shape == (600,)
    assert abs(g.mean() - (d.arm > 0).mean()) < 0.1


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_recovers_strong_heterogeneous_effects(name):
    d = make_experiment(1500, K=_k(name), R=2, effect=2.0, seed=1)
    est = ESTIMATORS[name](d.schema, trainer={"max_epochs": 3, "batch_size": 128}).fit(d)
    assert (tau_correlations(est, d) > 0.8).all()


# --- networks -----------------------------------------------------------------


def _net(cls, cfg, K=2, R=2):  # noqa: N803
    torch.manual_seed(0)
    return cls([3, 5], K, ["identity"] * R, torch.zeros(R), torch.ones(R), cfg)


def test_tarnet_rows_of_one_arm_train_only_that_arms_head():
    net = _net(ArmHeadsNet, TARNetConfig(embed_dim=4, hidden_sizes=[8], head_sizes=[6]))
    x = torch.tensor([[0, 1], [2, 4], [1, 3]])
    out = net(x)
    assert out.phi.shape == (3, 8) and out.y_hat.shape == (3, 3, 2)
    factual_loss(out.y_hat, torch.full((3,), 2), torch.randn(3, 2), net).sum().backward()
    for layer in net.heads.layers:
        assert layer.weight.grad[2].abs().sum() > 0
        assert layer.weight.grad[:2].abs().sum() == 0
    assert net.phi.mlp.net[0].weight.grad.abs().sum() > 0  # the shared representation learns


def test_normalized_representation_has_unit_rows():
    net = _net(ArmHeadsNet, CFRNetConfig(embed_dim=4, hidden_sizes=[8]), K=1)
    phi = net(torch.tensor([[0, 1], [2, 4], [1, 3]])).phi
    torch.testing.assert_close(phi.norm(dim=1), torch.ones(3))


def test_bnn_feeds_the_indicator_to_one_outcome_network():
    net = _net(BNN, BNNConfig(embed_dim=4, hidden_sizes=[8], head_sizes=[6]), K=1)
    x = torch.tensor([[0, 1], [2, 4]])
    out = net(x)
    # y_hat[:, t] = h([phi ; t]) with the one network h
    m = net.outcome
    for t in (0, 1):
        code = torch.full((2, 1), float(t))
        torch.testing.assert_close(out.y_hat[:, t], m(out.phi, code))
    assert not torch.allclose(out.y_hat[:, 0], out.y_hat[:, 1])


# --- balancing penalties (hand-computed) ------------------------------------------


def test_mmd2_linear_hand_computed():
    a = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # mean (1, 0)
    b = torch.tensor([[0.0, 1.0], [0.0, 3.0]])  # mean (0, 2)
    assert float(mmd2_linear(a, b)) == pytest.approx(5.0)
    assert float(mmd2_linear(a, a.flip(0))) == 0.0


def test_mmd2_rbf_hand_computed():
    a, b = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # k(a,a) + k(b,b) - 2 k(a,b) = 2 - 2 exp(-1/2)
    assert float(mmd2_rbf(a, b, sigma=1.0)) == pytest.approx(2 - 2 * math.exp(-0.5), rel=1e-6)
    s = torch.randn(20, 3)
    assert float(mmd2_rbf(s, s[torch.randperm(20)])) == pytest.approx(0.0, abs=1e-6)
    assert float(mmd2_rbf(s, s + 1.0)) > 0.1


def test_sinkhorn_approaches_the_exact_one_dimensional_distance():
    a = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    b = torch.tensor([[10.0], [0.5], [2.5], [1.5]])
    # in 1-D with equal sizes, W1 = mean |sorted(a) - sorted(b)| = (0.5*3 + 7) / 4
    w = wasserstein_sinkhorn(a, b, lam=300.0, iterations=2000)
    assert float(w) == pytest.approx(2.125, abs=0.02)


def test_sinkhorn_is_near_zero_for_identical_samples_and_grows_with_a_shift():
    torch.manual_seed(0)
    s = torch.randn(30, 4)
    same = float(wasserstein_sinkhorn(s, s.clone(), lam=100.0, iterations=500))
    shifted = s + torch.tensor([2.0, 0.0, 0.0, 0.0])
    far = float(wasserstein_sinkhorn(s, shifted, lam=100.0, iterations=500))
    assert same < 0.05
    assert far == pytest.approx(2.0, abs=0.1)  # a pure translation moves every point by 2


def test_sinkhorn_gradient_pulls_the_samples_together():
    a = torch.tensor([[0.0], [1.0]], requires_grad=True)
    b = torch.tensor([[3.0], [4.0]])
    wasserstein_sinkhorn(a, b).backward()
    assert (a.grad < 0).all()  # moving a toward b lowers the distance


def test_linear_discrepancy_hand_computed():
    phi = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    treated = torch.tensor([True, False, False, False])
    # p = 1/4, v = p * (1, 0) - (3/4) * (0, 0): |p - 1/2| + sqrt((p - 1/2)^2 + 1/16)
    want = 0.25 + math.sqrt(0.0625 + 0.0625)
    assert float(linear_discrepancy(phi, treated)) == pytest.approx(want, rel=1e-6)


def test_linear_discrepancy_is_zero_for_balanced_groups_with_a_finite_gradient():
    phi = torch.tensor([[1.0, 2.0], [3.0, 0.0], [3.0, 0.0], [1.0, 2.0]], requires_grad=True)
    treated = torch.tensor([True, True, False, False])
    disc = linear_discrepancy(phi, treated)
    assert float(disc.detach()) == pytest.approx(0.0, abs=1e-4)
    disc.backward()
    assert torch.isfinite(phi.grad).all()


@pytest.mark.parametrize("cfg", [CFRNetConfig(ipm="mmd"), CFRNetConfig(ipm="wasserstein"),
                                 CFRNetConfig(ipm="mmd", mmd_kernel="rbf")])
def test_ipm_is_zero_without_two_groups_and_positive_between_different_groups(cfg):
    torch.manual_seed(0)
    phi = torch.randn(10, 3)
    assert float(ipm(phi, torch.ones(10, dtype=torch.bool), cfg)) == 0.0
    treated = torch.arange(10) < 5
    assert float(ipm(phi + 3.0 * treated.unsqueeze(1), treated, cfg)) > 0.1


def test_nearest_in_other_arm_hand_made():
    z = torch.tensor([[0.0], [10.0], [0.4], [9.0], [5.2]])
    treated = torch.tensor([True, True, False, False, False])
    # treated 0 -> control 2 (0.4); treated 1 -> control 3 (9.0);
    # controls 2, 4 -> treated 0, 1 (5.2 is closer to 10 than 0); control 3 -> treated 1
    assert nearest_in_other_arm(z, treated).tolist() == [2, 3, 0, 1, 1]
    assert nearest_in_other_arm(z, torch.zeros(5, dtype=torch.bool)) is None


# --- losses (hand-computed) -------------------------------------------------------


def _unit_scale():
    """What the losses read of a network: R = 1, mean 0, std 1, the paper's MSE."""
    return SimpleNamespace(y_mean=torch.zeros(1), y_std=torch.ones(1), losses=["mse"],
                           config=SimpleNamespace(tweedie_power=1.5))


def test_cfr_loss_reweights_the_groups_to_equal_mass():
    y_hat = torch.tensor([[[0.0], [1.0]]] * 4)  # (4, 2, 1): 0 under control, 1 treated
    arm = torch.tensor([1, 0, 0, 0])
    y = torch.tensor([[3.0], [1.0], [1.0], [2.0]])
    out = RepOutput(torch.zeros(4, 1), torch.zeros(4, 1), y_hat)
    # squared errors 4 | 1, 1, 4; u = 1/4: weights 2 | 2/3
    loss, logs = cfr_loss(out, arm, y, _unit_scale(), CFRNetConfig(alpha=0.0))
    assert float(loss) == pytest.approx((2 * 4 + 2 / 3 * 6) / 4)
    loss, _ = cfr_loss(out, arm, y, _unit_scale(), CFRNetConfig(alpha=0.0, reweight=False))
    assert float(loss) == pytest.approx(10 / 4)


def test_dragonnet_loss_hand_computed():
    y_hat = torch.tensor([[[1.0], [2.0]], [[0.0], [3.0]]])
    arm = torch.tensor([1, 0])
    y = torch.tensor([[2.5], [1.0]])
    logit = torch.tensor([0.0, math.log(3.0)])  # g = 1/2, 3/4
    out = RepOutput(torch.zeros(2, 1), torch.zeros(2, 1), y_hat, logit)
    eps = torch.tensor([0.1])
    loss, logs = dragonnet_loss(out, arm, y, _unit_scale(), eps, DragonNetConfig())
    # residuals 0.5, 1; h = 1/(1/2) = 2, -1/(1 - 3/4) = -4
    mse = (0.25 + 1.0) / 2
    ce = (math.log(2.0) + math.log(4.0)) / 2
    tmle = ((0.5 - 0.2) ** 2 + (1.0 + 0.4) ** 2) / 2
    assert logs["mse"] == pytest.approx(mse)
    assert logs["ce"] == pytest.approx(ce, rel=1e-6)
    assert logs["tmle"] == pytest.approx(tmle, rel=1e-6)
    assert float(loss) == pytest.approx(mse + ce + tmle, rel=1e-6)
