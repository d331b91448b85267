"""DESCN (forward only): Deep Entire Space Cross Networks.

Shapes: N rows, F fields, d embedding size, R responses; one treatment (K = 1).

Estimator and loss of DESCN (Zhong et al., KDD 2022); one treatment only.

Shapes: N rows, R responses; arm (N,) in {0, 1}.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field

from hmum.models.baseline import BaselineConfig, BaselineEstimator, BaselineNet
from hmum.models.generative import binary_mask, mean_nll, response_nll
from hmum.nn.layers import MLP, BlockMLP
from hmum.nn.links import apply_link


class DESCNConfig(BaselineConfig):
    """DESCN loss weights. Defaults: the authors' released configuration for the
    paper's production (Lazada) data set: propensity 0.5, ESTR 0.5, ESCR 1, cross
    TR 1, cross CR 0.5, and no direct TR / CR losses (weight 0)."""

    propensity_weight: float = Field(0.5, ge=0.0, description="BCE of pi(x) against t")
    estr_weight: float = Field(0.5, ge=0.0, description="ESTR = pi * mu1 against t * y")
    escr_weight: float = Field(1.0, ge=0.0, description="ESCR = (1 - pi) * mu0 against (1-t) * y")
    tr_weight: float = Field(0.0, ge=0.0, description="mu1 against y on treated rows")
    cr_weight: float = Field(0.0, ge=0.0, description="mu0 against y on control rows")
    cross_tr_weight: float = Field(1.0, ge=0.0, description="mu0 (+) tau' against y, treated rows")
    cross_cr_weight: float = Field(0.5, ge=0.0, description="mu1 (-) tau' against y, control rows")
    propensity_clip: float = Field(
        1e-3, gt=0.0, lt=0.5, description="pi is clipped to [c, 1 - c] (as the authors' code)"
    )


class DESCN(BaselineNet):
    """Deep Entire Space Cross Networks.

    Zhong, Xiao, Ren, Liang, Yao, Yang, Cen, "DESCN: Deep Entire Space Cross
    Networks for Individual Treatment Effect Estimation", KDD 2022.

    A shared network feeds four heads: the propensity pi(x) = P(t=1|x), the
    treated response mu1(x) (TR) and the control response mu0(x) (CR), and the
    X-network's pseudo treatment effect tau'(x) (PTE). The entire-space network
    (ESN) trains pi * mu1 (ESTR) against t*y and (1 - pi) * mu0 (ESCR) against
    (1-t)*y on every row, since E[t y | x] = pi(x) mu1(x) (ESMM-style), which
    avoids fitting mu1 on the treated rows only. The cross network ties the heads
    together: mu0 shifted by tau' must explain the treated rows (cross TR) and mu1
    shifted back by tau' the control rows (cross CR); shifts act on the heads' raw
    outputs (for a binary response the logit, as in the paper). The effect is
    mu1 - mu0.

    Extension to K treatments and R responses: not extended to K > 1 (pi and
    1 - pi are the two arms of one binary treatment; the network and estimator
    refuse K > 1); the TR, CR and PTE heads have R outputs each and the ES products
    are taken on the mean scale: Bernoulli as in the paper for binary responses;
    for continuous and count ones pi * (mu1 - m) against t * (y - m) (likewise for
    the control side) with m the training mean, a Gaussian loss on the
    standardized scale (E[t (y - m) | x] = pi (mu1 - m) holds for any constant m;
    centring makes the loss independent of the units' origin, and without it the
    noise that t adds to t * y grows with the response level: on
    ``make_experiment(K=1, effect=1)`` PEHE fell from 0.86 to 0.10). The cross
    shifts act on each response's raw head output before its link (logit for
    binary, standardized value for identity, inverse-softplus scale for positive
    responses).

    forward: x (N, F) -> dict (see ``forward``).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std, config: DESCNConfig):
        if n_treatments != 1:
            raise ValueError(
                "DESCN is defined for one treatment (propensity pi vs 1 - pi); "
                f"got n_treatments K={n_treatments}"
            )
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        R = self.R  # noqa: N806
        hid, head = list(config.hidden_sizes), list(config.head_sizes)
        self.register_buffer("binary", binary_mask(links), persistent=False)
        self.shared = MLP(self.input_dim, hid)
        self.propensity = MLP(hid[-1], [*head, 1])
        self.response = BlockMLP(2, hid[-1], [*head, R])  # block 0: CR (mu0), block 1: TR (mu1)
        self.pte = MLP(hid[-1], [*head, R])
        self.start_at_mean(self.response.layers[-1].bias, blocks=2)
        with torch.no_grad():
            self.pte.net[-1].bias.zero_()  # no effect at the start

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (N, F) -> pi_logit (N,), pi (N,) clipped, raw (N, 2, R) raw CR/TR outputs
        (arm 0 = control), tau_raw (N, R) the pseudo effect on the raw scale."""
        h = torch.relu(self.shared(self.flat(x)))
        pi_logit = self.propensity(h)[:, 0]
        c = self.config.propensity_clip
        raw = self.response(h.unsqueeze(0).expand(2, *h.shape)).transpose(0, 1)
        return {
            "pi_logit": pi_logit,
            "pi": torch.sigmoid(pi_logit).clamp(c, 1 - c),
            "raw": raw,
            "tau_raw": self.pte(h),
        }

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, F) -> y_hat (N, 2, R) = (mu0, mu1) in response units."""
        return self.link(self.forward(x)["raw"])


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


class DESCNEstimator(BaselineEstimator):
    """DESCN (Zhong et al., KDD 2022) as an estimator; see
    ``hmum.models.descn.DESCN``. One treatment only: ``fit`` refuses K > 1.

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
