"""hmum: heterogeneous multi-treatment, multi-response uplift modeling (HMUM).

The public API. Everything a user needs is importable from here::

    from hmum import Schema, load_experiment, get_model, list_models, load_estimator

    data = load_experiment("experiment.parquet", Schema.from_json("schema.json"))
    model = get_model("hum", data.schema).fit(data)
    y_hat = model.predict_outcomes(data)        # (N, K+1, R)

Names are loaded on first use (PEP 562), so ``import hmum`` and the command
line's ``--help`` do not pay for importing torch. Shapes and vocabulary: N rows,
F feature fields, K treatments (arm 0 is control), R responses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hmum._lazy import lazy_exports
from hmum._version import __version__

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # data
    "Schema": "hmum.data.schema",
    "ExperimentData": "hmum.data.validate",
    "load_experiment": "hmum.data.validate",
    "read_table": "hmum.data.io",
    "SimulatorConfig": "hmum.data.simulator",
    "simulate": "hmum.data.simulator",
    "simulate_requests": "hmum.data.simulator",
    "load_benchmark": "hmum.data.datasets",
    # models: the contract, the one registry, the configs
    "UpliftModel": "hmum.models.base",
    "ModelEntry": "hmum.models.registry",
    "get_model": "hmum.models.registry",
    "list_models": "hmum.models.registry",
    "register": "hmum.models.registry",
    "load_estimator": "hmum.models.registry",
    "HUMEstimator": "hmum.models.hum",
    "HUMConfig": "hmum.models.hum",
    "BaselineConfig": "hmum.models.baseline",
    "ArmMeansEstimator": "hmum.models.arm_means",
    "ValueWeightEstimator": "hmum.models.value_weight",
    "load_value_weight_model": "hmum.models.value_weight",
    "EncoderConfig": "hmum.data.encoder",
    "TrainerConfig": "hmum.training.trainer",
    # decisions (DDM)
    "relative_uplift": "hmum.decision.core",
    "value_weights": "hmum.decision.core",
    "balanced_score": "hmum.decision.core",
    "decide": "hmum.decision.policies",
    "DecisionRule": "hmum.decision.rules",
    "load_rule": "hmum.decision.rules",
    # metrics
    "uplift_table": "hmum.metrics.tables",
    "ground_truth_table": "hmum.metrics.tables",
    "qini_auc_score": "hmum.metrics.ranking",
    "uplift_auc_score": "hmum.metrics.ranking",
    # errors a user may catch
    "HmumError": "hmum.exceptions",
    "ConfigError": "hmum.exceptions",
    "DataError": "hmum.exceptions",
    "DatasetNotFoundError": "hmum.exceptions",
    "ArtifactError": "hmum.exceptions",
    "NotFittedError": "hmum.exceptions",
    "DecisionConfigError": "hmum.exceptions",
    "DistributedError": "hmum.exceptions",
    "ModelCheckError": "hmum.exceptions",
    "ScoringError": "hmum.exceptions",
    "StoreError": "hmum.exceptions",
    "StoreTimeout": "hmum.exceptions",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from hmum.data.datasets import load_benchmark
    from hmum.data.encoder import EncoderConfig
    from hmum.data.io import read_table
    from hmum.data.schema import Schema
    from hmum.data.simulator import SimulatorConfig, simulate, simulate_requests
    from hmum.data.validate import ExperimentData, load_experiment
    from hmum.decision.core import balanced_score, relative_uplift, value_weights
    from hmum.decision.policies import decide
    from hmum.decision.rules import DecisionRule, load_rule
    from hmum.exceptions import (
        ArtifactError,
        ConfigError,
        DataError,
        DatasetNotFoundError,
        DecisionConfigError,
        DistributedError,
        HmumError,
        ModelCheckError,
        NotFittedError,
        ScoringError,
        StoreError,
        StoreTimeout,
    )
    from hmum.metrics.ranking import qini_auc_score, uplift_auc_score
    from hmum.metrics.tables import ground_truth_table, uplift_table
    from hmum.models.arm_means import ArmMeansEstimator
    from hmum.models.base import UpliftModel
    from hmum.models.baseline import BaselineConfig
    from hmum.models.hum import HUMConfig, HUMEstimator
    from hmum.models.registry import (
        ModelEntry,
        get_model,
        list_models,
        load_estimator,
        register,
    )
    from hmum.models.value_weight import ValueWeightEstimator, load_value_weight_model
    from hmum.training.trainer import TrainerConfig
