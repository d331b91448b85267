"""Meta-learners as networks: the S-learner and the T-learner (forward only).

Both are written from Künzel, Sekhon, Bickel and Yu, "Metalearners for
estimating heterogeneous treatment effects using machine learning", PNAS 2019
(the HMUM paper's reference [17]), with a neural network as base learner and
HUM's field embeddings as inputs.

Shapes: N rows, F fields, d embedding size, K treatments, R responses.

Estimators of the meta-learner networks: S-learner ("slearner"), T-learner ("tlearner").

Both train the factual loss of HUM's scale (squared error of the received arm,
divided by the training std, summed over responses); see the networks in
``hmum.models.meta`` for the papers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hmum.models.baseline import BaselineConfig, BaselineEstimator, BaselineNet, factual_loss
from hmum.nn.layers import MLP, BlockMLP


class ConditionedMLP(nn.Module):
    """An MLP on the concatenation [h ; c] of features h and an arm code c.

    The first layer is split exactly as W [h; c] = W_h h + W_c c, so one pass of
    W_h h serves every arm: scoring A arms costs one (N, H) product plus A small
    ones, instead of A copies of the (N, D) input. ReLU between layers, none after
    the last (as ``layers.MLP``). Used by the S-learner (c = a learned treatment
    embedding) and BNN (c = the treatment indicator).

    Args:
        in_features: D, width of h.
        code_features: T, width of c.
        sizes: layer widths, the last one is the output width.

    forward: h (..., D), c (..., T), broadcastable against each other
    (e.g. h (N, 1, D) with c (A, T) scores every arm: -> (N, A, sizes[-1])).
    """

    def __init__(self, in_features: int, code_features: int, sizes: Sequence[int]) -> None:
        super().__init__()
        if len(sizes) == 0:
            raise ValueError("sizes must name at least the output width, got []")
        self.h_in = nn.Linear(in_features, sizes[0])
        self.c_in = nn.Linear(code_features, sizes[0], bias=False)
        self.rest = MLP(sizes[0], sizes[1:]) if len(sizes) > 1 else None

    @property
    def last(self) -> nn.Linear:
        """The output layer (its bias starts heads at the training mean)."""
        return self.rest.net[-1] if self.rest is not None else self.h_in

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        z = self.h_in(h) + self.c_in(c)
        return z if self.rest is None else self.rest(torch.relu(z))


class SLearnerNet(BaselineNet):
    """S-learner: one network, the treatment is an input feature.

    Künzel, Sekhon, Bickel, Yu, "Metalearners for estimating heterogeneous
    treatment effects using machine learning", PNAS 116(10), 2019. A single
    outcome model mu(x, t) is fitted on all rows; the effect of arm k is
    mu(x, k) - mu(x, 0). Here mu is one MLP (``hidden_sizes`` then
    ``head_sizes``) on the field embeddings concatenated with a learned
    embedding of the arm (size d, as HUM's treatment embedding, eq. 1).

    Extension to K treatments and R responses: the arm embedding table has K+1
    rows (row 0 = control, as the HMUM paper's "multi-treatment features
    directly as input", §5.1.3), and the MLP ends in R outputs, one per response.

    forward: x (N, F), arm (N,) -> the received arm's responses (N, R).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: BaselineConfig) -> None:
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        d = config.embed_dim
        self.treatment_embed = nn.Embedding(n_treatments + 1, d)
        nn.init.normal_(self.treatment_embed.weight, std=0.05)
        self.mlp = ConditionedMLP(
            self.input_dim, d, [*config.hidden_sizes, *config.head_sizes, self.R]
        )
        self.start_at_mean(self.mlp.last.bias)

    def forward(self, x: torch.Tensor, arm: torch.Tensor) -> torch.Tensor:
        return self.link(self.mlp(self.flat(x), self.treatment_embed(arm)))

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, F) -> y_hat (N, K+1, R): every row scored under every arm."""
        z = self.mlp(self.flat(x).unsqueeze(1), self.treatment_embed.weight)  # (N, K+1, R)
        return self.link(z)


class TLearnerNet(BaselineNet):
    """T-learner: an independent outcome network per arm.

    Künzel, Sekhon, Bickel, Yu, "Metalearners for estimating heterogeneous
    treatment effects using machine learning", PNAS 116(10), 2019. mu_k(x) is
    fitted on the rows of arm k only; the effect of arm k is mu_k(x) - mu_0(x).
    The K+1 bodies (``hidden_sizes`` then ``head_sizes``, R outputs) are
    independent and run as one batched matmul (``BlockMLP``).

    Sharing: as every baseline shares HUM's embeddings (HMUM paper §5.2.1), the
    field embedding table is shared by the K+1 arms, so it learns from every row;
    each arm's body only sees gradients from its own arm's rows (the factual
    loss), which keeps the "separate model per arm" of the T-learner above the
    embedding layer.

    Extension to K treatments and R responses: K+1 bodies (arm 0 = control, the
    HMUM paper's "independent branches" per treatment, §5.1.3), each ending in R
    outputs.
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: BaselineConfig) -> None:
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        arms = n_treatments + 1
        self.bodies = BlockMLP(
            arms, self.input_dim, [*config.hidden_sizes, *config.head_sizes, self.R]
        )
        self.start_at_mean(self.bodies.layers[-1].bias, blocks=arms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, F) -> y_hat (N, K+1, R)."""
        return self.potential_outcomes(x)

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        h = self.flat(x)
        z = self.bodies(h.unsqueeze(0).expand(self.K + 1, -1, -1))  # (K+1, N, R)
        return self.link(z.transpose(0, 1))


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


class TLearnerEstimator(BaselineEstimator):
    """T-learner (Künzel et al., PNAS 2019): one body per arm, shared field embeddings.

    The default factual loss trains each arm's body on its own rows only.
    """

    model_type = "tlearner"
    config_class = BaselineConfig
    network_class = TLearnerNet
