"""What every baseline network shares: embeddings, response scaling, output links.

Shapes: N rows, F fields, d embedding size, K treatments, R responses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import ConfigDict, Field
from torch import nn

from hmum.models.layers import FieldEmbedding
from hmum.models.links import LossConfig, apply_link, link_bias


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
        # the response loss of each output; set by the estimator (hmum.models.links)
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
