"""Estimators of the meta-learner networks: S-learner ("slearner"), T-learner ("tlearner").

Both train the factual loss of HUM's scale (squared error of the received arm,
divided by the training std, summed over responses); see the networks in
``hmum.models.baselines.meta`` for the papers.
"""

from __future__ import annotations

import torch

from hmum.models.baselines.common import BaselineConfig
from hmum.models.baselines.meta import SLearnerNet, TLearnerNet
from hmum.training.baselines.common import BaselineEstimator, factual_loss
from hmum.training.estimator import register


@register
class SLearnerEstimator(BaselineEstimator):
    """S-learner (Künzel et al., PNAS 2019): one network with the arm as an input.

    Training scores only each row's received arm (one pass, not K+1);
    prediction scores every arm.
    """

    model_type = "slearner"
    config_class = BaselineConfig
    network_class = SLearnerNet

    def _loss(self, module: SLearnerNet, batch):
        x, arm, y = batch
        pred = module(x, arm).unsqueeze(1)  # (N, 1, R): the received arm only
        mse = factual_loss(pred, torch.zeros_like(arm), y, module).mean()
        return mse, {"mse": float(mse.detach())}


@register
class TLearnerEstimator(BaselineEstimator):
    """T-learner (Künzel et al., PNAS 2019): one body per arm, shared field embeddings.

    The default factual loss trains each arm's body on its own rows only.
    """

    model_type = "tlearner"
    config_class = BaselineConfig
    network_class = TLearnerNet
