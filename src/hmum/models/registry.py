"""The one registry of models: HUM and its named variants, the neural baselines,
the causalml learners and the per-arm means.

A *model name* (``get_model("hum_nokl", schema)``, ``hmum bench --models``) is a
registry entry: an estimator class plus overrides of its model and trainer
configs and a label for tables. Several names may share one class (``hum``,
``hum_nokl`` and ``hum_paper`` are all ``HUMEstimator``); the class's
``model_type`` is what an artifact records, so ``load_estimator`` reads any
saved model back whatever name built it.

Every estimator follows the contract of ``hmum.models.base.UpliftModel``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hmum.data.schema import Schema
from hmum.exceptions import ArtifactError
from hmum.models.arm_means import ArmMeansEstimator
from hmum.models.artifacts import read_artifact
from hmum.models.base import NeuralUpliftEstimator, UpliftModel
from hmum.models.causalml import CausalMLSLearner, CausalMLTLearner, CausalMLXLearner
from hmum.models.descn import DESCNEstimator
from hmum.models.generative import CEVAEEstimator, GANITEEstimator
from hmum.models.hum import HUMEstimator
from hmum.models.meta import SLearnerEstimator, TLearnerEstimator
from hmum.models.multitask import (
    EFINEstimator,
    EUENEstimator,
    FlexTENetEstimator,
    M3TNEstimator,
    SNetEstimator,
)
from hmum.models.representation import (
    BNNEstimator,
    CFRNetEstimator,
    DragonNetEstimator,
    TARNetEstimator,
)


@dataclass(frozen=True)
class ModelEntry:
    """How one named model is built.

    Attributes:
        name: the registry name (``get_model``, ``--models``), e.g. "hum_nokl".
        cls: the estimator class (its ``model_type`` is recorded in artifacts).
        model: overrides of the model's config (e.g. {"kl_weight": 0}).
        label: the name shown in tables.
        ours: True for the HUM family; every other model is a baseline.
        trainer: TrainerConfig overrides (e.g. {"ema_share": 0.1}); they win over a
            caller's trainer settings for the keys they name.
    """

    name: str
    cls: type
    model: dict = field(default_factory=dict)
    label: str = ""
    ours: bool = False
    trainer: dict = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.cls.model_type

    @property
    def display(self) -> str:
        return self.label or self.name

    def as_dict(self) -> dict:
        return {"name": self.name, "model_type": self.model_type, "model": self.model,
                "trainer": self.trainer, "label": self.display, "ours": self.ours}

    def key(self) -> dict:
        """What identifies the model in a bench cell key (not the label: renaming keeps cells)."""
        key = {"name": self.name, "model_type": self.model_type, "model": self.model}
        if self.trainer:
            key["trainer"] = self.trainer
        return key

    def build(self, schema: Schema, *, model: Mapping | None = None,
              trainer: Mapping | None = None, **kwargs) -> UpliftModel:
        """An unfitted estimator: the entry's overrides over ``model`` / ``trainer``.

        A caller's ``model`` fields win over the entry's; the entry's ``trainer``
        fields win over the caller's (a variant *is* its trainer settings, e.g.
        ``hum_paper`` runs without weight averaging whatever the run's defaults).
        """
        cfg = {**self.model, **dict(model or {})}
        tr = {**dict(trainer or {}), **self.trainer}
        return self.cls(schema, model=cfg or None, trainer=tr or None, **kwargs)


_ENTRIES: dict[str, ModelEntry] = {}


def register(name: str, cls: type, *, model: Mapping | None = None, label: str = "",
             ours: bool = False, trainer: Mapping | None = None) -> ModelEntry:
    """Add a named model; a name that is already taken is refused (ValueError).

    ``cls`` must follow ``UpliftModel`` (a ``model_type``, ``fit``, ``predict_outcomes``,
    ``predict_uplift``, ``save``). Its artifacts are read back by ``load_estimator``
    once its ``model_type`` is registered here.
    """
    if name in _ENTRIES:
        raise ValueError(f"model name {name!r} is already registered "
                         f"({_ENTRIES[name].cls.__name__}); choose another name")
    missing = [a for a in ("model_type", "fit", "predict_outcomes", "predict_uplift", "save")
               if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"{cls.__name__} cannot be registered as {name!r}: it lacks {missing}")
    entry = ModelEntry(name, cls, dict(model or {}), label, ours, dict(trainer or {}))
    _ENTRIES[name] = entry
    return entry


def list_models() -> list[str]:
    """Every registered model name, in table order (HUM's family first)."""
    return list(_ENTRIES)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; KeyError names the known models."""
    if name not in _ENTRIES:
        raise KeyError(f"unknown model name {name!r}; known: {', '.join(_ENTRIES)}")
    return _ENTRIES[name]


def get_model(name: str, schema: Schema, **overrides) -> UpliftModel:
    """An unfitted estimator of the registered model ``name`` for ``schema``.

    ``overrides``: ``model=`` (config fields over the entry's), ``trainer=``
    (TrainerConfig fields; the entry's own win), and any other constructor
    argument of the class (e.g. ``encoder=``).
    """
    return get_entry(name).build(schema, **overrides)


def estimator_classes() -> dict[str, type]:
    """model_type -> estimator class, for every registered model."""
    return {e.model_type: e.cls for e in _ENTRIES.values()}


def registered_estimators() -> dict[str, type[NeuralUpliftEstimator]]:
    """model_type -> class for the neural estimators (HUM and the baselines)."""
    return {t: c for t, c in estimator_classes().items() if issubclass(c, NeuralUpliftEstimator)}


def load_estimator(path: str | Path) -> UpliftModel:
    """Load any registered model's artifact folder (sums verified) as its estimator."""
    jsons, weights = read_artifact(path)
    registry = {t: c for t, c in estimator_classes().items() if hasattr(c, "_from_artifact")}
    for name in ("config", "schema"):
        if name not in jsons:
            raise ArtifactError(f"{path}: {name}.json missing from the artifact")
    mtype = jsons["config"].get("model_type")
    if mtype not in registry:
        raise ArtifactError(f"{path}: unknown model_type {mtype!r}; known: {sorted(registry)}")
    if issubclass(registry[mtype], NeuralUpliftEstimator) and "encoder" not in jsons:
        raise ArtifactError(f"{path}: encoder.json missing from the artifact")
    try:
        return registry[mtype]._from_artifact(jsons, weights)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    except KeyError as e:
        raise ArtifactError(f"{path}: config.json or weights lack the entry {e}") from None


# every model hmum ships, in table order
register("hum", HUMEstimator, label="HUM", ours=True)
register("hum_nokl", HUMEstimator, model={"kl_weight": 0.0}, label="HUM w/o KL", ours=True)
# the paper's settings: squared error, no weight averaging, tau_k = y^k - y0*, three
# branches when K = 1, and the experts' first width (the paper states none)
register("hum_paper", HUMEstimator, model={"loss": "mse", "uplift": "paper",
                                           "branches_per_treatment": None,
                                           "expert_sizes": [128, 64]},
         label="HUM (paper settings)", ours=True, trainer={"ema_share": None})
# weight averaging over half the run: shrinks a noisy uplift at weak (1 %) effects, but
# averages in under-fitted weights on short runs and strong effects (docs/benchmarks.md)
register("hum_long_ema", HUMEstimator, label="HUM, EMA over half the run", ours=True,
         trainer={"ema_share": 0.5})
# two cross-fit members, uplift shrunk by its reliability: lower PEHE at 1 % effects,
# higher at strong ones, decisions unstable across seeds (docs/benchmarks.md)
register("hum_crossfit", HUMEstimator, label="HUM + cross-fit shrinkage", ours=True,
         trainer={"crossfit": 2})
register("slearner", SLearnerEstimator, label="S-Learner")
# HUM's improvements offered to the S-Learner: the loss and averaging, and the cross-fit
# shrinkage (docs/benchmarks.md)
register("slearner_plus", SLearnerEstimator, model={"loss": "deviance"},
         label="S-Learner + deviance + EMA", trainer={"ema_share": 0.1})
register("slearner_crossfit", SLearnerEstimator, label="S-Learner + cross-fit shrinkage",
         trainer={"crossfit": 2})
register("tlearner", TLearnerEstimator, label="T-Learner")
register("tarnet", TARNetEstimator, label="TARNet")
register("bnn", BNNEstimator, label="BNN")
register("cfrnet_mmd", CFRNetEstimator, model={"ipm": "mmd"}, label="CFRNet (MMD)")
register("cfrnet_wass", CFRNetEstimator, model={"ipm": "wasserstein"}, label="CFRNet (Wass)")
register("dragonnet", DragonNetEstimator, label="DragonNet")
register("m3tn", M3TNEstimator, label="M3TN")
register("efin", EFINEstimator, label="EFIN")
register("euen", EUENEstimator, label="EUEN")
register("flextenet", FlexTENetEstimator, label="FlexTENet")
register("snet", SNetEstimator, label="SNet")
register("cevae", CEVAEEstimator, label="CEVAE")
register("ganite", GANITEEstimator, label="GANITE")
register("descn", DESCNEstimator, label="DESCN")
register("causalml_s", CausalMLSLearner, label="causalml S (LightGBM)")
register("causalml_t", CausalMLTLearner, label="causalml T (LightGBM)")
register("causalml_x", CausalMLXLearner, label="causalml X (LightGBM)")
register("arm_means", ArmMeansEstimator, label="Arm means (no personalization)")
