"""End-to-end jobs: train/evaluate (``train``), DDM (``ddm``), the demo (``demo``),
the benchmark harness (``bench``), scoring and store reads (``store``) and report
helpers (``reports``)."""

from hmum._lazy import lazy_exports

_EXPORTS = {
    "train_hum": "hmum.workflows.train",
    "evaluate_estimator": "hmum.workflows.train",
    "evaluate_models": "hmum.workflows.train",
    "run_demo": "hmum.workflows.demo",
    "run_bench": "hmum.workflows.bench",
    "markdown_table": "hmum.workflows.reports",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
