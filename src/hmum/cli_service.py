"""``hmum serve``: run the online decision service (FastAPI app under uvicorn).

Registered in ``hmum.cli`` with::

    from hmum.cli_service import serve
    app.command()(serve)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


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
    host: Annotated[str | None, typer.Option(help="listen address")] = None,
    port: Annotated[int | None, typer.Option(help="listen port")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes")] = None,
    sigma: Annotated[float | None, typer.Option(help="enable k when phi_k > sigma")] = None,
) -> None:
    """Serve per-request decisions: POST /v1/decide, /v1/decide/batch; /healthz, /readyz,
    /metrics. The model is verified at start; /readyz stays 503 if that fails."""
    import os

    import uvicorn

    from hmum.serving.config import load_config

    try:
        cfg = load_config(config, value_weight_model=model, value_weight_onnx=onnx,
                          store_url=store, namespace=namespace, host=host, port=port,
                          workers=workers, sigma=sigma)
    except ValueError as e:  # pydantic's ValidationError is a ValueError: names the field
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from e
    # every worker builds its app from the environment: pass the resolved settings on
    env = {f"HMUM_{k.upper()}": str(v) for k, v in cfg.model_dump().items() if v is not None}
    os.environ.update(env)
    if config is not None:
        os.environ["HMUM_CONFIG_FILE"] = str(config)
    typer.echo(f"hmum serve: http://{cfg.host}:{cfg.port} (store {cfg.store_url}, "
               f"namespace {cfg.namespace}, {cfg.workers} worker(s))")
    uvicorn.run("hmum.serving.service:app_from_env", factory=True, host=cfg.host,
                port=cfg.port, workers=cfg.workers, log_level=cfg.log_level,
                access_log=False, http="httptools" if _has("httptools") else "h11")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
