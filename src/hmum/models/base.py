"""The model contract (``UpliftModel``) and the machinery the neural estimators share.

Every estimator answers the same question: ``predict_outcomes(data)`` returns
potential outcomes ``y_hat`` of shape (N, K+1, R), ``y_hat[:, 0]`` being the
no-treatment estimate. Metrics, decisions and serving only see that array.

The constructor only stores parameters; ``fit`` validates and trains and
returns self; learned state ends in ``_``; predicting before fitting raises
``NotFittedError``. ``save`` writes an artifact folder (JSON + safetensors +
manifest) and ``load_estimator`` reads any registered estimator back.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ValidationError

from hmum.data.encoder import EncoderConfig, FeatureEncoder
from hmum.data.schema import Schema
from hmum.data.split import split_indices
from hmum.data.validate import ExperimentData, check_fit_data, validate_table
from hmum.exceptions import ArtifactError, NotFittedError, format_validation_error
from hmum.models.artifacts import write_artifact
from hmum.models.crossfit import (
    EVERY_MEMBER,
    POSITIVE_LINKS,
    CrossFitModule,
    fold_ids,
    member_loss,
    reliability_moments,
    shrinkage,
)
from hmum.nn.links import resolve_heads
from hmum.training.trainer import Trainer, TrainerConfig, TrainingHistory


def from_pandas(data):
    """``data`` as a pyarrow table when it is a pandas DataFrame (one conversion at the
    boundary, the index dropped), else unchanged."""
    import sys

    pd = sys.modules.get("pandas")  # a DataFrame can only exist once pandas is imported
    if pd is not None and isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    return data


def fit_data(data, schema: Schema, name: str):
    """Training rows of ``schema``: a pandas DataFrame is validated against ``schema``
    (arm and responses required, messages naming ``name``); anything else (ExperimentData,
    None) is returned as it is, for ``check_fit_data`` to judge."""
    table = from_pandas(data)
    if table is not data:
        return validate_table(table, schema, source=name)
    return data


def _frame_index(data):
    import sys

    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(data, pd.DataFrame | pd.Series):
        return data.index
    return None


def outcomes_frame(y_hat: np.ndarray, schema: Schema, data=None):
    """y_hat (N, K+1, R) as a DataFrame with columns ``y_hat__<arm>__<response>``
    (arm-major); the index of ``data`` when it is a DataFrame, else 0..N-1."""
    import pandas as pd

    cols = [f"y_hat__{a}__{r}" for a in schema.arms for r in schema.response_names]
    return pd.DataFrame(y_hat.reshape(y_hat.shape[0], -1), columns=cols,
                        index=_frame_index(data))


def uplift_frame(tau: np.ndarray, schema: Schema, data=None):
    """tau (N, K, R) as a DataFrame with columns ``tau__<treatment>__<response>``
    (treatment-major); the index of ``data`` when it is a DataFrame, else 0..N-1."""
    import pandas as pd

    cols = [f"tau__{a}__{r}" for a in schema.arms[1:] for r in schema.response_names]
    return pd.DataFrame(tau.reshape(tau.shape[0], -1), columns=cols, index=_frame_index(data))


def as_config(value, cls: type[BaseModel]) -> BaseModel:
    """A config of type ``cls`` from None (defaults), an instance, or a dict of fields."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"expected {cls.__name__} or dict, got {type(value).__name__}")


_EMA_FIELDS = ("ema_decay", "ema_steps", "ema_share")


def trainer_config(value, defaults: dict) -> TrainerConfig:
    """TrainerConfig from ``value`` (None, a TrainerConfig or a dict) over a model's defaults.

    A TrainerConfig instance is taken as it is. In a dict, naming any EMA field (even
    as None) replaces the default EMA horizon instead of conflicting with it.
    """
    if isinstance(value, TrainerConfig):
        return value
    if value is not None and not isinstance(value, dict):
        return as_config(value, TrainerConfig)  # raises the usual TypeError
    given = dict(value or {})
    base = dict(defaults)
    if any(k in given for k in _EMA_FIELDS):
        base = {k: v for k, v in base.items() if k not in _EMA_FIELDS}
    return TrainerConfig(**{**base, **given})


@runtime_checkable
class UpliftModel(Protocol):
    """What every registered model does (HUM, the baselines, causalml, arm means).

    Constructed as ``cls(schema, model=..., trainer=...)`` (parameters only stored);
    ``fit`` returns self; predicting before ``fit`` raises ``NotFittedError``.
    ``max_treatments`` is None or the largest K the model's paper defines it for
    (``fit`` refuses a larger K). ``save(path)`` writes an artifact that
    ``hmum.models.registry.load_estimator`` reads back, or refuses with a
    ``NotImplementedError`` saying why (causalml models can only be pickled).
    """

    model_type: ClassVar[str]
    max_treatments: ClassVar[int | None]
    schema: Schema

    def fit(self, train: ExperimentData, valid: ExperimentData | None = None, *,
            progress: bool = False, log=None) -> UpliftModel:
        """``train`` / ``valid``: ExperimentData, or a pandas DataFrame holding the
        columns of the schema the model was built with."""

    def predict_outcomes(self, data, *, as_frame: bool = False) -> np.ndarray:
        """y_hat (N, K+1, R); ``y_hat[:, 0]`` is the no-treatment estimate. ``data``:
        ExperimentData, a pyarrow table or a pandas DataFrame with the schema's features;
        ``as_frame``: a DataFrame with columns ``y_hat__<arm>__<response>`` instead."""

    def predict_uplift(self, data, *, as_frame: bool = False) -> np.ndarray:
        """tau (N, K, R) = y_hat[:, 1:] - y_hat[:, :1]; ``as_frame``: columns
        ``tau__<treatment>__<response>``, the input's index kept."""

    def save(self, path: str | Path): ...


class NeuralUpliftEstimator:
    """Shared machinery: encoding, standardization, training, artifacts.

    Subclasses set ``model_type`` and ``config_class`` and implement
    ``_build``, ``_loss`` and ``_outcomes``.

    Args:
        schema: the experiment's Schema (K treatments, R responses, F fields).
        model: the network's config (a pydantic model of ``config_class``) or a dict.
        trainer: TrainerConfig or dict.
        encoder: EncoderConfig or dict.
    """

    model_type: ClassVar[str] = ""
    config_class: ClassVar[type[BaseModel]] = BaseModel
    #: 1 for a model its paper defines for one treatment only; None = any K
    max_treatments: ClassVar[int | None] = None
    #: this model's defaults over TrainerConfig's (the paper's), e.g. HUM's weight averaging
    default_trainer: ClassVar[dict] = {}

    def __init__(self, schema: Schema, *, model=None, trainer=None, encoder=None) -> None:
        self.schema = schema
        self.model = model
        self.trainer = trainer
        self.encoder = encoder

    # --- configs ----------------------------------------------------------
    def _configs(self) -> tuple[BaseModel, TrainerConfig, EncoderConfig]:
        return (
            as_config(self.model, self.config_class),
            trainer_config(self.trainer, self.default_trainer),
            as_config(self.encoder, EncoderConfig),
        )

    # --- subclass hooks -----------------------------------------------------
    def _build(self, cardinalities, links, y_mean, y_std, cfg) -> torch.nn.Module:
        raise NotImplementedError

    def _loss(self, module, batch):
        raise NotImplementedError

    def _outcomes(self, module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"y_hat": (n, K+1, R), ...extras} for an encoded batch x (n, F)."""
        raise NotImplementedError

    # --- fitting ------------------------------------------------------------
    def fit(
        self,
        train: ExperimentData,
        valid: ExperimentData | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = False,
        log=None,
    ) -> NeuralUpliftEstimator:
        """Fit on ``train``; ``valid`` drives early stopping and the LR schedule.

        Without ``valid``, 10 % of ``train`` (stratified by arm, seeded) is held out.
        ``log`` (optional) receives one dict per finished epoch (see ``Trainer``).
        """
        self._check_schema()
        model_cfg, trainer_cfg, enc_cfg = self._configs()
        train = fit_data(train, self.schema, "train")
        valid = fit_data(valid, self.schema, "valid")
        check_fit_data(train, self.schema, "train")
        # a refit forgets which table an earlier fit was split from (train_hum records it)
        for stale in ("split_", "data_fingerprint_"):
            self.__dict__.pop(stale, None)
        if valid is None:
            tr, va = split_indices(train.arm, (0.9, 0.1), seed=trainer_cfg.seed)
            train, valid = train.take(tr), train.take(va)
        else:
            check_fit_data(valid, self.schema, "valid")
        encoder = FeatureEncoder(self.schema.features, enc_cfg).fit(train.features)
        y_mean = train.y.mean(axis=0)
        y_std = train.y.std(axis=0)
        self._check_y_std(y_std)

        def tensors(d: ExperimentData):
            return (
                torch.from_numpy(encoder.transform(d.features)),
                torch.from_numpy(d.arm),
                torch.from_numpy(d.y.astype(np.float32)),
            )

        return self._fit_encoded(
            encoder, y_mean, y_std, tensors(train), tensors(valid),
            checkpoint_dir=checkpoint_dir, resume=resume, progress=progress, log=log,
        )

    def _fit_encoded(
        self,
        encoder: FeatureEncoder,
        y_mean: np.ndarray,
        y_std: np.ndarray,
        train: tuple[torch.Tensor, ...],
        valid: tuple[torch.Tensor, ...],
        *,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = False,
        log=None,
        dist=None,
    ) -> NeuralUpliftEstimator:
        """Build the network and train it on encoded rows; the end of ``fit``.

        train / valid: (x (N, F) int32 ids from ``encoder``, arm (N,) int64,
        y (N, R) float32). y_mean / y_std: (R,) training-split statistics.
        ``dist``: a ``hmum.training.distributed.DistContext``; then every rank
        passes its own rows and the same encoder and statistics (see
        ``hmum.training.distributed.train_worker``).
        """
        self._check_schema()
        model_cfg, trainer_cfg, _ = self._configs()
        self._check_y_std(y_std)
        # gamma needs every value > 0; the validation rows are scored by the same loss
        positive = ((train[2] > 0).all(0) & (valid[2] > 0).all(0)).tolist()
        links, losses = resolve_heads(self.schema.responses, model_cfg, positive)
        torch.manual_seed(trainer_cfg.seed)
        module = self._build_module(encoder.cardinalities, links, torch.tensor(y_mean),
                                    torch.tensor(y_std), model_cfg, trainer_cfg)
        module.losses = losses  # read by the loss functions, never by forward
        loss_fn = self._loss
        m = trainer_cfg.crossfit
        if m > 1:  # each member trains on its fold of every batch (hmum.models.crossfit)
            train = (*train, fold_ids(train, m, trainer_cfg.seed))
            # no member trains on the validation rows: each is scored on all of them
            valid = (*valid, torch.full((len(valid[0]),), EVERY_MEMBER, dtype=torch.int64))
            loss_fn = member_loss(self._loss)
        history = Trainer(
            trainer_cfg, checkpoint_dir=checkpoint_dir, progress=progress, log=log, dist=dist
        ).fit(module, loss_fn, train, valid, resume=resume)
        module.to("cpu").eval()
        if m > 1:
            self._fit_shrinkage(module, valid[0].cpu(), dist)
        self.encoder_, self.module_, self.history_ = encoder, module, history
        self.model_config_, self.trainer_config_ = model_cfg, trainer_cfg
        return self

    def _build_module(self, cardinalities, links, y_mean, y_std, model_cfg, trainer_cfg):
        """The network, or ``trainer_cfg.crossfit`` members of it in a CrossFitModule."""
        def one():
            return self._build(cardinalities, links, y_mean.float(), y_std.float(), model_cfg)

        if trainer_cfg.crossfit == 1:
            return one()
        ratio = [link in POSITIVE_LINKS for link in links]
        return CrossFitModule([one() for _ in range(trainer_cfg.crossfit)], ratio, self.schema.K)

    @torch.inference_mode()
    def _fit_shrinkage(self, module: CrossFitModule, x: torch.Tensor, dist=None,
                       batch_size: int = 65536) -> None:
        """Set the members' reliability shrinkage from their uplifts on the validation
        features x (n, F) (no member trained on them); summed over ranks under DDP, so
        every worker holds the same shrinkage."""
        parts = []
        for s in range(0, x.shape[0], batch_size):
            ys = torch.stack([self._outcomes(mem, x[s:s + batch_size])["y_hat"]
                              for mem in module.members])
            parts.append(module.uplift_scale(ys).numpy())
        moments = reliability_moments(np.concatenate(parts, axis=1))
        if dist is not None:
            every = dist.all_gather_object(moments)
            moments = {k: sum(m[k] for m in every) for k in moments}
        module.set_shrinkage(*shrinkage(moments))

    def _check_y_std(self, y_std: np.ndarray) -> None:
        if (y_std <= 0).any():
            bad = [self.schema.response_names[r] for r in np.flatnonzero(y_std <= 0)]
            raise ValueError(
                f"response(s) {bad} are constant in the training data; nothing to learn"
            )

    def _check_schema(self) -> None:
        if self.max_treatments is not None and self.schema.K > self.max_treatments:
            raise ValueError(
                f"{type(self).__name__} ({self.model_type!r}) is defined for at most "
                f"{self.max_treatments} treatment(s) in its paper; this schema has "
                f"K={self.schema.K} treatments {self.schema.arms[1:]}"
            )

    # --- prediction -----------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "module_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit() or load an artifact"
            )

    def encode(self, data: ExperimentData | pa.Table) -> np.ndarray:
        """Feature ids (N, F) int32 of ``data`` (validated features, a raw pyarrow table
        or a pandas DataFrame)."""
        self._check_fitted()
        data = from_pandas(data)
        if isinstance(data, pa.Table):
            data = validate_table(data, self.schema, require_arm=False, require_responses=False)
        return self.encoder_.transform(data.features)

    @torch.inference_mode()
    def predict_all(
        self, data: ExperimentData | pa.Table | np.ndarray, *, batch_size: int = 65536
    ) -> dict[str, np.ndarray]:
        """Every output in batches: {"y_hat": (N, K+1, R), ...model extras}, float32.

        ``data`` may also be pre-encoded feature ids (N, F), or a pandas DataFrame.
        """
        self._check_fitted()
        data = from_pandas(data)
        x = data if isinstance(data, np.ndarray) else self.encode(data)
        xt = torch.from_numpy(np.ascontiguousarray(x))
        parts: dict[str, list[np.ndarray]] = {}
        for s in range(0, xt.shape[0], batch_size):
            for k, v in self._module_outcomes(xt[s : s + batch_size]).items():
                parts.setdefault(k, []).append(v.numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}

    def _module_outcomes(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``_outcomes`` of the fitted network, or the cross-fit members' combination."""
        if isinstance(self.module_, CrossFitModule):
            return self.module_.combine([self._outcomes(m, x) for m in self.module_.members])
        return self._outcomes(self.module_, x)

    def predict_outcomes(self, data, *, batch_size: int = 65536, as_frame: bool = False):
        """Potential outcomes y_hat (N, K+1, R); y_hat[:, 0] is the no-treatment estimate.

        ``as_frame``: a DataFrame with columns ``y_hat__<arm>__<response>`` (the index of
        ``data`` when it is a DataFrame).
        """
        y = self.predict_all(data, batch_size=batch_size)["y_hat"]
        return outcomes_frame(y, self.schema, data) if as_frame else y

    def predict_uplift(self, data, *, batch_size: int = 65536, as_frame: bool = False):
        """Absolute uplift tau (N, K, R) = y_hat[:, 1:] - y_hat[:, :1].

        ``as_frame``: a DataFrame with columns ``tau__<treatment>__<response>``.
        """
        y = self.predict_outcomes(data, batch_size=batch_size)
        tau = y[:, 1:] - y[:, :1]
        return uplift_frame(tau, self.schema, data) if as_frame else tau

    # --- artifacts ------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the artifact folder: config, schema, encoder, history, weights, manifest."""
        self._check_fitted()
        config = {
            "model_type": self.model_type,
            # the registry name that built it (hmum train --model), when known
            "name": getattr(self, "registry_name_", None),
            "model": self.model_config_.model_dump(),
            "trainer": self.trainer_config_.model_dump(),
            "cardinalities": self.encoder_.cardinalities,
            "links": list(self.module_.links),
            "losses": list(self.module_.losses),
            # which rows were held out (hmum.data.split.split_from_record), when known
            "split": getattr(self, "split_", None),
            # the table that split indexes into (hmum.data.validate.data_fingerprint):
            # --test-split refuses any other table
            "data_fingerprint": getattr(self, "data_fingerprint_", None),
        }
        return write_artifact(
            path,
            json_files={
                "config": config,
                "schema": self.schema.model_dump(),
                "encoder": self.encoder_.to_dict(),
                "history": self.history_.model_dump(),
            },
            tensors=self.module_.state_dict(),
        )

    @classmethod
    def _from_artifact(cls, jsons: dict, weights: dict) -> NeuralUpliftEstimator:
        """The estimator of an artifact's parts; ArtifactError (naming the file inside
        the artifact) when they do not belong together."""
        config = jsons["config"]
        try:
            schema = Schema.model_validate(jsons["schema"])
        except ValidationError as e:
            raise ArtifactError(format_validation_error(e, source="schema.json")) from None
        try:
            encoder = FeatureEncoder.from_dict(jsons["encoder"])
        except (ValueError, ValidationError) as e:
            raise ArtifactError(f"encoder.json: {e}") from None
        _check_encoder(encoder, schema, config)
        # artifacts written before cross-fit members existed hold one network
        est = cls(schema, model=config["model"], trainer={"crossfit": 1, **config["trainer"]})
        model_cfg, trainer_cfg, _ = est._configs()
        prefix = "members.0." if trainer_cfg.crossfit > 1 else ""
        y_mean, y_std = weights[prefix + "y_mean"], weights[prefix + "y_std"]
        module = est._build_module(config["cardinalities"], config["links"], y_mean, y_std,
                                   model_cfg, trainer_cfg)
        # artifacts written before losses were configurable trained the paper's MSE
        module.losses = list(config.get("losses") or ["mse"] * len(config["links"]))
        try:
            module.load_state_dict(weights)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:300]
            raise ArtifactError(f"weights.safetensors does not fit the model config.json "
                                f"describes: {detail}") from None
        module.eval()
        est.encoder_ = encoder
        est.module_, est.model_config_, est.trainer_config_ = module, model_cfg, trainer_cfg
        est.history_ = TrainingHistory.model_validate(jsons.get("history", {}))
        if config.get("split"):
            est.split_ = config["split"]
        if config.get("data_fingerprint"):
            est.data_fingerprint_ = config["data_fingerprint"]
        if config.get("name"):
            est.registry_name_ = config["name"]
        return est


def _check_encoder(encoder: FeatureEncoder, schema: Schema, config: dict) -> None:
    """encoder.json must encode schema.json's F fields, with config.json's cardinalities."""
    enc = [(f.name, f.kind) for f in encoder.fields]
    sch = [(f.name, f.kind) for f in schema.features]
    if enc != sch:
        raise ArtifactError(
            f"encoder.json encodes {len(enc)} field(s) {[f'{n} ({k})' for n, k in enc]}, "
            f"schema.json has {len(sch)} feature(s) {[f'{n} ({k})' for n, k in sch]}: the "
            "encoder belongs to another schema"
        )
    try:
        cards = encoder.cardinalities
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"encoder.json: no bins or vocabulary for field {e}") from None
    if cards != list(config.get("cardinalities", [])):
        raise ArtifactError(
            f"encoder.json gives field sizes {cards}, config.json {config.get('cardinalities')}:"
            " the encoder belongs to another model"
        )




