"""A reference point for the benchmark tables: per-arm training means.

``ArmMeansEstimator`` predicts, for every user, the mean observed response of
each arm in the training data, so its uplift is the difference in means (the
ATE estimate of a randomized experiment) for everyone. It personalizes nothing:
its Qini and AUUC are exactly 0 (a constant score), and its PEHE is what a
model must beat to have learned anything about *who* gains. On data where the
effects are small next to the noise, this is often the best PEHE available.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from hmum.data.schema import Schema
from hmum.data.validate import ExperimentData, check_fit_data
from hmum.exceptions import ArtifactError, NotFittedError, format_validation_error
from hmum.models.artifacts import write_artifact
from hmum.models.base import fit_data, from_pandas, outcomes_frame, uplift_frame


class ArmMeansEstimator:
    """Per-arm means of the training responses, for every user.

    Same interface as the other estimators: ``fit(train, valid=None, ...)``,
    ``predict_outcomes(data) -> (N, K+1, R)``. ``model`` and ``trainer`` are
    accepted for the harness's sake and unused (there is nothing to set).
    """

    model_type = "arm_means"
    max_treatments = None
    #: nothing to configure (``hmum train -o`` refuses every key)
    config_class = None

    def __init__(self, schema: Schema, *, model=None, trainer=None) -> None:
        self.schema = schema
        self.model = model
        self.trainer = trainer

    def fit(self, train: ExperimentData, valid: ExperimentData | None = None, *,
            progress: bool = False, log=None, **_) -> ArmMeansEstimator:
        """``train``: ExperimentData, or a pandas DataFrame of the schema's columns."""
        train = fit_data(train, self.schema, "train")
        check_fit_data(train, self.schema, "train")
        k1 = self.schema.K + 1
        counts = np.bincount(train.arm, minlength=k1)
        if (counts == 0).any():
            empty = [self.schema.arms[a] for a in np.flatnonzero(counts == 0)]
            raise ValueError(f"train: arm(s) {empty} have no rows; cannot estimate their mean")
        sums = np.zeros((k1, train.y.shape[1]))
        np.add.at(sums, train.arm, train.y)
        self.means_ = sums / counts[:, None]  # (K+1, R)
        return self

    def predict_outcomes(self, data, *, as_frame: bool = False, **_):
        """y_hat (N, K+1, R): the training means of each arm, the same for every row.

        ``data``: ExperimentData, a pyarrow table or a DataFrame; ``as_frame``: a
        DataFrame with columns ``y_hat__<arm>__<response>``, the input's index kept.
        """
        if not hasattr(self, "means_"):
            raise NotFittedError("this ArmMeansEstimator is not fitted yet: call fit()")
        table = from_pandas(data)
        n = len(table) if isinstance(table, ExperimentData) else table.num_rows
        y = np.broadcast_to(self.means_, (n, *self.means_.shape)).copy()
        return outcomes_frame(y, self.schema, data) if as_frame else y

    def predict_uplift(self, data, *, as_frame: bool = False, **_):
        """tau (N, K, R): the difference in training means, for every row."""
        y = self.predict_outcomes(data)
        tau = y[:, 1:] - y[:, :1]
        return uplift_frame(tau, self.schema, data) if as_frame else tau

    def predict_all(self, data, **_) -> dict[str, np.ndarray]:
        """{"y_hat": (N, K+1, R)}, as the neural estimators' ``predict_all``."""
        return {"y_hat": self.predict_outcomes(data)}

    def save(self, path: str | Path) -> Path:
        """Write the artifact folder: config, schema, the (K+1, R) means, manifest."""
        if not hasattr(self, "means_"):
            raise NotFittedError("this ArmMeansEstimator is not fitted yet: call fit()")
        return write_artifact(
            path,
            json_files={"config": {"model_type": self.model_type,
                                   "name": getattr(self, "registry_name_", None),
                                   "split": getattr(self, "split_", None),
                                   "data_fingerprint": getattr(self, "data_fingerprint_", None)},
                        "schema": self.schema.model_dump()},
            tensors={"means": torch.from_numpy(np.ascontiguousarray(self.means_))},
        )

    @classmethod
    def _from_artifact(cls, jsons: dict, weights: dict) -> ArmMeansEstimator:
        """The estimator of an artifact's parts (``hmum.models.registry.load_estimator``)."""
        try:
            schema = Schema.model_validate(jsons["schema"])
        except ValidationError as e:
            raise ArtifactError(format_validation_error(e, source="schema.json")) from None
        means = weights["means"].numpy().astype(np.float64)
        if means.shape != (schema.K + 1, schema.R):
            raise ArtifactError(f"weights.safetensors holds means of shape {tuple(means.shape)}, "
                                f"schema.json needs (K+1, R) = ({schema.K + 1}, {schema.R})")
        est = cls(schema)
        est.means_ = means
        config = jsons["config"]
        for key, attr in (("name", "registry_name_"), ("split", "split_"),
                          ("data_fingerprint", "data_fingerprint_")):
            if config.get(key):
                setattr(est, attr, config[key])
        return est
