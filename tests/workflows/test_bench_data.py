"""``hmum bench --data FILE --schema SCHEMA.json``: a user's own experiment in the harness.

The fixture is a CSV in a user's format (its own column names, arm names as text,
ground truth optional), written by the tests.
"""

import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from hmum.cli import bench as cli_bench
from hmum.data.datasets import UserData
from hmum.data.schema import FeatureSpec, ResponseSpec, Schema, ground_truth_column
from hmum.models.registry import ModelEntry, get_entry
from hmum.workflows.bench import paired_differences, run_bench
from tests.cli_output import flat

TINY = {"epochs": 1, "batch_size": 512, "threads": 1}
ARMS = ["none", "promo_a", "promo_b"]


def user_frame(n=2400, effect=3.0, seed=0, truth=None) -> pd.DataFrame:
    """A promotion test: region A gains ``effect`` from promo_a and loses it from promo_b,
    region B the reverse; ``truth``: None, "per_arm" or "full" ground-truth columns."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south"], n)
    age = rng.normal(40, 10, n)
    arm = rng.integers(0, 3, n)
    base = 10 + 0.05 * (age - 40)
    sign = np.where(region == "north", 1.0, -1.0)
    mu = np.stack([base, base + effect * sign, base - effect * sign], axis=1)  # (n, 3)
    spend = mu[np.arange(n), arm] + rng.normal(0, 0.5, n)
    df = pd.DataFrame({"customer": [f"c{i:05d}" for i in range(n)], "region": region,
                       "age": age.round(2), "group": np.array(ARMS)[arm], "spend": spend})
    if truth:
        for a, name in enumerate(ARMS):
            df[ground_truth_column(name, "spend")] = mu[:, a]
        if truth == "full":
            df[ground_truth_column("all", "spend")] = base
    return df


def user_schema(truth=False) -> Schema:
    return Schema(features=[FeatureSpec(name="region", kind="categorical"),
                            FeatureSpec(name="age", kind="numeric")],
                  arm_column="group", arms=ARMS,
                  responses=[ResponseSpec(name="spend", kind="continuous")],
                  user_id="customer", ground_truth=truth)


def write(tmp_path, df, schema, name="promo.csv"):
    data = tmp_path / name
    df.to_csv(data, index=False) if name.endswith(".csv") else df.to_parquet(data)
    sch = tmp_path / "promo_schema.json"
    schema.to_json(sch)
    return data, sch


def cli():
    app = typer.Typer()
    app.command(name="bench")(cli_bench.bench)
    app.command("noop")(lambda: None)
    return app


def test_bench_data_cli_end_to_end_and_resume(tmp_path):
    data, sch = write(tmp_path, user_frame(truth="full"), user_schema(truth=True))
    out = tmp_path / "out"
    args = ["bench", "--data", str(data), "--schema", str(sch), "--models",
            "arm_means,slearner", "--seeds", "2", "--epochs", "1", "--batch-size", "512",
            "--threads", "1", "--out", str(out)]
    res = CliRunner().invoke(cli(), args)
    assert res.exit_code == 0, res.output
    text = flat(res)
    assert "# hmum bench: promo" in text and "| S-Learner |" in text
    assert "4 cell(s) run, 0 reused" in text
    md = (out / "results.md").read_text()
    for head in ("## Qini", "## AUUC", "## PEHE", "## Paired difference in qini",
                 "## Paired difference in pehe"):
        assert head in md
    assert "partial ground truth" not in md  # the 'all' columns are there
    got = json.loads((out / "results.json").read_text())
    assert got["settings"]["rows"] == {"train": 1920, "valid": 240, "test": 240}  # 8:1:1
    assert got["settings"]["source"]["data"]["rows"] == 2400
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired["metric"]) == {"qini", "auuc", "pehe", "ate_bias"}
    assert "slearner" in set(paired["reference"])  # the best baseline of some column
    again = CliRunner().invoke(cli(), args)
    assert again.exit_code == 0 and "0 cell(s) run, 4 reused" in flat(again)


def test_data_and_dataset_are_mutually_exclusive(tmp_path):
    data, sch = write(tmp_path, user_frame(n=300), user_schema())
    res = CliRunner().invoke(cli(), ["bench", "--data", str(data), "--schema", str(sch),
                                     "--dataset", "criteo", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "--data and --dataset are mutually exclusive" in flat(res)
    res = CliRunner().invoke(cli(), ["bench", "--data", str(data), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "needs --schema" in flat(res)


def test_bad_user_file_is_a_one_line_error(tmp_path):
    data, sch = write(tmp_path, user_frame(n=300).drop(columns=["spend"]), user_schema())
    res = CliRunner().invoke(cli(), ["bench", "--data", str(data), "--schema", str(sch),
                                     "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "missing column(s) ['spend']" in flat(res)


def test_changed_file_never_reuses_cells_same_rows_as_parquet_do(tmp_path):
    df = user_frame(n=900)
    data, sch = write(tmp_path, df, user_schema())
    out = tmp_path / "out"
    first = run_bench(UserData(data, sch), ["arm_means"], 2, out)
    assert first.fitted == 2
    assert run_bench(UserData(data, sch), ["arm_means"], 2, out).fitted == 0
    # the same rows as Parquet: the content, not the file, is the key
    pq, _ = write(tmp_path, df, user_schema(), name="promo.parquet")
    assert run_bench(UserData(pq, sch, name="promo"), ["arm_means"], 2, out).fitted == 0
    changed = df.copy()
    changed.loc[17, "spend"] += 1.0  # one response value; the user ids are unchanged
    write(tmp_path, changed, user_schema())
    res = run_bench(UserData(data, sch), ["arm_means"], 2, out)
    assert res.fitted == 2 and res.reused == 0
    assert len(list((out / "cells").glob("*.json"))) == 4


def test_separate_test_file_is_the_test_split(tmp_path):
    data, sch = write(tmp_path, user_frame(n=1000), user_schema())
    test, _ = write(tmp_path, user_frame(n=400, seed=1), user_schema(), name="later.csv")
    res = run_bench(UserData(data, sch, test_path=test), ["arm_means"], 1, tmp_path / "o")
    assert json.loads(res.files["json"].read_text())["settings"]["rows"] == {
        "train": 900, "valid": 100, "test": 400}


def test_paired_interval_covers_zero_for_twins_and_excludes_it_against_arm_means(tmp_path):
    data, sch = write(tmp_path, user_frame(n=3000, truth="full"), user_schema(truth=True),
                      name="promo.parquet")
    s = get_entry("slearner")
    twin = ModelEntry(name="slearner_twin", cls=s.cls, model=s.model, label="S twin",
                      trainer=s.trainer)
    res = run_bench(UserData(data, sch), ["hum", "slearner", twin, "arm_means"], 2,
                    tmp_path / "o", epochs=5, batch_size=256, threads=1, reference="arm_means")
    for metric in ("qini", "auuc", "pehe"):
        d = paired_differences(res.cells, res.summary, metric, reference="arm_means")
        for model in ("hum", "slearner"):
            mine = d[d["model"] == model]
            assert len(mine) == 2  # promo_a / spend, promo_b / spend
            # against arm means on strong effects: better, and the interval excludes 0
            assert ((mine["hi"] < 0) if metric == "pehe" else (mine["lo"] > 0)).all(), mine
        # two identical models on the same resampled rows: the interval covers 0
        t = paired_differences(res.cells, res.summary, metric, reference="slearner")
        tw = t[t["model"] == "slearner_twin"]
        assert len(tw) == 2 and ((tw["lo"] <= 0) & (tw["hi"] >= 0)).all(), tw
    md = res.markdown
    assert "## Paired difference in qini to Arm means (no personalization)" in md


def test_default_reference_is_the_best_baseline_by_the_metric(tmp_path):
    data, sch = write(tmp_path, user_frame(n=1500), user_schema())
    res = run_bench(UserData(data, sch), ["hum", "slearner", "arm_means"], 1, tmp_path / "o",
                    **TINY)
    d = paired_differences(res.cells, res.summary, "qini")
    q = res.summary[(res.summary["metric"] == "qini") & ~res.summary["ours"].astype(bool)]
    for (t, r), col in q.groupby(["treatment", "response"]):
        best = col.loc[col["mean"].idxmax(), "model"]
        assert set(d[(d["treatment"] == t) & (d["response"] == r)]["reference"]) == {best}
    assert "hum" in set(d["model"])


def test_unknown_reference_is_refused(tmp_path):
    data, sch = write(tmp_path, user_frame(n=300), user_schema())
    with pytest.raises(ValueError, match="reference: expected one of the models run"):
        run_bench(UserData(data, sch), ["arm_means"], 1, tmp_path / "o", reference="hum")


def test_partial_truth_is_accepted_and_the_all_metrics_are_skipped_with_a_note(tmp_path):
    data, sch = write(tmp_path, user_frame(n=1200, truth="per_arm"), user_schema(truth=True))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli(), ["bench", "--data", str(data), "--schema", str(sch),
                                     "--models", "arm_means", "--seeds", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Note: partial ground truth" in flat(res) and "mu__all__<response>" in flat(res)
    md = (out / "results.md").read_text()
    assert "## PEHE" in md and "Note: partial ground truth" in md
    assert json.loads((out / "results.json").read_text())["settings"]["partial_truth"] is True


def test_uplift_replicates_are_bootstrap_ci_samples_on_each_arm_pair():
    """The paired replicates are the fast bootstrap of ``bootstrap_ci`` on rows of arm 0 or
    k, with the same resamples for any score (they depend on the arms and the seed)."""
    from hmum.metrics import qini_auc_score
    from hmum.metrics.bootstrap import bootstrap_ci, uplift_replicates

    rng = np.random.default_rng(3)
    n = 400
    arm = rng.integers(0, 3, n)
    y = rng.normal(size=(n, 2))
    tau = rng.normal(size=(n, 2, 2))
    reps = uplift_replicates(y, tau, arm, kind="continuous", n_boot=30, seed=5)
    assert reps["qini"].shape == (30, 2, 2) and np.isfinite(reps["auuc"]).all()
    rows = (arm == 0) | (arm == 2)
    ci = bootstrap_ci(qini_auc_score, y[rows, 1], tau[rows, 1, 1], arm[rows] == 2, n_boot=30,
                      seed=5, kind="continuous")
    np.testing.assert_allclose(reps["qini"][:, 1, 1], ci.samples)
    same = uplift_replicates(y, tau, arm, kind="continuous", n_boot=30, seed=5)
    np.testing.assert_array_equal(same["qini"], reps["qini"])
