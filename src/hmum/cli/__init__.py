"""The ``hmum`` command line (``hmum.cli.app.app``): one thin module per command group."""

from hmum._lazy import lazy_exports

_EXPORTS = {
    "app": "hmum.cli.app",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
