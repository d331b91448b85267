"""Uplift metrics: pure functions on arrays.

Two-arm ranking metrics take ``(y, score, treatment)``, each of shape (N,), with
``treatment`` a 0/1 indicator. The multi-treatment tables take ``y`` (N, R),
``tau_hat`` (N, K, R) and ``arm`` (N,) with arm 0 the control. Definitions are in
:mod:`hmum.metrics.ranking`. Plots live in :mod:`hmum.metrics.plots`, which is not
imported here, so metrics never import matplotlib.
"""

from .bootstrap import BootstrapCI, bootstrap_ci
from .ranking import (
    perfect_qini_curve,
    perfect_uplift_curve,
    qini_auc_score,
    qini_curve,
    uplift_at_k,
    uplift_auc_score,
    uplift_curve,
)
from .tables import ate_error, ground_truth_table, pehe, uplift_table

__all__ = [
    "BootstrapCI",
    "ate_error",
    "bootstrap_ci",
    "ground_truth_table",
    "pehe",
    "perfect_qini_curve",
    "perfect_uplift_curve",
    "qini_auc_score",
    "qini_curve",
    "uplift_at_k",
    "uplift_auc_score",
    "uplift_curve",
    "uplift_table",
]
