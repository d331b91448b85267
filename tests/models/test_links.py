"""Links and response losses (hmum.nn.links): hand-computed values and choices."""

import math

import pytest
import torch

from hmum.data.schema import ResponseSpec
from hmum.nn.links import LossConfig, apply_link, deviance, link_bias, resolve_heads

MEAN, STD = torch.tensor([4.0]), torch.tensor([2.0])


@pytest.mark.parametrize(("loss", "mu", "y", "expect"), [
    ("mse", 3.0, 5.0, (5 - 3) ** 2 / 2.0**2),
    ("gamma", 2.0, 3.0, 2 * (1.5 - math.log(1.5) - 1)),
    ("poisson", 2.0, 3.0, 2 * (3 * math.log(3 / 2) - (3 - 2)) / 4.0),
    ("poisson", 2.0, 0.0, 2 * (0 - (0 - 2)) / 4.0),  # y log y -> 0 at y = 0
    ("tweedie", 2.0, 3.0, 2 * (3**0.5 / (-0.5 * 0.5) - 3 * 2**-0.5 / -0.5 + 2**0.5 / 0.5)
     / 4.0**0.5),
    ("bce", 0.8, 1.0, -2 * math.log(0.8)),
    ("bce", 0.8, 0.0, -2 * math.log(0.2)),
])
def test_each_loss_against_a_hand_computed_value(loss, mu, y, expect):
    got = deviance(torch.tensor([[mu]]), torch.tensor([[y]]), [loss], MEAN, STD, 1.5)
    assert float(got) == pytest.approx(expect, rel=1e-5)


@pytest.mark.parametrize("loss", ["mse", "gamma", "poisson", "tweedie"])
def test_every_deviance_is_zero_at_the_observation_and_minimised_by_the_mean(loss):
    y = torch.tensor([[1.0], [2.0], [6.0]])
    assert deviance(y, y, [loss], MEAN, STD).abs().max() < 1e-5
    grid = torch.linspace(1.5, 4.5, 301).view(-1, 1, 1)  # candidate constant predictions
    total = deviance(grid, y.unsqueeze(0), [loss], MEAN, STD).sum((1, 2))
    best = float(grid.flatten()[total.argmin()])
    assert best == pytest.approx(3.0, abs=0.011)  # the mean of 1, 2, 6


def test_exp_link_starts_at_the_mean_and_stays_positive():
    z = torch.tensor([[0.0], [-1e4], [1e4]])
    out = apply_link(z, ["exp"], MEAN, STD)
    assert float(out[0]) == pytest.approx(4.0)
    assert (out > 0).all() and torch.isfinite(out).all()
    assert float(link_bias(["exp"], MEAN, STD)) == 0.0


def test_deviance_chooses_a_loss_per_response_kind():
    rs = [ResponseSpec(name="t", kind="continuous"), ResponseSpec(name="v", kind="count"),
          ResponseSpec(name="c", kind="binary"),
          ResponseSpec(name="p", kind="continuous", nonnegative=False)]
    links, losses = resolve_heads(rs, LossConfig(loss="deviance"))
    assert losses == ["gamma", "poisson", "bce", "mse"]
    assert links == ["exp", "exp", "sigmoid", "identity"]
    _, losses = resolve_heads(rs, LossConfig(loss="deviance"), positive=[False, True, True, True])
    assert losses[0] == "tweedie"  # zeros in the data: the gamma deviance is undefined
    links, losses = resolve_heads(rs, LossConfig())
    assert losses == ["mse"] * 4 and links == ["softplus", "softplus", "sigmoid", "identity"]


def test_a_loss_that_does_not_fit_its_response_is_refused():
    rs = [ResponseSpec(name="clicked", kind="binary")]
    with pytest.raises(ValueError, match="loss 'gamma' for response 'clicked' needs"):
        resolve_heads(rs, LossConfig(loss=["gamma"]))


def test_unknown_loss_names_are_refused():
    with pytest.raises(ValueError, match="expected one of"):
        LossConfig(loss="huber")
