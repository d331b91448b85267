"""The command line end to end on tiny data: simulate -> train -> evaluate, and errors."""

import json

import pytest
from typer.testing import CliRunner

from hmum.cli.app import app
from tests.cli_output import assert_one_line_error, flat

runner = CliRunner()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    res = runner.invoke(app, ["simulate", "--out", str(out), "--users", "3000",
                              "--requests", "200", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "oracle personalized" in flat(res)
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
    # level diagnostics (issue 12 #6): printed, in the report and in the JSON
    assert "levels, mean prediction vs observed mean" in flat(res)
    assert "### Levels: mean prediction against observed mean, per arm" in report
    levels = summary["levels"]["model"]
    assert len(levels) == 6  # (K+1) x R cells
    assert {"arm", "response", "n", "observed_mean", "observed_se", "predicted_mean", "gap",
            "flagged"} <= set(levels[0])
    n_test = [sum(c["n"] for c in levels if c["response"] == r) for r in ("usage_time", "video_views")]
    assert n_test[0] == n_test[1] and 290 <= n_test[0] <= 310  # every test row once
    assert len(list((tmp_path / "eval" / "curves").glob("*.png"))) == 4


def test_train_missing_schema(tmp_path):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"")
    res = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    assert "schema not found" in flat(res)


def test_evaluate_refuses_tampered_model(sim, tmp_path):
    res = runner.invoke(app, ["train", "--data", str(sim / "users.parquet"), "--out",
                              str(tmp_path / "m"), "--epochs", "1", "--batch-size", "1024"])
    assert res.exit_code == 0, res.output
    (tmp_path / "m" / "schema.json").write_text("{}")
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m"), "--data",
                              str(sim / "users.parquet")])
    assert res.exit_code == 2
    assert "does not match its sha256" in flat(res)


def test_simulate_bad_parameter(tmp_path):
    res = runner.invoke(app, ["simulate", "--out", str(tmp_path), "--treatments", "9"])
    assert_one_line_error(res, "--treatments: expected a number <= 4, got 9")
    assert "n_treatments" not in res.output


def test_demo_small(tmp_path):
    res = runner.invoke(app, ["demo", "--out", str(tmp_path), "--users", "4000",
                              "--epochs", "1"])
    assert res.exit_code == 0, res.output
    assert "demo finished" in flat(res)
    assert (tmp_path / "report" / "report.md").is_file()
    assert (tmp_path / "models" / "HUM" / "manifest.json").is_file()


def test_demo_model_options_reach_both_models(tmp_path):
    import json

    res = runner.invoke(app, ["demo", "--out", str(tmp_path), "--users", "3000", "--epochs",
                              "1", "--no-ddm", "-o", "selector=fieldwise"])
    assert res.exit_code == 0, res.output
    for name, kl in (("HUM", 1.0), ("HUM_wo_KL", 0.0)):
        cfg = json.loads((tmp_path / "models" / name / "config.json").read_text())["model"]
        assert cfg["selector"] == "fieldwise" and cfg["kl_weight"] == kl


@pytest.mark.parametrize("option, message", [
    ("kl_weight=0.5", "-o kl_weight: the demo trains HUM (kl_weight 1) and HUM w/o KL (0) "
                      "itself; got kl_weight=0.5"),
    ("selectr=fieldwise", "-o selectr: model hum (HUMEstimator) has no config field"),
    ("selector=wide", "-o selector"),
])
def test_demo_bad_model_option(tmp_path, option, message):
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--users", "3000",
                              "-o", option])
    assert_one_line_error(res, message)
    assert not (tmp_path / "d" / "data").exists()  # refused before any work


# --------------------------------------------------------------------------------------
# issue 13: one error boundary, flags named, outputs checked before any work
# --------------------------------------------------------------------------------------

TRAIN_FAST = ["--epochs", "1", "--batch-size", "1024"]


@pytest.fixture(scope="module")
def model(sim, tmp_path_factory):
    """A model trained by `hmum train` on the simulated users (split recorded)."""
    out = tmp_path_factory.mktemp("model") / "m"
    res = runner.invoke(app, ["train", "--data", str(sim / "users.parquet"), "--out", str(out),
                              *TRAIN_FAST])
    assert res.exit_code == 0, res.output
    return out


def _users(sim):
    import pyarrow.parquet as pq

    return pq.read_table(sim / "users.parquet")


def _write_users(sim, tmp_path, table, name="users.parquet"):
    import shutil

    import pyarrow.parquet as pq

    shutil.copy(sim / "schema.json", tmp_path / "schema.json")
    pq.write_table(table, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--epochs", "0", "--epochs: expected a number >= 1, got 0"),
    ("--batch-size", "-5", "--batch-size: expected a number >= 1, got -5"),
    ("--lr", "nan", "--lr: expected a number > 0, got nan"),
    ("--threads", "0", "--threads: expected a number >= 1, got 0"),
    ("--kl-weight", "-1", "--kl-weight: expected a number >= 0, got -1.0"),
    ("--device", "tpu", "--device: expected cpu, cuda or cuda:N, got 'tpu'"),
])
def test_train_bad_option_names_the_flag(sim, tmp_path, flag, value, message):
    res = runner.invoke(app, ["train", "--data", str(sim / "users.parquet"), "--out",
                              str(tmp_path / "m"), flag, value])
    assert_one_line_error(res, message)
    assert "max_epochs" not in res.output and "batch_size" not in res.output
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("command", [
    ["train", "--data", "{missing}", "--out", "{file}"],
    ["evaluate", "--model", "{missing}", "--data", "{missing}", "--out", "{file}"],
    ["simulate", "--users", "100", "--out", "{file}"],
    ["demo", "--users", "500", "--out", "{file}"],
    ["policy-eval", "--users", "{missing}", "--hum-model", "{missing}", "--out", "{file}"],
    ["train-value-weights", "--requests", "{missing}", "--out", "{file}"],
])
def test_output_path_that_is_a_file_refused_before_any_work(tmp_path, command):
    """`train --out <file>` used to train to the end, then crash: now refused first (the
    data path does not even exist, so any work would fail on it instead)."""
    (tmp_path / "taken").write_text("keep me")
    args = [a.format(missing=tmp_path / "nope.parquet", file=tmp_path / "taken")
            for a in command]
    res = runner.invoke(app, args)
    assert_one_line_error(res, "--out: expected a folder, got an existing file")
    assert (tmp_path / "taken").read_text() == "keep me"


def test_decide_and_onnx_outputs_checked_before_any_work(tmp_path):
    (tmp_path / "dir.parquet").mkdir()
    res = runner.invoke(app, ["decide", "--requests", "r", "--users", "u", "--hum-model", "h",
                              "--value-model", "v", "--out", str(tmp_path / "dir.parquet")])
    assert_one_line_error(res, "--out: expected a file, got an existing folder")
    res = runner.invoke(app, ["decide", "--requests", "r", "--users", "u", "--hum-model", "h",
                              "--value-model", "v", "--out", str(tmp_path / "d.txt")])
    assert_one_line_error(res, "--out: expected a file name ending in .parquet or .csv")
    res = runner.invoke(app, ["train-value-weights", "--requests", "r", "--out",
                              str(tmp_path / "vw"), "--onnx", str(tmp_path / "vw.bin")])
    assert_one_line_error(res, "--onnx: expected a file name ending in .onnx")


def test_existing_model_is_replaced_only_with_force(sim, model, tmp_path):
    import shutil

    target = tmp_path / "m"
    shutil.copytree(model, target)
    before = (target / "weights.safetensors").read_bytes()
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "nope.parquet"), "--out",
                              str(target)])
    assert_one_line_error(res, f"--out: a model already exists at {target}; pass --force")
    assert (target / "weights.safetensors").read_bytes() == before
    res = runner.invoke(app, ["train", "--data", str(sim / "users.parquet"), "--out",
                              str(target), "--force", "--seed", "7", *TRAIN_FAST])
    assert res.exit_code == 0, res.output
    assert (target / "weights.safetensors").read_bytes() != before


def test_folder_that_is_not_a_model_is_never_replaced(sim, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    res = runner.invoke(app, ["train", "--data", str(sim / "users.parquet"), "--out",
                              str(tmp_path / "notes"), "--force"])
    assert_one_line_error(res, "is a folder that is not an hmum model artifact")
    assert (tmp_path / "notes" / "a.txt").read_text() == "x"


def test_test_split_refuses_a_subset_or_superset_of_the_training_file(sim, model, tmp_path):
    """Issue 13 #3: on a 2,000-row subset of the training file most "test" rows had been
    training rows; the fingerprint in the artifact now refuses it, naming both tables."""
    import pyarrow as pa

    t = _users(sim)
    sub = _write_users(sim, tmp_path, t.slice(0, 2000), "sub.parquet")
    res = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(sub),
                              "--test-split", "--out", str(tmp_path / "e")])
    assert_one_line_error(res, "--test-split: --data", "is not the table the model was split "
                          "from (2,000 rows, user_id hash", "the model's: 3,000 rows, user_id "
                          "hash", "would include training rows")
    sup = _write_users(sim, tmp_path, pa.concat_tables([t, t.slice(0, 500)]), "sup.parquet")
    res = runner.invoke(app, ["policy-eval", "--users", str(sup), "--hum-model", str(model),
                              "--test-split", "--n-boot", "5", "--out", str(tmp_path / "p")])
    assert_one_line_error(res, "--test-split: --users", "(3,500 rows")
    # the training file itself passes (test_train_then_evaluate evaluates on it)


def test_test_split_refuses_an_artifact_without_fingerprint(sim, model, tmp_path):
    import shutil

    from hmum.models.artifacts import sha256_file

    old = tmp_path / "old"
    shutil.copytree(model, old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["data_fingerprint"]  # as written before fingerprints were kept
    (old / "config.json").write_text(json.dumps(cfg))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["files"]["config.json"] = sha256_file(old / "config.json")
    (old / "manifest.json").write_text(json.dumps(manifest))
    res = runner.invoke(app, ["evaluate", "--model", str(old), "--data",
                              str(sim / "users.parquet"), "--test-split", "--out",
                              str(tmp_path / "e")])
    assert_one_line_error(res, "--test-split: the model records its split but no fingerprint")
    # without --test-split the old artifact still evaluates
    res = runner.invoke(app, ["evaluate", "--model", str(old), "--data",
                              str(sim / "users.parquet"), "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output


def test_response_beyond_float32_refused_by_train_and_evaluate(sim, model, tmp_path):
    """Issue 13 #4: y = 1e308 passed validation, then train died (NaN loss) and evaluate
    printed a nonsense Qini."""
    import numpy as np
    import pyarrow as pa

    t = _users(sim)
    y = t.column("usage_time").to_numpy().copy()
    y[[11, 40]] = 1e308
    bad = _write_users(sim, tmp_path, t.set_column(
        t.column_names.index("usage_time"), "usage_time", pa.array(y)))
    expect = ("response column(s) ['usage_time']: expected |value| <= 3.403e+38",
              "rows [11, 40]", "pass --drop-invalid-responses to drop them")
    res = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "m"),
                              *TRAIN_FAST])
    assert_one_line_error(res, *expect)
    res = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(bad), "--out",
                              str(tmp_path / "e")])
    assert_one_line_error(res, *expect)
    res = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "m"),
                              "--drop-invalid-responses", *TRAIN_FAST])
    assert res.exit_code == 0, res.output
    assert "--data: dropped 2 row(s) with invalid responses" in flat(res)
    assert np.isfinite(json.loads((tmp_path / "m" / "history.json").read_text())
                       ["best_valid_loss"])


def test_nan_response_message_names_the_flag(sim, tmp_path):
    import numpy as np
    import pyarrow as pa

    t = _users(sim)
    y = t.column("video_views").to_numpy().astype(float)
    y[3] = np.nan
    bad = _write_users(sim, tmp_path, t.set_column(
        t.column_names.index("video_views"), "video_views", pa.array(y)))
    res = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "m")])
    assert_one_line_error(res, "pass --drop-invalid-responses to drop them")
    assert "drop_invalid_responses" not in res.output


def test_schema_typo_is_one_line_naming_file_and_field(sim, tmp_path):
    import shutil

    raw = json.loads((sim / "schema.json").read_text())
    raw["responses"][0]["kind"] = "continous"
    (tmp_path / "schema.json").write_text(json.dumps(raw))
    shutil.copy(sim / "users.parquet", tmp_path / "users.parquet")
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "users.parquet"), "--out",
                              str(tmp_path / "m")])
    assert_one_line_error(res, "schema.json: responses[0].kind: expected one of continuous, "
                          "count, binary, got 'continous'")
    assert "https://" not in res.output


def test_model_with_encoder_of_another_schema_refused(sim, model, tmp_path):
    import shutil

    from hmum.models.artifacts import sha256_file

    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    enc = json.loads((bad / "encoder.json").read_text())
    enc["fields"] = enc["fields"][1:]
    (bad / "encoder.json").write_text(json.dumps(enc))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["encoder.json"] = sha256_file(bad / "encoder.json")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    res = runner.invoke(app, ["evaluate", "--model", str(bad), "--data",
                              str(sim / "users.parquet"), "--out", str(tmp_path / "e")])
    assert_one_line_error(res, "encoder.json encodes", "the encoder belongs to another schema")


def test_semicolon_csv_and_broken_parquet_are_named(sim, tmp_path):
    import shutil

    shutil.copy(sim / "schema.json", tmp_path / "schema.json")
    _users(sim).slice(0, 50).to_pandas().to_csv(tmp_path / "u.csv", sep=";", index=False)
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "u.csv"), "--out",
                              str(tmp_path / "m")])
    assert_one_line_error(res, "u.csv: missing column(s)", "looks ';'-separated")
    (tmp_path / "u.parquet").write_bytes(b"PAR1 not really")
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "u.parquet"), "--out",
                              str(tmp_path / "m")])
    assert_one_line_error(res, "u.parquet: cannot read it as Parquet")


def test_long_error_is_not_wrapped(tmp_path):
    """rich wrapped errors at 80 columns, so a grep for a message failed on long temp paths."""
    deep = tmp_path / ("x" * 120) / "file.parquet"
    res = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "m"), "--data", str(deep),
                              "--out", str(tmp_path / "e")])
    assert_one_line_error(res, f"--data: data file not found: {deep}")
    assert str(deep) in res.output  # verbatim: no line break inside the path


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    """The boundary turns expected failures into one line, not bugs: a TypeError stays."""
    import hmum.workflows.train

    def broken(*a, **k):
        raise TypeError("a bug")

    monkeypatch.setattr(hmum.workflows.train, "train_model", broken)
    monkeypatch.setattr("hmum.cli.train.check_out_artifact", lambda *a: None)
    monkeypatch.setattr("hmum.cli.train._load", lambda *a, **k: (None, None))
    monkeypatch.setattr("hmum.cli.train._schema_path", lambda *a: tmp_path)
    res = runner.invoke(app, ["train", "--data", "d.parquet", "--out", str(tmp_path / "m")])
    assert isinstance(res.exception, TypeError)


@pytest.mark.parametrize(("args", "parts"), [
    (["train", "--data", "x", "--out", "y", "--epochs", "abc"],
     ("Invalid value for '--epochs'", "valid integer", "train --help)")),
    (["train", "--bogus", "1"], ("No such option: --bogus",)),
    (["train"], ("Missing option '--data'",)),
    (["nosuch"], ("No such command 'nosuch'",)),
])
def test_usage_errors_are_one_line_naming_the_flag(args, parts):
    """Typer's parse errors get the same one-line treatment as the commands' own."""
    res = runner.invoke(app, args)
    assert_one_line_error(res, *parts)
    assert "╭" not in res.output  # no boxed panel


# --------------------------------------------------------------------------------------
# issue 14 #8: a CLI that reads well anywhere
# --------------------------------------------------------------------------------------

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
#: run the command as the ``hmum`` entry point does, then report what got imported
ENTRY = """
import json, sys
sys.argv[0] = "hmum"
from hmum.cli.app import app
try:
    app(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("torch", "pandas", "pyarrow", "sklearn", "hmum.models.registry",
                           "hmum.workflows") if m in sys.modules)
print("IMPORTED " + json.dumps(heavy), file=sys.__stdout__)
sys.exit(code)
"""


def _run_entry(args, tmp_path, **env):
    import os
    import subprocess
    import sys

    full = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True,
                          cwd=tmp_path, env=full, timeout=120)


def _long_dir(tmp_path):
    """A folder whose path is over 150 characters long."""
    deep = tmp_path / ("long-" + "x" * 60) / ("path-" + "y" * 60) / ("z" * 40)
    deep.mkdir(parents=True)
    assert len(str(deep)) > 150
    return deep


def test_error_is_one_line_in_a_narrow_terminal_with_a_long_tmpdir(tmp_path):
    """The error of a fresh process, under COLUMNS=60 and a 150+ character TMPDIR, is one
    line on stderr naming the whole path, and no model code is imported to find it."""
    deep = _long_dir(tmp_path)
    missing = deep / "missing.parquet"
    p = _run_entry(["train", "--data", str(missing), "--out", str(deep / "m")], tmp_path,
                   COLUMNS="60", TMPDIR=str(deep))
    assert p.returncode == 2, p.stdout + p.stderr
    (line,) = p.stderr.splitlines()
    assert line == f"error: --data: data file not found: {missing}"
    assert p.stdout.strip() == "IMPORTED []", p.stdout


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["bench", "--help"],
                                  ["decide", "--help"]])
def test_help_imports_no_model_code(tmp_path, args):
    """`hmum --help` and `hmum CMD --help` are fast: no torch, pandas, pyarrow, models or
    workflows imported (benchmarks/bench_cli_startup.py measures the time)."""
    p = _run_entry(args, tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("IMPORTED []"), p.stdout[-500:]


def _all_commands():
    import typer.main

    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            if getattr(sub, "commands", None):
                walk(sub, [*path, name])
            out.append(([*path, name], sub))

    walk(root, [])
    return [([], root), *out]


HELPS = """
import contextlib, io, json, sys
from hmum.cli.app import app
out = {}
for path in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            app([*path, "--help"], prog_name="hmum")
        except SystemExit:
            pass
    out[" ".join(["hmum", *path])] = buf.getvalue()
print(json.dumps(out))
"""


@pytest.mark.parametrize("columns", [80, 60])
def test_every_help_is_legible(columns, tmp_path):
    """Every option name whole (no 'drop-unknown-us…'), no '<bool>' label on flags, no line
    wider than the terminal, at 80 and 60 columns (a fresh process: the width is the
    terminal's, which CliRunner would fix at 80)."""
    import os
    import subprocess
    import sys

    commands = _all_commands()
    p = subprocess.run([sys.executable, "-c", HELPS, json.dumps([c for c, _ in commands])],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
                            "COLUMNS": str(columns)})
    assert p.returncode == 0, p.stderr
    helps = json.loads(p.stdout)
    for path, cmd in commands:
        where = " ".join(["hmum", *path])
        text = helps[where]
        assert text.startswith("Usage: " + where), (where, text)
        assert "…" not in text and "<bool>" not in text, (where, text)
        too_wide = [ln for ln in text.splitlines() if len(ln) > columns]
        assert not too_wide, (where, too_wide)
        words = set(text.replace(",", " ").split())
        for param in cmd.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("-"):
                    assert opt in words, (where, opt, text)


def test_tables_written_to_a_pipe_keep_their_width(tmp_path):
    """Off a terminal, rich squeezed tables to 80 columns ("HMUM (indep…"): now a table
    written to a pipe keeps its natural width whatever COLUMNS says."""
    p = _run_entry(["simulate", "--out", str(tmp_path / "s"), "--users", "1000", "--requests",
                    "50", "--candidates", "10"], tmp_path, COLUMNS="30")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "Ground truth: relative change vs control when applied to everyone" in lines
    assert any(ln.startswith("│ oracle personalized │") for ln in lines), p.stdout
    assert any(ln.startswith(f"wrote {tmp_path / 's' / 'users.parquet'}, ") for ln in lines)
    assert not p.stdout.startswith("\n")  # no blank line left by a progress bar
