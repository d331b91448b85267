"""Lazy public names for a package (PEP 562): ``import hmum`` and the command line's
``--help`` stay fast because nothing heavy (torch, pandas) loads until a name is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: dict, table: Mapping[str, str]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for a package's globals ``package`` whose public names map
    to the module defining each (``table``: name -> module path)."""

    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        package[name] = value  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*package.get("__all__", ()), *table})

    return __getattr__, __dir__
