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

The loss (eq. 5, ``hum_loss``: masking and the KL term over the per-response
losses of ``hmum.nn.links.deviance``) and the estimator (``HUMEstimator``: fit,
predict, save) sit beside the network; ``HUM`` itself only does forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, NamedTuple

import numpy as np
import torch
from pydantic import ConfigDict, Field
from torch import nn

from hmum.decision.bounds import MODEL_SOURCES
from hmum.decision.core import Y0_FLOOR
from hmum.exceptions import DecisionConfigError
from hmum.models.base import NeuralUpliftEstimator
from hmum.nn.layers import BlockMMoE, FieldEmbedding, FieldSelector
from hmum.nn.links import LossConfig, apply_link, deviance, link_bias


class HUMConfig(LossConfig):
    """Hyper-parameters of HUM (the only home of their defaults).

    ``loss`` / ``tweedie_power`` (from LossConfig): the response losses, shared with
    every baseline (``hmum.nn.links``). HUM's default is the per-kind deviance
    (measured better than the paper's MSE, benchmarks/bench_hum_quality.py); the
    paper's settings are the registered variant ``hum_paper``.
    """

    model_config = ConfigDict(extra="forbid")

    loss: str | list[str] = Field(
        "deviance", description='"deviance" (per response kind), "mse" (paper) or one name '
        "per response"
    )

    embed_dim: int = Field(32, ge=1, description="embedding size d (paper: 32)")
    n_experts: int = Field(4, ge=1, description="experts M per MMoE block")
    expert_sizes: list[int] = Field(
        default_factory=lambda: [64, 32], description="hidden layers of each expert (the "
        "paper gives none; [128, 64] before, kept by ``hum_paper``). [64, 32] measured equal "
        "at strong effects, lower PEHE at weak ones, and cuts a many-arm fit from 4.4x to "
        "2.2x the S-Learner's (docs/benchmarks.md)"
    )
    tower_sizes: list[int] = Field(default_factory=lambda: [32])
    selector_heads: int = Field(1, ge=1, description="attention selectors per branch (1 = eq. 2)")
    selector: Literal["sum", "fieldwise"] = Field(
        "sum", description="sum: eq. 2's weighted sum of fields; fieldwise: fields scaled by "
        "their weights and concatenated (hmum.nn.layers.FieldSelector)"
    )
    selector_query: Literal["pass", "branch"] = Field(
        "pass", description="pass (eq. 2 as written): each pass queries the field selector "
        "with its own treatment embedding, so branch b's control pass weighs the fields "
        "differently from its treated pass; branch: both passes of branch b query it with "
        "t(b)'s embedding, so they share one field summary and differ only through e_t in "
        "eq. 3 (the treated - control difference then carries less field-weighting noise)"
    )
    gate_query: Literal["pass", "branch"] = Field(
        "pass", description="pass (eq. 4 as written): each pass's gates see its own treatment "
        "embedding in f = [e_x ; e_t]; branch: both passes of branch b's gates see t(b)'s, "
        "so the treated and control passes mix the experts alike and differ only through "
        "the experts' input"
    )
    branches_per_treatment: int | None = Field(
        1, ge=1, description="branches per treatment; None: the paper's rule (§5.2.2), 1 if "
        "K > 1, else 3. Default 1: with K = 1 three branches cost ~3x and were measured no "
        "better (benchmarks/bench_hum_branches.py, docs/benchmarks.md)"
    )
    kl_weight: float = Field(1.0, ge=0.0, description="weight of the KL term; 0 = HUM w/o KL")
    uplift: Literal["within_branch", "paper"] = Field(
        "within_branch", description="paper: y^k is treatment k's branches' treated estimate, "
        "so tau_k = y^k - y0* mixes branch k's uplift with its disagreement with the other "
        "branches on the control; within_branch: y^k = y0* + branch k's own treated-minus-"
        "control difference (a ratio for positive responses), which cancels that disagreement "
        "(measured better, benchmarks/bench_hum_quality.py)"
    )

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


class FactualOutput(NamedTuple):
    """What the masked loss of eq. 5 reads, and nothing else (``HUM.forward_factual``).

    The treated pass of branch b runs on the rows of arm t(b), padded to the largest
    treated arm's n_t slots; the control passes run on the arm-0 rows (n_0 slots,
    the same rows in the same order for every branch). The two are padded apart so
    that a large control arm does not pad every treated pass to its size.

    y_treated: (B, n_t, R) estimates y^b in original units; rows_treated (B, n_t)
        long, the batch row of each slot; valid_treated (B, n_t) bool, False on padding.
    y_control: (B, n_0, R) estimates y^{0,b}; rows_control (n_0,) long;
        valid_control (n_0,) bool (n_0 >= 1: one padding slot when no row is control).
    gate_control: (B, n_0, R, M) control-side gates z^{0,b} of the arm-0 rows.
    """

    y_treated: torch.Tensor
    rows_treated: torch.Tensor
    valid_treated: torch.Tensor
    y_control: torch.Tensor
    rows_control: torch.Tensor
    valid_control: torch.Tensor
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
        self.uplift = cfg.uplift
        self.branch_query = (cfg.selector_query == "branch", cfg.gate_query == "branch")
        # per response: ratio form of the within-branch uplift (positive links), and the
        # [0, 1] clamp (binary); derived from the links, so not saved with the weights
        self.register_buffer("ratio_response", torch.tensor(
            [lk in ("softplus", "exp") for lk in self.links]), persistent=False)
        self.register_buffer("binary_response", torch.tensor(
            [lk == "sigmoid" for lk in self.links]), persistent=False)
        # the response loss of each output; set by the estimator (hmum.nn.links)
        self.losses = ["mse"] * self.R
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
        self.selector = FieldSelector(self.B, self.embed.n_fields, d, cfg.selector_heads,
                                      cfg.selector)
        self.mmoe = BlockMMoE(
            self.B,
            self.selector.width + d,
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

    def _pass_arms(self) -> torch.Tensor:
        """(B, 2): pass 0 of branch b uses its treatment t(b), pass 1 the control arm 0."""
        return torch.stack([self.branch_treatment, torch.zeros_like(self.branch_treatment)], 1)

    def _pass_embeddings(self) -> torch.Tensor:
        """(B, 2, d): the treatment embedding of each (branch, pass)."""
        return self.treatment_embed(self._pass_arms())

    def _heads(self, e_x: torch.Tensor, e_t: torch.Tensor, e_q: torch.Tensor):
        """e_x (N, F, d) or (B, P, n, F, d); e_t, e_q (B, P, d) -> y (B, P, n, R), gates.

        e_t is each pass's treatment embedding (eq. 3's context); e_q (``_queries``)
        replaces it in the selector and the gates where HUMConfig says "branch".
        """
        branch_sel, branch_gate = self.branch_query
        sel, _ = self.selector(e_x, e_q if branch_sel else e_t)  # (B, P, n, H*d)
        # f = [sel ; e_t] (eq. 3): e_t is the same for every row of a pass
        z, gates = self.mmoe(sel, context=e_t, gate_context=e_q if branch_gate else None)
        return apply_link(z, self.links, self.y_mean, self.y_std), gates

    @staticmethod
    def _queries(e_t: torch.Tensor) -> torch.Tensor:
        """(B, 2, d) pass embeddings -> (B, 2, d): t(b)'s embedding in both passes of b."""
        return e_t[:, :1].expand_as(e_t)

    def forward(self, x: torch.Tensor) -> HUMOutput:
        e_t = self._pass_embeddings()
        y, gates = self._heads(self.embed(x), e_t, self._queries(e_t))
        return HUMOutput(
            y_treated=y[:, 0].transpose(0, 1),
            y_control=y[:, 1].transpose(0, 1),
            gate_control=gates[:, 1].transpose(0, 1),
        )

    def forward_factual(self, x: torch.Tensor, arm: torch.Tensor) -> FactualOutput:
        """Only the outputs the masked loss reads: x (N, F) int, arm (N,) -> FactualOutput.

        A row of arm k > 0 is scored only by the treated pass of treatment k's
        branches, a row of arm 0 only by the control passes: with K = 2 and equal
        arms that is a third of ``forward``'s work, for the same loss and gradients.
        """
        n_rows = x.shape[0]
        e_x = self.embed(x)
        arm = arm.long()
        counts = torch.bincount(arm, minlength=self.K + 1)  # (K+1,)
        order = torch.argsort(arm, stable=True)  # rows grouped by arm
        starts = torch.cumsum(counts, 0) - counts

        def slots(arms: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
            """(len(arms), n) batch rows of each arm's first n rows and their validity."""
            slot = torch.arange(n, device=x.device)
            valid = slot.unsqueeze(0) < counts[arms].unsqueeze(1)
            return order[(starts[arms].unsqueeze(1) + slot).clamp(max=n_rows - 1)], valid

        e_t = self._pass_embeddings()  # (B, 2, d)
        e_q = self._queries(e_t)
        rows_t, valid_t = slots(self.branch_treatment, max(int(counts[1:].max()), 1))
        y_t, _ = self._heads(e_x[rows_t].unsqueeze(1), e_t[:, :1], e_q[:, :1])  # (B, 1, n_t, R)
        rows_c, valid_c = slots(arm.new_zeros(1), max(int(counts[0]), 1))
        rows_c, valid_c = rows_c[0], valid_c[0]
        # shared rows: (B, 1, n_0, R)
        y_c, gates = self._heads(e_x[rows_c], e_t[:, 1:], e_q[:, 1:])
        return FactualOutput(y_t[:, 0], rows_t, valid_t, y_c[:, 0], rows_c, valid_c,
                             gates[:, 0])

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
        if self.uplift == "within_branch":
            yt = self._within_branch(y0, yt, y0b)
        return torch.cat([y0, yt], dim=1), y0b

    def _within_branch(self, y0: torch.Tensor, yt: torch.Tensor, y0b: torch.Tensor):
        """y^k = y0* + (y^k_branch - y^{0,k}) per response: y0 (N, 1, R), yt / y0b (N, K, R).

        Positive responses (softplus / exp links) take the ratio form y0* y^k / y^{0,k},
        which keeps them positive; binary ones stay inside [0, 1].
        """
        additive = y0 + (yt - y0b)
        relative = y0 * yt / y0b.clamp_min(torch.finfo(yt.dtype).tiny)
        out = torch.where(self.ratio_response, relative, additive)
        return torch.where(self.binary_response, out.clamp(0.0, 1.0), out)


# Gates are softmax outputs; the floor keeps log() finite if one saturates.
_EPS = 1e-8


def control_gate_kl(gates: torch.Tensor) -> torch.Tensor:
    """KL(z^{0,b} || mean_b z^{0,b}) per row, branch and response.

    gates: (N, B, R, M) control-side gate distributions -> (N, B, R), >= 0,
    zero exactly when all branches' gates agree.
    """
    g = gates.clamp_min(_EPS)
    gbar = g.mean(dim=1, keepdim=True)
    return (g * (g.log() - gbar.log())).sum(-1)


def hum_loss(
    out: FactualOutput,
    y: torch.Tensor,
    losses: Sequence[str],
    y_mean: torch.Tensor,
    y_std: torch.Tensor,
    kl_weight: float = 1.0,
    tweedie_power: float = 1.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The masked HUM loss of eq. 5.

    A row of arm k > 0 trains only the treated output of treatment k's branches;
    a row of arm 0 trains every branch's control output and adds the KL term. The
    per-response losses (``losses``; the paper: "mse", squared errors divided by the
    training std) are summed over responses; the total is divided by the number of rows.

    Args:
        out: ``HUM.forward_factual`` for N rows (B branches, R responses, M experts).
        y: (N, R) observed responses.
        losses: (R,) loss names (``hmum.nn.links``).
        y_mean, y_std: (R,) training statistics of the responses.
        kl_weight: coefficient of the KL term (0 = HUM w/o KL).
        tweedie_power: p of a "tweedie" loss.

    Returns:
        (scalar loss, {"fit": ..., "kl": ...} as floats for logging).
    """
    n = y.shape[0]

    def fit_sum(pred, rows, valid):  # pred (B, n_slots, R), rows / valid broadcast to (B, n_slots)
        dev = deviance(pred, y[rows].expand_as(pred), losses, y_mean, y_std,
                       tweedie_power).sum(-1)
        return (dev * valid.to(pred.dtype)).sum()

    fit = (fit_sum(out.y_treated, out.rows_treated, out.valid_treated)
           + fit_sum(out.y_control, out.rows_control, out.valid_control))
    loss = fit
    kl_val = 0.0
    if kl_weight > 0:
        kl_rows = control_gate_kl(out.gate_control.transpose(0, 1)).sum(-1)  # (n_0, B)
        kl = (kl_rows * out.valid_control.to(kl_rows.dtype).unsqueeze(1)).sum()
        loss = loss + kl_weight * kl
        kl_val = float(kl.detach()) / n
    return loss / n, {"fit": float(fit.detach()) / n, "kl": kl_val}


class HUMEstimator(NeuralUpliftEstimator):
    """HUM (paper §4.1) as an estimator.

    ``predict_all`` also returns ``y0_branch`` (N, K, R): each treatment's
    branches' own control estimate y^{0,k}; ``y_hat[:, 0]`` is their mean y0*.
    """

    model_type = "hum"
    config_class = HUMConfig
    #: weight averaging over a tenth of the planned steps (measured, see the README's
    #: quality section); {"ema_share": None} turns it off (the paper: ``hum_paper``).
    #: One network: the cross-fit shrinkage (``hum_crossfit``) was measured and is not
    #: the default (docs/benchmarks.md, "Cross-fit shrinkage of the uplift")
    default_trainer: ClassVar[dict] = {"ema_share": 0.1}
    #: 2: deviance losses and EMA became the defaults; 3: the within-branch uplift;
    #: 4: one branch per treatment also when K = 1; 5: experts of [64, 32] (a bump makes
    #: the old benchmark cells stale)
    defaults_version: ClassVar[int] = 5

    @classmethod
    def _from_artifact(cls, jsons: dict, weights: dict) -> HUMEstimator:
        model = jsons["config"].get("model") or {}
        if "uplift" not in model:  # written before the option existed: the paper's rule
            config = {**jsons["config"], "model": {**model, "uplift": "paper"}}
            jsons = {**jsons, "config": config}
        return super()._from_artifact(jsons, weights)

    def _build(self, cardinalities, links, y_mean, y_std, cfg):
        self._kl_weight, self._tweedie_power = cfg.kl_weight, cfg.tweedie_power
        return HUM(cardinalities, self.schema.K, links, y_mean, y_std, cfg)

    def _loss(self, module: HUM, batch):
        x, arm, y = batch
        return hum_loss(module.forward_factual(x, arm), y, module.losses, module.y_mean,
                        module.y_std, self._kl_weight, self._tweedie_power)

    def _outcomes(self, module: HUM, x):
        y_hat, y0b = module.potential_outcomes(module(x))
        return {"y_hat": y_hat, "y0_branch": y0b}

    def predict_branch_controls(self, data, *, batch_size: int = 65536) -> np.ndarray:
        """y0_branch (N, K, R): each treatment branch's own no-treatment estimate."""
        return self.predict_all(data, batch_size=batch_size)["y0_branch"]

    @property
    def n_members_(self) -> int:
        """M of ``member_deltas``: branches per treatment x cross-fit members (1 without)."""
        self._check_fitted()
        nets = self._member_nets()
        return len(nets) * (nets[0].B // self.schema.K)

    @property
    def member_source_(self) -> str:
        """The ``DecisionRule.bound`` source of these members: "crossfit" for a cross-fit
        HUM, else "branches"."""
        from hmum.models.crossfit import CrossFitModule

        self._check_fitted()
        return "crossfit" if isinstance(self.module_, CrossFitModule) else "branches"

    def _member_nets(self) -> list[HUM]:
        from hmum.models.crossfit import CrossFitModule

        mod = self.module_
        return list(mod.members) if isinstance(mod, CrossFitModule) else [mod]

    @torch.inference_mode()
    def member_deltas(self, data, *, floor: float = Y0_FLOOR,
                      batch_size: int = 65536) -> np.ndarray:
        """member_delta (M, N, K, R) float64: HUM's branches as M = ``n_members_`` members.

        Member j is branch j of every treatment, read as a HUM of its own with one branch
        per treatment: its no-treatment estimate is y0*_j = mean_k y^{0,(k,j)} (eq. 6
        within the member) and its treated estimate follows the model's uplift rule
        (``HUMConfig.uplift``): the paper's y^{k,j}, or within_branch's y0*_j + (y^{k,j} -
        y^{0,(k,j)}) (a ratio for positive responses); delta by eq. 7. Under the paper's
        rule the members' outcomes average back to HUM's estimate exactly. Reads the
        module's forward (``HUMOutput``: y_treated, y_control (N, B, R) with B = K * M,
        branch b serving treatment b // M + 1), the per-branch outputs that
        ``predict_all`` averages away. A cross-fit HUM (``TrainerConfig.crossfit``)
        contributes every member's branches, unshrunk: M = crossfit x
        branches_per_treatment. ``data``: as ``predict_all``. ValueError when M < 2.
        """
        m = self.n_members_
        if m < 2:
            raise ValueError("the HUM model has 1 branch per treatment; its members need "
                             "branches_per_treatment >= 2 or crossfit >= 2 (or seeds / "
                             "bootstrap fits)")
        x = data if isinstance(data, np.ndarray) else self.encode(data)
        x = torch.from_numpy(np.ascontiguousarray(x))
        k, nets = self.schema.K, self._member_nets()
        parts = [np.concatenate([_branch_deltas(net, x[s:s + batch_size], k, floor)
                                 for net in nets], axis=1)
                 for s in range(0, x.shape[0], batch_size)]
        return np.concatenate(parts).transpose(1, 0, 2, 3)


def bound_members(estimator, bound: dict) -> int:
    """M of ``estimator``'s own members, which a rule's ``bound`` (``DecisionRule.bound``)
    is computed from wherever one model is scored or read (``hmum score``, ``hmum
    decide``). DecisionConfigError when the bound needs several fits (source seeds or
    bootstrap) or the model has fewer than 2 members."""
    source = bound["source"]
    if source not in MODEL_SOURCES:
        raise DecisionConfigError(
            f"decision config: its bound comes from {source!r} members (several fits); one "
            "model is scored or read here, so a bound can come only from that model's own "
            f"members (source {' or '.join(map(repr, MODEL_SOURCES))})")
    m = estimator.n_members_ if isinstance(estimator, HUMEstimator) else 1
    if m < 2:
        name = getattr(estimator, "registry_name_", None) or type(estimator).__name__
        raise DecisionConfigError(
            f"decision config: its rule switches on a lower bound of phi, which needs the "
            f"model's members; this model ({name}) has {m}: use a HUM with "
            "branches_per_treatment >= 2 or trainer crossfit >= 2")
    return int(m)


def _branch_deltas(mod: HUM, x: torch.Tensor, k: int, floor: float) -> np.ndarray:
    """(n, M, K, R) deltas of one HUM network's M branches per treatment on x (n, F)."""
    out = mod(x)
    n, b, r = out.y_treated.shape
    yt = out.y_treated.reshape(n, k, b // k, r).transpose(1, 2)  # (n, M, K, R)
    y0b = out.y_control.reshape(n, k, b // k, r).transpose(1, 2)
    y0 = y0b.mean(dim=2, keepdim=True)  # (n, M, 1, R): each member's y0*
    if mod.uplift == "within_branch":
        yt = mod._within_branch(y0, yt, y0b)
    y0 = y0.double().numpy()
    return yt.double().numpy() / np.maximum(y0, floor) - 1.0
