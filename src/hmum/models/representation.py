"""Representation-learning baselines (forward only): TARNet, CFRNet, DragonNet, BNN.

All four learn a representation Phi(x) of the field embeddings and predict the
outcomes from it. TARNet, CFRNet and DragonNet share one network class,
``ArmHeadsNet`` (Phi + one head per arm); they differ in their losses (in
``hmum.models.representation``) and DragonNet adds a propensity head.
BNN feeds [Phi ; t] to a single outcome network.

Shapes: N rows, F fields, d embedding size, D representation width,
K treatments, R responses.

Losses and estimators of the representation baselines: TARNet ("tarnet"),
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
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field
from torch import nn

from hmum.models.baseline import (
    BaselineConfig,
    BaselineEstimator,
    BaselineNet,
    factual_loss,
    pick_arm,
)
from hmum.models.meta import ConditionedMLP
from hmum.nn.layers import MLP, BlockMLP


class RepresentationConfig(BaselineConfig):
    """Settings of the representation baselines (``hidden_sizes`` = Phi's layers)."""

    normalize_repr: bool = Field(
        False,
        description="scale Phi to unit L2 norm per row, so that a balancing penalty cannot "
        "be reduced by shrinking Phi toward 0",
    )


class TARNetConfig(RepresentationConfig):
    """TARNet: Phi + heads, factual loss only (Shalit et al. 2017 with alpha = 0)."""


class CFRNetConfig(RepresentationConfig):
    """CFRNet: TARNet + alpha * IPM(Phi | treated, Phi | control) (Shalit et al. 2017).

    The paper selects alpha on validation data (grid 10^(k/2)); alpha = 1 is our
    untuned default, on the standardized loss scale shared by every model.
    Sinkhorn lambda = 10 with 10 iterations are the defaults of the authors'
    released code (the paper leaves them open).
    """

    normalize_repr: bool = Field(True, description="unit-norm Phi (see RepresentationConfig)")
    ipm: Literal["mmd", "wasserstein"] = Field(
        "wasserstein", description="the IPM: CFR-MMD or CFR-Wass (the paper's two variants)"
    )
    mmd_kernel: Literal["linear", "rbf"] = Field("linear", description="kernel for ipm='mmd'")
    rbf_sigma: float = Field(1.0, gt=0, description="bandwidth of the RBF kernel")
    alpha: float = Field(1.0, ge=0, description="weight of the IPM term")
    sinkhorn_lambda: float = Field(
        10.0, gt=0, description="entropic strength, relative to the mean pairwise distance"
    )
    sinkhorn_iterations: int = Field(10, ge=1)
    reweight: bool = Field(
        True, description="weight rows by 1/(2u) (treated) and 1/(2(1-u)) (control), u = "
        "treated share, as in the paper's objective"
    )


class DragonNetConfig(RepresentationConfig):
    """DragonNet (Shi, Blei, Veitch 2019): loss weights from the paper (alpha = beta = 1)."""

    alpha: float = Field(1.0, ge=0, description="weight of the propensity cross-entropy")
    beta: float = Field(1.0, ge=0, description="weight of the targeted regularization")
    propensity_clip: float = Field(
        0.01, gt=0, lt=0.5,
        description="g is clipped to [c, 1-c] in the targeted term so 1/g stays bounded",
    )


class BNNConfig(RepresentationConfig):
    """BNN (Johansson, Shalit, Sontag 2016).

    The paper selects alpha and gamma on validation data; alpha = gamma = 1 are
    our untuned defaults, on the standardized loss scale shared by every model.
    """

    normalize_repr: bool = Field(True, description="unit-norm Phi (see RepresentationConfig)")
    alpha: float = Field(1.0, ge=0, description="weight of the linear discrepancy term")
    gamma: float = Field(
        1.0, ge=0, description="weight of the nearest-neighbour counterfactual term"
    )


class RepOutput(NamedTuple):
    """Forward output of the representation baselines.

    inputs: (N, F*d) flattened field embeddings (the model's view of x).
    phi: (N, D) representation.
    y_hat: (N, K+1, R) potential outcomes in original units.
    propensity_logit: (N,) logit of P(treated | x) (DragonNet), else None.
    """

    inputs: torch.Tensor
    phi: torch.Tensor
    y_hat: torch.Tensor
    propensity_logit: torch.Tensor | None = None


def _one_treatment(model: str, n_treatments: int) -> None:
    if n_treatments != 1:
        raise ValueError(
            f"{model} is defined for one treatment only in its paper: n_treatments must be 1, "
            f"got K={n_treatments}"
        )


class Representation(nn.Module):
    """Phi: an MLP with ReLU after every layer (a representation, not a prediction),
    optionally scaled to unit L2 norm per row.

    forward: (N, in_features) -> (N, D), D = sizes[-1] (in_features if sizes is empty).
    """

    def __init__(self, in_features: int, sizes: Sequence[int], normalize: bool) -> None:
        super().__init__()
        self.mlp = MLP(in_features, sizes) if len(sizes) else None
        self.out_features = sizes[-1] if len(sizes) else in_features
        self.normalize = normalize

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        phi = torch.relu(self.mlp(h)) if self.mlp is not None else h
        return F.normalize(phi, dim=-1, eps=1e-6) if self.normalize else phi


class ArmHeadsNet(BaselineNet):
    """Shared representation Phi and one outcome head per arm: TARNet and CFRNet.

    Shalit, Johansson, Sontag, "Estimating individual treatment effect:
    generalization bounds and algorithms", ICML 2017. Phi (``hidden_sizes``) is
    shared by all rows; head h_t (``head_sizes``, R outputs) predicts the outcome
    under arm t and is trained only on the rows of arm t (factual loss). TARNet
    trains the factual loss alone; CFRNet adds alpha * IPM between the treated
    and control distributions of Phi (the loss is in
    ``hmum.models.representation``).

    Extension to K treatments and R responses: K+1 heads (arm 0 = control; the
    HMUM paper's "independent branches" per treatment, §5.1.3), run as one
    batched matmul, each ending in R outputs. CFRNet's IPM is defined for two
    groups, so CFRNet is single-treatment (its estimator refuses K > 1).

    forward: x (N, F) -> RepOutput (propensity_logit None).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: RepresentationConfig) -> None:
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        self.phi = Representation(self.input_dim, config.hidden_sizes, config.normalize_repr)
        arms = n_treatments + 1
        self.heads = BlockMLP(arms, self.phi.out_features, [*config.head_sizes, self.R])
        self.start_at_mean(self.heads.layers[-1].bias, blocks=arms)

    def represent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, F) -> (inputs (N, F*d), phi (N, D), y_hat (N, K+1, R))."""
        h = self.flat(x)
        phi = self.phi(h)
        z = self.heads(phi.unsqueeze(0).expand(self.K + 1, -1, -1))  # (K+1, N, R)
        return h, phi, self.link(z.transpose(0, 1))

    def forward(self, x: torch.Tensor) -> RepOutput:
        return RepOutput(*self.represent(x))

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self.represent(x)[2]


#: TARNet is exactly the shared class; its estimator trains the factual loss only.
TARNet = ArmHeadsNet


class CFRNet(ArmHeadsNet):
    """CFRNet (Shalit, Johansson, Sontag, ICML 2017): ``ArmHeadsNet`` trained with
    the factual loss + alpha * IPM (see ``ArmHeadsNet``).

    Extension to K treatments and R responses: the paper's IPM compares two
    groups (treated, control), so CFRNet is defined for one treatment only and
    K > 1 is refused; the two heads end in R outputs.
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: CFRNetConfig) -> None:
        _one_treatment("CFRNet", n_treatments)
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)


class DragonNet(ArmHeadsNet):
    """DragonNet: shared representation, two outcome heads and a propensity head.

    Shi, Blei, Veitch, "Adapting Neural Networks for the Estimation of
    Treatment Effects", NeurIPS 2019. Z = Phi(x) feeds Q(0, .), Q(1, .) and a
    linear propensity head g(x) = sigmoid(w'Z + b); the loss adds alpha *
    cross-entropy(g, t) and the targeted regularization beta * (y - Q~)^2 with
    Q~ = Q(t, x) + epsilon * (t/g - (1-t)/(1-g)), epsilon a free parameter.

    Extension to K treatments and R responses: defined for one treatment only
    (the propensity head and the targeted term are binary), so K > 1 is refused;
    the outcome heads end in R outputs and epsilon has one entry per response.

    ``potential_outcomes`` are the heads Q(t, x). The epsilon fluctuation is a
    training regularizer here; the paper adds it to Q when it estimates the
    average effect, which is not what a per-row y_hat is for.

    forward: x (N, F) -> RepOutput with propensity_logit (N,).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: DragonNetConfig) -> None:
        _one_treatment("DragonNet", n_treatments)
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        self.propensity = nn.Linear(self.phi.out_features, 1)
        # epsilon of the targeted regularization, per response, on the standardized scale
        self.epsilon = nn.Parameter(torch.zeros(self.R))

    def forward(self, x: torch.Tensor) -> RepOutput:
        h, phi, y_hat = self.represent(x)
        return RepOutput(h, phi, y_hat, self.propensity(phi).squeeze(-1))


class BNN(BaselineNet):
    """Balancing neural network: BNN of Johansson, Shalit, Sontag, "Learning
    Representations for Counterfactual Inference", ICML 2016.

    A representation Phi(x) (``hidden_sizes``) is concatenated with the
    treatment indicator t and fed to one outcome network h(Phi, t)
    (``head_sizes``, R outputs). The loss (in
    ``hmum.models.representation``) is the factual error + alpha *
    the linear discrepancy between the factual and counterfactual distributions
    of (Phi, t) + gamma * the error of h(Phi(x_i), 1 - t_i) against the outcome
    of x_i's nearest neighbour in the other arm.

    Extension to K treatments and R responses: defined for one treatment only
    (t is a binary indicator and the discrepancy compares two groups), so
    K > 1 is refused; the outcome network ends in R outputs.

    forward: x (N, F) -> RepOutput (y_hat (N, 2, R) = h(Phi, 0), h(Phi, 1)).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: BNNConfig) -> None:
        _one_treatment("BNN", n_treatments)
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        self.phi = Representation(self.input_dim, config.hidden_sizes, config.normalize_repr)
        self.outcome = ConditionedMLP(self.phi.out_features, 1, [*config.head_sizes, self.R])
        self.start_at_mean(self.outcome.last.bias)
        # the two values of the indicator t, as (K+1, 1) codes
        self.register_buffer("arm_codes", torch.tensor([[0.0], [1.0]]), persistent=False)

    def forward(self, x: torch.Tensor) -> RepOutput:
        h = self.flat(x)
        phi = self.phi(h)
        z = self.outcome(phi.unsqueeze(1), self.arm_codes)  # (N, 2, R)
        return RepOutput(h, phi, self.link(z))

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).y_hat


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


class TARNetEstimator(BaselineEstimator):
    """TARNet (Shalit et al., ICML 2017): Phi + one head per arm, factual loss.

    Multi-treatment: K+1 heads (the HMUM paper extends TARNet this way).
    """

    model_type = "tarnet"
    config_class = TARNetConfig
    network_class = TARNet


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
