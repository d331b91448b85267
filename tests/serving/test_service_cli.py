"""``hmum serve`` (the Typer command): help; settings errors as one line naming the
file, variable or flag; a model failing its start-up checks stops it (exit 2, the reason
printed) unless --keep-serving-on-error; no token beyond loopback is refused. uvicorn is
replaced by a recorder in process; two tests run the real command in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

typer = pytest.importorskip("typer")
pytest.importorskip("uvicorn")
pytest.importorskip("onnxruntime")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from hmum.cli.serve import serve  # noqa: E402
from hmum.serving.store import SQLiteStore  # noqa: E402
from tests.cli_output import flat  # noqa: E402
from tests.serving.helpers import USERS, fill_store, request_body  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _app():
    app = typer.Typer()
    app.command()(serve)
    app.command("noop")(lambda: None)  # two commands: `serve` stays a subcommand
    return app


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No HMUM_* variable from outside; none left behind (with --workers > 1 the command
    exports the settings for its workers into os.environ)."""
    saved = dict(os.environ)
    for k in list(os.environ):
        if k.startswith("HMUM_"):
            monkeypatch.delenv(k)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def store_path(tmp_path, vw):
    st = SQLiteStore(tmp_path / "uplift.sqlite")
    fill_store(st, vw[2].responses_)
    st.close()
    return tmp_path / "uplift.sqlite"


@pytest.fixture
def runs(monkeypatch):
    """uvicorn.run replaced: the calls it got (the command would otherwise serve)."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    return calls


def tampered(vw, root: Path) -> Path:
    bad = root / "tampered"
    shutil.copytree(vw[0], bad)
    shutil.copy(vw[1], root / "tampered.onnx")
    raw = bytearray((bad / "weights.safetensors").read_bytes())
    raw[-3] ^= 0x01
    (bad / "weights.safetensors").write_bytes(bytes(raw))
    return bad


def invoke(*args: str):
    return CliRunner().invoke(_app(), ["serve", *args])


def test_serve_help_lists_the_settings():
    r = invoke("--help")
    assert r.exit_code == 0
    for flag in ("--config", "--model", "--store", "--port", "--sigma", "--token-file",
                 "--rate-limit", "--keep-serving-on-error"):
        assert flag in flat(r)


def test_serve_refuses_a_bad_config_file(tmp_path, runs):
    f = tmp_path / "config.yaml"
    f.write_text("store_timeout_ms: abc\n")
    r = invoke("--config", str(f))
    assert r.exit_code == 2 and not runs
    out = flat(r)
    assert out.startswith("error: ") and out.endswith(
        "config.yaml: store_timeout_ms: expected a valid number, unable to parse string as "
        "a number, got 'abc'")
    assert "http" not in out and "Traceback" not in r.output
    f.write_text(json.dumps({"breaker_failures": 0}).replace("{", "[", 1))
    assert invoke("--config", str(f)).exit_code == 2


def test_serve_names_the_variable_and_the_flag(runs, monkeypatch):
    monkeypatch.setenv("HMUM_STORE_TIMEOUT_MS", "abc")
    r = invoke()
    assert r.exit_code == 2 and "HMUM_STORE_TIMEOUT_MS: expected a valid number" in flat(r)
    monkeypatch.delenv("HMUM_STORE_TIMEOUT_MS")
    r = invoke("--port", "70000")
    assert r.exit_code == 2
    assert flat(r) == "error: --port: expected a number <= 65535, got 70000"
    assert not runs


def test_serve_refuses_a_public_bind_without_a_token(vw, store_path, runs):
    r = invoke("--model", str(vw[0]), "--store", str(store_path), "--host", "0.0.0.0")
    assert r.exit_code == 2 and not runs
    assert flat(r).startswith("error: host '0.0.0.0' is not a loopback address: "
                                         "a bearer token is required")


def test_serve_with_a_token_file(vw, store_path, tmp_path, runs):
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    r = invoke("--model", str(vw[0]), "--store", str(store_path), "--host", "0.0.0.0",
               "--token-file", str(token), "--rate-limit", "50")
    assert r.exit_code == 0, r.output
    assert "bearer token required, 50 requests/s per client (burst 50)" in flat(r)
    (app, kw), = runs
    assert kw["host"] == "0.0.0.0" and kw["factory"] is False
    body = request_body(vw[3], 0, int(USERS[0]))
    with TestClient(app) as c:
        assert c.post("/v1/decide", json=body).status_code == 401
        ok = c.post("/v1/decide", json=body, headers={"authorization": "Bearer t0ken"})
        assert ok.status_code == 200 and ok.json()["store_version"] == "v1"


def test_serve_stops_on_a_model_failing_its_checks(vw, store_path, tmp_path, runs):
    bad = tampered(vw, tmp_path)
    for workers in ("1", "2"):
        r = invoke("--model", str(bad), "--store", str(store_path), "--workers", workers)
        assert r.exit_code == 2 and not runs
        out = flat(r)
        assert out.startswith(f"error: value-weight model {bad} failed its start-up checks: ")
        assert "weights.safetensors" in out and "--keep-serving-on-error" in out
        assert len(r.output.strip().splitlines()) == 1  # one line, never wrapped


def test_keep_serving_on_error_answers_503(vw, store_path, tmp_path, runs):
    bad = tampered(vw, tmp_path)
    r = invoke("--model", str(bad), "--store", str(store_path), "--keep-serving-on-error")
    assert r.exit_code == 0, r.output
    (app, _), = runs
    with TestClient(app) as c:
        d = c.post("/v1/decide", json=request_body(vw[3], 0, int(USERS[0])))
        assert d.status_code == 503 and "weights.safetensors" in d.json()["message"]
        assert c.get("/readyz").status_code == 503


def test_workers_get_the_settings_but_not_the_token(vw, store_path, tmp_path, runs,
                                                    monkeypatch):
    token = tmp_path / "token"
    token.write_text("t0ken")
    seen = {}
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: seen.update(
        target=target, env={k: v for k, v in os.environ.items() if k.startswith("HMUM_")}))
    r = invoke("--model", str(vw[0]), "--store", str(store_path), "--workers", "2",
               "--token-file", str(token))
    assert r.exit_code == 0, r.output
    assert seen["target"] == "hmum.serving.service:app_from_env"
    env = seen["env"]
    assert "HMUM_TOKEN" not in env and env["HMUM_TOKEN_FILE"] == str(token)
    assert env["HMUM_VALUE_WEIGHT_MODEL"] == str(vw[0]) and env["HMUM_WORKERS"] == "2"
    from hmum.serving.config import load_config

    # what a worker does with them (the command left them in os.environ; clean_env
    # removes them afterwards)
    assert load_config().token.get_secret_value() == "t0ken"


# --- the real command, in a subprocess ------------------------------------------------------


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMUM_")}
    return {**env, "PYTHONPATH": str(ROOT / "src")}


def test_the_real_command_prints_the_reason_and_exits(vw, store_path, tmp_path):
    """The original failure: `hmum serve` with a tampered model printed nothing and
    answered 413. Now it exits 2 before serving, with one line on stderr."""
    bad = tampered(vw, tmp_path)
    p = subprocess.run(
        [sys.executable, "-c", "from hmum.cli.app import app; app(prog_name='hmum')", "serve",
         "--model", str(bad), "--store", str(store_path), "--port", "1"],
        env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    out = flat(p.stderr)
    assert out.startswith(f"error: value-weight model {bad} failed its start-up checks")
    assert "Traceback" not in p.stderr and "hmum serve: http" not in p.stdout


def test_uvicorn_factory_exits_with_one_line(vw, store_path, tmp_path):
    bad = tampered(vw, tmp_path)
    env = {**_env(), "HMUM_VALUE_WEIGHT_MODEL": str(bad), "HMUM_STORE_URL": str(store_path)}
    p = subprocess.run(
        [sys.executable, "-m", "uvicorn", "--factory", "hmum.serving.service:app_from_env",
         "--host", "127.0.0.1", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 3, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert flat(p.stderr).startswith(f"error: value-weight model {bad} failed its "
                                         "start-up checks")


def test_serve_warns_when_the_store_is_missing(vw, tmp_path, runs):
    """A mistyped store path is named at start (the store is never created by serving);
    the service still starts: it answers degraded until a store is there."""
    missing = tmp_path / "typo.sqlite"
    r = invoke("--model", str(vw[0]), "--store", str(missing))
    assert r.exit_code == 0, r.output
    out = flat(r)
    assert f"warning: store {missing}:" in out and "no store at" in out
    assert not missing.exists() and len(runs) == 1
