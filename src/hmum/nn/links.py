"""Output links and response losses: the one owner of both.

Every neural model (HUM and the baselines) ends in raw tower outputs ``z`` (..., R),
one per response. A *link* maps them to means in original units; a *loss* scores
those means against observed responses. The two are chosen together per response
by :func:`resolve_heads` from the response's kind and the model's ``loss`` setting
(:class:`LossConfig`, a field of every neural model's config):

============  ================  =========  =============================================
loss          response kind     link       elementwise loss (a deviance, 0 at mu = y)
============  ================  =========  =============================================
``mse``       any (the paper)   softplus   ((mu - y) / std)^2; sigmoid for binary,
                                           identity for signed continuous
``gamma``     continuous > 0    exp (log)  2 (y/mu - log(y/mu) - 1)
``tweedie``   continuous >= 0   exp (log)  Tweedie deviance of power p, / mean^(2-p)
``poisson``   count             exp (log)  2 (y log(y/mu) - (y - mu)) / mean
``bce``       binary            sigmoid    2 BCE(mu, y)
============  ================  =========  =============================================

``loss="deviance"`` picks per response: gamma for positive continuous responses
(tweedie when the training data holds zeros), poisson for counts, bce for binary
and mse for signed continuous ones. Every deviance has the mean as its minimiser,
so predictions stay means in original units; the gamma and poisson deviances weigh
*relative* errors, so a few heavy users do not dominate the fit. The divisions
(std^2, mean, mean^(2-p)) put responses of different scale on a common footing,
as the paper's standardization does for the MSE.

Links work on a scale relative to the training statistics so that a raw output of
0 is near the training mean: identity -> mean + std z; softplus -> std softplus(z);
exp -> mean exp(z); sigmoid -> sigmoid(z). Positive links never return 0 or inf
(the decision layer divides by y0*).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import BaseModel, ConfigDict, Field, field_validator

Link = Literal["identity", "softplus", "exp", "sigmoid"]
LossName = Literal["mse", "gamma", "tweedie", "poisson", "bce"]
LOSSES: tuple[str, ...] = ("mse", "gamma", "tweedie", "poisson", "bce")
#: raw outputs of the exp link are clipped here: exp(30) ~ 1e13 times the mean
_EXP_CLIP = 30.0
_EPS = 1e-7


class LossConfig(BaseModel):
    """The response-loss settings every neural model's config shares.

    ``loss``: "mse" (the paper: squared error on the standardized scale),
    "deviance" (per response kind, see the module docstring), or one loss name per
    response (``mse``, ``gamma``, ``tweedie``, ``poisson``, ``bce``).
    """

    model_config = ConfigDict(extra="forbid")

    loss: str | list[str] = Field(
        "mse", description='"mse" (paper), "deviance" (per response kind) or one name per response'
    )
    tweedie_power: float = Field(1.5, gt=1.0, lt=2.0, description="power p of the Tweedie loss")

    @field_validator("loss")
    @classmethod
    def _known(cls, v):
        names = [v] if isinstance(v, str) else list(v)
        allowed = ("mse", "deviance") if isinstance(v, str) else LOSSES
        bad = [n for n in names if n not in allowed]
        if bad:
            raise ValueError(f"expected one of {list(allowed)}, got {bad[0]!r}")
        return v


def _link_for(loss: str, kind: str, nonnegative: bool) -> str:
    if loss == "mse":
        if kind == "binary":
            return "sigmoid"
        return "softplus" if kind == "count" or nonnegative else "identity"
    return "sigmoid" if loss == "bce" else "exp"


def resolve_heads(
    responses: Sequence, config: LossConfig, positive: Sequence[bool] | None = None
) -> tuple[list[str], list[str]]:
    """(links, losses), one of each per response.

    Args:
        responses: the schema's ResponseSpec list (R): ``kind`` and ``nonnegative``.
        config: the model's LossConfig (or any config with ``loss``).
        positive: (R,) whether every training value of each response is > 0
            (decides gamma vs tweedie under "deviance"); None: assume positive.

    Raises ValueError when a loss does not fit its response's kind.
    """
    spec = config.loss
    r_count = len(responses)
    positive = [True] * r_count if positive is None else list(positive)
    if isinstance(spec, str):
        losses = [_auto_loss(spec, r, p) for r, p in zip(responses, positive, strict=True)]
    else:
        if len(spec) != r_count:
            raise ValueError(
                f"loss: expected one loss per response ({r_count}: "
                f"{[r.name for r in responses]}), got {len(spec)}: {spec}"
            )
        losses = list(spec)
    for r, loss, p in zip(responses, losses, positive, strict=True):
        _check_fits(r, loss, p)
    links = [_link_for(loss, r.kind, r.nonnegative) for r, loss in zip(responses, losses,
                                                                          strict=True)]
    return links, losses


def _auto_loss(spec: str, r, positive: bool) -> str:
    if spec == "mse":
        return "mse"
    if r.kind == "binary":
        return "bce"
    if r.kind == "count":
        return "poisson"
    if not r.nonnegative:
        return "mse"
    return "gamma" if positive else "tweedie"


def _check_fits(r, loss: str, positive: bool) -> None:
    ok = {
        "mse": True,
        "bce": r.kind == "binary",
        "poisson": r.kind in ("count", "continuous") and r.nonnegative,
        "tweedie": r.kind in ("count", "continuous") and r.nonnegative,
        "gamma": r.kind in ("count", "continuous") and r.nonnegative and positive,
    }[loss]
    if not ok:
        what = "a response with values > 0" if loss == "gamma" else {
            "bce": "a binary response", "poisson": "a non-negative response",
            "tweedie": "a non-negative response"}[loss]
        raise ValueError(
            f"loss {loss!r} for response {r.name!r} needs {what}; it is {r.kind}"
            + ("" if positive else " with zeros in the training data")
        )


def apply_link(z: torch.Tensor, links: Sequence[str], mean: torch.Tensor, std: torch.Tensor):
    """Raw tower outputs z (..., R) -> responses in original units (..., R)."""
    outs = []
    for r, link in enumerate(links):
        zr = z[..., r]
        if link == "identity":
            outs.append(mean[r] + std[r] * zr)
        elif link == "softplus":
            outs.append(std[r] * F.softplus(zr))
        elif link == "exp":
            outs.append(mean[r] * torch.exp(zr.clamp(-_EXP_CLIP, _EXP_CLIP)))
        elif link == "sigmoid":
            outs.append(torch.sigmoid(zr))
        else:
            raise ValueError(f"unknown link {link!r}")
    return torch.stack(outs, dim=-1)


def link_bias(links: Sequence[str], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Raw output (R,) that maps to the training mean under each link.

    Used to initialise the towers' last bias so training starts at the mean.
    """
    out = []
    for r, link in enumerate(links):
        if link in ("identity", "exp"):
            out.append(0.0)
        elif link == "softplus":
            v = max(float(mean[r] / std[r]), 1e-4)
            out.append(v + math.log(-math.expm1(-v)))  # inverse softplus
        elif link == "sigmoid":
            p = min(max(float(mean[r]), 1e-4), 1 - 1e-4)
            out.append(math.log(p / (1 - p)))
        else:
            raise ValueError(f"unknown link {link!r}")
    return torch.tensor(out)


def deviance(
    mu: torch.Tensor,
    y: torch.Tensor,
    losses: Sequence[str],
    mean: torch.Tensor,
    std: torch.Tensor,
    tweedie_power: float = 1.5,
) -> torch.Tensor:
    """Elementwise normalized loss of means mu against observations y: (..., R) -> (..., R).

    mu, y broadcast against each other; mean, std: (R,) training statistics.
    Every column is >= 0 and 0 where mu = y (see the module docstring's table).
    """
    cols = []
    for r, loss in enumerate(losses):
        m, t = mu[..., r], y[..., r]
        if loss == "mse":
            cols.append(((m - t) / std[r]) ** 2)
            continue
        if loss == "bce":
            p = m.clamp(_EPS, 1 - _EPS)
            cols.append(2 * F.binary_cross_entropy(p, t.clamp(0, 1).expand_as(p),
                                                   reduction="none"))
            continue
        m = m.clamp_min(_EPS)
        if loss == "gamma":
            ratio = t.clamp_min(_EPS) / m
            cols.append(2 * (ratio - torch.log(ratio) - 1))
        elif loss == "poisson":
            cols.append(2 * (torch.xlogy(t, t) - torch.xlogy(t, m) - (t - m)) / mean[r])
        elif loss == "tweedie":
            p = tweedie_power
            d = (t.clamp_min(0) ** (2 - p) / ((1 - p) * (2 - p))
                 - t * m ** (1 - p) / (1 - p) + m ** (2 - p) / (2 - p))
            cols.append(2 * d / mean[r] ** (2 - p))
        else:
            raise ValueError(f"unknown loss {loss!r}")
    return torch.stack(cols, dim=-1)
