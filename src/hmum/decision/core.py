"""The decision arithmetic of DDM (paper eqs. 6, 7, 10, 11): pure array functions.

Shapes (DESIGN.md §2): y_hat (N, K+1, R), y0_branch (N, K, R), delta (N, K, R),
w (N, R), phi (N, K), enable (N, K) bool. Work on numpy arrays or torch tensors
alike (only elementwise operations, sums and einsum).
"""

from __future__ import annotations

import numpy as np

#: Smallest no-treatment estimate used as a divisor in the relative uplift
#: (eq. 7). A positive link keeps y0* > 0, but it can be tiny for an inactive
#: user; dividing by at least this floor keeps delta finite instead of inf/NaN.
Y0_FLOOR = 1e-6


def y0_star(y0_branch):
    """Adjusted no-treatment estimate y0* (eq. 6): the mean of the K branch controls.

    y0_branch (N, K, R) -> (N, R); always between the smallest and largest branch.
    """
    return y0_branch.mean(1)


def relative_uplift(y_hat, floor: float = Y0_FLOOR):
    """delta (N, K, R) = y_hat[:, 1:] / max(y_hat[:, :1], floor) - 1 (eq. 7).

    y_hat (N, K+1, R) holds y0* in ``y_hat[:, 0]``. Responses whose no-treatment
    estimate is below ``floor`` are divided by ``floor`` (documented guard,
    never a silent inf or NaN). Raises ValueError on non-finite input.
    """
    if y_hat.ndim != 3 or y_hat.shape[1] < 2:
        raise ValueError(
            f"y_hat must have shape (N, K+1, R) with K >= 1, got {tuple(y_hat.shape)}"
        )
    if not np.isfinite(_np(y_hat)).all():
        raise ValueError("y_hat contains NaN or inf; cannot compute relative uplift")
    y0 = y_hat[:, :1]
    y0 = y0.clip(min=floor) if hasattr(y0, "clip") else np.maximum(y0, floor)
    return y_hat[:, 1:] / y0 - 1


def balanced_score(delta, w):
    """phi (N, K) = sum_r w[n, r] * delta[n, k, r] (eq. 11).

    delta (N, K, R), w (N, R) with rows summing to 1.
    """
    if delta.shape[0] != w.shape[0] or delta.shape[2] != w.shape[1]:
        raise ValueError(
            f"delta (N, K, R) = {tuple(delta.shape)} and w (N, R) = {tuple(w.shape)} do not match"
        )
    xp = np if isinstance(delta, np.ndarray) else __import__("torch")
    return xp.einsum("nkr,nr->nk", delta, w)


def enable(phi, sigma: float = 0.0):
    """enable (N, K) bool: treatment k is switched on where phi[n, k] > sigma."""
    return phi > sigma


def _np(a):
    return a if isinstance(a, np.ndarray) else a.detach().cpu().numpy()
