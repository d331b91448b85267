"""causalml's meta-learners with LightGBM, behind hmum's estimator interface.

What a practitioner would pick instead of a neural uplift model: the S-, T- and
X-learners of Künzel et al. (2019) as implemented by causalml
(``BaseSRegressor`` / ``BaseTRegressor`` / ``BaseXRegressor``, and the
``...Classifier`` variants for binary responses), each base model a
``lightgbm.LGBMRegressor`` / ``LGBMClassifier`` with LightGBM's default
parameters, seeded. Needs the optional extra ``hmum[causalml]``.

Like every hmum estimator they answer ``predict_outcomes(data)`` with y_hat of
shape (N, K+1, R):

* one causalml learner per response (R of them); the K treatments are causalml's
  treatment groups (the arm names, ``arms[0]`` the control), so each learner is
  multi-treatment;
* ``y_hat[:, 0]`` is the learner's control outcome: the T- and X-learners' control
  model (fitted once on the control rows), the S-learner's mean over its K
  per-treatment models with the treatment column set to 0;
* ``y_hat[:, k] = y_hat[:, 0] + tau_k`` with causalml's effect estimate tau_k, so
  the uplift ``y_hat[:, k] - y_hat[:, 0]`` is exactly what causalml predicts.
  (For the T-learner this is its treatment model's output.)
* regressors have no output link: for a non-negative response (time, views) y_hat
  can be negative where a tree ensemble extrapolates (seen on 400 simulated users).
  It is left as causalml predicts it; the decision layer's relative uplift floors
  the denominator (``hmum.decision.core``), and the neural models' softplus links
  keep theirs positive.

Features: numeric fields enter as float64 (missing values as NaN, which LightGBM
routes natively). Categorical fields enter as ordinal codes: the ids of hmum's
``FeatureEncoder`` vocabulary fitted on the training rows (0 missing, 1 unseen,
2.. the values by training frequency), as floats. They are *not* declared as
LightGBM categorical features: the S-learner prepends a treatment column, which
would shift declared column indices, and the codes are what an sklearn user of
causalml typically feeds (an ordinal encoding).

Binary responses use the classifier variants (outcomes are probabilities) when
every arm's training rows hold both classes; otherwise (e.g. no conversion at
all in a small control arm) that response falls back to the regressor variant on
the 0/1 labels, which LightGBM's classifier cannot fit.

The X-learner weighs its two effect models with a propensity score per
treatment. ``propensity="elasticnet"`` (default, causalml's own default) fits
causalml's ``ElasticNetPropensityModel`` on the rows of control and arm k, on the
features with missing values imputed by training medians and standardized;
``propensity="constant"`` uses arm k's share among those training rows (the
design propensity of a randomized experiment).

The validation split is not used (LightGBM's defaults have no early stopping);
the models see exactly the training rows the neural models train on.

Artifacts: causalml models can only be pickled, and hmum artifacts never use
pickle, so ``save`` refuses; refit from the data instead.
"""

from __future__ import annotations

import time
import warnings
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from sklearn.exceptions import ConvergenceWarning

from hmum.data.encoder import FeatureEncoder
from hmum.data.schema import Schema
from hmum.data.validate import ExperimentData, check_fit_data, numeric_column, validate_table
from hmum.exceptions import NotFittedError
from hmum.models.base import as_config, fit_data, from_pandas, outcomes_frame, uplift_frame
from hmum.training.trainer import TrainerConfig

__all__ = [
    "CausalMLConfig",
    "CausalMLSLearner",
    "CausalMLTLearner",
    "CausalMLXLearner",
    "backend",
    "causalml_available",
]

EXTRA_HINT = "pip install 'hmum[causalml]'"


def backend() -> SimpleNamespace:
    """causalml's meta-learner classes and lightgbm, or an ImportError naming the extra."""
    try:
        import lightgbm
        from causalml.inference.meta import (
            BaseSClassifier,
            BaseSRegressor,
            BaseTClassifier,
            BaseTRegressor,
            BaseXClassifier,
            BaseXRegressor,
        )
        from causalml.propensity import ElasticNetPropensityModel
    except ImportError as e:
        raise ImportError(
            "the causalml meta-learners (causalml_s, causalml_t, causalml_x) need the optional "
            f"extra hmum[causalml] (causalml and lightgbm): {EXTRA_HINT}; import failed: {e}"
        ) from e
    return SimpleNamespace(
        lightgbm=lightgbm,
        s=(BaseSRegressor, BaseSClassifier),
        t=(BaseTRegressor, BaseTClassifier),
        x=(BaseXRegressor, BaseXClassifier),
        propensity_model=ElasticNetPropensityModel,
    )


def causalml_available() -> bool:
    """Whether causalml and lightgbm import (the extra ``hmum[causalml]`` is installed)."""
    try:
        backend()
    except ImportError:
        return False
    return True


class CausalMLConfig(BaseModel):
    """Settings of a causalml meta-learner (the ``model`` argument)."""

    model_config = ConfigDict(extra="forbid")

    lgbm: dict[str, Any] = Field(
        default_factory=dict,
        description="LightGBM parameters on top of its defaults (e.g. n_estimators); "
        "random_state and n_jobs come from the trainer settings (seed, num_threads)",
    )
    propensity: Literal["elasticnet", "constant"] = Field(
        "elasticnet", description="X-learner only: how the propensity per treatment is set"
    )


class _CausalMLLearner:
    """Shared machinery of the three meta-learners (see the module docstring).

    Args:
        schema: the experiment's Schema (K treatments, R responses).
        model: CausalMLConfig or dict.
        trainer: TrainerConfig or dict, for the interface shared with the neural
            estimators; only ``seed`` (LightGBM's random_state) and ``num_threads``
            (LightGBM's n_jobs; None = 1 thread) are used, the rest (epochs, batch
            size, learning rate) does not apply to gradient boosting.
    """

    model_type: ClassVar[str] = ""
    #: causalml learner family: "s", "t" or "x"
    family: ClassVar[str] = ""
    #: any number of treatments (causalml's multi-treatment support)
    max_treatments: ClassVar[int | None] = None
    config_class: ClassVar[type] = CausalMLConfig
    #: why ``save`` refuses (``hmum train --model`` says it before training)
    save_refusal: ClassVar[str] = (
        "causalml models can only be pickled and hmum artifacts never use pickle; fit it in "
        "Python (get_model) or compare it with hmum bench")

    def __init__(self, schema: Schema, *, model=None, trainer=None) -> None:
        self.schema = schema
        self.model = model
        self.trainer = trainer

    # --- configs ------------------------------------------------------------
    def _configs(self) -> tuple[CausalMLConfig, TrainerConfig]:
        return as_config(self.model, CausalMLConfig), as_config(self.trainer, TrainerConfig)

    def _lgbm_params(self, cfg: CausalMLConfig, tcfg: TrainerConfig) -> dict:
        # verbose=-1: LightGBM otherwise prints a warning per tree without a split
        base = {"random_state": tcfg.seed, "n_jobs": tcfg.num_threads or 1, "verbose": -1}
        return {**base, **cfg.lgbm}

    # --- features -------------------------------------------------------------
    def _matrix(self, features: pa.Table) -> np.ndarray:
        """Feature matrix X (N, F) float64 in schema order (see the module docstring)."""
        n = features.num_rows
        x = np.empty((n, self.schema.F), dtype=np.float64)
        cat_ids = self.cat_encoder_.transform(features) if self.cat_encoder_ else None
        c = 0
        for j, f in enumerate(self.schema.features):
            if f.kind == "numeric":
                x[:, j] = numeric_column(features.column(f.name), f.name)
            else:
                x[:, j] = cat_ids[:, c]
                c += 1
        return x

    def _propensity_matrix(self, x: np.ndarray) -> np.ndarray:
        """X imputed with training medians and standardized (for the linear propensity)."""
        z = np.where(np.isnan(x), self.x_median_, x)
        return (z - self.x_median_) / self.x_scale_

    # --- fitting --------------------------------------------------------------
    def fit(
        self,
        train: ExperimentData,
        valid: ExperimentData | None = None,
        *,
        progress: bool = False,
        log=None,
        checkpoint_dir=None,
        resume: bool = False,
    ) -> _CausalMLLearner:
        """Fit one causalml learner per response on ``train``.

        ``valid``, ``progress``, ``checkpoint_dir`` and ``resume`` are accepted for the
        shared estimator interface and not used. ``log`` (optional) receives one dict
        when fitting ends (``{"epoch": 1, "seconds": ...}``): boosting has no epochs.
        """
        be = backend()
        cfg, tcfg = self._configs()
        train = fit_data(train, self.schema, "train")
        check_fit_data(train, self.schema, "train")
        t0 = time.perf_counter()
        s = self.schema
        counts = np.bincount(train.arm, minlength=s.K + 1)
        if (counts == 0).any():
            empty = [s.arms[a] for a in np.flatnonzero(counts == 0)]
            raise ValueError(
                f"train: arm(s) {empty} have no rows; each of the {s.K + 1} arms needs "
                f"training rows (rows per arm: {dict(zip(s.arms, counts.tolist(), strict=True))})"
            )
        cats = [f for f in s.features if f.kind == "categorical"]
        self.cat_encoder_ = FeatureEncoder(cats).fit(train.features) if cats else None
        x = self._matrix(train.features)
        treatment = np.asarray(s.arms, dtype=object)[train.arm]
        params = self._lgbm_params(cfg, tcfg)

        p_train = None
        if self.family == "x":
            p_train = self._fit_propensity(be, cfg, tcfg, x, train.arm)

        learners, classifier = [], []
        with warnings.catch_warnings():
            # sklearn's FutureWarnings from inside causalml's propensity model
            warnings.simplefilter("ignore", FutureWarning)
            for r, spec in enumerate(s.responses):
                y = train.y[:, r]
                use_clf = spec.kind == "binary" and all(
                    np.unique(y[train.arm == a]).size == 2 for a in range(s.K + 1)
                )
                learner = self._make(be, params, use_clf, control=s.arms[0])
                if p_train is None:
                    learner.fit(x, treatment, y.astype(np.int64) if use_clf else y)
                else:
                    learner.fit(x, treatment, y.astype(np.int64) if use_clf else y, p=p_train)
                learners.append(learner)
                classifier.append(use_clf)
        self.learners_, self.classifier_ = learners, classifier
        self.config_, self.trainer_config_ = cfg, tcfg
        self.fit_seconds_ = time.perf_counter() - t0
        if log is not None:
            log({"epoch": 1, "seconds": self.fit_seconds_})
        return self

    def _make(self, be, params: dict, classifier: bool, control: str):
        lgb = be.lightgbm
        reg_cls, clf_cls = getattr(be, self.family)
        if not classifier:
            return reg_cls(learner=lgb.LGBMRegressor(**params), control_name=control)
        if self.family == "x":
            # outcome models classify; the imputed effects are real-valued
            return clf_cls(outcome_learner=lgb.LGBMClassifier(**params),
                           effect_learner=lgb.LGBMRegressor(**params), control_name=control)
        return clf_cls(learner=lgb.LGBMClassifier(**params), control_name=control)

    def _fit_propensity(self, be, cfg, tcfg, x: np.ndarray, arm: np.ndarray) -> dict:
        """Propensity of arm k vs control per treatment name, for the training rows."""
        s = self.schema
        med = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0)
        self.x_median_ = np.where(np.isnan(med), 0.0, med)
        z = np.where(np.isnan(x), self.x_median_, x)
        sd = z.std(axis=0)
        self.x_scale_ = np.where(sd > 0, sd, 1.0)
        self.propensity_ = {}
        for k in range(1, s.K + 1):
            rows = (arm == 0) | (arm == k)
            if cfg.propensity == "constant":
                self.propensity_[s.arms[k]] = float(np.mean(arm[rows] == k))
            else:
                m = be.propensity_model(random_state=tcfg.seed)
                with warnings.catch_warnings():
                    # sklearn deprecations inside causalml; saga's iteration cap on
                    # causalml's fixed settings (the fit is calibrated afterwards)
                    warnings.simplefilter("ignore", FutureWarning)
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    m.fit(self._propensity_matrix(x[rows]), (arm[rows] == k).astype(np.int64))
                self.propensity_[s.arms[k]] = m
        return self._propensity(x)

    def _propensity(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        z = None
        for name, m in self.propensity_.items():
            if isinstance(m, float):
                out[name] = np.full(x.shape[0], m)
            else:
                z = self._propensity_matrix(x) if z is None else z
                out[name] = m.predict(z)
        return out

    # --- prediction -------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "learners_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit() first"
            )

    def _predict(self, data) -> tuple[np.ndarray, np.ndarray]:
        """Control outcome y0 (N, R) and uplift tau (N, K, R), float64."""
        self._check_fitted()
        data = from_pandas(data)
        if isinstance(data, pa.Table):
            data = validate_table(data, self.schema, require_arm=False, require_responses=False)
        x = self._matrix(data.features)
        s = self.schema
        n = x.shape[0]
        y0 = np.empty((n, s.R))
        tau = np.empty((n, s.K, s.R))
        p = self._propensity(x) if self.family == "x" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            for r, (learner, clf) in enumerate(zip(self.learners_, self.classifier_,
                                                   strict=True)):
                groups = list(learner.t_groups)
                cols = [groups.index(a) for a in s.arms[1:]]  # causalml sorts the names
                if self.family == "x":
                    te = learner.predict(x, p=p, verbose=False)
                    mu_c = learner.model_mu_c
                    y0[:, r] = mu_c.predict_proba(x)[:, 1] if clf else mu_c.predict(x)
                else:
                    te, yc, _ = learner.predict(x, return_components=True, verbose=False)
                    # T: one shared control model; S: one per treatment, averaged
                    y0[:, r] = np.mean([yc[g] for g in groups], axis=0)
                tau[:, :, r] = te[:, cols]
        return y0, tau

    def predict_outcomes(self, data, *, as_frame: bool = False, **_):
        """Potential outcomes y_hat (N, K+1, R) float64; y_hat[:, 0] is the control outcome,
        y_hat[:, k] = y_hat[:, 0] + causalml's uplift of treatment k.

        ``data``: ExperimentData, a raw pyarrow table or a DataFrame with the schema's
        features; ``as_frame``: a DataFrame (``y_hat__<arm>__<response>``, index kept).
        """
        y0, tau = self._predict(data)
        y = np.concatenate([y0[:, None], y0[:, None] + tau], axis=1)
        return outcomes_frame(y, self.schema, data) if as_frame else y

    def predict_all(self, data, **_) -> dict[str, np.ndarray]:
        """{"y_hat": (N, K+1, R)}, as the neural estimators' ``predict_all``."""
        return {"y_hat": self.predict_outcomes(data)}

    def predict_uplift(self, data, *, as_frame: bool = False, **_):
        """Uplift tau (N, K, R) float64, causalml's effect estimates (``as_frame``: a
        DataFrame with columns ``tau__<treatment>__<response>``)."""
        tau = self._predict(data)[1]
        return uplift_frame(tau, self.schema, data) if as_frame else tau

    def save(self, path) -> None:
        """Refused: see the module docstring."""
        raise NotImplementedError(
            f"{type(self).__name__} ({self.model_type!r}) cannot be saved: causalml models "
            "can only be pickled, and hmum artifacts never use pickle (loading a pickle runs "
            f"arbitrary code); refit it from the data instead of saving it to {str(path)!r}"
        )


class CausalMLSLearner(_CausalMLLearner):
    """causalml S-learner (one LightGBM model per treatment, the treatment as a feature)."""

    model_type = "causalml_s"
    family = "s"


class CausalMLTLearner(_CausalMLLearner):
    """causalml T-learner (a LightGBM model for the control and one per treatment)."""

    model_type = "causalml_t"
    family = "t"


class CausalMLXLearner(_CausalMLLearner):
    """causalml X-learner (outcome models, imputed-effect models, propensity weighting)."""

    model_type = "causalml_x"
    family = "x"


#: harness name -> estimator class
CAUSALML_LEARNERS: dict[str, type[_CausalMLLearner]] = {
    c.model_type: c for c in (CausalMLSLearner, CausalMLTLearner, CausalMLXLearner)
}
