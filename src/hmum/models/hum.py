"""HUM: the Offline Hybrid Uplift Model of the HMUM paper (§4.1, eqs. 1-5).

Structure (B = K * branches_per_treatment branches; branch b serves treatment
t(b) in 1..K):

* eq. 1: field embeddings e_x (N, F, d) shared by all branches, and a treatment
  embedding table E_t with K+1 rows (row 0 = control).
* eq. 2-3: branch b selects fields with target attention driven by e_t and
  concatenates the result with e_t: f^b = [sum_j w^b(j) e_x,j ; e_t].
* eq. 4: branch b is an MMoE block (M experts, one softmax gate per response,
  one tower per response).
* Each branch runs twice with the same parameters: with e_t = E_t[t(b)] (the
  treated pass, -> y^b) and with e_t = E_t[0] (the control pass, -> y^{0,b},
  control-side gates z^{0,b}).

The loss (eq. 5) lives in ``hmum.training.losses``; this module only does forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hmum.models.layers import BlockMMoE, FieldEmbedding, FieldSelector, apply_link, link_bias


class HUMConfig(BaseModel):
    """Hyper-parameters of HUM (the only home of their defaults)."""

    model_config = ConfigDict(extra="forbid")

    embed_dim: int = Field(32, ge=1, description="embedding size d (paper: 32)")
    n_experts: int = Field(4, ge=1, description="experts M per MMoE block")
    expert_sizes: list[int] = Field(default_factory=lambda: [128, 64])
    tower_sizes: list[int] = Field(default_factory=lambda: [32])
    selector_heads: int = Field(1, ge=1, description="attention selectors per branch (1 = eq. 2)")
    branches_per_treatment: int | None = Field(
        None, ge=1, description="branches per treatment; None: 1 if K > 1, else 3 (paper §5.2.2)"
    )
    kl_weight: float = Field(1.0, ge=0.0, description="weight of the KL term; 0 = HUM w/o KL")

    def n_branches_per_treatment(self, n_treatments: int) -> int:
        if self.branches_per_treatment is not None:
            return self.branches_per_treatment
        return 1 if n_treatments > 1 else 3


class HUMOutput(NamedTuple):
    """Forward output of HUM, responses in original units.

    y_treated: (N, B, R) branch b's estimate under its treatment t(b).
    y_control: (N, B, R) branch b's estimate under no treatment, y^{0,b}.
    gate_control: (N, B, R, M) control-side gate distributions z^{0,b}.
    """

    y_treated: torch.Tensor
    y_control: torch.Tensor
    gate_control: torch.Tensor


class HUM(nn.Module):
    """The HUM network.

    Args:
        cardinalities: ids per feature field (F), from the fitted encoder.
        n_treatments: K >= 1.
        links: per response (R), "identity" | "softplus" | "sigmoid".
        y_mean, y_std: (R,) training-split statistics of the responses.
        config: HUMConfig.

    forward: x (N, F) int -> HUMOutput.
    """

    def __init__(
        self,
        cardinalities: Sequence[int],
        n_treatments: int,
        links: Sequence[str],
        y_mean: torch.Tensor,
        y_std: torch.Tensor,
        config: HUMConfig | None = None,
    ) -> None:
        super().__init__()
        cfg = config or HUMConfig()
        if n_treatments < 1:
            raise ValueError(f"n_treatments must be >= 1, got {n_treatments}")
        self.K = n_treatments
        self.R = len(links)
        self.links = list(links)
        bpt = cfg.n_branches_per_treatment(n_treatments)
        self.B = n_treatments * bpt
        self.register_buffer(
            "branch_treatment", torch.arange(1, n_treatments + 1).repeat_interleave(bpt)
        )
        self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=torch.float32).clone())
        self.register_buffer("y_std", torch.as_tensor(y_std, dtype=torch.float32).clone())
        d = cfg.embed_dim
        self.embed = FieldEmbedding(cardinalities, d)
        self.treatment_embed = nn.Embedding(n_treatments + 1, d)
        nn.init.normal_(self.treatment_embed.weight, std=0.05)
        self.selector = FieldSelector(self.B, self.embed.n_fields, d, cfg.selector_heads)
        self.mmoe = BlockMMoE(
            self.B,
            cfg.selector_heads * d + d,
            n_experts=cfg.n_experts,
            expert_sizes=cfg.expert_sizes,
            n_tasks=self.R,
            tower_sizes=cfg.tower_sizes,
        )
        with torch.no_grad():  # start every tower at the training mean
            last = self.mmoe.towers.layers[-1]
            last.bias.copy_(
                link_bias(self.links, self.y_mean, self.y_std).repeat(self.B).view(-1, 1, 1)
            )

    def forward(self, x: torch.Tensor) -> HUMOutput:
        e_x = self.embed(x)  # (N, F, d)
        n = e_x.shape[0]
        # (B, 2, d): pass 0 uses the branch's treatment, pass 1 the control embedding
        arms = torch.stack([self.branch_treatment, torch.zeros_like(self.branch_treatment)], 1)
        e_t = self.treatment_embed(arms)
        sel, _ = self.selector(e_x, e_t)  # (B, 2, N, H*d)
        f = torch.cat([sel, e_t.unsqueeze(2).expand(-1, -1, n, -1)], dim=-1)
        z, gates = self.mmoe(f)  # (B, 2, N, R), (B, 2, N, R, M)
        y = apply_link(z, self.links, self.y_mean, self.y_std)
        return HUMOutput(
            y_treated=y[:, 0].transpose(0, 1),
            y_control=y[:, 1].transpose(0, 1),
            gate_control=gates[:, 1].transpose(0, 1),
        )

    def potential_outcomes(self, out: HUMOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Aggregate branches: (y_hat (N, K+1, R), y0_branch (N, K, R)).

        y_hat[:, 0] is y0* = mean of the branches' control estimates (eq. 6);
        y_hat[:, k] is the mean treated estimate of treatment k's branches;
        y0_branch[:, k-1] is the mean control estimate of treatment k's branches.
        """
        n = out.y_treated.shape[0]
        bpt = self.B // self.K
        yt = out.y_treated.reshape(n, self.K, bpt, self.R).mean(2)
        y0b = out.y_control.reshape(n, self.K, bpt, self.R).mean(2)
        y0 = out.y_control.mean(1, keepdim=True)
        return torch.cat([y0, yt], dim=1), y0b
