"""Production: the versioned uplift store (SQLite, Redis), batch scoring (local, Ray)
and the online decision service."""

from hmum._lazy import lazy_exports

_EXPORTS = {
    "open_store": "hmum.serving.store",
    "SQLiteStore": "hmum.serving.store",
    "ScoringConfig": "hmum.serving.scoring",
    "run_scoring": "hmum.serving.scoring",
    "ServiceConfig": "hmum.serving.config",
    "load_config": "hmum.serving.config",
    "create_app": "hmum.serving.service",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
