"""Estimator and loss of DESCN (Zhong et al., KDD 2022); one treatment only.

Shapes: N rows, R responses; arm (N,) in {0, 1}.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

from hmum.models.baselines.descn import DESCN, DESCNConfig
from hmum.models.links import apply_link
from hmum.training.baselines.common import BaselineEstimator
from hmum.training.baselines.generative import mean_nll, response_nll
from hmum.training.estimator import register


def _masked_mean(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of v (N,) over the rows where mask (N,) is 1 (0 when there are none)."""
    return (v * mask).sum() / mask.sum().clamp(min=1.0)


def descn_loss(
    out: dict,
    arm: torch.Tensor,
    y: torch.Tensor,
    *,
    links: Sequence[str],
    y_mean: torch.Tensor,
    y_std: torch.Tensor,
    losses: Sequence[str] | None = None,
    tweedie_power: float = 1.5,
    binary: torch.Tensor,
    config: DESCNConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DESCN's multi-task loss: a weighted sum of

    * propensity: BCE(pi, t), every row;
    * ESTR: pi * mu1 against t * y, and ESCR: (1 - pi) * mu0 against (1 - t) * y,
      every row (entire space), on the mean scale; non-binary responses centred at
      their training mean m (pi * (mu1 - m) against t * (y - m));
    * TR: mu1 against y on treated rows; CR: mu0 against y on control rows;
    * cross TR: link(raw0 + tau') against y on treated rows; cross CR:
      link(raw1 - tau') against y on control rows.

    Response terms use ``mean_nll`` / ``response_nll`` (Bernoulli for binary
    responses as in the paper, standardized Gaussian otherwise), summed over R.

    out: ``DESCN.forward``'s dict; arm (N,) in {0, 1}; y (N, R). Returns (scalar, logs).
    """
    t = arm.to(y.dtype)
    pi, raw, tau = out["pi"].unsqueeze(-1), out["raw"], out["tau_raw"]
    raw0, raw1 = raw[:, 0], raw[:, 1]
    mu = apply_link(raw, links, y_mean, y_std)
    mu0, mu1 = mu[:, 0], mu[:, 1]
    tt = t.unsqueeze(-1)
    # Non-binary responses: centre at the training mean (E[t (y - m) | x] = pi (mu1 - m)
    # for any constant m), so the entire-space targets do not depend on the units' origin
    # and the noise that t adds to t * y does not grow with the response level.
    m = torch.where(binary, torch.zeros_like(y_mean), y_mean)

    def nll(r, mask):
        return _masked_mean(response_nll(r, y, links, y_mean, y_std, binary, losses, tweedie_power),
                            mask)

    terms = {
        "propensity": F.binary_cross_entropy_with_logits(out["pi_logit"], t),
        "estr": mean_nll(pi * (mu1 - m), tt * (y - m), y_std, binary).mean(),
        "escr": mean_nll((1 - pi) * (mu0 - m), (1 - tt) * (y - m), y_std, binary).mean(),
        "tr": nll(raw1, t),
        "cr": nll(raw0, 1 - t),
        "cross_tr": nll(raw0 + tau, t),
        "cross_cr": nll(raw1 - tau, 1 - t),
    }
    c = config
    weights = {
        "propensity": c.propensity_weight, "estr": c.estr_weight, "escr": c.escr_weight,
        "tr": c.tr_weight, "cr": c.cr_weight, "cross_tr": c.cross_tr_weight,
        "cross_cr": c.cross_cr_weight,
    }
    loss = sum(weights[k] * v for k, v in terms.items())
    return loss, {k: float(v.detach()) for k, v in terms.items()}


@register
class DESCNEstimator(BaselineEstimator):
    """DESCN (Zhong et al., KDD 2022) as an estimator; see
    ``hmum.models.baselines.descn.DESCN``. One treatment only: ``fit`` refuses K > 1.

    Predictions: y_hat[:, 0] = mu0(x), y_hat[:, 1] = mu1(x) (the TR/CR heads).
    """

    model_type = "descn"
    config_class = DESCNConfig
    network_class = DESCN
    max_treatments = 1

    def _loss(self, module: DESCN, batch):
        x, arm, y = batch
        return descn_loss(
            module(x), arm, y, links=module.links, y_mean=module.y_mean, y_std=module.y_std,
            losses=module.losses, tweedie_power=module.config.tweedie_power,
            binary=module.binary, config=module.config,
        )
