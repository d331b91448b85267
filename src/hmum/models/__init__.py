"""Every model: one file per family (network and estimator side by side), the model
contract (``UpliftModel``) and the one registry (``get_model`` / ``list_models``)."""

from hmum._lazy import lazy_exports

_EXPORTS = {
    "UpliftModel": "hmum.models.base",
    "NeuralUpliftEstimator": "hmum.models.base",
    "ModelEntry": "hmum.models.registry",
    "get_model": "hmum.models.registry",
    "get_entry": "hmum.models.registry",
    "list_models": "hmum.models.registry",
    "register": "hmum.models.registry",
    "load_estimator": "hmum.models.registry",
    "HUM": "hmum.models.hum",
    "HUMConfig": "hmum.models.hum",
    "HUMEstimator": "hmum.models.hum",
    "BaselineConfig": "hmum.models.baseline",
    "ArmMeansEstimator": "hmum.models.arm_means",
    "ValueWeightEstimator": "hmum.models.value_weight",
    "load_value_weight_model": "hmum.models.value_weight",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
