"""Estimators and losses of the generative baselines: CEVAE and GANITE (one treatment each).

Likelihoods of the responses (shared with DESCN): a Gaussian with unit variance on
the standardized scale for continuous and count responses (negative log
likelihood 0.5 * ((mean - y) / std)^2, the factual squared error of the other
baselines up to the factor), a Bernoulli for binary ones.

Shapes: N rows, F fields, A = K + 1 arms, R responses, L latent size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

from hmum.models.baselines.common import pick_arm
from hmum.models.baselines.generative import CEVAE, GANITE, CEVAEConfig, GANITEConfig
from hmum.models.links import apply_link, deviance
from hmum.training.baselines.common import BaselineEstimator
from hmum.training.estimator import register


def response_nll(
    raw: torch.Tensor,
    y: torch.Tensor,
    links: Sequence[str],
    y_mean: torch.Tensor,
    y_std: torch.Tensor,
    binary: torch.Tensor,
    losses: Sequence[str] | None = None,
    tweedie_power: float = 1.5,
) -> torch.Tensor:
    """Negative log likelihood of y given a head's raw outputs, summed over R.

    raw, y: (..., R); binary: (R,) bool. Binary responses: Bernoulli with logit
    ``raw`` (y may be a soft target in [0, 1]); others: half the model's response
    deviance (``hmum.models.links.deviance``; default "mse": a Gaussian with unit
    variance on the standardized scale), of the mean ``apply_link(raw)``, which is
    the NLL of that family up to a constant. Returns (...).
    """
    mean = apply_link(raw, links, y_mean, y_std)
    losses = ["mse"] * len(links) if losses is None else losses
    gauss = 0.5 * deviance(mean, y, losses, y_mean, y_std, tweedie_power)
    bern = F.binary_cross_entropy_with_logits(raw, y.clamp(0, 1), reduction="none")
    return torch.where(binary, bern, gauss).sum(-1)


def mean_nll(
    mean: torch.Tensor, y: torch.Tensor, y_std: torch.Tensor, binary: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """As ``response_nll`` for predictions given as means (..., R) in response units
    (binary: probabilities, clipped to [eps, 1 - eps]). Returns (...)."""
    gauss = 0.5 * ((mean - y) / y_std) ** 2
    p = mean.clamp(eps, 1 - eps)
    yb = y.clamp(0, 1)
    bern = -(yb * p.log() + (1 - yb) * (1 - p).log())
    return torch.where(binary, bern, gauss).sum(-1)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last axis: (..., L) -> (...)."""
    return 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).sum(-1)


# ---------------------------------------------------------------------------------------------
def cevae_loss(
    out: dict,
    x: torch.Tensor,
    arm: torch.Tensor,
    y: torch.Tensor,
    *,
    links: Sequence[str],
    y_mean: torch.Tensor,
    y_std: torch.Tensor,
    losses: Sequence[str] | None = None,
    tweedie_power: float = 1.5,
    binary: torch.Tensor,
    kl_weight: float = 1.0,
    aux_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's CEVAE objective (Louizos et al. 2017), negated: the negative ELBO
    -E_q[log p(x|z) + log p(t|z) + log p(y|t,z)] + KL(q(z|x,t,y) || p(z)) plus the
    auxiliary -log q(t|x) - log q(y|x,t), averaged over rows.

    out: ``CEVAE.forward``'s dict; x (N, F) ids, arm (N,), y (N, R).
    Returns (scalar loss, logs).
    """
    rec_x = sum(
        F.cross_entropy(lg, x[:, f].long(), reduction="none")
        for f, lg in enumerate(out["x_logits"])
    )
    rec_t = F.cross_entropy(out["p_t_logits"], arm.long(), reduction="none")
    rec_y = response_nll(out["p_y_raw"], y, links, y_mean, y_std, binary, losses,
                         tweedie_power)
    kl = gaussian_kl(out["z_mean"], out["z_logvar"])
    aux = F.cross_entropy(out["q_t_logits"], arm.long(), reduction="none") + response_nll(
        out["q_y_raw"], y, links, y_mean, y_std, binary, losses, tweedie_power
    )
    terms = {"rec_x": rec_x, "rec_t": rec_t, "rec_y": rec_y, "kl": kl, "aux": aux}
    loss = (rec_x + rec_t + rec_y + kl_weight * kl + aux_weight * aux).mean()
    return loss, {k: float(v.detach().mean()) for k, v in terms.items()}


@register
class CEVAEEstimator(BaselineEstimator):
    """CEVAE (Louizos et al., NeurIPS 2017) as an estimator; see ``hmum.models.baselines.
    generative.CEVAE``. One treatment only (its paper): ``fit`` refuses K > 1.

    Training draws z by reparameterization; validation (the early-stopping loss) and
    prediction use the mean of q(z|...), so both are deterministic.
    """

    model_type = "cevae"
    config_class = CEVAEConfig
    network_class = CEVAE
    max_treatments = 1

    def _loss(self, module: CEVAE, batch):
        x, arm, y = batch
        out = module(x, arm, y, sample=module.training)
        cfg = module.config
        return cevae_loss(
            out, x, arm, y, links=module.links, y_mean=module.y_mean, y_std=module.y_std,
            losses=module.losses, tweedie_power=module.config.tweedie_power,
            binary=module.binary, kl_weight=cfg.kl_weight, aux_weight=cfg.aux_weight,
        )


# ---------------------------------------------------------------------------------------------
def ganite_loss(
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
    alpha: float = 1.0,
    beta: float = 1.0,
    training: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GANITE's two games as one loss (the generators' side comes from the
    gradient-reversal layers inside ``GANITE.forward``).

    Terms per row: D_G's cross-entropy of the factual slot; alpha * G's factual
    likelihood loss; D_I's binary cross-entropy (y_bar real, I's outputs fake);
    beta * I's loss against y_bar over all A slots (factual: the observed y;
    counterfactual: G's, detached: I learns from G, G is not pulled towards I).

    ``training=False`` (validation) returns as the loss I's factual loss only,
    the error of the network that predicts; the adversarial terms of a GAN are no
    criterion for early stopping. All terms are logged either way.

    out: ``GANITE.forward``'s dict; arm (N,), y (N, R). Returns (scalar, logs).
    """
    g_fact = response_nll(pick_arm(out["g_raw"], arm), y,
                          links, y_mean, y_std, binary, losses, tweedie_power)
    d_g = F.cross_entropy(out["d_g_logits"], arm.long(), reduction="none")
    i_all = response_nll(out["i_raw"], out["y_bar"].detach(),
                          links, y_mean, y_std, binary, losses, tweedie_power)
    i_fact = response_nll(pick_arm(out["i_raw"], arm), y,
                          links, y_mean, y_std, binary, losses, tweedie_power)
    real, fake = out["d_i_real"], out["d_i_fake"]
    d_i = F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real), reduction="none"
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction="none")
    terms = {"g_factual": g_fact, "d_g": d_g, "i_sup": i_all.sum(-1), "d_i": d_i,
             "i_factual": i_fact}
    logs = {k: float(v.detach().mean()) for k, v in terms.items()}
    if not training:
        return i_fact.mean(), logs
    loss = (d_g + alpha * g_fact + d_i + beta * i_all.sum(-1)).mean()
    return loss, logs


@register
class GANITEEstimator(BaselineEstimator):
    """GANITE (Yoon, Jordon, van der Schaar, ICLR 2018) as an estimator; see
    ``hmum.models.baselines.generative.GANITE`` for the single-optimizer (gradient
    reversal) formulation. One treatment only (its paper): ``fit`` refuses K > 1.

    The validation loss (early stopping, LR schedule) is I's factual loss with the
    noise at 0; the training loss is the full objective, so the two are on
    different scales. Predictions: I(x, z_I = 0), deterministic.
    """

    model_type = "ganite"
    config_class = GANITEConfig
    network_class = GANITE
    max_treatments = 1

    def _loss(self, module: GANITE, batch):
        x, arm, y = batch
        out = module(x, arm, y, sample=module.training)
        cfg = module.config
        return ganite_loss(
            out, arm, y, links=module.links, y_mean=module.y_mean, y_std=module.y_std,
            losses=module.losses, tweedie_power=module.config.tweedie_power,
            binary=module.binary, alpha=cfg.alpha, beta=cfg.beta, training=module.training,
        )
