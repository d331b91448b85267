"""Error classes and messages shared by the library, the CLI and the service.

Imports only pydantic (no torch, no typer): the service, the CLI and the
library all use it.

* ``HmumError``: base of the errors a user can cause and fix (bad data, a bad
  config, a tampered artifact); the CLI prints them as one line, exit code 2.
* ``ConfigError``: a config or schema that fails validation, already formatted.
* ``format_validation_error``: a pydantic ``ValidationError`` as one line, e.g.
  ``schema.json: responses[0].kind: expected one of continuous, count, binary,
  got 'continous'`` (no URLs, no multi-line dump).
* ``option_name`` / ``cli_flags``: how a message names an option. Library code
  says ``option_name("drop_invalid_responses", "drop_invalid_responses=True")``;
  under ``with cli_flags(drop_invalid_responses="--drop-invalid-responses")``
  (the CLI) that is the flag instead of the Python parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from pydantic import ValidationError


class HmumError(Exception):
    """An error the user caused and can fix; its message names what to change."""


class ConfigError(HmumError, ValueError):
    """A config, schema or set of options that fails validation (message formatted)."""


# --------------------------------------------------------------------------------------
# pydantic errors as one line
# --------------------------------------------------------------------------------------

#: longest repr of a received value shown in a message
_MAX_REPR = 60


def _loc_text(loc: Sequence[str | int], names: Mapping[str, str]) -> str:
    """('responses', 0, 'kind') -> 'responses[0].kind'; the first part renamed by names."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = names.get(part, part) if i == 0 else part
            out += ("." if out else "") + part
    return out


def _short_repr(v) -> str:
    r = repr(v)
    return r if len(r) <= _MAX_REPR else r[: _MAX_REPR - 3] + "..."


def _expected(err: dict) -> str:
    """What was expected, in words, from one pydantic error dict."""
    kind, ctx, msg = err["type"], err.get("ctx") or {}, err["msg"]
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return "expected one of " + ", ".join(options)
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values())) if ctx else "?"
        bound = f"{bound:g}" if isinstance(bound, float) else bound  # 0.0 -> 0
        return f"expected a number {bounds[kind]} {bound}"
    if kind == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"expected at most {ctx.get('max_length')} item(s)"
    if kind == "missing":
        return "required, missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value|Assertion) error, ", "", msg)
    return "expected " + re.sub(r"^Input should be ", "", msg)


def format_validation_error(
    err: ValidationError, source: str | None = None, names: Mapping[str, str] | None = None
) -> str:
    """One line for a pydantic ValidationError, each problem as ``where: expected, got``.

    Args:
        err: the error.
        source: what was validated (a file name, "--schema"), printed first.
        names: top-level field -> the name the user knows it by (a CLI flag, e.g.
            ``{"max_epochs": "--epochs"}``).

    Problems are joined with "; ".
    """
    names = names or {}
    parts = []
    for e in err.errors(include_url=False):
        where = _loc_text(e["loc"], names)
        text = _expected(e)
        if e["type"] not in ("missing", "value_error", "assertion_error"):
            text += f", got {_short_repr(e.get('input'))}"
        parts.append(f"{where}: {text}" if where else text)
    body = "; ".join(parts)
    return f"{source}: {body}" if source else body


# --------------------------------------------------------------------------------------
# naming options: Python parameters in the library, flags under the CLI
# --------------------------------------------------------------------------------------

_FLAGS: ContextVar[Mapping[str, str]] = ContextVar(
    "hmum_cli_flags", default=MappingProxyType({}))


def option_name(param: str, python: str) -> str:
    """How a message should tell the user to set ``param``.

    The CLI flag while ``cli_flags`` maps ``param``, else ``python`` (how to set it
    from Python, e.g. ``"drop_invalid_responses=True"``).
    """
    return _FLAGS.get().get(param, python)


@contextmanager
def cli_flags(**flags: str) -> Iterator[None]:
    """Within the block, messages name ``param`` as ``flags[param]`` (see ``option_name``)."""
    token = _FLAGS.set({**_FLAGS.get(), **flags})
    try:
        yield
    finally:
        _FLAGS.reset(token)


class NotFittedError(RuntimeError):
    """The estimator was used before ``fit`` (or ``load``)."""


class DataError(ValueError):
    """Input data that does not fit what was expected; the message says where."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset's path, or a file expected in it, does not exist.

    Both a ``DataError`` (a ``ValueError``) and a ``FileNotFoundError``, so either
    ``except`` catches it.
    """


class ArtifactError(HmumError, RuntimeError):
    """An artifact folder that is missing, partial, tampered or of the wrong kind."""


class DecisionConfigError(HmumError, ValueError):
    """A decision config (or an option building one) that is malformed or tampered with."""


class DistributedError(RuntimeError):
    """A worker of a distributed run failed; the message names the worker and the error."""


class ModelCheckError(HmumError, RuntimeError):
    """The value-weight model failed its start-up checks (see ``load_model``)."""


class ScoringError(RuntimeError):
    """The scoring run cannot go on; the message says why and what to do."""


class StoreError(RuntimeError):
    """A store operation that cannot be done; the message says why."""


class StoreTimeout(StoreError, TimeoutError):
    """A read did not finish within its timeout."""
