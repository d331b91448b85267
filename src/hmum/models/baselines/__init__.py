"""Baseline uplift networks (forward only), written from their papers.

Every network shares HUM's field embeddings (``hmum.models.layers``) and
output links, and exposes ``potential_outcomes(x) -> y_hat (N, K+1, R)``.
Their estimators (fit, losses, artifacts) live in ``hmum.training.baselines``.
"""
