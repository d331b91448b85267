"""Multi-task and explicit-uplift baselines: M³TN, EFIN, EUEN, FlexTENet, SNet (forward only).

Every network shares HUM's field embeddings and output links (``BaselineNet``)
and answers ``potential_outcomes(x) -> y_hat (N, K+1, R)``. Heads work on the
standardized scale (raw outputs z, mapped to responses by ``self.link``).

Shapes: N rows, F fields, d embedding size, D = F*d, K treatments, A = K+1 arms
(arm 0 = control), R responses, M experts.

Where a paper adds the treatment effect to a control prediction ("explicit
uplift": M³TN, EFIN, EUEN), the sum is taken on the raw standardized scale,
``z_k = z_0 + tau_k``, before the link: for an identity link this is exactly the
papers' y_k = y_0 + tau_k (in standardized units); for binary or positive
responses it keeps y_k inside the response's range instead of needing a clip.
The losses (and their penalty weights) live in ``hmum.models.multitask``.

Estimators and losses of M³TN, EFIN, EUEN, FlexTENet and SNet.

The networks are in ``hmum.models.multitask`` (their docstrings cite
the papers). Losses here are pure functions of tensors; every one starts from
the factual squared error on the standardized scale (``factual_loss``), as HUM's.

Shapes: N rows, K treatments, A = K+1 arms, R responses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field
from torch import nn

from hmum.models.baseline import BaselineConfig, BaselineEstimator, BaselineNet, factual_loss
from hmum.nn.layers import MLP, BlockLinear, BlockMLP, BlockMMoE

# --------------------------------------------------------------------------- M³TN


class M3TNConfig(BaselineConfig):
    """M³TN settings: experts use ``hidden_sizes``, towers ``head_sizes``."""

    n_experts: int = Field(4, ge=1, description="experts M of the MMoE (as HUM)")


class M3TN(BaselineNet):
    """M³TN: multi-gate mixture-of-experts multi-valued treatment network.

    Zexu Sun and Xu Chen, "M3TN: Multi-gate Mixture-of-Experts based Multi-valued
    Treatment Network for Uplift Modeling", ICASSP 2024.

    Feature representation module: one MMoE (Ma et al. 2018) over the flattened
    embeddings, with M shared experts and one softmax gate and one tower per
    task; the tasks are the control response and the uplift of each treatment.
    Reparameterization module: the control tower predicts z_0 and tower k the
    uplift tau_k explicitly, so the treated outcome is z_k = z_0 + tau_k (on
    the raw standardized scale, see the module docstring); the uplift is thus
    modelled directly rather than as the difference of two independent heads.
    Trained with the factual loss only (the paper adds no penalty). M defaults
    to 4 (HUM's value; the paper's is not given in its text).

    Extension to K treatments and R responses: native in K (one gate and tower
    per arm); for R responses each (arm, response) pair is its own MMoE task,
    i.e. (K+1)*R gates and towers over the same M experts.

    forward / potential_outcomes: x (N, F) int -> y_hat (N, K+1, R).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: M3TNConfig) -> None:
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        A, R = self.K + 1, self.R  # noqa: N806
        self.mmoe = BlockMMoE(
            1,
            self.input_dim,
            n_experts=config.n_experts,
            expert_sizes=config.hidden_sizes,
            n_tasks=A * R,
            tower_sizes=config.head_sizes,
        )
        # tasks are ordered (arm, response): the first R towers are the control ones;
        # they start at the training mean, the uplift towers at zero uplift
        self.start_at_mean(self.mmoe.towers.layers[-1].bias[:R])

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, F) -> (z_0 (N, R), tau (N, K, R)) on the standardized scale."""
        out, _ = self.mmoe(self.flat(x)[None, None])  # (1, 1, N, A*R)
        z = out[0, 0].reshape(-1, self.K + 1, self.R)
        return z[:, 0], z[:, 1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z0, tau = self.raw(x)
        return self.link(torch.cat([z0[:, None], z0[:, None] + tau], dim=1))

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


# --------------------------------------------------------------------------- EFIN


class EFINConfig(BaselineConfig):
    """EFIN settings: both towers use ``hidden_sizes + head_sizes``."""

    attention_dim: int = Field(32, ge=1, description="hidden size of the treatment-aware "
                               "attention scorer")
    constraint_weight: float = Field(
        1.0, ge=0.0, description="weight of the intervention-constraint (ITE balance) term"
    )


class EFINOutput(NamedTuple):
    y_hat: torch.Tensor  #: (N, K+1, R) potential outcomes
    tau: torch.Tensor  #: (N, K, R) raw standardized uplift of every treatment, every row
    attention: torch.Tensor  #: (N, K, F) treatment-aware attention over the fields


class EFIN(BaselineNet):
    """EFIN: explicit feature interaction-aware uplift network.

    Dugang Liu, Xing Tang, Han Gao, Fuyuan Lyu and Xiuqiang He, "Explicit
    Feature Interaction-aware Uplift Network for Online Marketing", KDD 2023.

    Four modules, as in the paper:

    1. Feature encoding: the F field embeddings (HUM's) and a learned
       embedding per treatment.
    2. Self-interaction (control response): scaled dot-product self-attention
       over the F field embeddings (one head, with a residual connection so the
       raw embeddings stay available), flattened, then the control tower ->
       z_0 (N, R), the user's natural response, from non-treatment features only.
    3. Treatment-aware interaction (uplift): the treatment embedding attends
       over the fields, alpha_{k,f} = softmax_f(h' ReLU(W_x e_f + W_t e_k + b)),
       the fields are re-weighted by F*alpha (uniform attention leaves them
       unchanged), flattened, joined with e_k and passed through the uplift
       tower -> tau_k (N, R). Outcome: z_k = z_0 + tau_k.
    4. Intervention constraint: the paper balances the distribution of the
       predicted ITE between the treatment and the control group. Our reading
       (the exact form is not reproduced here): tau_k is computed for every
       row, and the loss penalizes the difference between its mean over the
       rows of arm k and over the control rows (a linear-kernel MMD), weighted
       by ``constraint_weight`` (1.0: the paper's coefficient is not given in
       the material we had); see ``ite_balance_penalty``.

    Extension to K treatments and R responses: one treatment embedding per arm
    (the paper encodes treatment features, Table 1 of HMUM uses it with two
    treatments) and one uplift tower shared by all arms, run on the K
    treatment embeddings at once; both towers output R responses.

    forward: x (N, F) int -> EFINOutput(y_hat (N, K+1, R), tau (N, K, R), attention (N, K, F)).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: EFINConfig) -> None:
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        d, D, R = config.embed_dim, self.input_dim, self.R  # noqa: N806
        sizes = [*config.hidden_sizes, *config.head_sizes, R]
        # self-interaction
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.control_tower = MLP(D, sizes)
        # treatment-aware interaction
        self.treatment_embed = nn.Parameter(torch.randn(self.K, d) * 0.05)
        self.att_x = nn.Linear(d, config.attention_dim)
        self.att_t = nn.Linear(d, config.attention_dim, bias=False)
        self.att_h = nn.Linear(config.attention_dim, 1, bias=False)
        self.uplift_tower = MLP(D + d, sizes)
        self.start_at_mean(self.control_tower.net[-1].bias)
        with torch.no_grad():
            self.uplift_tower.net[-1].bias.zero_()

    def forward(self, x: torch.Tensor) -> EFINOutput:
        e = self.embed(x)  # (N, F, d)
        n, F_, d = e.shape
        # self-interaction -> control response
        att = torch.softmax(self.q(e) @ self.k(e).transpose(1, 2) / d**0.5, dim=-1)  # (N, F, F)
        z0 = self.control_tower((att @ self.v(e) + e).flatten(1))  # (N, R)
        # treatment-aware interaction, all K treatments at once
        et = self.treatment_embed  # (K, d)
        scores = self.att_h(torch.relu(self.att_x(e)[None] + self.att_t(et)[:, None, None]))
        alpha = torch.softmax(scores.squeeze(-1), dim=-1)  # (K, N, F)
        u = (alpha.unsqueeze(-1) * F_ * e[None]).flatten(2)  # (K, N, F*d)
        u = torch.cat([u, et[:, None].expand(-1, n, -1)], dim=-1)
        tau = self.uplift_tower(u).transpose(0, 1)  # (N, K, R)
        y_hat = self.link(torch.cat([z0[:, None], z0[:, None] + tau], dim=1))
        return EFINOutput(y_hat, tau, alpha.transpose(0, 1))

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).y_hat


# --------------------------------------------------------------------------- EUEN


class EUENConfig(BaselineConfig):
    """EUEN settings: control and uplift nets both use ``hidden_sizes + head_sizes``."""


class EUEN(BaselineNet):
    """EUEN: explicit uplift effect network (without its exposure part).

    Wenwei Ke, Chuanren Liu, Xiangfu Shi, Yiqiao Dai, Philip S. Yu and Xiaoqiang
    Zhu, "Addressing Exposure Bias in Uplift Modeling for Large-scale Online
    Advertising", IEEE ICDM 2021.

    A control network predicts the response without treatment, z_0, and a
    separate uplift network predicts the treatment effect u explicitly; the
    treated outcome is z_1 = z_0 + u, so treated rows train both nets and
    control rows only the control net. The paper's exposure-bias correction
    needs exposure labels (whether the ad was actually shown), which our
    experiment data do not have: that part is left out, and only the
    explicit-uplift structure is implemented.

    Extension to K treatments and R responses: the paper defines one treatment,
    so the estimator refuses K > 1 (the network itself would hold one uplift
    net per treatment); every net outputs R responses. Both nets run as one
    ``BlockMLP`` with 1 + K blocks.

    forward / potential_outcomes: x (N, F) int -> y_hat (N, K+1, R).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: EUENConfig) -> None:
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        sizes = [*config.hidden_sizes, *config.head_sizes, self.R]
        # block 0: control net; blocks 1..K: uplift nets
        self.nets = BlockMLP(self.K + 1, self.input_dim, sizes)
        bias = self.nets.layers[-1].bias  # (K+1, 1, R)
        self.start_at_mean(bias[:1])  # uplift biases stay at 0: training starts at no effect

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, F) -> (z_0 (N, R), u (N, K, R)) on the standardized scale."""
        h = self.flat(x)
        out = self.nets(h[None].expand(self.K + 1, -1, -1))  # (K+1, N, R)
        return out[0], out[1:].transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z0, u = self.raw(x)
        return self.link(torch.cat([z0[:, None], z0[:, None] + u], dim=1))

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


# ---------------------------------------------------------------------- FlexTENet


class FlexTENetConfig(BaselineConfig):
    """FlexTENet settings: every layer of ``hidden_sizes + head_sizes`` has that many
    shared units and as many private units per arm."""

    orthogonal_weight: float = Field(
        0.01, ge=0.0, description="weight of the shared/private orthogonality penalty"
    )


class FlexTENet(BaselineNet):
    """FlexTENet: flexible treatment-effect network with shared and private subspaces.

    Alicia Curth and Mihaela van der Schaar, "On Inductive Biases for
    Heterogeneous Treatment Effect Estimation", NeurIPS 2021.

    Every layer l has a shared part, h_s^l = ReLU(W_s^l h_s^{l-1}), and a
    private part per arm a, h_a^l = ReLU(W_a^l [h_s^{l-1}, h_a^{l-1}]) (the
    first private layers read the input only). The output of arm a is the sum
    of a shared and a private linear output layer,
    z_a = w_s' h_s^L + w_a' [h_s^L, h_a^L], so mu_0 and mu_1 share what they
    have in common and differ through the private subspaces. An orthogonality
    penalty, sum over layers and arms of ||W_s^l' W_a^l[shared rows]||_F^2,
    keeps the private subspaces from re-learning the shared one (weight
    ``orthogonal_weight``, 0.01 as in the authors' defaults as we read them).
    The authors' L2 penalty on all weights maps to the trainer's
    ``weight_decay`` (0 by default, as for every model here).

    Extension to K treatments and R responses: the paper defines one
    treatment, so the estimator refuses K > 1 (the private blocks are written
    for A = K+1 arms as ``BlockLinear`` blocks); each output layer gives R
    responses.

    forward / potential_outcomes: x (N, F) int -> y_hat (N, K+1, R).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: FlexTENetConfig) -> None:
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        A = self.K + 1  # noqa: N806
        dims = [self.input_dim, *config.hidden_sizes, *config.head_sizes]
        self.shared = nn.ModuleList(
            BlockLinear(1, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        # private layer l reads [h_s^{l-1}, h_a^{l-1}] (the input alone for l = 1)
        self.private = nn.ModuleList(
            BlockLinear(A, a if i == 0 else 2 * a, b)
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True))
        )
        self.out_shared = BlockLinear(1, dims[-1], self.R)
        self.out_private = BlockLinear(A, 2 * dims[-1], self.R)
        self.start_at_mean(self.out_shared.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        A = self.K + 1  # noqa: N806
        hs = self.flat(x)[None]  # (1, N, D)
        hp = None
        for shared, private in zip(self.shared, self.private, strict=True):
            s_in = hs.expand(A, -1, -1)
            hp = private(s_in if hp is None else torch.cat([s_in, hp], dim=-1)).relu()
            hs = shared(hs).relu()
        z = self.out_shared(hs) + self.out_private(torch.cat([hs.expand(A, -1, -1), hp], -1))
        return self.link(z.transpose(0, 1))  # (N, A, R)

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def orthogonal_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (output layer included): (W_s (in, out_s), W_p (A, in, out_p)),
        W_p being the rows of the private weights that read the shared input."""
        layers = [*zip(self.shared, self.private, strict=True),
                  (self.out_shared, self.out_private)]
        return [(s.weight[0], p.weight[:, : s.weight.shape[1]]) for s, p in layers]


# --------------------------------------------------------------------------- SNet


class SNetConfig(BaselineConfig):
    """SNet settings: every subspace is an MLP of ``hidden_sizes``; every head has
    ``head_sizes`` hidden layers."""

    propensity_weight: float = Field(1.0, ge=0.0, description="weight of the propensity loss")
    orthogonal_weight: float = Field(
        0.01, ge=0.0, description="weight of the orthogonality penalty between subspaces"
    )


class SNetOutput(NamedTuple):
    y_hat: torch.Tensor  #: (N, K+1, R) potential outcomes
    propensity_logits: torch.Tensor  #: (N, K+1) logits of the received arm


#: subspace order in SNet's block MLP; outcome-specific ones follow, one per arm
SNET_SUBSPACES = ("confounder", "outcome", "propensity")


class SNet(BaselineNet):
    """SNet: representation split into shared, outcome-specific and propensity subspaces.

    Alicia Curth and Mihaela van der Schaar, "Nonparametric Estimation of
    Heterogeneous Treatment Effects: From Theory to Learning Algorithms",
    AISTATS 2021.

    The input is encoded by 3 + A independent MLPs (one ``BlockMLP``):
    a confounder subspace c (used by the outcomes and the propensity), a
    shared outcome subspace o (both outcomes), a propensity-only subspace w,
    and one outcome-specific subspace m_a per arm. Arm a's head reads
    [c, o, m_a] -> z_a (N, R); the propensity head reads [c, w] -> logits
    (N, A). Loss (training module): factual error + ``propensity_weight`` *
    cross-entropy of the received arm + ``orthogonal_weight`` * sum of
    ||W_i' W_j||_F^2 over the first-layer weights of every pair of subspaces
    except two outcome-specific ones (which may use the same inputs). Every
    subspace has the same width (``hidden_sizes``) so they run as one block
    MLP (the authors' code, as we read it, makes the specific ones narrower).

    Extension to K treatments and R responses: the paper defines one
    treatment, so the estimator refuses K > 1 (the network is written for
    A = K+1 arms: one outcome-specific subspace and head per arm, an A-way
    propensity head); heads output R responses.

    forward: x (N, F) int -> SNetOutput(y_hat (N, K+1, R), propensity_logits (N, K+1)).
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std,
                 config: SNetConfig) -> None:
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        A = self.K + 1  # noqa: N806
        self.n_subspaces = len(SNET_SUBSPACES) + A
        self.reps = BlockMLP(self.n_subspaces, self.input_dim, config.hidden_sizes)
        H = config.hidden_sizes[-1]  # noqa: N806
        self.heads = BlockMLP(A, 3 * H, [*config.head_sizes, self.R])
        self.propensity = MLP(2 * H, [*config.head_sizes, A])
        self.start_at_mean(self.heads.layers[-1].bias, blocks=A)

    def forward(self, x: torch.Tensor) -> SNetOutput:
        A = self.K + 1  # noqa: N806
        h = self.flat(x)
        # ReLU on every subspace's output (BlockMLP has none after its last layer)
        r = self.reps(h[None].expand(self.n_subspaces, -1, -1)).relu()  # (S, N, H)
        c, o, w, m = r[0], r[1], r[2], r[3:]
        head_in = torch.cat([c[None].expand(A, -1, -1), o[None].expand(A, -1, -1), m], -1)
        z = self.heads(head_in).transpose(0, 1)  # (N, A, R)
        return SNetOutput(self.link(z), self.propensity(torch.cat([c, w], -1)))

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).y_hat

    def orthogonal_pairs(self) -> list[tuple[int, int]]:
        """Pairs (i, j), i < j, of subspaces the orthogonality penalty separates."""
        S, first_specific = self.n_subspaces, len(SNET_SUBSPACES)  # noqa: N806
        return [(i, j) for i in range(S) for j in range(i + 1, S)
                if not (i >= first_specific and j >= first_specific)]

    def first_layer_weights(self) -> torch.Tensor:
        """(S, D, H1): every subspace's first-layer weights."""
        return self.reps.layers[0].weight


__all__ = [
    "EFIN", "EFINConfig", "EFINOutput", "EUEN", "EUENConfig", "FlexTENet",
    "FlexTENetConfig", "M3TN", "M3TNConfig", "SNet", "SNetConfig", "SNetOutput",
]


# --------------------------------------------------------------------------- losses


def ite_balance_penalty(tau: torch.Tensor, arm: torch.Tensor) -> torch.Tensor:
    """EFIN's intervention constraint, as we implement it (see ``EFIN``).

    For each treatment k, the predicted uplift tau_k (computed for every row)
    should have the same distribution in the rows that received k as in the
    control rows; we penalize the squared difference of the two group means,
    summed over R and averaged over the treatments present in the batch
    (a treatment, or the control, absent from the batch contributes 0).

    tau (N, K, R) on the standardized scale, arm (N,) in [0, K] -> scalar.
    """
    K = tau.shape[1]  # noqa: N806
    onehot = F.one_hot(arm.long(), K + 1).to(tau.dtype)  # (N, K+1)
    counts = onehot.sum(0)  # (K+1,)
    # mean of tau_k over the rows of arm a, for every (a, k): (K+1, K, R)
    means = torch.einsum("na,nkr->akr", onehot, tau) / counts.clamp(min=1)[:, None, None]
    k = torch.arange(K, device=tau.device)
    diff = means[k + 1, k] - means[0]  # (K, R): group k vs control, for tau_k
    present = ((counts[1:] > 0) & (counts[0] > 0)).to(tau.dtype)  # (K,)
    return (present * (diff**2).sum(-1)).sum() / present.sum().clamp(min=1)


def orthogonality_penalty(pairs) -> torch.Tensor:
    """FlexTENet's penalty: sum over (W_s, W_p) of sum_a ||W_s' W_p[a]||_F^2.

    pairs: iterable of (W_s (I, S), W_p (A, I, P)) -> scalar; 0 exactly when
    every private column is orthogonal to every shared one.
    """
    return sum(torch.einsum("is,aip->asp", ws, wp).pow(2).sum() for ws, wp in pairs)


def subspace_orthogonality_penalty(weights: torch.Tensor, pairs) -> torch.Tensor:
    """SNet's penalty: sum over subspace pairs (i, j) of ||W_i' W_j||_F^2.

    weights (S, D, H) first-layer weights of S subspaces; pairs: (i, j) indices -> scalar.
    """
    idx = torch.as_tensor(list(pairs), dtype=torch.long, device=weights.device)
    if idx.numel() == 0:
        return weights.new_zeros(())
    return torch.einsum("pdh,pdg->phg", weights[idx[:, 0]], weights[idx[:, 1]]).pow(2).sum()


# ----------------------------------------------------------------------- estimators


class M3TNEstimator(BaselineEstimator):
    """M³TN (Sun & Chen, ICASSP 2024); multi-treatment native. Factual loss only."""

    model_type = "m3tn"
    config_class = M3TNConfig
    network_class = M3TN


class EFINEstimator(BaselineEstimator):
    """EFIN (Liu et al., KDD 2023), K treatments through one embedding per arm.

    Loss: factual MSE + ``constraint_weight`` * ``ite_balance_penalty``.
    """

    model_type = "efin"
    config_class = EFINConfig
    network_class = EFIN

    def _loss(self, module: EFIN, batch):
        x, arm, y = batch
        out = module(x)
        mse = factual_loss(out.y_hat, arm, y, module).mean()
        bal = ite_balance_penalty(out.tau, arm)
        loss = mse + module.config.constraint_weight * bal
        return loss, {"mse": float(mse.detach()), "ite_balance": float(bal.detach())}


class EUENEstimator(BaselineEstimator):
    """EUEN (Ke et al., ICDM 2021) without the exposure part; one treatment only."""

    model_type = "euen"
    config_class = EUENConfig
    network_class = EUEN
    max_treatments = 1


class FlexTENetEstimator(BaselineEstimator):
    """FlexTENet (Curth & van der Schaar, NeurIPS 2021); one treatment only.

    Loss: factual MSE + ``orthogonal_weight`` * ``orthogonality_penalty``.
    """

    model_type = "flextenet"
    config_class = FlexTENetConfig
    network_class = FlexTENet
    max_treatments = 1

    def _loss(self, module: FlexTENet, batch):
        x, arm, y = batch
        mse = factual_loss(module(x), arm, y, module).mean()
        ortho = orthogonality_penalty(module.orthogonal_pairs())
        loss = mse + module.config.orthogonal_weight * ortho
        return loss, {"mse": float(mse.detach()), "orthogonal": float(ortho.detach())}


class SNetEstimator(BaselineEstimator):
    """SNet (Curth & van der Schaar, AISTATS 2021); one treatment only.

    Loss: factual MSE + ``propensity_weight`` * cross-entropy of the received
    arm + ``orthogonal_weight`` * ``subspace_orthogonality_penalty``.
    """

    model_type = "snet"
    config_class = SNetConfig
    network_class = SNet
    max_treatments = 1

    def _loss(self, module: SNet, batch):
        x, arm, y = batch
        out = module(x)
        cfg = module.config
        mse = factual_loss(out.y_hat, arm, y, module).mean()
        prop = F.cross_entropy(out.propensity_logits, arm.long())
        ortho = subspace_orthogonality_penalty(module.first_layer_weights(),
                                               module.orthogonal_pairs())
        loss = mse + cfg.propensity_weight * prop + cfg.orthogonal_weight * ortho
        return loss, {"mse": float(mse.detach()), "propensity": float(prop.detach()),
                      "orthogonal": float(ortho.detach())}
