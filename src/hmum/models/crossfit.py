"""Cross-fit members and reliability shrinkage of the uplift (``TrainerConfig.crossfit``).

At the 1 % effects of real A/B tests most of a network's uplift heterogeneity is
noise: the difference of two fitted outcome surfaces wanders wherever the sample
happened to push it, so the estimated uplift is *over-spread* (its spread exceeds
the truth's) and PEHE can be worse than predicting the average effect for everyone.
How much of the spread is signal can be measured without ground truth: fit M >= 2
*members* of the same network on disjoint folds of the training rows. Their uplift
estimates u_j = s + e_j share the reproducible part s and have independent noise
e_j, so on held-out users (the validation rows, seen by no member)

    C     = mean_{i != j} Cov(u_i, u_j)          ~ Var(s)
    V     = Var(u_bar),  u_bar = mean_j u_j      ~ Var(s) + Var(e) / M
    alpha = clip(C / V, 0, 1)                    (the reliability of u_bar)

and the prediction is the best linear predictor of s from u_bar,

    u~ = c + alpha (u_bar - c),    c = mean of u_bar over the same users,

per (treatment, response). For a response whose link is positive (softplus, exp,
sigmoid) u is the log ratio log(y^k / y^0) and y~^k = y^0 exp(u~): the level y^0,
which the network learns well, keeps scaling the uplift, and only the relative part
is shrunk; otherwise u = y^k - y^0 and y~^k = y^0 + u~. y^0 is the members' mean.
With strong effects alpha is near 1 and nothing changes; with weak ones it pulls
the noise toward the average effect. The members train together in one loop, each
on its fold's rows of every batch (a row's fold is a seeded hash of its contents), so
the cost is about one network's.

Shapes: member outcomes y (M, N, K+1, R); u (M, N, K, R); center, alpha (K, R);
ratio (R,) bool; fold (N,) int64 in [0, M).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hmum.data.split import combine_digests, hash_uniform

#: links whose outputs are always > 0, so the uplift is shrunk as a log ratio
POSITIVE_LINKS = ("softplus", "exp", "sigmoid")
_FOLD_STREAM = 7


def fold_ids(rows: tuple[torch.Tensor, ...], members: int, seed: int) -> torch.Tensor:
    """(N,) int64 fold of every row of ``rows`` (x (N, F) int ids, arm (N,), y (N, R)):
    a seeded hash of the row's contents, so a row lands in the same fold whatever the
    order, the split or the data-parallel worker it comes with."""
    cols = [c.numpy() for c in rows]
    digests = [c.astype(np.uint64) for c in cols[0].T]  # feature ids
    digests.append(cols[1].astype(np.uint64))
    digests += [c.view(np.uint32).astype(np.uint64)  # the responses' float32 bits
                for c in np.ascontiguousarray(cols[2].astype(np.float32).T)]
    u = hash_uniform(combine_digests(digests), seed, stream=_FOLD_STREAM)
    return torch.from_numpy(np.minimum((u * members).astype(np.int64), members - 1))


class CrossFitModule(nn.Module):
    """M member networks and the fitted shrinkage (buffers, saved with the weights).

    ``members``: M networks of one architecture; ``ratio`` (R,) bool: shrink the log
    ratio (positive link) or the difference. ``center`` / ``alpha`` (K, R) start at
    0 / 1 (no shrinkage) and are set by ``set_shrinkage`` after training.
    """

    def __init__(self, members: list[nn.Module], ratio: list[bool], n_treatments: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        r = len(ratio)
        self.register_buffer("ratio", torch.tensor(ratio, dtype=torch.bool))
        self.register_buffer("center", torch.zeros(n_treatments, r, dtype=torch.float64))
        self.register_buffer("alpha", torch.ones(n_treatments, r, dtype=torch.float64))

    # the estimator reads these from whichever module it holds
    @property
    def links(self):
        return self.members[0].links

    @property
    def losses(self):
        return self.members[0].losses

    @losses.setter
    def losses(self, value) -> None:
        for m in self.members:
            m.losses = value

    def uplift_scale(self, y: torch.Tensor) -> torch.Tensor:
        """u (..., K, R) from outcomes y (..., K+1, R): log ratio or difference per response."""
        y = y.double()
        y0, yk = y[..., :1, :], y[..., 1:, :]
        return torch.where(self.ratio, torch.log(yk.clamp_min(1e-300) / y0.clamp_min(1e-300)),
                           yk - y0)

    def set_shrinkage(self, center: np.ndarray, alpha: np.ndarray) -> None:
        self.center.copy_(torch.as_tensor(center, dtype=torch.float64))
        self.alpha.copy_(torch.as_tensor(alpha, dtype=torch.float64))

    def combine(self, outs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One member's ``_outcomes`` dict per member -> the ensemble's: y_hat (n, K+1, R)
        with the shrunk uplift; every other output is the members' mean."""
        ys = torch.stack([o["y_hat"] for o in outs])  # (M, n, K+1, R)
        y0 = ys[:, :, :1].double().mean(0)  # (n, 1, R)
        u = self.uplift_scale(ys).mean(0)  # (n, K, R)
        u = self.center + self.alpha * (u - self.center)
        yk = torch.where(self.ratio, y0 * torch.exp(u), y0 + u)
        out = {k: torch.stack([o[k] for o in outs]).mean(0) for k in outs[0] if k != "y_hat"}
        out["y_hat"] = torch.cat([y0, yk], dim=1).to(ys.dtype)
        return out


#: the fold of rows that no member trains on (validation): every member scores all of them
EVERY_MEMBER = -1


def member_loss(loss_fn):
    """A loss over (x, arm, y, fold) batches from a member loss over (x, arm, y): each
    member is scored on its fold's rows, the losses weighted by their row counts (the
    mean over the batch); rows of fold ``EVERY_MEMBER`` count for every member, each
    member's loss weighted 1 / M. A member with no row in the batch adds 0 x its loss on
    the whole batch, so its parameters still take part (data-parallel training needs it)."""
    def loss(module: CrossFitModule, batch):
        x, arm, y, fold = batch
        n = x.shape[0]
        total, logs = 0.0, {}
        shared = fold == EVERY_MEMBER
        for j, member in enumerate(module.members):
            rows = ((fold == j) | shared).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                part, _ = loss_fn(member, (x, arm, y))
                total = total + 0.0 * part
                continue
            part, part_logs = loss_fn(member, (x[rows], arm[rows], y[rows]))
            share = (rows.numel() - (1 - 1 / len(module.members)) * int(shared.sum())) / n
            total = total + share * part
            for k, v in part_logs.items():
                logs[k] = logs.get(k, 0.0) + share * float(v)
        return total, logs
    return loss


def reliability_moments(u: np.ndarray) -> dict[str, np.ndarray]:
    """Sufficient statistics of member uplifts u (M, N, K, R): {"n", "s1" (M, K, R),
    "s2" (M, M, K, R)} (sums, float64); moments of several workers add up."""
    u = np.asarray(u, dtype=np.float64)
    return {"n": np.array(float(u.shape[1])), "s1": u.sum(1),
            "s2": np.einsum("inkr,jnkr->ijkr", u, u)}


def shrinkage(moments: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(center (K, R), alpha (K, R)) from ``reliability_moments`` (see the module docstring)."""
    n, s1, s2 = float(moments["n"]), moments["s1"], moments["s2"]
    m = s1.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"reliability needs >= 2 members and >= 2 rows, got {m} and {n:g}")
    mean = s1 / n  # (M, K, R)
    cov = s2 / n - np.einsum("ikr,jkr->ijkr", mean, mean)  # (M, M, K, R)
    center = mean.mean(0)
    var_bar = cov.sum((0, 1)) / m**2
    off = (cov.sum((0, 1)) - np.einsum("iikr->kr", cov)) / (m * (m - 1))
    # a spread at rounding level is a constant uplift: nothing to shrink
    spread = var_bar > 1e-10 * center**2 + 1e-300
    alpha = np.where(spread, np.clip(off / np.where(spread, var_bar, 1.0), 0.0, 1.0), 0.0)
    return center, alpha
