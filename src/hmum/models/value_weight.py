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

The value-weight estimator of DDM (paper §4.2.2): fit on request logs, predict w.

A request table has one row per user request (see
``hmum.data.simulator.simulate_requests``):

* ``cand_<f>``: fixed-size list of the L candidates' codes of item field f;
* ``recent_<f>``: fixed-size list of the Lr recent interacted items' codes;
* ``o_<response>``: the labels of eq. 9, the share of exposed items of each
  response type (only needed to fit);
* optionally ``request_id`` and ``user_id``.

``ValueWeightEstimator`` follows the scikit-learn contract of
``hmum.models.base``: the constructor stores parameters, ``fit`` returns
self, learned state ends in ``_``, predicting before fitting raises
``NotFittedError``. ``save`` writes a verified artifact (JSON + safetensors +
manifest; no pickle); ``export_onnx`` writes the per-request graph
(cand, recent) -> (o_hat, w) for ONNX Runtime, wrapped by ``OnnxValueWeights``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hmum.decision.core import value_weights
from hmum.exceptions import ArtifactError, DataError, NotFittedError
from hmum.models.artifacts import read_artifact, write_artifact
from hmum.nn.layers import BlockMMoE, FieldEmbedding
from hmum.nn.links import apply_link, link_bias
from hmum.training.trainer import Trainer, TrainerConfig, TrainingHistory


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
            with torch.no_grad():  # start every tower at the mean label
                self.mmoe.towers.layers[-1].bias.copy_(self._unit_link_bias(m).view(-1, 1, 1))

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
        return self.shares(z)

    # shares o_r live in (0, 1) on their own scale: the links of hmum.nn.links with
    # mean 0 and std 1 (identity -> z, sigmoid -> sigmoid(z))
    def shares(self, z: torch.Tensor) -> torch.Tensor:
        """Raw tower outputs z (N, R) -> predicted shares o_hat (N, R)."""
        zero = torch.zeros(z.shape[-1], dtype=z.dtype, device=z.device)
        return apply_link(z, [self.link] * z.shape[-1], zero, zero + 1)

    def _unit_link_bias(self, m: torch.Tensor) -> torch.Tensor:
        """The raw output (R,) whose share is the mean label m (R,)."""
        if self.link == "identity":
            return m
        return link_bias([self.link] * m.shape[0], m, torch.ones_like(m))


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
        o_hat = self.model.shares(z)
        return o_hat, value_weights(o_hat)


def _block_diag(w: torch.Tensor) -> torch.Tensor:
    """(B, in, out) -> (B*in, B*out): block b of the diagonal is w[b]."""
    b, i, o = w.shape
    eye = torch.eye(b, dtype=w.dtype, device=w.device)
    return (eye[:, None, :, None] * w[:, :, None, :]).reshape(b * i, b * o)


MODEL_TYPE = "value_weight"
CAND, RECENT, LABEL = "cand_", "recent_", "o_"

#: Trainer settings of the value-weight model where they differ from the paper's
#: HUM defaults: request logs are small (tens of thousands of rows), and batches
#: of 4096 would give a handful of steps per epoch.
TRAINER_DEFAULTS = {"batch_size": 512}


# --------------------------------------------------------------------------------------
# reading request tables (validation at the boundary)
# --------------------------------------------------------------------------------------


def _is_int_list(t: pa.DataType) -> bool:
    return (
        pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)
    ) and pa.types.is_integer(t.value_type)


def infer_item_fields(table: pa.Table) -> tuple[list[str], list[str]]:
    """(candidate fields, recent fields): f for every integer-list ``cand_<f>`` / ``recent_<f>``."""
    cand = [c[len(CAND):] for c in table.column_names
            if c.startswith(CAND) and _is_int_list(table.schema.field(c).type)]
    recent = [c[len(RECENT):] for c in table.column_names
              if c.startswith(RECENT) and _is_int_list(table.schema.field(c).type)]
    return cand, recent


def infer_responses(table: pa.Table) -> list[str]:
    """Response names r of the label columns ``o_<r>``, in table order."""
    return [c[len(LABEL):] for c in table.column_names if c.startswith(LABEL)]


def list_column(table: pa.Table, name: str, length: int | None = None) -> np.ndarray:
    """An integer list column as (N, L) int32; every row must hold L codes, no nulls.

    Raises DataError naming the column.
    """
    if name not in table.column_names:
        raise DataError(f"requests: column {name!r} is missing (have {table.column_names})")
    col = table.column(name).combine_chunks()
    if not _is_int_list(col.type):
        raise DataError(f"requests: column {name!r} must be a list of integer item codes, "
                        f"got {col.type}")
    n = len(col)
    if col.null_count:
        raise DataError(f"requests: column {name!r} has {col.null_count} null rows")
    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
    else:
        sizes = np.diff(col.offsets.to_numpy())
        width = int(sizes[0]) if n else 0
        if n and (sizes != width).any():
            bad = np.flatnonzero(sizes != width)[:5].tolist()
            raise DataError(f"requests: column {name!r} must hold the same number of items in "
                            f"every row; rows {bad} differ from row 0 ({width} items)")
    if length is not None and width != length and n:
        raise DataError(f"requests: column {name!r} has lists of {width} items, the model "
                        f"expects {length}")
    values = col.flatten()
    if values.null_count:
        raise DataError(f"requests: column {name!r} holds {values.null_count} null item codes")
    return values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False).reshape(n, width)


def item_codes(table: pa.Table, fields: Sequence[str], prefix: str,
               length: int | None = None) -> np.ndarray:
    """Codes (N, F, L) int32 of the item fields ``prefix + f`` (fields in order)."""
    if not fields:
        return np.zeros((table.num_rows, 0, 0), dtype=np.int32)
    cols = [list_column(table, prefix + f, length) for f in fields]
    widths = {c.shape[1] for c in cols}
    if len(widths) > 1:
        raise DataError(f"requests: the {prefix}* columns must have lists of equal length, got "
                        + ", ".join(f"{prefix}{f}: {c.shape[1]}" for f, c in
                                    zip(fields, cols, strict=True)))
    return np.stack(cols, axis=1)


def label_columns(table: pa.Table, responses: Sequence[str]) -> np.ndarray:
    """Labels o (N, R) float32 from ``o_<r>``: finite, in [0, 1]. Raises DataError."""
    out = []
    for r in responses:
        name = LABEL + r
        if name not in table.column_names:
            raise DataError(f"requests: label column {name!r} is missing (have "
                            f"{table.column_names})")
        col = table.column(name)
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            raise DataError(f"requests: label column {name!r} must be numeric, got {col.type}")
        v = col.to_numpy().astype(np.float64)
        bad = ~np.isfinite(v) | (v < -1e-6) | (v > 1 + 1e-6)
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise DataError(f"requests: label column {name!r} must hold shares in [0, 1]; "
                            f"rows {rows} hold {v[rows].tolist()}")
        out.append(v)
    return np.stack(out, axis=1).astype(np.float32)


# --------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------


class ValueWeightEstimator:
    """Predicts per-request value weights w (N, R) from request-level item features.

    Args:
        responses: R response names (labels ``o_<r>``); None: every ``o_*`` column.
        cand_fields / recent_fields: item fields read as ``cand_<f>`` / ``recent_<f>``;
            None: every integer-list column with that prefix.
        model: ValueWeightConfig or dict.
        trainer: TrainerConfig or dict (missing fields: ``TRAINER_DEFAULTS``, then
            TrainerConfig's defaults).
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        *,
        responses: Sequence[str] | None = None,
        cand_fields: Sequence[str] | None = None,
        recent_fields: Sequence[str] | None = None,
        model: ValueWeightConfig | dict | None = None,
        trainer: TrainerConfig | dict | None = None,
    ) -> None:
        self.responses = responses
        self.cand_fields = cand_fields
        self.recent_fields = recent_fields
        self.model = model
        self.trainer = trainer

    # --- configs ------------------------------------------------------------
    def _configs(self) -> tuple[ValueWeightConfig, TrainerConfig]:
        m = self.model
        if m is None:
            m = ValueWeightConfig()
        elif isinstance(m, dict):
            m = ValueWeightConfig(**m)
        elif not isinstance(m, ValueWeightConfig):
            raise TypeError(f"model: expected ValueWeightConfig or dict, got {type(m).__name__}")
        t = self.trainer
        if t is None or isinstance(t, dict):
            t = TrainerConfig(**{**TRAINER_DEFAULTS, **(t or {})})
        elif not isinstance(t, TrainerConfig):
            raise TypeError(f"trainer: expected TrainerConfig or dict, got {type(t).__name__}")
        if t.crossfit != 1:  # the members' shrinkage is of uplifts, which this model has none of
            raise ValueError(f"trainer.crossfit: the value-weight model trains one network "
                             f"(crossfit 1), got {t.crossfit}")
        return m, t

    # --- fitting ------------------------------------------------------------
    def fit(
        self,
        requests: pa.Table,
        valid: pa.Table | None = None,
        *,
        progress: bool = False,
        log: Callable[[dict], None] | None = None,
    ) -> ValueWeightEstimator:
        """Fit on a request table; ``valid`` drives early stopping and the LR schedule.

        Without ``valid``, the requests of 10 % of the users (all of a user's
        requests on one side; seeded) are held out, or 10 % of rows when there is
        no ``user_id`` column. ``progress`` shows the trainer's progress bar; ``log``
        receives one dict per finished epoch (epoch, train_loss, valid_loss, ...).
        Cardinalities (max code + 1 per field) come from the
        training rows; larger codes at predict time fall in an out-of-range bucket.
        """
        if not isinstance(requests, pa.Table):
            raise TypeError(f"requests: expected a pyarrow Table, got {type(requests).__name__}")
        model_cfg, trainer_cfg = self._configs()
        cand_f, recent_f = infer_item_fields(requests)
        cand_f = list(self.cand_fields) if self.cand_fields is not None else cand_f
        recent_f = list(self.recent_fields) if self.recent_fields is not None else recent_f
        if not cand_f:
            raise DataError("requests: no candidate item columns (cand_<field>, lists of integer "
                            "codes) found")
        responses = list(self.responses) if self.responses is not None else \
            infer_responses(requests)
        if not responses:
            raise DataError("requests: no label columns o_<response> found")
        if valid is None:
            if requests.num_rows < 2:
                raise DataError(f"requests: need at least 2 rows to fit, got {requests.num_rows}")
            tr, va = _holdout(requests, 0.1, trainer_cfg.seed)
            requests, valid = requests.take(pa.array(tr)), requests.take(pa.array(va))
        cand = item_codes(requests, cand_f, CAND)
        recent = item_codes(requests, recent_f, RECENT)
        o = label_columns(requests, responses)
        cand_v = item_codes(valid, cand_f, CAND, cand.shape[2])
        recent_v = item_codes(valid, recent_f, RECENT, recent.shape[2] if recent_f else None)
        o_v = label_columns(valid, responses)
        cand_card = [int(max(cand[:, j].max(initial=0), 0)) + 1 for j in range(len(cand_f))]
        recent_card = [int(max(recent[:, j].max(initial=0), 0)) + 1
                       for j in range(len(recent_f))]
        torch.manual_seed(trainer_cfg.seed)
        module = ValueWeightModel(cand_card, recent_card, len(responses), model_cfg,
                                  label_mean=o.mean(axis=0).tolist())

        def tensors(c, r, y):
            return torch.from_numpy(c), torch.from_numpy(r), torch.from_numpy(y)

        history = Trainer(trainer_cfg, progress=progress, log=log).fit(
            module, _loss, tensors(cand, recent, o), tensors(cand_v, recent_v, o_v)
        )
        module.to("cpu").eval()
        self.module_, self.history_ = module, history
        self.model_config_, self.trainer_config_ = model_cfg, trainer_cfg
        self.responses_, self.cand_fields_, self.recent_fields_ = responses, cand_f, recent_f
        self.cand_cardinalities_, self.recent_cardinalities_ = cand_card, recent_card
        self.n_candidates_ = int(cand.shape[2])
        self.n_recent_ = int(recent.shape[2]) if recent_f else 0
        self.label_mean_ = o.mean(axis=0).astype(float).tolist()
        return self

    # --- prediction -----------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit() or load an artifact"
            )

    def encode(self, requests: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(cand (N, Fc, L), recent (N, Fr, Lr)) int32 codes of a request table."""
        self._check_fitted()
        if not isinstance(requests, pa.Table):
            raise TypeError(f"requests: expected a pyarrow Table, got {type(requests).__name__}")
        # L may differ from training (pooling is a mean); only the fields must match
        return (item_codes(requests, self.cand_fields_, CAND),
                item_codes(requests, self.recent_fields_, RECENT))

    @torch.inference_mode()
    def predict_shares(self, requests, *, batch_size: int = 16384) -> np.ndarray:
        """o_hat (N, R) float32: predicted share of exposed items of each type (eq. 9).

        ``requests``: a request table or pre-encoded ``(cand, recent)`` code arrays.
        """
        self._check_fitted()
        cand, recent = requests if isinstance(requests, tuple) else self.encode(requests)
        ct, rt = torch.from_numpy(np.asarray(cand)), torch.from_numpy(np.asarray(recent))
        out = [self.module_(ct[s:s + batch_size], rt[s:s + batch_size]).numpy()
               for s in range(0, ct.shape[0], batch_size)]
        if not out:
            return np.zeros((0, len(self.responses_)), dtype=np.float32)
        return np.concatenate(out)

    def predict_weights(self, requests, *, batch_size: int = 16384) -> np.ndarray:
        """Value weights w (N, R) (eq. 10): rows in [0, 1], summing to 1."""
        from hmum.decision.core import value_weights

        return value_weights(self.predict_shares(requests, batch_size=batch_size))

    # --- artifacts ------------------------------------------------------------
    def _config_json(self) -> dict:
        return {
            "model_type": MODEL_TYPE,
            "model": self.model_config_.model_dump(),
            "trainer": self.trainer_config_.model_dump(),
            "responses": self.responses_,
            "cand_fields": self.cand_fields_,
            "recent_fields": self.recent_fields_,
            "cand_cardinalities": self.cand_cardinalities_,
            "recent_cardinalities": self.recent_cardinalities_,
            "n_candidates": self.n_candidates_,
            "n_recent": self.n_recent_,
            "label_mean": self.label_mean_,
        }

    def save(self, path: str | Path) -> Path:
        """Write the artifact folder: config.json, history.json, weights, manifest."""
        self._check_fitted()
        return write_artifact(
            path,
            json_files={"config": self._config_json(), "history": self.history_.model_dump()},
            tensors=self.module_.state_dict(),
        )

    @classmethod
    def load(cls, path: str | Path) -> ValueWeightEstimator:
        """Read an artifact written by ``save`` (sha256 sums verified)."""
        jsons, weights = read_artifact(path)
        cfg = jsons.get("config")
        if cfg is None:
            raise ArtifactError(f"{path}: config.json missing from the artifact")
        if cfg.get("model_type") != MODEL_TYPE:
            raise ArtifactError(f"{path}: model_type {cfg.get('model_type')!r} is not a "
                                f"value-weight model ({MODEL_TYPE!r})")
        est = cls(responses=cfg["responses"], cand_fields=cfg["cand_fields"],
                  recent_fields=cfg["recent_fields"], model=cfg["model"], trainer=cfg["trainer"])
        model_cfg, trainer_cfg = est._configs()
        module = ValueWeightModel(cfg["cand_cardinalities"], cfg["recent_cardinalities"],
                                  len(cfg["responses"]), model_cfg)
        module.load_state_dict(weights)
        module.eval()
        est.module_, est.model_config_, est.trainer_config_ = module, model_cfg, trainer_cfg
        est.history_ = TrainingHistory.model_validate(jsons.get("history", {}))
        est.responses_ = list(cfg["responses"])
        est.cand_fields_, est.recent_fields_ = list(cfg["cand_fields"]), list(cfg["recent_fields"])
        est.cand_cardinalities_ = list(cfg["cand_cardinalities"])
        est.recent_cardinalities_ = list(cfg["recent_cardinalities"])
        est.n_candidates_, est.n_recent_ = int(cfg["n_candidates"]), int(cfg["n_recent"])
        est.label_mean_ = list(cfg["label_mean"])
        return est

    def export_onnx(self, path: str | Path, *, opset: int = 17) -> Path:
        """Write the per-request graph (cand, recent) -> (o_hat, w) as ONNX.

        Inputs ``cand`` (N, Fc, L) and ``recent`` (N, Fr, Lr) int64 with dynamic N,
        L and Lr; outputs ``o_hat`` and ``w`` (N, R) float32. The field and
        response names are stored in the model's metadata (``hmum``, JSON).
        """
        self._check_fitted()
        if not self.recent_fields_:
            raise ValueError("export_onnx needs at least one recent-item field")
        import onnx

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        graph = ValueWeightGraph(self.module_).eval()
        cand = torch.zeros(2, len(self.cand_fields_), self.n_candidates_, dtype=torch.long)
        recent = torch.zeros(2, len(self.recent_fields_), self.n_recent_, dtype=torch.long)
        with warnings.catch_warnings():
            # the tracer warns about Python-level shape checks (constant for the
            # trace by design) and about its own deprecation; neither affects the graph
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                graph, (cand, recent), str(path), dynamo=False, opset_version=opset,
                input_names=["cand", "recent"], output_names=["o_hat", "w"],
                dynamic_axes={"cand": {0: "N", 2: "L"}, "recent": {0: "N", 2: "Lr"},
                              "o_hat": {0: "N"}, "w": {0: "N"}},
            )
        proto = onnx.load(str(path))
        meta = proto.metadata_props.add()
        meta.key = "hmum"
        meta.value = json.dumps({k: v for k, v in self._config_json().items()
                                 if k in ("model_type", "responses", "cand_fields",
                                          "recent_fields", "n_candidates", "n_recent")})
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
        return path


def _loss(module: ValueWeightModel, batch):
    """MSE between o_hat and the labels o (eq. 9's training loss), averaged over R."""
    cand, recent, o = batch
    o_hat = module(cand, recent)
    loss = torch.mean((o_hat - o) ** 2)
    with torch.no_grad():
        mae = (o_hat - o).abs().mean()
    return loss, {"mae": float(mae)}


def _holdout(table: pa.Table, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, valid): a seeded share of users (or rows) held out."""
    rng = np.random.default_rng(seed)
    n = table.num_rows
    if "user_id" in table.column_names:
        uid = table.column("user_id").to_numpy()
        users, inv = np.unique(uid, return_inverse=True)
        held = rng.random(len(users)) < frac
        if held.all() or not held.any():  # too few users: fall back to rows
            held_rows = rng.random(n) < frac
        else:
            held_rows = held[inv]
    else:
        held_rows = rng.random(n) < frac
    if not held_rows.any():
        held_rows[rng.integers(n)] = True
    if held_rows.all():
        held_rows[rng.integers(n)] = False
    return np.flatnonzero(~held_rows), np.flatnonzero(held_rows)


def load_value_weight_model(path: str | Path) -> ValueWeightEstimator:
    """Load a value-weight artifact folder (sums verified)."""
    return ValueWeightEstimator.load(path)


class OnnxValueWeights:
    """ONNX Runtime session of an exported value-weight graph, for per-request use.

    Args:
        path: the ``.onnx`` file written by ``ValueWeightEstimator.export_onnx``.
        threads: intra-op threads (1 suits one request at a time: no pool hand-off).

    ``run(cand, recent)``: codes (N, Fc, L) and (N, Fr, Lr) -> (o_hat, w), (N, R) each;
    ``weights(cand, recent)``: w (N, R) only (the per-request hot path).
    """

    def __init__(self, path: str | Path, *, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map.get("hmum")
        self.meta = json.loads(meta) if meta else {}

    def run(self, cand: np.ndarray, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        o_hat, w = self.session.run(
            None, {"cand": np.asarray(cand, dtype=np.int64),
                   "recent": np.asarray(recent, dtype=np.int64)}
        )
        return o_hat, w

    def weights(self, cand: np.ndarray, recent: np.ndarray) -> np.ndarray:
        return self.session.run(
            ["w"], {"cand": np.asarray(cand, dtype=np.int64),
                    "recent": np.asarray(recent, dtype=np.int64)}
        )[0]
