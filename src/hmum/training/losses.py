"""Training losses (eq. 5). Pure functions of model outputs and labels.

The per-response loss itself (MSE, Gamma, Tweedie, Poisson, BCE) has one owner,
``hmum.models.links.deviance``; this module combines it with HUM's masking and
KL term, and with the baselines' factual-outcome view.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hmum.models.hum import FactualOutput
from hmum.models.links import deviance

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
        losses: (R,) loss names (``hmum.models.links``).
        y_mean, y_std: (R,) training statistics of the responses.
        kl_weight: coefficient of the KL term (0 = HUM w/o KL).
        tweedie_power: p of a "tweedie" loss.

    Returns:
        (scalar loss, {"fit": ..., "kl": ...} as floats for logging).
    """
    n = y.shape[0]
    valid = out.valid.to(out.y.dtype)  # (B, 2, n)
    dev = deviance(out.y, y[out.rows], losses, y_mean, y_std, tweedie_power).sum(-1)
    fit = (dev * valid).sum()
    loss = fit
    kl_val = 0.0
    if kl_weight > 0:
        kl_rows = control_gate_kl(out.gate_control.transpose(0, 1)).sum(-1)  # (n, B)
        kl = (kl_rows * valid[0, 1].unsqueeze(1)).sum()
        loss = loss + kl_weight * kl
        kl_val = float(kl.detach()) / n
    return loss / n, {"fit": float(fit.detach()) / n, "kl": kl_val}
