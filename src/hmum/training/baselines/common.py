"""What every baseline estimator shares: build, the factual loss, outcomes, refusals."""

from __future__ import annotations

from typing import ClassVar

import torch

from hmum.models.baselines.common import BaselineConfig, BaselineNet, pick_arm
from hmum.models.links import deviance
from hmum.training.estimator import NeuralUpliftEstimator


def factual_loss(y_hat: torch.Tensor, arm: torch.Tensor, y: torch.Tensor,
                 module: BaselineNet) -> torch.Tensor:
    """The loss of each row's received arm, summed over R.

    The model's response losses (``module.losses``: the paper's standardized squared
    error, or a deviance; ``hmum.models.links``), as HUM's (eq. 5).

    y_hat (N, K+1, R), arm (N,) in [0, K], y (N, R) -> (N,).
    """
    return deviance(pick_arm(y_hat, arm), y, module.losses, module.y_mean, module.y_std,
                    module.config.tweedie_power).sum(-1)


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
        mse = factual_loss(module.potential_outcomes(x), arm, y, module).mean()
        return mse, {"mse": float(mse.detach())}
