"""The value-weight model of DDM (paper §4.2.2, eqs. 8-10): forward only.

Input s_i of one request: for every item field f, the codes of the request's L
candidates (``cand``, (N, Fc, L)) and of the user's Lr recent interacted items
(``recent``, (N, Fr, Lr)). Each of the J = Fc + Fr (group, field) pairs is one
field j of eq. 8 with its own embedding table; its L^j embeddings are averaged,
the J averages are concatenated, and an MMoE (M experts, a softmax gate and a
tower per response) predicts o_hat (N, R), the share of exposed items of each
response type (eq. 9). The value weights w = o_hat / sum(o_hat) (eq. 10) are
computed by :func:`hmum.decision.core.value_weights` (also inside the exported
ONNX graph, see :class:`ValueWeightGraph`).

Average pooling as a histogram: the mean of the embeddings of L codes equals
sum_c (n_c / L) E[c], n_c the number of items with code c. Item fields have a
few dozen codes, so the model counts codes with one scatter-add (N, C) and
multiplies by the tables, instead of gathering and averaging (N, L, J, d)
embeddings: identical result, ~L/J times less memory in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hmum.decision.core import value_weights
from hmum.models.layers import BlockMMoE, FieldEmbedding


class ValueWeightConfig(BaseModel):
    """Hyper-parameters of the value-weight model (the only home of their defaults)."""

    model_config = ConfigDict(extra="forbid")

    embed_dim: int = Field(32, ge=1, description="embedding size d_s (paper: 32)")
    n_experts: int = Field(4, ge=1, description="experts M of the MMoE")
    expert_sizes: list[int] = Field(default_factory=lambda: [64, 32])
    tower_sizes: list[int] = Field(default_factory=lambda: [16])
    link: Literal["sigmoid", "identity"] = Field(
        "sigmoid",
        description="tower output link: sigmoid keeps o_hat in (0, 1) like the labels; "
        "identity is the paper's plain regression output (negatives are clipped in eq. 10)",
    )


class ValueWeightModel(nn.Module):
    """MMoE over average-pooled request-level item embeddings (eqs. 8-9).

    Args:
        cand_cardinalities: codes per candidate field (Fc), i.e. max code + 1 seen
            in training. One extra out-of-range bucket per field is added here:
            codes < 0 or >= cardinality map to it.
        recent_cardinalities: the same for the recent-item fields (Fr).
        n_responses: R (one tower each).
        config: ValueWeightConfig.
        label_mean: (R,) mean training label; the towers start there.

    forward: cand (N, Fc, L) int, recent (N, Fr, Lr) int -> o_hat (N, R).
    """

    def __init__(
        self,
        cand_cardinalities: Sequence[int],
        recent_cardinalities: Sequence[int],
        n_responses: int,
        config: ValueWeightConfig | None = None,
        label_mean: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        cfg = config or ValueWeightConfig()
        if n_responses < 1:
            raise ValueError(f"n_responses must be >= 1, got {n_responses}")
        cards = [*cand_cardinalities, *recent_cardinalities]
        if not cand_cardinalities or any(int(c) < 1 for c in cards):
            raise ValueError(
                f"need >= 1 candidate field and cardinalities >= 1, got cand "
                f"{list(cand_cardinalities)}, recent {list(recent_cardinalities)}"
            )
        self.Fc, self.Fr = len(cand_cardinalities), len(recent_cardinalities)
        self.J, self.R, self.link = len(cards), n_responses, cfg.link
        d = cfg.embed_dim
        # +1: the out-of-range bucket of every field
        self.embed = FieldEmbedding([int(c) + 1 for c in cards], d)
        card = torch.tensor([int(c) for c in cards], dtype=torch.long)
        self.register_buffer("card", card, persistent=False)
        total = int(card.sum() + len(cards))
        # field_of[c, j] = 1 when table row c belongs to field j: spreads the tables
        # into a block layout so that one matmul pools and concatenates all fields
        field_of = torch.zeros(total, self.J)
        field_of[torch.arange(total), torch.repeat_interleave(torch.arange(self.J), card + 1)] = 1
        self.register_buffer("field_of", field_of, persistent=False)
        self.n_codes = total
        self.mmoe = BlockMMoE(
            1,
            self.J * d,
            n_experts=cfg.n_experts,
            expert_sizes=cfg.expert_sizes,
            n_tasks=n_responses,
            tower_sizes=cfg.tower_sizes,
        )
        if label_mean is not None:
            m = torch.as_tensor(list(label_mean), dtype=torch.float32)
            if cfg.link == "sigmoid":
                m = torch.logit(m.clamp(1e-3, 1 - 1e-3))
            with torch.no_grad():  # start every tower at the mean label
                self.mmoe.towers.layers[-1].bias.copy_(m.view(-1, 1, 1))

    def _codes(self, x: torch.Tensor, card: torch.Tensor, offsets: torch.Tensor):
        """x (N, F, L) -> flat table rows (N, F*L), out-of-range codes -> the bucket."""
        x = x.long()
        card = card.view(1, -1, 1)
        x = torch.where((x < 0) | (x >= card), card, x)
        return (x + offsets.view(1, -1, 1)).flatten(1)

    def pooled(self, cand: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
        """e* (N, J*d) of eq. 8: per-field mean embeddings, concatenated."""
        fc = self.Fc
        off = self.embed.offsets
        idx = self._codes(cand, self.card[:fc], off[:fc])
        if self.Fr:
            idx = torch.cat([idx, self._codes(recent, self.card[fc:], off[fc:])], dim=1)
        counts = torch.zeros(idx.shape[0], self.n_codes, dtype=torch.float32, device=idx.device)
        counts = counts.scatter_add(1, idx, torch.ones_like(idx, dtype=torch.float32))
        # each field's counts sum to its L^j: dividing makes the pool a mean (eq. 8)
        # without reading L from a shape, so the exported graph accepts any L
        n_items = counts @ self.field_of  # (N, J)
        w = self.embed.table.weight  # (C, d)
        spread = (w.unsqueeze(1) * self.field_of.unsqueeze(2)).flatten(1)  # (C, J*d)
        pooled = (counts @ spread).view(-1, self.J, w.shape[1])
        return (pooled / n_items.clamp(min=1).unsqueeze(2)).flatten(1)

    def forward(self, cand: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
        e = self.pooled(cand, recent)
        z, _ = self.mmoe(e.unsqueeze(0).unsqueeze(0))  # (1, 1, N, R)
        z = z[0, 0]
        return torch.sigmoid(z) if self.link == "sigmoid" else z


class ValueWeightGraph(nn.Module):
    """What runs per request: (cand, recent) -> (o_hat (N, R), w (N, R)) (eqs. 8-10).

    The same function as a trained ValueWeightModel followed by the
    clip-and-normalize step of eq. 10, with the MMoE rearranged for serving and
    export: every layer of the M experts and of the R towers as one matmul
    (weights side by side or block-diagonal), and reshapes that keep N as the
    only free dimension. Same parameters, no copies; the exported ONNX graph
    then has a fraction of the shape bookkeeping nodes that the training
    layout (built for B blocks and P passes) produces, which dominate the
    latency of a single request.
    """

    def __init__(self, model: ValueWeightModel) -> None:
        super().__init__()
        self.model = model
        # Out-of-range codes by lookup instead of compare-and-select (which dominates
        # the ONNX Runtime time of one request): clip every code to [-1, C] (C the
        # largest cardinality; scalar bounds), then rows[j, code + 1] is field j's
        # table row for that code, its bucket for -1 and for codes >= its cardinality.
        card = model.card
        c_max = int(card.max())
        codes = torch.arange(-1, c_max + 1)  # (C + 2,)
        valid = (codes[None, :] >= 0) & (codes[None, :] < card[:, None])
        rows = model.embed.offsets[:, None] + torch.where(valid, codes[None, :], card[:, None])
        self.register_buffer("rows", rows.reshape(-1), persistent=False)  # (J * (C + 2),)
        base = torch.arange(model.J) * (c_max + 2) + 1  # +1: code -1 sits in column 0
        self.register_buffer("base", base.view(1, -1, 1), persistent=False)
        self.c_max = c_max

    def _mmoe(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) -> raw tower outputs (N, R); BlockMMoE with B = P = 1.

        The M experts (and the R towers) are side-by-side MLPs: each layer is one
        matmul with the experts' weights side by side (first layer) or on a block
        diagonal (later layers). The block-diagonal matrices are built from the
        parameters on every call; an exported graph folds them into constants.
        """
        mm = self.model.mmoe
        m, r = mm.M, mm.R
        first, *rest = mm.experts.layers  # BlockLinear(M, ...): weight (M, in, out)
        w0 = first.weight
        h = x @ w0.permute(1, 0, 2).reshape(w0.shape[1], -1) + first.bias.reshape(1, -1)
        for layer in rest:  # ReLU between layers, none after the last (as BlockMLP)
            h = h.relu() @ _block_diag(layer.weight) + layer.bias.reshape(1, -1)
        e_size = (rest[-1].weight if rest else w0).shape[2]
        experts = h.reshape(-1, m, e_size)  # (N, M, E)
        g = mm.gates  # BlockLinear(1, D, R*M): logits ordered (task, expert)
        gates = torch.softmax((x @ g.weight[0] + g.bias[0]).reshape(-1, r, m), dim=-1)
        t = torch.matmul(gates, experts).reshape(-1, r * e_size)  # (N, R*E)
        towers = mm.towers.layers  # BlockLinear(R, ...)
        for i, layer in enumerate(towers):
            t = t @ _block_diag(layer.weight) + layer.bias.reshape(1, -1)
            if i < len(towers) - 1:
                t = t.relu()
        return t  # (N, R): the last tower layer has one output per task

    def _pool(self, cand: torch.Tensor, recent: torch.Tensor) -> torch.Tensor:
        """e* (N, J*d) of eq. 8 by lookup and mean: for one request (or a few),
        L*J lookups cost less than building the (N, C) histogram, and the graph
        stays small; the training layout's histogram gives the same numbers."""
        m = self.model
        table = m.embed.table.weight
        parts = []
        for x, sl in ((cand, slice(0, m.Fc)), (recent, slice(m.Fc, m.J))):
            if sl.stop == sl.start:
                continue
            idx = self.rows[x.long().clamp(-1, self.c_max) + self.base[:, sl]]
            parts.append(table[idx].mean(dim=2))  # (N, F, d)
        return torch.cat(parts, dim=1).reshape(-1, m.J * table.shape[1])

    def forward(self, cand: torch.Tensor, recent: torch.Tensor):
        z = self._mmoe(self._pool(cand, recent))
        o_hat = torch.sigmoid(z) if self.model.link == "sigmoid" else z
        return o_hat, value_weights(o_hat)


def _block_diag(w: torch.Tensor) -> torch.Tensor:
    """(B, in, out) -> (B*in, B*out): block b of the diagonal is w[b]."""
    b, i, o = w.shape
    eye = torch.eye(b, dtype=w.dtype, device=w.device)
    return (eye[:, None, :, None] * w[:, :, None, :]).reshape(b * i, b * o)
