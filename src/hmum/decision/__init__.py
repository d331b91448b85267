"""Decisions (DDM) on arrays: y0*, delta, value weights, phi, policies, guardrails,
bounds and offline policy evaluation."""

from hmum._lazy import lazy_exports

_EXPORTS = {
    "y0_star": "hmum.decision.core",
    "relative_uplift": "hmum.decision.core",
    "value_weights": "hmum.decision.core",
    "balanced_score": "hmum.decision.core",
    "enable": "hmum.decision.core",
    "decide": "hmum.decision.policies",
    "decide_from_phi": "hmum.decision.policies",
    "DecisionRule": "hmum.decision.rules",
    "load_rule": "hmum.decision.rules",
    "save_rule": "hmum.decision.rules",
    "Guardrail": "hmum.decision.guardrails",
    "fit_rule": "hmum.decision.guardrails",
    "phi_interval": "hmum.decision.bounds",
    "strategy_table": "hmum.decision.evaluation",
    "off_policy_table": "hmum.decision.evaluation",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
