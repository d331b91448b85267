"""``hmum serve``: run the online decision service (FastAPI app under uvicorn).

Registered in ``hmum.cli.app`` with::

    from hmum.cli.serve import serve
    app.command()(serve)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: ServiceConfig field -> the flag that sets it (errors name the flag)
FLAGS = {"value_weight_model": "--model", "value_weight_onnx": "--onnx", "store_url": "--store",
         "namespace": "--namespace", "host": "--host", "port": "--port",
         "workers": "--workers", "sigma": "--sigma", "token_file": "--token-file",
         "rate_limit_rps": "--rate-limit", "rate_limit_burst": "--rate-limit-burst",
         "keep_serving_on_error": "--keep-serving-on-error"}


def serve(
    config: Annotated[Path | None, typer.Option(
        help="JSON/YAML settings file (fields of hmum.serving.config.ServiceConfig); "
             "HMUM_<FIELD> environment variables override it")] = None,
    model: Annotated[Path | None, typer.Option(help="value-weight artifact folder")] = None,
    onnx: Annotated[Path | None, typer.Option(
        help="its ONNX graph (default: <model>.onnx)")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="store URL: redis://127.0.0.1:6379/0, sqlite:///path or a path")] = None,
    namespace: Annotated[str | None, typer.Option(help="store namespace")] = None,
    host: Annotated[str | None, typer.Option(
        help="listen address; beyond loopback a bearer token is required")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes")] = None,
    sigma: Annotated[float | None, typer.Option(help="enable k when phi_k > sigma")] = None,
    token_file: Annotated[Path | None, typer.Option(
        help="file whose first line is the bearer token required on every endpoint but "
             "/healthz and /readyz (or set HMUM_TOKEN)")] = None,
    rate_limit: Annotated[float | None, typer.Option(
        "--rate-limit", help="requests per second allowed to each client address (429 "
                             "beyond)")] = None,
    rate_limit_burst: Annotated[int | None, typer.Option(
        help="requests a client may send at once (default: one second's worth)")] = None,
    keep_serving_on_error: Annotated[bool, typer.Option(
        "--keep-serving-on-error",
        help="if the model fails its start-up checks, stay up answering 503 with the reason "
             "instead of exiting")] = False,
) -> None:
    """Serve per-request decisions: POST /v1/decide, /v1/decide/batch; /healthz, /readyz,
    /metrics. The model is verified first: a failing check is printed and stops the
    command (exit 2) unless --keep-serving-on-error."""
    import os

    import uvicorn

    from hmum.cli.common import fail
    from hmum.exceptions import ConfigError, ModelCheckError
    from hmum.serving.config import load_config
    from hmum.serving.service import create_app, load_model

    try:
        cfg = load_config(config, names=FLAGS, value_weight_model=model,
                          value_weight_onnx=onnx, store_url=store, namespace=namespace,
                          host=host, port=port, workers=workers, sigma=sigma,
                          token_file=token_file, rate_limit_rps=rate_limit,
                          rate_limit_burst=rate_limit_burst,
                          keep_serving_on_error=keep_serving_on_error or None)
    except ConfigError as e:
        fail(str(e))
    if cfg.workers == 1:
        # built here, so a failing model stops the command before uvicorn starts, and
        # the model is loaded and verified once
        try:
            target = create_app(cfg)
        except ModelCheckError as e:
            fail(str(e))
        svc = target.state.service
        if svc.store is None:
            typer.echo(f"warning: store {cfg.store_url}: {svc.store_error}; decisions are "
                       "degraded (store_error) and /readyz is 503 until it answers", err=True)
        factory = False
    else:
        # each worker builds its own app from the environment; the checks run here first
        try:
            load_model(cfg)
        except Exception as e:  # noqa: BLE001 - any failure of the checks is reported
            if not cfg.keep_serving_on_error:
                fail(f"value-weight model {cfg.value_weight_model} failed its start-up "
                     f"checks: {type(e).__name__}: {e} (--keep-serving-on-error keeps the "
                     "process up, answering 503 with this reason)")
        # the resolved settings, except the token (a secret: it stays in HMUM_TOKEN or
        # the token file, which the workers read themselves)
        env = {f"HMUM_{k.upper()}": str(v) for k, v in cfg.model_dump(exclude={"token"}).items()
               if v is not None}
        os.environ.update(env)
        if config is not None:
            os.environ["HMUM_CONFIG_FILE"] = str(config)
        target, factory = "hmum.serving.service:app_from_env", True
    access = ("bearer token required" if cfg.token is not None else "no token: loopback only")
    if cfg.rate_limit_rps is not None:
        access += f", {cfg.rate_limit_rps:g} requests/s per client (burst {cfg.rate_limit_burst})"
    typer.echo(f"hmum serve: http://{cfg.host}:{cfg.port} (store {cfg.store_url}, "
               f"namespace {cfg.namespace}, {cfg.workers} worker(s); {access})")
    uvicorn.run(target, factory=factory, host=cfg.host, port=cfg.port, workers=cfg.workers,
                log_level=cfg.log_level, access_log=False,
                http="httptools" if _has("httptools") else "h11")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
