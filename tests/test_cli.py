"""The command line end to end on tiny data: simulate -> train -> evaluate, and errors."""

import json

import pytest
from typer.testing import CliRunner

from hmum.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    res = runner.invoke(app, ["simulate", "--out", str(out), "--users", "3000",
                              "--requests", "200", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "oracle personalized" in res.output
    return out


def test_simulate_writes_files(sim):
    for name in ("users.parquet", "requests.parquet", "schema.json", "simulation.json"):
        assert (sim / name).is_file()


def test_train_then_evaluate(sim, tmp_path):
    res = runner.invoke(app, ["train", "--data", str(sim / "users.parquet"), "--out",
                              str(tmp_path / "model"), "--epochs", "1", "--batch-size", "512"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "model" / "manifest.json").is_file()
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "model"), "--data",
                              str(sim / "users.parquet"), "--test-split", "--out",
                              str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Normalized Qini and AUUC" in report and "Ground truth" in report
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert len(summary["tables"]["model"]) == 4  # K x R cells
    assert len(list((tmp_path / "eval" / "curves").glob("*.png"))) == 4


def test_train_missing_schema(tmp_path):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"")
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    assert "schema not found" in res.output


def test_evaluate_refuses_tampered_model(sim, tmp_path):
    res = runner.invoke(app, ["train", "--data", str(sim / "users.parquet"), "--out",
                              str(tmp_path / "m"), "--epochs", "1", "--batch-size", "1024"])
    assert res.exit_code == 0, res.output
    (tmp_path / "m" / "schema.json").write_text("{}")
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m"), "--data",
                              str(sim / "users.parquet")])
    assert res.exit_code == 2
    assert "does not match its sha256" in res.output


def test_simulate_bad_parameter(tmp_path):
    res = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--treatments", "9"])
    assert res.exit_code == 2
    assert "n_treatments" in res.output


def test_demo_small(tmp_path):
    res = runner.invoke(app, ["demo", "--out", str(tmp_path), "--users", "4000",
                              "--epochs", "1"])
    assert res.exit_code == 0, res.output
    assert "demo finished" in res.output
    assert (tmp_path / "report" / "report.md").is_file()
    assert (tmp_path / "models" / "HUM" / "manifest.json").is_file()
