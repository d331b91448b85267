"""Estimators and losses of M³TN, EFIN, EUEN, FlexTENet and SNet.

The networks are in ``hmum.models.baselines.multitask`` (their docstrings cite
the papers). Losses here are pure functions of tensors; every one starts from
the factual squared error on the standardized scale (``factual_loss``), as HUM's.

Shapes: N rows, K treatments, A = K+1 arms, R responses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from hmum.models.baselines.multitask import (
    EFIN,
    EUEN,
    M3TN,
    EFINConfig,
    EUENConfig,
    FlexTENet,
    FlexTENetConfig,
    M3TNConfig,
    SNet,
    SNetConfig,
)
from hmum.training.baselines.common import BaselineEstimator, factual_loss
from hmum.training.estimator import register

# --------------------------------------------------------------------------- losses


def ite_balance_penalty(tau: torch.Tensor, arm: torch.Tensor) -> torch.Tensor:
    """EFIN's intervention constraint, as we implement it (see ``EFIN``).

    For each treatment k, the predicted uplift tau_k (computed for every row)
    should have the same distribution in the rows that received k as in the
    control rows; we penalize the squared difference of the two group means,
    summed over R and averaged over the treatments present in the batch
    (a treatment, or the control, absent from the batch contributes 0).

    tau (N, K, R) on the standardized scale, arm (N,) in [0, K] -> scalar.
    """
    K = tau.shape[1]  # noqa: N806
    onehot = F.one_hot(arm.long(), K + 1).to(tau.dtype)  # (N, K+1)
    counts = onehot.sum(0)  # (K+1,)
    # mean of tau_k over the rows of arm a, for every (a, k): (K+1, K, R)
    means = torch.einsum("na,nkr->akr", onehot, tau) / counts.clamp(min=1)[:, None, None]
    k = torch.arange(K, device=tau.device)
    diff = means[k + 1, k] - means[0]  # (K, R): group k vs control, for tau_k
    present = ((counts[1:] > 0) & (counts[0] > 0)).to(tau.dtype)  # (K,)
    return (present * (diff**2).sum(-1)).sum() / present.sum().clamp(min=1)


def orthogonality_penalty(pairs) -> torch.Tensor:
    """FlexTENet's penalty: sum over (W_s, W_p) of sum_a ||W_s' W_p[a]||_F^2.

    pairs: iterable of (W_s (I, S), W_p (A, I, P)) -> scalar; 0 exactly when
    every private column is orthogonal to every shared one.
    """
    return sum(torch.einsum("is,aip->asp", ws, wp).pow(2).sum() for ws, wp in pairs)


def subspace_orthogonality_penalty(weights: torch.Tensor, pairs) -> torch.Tensor:
    """SNet's penalty: sum over subspace pairs (i, j) of ||W_i' W_j||_F^2.

    weights (S, D, H) first-layer weights of S subspaces; pairs: (i, j) indices -> scalar.
    """
    idx = torch.as_tensor(list(pairs), dtype=torch.long, device=weights.device)
    if idx.numel() == 0:
        return weights.new_zeros(())
    return torch.einsum("pdh,pdg->phg", weights[idx[:, 0]], weights[idx[:, 1]]).pow(2).sum()


# ----------------------------------------------------------------------- estimators


@register
class M3TNEstimator(BaselineEstimator):
    """M³TN (Sun & Chen, ICASSP 2024); multi-treatment native. Factual loss only."""

    model_type = "m3tn"
    config_class = M3TNConfig
    network_class = M3TN


@register
class EFINEstimator(BaselineEstimator):
    """EFIN (Liu et al., KDD 2023), K treatments through one embedding per arm.

    Loss: factual MSE + ``constraint_weight`` * ``ite_balance_penalty``.
    """

    model_type = "efin"
    config_class = EFINConfig
    network_class = EFIN

    def _loss(self, module: EFIN, batch):
        x, arm, y = batch
        out = module(x)
        mse = factual_loss(out.y_hat, arm, y, module).mean()
        bal = ite_balance_penalty(out.tau, arm)
        loss = mse + module.config.constraint_weight * bal
        return loss, {"mse": float(mse.detach()), "ite_balance": float(bal.detach())}


@register
class EUENEstimator(BaselineEstimator):
    """EUEN (Ke et al., ICDM 2021) without the exposure part; one treatment only."""

    model_type = "euen"
    config_class = EUENConfig
    network_class = EUEN
    max_treatments = 1


@register
class FlexTENetEstimator(BaselineEstimator):
    """FlexTENet (Curth & van der Schaar, NeurIPS 2021); one treatment only.

    Loss: factual MSE + ``orthogonal_weight`` * ``orthogonality_penalty``.
    """

    model_type = "flextenet"
    config_class = FlexTENetConfig
    network_class = FlexTENet
    max_treatments = 1

    def _loss(self, module: FlexTENet, batch):
        x, arm, y = batch
        mse = factual_loss(module(x), arm, y, module).mean()
        ortho = orthogonality_penalty(module.orthogonal_pairs())
        loss = mse + module.config.orthogonal_weight * ortho
        return loss, {"mse": float(mse.detach()), "orthogonal": float(ortho.detach())}


@register
class SNetEstimator(BaselineEstimator):
    """SNet (Curth & van der Schaar, AISTATS 2021); one treatment only.

    Loss: factual MSE + ``propensity_weight`` * cross-entropy of the received
    arm + ``orthogonal_weight`` * ``subspace_orthogonality_penalty``.
    """

    model_type = "snet"
    config_class = SNetConfig
    network_class = SNet
    max_treatments = 1

    def _loss(self, module: SNet, batch):
        x, arm, y = batch
        out = module(x)
        cfg = module.config
        mse = factual_loss(out.y_hat, arm, y, module).mean()
        prop = F.cross_entropy(out.propensity_logits, arm.long())
        ortho = subspace_orthogonality_penalty(module.first_layer_weights(),
                                               module.orthogonal_pairs())
        loss = mse + cfg.propensity_weight * prop + cfg.orthogonal_weight * ortho
        return loss, {"mse": float(mse.detach()), "propensity": float(prop.detach()),
                      "orthogonal": float(ortho.detach())}
