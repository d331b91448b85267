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
import torch.nn.functional as F  # noqa: N812
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
                x = x.relu_()  # in place: saves a full pass over the largest activation
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, P, N, D = x.shape  # noqa: N806
        M, R = self.M, self.R
        # (B*M, P*N, D): every expert of block b sees block b's input
        xe = x.reshape(B, 1, P * N, D).expand(B, M, P * N, D).reshape(B * M, P * N, D)
        experts = self.experts(xe).reshape(B, M, P * N, -1)  # (B, M, P*N, E)
        gates = torch.softmax(self.gates(x).reshape(B, P, N, R, M), dim=-1)
        mixed = mix_experts(experts, gates.reshape(B, P * N, R, M))  # (B, R, P*N, E)
        out = self.towers(mixed.reshape(B * R, P * N, -1)).reshape(B, R, P, N)
        return out.permute(0, 2, 3, 1), gates


def mix_experts(experts: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sums of expert outputs.

    experts (B, M, n, E), gates (B, n, R, M) -> (B, R, n, E).
    A short loop of fused multiply-adds over the M experts: the equivalent
    einsum becomes many tiny matmuls, about 2x slower forward and an order of
    magnitude slower backward on CPU.
    """
    g = gates.permute(0, 2, 3, 1).unsqueeze(-1)  # (B, R, M, n, 1)
    outs = []
    for r in range(g.shape[1]):
        o = experts[:, 0] * g[:, r, 0]
        for m in range(1, experts.shape[1]):
            o = torch.addcmul(o, experts[:, m], g[:, r, m])
        outs.append(o)
    return torch.stack(outs, dim=1)


class FieldSelector(nn.Module):
    """Target attention over feature fields driven by a treatment embedding (eq. 2).

    Block b has its own W^b (F x d) and b^b (F); the attention vector is
    softmax(W^b e_t + b^b) over the F fields and the output is the weighted sum
    of the field embeddings. With ``heads`` > 1, H such selectors run side by
    side and their outputs are concatenated (heads = 1 is exactly eq. 2).

    forward: e_x (N, F, d), e_t (B, P, d) -> (B, P, N, H*d), weights (B, P, H, F).
    """

    def __init__(self, blocks: int, n_fields: int, dim: int, heads: int = 1) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(blocks, heads, n_fields, dim) * 0.05)
        self.b = nn.Parameter(torch.zeros(blocks, heads, n_fields))

    def forward(self, e_x: torch.Tensor, e_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.einsum("bhfd,bpd->bphf", self.W, e_t) + self.b.unsqueeze(1)
        w = torch.softmax(logits, dim=-1)  # (B, P, H, F)
        B, P, H, F_ = w.shape  # noqa: N806
        N, _, d = e_x.shape  # noqa: N806
        # one (B*P*H, F) x (F, N*d) matmul; a broadcast matmul would copy e_x B*P*H times
        sel = torch.einsum("qf,nfd->qnd", w.reshape(B * P * H, F_), e_x)
        sel = sel.reshape(B, P, H, N, d).permute(0, 1, 3, 2, 4).reshape(B, P, N, H * d)
        return sel, w


def apply_link(z: torch.Tensor, links: Sequence[str], mean: torch.Tensor, std: torch.Tensor):
    """Map raw tower outputs z (..., R) to responses in original units (..., R).

    The towers work on the standardized scale: identity -> mean + std*z;
    softplus -> std*softplus(z) (always > 0); sigmoid -> sigmoid(z).
    """
    outs = []
    for r, link in enumerate(links):
        zr = z[..., r]
        if link == "identity":
            outs.append(mean[r] + std[r] * zr)
        elif link == "softplus":
            outs.append(std[r] * F.softplus(zr))
        elif link == "sigmoid":
            outs.append(torch.sigmoid(zr))
        else:
            raise ValueError(f"unknown link {link!r}")
    return torch.stack(outs, dim=-1)


def link_bias(links: Sequence[str], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Raw output that maps to the training mean under each link, shape (R,).

    Used to initialise the towers' last bias so training starts at the mean.
    """
    out = []
    for r, link in enumerate(links):
        if link == "identity":
            out.append(0.0)
        elif link == "softplus":
            v = max(float(mean[r] / std[r]), 1e-4)
            out.append(v + math.log(-math.expm1(-v)))  # inverse softplus
        else:
            p = min(max(float(mean[r]), 1e-4), 1 - 1e-4)
            out.append(math.log(p / (1 - p)))
    return torch.tensor(out)
