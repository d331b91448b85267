"""``hmum bench --data`` on plain public files vs ``hmum bench --dataset`` on the same data.

For each case the plain file of ``../shared/data`` (or ``$HMUM_DATA``) is read through
a schema written here (not the named loader), benchmarked with
``hmum bench --data FILE --schema SCHEMA.json``, and the same models and seeds are
run with ``hmum bench --dataset NAME``; the two ``results.csv`` are compared metric
by metric.

* criteo: the 10k-row sample CSV as published (header f0..f11, treatment, visit, ...).
  Same rows, same schema, same 8:1:1 split stratified by arm with the same seed: the
  tables should match exactly.
* ihdp: replication 1. The published CSV has no header, so (as a user would) it is
  given one in a temporary folder, outside the repository: mu0 / mu1 become the
  schema's ground-truth columns ``mu__control__y`` / ``mu__treated__y``. It is split
  63/27/10 as the named loader does (``-o fractions=[0.63,0.27,0.1]``), but the named
  loader seeds each replication's split with ``replication_seed(seed, r)`` while
  ``--data`` seeds it with the seed itself, so the test rows differ and the tables
  are expected to differ (by the split alone).

Usage: ``python benchmarks/bench_user_data.py [--seeds 2] [--epochs 5] [--models ...]``.
Writes ``benchmarks/results/user_data/<case>/{data,dataset}/`` (the two bench runs)
and ``benchmarks/results/user_data/comparison.md``. Skips (exit 0) without the data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "user_data"


def data_home() -> Path | None:
    env = os.environ.get("HMUM_DATA")
    p = Path(env).expanduser() if env else Path("..") / "shared" / "data"
    return p.resolve() if p.is_dir() else None


def hmum_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "hmum"
    return [str(exe)] if exe.exists() else [shutil.which("hmum") or "hmum"]


def criteo_case(home: Path, tmp: Path) -> dict | None:
    f = home / "criteo_uplift_sample10k" / "criteo-uplift-sample-v2.1.csv.gz"
    if not f.is_file():
        return None
    schema = {"features": [{"name": f"f{i}", "kind": "numeric"} for i in range(12)],
              "arm_column": "treatment", "arms": ["control", "treated"],
              "responses": [{"name": "visit", "kind": "binary"}]}
    from hmum.data.datasets import load_criteo

    why = ("Same rows, schema, 8:1:1 split and seeds: the metric tables are identical. The "
           "paired intervals are bootstrap replicates seeded by the split's name and size "
           "(the file stem 'criteo-uplift-sample-v2.1' here, 'criteo' there), so their "
           "resamples differ and the paired differences move within their bootstrap noise.")
    return {"name": "criteo", "why": why, "data": f, "schema": schema, "options": [],
            "dataset": "criteo", "dataset_options": [], "named": lambda: load_criteo(f)}


def ihdp_case(home: Path, tmp: Path) -> dict | None:
    from hmum.data.datasets import load_ihdp

    f = home / "ihdp_npci" / "ihdp_npci_1.csv.gz"
    if not f.is_file():
        return None
    cov = [f"x{i}" for i in range(1, 26)]
    cols = ["treatment", "y_factual", "y_cfactual", "mu0", "mu1", *cov]
    df = pd.read_csv(f, header=None, names=cols)
    df = df.rename(columns={"y_factual": "y", "mu0": "mu__control__y",
                            "mu1": "mu__treated__y"}).drop(columns=["y_cfactual"])
    plain = tmp / "ihdp_1_with_header.csv"  # a temporary copy with a header, never in the repo
    df.to_csv(plain, index=False)
    schema = {"features": [{"name": c, "kind": "numeric" if i < 6 else "categorical"}
                           for i, c in enumerate(cov)],
              "arm_column": "treatment", "arms": ["control", "treated"],
              "responses": [{"name": "y", "kind": "continuous", "nonnegative": False}],
              "ground_truth": True}
    why = ("Same arrays and the same 63/27/10 fractions, but the named loader seeds "
           "replication r's split with replication_seed(seed, r) and --data with the seed "
           "itself: other test rows (75 of 747), so the tables differ by the split alone. "
           "The default --data split would be 8:1:1.")
    return {"name": "ihdp", "why": why, "data": plain, "schema": schema,
            "options": ["-o", "fractions=[0.63,0.27,0.1]"],
            "dataset": "ihdp", "dataset_options": ["-o", "replications=[1]"],
            "named": lambda: load_ihdp(f)[0]}


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def same_data(case: dict, schema_file: Path) -> str:
    """Do the plain file through the schema and the named loader give the same arrays?"""
    from hmum.data.datasets import UserData

    mine, named = UserData(case["data"], schema_file).load()[0], case["named"]()
    checks = {"rows": len(mine) == len(named),
              "features": mine.features.to_pandas().equals(named.features.to_pandas()),
              "arm": np.array_equal(mine.arm, named.arm), "y": np.array_equal(mine.y, named.y),
              "truth": (mine.mu is None and named.mu is None)
              or (mine.mu is not None and named.mu is not None
                  and np.array_equal(mine.mu, named.mu))}
    return ", ".join(f"{k} {'equal' if v else 'DIFFERENT'}" for k, v in checks.items())


def compare(a: Path, b: Path) -> pd.DataFrame:
    """Per metric: rows compared, max |mean difference|, identical (to 1e-9)."""
    ca, cb = pd.read_csv(a / "results.csv"), pd.read_csv(b / "results.csv")
    keys = ["model", "treatment", "response", "metric"]
    skip = {"fit_seconds", ""}
    ca, cb = (c[~c["metric"].fillna("").isin(skip)].fillna({"treatment": "", "response": ""})
              for c in (ca, cb))
    # the response of the plain IHDP file is named "y" as in the named loader
    m = ca.merge(cb, on=keys, suffixes=("_data", "_dataset"), how="outer", indicator=True)
    rows = []
    for metric, g in m.groupby("metric", sort=False):
        both = g[g["_merge"] == "both"]
        d = (both["mean_data"] - both["mean_dataset"]).abs()
        rows.append({"metric": metric, "rows": len(both), "only_one_side": int(
            (g["_merge"] != "both").sum()), "max_abs_diff": float(d.max()) if len(d) else np.nan,
            "identical": bool(len(d)) and bool((d <= 1e-9).all())})
    return pd.DataFrame(rows)


def md_table(df: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)


def compare_paired(a: Path, b: Path) -> str:
    """The paired-difference tables (paired.csv) of the two runs, in one line."""
    pa_, pb = pd.read_csv(a / "paired.csv"), pd.read_csv(b / "paired.csv")
    keys = ["model", "reference", "treatment", "response", "metric"]
    m = pa_.merge(pb, on=keys, suffixes=("_data", "_dataset"))
    if m.empty:
        return "paired differences: none on both sides"
    d = (m["diff_data"] - m["diff_dataset"]).abs().max()
    w = ((m["hi_data"] - m["lo_data"]) - (m["hi_dataset"] - m["lo_dataset"])).abs().max()
    sig = ((m["lo_data"] > 0) | (m["hi_data"] < 0)) == ((m["lo_dataset"] > 0)
                                                         | (m["hi_dataset"] < 0))
    return (f"paired differences ({len(m)} rows, same references): max |diff| difference "
            f"{d:.3g}, max interval-width difference {w:.3g}, the same verdict (interval "
            f"excludes 0 or not) in {int(sig.sum())}/{len(m)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--models", default="slearner,arm_means,hum")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", default="criteo,ihdp")
    args = ap.parse_args()
    home = data_home()
    if home is None:
        print("skipped: no data folder ($HMUM_DATA or ../shared/data)")
        return
    common = ["--models", args.models, "--seeds", str(args.seeds), "--epochs",
              str(args.epochs), "--threads", str(args.threads)]
    report = ["# `hmum bench --data` (plain file + schema) vs `hmum bench --dataset`", "",
              f"Models {args.models}; seeds {args.seeds}; --epochs {args.epochs}; threads "
              f"{args.threads}. Data: {home}. Generated by benchmarks/bench_user_data.py.", ""]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for make in (criteo_case, ihdp_case):
            case = make(home, tmp)
            if case is None or case["name"] not in args.cases.split(","):
                continue
            out = OUT / case["name"]
            schema_file = out / "schema.json"
            out.mkdir(parents=True, exist_ok=True)
            schema_file.write_text(json.dumps(case["schema"], indent=2) + "\n")
            s_data = run([*hmum_cmd(), "bench", "--data", str(case["data"]), "--schema",
                          str(schema_file), *case["options"], *common, "--out",
                          str(out / "data")])
            s_named = run([*hmum_cmd(), "bench", "--dataset", case["dataset"],
                           *case["dataset_options"], *common, "--out", str(out / "dataset")])
            table = compare(out / "data", out / "dataset")
            same = same_data(case, schema_file)
            paired = compare_paired(out / "data", out / "dataset")
            report += [f"## {case['name']}", "",
                       f"`--data` {case['data'].name} ({s_data:.0f} s) vs `--dataset "
                       f"{case['dataset']}` ({s_named:.0f} s). Loaded arrays, plain file "
                       f"through the schema vs the named loader: {same}.", "",
                       md_table(table), "", paired + ".", "", case["why"], ""]
            print(case["name"])
            print(table.to_string(index=False))
    (OUT / "comparison.md").write_text("\n".join(report) + "\n")
    print(f"wrote {OUT / 'comparison.md'}")


if __name__ == "__main__":
    main()
