"""S-learner and T-learner: gradient masking, arm conditioning, recovery.

Shapes, ranges, artifacts and refusals: the common check (test_estimator_checks.py)."""

import pytest
import torch

from hmum.models.baseline import BaselineConfig, factual_loss
from hmum.models.meta import (
    ConditionedMLP,
    SLearnerEstimator,
    SLearnerNet,
    TLearnerEstimator,
    TLearnerNet,
)
from tests.models.helpers import tau_correlations
from tests.synth import make_experiment

ESTIMATORS = {"slearner": SLearnerEstimator, "tlearner": TLearnerEstimator}


def _net(cls, K=2, R=2):  # noqa: N803
    torch.manual_seed(0)
    cfg = BaselineConfig(embed_dim=4, hidden_sizes=[8], head_sizes=[6])
    return cls([3, 5], K, ["identity"] * R, torch.zeros(R), torch.ones(R), cfg)


def test_tlearner_rows_of_one_arm_train_only_that_arms_body():
    net = _net(TLearnerNet)
    x = torch.tensor([[0, 1], [2, 4], [1, 3]])
    arm = torch.full((3,), 1)
    y = torch.randn(3, 2)
    factual_loss(net(x), arm, y, net).sum().backward()
    for layer in net.bodies.layers:
        g = layer.weight.grad
        assert g[1].abs().sum() > 0
        assert g[0].abs().sum() == 0 and g[2].abs().sum() == 0
    assert net.embed.table.weight.grad.abs().sum() > 0  # shared embeddings learn from all arms


def test_tlearner_arms_are_independent_networks():
    """Changing arm 2's body leaves arms 0 and 1 untouched."""
    net = _net(TLearnerNet)
    x = torch.tensor([[0, 1], [2, 4]])
    before = net.potential_outcomes(x).detach()
    with torch.no_grad():
        net.bodies.layers[0].weight[2] += 1.0
    after = net.potential_outcomes(x).detach()
    torch.testing.assert_close(after[:, :2], before[:, :2])
    assert not torch.allclose(after[:, 2], before[:, 2])


def test_conditioned_mlp_equals_an_mlp_on_the_concatenation():
    torch.manual_seed(0)
    m = ConditionedMLP(5, 3, [4, 2])
    h, c = torch.randn(7, 5), torch.randn(7, 3)
    w = torch.cat([m.h_in.weight, m.c_in.weight], dim=1)  # (4, 5+3)
    ref = m.rest(torch.relu(torch.cat([h, c], 1) @ w.T + m.h_in.bias))
    torch.testing.assert_close(m(h, c), ref)


def test_slearner_scores_every_arm_as_forward_does_for_that_arm():
    net = _net(SLearnerNet)
    x = torch.tensor([[0, 1], [2, 4], [1, 0]])
    y_hat = net.potential_outcomes(x)
    assert y_hat.shape == (3, 3, 2)
    for k in range(3):
        torch.testing.assert_close(y_hat[:, k], net(x, torch.full((3,), k)))
    assert not torch.allclose(y_hat[:, 0], y_hat[:, 1])  # the arm embedding matters


def test_slearner_starts_at_the_training_mean():
    cfg = BaselineConfig(embed_dim=4, hidden_sizes=[8], head_sizes=[6])
    net = SLearnerNet([3, 5], 2, ["softplus", "identity"], torch.tensor([2.0, 5.0]),
                      torch.tensor([1.0, 2.0]), cfg)
    with torch.no_grad():
        net.mlp.last.weight.zero_()
    y_hat = net.potential_outcomes(torch.tensor([[0, 1], [2, 4]]))
    torch.testing.assert_close(y_hat, torch.tensor([2.0, 5.0]).expand(2, 3, 2))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_recovers_strong_heterogeneous_effects(name):
    d = make_experiment(1500, K=2, R=2, effect=2.0, seed=1)
    est = ESTIMATORS[name](d.schema, trainer={"max_epochs": 3, "batch_size": 128}).fit(d)
    assert (tau_correlations(est, d) > 0.8).all()
