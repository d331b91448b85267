"""Data: schema, readers and validation, feature encoder, split, batching, the
simulator and the benchmark dataset loaders. Public names load on first use."""

from hmum._lazy import lazy_exports

_EXPORTS = {
    "Schema": "hmum.data.schema",
    "ResponseSpec": "hmum.data.schema",
    "FeatureSpec": "hmum.data.schema",
    "ground_truth_column": "hmum.data.schema",
    "ExperimentData": "hmum.data.validate",
    "validate_table": "hmum.data.validate",
    "load_experiment": "hmum.data.validate",
    "read_table": "hmum.data.io",
    "EncoderConfig": "hmum.data.encoder",
    "FeatureEncoder": "hmum.data.encoder",
    "split_indices": "hmum.data.split",
    "SimulatorConfig": "hmum.data.simulator",
    "simulate": "hmum.data.simulator",
    "simulate_requests": "hmum.data.simulator",
    "load_benchmark": "hmum.data.datasets",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
