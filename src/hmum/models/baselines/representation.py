"""Representation-learning baselines (forward only): TARNet, CFRNet, DragonNet, BNN.

All four learn a representation Phi(x) of the field embeddings and predict the
outcomes from it. TARNet, CFRNet and DragonNet share one network class,
``ArmHeadsNet`` (Phi + one head per arm); they differ in their losses (in
``hmum.training.baselines.representation``) and DragonNet adds a propensity head.
BNN feeds [Phi ; t] to a single outcome network.

Shapes: N rows, F fields, d embedding size, D representation width,
K treatments, R responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field
from torch import nn

from hmum.models.baselines.common import BaselineConfig, BaselineNet
from hmum.models.baselines.meta import ConditionedMLP
from hmum.models.layers import MLP, BlockMLP


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
    ``hmum.training.baselines.representation``).

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
    ``hmum.training.baselines.representation``) is the factual error + alpha *
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
