"""Generative baselines (forward only): CEVAE (a variational autoencoder) and GANITE (GANs).

Both papers define one binary treatment; their estimators
(``hmum.models.generative``) refuse K > 1. The networks below are
written over A = K + 1 arms (categorical treatment, one head per arm) only
because that is no more code than the binary case; with K = 1 they are exactly
the papers' models.

Shapes: N rows, F fields, d embedding size, A = K + 1 arms (arm 0 = control),
R responses, L latent size (CEVAE).

Estimators and losses of the generative baselines: CEVAE and GANITE (one treatment each).

Likelihoods of the responses (shared with DESCN): a Gaussian with unit variance on
the standardized scale for continuous and count responses (negative log
likelihood 0.5 * ((mean - y) / std)^2, the factual squared error of the other
baselines up to the factor), a Bernoulli for binary ones.

Shapes: N rows, F fields, A = K + 1 arms, R responses, L latent size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field
from torch import nn

from hmum.models.baseline import BaselineConfig, BaselineEstimator, BaselineNet, pick_arm
from hmum.nn.layers import MLP, BlockMLP
from hmum.nn.links import apply_link, deviance


def binary_mask(links: Sequence[str]) -> torch.Tensor:
    """(R,) bool: which responses are binary (sigmoid link, Bernoulli likelihood)."""
    return torch.tensor([lk == "sigmoid" for lk in links], dtype=torch.bool)


def _per_arm(x: torch.Tensor, arms: int) -> torch.Tensor:
    """(N, D) -> (A, N, D): the same input for each arm's block of a BlockMLP."""
    return x.unsqueeze(0).expand(arms, *x.shape)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-scale`` backward (Ganin & Lempitsky 2015).

    Lets one optimizer play a minimax game: a discriminator after this layer
    minimizes its loss while everything before it receives the reversed
    gradient, i.e. maximizes that loss.
    """
    return _Reverse.apply(x, scale)


# ---------------------------------------------------------------------------------------------
# CEVAE
# ---------------------------------------------------------------------------------------------
class CEVAEConfig(BaselineConfig):
    """CEVAE settings (Louizos et al. 2017): latent size 20, plain ELBO plus the
    auxiliary log-likelihoods of q(t|x) and q(y|x,t), all with weight 1."""

    latent_dim: int = Field(20, ge=1, description="size L of the latent confounder z (paper: 20)")
    kl_weight: float = Field(1.0, ge=0.0, description="weight of KL(q(z|x,t,y) || N(0, I))")
    aux_weight: float = Field(
        1.0, ge=0.0, description="weight of the auxiliary terms log q(t|x) + log q(y|x,t)"
    )
    predict_z: Literal["marginal", "per_arm"] = Field(
        "marginal",
        description="z at prediction: 'marginal' = mean of the paper's q(z|x) = sum_t q(t|x) "
        "q(z|x,t,y_t), one z for every arm; 'per_arm' = arm a uses the mean of q(z|x,t=a,y_a)",
    )


class CEVAE(BaselineNet):
    """Causal Effect Variational Autoencoder.

    Louizos, Shalit, Mooij, Sontag, Zemel, Welling, "Causal Effect Inference with
    Deep Latent-Variable Models", NeurIPS 2017.

    A latent confounder z explains the features x, the treatment t and the outcome y.
    Generative model (decoder): p(z) = N(0, I), p(x|z), p(t|z), p(y|t,z). Inference
    model (encoder): q(z|x,t,y) = N(mu, diag(sigma^2)) and, for rows whose t and y are
    unknown (prediction), the auxiliary q(t|x) and q(y|x,t). Outcome networks are
    TARNet-shaped as in the paper: a shared trunk and one head per arm.

    Our x is categorical (encoded field ids; numeric fields are quantile bins), so
    p(x|z) is a product of categorical distributions, one per field: the decoder
    maps z to a query vector per field, and its logits over the field's vocabulary
    are dot products with that field's rows of the shared embedding table (tied
    weights) plus a per-id bias. This is the paper's Bernoulli likelihood of binary
    covariates generalised to many categories. We rejected a Gaussian on the
    embedding vectors: the embeddings are learned, so such a likelihood could be
    maximized by shrinking them all towards one point, and its target moves during
    training; the categorical likelihood of the fixed ids has neither problem.
    Cost: one (N, d) x (d, V_f) matmul per field, N * V * d in all (V = total ids).

    Prediction (deterministic): z is the mean of the paper's q(z|x) =
    sum_t q(t|x) q(z|x, t, y_t), with y_t the mean of q(y|x,t) (a point value
    instead of the integral over y) and each q(z|...) replaced by its mean; then
    y_hat[:, a] = E[y | t=a, z], the decoder's mean. The same z serves every arm:
    the effect is a do(t) on the outcome model with the confounder held fixed.
    ``predict_z='per_arm'`` instead uses, for arm a, the mean of q(z|x, t=a, y_a)
    (not the paper's definition; measured on ``make_experiment(K=1, effect=1,
    n=3000)``, 3 seeds: PEHE 0.32 against 0.41 for the default).

    Extension to K treatments and R responses: not extended to K > 1 (the paper has
    one binary treatment; the estimator refuses K > 1); y has R components, each
    Gaussian with unit variance on the standardized scale (continuous, count) or
    Bernoulli (binary), independent given (t, z).

    forward(x, arm, y, sample): x (N, F), arm (N,), y (N, R) -> dict, see ``forward``.
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std, config: CEVAEConfig):
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        A, R, L, d = self.K + 1, self.R, config.latent_dim, config.embed_dim  # noqa: N806
        hid, head = list(config.hidden_sizes), list(config.head_sizes)
        D = self.input_dim  # noqa: N806
        self.A, self.L = A, L
        self.cardinalities = [int(c) for c in cardinalities]
        self.register_buffer("binary", binary_mask(links), persistent=False)
        # --- inference model
        self.q_t = MLP(D, [*hid, A])  # auxiliary q(t|x): logits over arms
        self.q_y_body = MLP(D, hid)  # auxiliary q(y|x,t): trunk + one head per arm
        self.q_y_heads = BlockMLP(A, hid[-1], [*head, R])
        self.q_z_body = MLP(D + R, hid)  # q(z|x,t,y): trunk on (x, y) + one head per arm
        self.q_z_heads = BlockMLP(A, hid[-1], [*head, 2 * L])
        # --- generative model
        self.p_x = MLP(L, [*hid, self.embed.n_fields * d])  # one query vector per field
        self.x_bias = nn.Parameter(torch.zeros(sum(self.cardinalities)))
        self.p_t = MLP(L, [*hid, A])
        self.p_y_body = MLP(L, hid)
        self.p_y_heads = BlockMLP(A, hid[-1], [*head, R])
        self.start_at_mean(self.q_y_heads.layers[-1].bias, blocks=A)
        self.start_at_mean(self.p_y_heads.layers[-1].bias, blocks=A)

    # --- pieces ------------------------------------------------------------------
    def aux_outcomes(self, e: torch.Tensor) -> torch.Tensor:
        """Auxiliary q(y|x,t) raw outputs for every arm, e (N, F*d) -> (A, N, R)."""
        return self.q_y_heads(_per_arm(self.q_y_body(e), self.A))

    def encode_z(self, e: torch.Tensor, y_std: torch.Tensor) -> torch.Tensor:
        """q(z|x,t,y) for every arm t: e (N, F*d), standardized y (N, R) or (A, N, R)
        -> (A, N, 2L) = (mean, raw scale) per arm."""
        if y_std.dim() == 2:
            h = _per_arm(self.q_z_body(torch.cat([e, y_std], dim=-1)), self.A)
        else:  # a different y per arm (prediction)
            h = self.q_z_body(torch.cat([_per_arm(e, self.A), y_std], dim=-1))
        return self.q_z_heads(h)

    def outcome_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder p(y|t,z) raw outputs for every arm, z (N, L) -> (A, N, R)."""
        return self.p_y_heads(_per_arm(self.p_y_body(z), self.A))

    def x_logits(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Decoder p(x|z): per field f, logits (N, V_f) over the field's ids."""
        q = self.p_x(z).view(z.shape[0], self.embed.n_fields, -1)  # (N, F, d)
        table, out, start = self.embed.table.weight, [], 0
        for f, card in enumerate(self.cardinalities):  # F matmuls; no per-row work
            rows = slice(start, start + card)
            out.append(q[:, f] @ table[rows].T + self.x_bias[rows])
            start += card
        return out

    # --- forward -----------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, arm: torch.Tensor, y: torch.Tensor, sample: bool = True
    ) -> dict[str, torch.Tensor]:
        """Everything the ELBO needs for observed rows.

        x (N, F) ids, arm (N,), y (N, R); ``sample``: draw z by reparameterization
        (training) or use the mean of q(z|x,t,y) (deterministic validation).

        Returns: q_t_logits (N, A), q_y_raw (N, R) at the received arm, z_mean (N, L),
        z_logvar (N, L), x_logits (list of F tensors (N, V_f)), p_t_logits (N, A),
        p_y_raw (N, R) at the received arm.
        """
        e = self.flat(x)
        qz = pick_arm(self.encode_z(e, self.standardize(y)), arm, dim=0)
        mu, s = qz.split(self.L, dim=-1)
        var = F.softplus(s) + 1e-4  # softplus keeps sigma^2 > 0 without exp blow-ups
        z = mu + var.sqrt() * torch.randn_like(mu) if sample else mu
        return {
            "q_t_logits": self.q_t(e),
            "q_y_raw": pick_arm(self.aux_outcomes(e), arm, dim=0),
            "z_mean": mu,
            "z_logvar": var.log(),
            "x_logits": self.x_logits(z),
            "p_t_logits": self.p_t(z),
            "p_y_raw": pick_arm(self.outcome_raw(z), arm, dim=0),
        }

    def infer_z(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of q(z|x) = sum_t q(t|x) q(z|x,t,y_t), y_t = mean of q(y|x,t): (N, F) -> (N, L)."""
        e = self.flat(x)
        p_t = torch.softmax(self.q_t(e), dim=-1)  # (N, A)
        y_t = self.standardize(self.link(self.aux_outcomes(e)))  # (A, N, R)
        mu = self.encode_z(e, y_t)[..., : self.L]  # block a reads t = a and y_a
        return torch.einsum("na,anl->nl", p_t, mu)

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, F) -> y_hat (N, A, R): decoder means E[y | t=a, z] (z: see ``predict_z``)."""
        if self.config.predict_z == "per_arm":
            e = self.flat(x)
            y_t = self.standardize(self.link(self.aux_outcomes(e)))
            z = self.encode_z(e, y_t)[..., : self.L]  # (A, N, L): block a gets z_a
            raw = self.p_y_heads(self.p_y_body(z))
        else:
            raw = self.outcome_raw(self.infer_z(x))
        return self.link(raw).transpose(0, 1)


# ---------------------------------------------------------------------------------------------
# GANITE
# ---------------------------------------------------------------------------------------------
class GANITEConfig(BaselineConfig):
    """GANITE settings (Yoon et al. 2018): supervised-loss weights alpha (counterfactual
    generator) and beta (ITE generator), both 1 by default, and the noise size."""

    alpha: float = Field(1.0, ge=0.0, description="weight of G's factual loss (min_G V_CF + a L_S)")
    beta: float = Field(1.0, ge=0.0, description="weight of I's loss on G's completed outcomes")
    adversarial_weight: float = Field(
        1.0, ge=0.0, description="scale of the reversed discriminator gradients (1 = the minimax)"
    )
    noise_dim: int | None = Field(
        None, ge=1, description="size of z_G and z_I ~ U(-1, 1); None: (K+1)*R, one per outcome"
    )


class GANITE(BaselineNet):
    """Generative Adversarial Nets for inference of Individualized Treatment Effects.

    Yoon, Jordon, van der Schaar, "GANITE: Estimation of Individualized Treatment
    Effects using Generative Adversarial Nets", ICLR 2018.

    Four networks: the counterfactual generator G(x, t, y_f, z_G) proposes every
    potential outcome; the discriminator D_G sees x and the completed vector
    y_bar (the factual y in its arm's slot, G's proposals elsewhere) and guesses
    which slot is factual; the ITE generator I(x, z_I) predicts every potential
    outcome from x alone; the discriminator D_I tells (x, y_bar) pairs from
    (x, I's outputs). G and I are TARNet-shaped (trunk + one head per arm), as in
    the authors' multi-task outputs. Discriminators read the standardized outcomes
    and a detached copy of the field embeddings, so they judge but do not shape
    the representation that G and I share.

    One optimizer instead of alternating updates: the generators' outputs reach
    the discriminators through a gradient-reversal layer (``reverse_gradient``), so
    one backward pass gives the discriminators the gradient that lowers their
    classification loss and the generators the negated one (the minimax game of
    the paper's V_CF and V_I). This differs from the paper's alternating
    (and two-stage: G/D_G first, then I/D_I) training: both games run at once, I
    chasing G's current completions, with simultaneous gradient steps and the
    saturating form of the generator loss.

    Prediction: y_hat = I(x, z_I = 0), the mean of the U(-1, 1) noise (deterministic).

    Extension to K treatments and R responses: not extended to K > 1 (one binary
    treatment in the paper; the estimator refuses K > 1); each arm's slot holds R
    responses, and y_bar has A * R entries.

    forward(x, arm, y, sample): see ``forward``.
    """

    def __init__(self, cardinalities, n_treatments, links, y_mean, y_std, config: GANITEConfig):
        super().__init__(cardinalities, n_treatments, links, y_mean, y_std, config)
        A, R = self.K + 1, self.R  # noqa: N806
        hid, head = list(config.hidden_sizes), list(config.head_sizes)
        D = self.input_dim  # noqa: N806
        self.A = A
        self.noise_dim = config.noise_dim or A * R
        self.register_buffer("binary", binary_mask(links), persistent=False)
        self.g_body = MLP(D + A + R + self.noise_dim, hid)
        self.g_heads = BlockMLP(A, hid[-1], [*head, R])
        self.d_g = MLP(D + A * R, [*hid, A])  # logits: which slot is the factual one
        self.i_body = MLP(D + self.noise_dim, hid)
        self.i_heads = BlockMLP(A, hid[-1], [*head, R])
        self.d_i = MLP(D + A * R, [*hid, 1])  # logit: y_bar from G (1) or from I (0)
        self.start_at_mean(self.g_heads.layers[-1].bias, blocks=A)
        self.start_at_mean(self.i_heads.layers[-1].bias, blocks=A)

    def _noise(self, n: int, ref: torch.Tensor, sample: bool) -> torch.Tensor:
        if sample:
            return torch.rand(n, self.noise_dim, device=ref.device) * 2 - 1
        return ref.new_zeros(n, self.noise_dim)  # the noise's mean

    def ite_raw(self, e: torch.Tensor, sample: bool) -> torch.Tensor:
        """I(x, z_I): e (N, F*d) -> raw outputs (N, A, R)."""
        h = self.i_body(torch.cat([e, self._noise(e.shape[0], e, sample)], dim=-1))
        return self.i_heads(_per_arm(h, self.A)).transpose(0, 1)

    def forward(
        self, x: torch.Tensor, arm: torch.Tensor, y: torch.Tensor, sample: bool = True
    ) -> dict[str, torch.Tensor]:
        """Both games on observed rows.

        x (N, F) ids, arm (N,), y (N, R); ``sample``: draw z_G, z_I ~ U(-1, 1)
        (training) or set them to 0.

        Returns: g_raw (N, A, R) G's raw outputs; y_bar (N, A, R) the completed
        outcomes in response units (factual slot = y); d_g_logits (N, A);
        i_raw (N, A, R) I's raw outputs; d_i_real, d_i_fake (N,) logits of D_I on
        y_bar and on I's outcomes.
        """
        N = x.shape[0]  # noqa: N806
        e = self.flat(x)
        onehot = F.one_hot(arm.long(), self.A).to(e.dtype)
        g_in = torch.cat([e, onehot, self.standardize(y), self._noise(N, e, sample)], dim=-1)
        g_raw = self.g_heads(_per_arm(self.g_body(g_in), self.A)).transpose(0, 1)  # (N, A, R)
        scale = self.config.adversarial_weight
        y_tilde = reverse_gradient(self.link(g_raw), scale)
        factual = onehot.bool().unsqueeze(-1)  # (N, A, 1)
        y_bar = torch.where(factual, y.unsqueeze(1), y_tilde)
        e_d = e.detach()
        d_g_logits = self.d_g(torch.cat([e_d, self.standardize(y_bar).flatten(1)], dim=-1))
        i_raw = self.ite_raw(e, sample)
        y_real = self.standardize(y_bar.detach()).flatten(1)  # stage 2 holds G fixed
        y_fake = self.standardize(reverse_gradient(self.link(i_raw), scale)).flatten(1)
        d_i = self.d_i(torch.cat([torch.cat([e_d, y_real], -1), torch.cat([e_d, y_fake], -1)]))
        return {
            "g_raw": g_raw,
            "y_bar": y_bar,
            "d_g_logits": d_g_logits,
            "i_raw": i_raw,
            "d_i_real": d_i[:N, 0],
            "d_i_fake": d_i[N:, 0],
        }

    def potential_outcomes(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, F) -> y_hat (N, A, R) = I(x, z_I = 0) in response units."""
        return self.link(self.ite_raw(self.flat(x), sample=False))


def response_nll(
    raw: torch.Tensor,
    y: torch.Tensor,
    links: Sequence[str],
    y_mean: torch.Tensor,
    y_std: torch.Tensor,
    binary: torch.Tensor,
    losses: Sequence[str] | None = None,
    tweedie_power: float = 1.5,
) -> torch.Tensor:
    """Negative log likelihood of y given a head's raw outputs, summed over R.

    raw, y: (..., R); binary: (R,) bool. Binary responses: Bernoulli with logit
    ``raw`` (y may be a soft target in [0, 1]); others: half the model's response
    deviance (``hmum.nn.links.deviance``; default "mse": a Gaussian with unit
    variance on the standardized scale), of the mean ``apply_link(raw)``, which is
    the NLL of that family up to a constant. Returns (...).
    """
    mean = apply_link(raw, links, y_mean, y_std)
    losses = ["mse"] * len(links) if losses is None else losses
    gauss = 0.5 * deviance(mean, y, losses, y_mean, y_std, tweedie_power)
    bern = F.binary_cross_entropy_with_logits(raw, y.clamp(0, 1), reduction="none")
    return torch.where(binary, bern, gauss).sum(-1)


def mean_nll(
    mean: torch.Tensor, y: torch.Tensor, y_std: torch.Tensor, binary: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """As ``response_nll`` for predictions given as means (..., R) in response units
    (binary: probabilities, clipped to [eps, 1 - eps]). Returns (...)."""
    gauss = 0.5 * ((mean - y) / y_std) ** 2
    p = mean.clamp(eps, 1 - eps)
    yb = y.clamp(0, 1)
    bern = -(yb * p.log() + (1 - yb) * (1 - p).log())
    return torch.where(binary, bern, gauss).sum(-1)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last axis: (..., L) -> (...)."""
    return 0.5 * (logvar.exp() + mean**2 - 1.0 - logvar).sum(-1)


# ---------------------------------------------------------------------------------------------
def cevae_loss(
    out: dict,
    x: torch.Tensor,
    arm: torch.Tensor,
    y: torch.Tensor,
    *,
    links: Sequence[str],
    y_mean: torch.Tensor,
    y_std: torch.Tensor,
    losses: Sequence[str] | None = None,
    tweedie_power: float = 1.5,
    binary: torch.Tensor,
    kl_weight: float = 1.0,
    aux_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The paper's CEVAE objective (Louizos et al. 2017), negated: the negative ELBO
    -E_q[log p(x|z) + log p(t|z) + log p(y|t,z)] + KL(q(z|x,t,y) || p(z)) plus the
    auxiliary -log q(t|x) - log q(y|x,t), averaged over rows.

    out: ``CEVAE.forward``'s dict; x (N, F) ids, arm (N,), y (N, R).
    Returns (scalar loss, logs).
    """
    rec_x = sum(
        F.cross_entropy(lg, x[:, f].long(), reduction="none")
        for f, lg in enumerate(out["x_logits"])
    )
    rec_t = F.cross_entropy(out["p_t_logits"], arm.long(), reduction="none")
    rec_y = response_nll(out["p_y_raw"], y, links, y_mean, y_std, binary, losses,
                         tweedie_power)
    kl = gaussian_kl(out["z_mean"], out["z_logvar"])
    aux = F.cross_entropy(out["q_t_logits"], arm.long(), reduction="none") + response_nll(
        out["q_y_raw"], y, links, y_mean, y_std, binary, losses, tweedie_power
    )
    terms = {"rec_x": rec_x, "rec_t": rec_t, "rec_y": rec_y, "kl": kl, "aux": aux}
    loss = (rec_x + rec_t + rec_y + kl_weight * kl + aux_weight * aux).mean()
    return loss, {k: float(v.detach().mean()) for k, v in terms.items()}


class CEVAEEstimator(BaselineEstimator):
    """CEVAE (Louizos et al., NeurIPS 2017) as an estimator; see ``hmum.models.
    generative.CEVAE``. One treatment only (its paper): ``fit`` refuses K > 1.

    Training draws z by reparameterization; validation (the early-stopping loss) and
    prediction use the mean of q(z|...), so both are deterministic.
    """

    model_type = "cevae"
    config_class = CEVAEConfig
    network_class = CEVAE
    max_treatments = 1

    def _loss(self, module: CEVAE, batch):
        x, arm, y = batch
        out = module(x, arm, y, sample=module.training)
        cfg = module.config
        return cevae_loss(
            out, x, arm, y, links=module.links, y_mean=module.y_mean, y_std=module.y_std,
            losses=module.losses, tweedie_power=module.config.tweedie_power,
            binary=module.binary, kl_weight=cfg.kl_weight, aux_weight=cfg.aux_weight,
        )


# ---------------------------------------------------------------------------------------------
def ganite_loss(
    out: dict,
    arm: torch.Tensor,
    y: torch.Tensor,
    *,
    links: Sequence[str],
    y_mean: torch.Tensor,
    y_std: torch.Tensor,
    losses: Sequence[str] | None = None,
    tweedie_power: float = 1.5,
    binary: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 1.0,
    training: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GANITE's two games as one loss (the generators' side comes from the
    gradient-reversal layers inside ``GANITE.forward``).

    Terms per row: D_G's cross-entropy of the factual slot; alpha * G's factual
    likelihood loss; D_I's binary cross-entropy (y_bar real, I's outputs fake);
    beta * I's loss against y_bar over all A slots (factual: the observed y;
    counterfactual: G's, detached: I learns from G, G is not pulled towards I).

    ``training=False`` (validation) returns as the loss I's factual loss only,
    the error of the network that predicts; the adversarial terms of a GAN are no
    criterion for early stopping. All terms are logged either way.

    out: ``GANITE.forward``'s dict; arm (N,), y (N, R). Returns (scalar, logs).
    """
    g_fact = response_nll(pick_arm(out["g_raw"], arm), y,
                          links, y_mean, y_std, binary, losses, tweedie_power)
    d_g = F.cross_entropy(out["d_g_logits"], arm.long(), reduction="none")
    i_all = response_nll(out["i_raw"], out["y_bar"].detach(),
                          links, y_mean, y_std, binary, losses, tweedie_power)
    i_fact = response_nll(pick_arm(out["i_raw"], arm), y,
                          links, y_mean, y_std, binary, losses, tweedie_power)
    real, fake = out["d_i_real"], out["d_i_fake"]
    d_i = F.binary_cross_entropy_with_logits(
        real, torch.ones_like(real), reduction="none"
    ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction="none")
    terms = {"g_factual": g_fact, "d_g": d_g, "i_sup": i_all.sum(-1), "d_i": d_i,
             "i_factual": i_fact}
    logs = {k: float(v.detach().mean()) for k, v in terms.items()}
    if not training:
        return i_fact.mean(), logs
    loss = (d_g + alpha * g_fact + d_i + beta * i_all.sum(-1)).mean()
    return loss, logs


class GANITEEstimator(BaselineEstimator):
    """GANITE (Yoon, Jordon, van der Schaar, ICLR 2018) as an estimator; see
    ``hmum.models.generative.GANITE`` for the single-optimizer (gradient
    reversal) formulation. One treatment only (its paper): ``fit`` refuses K > 1.

    The validation loss (early stopping, LR schedule) is I's factual loss with the
    noise at 0; the training loss is the full objective, so the two are on
    different scales. Predictions: I(x, z_I = 0), deterministic.
    """

    model_type = "ganite"
    config_class = GANITEConfig
    network_class = GANITE
    max_treatments = 1

    def _loss(self, module: GANITE, batch):
        x, arm, y = batch
        out = module(x, arm, y, sample=module.training)
        cfg = module.config
        return ganite_loss(
            out, arm, y, links=module.links, y_mean=module.y_mean, y_std=module.y_std,
            losses=module.losses, tweedie_power=module.config.tweedie_power,
            binary=module.binary, alpha=cfg.alpha, beta=cfg.beta, training=module.training,
        )
