"""The public API: every name in ``__all__`` of hmum and of each subpackage resolves, lazily."""

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["hmum", "hmum.data", "hmum.nn", "hmum.models", "hmum.training", "hmum.decision",
            "hmum.metrics", "hmum.serving", "hmum.workflows", "hmum.cli"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name):
    pkg = importlib.import_module(name)
    assert pkg.__all__, f"{name} exports nothing"
    for export in pkg.__all__:
        assert getattr(pkg, export) is not None, f"{name}.{export}"
    assert set(pkg.__all__) <= set(dir(pkg))


def test_an_unknown_name_is_an_attribute_error():
    import hmum

    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        hmum.no_such_name  # noqa: B018


def test_import_hmum_loads_no_torch():
    code = ("import sys, hmum, hmum.models, hmum.data; "
            "print(sorted(m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_names_are_the_defining_objects():
    import hmum
    from hmum.models.hum import HUMEstimator
    from hmum.models.registry import get_model

    assert hmum.HUMEstimator is HUMEstimator and hmum.models.get_model is get_model


def test_the_type_checking_imports_mirror_the_lazy_table():
    """``hmum/__init__.py`` lists its exports twice: the lazy table (what runs) and a
    TYPE_CHECKING block (what IDEs and type checkers read). They must name the same
    objects from the same modules."""
    import ast
    from pathlib import Path

    hmum = importlib.import_module("hmum")
    tree = ast.parse(Path(hmum.__file__).read_text())
    block = next(n for n in ast.walk(tree) if isinstance(n, ast.If)
                 and getattr(n.test, "id", None) == "TYPE_CHECKING")
    mirrored = {a.asname or a.name: imp.module for imp in block.body
                if isinstance(imp, ast.ImportFrom) for a in imp.names}
    assert mirrored == dict(hmum._EXPORTS)
