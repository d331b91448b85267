import json

import numpy as np
from typer.testing import CliRunner

from hmum.serving.store import SQLiteStore
from tests.serving.helpers import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_score_then_store_commands(model_dir, model_dir_b, users_path, tmp_path):
    db = tmp_path / "s.sqlite"
    common = ["--input", users_path, "--out", tmp_path / "out", "--store", db,
              "--shard-rows", 1000, "--date", "2024-01-02"]
    r = run("score", "--model", model_dir, *common)
    assert r.exit_code == 0, r.output
    assert "scored 3,000 users in 3 shard(s)" in r.output
    r = run("score", "--model", model_dir_b, "--model-version", "b2", *common)
    assert r.exit_code == 0, r.output

    r = run("store", "status", "--store", db, "--json")
    st = json.loads(r.output)
    assert (st["current"], st["previous"]) == ("20240102-b2", st["versions"][0]["version"])
    first = st["previous"]
    r = run("store", "status", "--store", db)
    assert r.exit_code == 0 and "current" in r.output and "previous" in r.output

    r = run("store", "get", 1000, 1003, 42, "--store", db, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["version"] == "20240102-b2"
    assert [u["found"] for u in got["users"]] == [True, True, False]
    with SQLiteStore(db) as s:
        want = s.get([1003]).delta[0]
    assert np.float32(got["users"][1]["delta"]["t2"]["y1"]) == want[1, 1]
    r = run("store", "get", 1000, "--store", db)
    assert "t1 / y0" in r.output

    assert "current=" + first in run("store", "rollback", "--store", db).output
    r = run("store", "rollback", "--store", db)
    assert r.exit_code == 2 and "no previous version" in r.output
    assert run("store", "switch", "20240102-b2", "--store", db).exit_code == 0
    r = run("store", "switch", "nope", "--store", db)
    assert r.exit_code == 2 and "version 'nope' not found" in r.output
    r = run("store", "cleanup", "--store", db)
    assert r.exit_code == 0 and "deleted 0 version(s)" in r.output
    r = run("store", "get", "abc", "--store", db)
    assert r.exit_code == 2 and "stores integer user ids" in r.output


def test_score_bad_date(model_dir, users_path, tmp_path):
    r = run("score", "--model", model_dir, "--input", users_path, "--date", "02/01/2024",
            "--store", tmp_path / "s.db", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "expected YYYY-MM-DD" in r.output


def test_score_missing_model(users_path, tmp_path):
    r = run("score", "--model", tmp_path / "none", "--input", users_path,
            "--store", tmp_path / "s.db", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "model artifact not found" in r.output
