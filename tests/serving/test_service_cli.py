"""``hmum serve`` (the Typer command): help, and settings errors named before any start."""

from __future__ import annotations

import json

import pytest

typer = pytest.importorskip("typer")
pytest.importorskip("uvicorn")

from typer.testing import CliRunner  # noqa: E402

from hmum.cli_service import serve  # noqa: E402


def _app():
    app = typer.Typer()
    app.command()(serve)
    app.command("noop")(lambda: None)  # two commands: `serve` stays a subcommand
    return app


def test_serve_help_lists_the_settings():
    r = CliRunner().invoke(_app(), ["serve", "--help"])
    assert r.exit_code == 0
    for flag in ("--config", "--model", "--store", "--port", "--sigma"):
        assert flag in r.output


def test_serve_refuses_a_bad_config_file(tmp_path, monkeypatch):
    monkeypatch.delenv("HMUM_CONFIG_FILE", raising=False)
    f = tmp_path / "svc.json"
    f.write_text(json.dumps({"breaker_failures": 0}))
    r = CliRunner().invoke(_app(), ["serve", "--config", str(f)])
    assert r.exit_code == 2
    assert "breaker_failures" in r.output
