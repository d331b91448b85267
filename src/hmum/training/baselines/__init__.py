"""Estimators of the baseline networks; importing this package registers every
one with ``hmum.training.estimator`` (so ``load_estimator`` reads their artifacts).

Each module here is one family of baselines; see its docstrings for the papers.
"""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
