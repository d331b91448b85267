"""Training losses (eq. 5). Pure functions of model outputs and labels."""

from __future__ import annotations

import torch

from hmum.models.hum import HUMOutput

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
    out: HUMOutput,
    arm: torch.Tensor,
    y: torch.Tensor,
    y_std: torch.Tensor,
    branch_treatment: torch.Tensor,
    kl_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The masked HUM loss of eq. 5, on standardized responses.

    A row of arm k > 0 trains only the treated output of treatment k's branches;
    a row of arm 0 trains every branch's control output and adds the KL term.
    Squared errors are divided by the training std of each response and summed
    over responses; the total is divided by the number of rows.

    Args:
        out: HUM forward output for N rows (B branches, R responses, M experts).
        arm: (N,) int in [0, K].
        y: (N, R) observed responses.
        y_std: (R,) training std of the responses.
        branch_treatment: (B,) treatment t(b) of each branch.
        kl_weight: coefficient of the KL term (0 = HUM w/o KL).

    Returns:
        (scalar loss, {"mse": ..., "kl": ...} as floats for logging).
    """
    n = y.shape[0]
    yy = y.unsqueeze(1)
    se_t = (((out.y_treated - yy) / y_std) ** 2).sum(-1)  # (N, B)
    se_c = (((out.y_control - yy) / y_std) ** 2).sum(-1)  # (N, B)
    treated = (arm.unsqueeze(1) == branch_treatment.unsqueeze(0)).to(se_t.dtype)
    control = (arm == 0).to(se_c.dtype).unsqueeze(1)
    mse = (se_t * treated).sum() + (se_c * control).sum()
    loss = mse
    kl_val = 0.0
    if kl_weight > 0:
        kl = (control_gate_kl(out.gate_control).sum(-1) * control).sum()
        loss = loss + kl_weight * kl
        kl_val = float(kl.detach()) / n
    return loss / n, {"mse": float(mse.detach()) / n, "kl": kl_val}
