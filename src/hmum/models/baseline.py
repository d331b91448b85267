"""What every baseline network shares: embeddings, response scaling, output links.

Shapes: N rows, F fields, d embedding size, K treatments, R responses.

What every baseline estimator shares: build, the factual loss, outcomes, refusals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import ConfigDict, Field
from torch import nn

from hmum.models.base import NeuralUpliftEstimator
from hmum.nn.layers import FieldEmbedding
from hmum.nn.links import LossConfig, apply_link, deviance, link_bias


def pick_arm(per_arm: torch.Tensor, arm: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Each row's value at its own arm.

    per_arm (N, A, D) with dim=1 (or (A, N, D) with dim=0), arm (N,) -> (N, D).
    """
    if dim == 0:
        per_arm = per_arm.transpose(0, 1)
    idx = arm.long().view(-1, 1, 1).expand(-1, 1, per_arm.shape[-1])
    return per_arm.gather(1, idx).squeeze(1)


class BaselineConfig(LossConfig):
    """Settings shared by the baselines (paper §5.1: same embeddings, untuned).

    Subclasses add the fields of their own paper (penalty weights, latent sizes).
    ``loss`` / ``tweedie_power`` (LossConfig) are HUM's, so comparisons stay fair.
    """

    model_config = ConfigDict(extra="forbid")

    embed_dim: int = Field(32, ge=1, description="embedding size d (as HUM)")
    hidden_sizes: list[int] = Field(
        default_factory=lambda: [128, 64], description="shared representation / body MLP"
    )
    head_sizes: list[int] = Field(
        default_factory=lambda: [32], description="hidden layers of each outcome head"
    )


class BaselineNet(nn.Module):
    """Base of the baseline networks.

    Holds the field embedding (as HUM's, eq. 1), the training statistics of the
    responses and their links. Subclasses build their body in ``__init__`` and
    implement ``forward`` (whatever their loss needs) and ``potential_outcomes``.

    Heads work on the standardized scale and go through ``self.link`` (the same
    ``apply_link`` as HUM), so binary responses stay in (0, 1) and positive ones > 0.

    Args:
        cardinalities: ids per field (F), from the fitted encoder.
        n_treatments: K >= 1.
        links: per response (R), "identity" | "softplus" | "sigmoid".
        y_mean, y_std: (R,) training-split statistics of the responses.
        config: the subclass's config.
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_treatments: int,
        links: Sequence[str],
        y_mean: torch.Tensor,
        y_std: torch.Tensor,
        config: BaselineConfig,
    ) -> None:
        super().__init__()
        if n_treatments < 1:
            raise ValueError(f"n_treatments must be >= 1, got {n_treatments}")
        self.K = n_treatments
        self.R = len(links)
        self.links = list(links)
        # the response loss of each output; set by the estimator (hmum.nn.links)
        self.losses = ["mse"] * self.R
        self.config = config
        self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=torch.float32).clone())
        self.register_buffer("y_std", torch.as_tensor(y_std, dtype=torch.float32).clone())
        self.embed = FieldEmbedding(cardinalities, config.embed_dim)

    @property
    def input_dim(self) -> int:
        """Width F*d of the flattened embeddings."""
        return self.embed.n_fields * self.embed.dim

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded ids x (N, F) -> concatenated field embeddings (N, F*d)."""
        return self.embed(x).flatten(1)

    def link(self, z: torch.Tensor) -> torch.Tensor:
        """Raw head outputs z (..., R) on the standardized scale -> responses (..., R)."""
        return apply_link(z, self.links, self.y_mean, self.y_std)

    def standardize(self, y: torch.Tensor) -> torch.Tensor:
        """Responses (..., R) -> (y - mean) / std with the training statistics."""
        return (y - self.y_mean) / self.y_std

    def start_at_mean(self, bias: torch.Tensor, blocks: int = 1) -> None:
        """Set a last-layer bias so every head starts at the training mean.

        bias: the bias of a layer whose outputs are ``blocks`` groups of R raw
        responses, shape (blocks*R,) or (blocks, 1, R).
        """
        with torch.no_grad():
            b0 = link_bias(self.links, self.y_mean, self.y_std)
            bias.copy_(b0.repeat(blocks).reshape(bias.shape))

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded ids x (N, F) -> y_hat (N, K+1, R) in original units."""
        raise NotImplementedError


def factual_loss(y_hat: torch.Tensor, arm: torch.Tensor, y: torch.Tensor,
                 module: BaselineNet) -> torch.Tensor:
    """The loss of each row's received arm, summed over R.

    The model's response losses (``module.losses``: the paper's standardized squared
    error, or a deviance; ``hmum.nn.links``), as HUM's (eq. 5).

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
