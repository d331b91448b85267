import json

import numpy as np
from typer.testing import CliRunner

from hmum.serving.store import SQLiteStore
from tests.cli_output import assert_one_line_error, flat
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
    assert "scored 3,000 users in 3 shard(s)" in flat(r)
    r = run("score", "--model", model_dir_b, "--model-version", "b2", *common)
    assert r.exit_code == 0, r.output

    r = run("store", "status", "--store", db, "--json")
    st = json.loads(r.output)
    assert (st["current"], st["previous"]) == ("20240102-b2", st["versions"][0]["version"])
    first = st["previous"]
    r = run("store", "status", "--store", db)
    assert r.exit_code == 0 and "current" in flat(r) and "previous" in flat(r)

    r = run("store", "get", 1000, 1003, 42, "--store", db, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["version"] == "20240102-b2"
    assert [u["found"] for u in got["users"]] == [True, True, False]
    with SQLiteStore(db) as s:
        want = s.get([1003]).delta[0]
    assert np.float32(got["users"][1]["delta"]["t2"]["y1"]) == want[1, 1]
    r = run("store", "get", 1000, "--store", db)
    assert "t1 / y0" in flat(r)

    assert "current=" + first in flat(run("store", "rollback", "--store", db))
    r = run("store", "rollback", "--store", db)
    assert r.exit_code == 2 and "no previous version" in flat(r)
    assert run("store", "switch", "20240102-b2", "--store", db).exit_code == 0
    r = run("store", "switch", "nope", "--store", db)
    assert r.exit_code == 2 and "version 'nope' not found" in flat(r)
    r = run("store", "cleanup", "--store", db)
    assert r.exit_code == 0 and "deleted 0 version(s)" in flat(r)
    r = run("store", "get", "abc", "--store", db)
    assert r.exit_code == 2 and "stores integer user ids" in flat(r)


def test_score_bad_date(model_dir, users_path, tmp_path):
    r = run("score", "--model", model_dir, "--input", users_path, "--date", "02/01/2024",
            "--store", tmp_path / "s.db", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "expected YYYY-MM-DD" in flat(r)


def test_score_missing_model(users_path, tmp_path):
    r = run("score", "--model", tmp_path / "none", "--input", users_path,
            "--store", tmp_path / "s.db", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "model artifact not found" in flat(r)


def one_error_line(r, *needles) -> str:
    """Exit 2, no traceback, one 'error:' message holding every needle."""
    out = assert_one_line_error(r, *needles)
    assert out.count("error:") == 1, out
    return out


def test_reading_commands_never_create_a_store(tmp_path):
    typo = tmp_path / "runs" / "uplfit.sqlite"
    for cmd in (["store", "status"], ["store", "get", "7"], ["store", "rollback"],
                ["store", "cleanup"], ["store", "switch", "v1"]):
        one_error_line(run(*cmd, "--store", typo), f"no store at {typo}")
    assert not typo.exists() and not typo.parent.exists()


def test_store_status_on_a_folder_or_a_file_that_is_not_a_store(tmp_path):
    one_error_line(run("store", "status", "--store", tmp_path), "is a folder")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 50)
    one_error_line(run("store", "status", "--store", notes), "not an SQLite database")
    one_error_line(run("store", "get", "1", "--store", notes), "not an SQLite database")


def test_store_get_reads_integer_ids_exactly(model_dir, users_path, tmp_path):
    db = tmp_path / "s.sqlite"
    r = run("score", "--model", model_dir, "--input", users_path, "--out", tmp_path / "out",
            "--store", db, "--shard-rows", 3000, "--date", "2024-01-02")
    assert r.exit_code == 0, r.output
    assert json.loads(run("store", "get", 1000, "--store", db, "--json").output)[
        "users"][0]["found"]
    for lookalike in ("01000", "+1000", " 1000", "١٠٠٠"):  # never read as user 1000
        one_error_line(run("store", "get", lookalike, "--store", db),
                       "stores integer user ids", "plain decimal")


def test_score_with_redis_down_is_one_line_and_leaves_no_record(model_dir, users_path,
                                                                 tmp_path):
    from hmum.serving.store import free_loopback_port

    url = f"redis://127.0.0.1:{free_loopback_port()}/0"  # nothing listens there
    r = run("score", "--model", model_dir, "--input", users_path, "--out", tmp_path / "out",
            "--store", url, "--date", "2024-01-02")
    one_error_line(r, f"store {url}: Redis does not answer")
    assert not (tmp_path / "out").exists()
    one_error_line(run("store", "status", "--store", url), f"store {url}:")


def test_score_into_a_file_that_is_not_a_store(model_dir, users_path, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 50)
    r = run("score", "--model", model_dir, "--input", users_path, "--out", tmp_path / "out",
            "--store", notes, "--date", "2024-01-02")
    one_error_line(r, "notes.txt: not an SQLite database")
    assert notes.read_text() == "not a database\n" * 50 and not (tmp_path / "out").exists()


def test_score_refuses_other_responses_without_force(model_dir, model_dir_r3, users_path,
                                                     tmp_path):
    db = tmp_path / "s.sqlite"
    common = ["--input", users_path, "--out", tmp_path / "out", "--store", db,
              "--shard-rows", 3000, "--date", "2024-01-02"]
    assert run("score", "--model", model_dir, *common).exit_code == 0
    first = json.loads(run("store", "status", "--store", db, "--json").output)["current"]
    out = one_error_line(run("score", "--model", model_dir_r3, *common),
                         "holds responses ['y0', 'y1'] and treatments ['t1', 't2']",
                         "this model scores responses ['y0', 'y1', 'y2']", "--force")
    assert first in out
    r = run("score", "--model", model_dir_r3, "--force", *common)
    assert r.exit_code == 0, r.output
    st = json.loads(run("store", "status", "--store", db, "--json").output)
    assert st["previous"] == first and st["current"] != first
