"""Typed configuration of the online decision service (``hmum serve``).

Sources, highest priority first:

1. keyword arguments (``load_config(path, port=9000)``; the CLI's flags);
2. environment variables ``HMUM_<FIELD>`` (e.g. ``HMUM_STORE_URL``,
   ``HMUM_STORE_TIMEOUT_MS``); ``HMUM_CONFIG_FILE`` names the file of 3;
3. a JSON or YAML file (``.json``, ``.yaml``/``.yml``) with the field names as keys;
4. the defaults below (the only place they are written down).

Unknown keys in the file are refused (a typo must not silently keep a default).
Invalid settings raise ``hmum.exceptions.ConfigError`` with one line naming where the
value came from (the file, the ``HMUM_*`` variable or the flag), what was expected
and what was received.

Security: the service needs a bearer token (``token`` / ``HMUM_TOKEN``, or
``token_file``) whenever ``host`` is not a loopback address, and then requires it on
every endpoint except ``/healthz`` and ``/readyz``; a configured token is required on
loopback too. ``rate_limit_rps`` (+ ``rate_limit_burst``) limits each client address.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hmum.exceptions import ConfigError, format_validation_error

#: The config file read by the file source (set by ``load_config`` for one call).
_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "hmum_config_file", default=None)


class ServiceConfig(BaseSettings):
    """Settings of one decision-service process. Times in the unit their name says."""

    model_config = SettingsConfigDict(env_prefix="HMUM_", extra="forbid",
                                      validate_default=True)

    # --- the value-weight model ------------------------------------------------------
    value_weight_model: Path = Field(
        Path("runs/ddm/models/value_weight"),
        description="value-weight artifact folder (manifest sums verified at start)")
    value_weight_onnx: Path | None = Field(
        None, description="its ONNX graph; default: <value_weight_model>.onnx next to the "
        "folder (the layout `hmum ddm` writes). Checked against PyTorch at start.")
    onnx_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime intra-op threads")
    verify_samples: int = Field(64, ge=1, le=4096,
                                description="random requests of the ONNX/PyTorch check")
    verify_atol: float = Field(1e-4, gt=0, le=1.0,
                               description="largest |w_onnx - w_torch| accepted at start")

    # --- the uplift store ---------------------------------------------------------------
    store_url: str = Field("sqlite:///runs/uplift.sqlite",
                           description="redis://host:port/db, sqlite:///path or a path")
    namespace: str = Field("default", description="store namespace")
    store_timeout_ms: float = Field(5.0, gt=0, le=10_000,
                                    description="deadline of one store read")
    store_admin_timeout_s: float = Field(
        1.0, gt=0, le=60, description="socket timeout of Redis metadata reads (version info)")
    store_connect_timeout_s: float = Field(0.05, gt=0, le=10,
                                           description="Redis connect timeout")
    pointer_ttl_s: float = Field(1.0, ge=0, le=3600,
                                 description="reuse the store's current pointer this long")

    # --- circuit breaker ------------------------------------------------------------------
    breaker_failures: int = Field(
        5, ge=1, le=10_000, description="consecutive store errors that open the breaker")
    breaker_cooldown_s: float = Field(
        1.0, gt=0, le=3600, description="open time before one half-open probe")

    # --- decisions and request limits -----------------------------------------------------
    sigma: float = Field(0.0, ge=-1e6, le=1e6,
                         description="enable treatment k when phi_k > sigma (paper: 0)")
    max_candidates: int = Field(512, ge=1, le=100_000,
                                description="most candidate items per field and request")
    max_recent: int = Field(512, ge=1, le=100_000,
                            description="most recent items per field and request")
    max_batch: int = Field(256, ge=1, le=100_000, description="most requests per batch call")
    max_item_code: int = Field(2**31 - 1, ge=0, le=2**31 - 1,
                               description="largest item code accepted")
    max_batch_items: int = Field(
        65_536, ge=1, le=100_000_000,
        description="most candidate + recent items in one batch call, summed over its "
        "requests (bounds its memory and model time; more: 422)")

    # --- large batches: decoded in slices, model run on worker threads -------------------
    offload_items: int = Field(
        2048, ge=0, le=100_000_000,
        description="a call with more candidate + recent items than this runs its value-"
        "weight model on a worker thread (below it the thread hand-off costs more than "
        "the model)")
    model_threads: int = Field(1, ge=1, le=64,
                               description="worker threads running large calls' model")
    max_batches_in_flight: int = Field(
        4, ge=1, le=1024,
        description="batch calls processed at once (a large one lets other requests in "
        "while it is decoded and its model runs); more: 503 with Retry-After")

    # --- start-up failures -----------------------------------------------------------------
    keep_serving_on_error: bool = Field(
        False, description="when the model fails its start-up checks, keep the process up "
        "answering 503 with the reason (default: refuse to start)")

    # --- access: bearer token and per-client rate limit ------------------------------------
    token: SecretStr | None = Field(
        None, description="bearer token required on every endpoint but /healthz and "
        "/readyz (HMUM_TOKEN); required whenever host is not loopback")
    token_file: Path | None = Field(
        None, description="file whose first line is the bearer token (instead of token)")
    rate_limit_rps: float | None = Field(
        None, gt=0, le=1e9, description="requests per second allowed to each client address "
        "(token bucket; None: no limit); more: 429 with Retry-After")
    rate_limit_burst: int | None = Field(
        None, ge=1, le=10**9, description="bucket size: requests a client may send at once "
        "(default: one second's worth of rate_limit_rps)")

    # --- the HTTP server --------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8000, ge=0, le=65535, description="listen port")
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    log_level: str = Field("warning", description="uvicorn log level")

    @model_validator(mode="after")
    def _default_onnx(self) -> ServiceConfig:
        if self.value_weight_onnx is None:
            p = self.value_weight_model
            self.value_weight_onnx = p.with_name(p.name + ".onnx")
        return self

    @model_validator(mode="after")
    def _access(self) -> ServiceConfig:
        if self.token_file is not None:
            if self.token is not None:
                raise ValueError("set token (HMUM_TOKEN) or token_file, not both")
            self.token = SecretStr(read_token_file(self.token_file))
        elif self.token is not None and not self.token.get_secret_value().strip():
            raise ValueError("token: expected a non-empty bearer token, got an empty one")
        if self.token is not None:  # a pasted token's newline is not part of it
            self.token = SecretStr(self.token.get_secret_value().strip())
        if self.token is None and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not a loopback address: a bearer token is required "
                "to serve beyond this machine (set --token-file FILE or HMUM_TOKEN)")
        if self.rate_limit_burst is not None and self.rate_limit_rps is None:
            raise ValueError("rate_limit_burst is set but rate_limit_rps is not")
        if self.rate_limit_rps is not None and self.rate_limit_burst is None:
            self.rate_limit_burst = max(1, math.ceil(self.rate_limit_rps))
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        # init > env > file > defaults: an operator's env var overrides the shipped file
        return init_settings, env_settings, _FileSource(settings_cls)


class _FileSource(PydanticBaseSettingsSource):
    """Values from the JSON/YAML file named by ``load_config`` or ``HMUM_CONFIG_FILE``."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused (__call__)
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _CONFIG_FILE.get()
        if path is None and os.environ.get("HMUM_CONFIG_FILE"):
            path = Path(os.environ["HMUM_CONFIG_FILE"])
        return {} if path is None else read_config_file(path)


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (127.0.0.0/8, ::1) or ``localhost``? Other names
    are not resolved: only an address that cannot be reached from elsewhere counts."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def read_token_file(path: Path) -> str:
    """The bearer token in the first line of ``path``. ValueError naming the file."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise ValueError(f"token_file {path}: cannot read it ({reason})") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"token_file {path}: expected a bearer token on its first line, "
                         "got an empty line")
    return token


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON or YAML config file. ConfigError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p}: not found" if not p.exists()
                          else f"config file {p}: expected a file, got a folder")
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"config file {p}: not valid YAML"
                              f"{at}: {getattr(e, 'problem', None) or e}") from None
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {p}: not valid JSON at line {e.lineno}, column "
                              f"{e.colno}: {e.msg}") from None
    else:
        raise ConfigError(f"config file {p}: expected a name ending in .json, .yaml or .yml")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping of settings, got "
                          f"{type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, *, names: Mapping[str, str] | None = None,
                **overrides: Any) -> ServiceConfig:
    """ServiceConfig from ``path`` (or $HMUM_CONFIG_FILE), HMUM_* variables and
    ``overrides`` (None values are ignored, so CLI flags left unset keep the rest).

    Invalid settings raise ConfigError, one line naming each value's source: the
    ``names`` of the overrides (field -> CLI flag, e.g. ``{"port": "--port"}``), the
    ``HMUM_<FIELD>`` variable, or ``<file>: <field>``.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    file = Path(path) if path is not None else (
        Path(os.environ["HMUM_CONFIG_FILE"]) if os.environ.get("HMUM_CONFIG_FILE") else None)
    token = _CONFIG_FILE.set(file)
    try:
        return ServiceConfig(**given)
    except ValidationError as e:
        raise ConfigError(format_validation_error(
            e, names=_sources(e, given, names or {}, file))) from None
    finally:
        _CONFIG_FILE.reset(token)


def _sources(err: ValidationError, given: Mapping[str, Any], names: Mapping[str, str],
             file: Path | None) -> dict[str, str]:
    """Top-level field -> where its bad value came from (the precedence of the sources)."""
    env = {k.upper() for k in os.environ}
    in_file: set[str] = set()
    if file is not None:
        try:
            in_file = set(read_config_file(file))
        except ConfigError:
            pass  # unreadable: its own error was raised already
    out = {}
    for e in err.errors(include_url=False):
        if not e["loc"] or not isinstance(e["loc"][0], str):
            continue
        field = e["loc"][0]
        if field in given:
            out[field] = names.get(field, field)
        elif f"HMUM_{field.upper()}" in env:
            out[field] = f"HMUM_{field.upper()}"
        elif field in in_file:
            out[field] = f"{file}: {field}"
    return out
