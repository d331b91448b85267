"""Typed configuration of the online decision service (``hmum serve``).

Sources, highest priority first:

1. keyword arguments (``load_config(path, port=9000)``; the CLI's flags);
2. environment variables ``HMUM_<FIELD>`` (e.g. ``HMUM_STORE_URL``,
   ``HMUM_STORE_TIMEOUT_MS``); ``HMUM_CONFIG_FILE`` names the file of 3;
3. a JSON or YAML file (``.json``, ``.yaml``/``.yml``) with the field names as keys;
4. the defaults below (the only place they are written down).

Unknown keys in the file are refused (a typo must not silently keep a default).
"""

from __future__ import annotations

import contextvars
import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON or YAML config file. ValueError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {p} not found")
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif p.suffix.lower() == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"config file {p}: expected .json, .yaml or .yml")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {p}: expected a mapping of settings, got "
                         f"{type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, **overrides: Any) -> ServiceConfig:
    """ServiceConfig from ``path`` (or $HMUM_CONFIG_FILE), HMUM_* variables and
    ``overrides`` (None values are ignored, so CLI flags left unset keep the rest)."""
    token = _CONFIG_FILE.set(None if path is None else Path(path))
    try:
        return ServiceConfig(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)
