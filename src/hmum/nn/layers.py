"""Building blocks shared by HUM and the baselines (forward only).

Shapes use DESIGN.md's letters: N rows, F fields, d embedding size, M experts,
R responses (tasks), B independent blocks (branches) run side by side.

``BlockLinear`` is the workhorse: B independent linear maps applied in one
batched matmul, so K branches (or K+1 per-arm networks) cost one kernel each
layer instead of a Python loop over branches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class FieldEmbedding(nn.Module):
    """One embedding table per feature field, stored as one table with offsets (eq. 1).

    Args:
        cardinalities: ids per field (length F), from the fitted encoder.
        dim: embedding size d.

    forward: x (N, F) int -> (N, F, d).
    """

    def __init__(self, cardinalities: Sequence[int], dim: int = 32) -> None:
        super().__init__()
        card = torch.as_tensor(list(cardinalities), dtype=torch.long)
        if card.numel() == 0 or (card < 1).any():
            raise ValueError(f"cardinalities must be >= 1 per field, got {list(cardinalities)}")
        offsets = torch.zeros_like(card)
        offsets[1:] = torch.cumsum(card, 0)[:-1]
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(int(card.sum()), dim)
        nn.init.normal_(self.table.weight, std=0.05)
        self.n_fields = card.numel()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table(x.long() + self.offsets)


class BlockLinear(nn.Module):
    """B independent linear maps, applied to B inputs at once.

    forward: x (B, ..., in_features) -> (B, ..., out_features).
    """

    def __init__(self, blocks: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(blocks, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(blocks, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.baddbmm(self.bias, x.reshape(shape[0], -1, shape[-1]), self.weight)
        return out.reshape(*shape[:-1], out.shape[-1])


class BlockMLP(nn.Module):
    """B independent MLPs (ReLU between layers, none after the last).

    forward: x (B, ..., in_features) -> (B, ..., sizes[-1]).
    """

    def __init__(self, blocks: int, in_features: int, sizes: Sequence[int]) -> None:
        super().__init__()
        dims = [in_features, *sizes]
        self.layers = nn.ModuleList(
            BlockLinear(blocks, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.relu()  # not relu_: in place on a view costs a CopySlices clone in backward
        return x


class MLP(nn.Module):
    """A plain MLP: ReLU between layers, none after the last. (N, in) -> (N, sizes[-1])."""

    def __init__(self, in_features: int, sizes: Sequence[int]) -> None:
        super().__init__()
        dims = [in_features, *sizes]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            mods.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                mods.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BlockMMoE(nn.Module):
    """B independent multi-gate mixture-of-experts blocks (eq. 4; Ma et al. 2018).

    Each block has M expert MLPs, one softmax gate per task (R tasks) over the
    experts, and one tower MLP per task ending in a scalar.

    forward: x (B, P, N, D) -> (out (B, P, N, R), gates (B, P, N, R, M)),
    where P counts passes sharing the block's parameters (HUM: treated, control).
    With ``context`` (B, P, Dc), the input is [x ; context] (D = Dx + Dc): a part of
    the input that is the same for every row of a pass (HUM's treatment embedding).
    ``gate_context`` (B, P, Dc), default ``context``, replaces it in the gates' input
    only (HUMConfig.gate_query).
    """

    def __init__(
        self,
        blocks: int,
        in_features: int,
        *,
        n_experts: int = 4,
        expert_sizes: Sequence[int] = (128, 64),
        n_tasks: int = 1,
        tower_sizes: Sequence[int] = (32,),
    ) -> None:
        super().__init__()
        if n_experts < 1 or n_tasks < 1:
            raise ValueError(f"need n_experts >= 1 and n_tasks >= 1, got {n_experts}, {n_tasks}")
        self.B, self.M, self.R = blocks, n_experts, n_tasks
        # all experts of all blocks in one batched MLP: blocks*M independent maps
        self.experts = BlockMLP(blocks * n_experts, in_features, expert_sizes)
        self.gates = BlockLinear(blocks, in_features, n_tasks * n_experts)
        self.towers = BlockMLP(blocks * n_tasks, expert_sizes[-1], [*tower_sizes, 1])

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None,
        gate_context: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        B, P, N, Dx = x.shape  # noqa: N806
        M, R = self.M, self.R
        first, *rest = self.experts.layers
        # (B*M, P*N, Dx): every expert of block b sees block b's input
        xe = x.reshape(B, 1, P * N, Dx).expand(B, M, P * N, Dx).reshape(B * M, P * N, Dx)
        if context is None:
            h, g_logits = first(xe), self.gates(x)
        else:
            # The input is [x ; context] with context constant over the N rows of a
            # (block, pass): its share of each first layer is computed once per pass,
            # not once per row. Same parameters, same function, fewer FLOPs.
            c = context.shape[-1]
            h = _split_linear(first, xe.view(B * M, P, N, Dx),
                              context.unsqueeze(1).expand(B, M, P, c).reshape(B * M, P, c))
            g_logits = _split_linear(self.gates, x,
                                     context if gate_context is None else gate_context)
        for layer in rest:  # ReLU between layers, none after the last (as BlockMLP)
            h = layer(h.relu())
        experts = h.reshape(B, M, P * N, -1)  # (B, M, P*N, E)
        gates = torch.softmax(g_logits.reshape(B, P, N, R, M), dim=-1)
        mixed = mix_experts(experts, gates.reshape(B, P * N, R, M))  # (B, R, P*N, E)
        out = self.towers(mixed.reshape(B * R, P * N, -1)).reshape(B, R, P, N)
        return out.permute(0, 2, 3, 1), gates


def _split_linear(layer: BlockLinear, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``layer`` applied to [x ; context] without building the concatenation.

    x (B, P, N, Dx), context (B, P, Dc) with Dx + Dc = layer's in_features
    -> (B, P, N, out) (as (B, P*N, out) when x came as (B, P*N, Dx) views).
    """
    B, P, N, Dx = x.shape  # noqa: N806
    w = layer.weight  # (B, Dx + Dc, out)
    shift = torch.baddbmm(layer.bias, context, w[:, Dx:])  # (B, P, out): once per pass
    out = torch.bmm(x.reshape(B, P * N, Dx), w[:, :Dx]).view(B, P, N, -1)
    return (out + shift.unsqueeze(2)).view(B, P * N, -1)


def mix_experts(experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sums of expert outputs.

    experts (B, M, n, E), gates (B, n, R, M) -> (B, R, n, E).
    A short loop of fused multiply-adds over the M experts on unbound views: the
    equivalent einsum becomes many tiny matmuls, and indexing ``experts[:, m]``
    makes autograd write a full-size zero tensor per index in the backward pass
    (both measured ~3x slower than this on CPU).
    """
    g = gates.permute(0, 2, 3, 1).unsqueeze(-1)  # (B, R, M, n, 1)
    per_expert = experts.unbind(1)
    outs = []
    for g_r in g.unbind(1):
        g_rm = g_r.unbind(1)
        o = per_expert[0] * g_rm[0]
        for m in range(1, len(per_expert)):
            o = torch.addcmul(o, per_expert[m], g_rm[m])
        outs.append(o)
    return torch.stack(outs, dim=1)


class FieldSelector(nn.Module):
    """Target attention over feature fields driven by a treatment embedding (eq. 2).

    Block b has its own W^b (F x d) and b^b (F); the attention vector is
    w = softmax(W^b e_t + b^b) over the F fields.

    * ``mode="sum"`` (eq. 2): the output is sum_f w_f e_f, one d-vector; with
      ``heads`` > 1, H such selectors run side by side and their outputs are
      concatenated (heads = 1 is exactly eq. 2). Output width H*d.
    * ``mode="fieldwise"``: each field embedding is scaled by F w_f (uniform
      weights scale by 1) and the F of them are concatenated, so the selector
      re-weights fields instead of squeezing them into one vector. Width H*F*d.

    forward: e_x (N, F, d) shared by every block and pass, or (B, P, n, F, d) one
    set of rows per (block, pass); e_t (B, P, d)
    -> (B, P, N, width), weights (B, P, H, F).
    """

    def __init__(self, blocks: int, n_fields: int, dim: int, heads: int = 1,
                 mode: str = "sum") -> None:
        super().__init__()
        if mode not in ("sum", "fieldwise"):
            raise ValueError(f"selector mode must be 'sum' or 'fieldwise', got {mode!r}")
        self.W = nn.Parameter(torch.randn(blocks, heads, n_fields, dim) * 0.05)
        self.b = nn.Parameter(torch.zeros(blocks, heads, n_fields))
        self.mode = mode
        self.width = heads * dim * (n_fields if mode == "fieldwise" else 1)

    def forward(self, e_x: torch.Tensor, e_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.einsum("bhfd,bpd->bphf", self.W, e_t) + self.b.unsqueeze(1)
        w = torch.softmax(logits, dim=-1)  # (B, P, H, F)
        B, P, H, F_ = w.shape  # noqa: N806
        d = e_x.shape[-1]
        shared = e_x.dim() == 3
        n = e_x.shape[0] if shared else e_x.shape[2]
        if self.mode == "fieldwise":
            scale = (w * F_).reshape(B, P, 1, H, F_, 1)
            ex = e_x.reshape(1, 1, n, 1, F_, d) if shared else e_x.unsqueeze(3)
            return (ex * scale).reshape(B, P, n, H * F_ * d), w
        if shared:
            # one (B*P*H, F) x (F, N*d) matmul; a broadcast matmul would copy e_x B*P*H times
            sel = torch.einsum("qf,nfd->qnd", w.reshape(B * P * H, F_), e_x)
            sel = sel.reshape(B, P, H, n, d).permute(0, 1, 3, 2, 4)
        else:
            sel = torch.einsum("bphf,bpnfd->bpnhd", w, e_x)
        return sel.reshape(B, P, n, H * d), w
