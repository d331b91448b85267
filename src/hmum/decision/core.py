"""The decision arithmetic of DDM (paper eqs. 6, 7, 10, 11): pure array functions.

Shapes (DESIGN.md §2): y_hat (N, K+1, R), y0_branch (N, K, R), delta (N, K, R),
o_hat (N, R), w (N, R), phi (N, K), enable (N, K) bool. Work on numpy arrays or torch tensors
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


def value_weights(o_hat, eps: float = 1e-12):
    """Value weights w (N, R) = o_hat / sum_r o_hat (eq. 10), clipped first.

    o_hat (N, R): the value-weight model's predicted shares (eq. 9). Negative
    outputs (possible with an identity tower) are clipped to 0 before
    normalizing, so a negative share can never flip the sign of a response's
    contribution to phi; a row whose clipped shares sum to <= ``eps`` gets
    uniform weights 1/R. Rows of w lie in [0, 1] and sum to 1. Works on numpy
    arrays and torch tensors (also inside an exported ONNX graph).
    """
    if o_hat.ndim != 2 or o_hat.shape[1] < 1:
        raise ValueError(f"o_hat must have shape (N, R), got {tuple(o_hat.shape)}")
    if isinstance(o_hat, np.ndarray):
        o = np.clip(o_hat, 0.0, None)
        s = o.sum(axis=1, keepdims=True)
        ok = s > eps
        return np.where(ok, o / np.where(ok, s, 1.0), 1.0 / o.shape[1])
    o = o_hat.clamp(min=0.0)
    s = o.sum(dim=1, keepdim=True)
    ok = s > eps
    # int(): R is fixed per model; a plain number keeps an exported graph free of
    # shape arithmetic
    return _torch_where(ok, o / s.clamp(min=eps), 1.0 / int(o.shape[1]))


def _torch_where(cond, a, b):
    """torch.where without importing torch at module import (core stays numpy-only)."""
    return __import__("torch").where(cond, a, b)


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
