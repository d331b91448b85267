"""The trainer (loop, optimizer, schedule, EMA, early stopping, checkpoints), the DDP
primitives and the distributed launcher."""

from hmum._lazy import lazy_exports

_EXPORTS = {
    "Trainer": "hmum.training.trainer",
    "TrainerConfig": "hmum.training.trainer",
    "TrainingHistory": "hmum.training.trainer",
    "DistContext": "hmum.training.ddp",
    "DistributedJob": "hmum.training.distributed",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
