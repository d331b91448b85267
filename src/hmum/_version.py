"""The installed version of hmum (one source: pyproject.toml's ``version``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hmum")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
