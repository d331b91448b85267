"""Losses and estimators of the representation baselines: TARNet ("tarnet"),
CFRNet ("cfrnet"), DragonNet ("dragonnet") and BNN ("bnn").

The losses are pure functions of tensors. Every factual term is HUM's scale:
squared error of the received arm divided by the training std, summed over the
R responses. Balancing terms are computed on each mini-batch (as in the papers,
which train with mini-batch SGD); a batch that lacks one of the two groups
contributes no balancing term.

Shapes: N rows, n_t treated and n_c control rows of a batch, D representation
width, K treatments, R responses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812

from hmum.models.baselines.common import BaselineNet, pick_arm
from hmum.models.baselines.representation import (
    BNN,
    BNNConfig,
    CFRNet,
    CFRNetConfig,
    DragonNet,
    DragonNetConfig,
    RepOutput,
    TARNet,
    TARNetConfig,
)
from hmum.training.baselines.common import BaselineEstimator, factual_loss
from hmum.training.estimator import register

# ---------------------------------------------------------------------------
# distances between the treated and control distributions of Phi


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, a (n, D), b (m, D) -> (n, m), >= 0."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def mmd2_linear(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared MMD with the linear kernel: ||mean(a) - mean(b)||^2.

    a (n, D), b (m, D) -> scalar.
    """
    return (a.mean(0) - b.mean(0)).pow(2).sum()


def mmd2_rbf(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Squared MMD with the Gaussian kernel k(u, v) = exp(-||u - v||^2 / (2 sigma^2)).

    The biased (V-statistic) estimate of Gretton et al. (JMLR 2012):
    mean k(a, a) + mean k(b, b) - 2 mean k(a, b); it is the squared RKHS
    distance between the two empirical mean embeddings, so >= 0 and exactly 0
    for identical samples.

    a (n, D), b (m, D) -> scalar.
    """
    g = -0.5 / sigma**2
    kaa = torch.exp(g * _sq_dists(a, a)).mean()
    kbb = torch.exp(g * _sq_dists(b, b)).mean()
    kab = torch.exp(g * _sq_dists(a, b)).mean()
    return (kaa + kbb - 2.0 * kab).clamp_min(0.0)


def wasserstein_sinkhorn(
    a: torch.Tensor, b: torch.Tensor, lam: float = 10.0, iterations: int = 10
) -> torch.Tensor:
    """Entropy-regularized Wasserstein-1 distance between two samples (uniform weights).

    Shalit et al. 2017 (appendix) approximate the Wasserstein IPM
    with Cuturi's Sinkhorn iterations (NeurIPS 2013) on the batch's pairwise
    distance matrix M, and back-propagate through <T, M> with the transport
    plan T held fixed. Here lambda is relative to the mean distance (the
    kernel is exp(-lam * M / mean(M))), so the approximation does not depend on
    Phi's scale, and the iterations run in the log domain so large lam * M
    cannot underflow to 0 / 0.

    a (n, D), b (m, D) -> scalar W >= 0, differentiable in a and b.
    """
    # sqrt of a clamped square: finite gradients where two points coincide
    m = _sq_dists(a, b).clamp_min(1e-12).sqrt()
    with torch.no_grad():
        log_k = -(lam / m.mean().clamp_min(1e-12)) * m
        log_a = torch.full((a.shape[0],), -math.log(a.shape[0]), device=a.device, dtype=a.dtype)
        log_b = torch.full((b.shape[0],), -math.log(b.shape[0]), device=b.device, dtype=b.dtype)
        g = torch.zeros_like(log_b)
        for _ in range(iterations):  # iterations, not rows: each step is one vectorized sweep
            f = log_a - torch.logsumexp(log_k + g.unsqueeze(0), dim=1)
            g = log_b - torch.logsumexp(log_k + f.unsqueeze(1), dim=0)
        plan = torch.exp(f.unsqueeze(1) + log_k + g.unsqueeze(0))  # (n, m)
    return (plan * m).sum()


def linear_discrepancy(phi: torch.Tensor, treated: torch.Tensor) -> torch.Tensor:
    """BNN's discrepancy for linear hypotheses between the factual and the
    counterfactual distributions of (Phi, t) (Johansson et al. 2016, §4, the
    closed form for linear hypotheses):

        disc = |p - 1/2| + sqrt((p - 1/2)^2 + ||p * m_t - (1 - p) * m_c||^2)

    with p the treated share and m_t, m_c the treated and control means of Phi.

    phi (N, D), treated (N,) bool -> scalar (0 if one group is empty).
    """
    n_t = int(treated.sum())
    if n_t == 0 or n_t == treated.numel():
        return phi.new_zeros(())
    p = n_t / treated.numel()
    v = p * phi[treated].mean(0) - (1.0 - p) * phi[~treated].mean(0)
    c = (p - 0.5) ** 2
    # the clamp keeps sqrt's gradient finite when p = 1/2 and the means agree
    return abs(p - 0.5) + (c + v.pow(2).sum()).clamp_min(1e-10).sqrt()


def ipm(phi: torch.Tensor, treated: torch.Tensor, cfg: CFRNetConfig) -> torch.Tensor:
    """CFRNet's IPM between Phi of treated and control rows, chosen by ``cfg``.

    phi (N, D), treated (N,) bool -> scalar (0 if one group is empty).
    """
    n_t = int(treated.sum())
    if n_t == 0 or n_t == treated.numel():
        return phi.new_zeros(())
    a, b = phi[treated], phi[~treated]
    if cfg.ipm == "wasserstein":
        return wasserstein_sinkhorn(a, b, cfg.sinkhorn_lambda, cfg.sinkhorn_iterations)
    if cfg.mmd_kernel == "rbf":
        return mmd2_rbf(a, b, cfg.rbf_sigma)
    return mmd2_linear(a, b)


def nearest_in_other_arm(z: torch.Tensor, treated: torch.Tensor) -> torch.Tensor | None:
    """Index of each row's nearest neighbour (Euclidean) among the other arm's rows.

    z (N, D) (no gradient needed), treated (N,) bool -> (N,) long, or None when
    one of the two groups is empty.
    """
    n_t = int(treated.sum())
    if n_t == 0 or n_t == treated.numel():
        return None
    with torch.no_grad():
        d = _sq_dists(z, z)
        d.masked_fill_(treated.unsqueeze(1) == treated.unsqueeze(0), math.inf)
        return d.argmin(1)


# ---------------------------------------------------------------------------
# losses


def cfr_loss(out: RepOutput, arm: torch.Tensor, y: torch.Tensor, module: BaselineNet,
             cfg: CFRNetConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """CFRNet's objective (Shalit et al. 2017, the CFR training objective):
    mean_i w_i * factual_i + alpha * IPM(Phi | t=1, Phi | t=0).

    w_i = 1/(2u) for treated rows and 1/(2(1-u)) for control rows, u the
    batch's treated share (``cfg.reweight``); w = 1 when one group is empty.

    out: ArmHeadsNet output (y_hat (N, 2, R), phi (N, D)); arm (N,) in {0, 1};
    y (N, R); module: the network (its response losses). Returns (scalar loss,
    {"mse", "ipm"}).
    """
    fact = factual_loss(out.y_hat, arm, y, module)  # (N,)
    treated = arm > 0
    u = float(treated.float().mean())
    if cfg.reweight and 0.0 < u < 1.0:
        w = torch.where(treated, 0.5 / u, 0.5 / (1.0 - u))
        mse = (w * fact).mean()
    else:
        mse = fact.mean()
    pen = ipm(out.phi, treated, cfg) if cfg.alpha > 0 else fact.new_zeros(())
    loss = mse + cfg.alpha * pen
    return loss, {"mse": float(mse.detach()), "ipm": float(pen.detach())}


def dragonnet_loss(out: RepOutput, arm: torch.Tensor, y: torch.Tensor, module: BaselineNet,
                   epsilon: torch.Tensor, cfg: DragonNetConfig
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """DragonNet's objective with targeted regularization (Shi et al. 2019, §3):

        mean_i [ factual_i + alpha * CE(g_i, t_i)
                 + beta * sum_r ((y_ir - Q_ir(t_i)) / std_r - eps_r * h_i)^2 ],
        h_i = t_i / g_i - (1 - t_i) / (1 - g_i),

    on the standardized scale (so eps is per response, in std units); g is
    clipped to [c, 1-c] inside h only.

    out: DragonNet output (y_hat (N, 2, R), propensity_logit (N,)); arm (N,) in
    {0, 1}; y (N, R); module: the network (its response losses score the factual
    term; the targeted term stays a squared error, as in the paper); epsilon (R,).
    Returns (loss, {"mse", "ce", "tmle"}).
    """
    t = (arm > 0).to(y.dtype)
    resid = (y - pick_arm(out.y_hat, arm)) / module.y_std  # (N, R)
    mse = factual_loss(out.y_hat, arm, y, module).mean()
    ce = F.binary_cross_entropy_with_logits(out.propensity_logit, t)
    c = cfg.propensity_clip
    g = torch.sigmoid(out.propensity_logit).clamp(c, 1.0 - c)
    h = t / g - (1.0 - t) / (1.0 - g)
    tmle = (resid - epsilon * h.unsqueeze(1)).pow(2).sum(-1).mean()
    loss = mse + cfg.alpha * ce + cfg.beta * tmle
    return loss, {"mse": float(mse.detach()), "ce": float(ce.detach()),
                  "tmle": float(tmle.detach())}


def bnn_loss(out: RepOutput, arm: torch.Tensor, y: torch.Tensor, module: BaselineNet,
             cfg: BNNConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """BNN's objective (Johansson et al. 2016, §4):

        mean_i factual_i + alpha * disc(Phi) + gamma * mean_i cf_i,

    cf_i the error of h(Phi(x_i), 1 - t_i) against the observed outcome of
    j(i), x_i's nearest neighbour in the other arm. The paper matches in the
    raw covariate space; here x is a row of category ids, whose only metric is
    the model's own input view, so j(i) is the nearest row of the batch in the
    (gradient-free) flattened field embeddings.

    out: BNN output (inputs (N, F*d), phi (N, D), y_hat (N, 2, R)); arm (N,)
    in {0, 1}; y (N, R); module: the network. Returns (loss, {"mse", "disc", "cf"}).
    """
    mse = factual_loss(out.y_hat, arm, y, module).mean()
    treated = arm > 0
    disc = linear_discrepancy(out.phi, treated) if cfg.alpha > 0 else mse.new_zeros(())
    cf = mse.new_zeros(())
    if cfg.gamma > 0:
        j = nearest_in_other_arm(out.inputs.detach(), treated)
        if j is not None:
            cf = factual_loss(out.y_hat, 1 - arm, y[j], module).mean()
    loss = mse + cfg.alpha * disc + cfg.gamma * cf
    return loss, {"mse": float(mse.detach()), "disc": float(disc.detach()),
                  "cf": float(cf.detach())}


# ---------------------------------------------------------------------------
# estimators


@register
class TARNetEstimator(BaselineEstimator):
    """TARNet (Shalit et al., ICML 2017): Phi + one head per arm, factual loss.

    Multi-treatment: K+1 heads (the HMUM paper extends TARNet this way).
    """

    model_type = "tarnet"
    config_class = TARNetConfig
    network_class = TARNet


@register
class CFRNetEstimator(BaselineEstimator):
    """CFRNet (Shalit et al., ICML 2017): TARNet + alpha * IPM (MMD or Wasserstein).

    Single treatment in its paper: ``fit`` refuses K > 1.
    """

    model_type = "cfrnet"
    config_class = CFRNetConfig
    network_class = CFRNet
    max_treatments = 1

    def _loss(self, module: CFRNet, batch):
        x, arm, y = batch
        return cfr_loss(module(x), arm, y, module, module.config)


@register
class DragonNetEstimator(BaselineEstimator):
    """DragonNet (Shi, Blei, Veitch, NeurIPS 2019) with targeted regularization.

    Single treatment in its paper: ``fit`` refuses K > 1. ``predict_all`` also
    returns ``propensity`` (N,): the fitted P(treated | x).
    """

    model_type = "dragonnet"
    config_class = DragonNetConfig
    network_class = DragonNet
    max_treatments = 1

    def _loss(self, module: DragonNet, batch):
        x, arm, y = batch
        return dragonnet_loss(module(x), arm, y, module, module.epsilon, module.config)

    def _outcomes(self, module: DragonNet, x):
        out = module(x)
        return {"y_hat": out.y_hat, "propensity": torch.sigmoid(out.propensity_logit)}


@register
class BNNEstimator(BaselineEstimator):
    """BNN (Johansson, Shalit, Sontag, ICML 2016): [Phi ; t] -> one outcome network,
    + linear discrepancy + nearest-neighbour counterfactual term.

    Single treatment in its paper: ``fit`` refuses K > 1.
    """

    model_type = "bnn"
    config_class = BNNConfig
    network_class = BNN
    max_treatments = 1

    def _loss(self, module: BNN, batch):
        x, arm, y = batch
        return bnn_loss(module(x), arm, y, module, module.config)
