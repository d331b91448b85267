import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import hmum.workflows.bench as bench
from hmum.cli import bench as cli_bench
from hmum.models.base import NeuralUpliftEstimator
from hmum.models.causalml import CausalMLTLearner, causalml_available
from hmum.models.hum import HUMEstimator
from hmum.models.registry import ModelEntry
from hmum.workflows.bench import aggregate_cells, bench_tables, run_bench
from hmum.workflows.train import split_data
from tests.cli_output import flat
from tests.synth import make_experiment

TINY = {"epochs": 1, "batch_size": 256, "threads": 1}
needs_causalml = pytest.mark.skipif(not causalml_available(), reason="needs hmum[causalml]")


def tiny_loader(truth=True, n=600):
    """A loader with the benchmark contract: one split per seed of a small experiment."""
    calls = []

    def load(name, path=None, *, seed=0, **options):
        calls.append((name, seed, options))
        d = make_experiment(n=n, K=2, R=2, effect=1.0, seed=0)
        if not truth:
            d.mu = None
        tr, va, te = split_data(d, seed)
        return [SimpleNamespace(name=name, train=tr, valid=va, test=te)]

    load.calls = calls
    return load


class FitCounter:
    """Wraps ``cls.fit``; counts calls and can interrupt the run at call ``stop_at``."""

    def __init__(self, monkeypatch, *classes, stop_at=None):
        self.n = 0
        self.stop_at = stop_at
        for cls in classes:
            orig = cls.fit

            def fit(est, *a, _orig=orig, **k):
                self.n += 1
                if self.stop_at is not None and self.n == self.stop_at:
                    raise KeyboardInterrupt  # like Ctrl-C in the middle of a fit
                return _orig(est, *a, **k)

            monkeypatch.setattr(cls, fit.__name__, fit)


# --------------------------------------------------------------------------------------
# running, resuming, failures
# --------------------------------------------------------------------------------------


@needs_causalml
def test_interrupted_run_resumes_without_refitting_finished_cells(tmp_path, monkeypatch):
    load = tiny_loader()
    counter = FitCounter(monkeypatch, HUMEstimator, CausalMLTLearner, stop_at=3)
    models = ["hum", "causalml_t"]
    with pytest.raises(KeyboardInterrupt):
        run_bench("toy", models, 2, tmp_path, loader=load, **TINY)
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2  # seed 0's two cells
    counter.stop_at = None
    counter.n = 0
    res = run_bench("toy", models, 2, tmp_path, loader=load, **TINY)
    assert counter.n == 2 and res.fitted == 2  # only seed 1 ran
    assert [c["status"] for c in res.cells] == ["ok"] * 4
    # everything finished: a third run fits nothing and writes the same tables
    counter.n = 0
    again = run_bench("toy", models, 2, tmp_path, loader=load, **TINY)
    assert counter.n == 0 and again.fitted == 0 and again.reused == 4
    assert again.markdown == res.markdown
    # a changed setting does not reuse the cells of the old one
    run_bench("toy", models, 2, tmp_path, loader=load, **{**TINY, "epochs": 2})
    assert counter.n == 4
    # nor does --no-resume
    counter.n = 0
    run_bench("toy", ["hum"], 1, tmp_path, loader=load, resume=False, **TINY)
    assert counter.n == 1


def test_a_results_json_without_its_cells_folder_is_resumed_from(tmp_path, monkeypatch):
    # a fresh clone keeps results.json but not cells/ (gitignored): only what changed reruns
    load = tiny_loader()
    counter = FitCounter(monkeypatch, HUMEstimator)
    res = run_bench("toy", ["hum", "arm_means"], 2, tmp_path, loader=load, **TINY)
    assert counter.n == 2
    saved = json.loads(res.files["json"].read_text())
    for f in (tmp_path / "cells").glob("*.json"):
        f.unlink()
    # one cell tampered with (its key no longer matches its settings): run again, not trusted
    tampered = next(c for c in saved["cells"] if c["model"] == "hum" and c["seed"] == 1)
    tampered["settings"]["seed"] = 7
    res.files["json"].write_text(json.dumps(saved))
    counter.n = 0
    again = run_bench("toy", ["hum", "arm_means"], 2, tmp_path, loader=load, **TINY)
    assert counter.n == 1 and again.fitted == 1 and again.reused == 3
    assert [(c["model"], c["seed"]) for c in again.cells if not c.get("reused")] == [("hum", 1)]
    assert len(list((tmp_path / "cells").glob("*.json"))) == 4
    # a model whose defaults changed (new defaults_version) is refit, the others reused
    monkeypatch.setattr(HUMEstimator, "defaults_version", HUMEstimator.defaults_version + 1)
    for f in (tmp_path / "cells").glob("*.json"):
        f.unlink()
    counter.n = 0
    third = run_bench("toy", ["hum", "arm_means"], 2, tmp_path, loader=load, **TINY)
    assert counter.n == 2 and third.reused == 2
    # an unreadable results.json restores nothing and the run goes on
    res.files["json"].write_text("{not json")
    for f in (tmp_path / "cells").glob("*.json"):
        f.unlink()
    counter.n = 0
    run_bench("toy", ["hum"], 1, tmp_path, loader=load, **TINY)
    assert counter.n == 1


def test_failed_model_is_reported_and_the_run_goes_on(tmp_path, monkeypatch):
    counter = FitCounter(monkeypatch, HUMEstimator)
    class GhostEstimator(HUMEstimator):
        """A model whose backend cannot be loaded: building it raises."""

        model_type = "ghost_test"

        def __init__(self, *a, **k):
            raise ImportError("the ghost backend is not installed")

    broken = ModelEntry("broken", HUMEstimator, {"no_such_field": 1}, "Broken")
    ghost = ModelEntry("ghost", GhostEstimator, {}, "Ghost")
    res = run_bench("toy", [broken, ghost, "hum"], 2, tmp_path, loader=tiny_loader(), **TINY)
    status = {(c["model"], c["seed"]): c["status"] for c in res.cells}
    assert status == {("broken", 0): "failed", ("ghost", 0): "failed", ("hum", 0): "ok",
                      ("broken", 1): "failed", ("ghost", 1): "failed", ("hum", 1): "ok"}
    errors = {c["model"]: c["error"] for c in res.cells if c["status"] == "failed"}
    assert errors["broken"].startswith("ValidationError: ") and "no_such_field" in errors["broken"]
    assert errors["ghost"] == "ImportError: the ghost backend is not installed"
    assert counter.n == 4  # broken's fit was called (and raised) on both seeds, hum's too
    lines = res.markdown.splitlines()
    assert any(line.startswith("| Broken | failed: ValidationError: ") for line in lines)
    assert any(line.startswith("| Ghost | failed: ImportError: ") for line in lines)
    csv = pd.read_csv(res.files["csv"])
    row = csv[csv["model"] == "broken"].iloc[0]
    assert row["status"] == "failed" and row["error"].startswith("ValidationError")
    saved = json.loads(res.files["json"].read_text())
    assert {c["model"] for c in saved["cells"] if c["status"] == "failed"} == {"broken", "ghost"}
    # failed cells count as finished; retry_failed runs them again
    counter.n = 0
    run_bench("toy", [broken, ghost, "hum"], 2, tmp_path, loader=tiny_loader(), **TINY)
    assert counter.n == 0
    run_bench("toy", [broken, ghost, "hum"], 2, tmp_path, loader=tiny_loader(),
              retry_failed=True, **TINY)
    assert counter.n == 2


def test_single_treatment_model_is_na_without_fitting(tmp_path, monkeypatch):
    class OneArm(NeuralUpliftEstimator):
        model_type = "one_arm_test"
        max_treatments = 1

        def fit(self, *a, **k):  # pragma: no cover - must not be called
            raise AssertionError("fit called")

    res = run_bench("toy", [ModelEntry("one", OneArm, label="OneArm")], 1, tmp_path,
                    loader=tiny_loader(), **TINY)
    assert res.cells[0]["status"] == "n/a"
    assert ("| OneArm | 0/1 | — | n/a (single-treatment model; this dataset has K=2 "
            "treatments) |") in res.markdown


def test_unknown_model_name_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"models: unknown model name\(s\) \['nope'\]"):
        run_bench("toy", ["hum", "nope"], 1, tmp_path, loader=tiny_loader())


def test_metrics_match_evaluate_estimator_and_per_seed_values_are_kept(tmp_path):
    from hmum.workflows.train import evaluate_estimator

    load = tiny_loader()
    res = run_bench("toy", ["hum"], [4], tmp_path, loader=load, **TINY)
    split = load("toy", seed=4)[0]
    est = HUMEstimator(split.train.schema, trainer={"max_epochs": 1, "batch_size": 256,
                                                    "seed": 4, "num_threads": 1}).fit(split.train, split.valid)
    table = evaluate_estimator(est, split.test)["table"]
    got = pd.DataFrame(res.cells[0]["metrics"])
    np.testing.assert_allclose(got["qini"], table["qini"])
    np.testing.assert_allclose(got["auuc"], table["auuc"])
    assert res.cells[0]["seed"] == 4 and res.cells[0]["epochs"] == 1


@needs_causalml
@pytest.mark.parametrize("truth", [True, False])
def test_pehe_only_with_ground_truth(tmp_path, truth):
    res = run_bench("toy", ["causalml_t"], 1, tmp_path, loader=tiny_loader(truth=truth), **TINY)
    metrics = res.cells[0]["metrics"]
    assert all(("pehe" in m) == truth for m in metrics)
    assert ("## PEHE" in res.markdown) == truth
    assert ("pehe" in set(res.summary["metric"])) == truth
    if truth:  # the T-learner's PEHE on this easy problem is far below the effect size 1
        assert res.summary.query("metric == 'pehe'")["mean"].max() < 0.5


# --------------------------------------------------------------------------------------
# tables on a hand-made result set
# --------------------------------------------------------------------------------------


def cell(model, seed, ours, qini, auuc, pehe=None):
    ms = []
    for (t, r), q, a in zip([("t1", "y0"), ("t1", "y1")], qini, auuc, strict=True):
        m = {"treatment": t, "response": r, "qini": q, "auuc": a}
        if pehe is not None:
            m["pehe"] = pehe[len(ms)]
        ms.append(m)
    return {"model": model, "label": model.upper(), "ours": ours, "seed": seed, "split": "s",
            "status": "ok", "metrics": ms, "fit_seconds": 1.0}


def hand_made():
    return [
        # HUM: best Qini on t1/y0, worst AUUC
        cell("hum", 0, True, [0.50, 0.10], [0.20, 0.20], [0.9, 0.9]),
        cell("hum", 1, True, [0.30, 0.10], [0.20, 0.20], [0.9, 0.9]),
        # base1: best baseline on t1/y0, best of all on t1/y1 Qini
        cell("base1", 0, False, [0.35, 0.60], [0.30, 0.50], [0.5, 0.4]),
        cell("base1", 1, False, [0.25, 0.40], [0.30, 0.50], [0.5, 0.6]),
        # base2: lowest PEHE (lower is better)
        cell("base2", 0, False, [0.10, 0.20], [0.40, 0.10], [0.2, 0.3]),
        cell("base2", 1, False, [0.10, 0.20], [0.40, 0.10], [0.2, 0.3]),
        {"model": "bad", "label": "BAD", "ours": False, "seed": 0, "split": "s",
         "status": "failed", "error": "RuntimeError: out of | memory"},
    ]


def rows_of(md: str, title: str) -> dict[str, list[str]]:
    """{model label: cells} of the Markdown table under ``## title...``."""
    block = md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in block.splitlines():
        if line.startswith("| ") and not line.startswith("| model"):
            parts = [p.strip() for p in line.strip("|").split(" | ")]
            out[parts[0]] = parts[1:]
    return out


def test_bold_best_and_underlined_best_baseline():
    summary = aggregate_cells(hand_made())
    md = bench_tables(summary, dataset="hand")
    qini = rows_of(md, "Qini")
    # t1/y0: HUM 0.40 best (bold); base1 0.30 best baseline (underlined, not bold)
    assert qini["HUM"][0] == "**0.4000 ± 0.1414**"
    assert qini["BASE1"][0] == "<u>0.3000 ± 0.0707</u>"
    assert qini["BASE2"][0] == "0.1000 ± 0.0000"
    # t1/y1: base1 0.50 is best of all and best baseline: both marks
    assert qini["BASE1"][1] == "**<u>0.5000 ± 0.1414</u>**"
    assert qini["HUM"][1] == "0.1000 ± 0.0000"
    assert qini["HUM"][2] == "2/2"
    # a failed model: its error in the first column (pipes escaped), dashes after
    assert qini["BAD"] == ["failed: RuntimeError: out of \\| memory", "—", "0/1"]
    auuc = rows_of(md, "AUUC")
    assert auuc["BASE2"][0] == "**<u>0.4000 ± 0.0000</u>**"
    assert auuc["HUM"][0] == "0.2000 ± 0.0000"
    # PEHE: lower is better
    pehe = rows_of(md, "PEHE")
    assert pehe["BASE2"][0] == "**<u>0.2000 ± 0.0000</u>**"
    assert pehe["BASE2"][1] == "**<u>0.3000 ± 0.0000</u>**"
    assert pehe["HUM"][0] == "0.9000 ± 0.0000"


def test_summary_long_format_mean_std_n():
    summary = aggregate_cells(hand_made())
    r = summary.query("model == 'hum' and metric == 'qini' and response == 'y0'").iloc[0]
    assert r["mean"] == pytest.approx(0.4)
    assert r["std"] == pytest.approx(np.std([0.5, 0.3], ddof=1))
    assert r["n"] == 2 and r["values"] == [0.5, 0.3]
    bad = summary.query("model == 'bad'")
    assert len(bad) == 1 and bad.iloc[0]["status"] == "failed"
    # one seed: the mean alone, no "± 0"
    one = aggregate_cells(hand_made()[:1])
    assert rows_of(bench_tables(one), "Qini")["HUM"][0] == "**0.5000**"


def test_partial_failure_is_noted_in_runs():
    cells = hand_made()[:2] + [{"model": "hum", "label": "HUM", "ours": True, "seed": 2,
                                "split": "s", "status": "failed", "error": "ValueError: boom"}]
    md = bench_tables(aggregate_cells(cells))
    assert rows_of(md, "Qini")["HUM"][-1] == "2/3 (1 failed: ValueError: boom)"


# --------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------


@needs_causalml
def test_cli_end_to_end(tmp_path, monkeypatch):
    load = tiny_loader()
    monkeypatch.setattr(bench, "load_dataset_splits", load)
    app = typer.Typer()
    app.command(name="bench")(cli_bench.bench)
    app.command("noop")(lambda: None)  # two commands: Typer then needs the command name
    out = tmp_path / "out"
    args = ["bench", "--dataset", "toy", "--models", "hum,causalml_t", "--seeds", "2",
            "--epochs", "1", "--batch-size", "256", "--threads", "1", "--out", str(out),
            "--option", "replications=3"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "| HUM |" in flat(res) and "| causalml T (LightGBM) |" in flat(res)
    assert "4 cell(s) run" in flat(res)
    assert {p.name for p in out.iterdir()} == {"cells", "results.md", "results.csv",
                                               "results.json", "paired.csv"}
    assert load.calls[0] == ("toy", 0, {"replications": 3})  # option parsed as JSON
    md = (out / "results.md").read_text()
    assert "## Qini" in md and "## PEHE" in md
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 cell(s) run, 4 reused, 0 n/a" in flat(again)


def test_cli_bad_input(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "load_dataset_splits", tiny_loader())
    app = typer.Typer()
    app.command(name="bench")(cli_bench.bench)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["bench", "--dataset", "toy", "--models", "hum,nope",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown model name(s) ['nope']" in flat(res)
    res = CliRunner().invoke(app, ["bench", "--dataset", "toy", "--option", "replications",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 2 and "expected KEY=VALUE" in flat(res)


def test_models_command_lists_the_registry():
    """`hmum models` prints the registry (the names --models takes), which `bench --help`
    points to instead of listing it (listing imports every model: help stayed slow)."""
    from hmum.cli.app import app as hmum_app
    from hmum.models.registry import get_entry, list_models

    res = CliRunner().invoke(hmum_app, ["models"])
    assert res.exit_code == 0, res.output
    text = flat(res)
    for name in list_models():
        e = get_entry(name)
        assert f" {name} {e.display} {e.model_type} " in text, name
    assert "descn DESCN descn 1 baseline" in text and "hum HUM hum any HUM" in text
    rows = json.loads(CliRunner().invoke(hmum_app, ["models", "--json"]).output)
    assert [r["name"] for r in rows] == list_models()
    assert {r["name"]: r["max_treatments"] for r in rows}["cevae"] == 1
    assert "hmum models" in flat(CliRunner().invoke(hmum_app, ["bench", "--help"]))


def test_bench_help_names_every_dataset():
    from hmum.data.datasets import DATASETS

    assert cli_bench.DATASET_NAMES == tuple(DATASETS)
