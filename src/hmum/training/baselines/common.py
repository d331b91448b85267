"""What every baseline estimator shares: build, the factual loss, outcomes, refusals."""

from __future__ import annotations

from typing import ClassVar

import torch

from hmum.models.baselines.common import BaselineConfig, BaselineNet, pick_arm
from hmum.training.estimator import NeuralUpliftEstimator


def factual_mse(y_hat: torch.Tensor, arm: torch.Tensor, y: torch.Tensor,
                y_std: torch.Tensor) -> torch.Tensor:
    """Squared error of each row's received arm, standardized, summed over R.

    The same scale as HUM's loss (eq. 5): errors divided by the training std.

    y_hat (N, K+1, R), arm (N,) in [0, K], y (N, R), y_std (R,) -> (N,).
    """
    return (((pick_arm(y_hat, arm) - y) / y_std) ** 2).sum(-1)


class BaselineEstimator(NeuralUpliftEstimator):
    """Estimator for a ``BaselineNet``: subclasses set ``network_class``,
    ``config_class`` (a ``BaselineConfig``), ``model_type`` and ``_loss``.

    ``max_treatments = 1`` marks a model whose paper defines one treatment
    only; ``fit`` then refuses K > 1 with a clear error.
    """

    network_class: ClassVar[type[BaselineNet]] = BaselineNet
    config_class: ClassVar[type[BaselineConfig]] = BaselineConfig

    def _build(self, cardinalities, links, y_mean, y_std, cfg):
        return self.network_class(cardinalities, self.schema.K, links, y_mean, y_std, cfg)

    def _outcomes(self, module, x):
        return {"y_hat": module.potential_outcomes(x)}

    def _loss(self, module, batch):
        """Default: the factual loss on ``potential_outcomes`` (S/T-learner style)."""
        x, arm, y = batch
        mse = factual_mse(module.potential_outcomes(x), arm, y, module.y_std).mean()
        return mse, {"mse": float(mse.detach())}
