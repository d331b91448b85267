"""One Markdown table of the single-treatment benchmarks, from ``hmum bench`` results.

Reads ``benchmarks/results/<dataset>/results.json`` (written by
``benchmarks/bench_tables.sh``) and prints, per model, the mean ± std of the
chosen metric on each dataset, best per column in bold. Usage::

    python benchmarks/summarize_tables.py ihdp:pehe acic2016:pehe ihdp:qini starbucks:qini
    python benchmarks/summarize_tables.py simulator:pehe:t1/usage_time simulator:pehe:t2/video_views

A column is ``dataset:metric`` or, for datasets with several (treatment, response)
cells, ``dataset:metric:treatment/response``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
LOWER_IS_BETTER = {"pehe", "ate_error"}


def main(columns: list[str]) -> None:
    data, order, labels = {}, [], {}
    for col in columns:
        name, metric, *cell = col.split(":")
        res = json.loads((RESULTS / name / "results.json").read_text())
        cells = {f"{r['treatment']}/{r['response']}" for r in res["summary"] if r["treatment"]}
        if cell and cell[0] not in cells or not cell and len(cells) > 1:
            raise SystemExit(f"{col}: name one (treatment/response) cell of {sorted(cells)}")
        for m in res["models"]:
            if m["name"] not in labels:
                order.append(m["name"])
                labels[m["name"]] = m["label"]
        for row in res["summary"]:
            here = f"{row['treatment']}/{row['response']}"
            if row["metric"] == metric and row["status"] == "ok" and (not cell or cell[0] == here):
                data[(col, row["model"])] = (row["mean"], row["std"])
    best = {}
    for col in columns:
        vals = {m: data[(col, m)][0] for m in order if (col, m) in data}
        pick = min if col.split(":")[1] in LOWER_IS_BETTER else max
        best[col] = pick(vals, key=vals.get) if vals else None
    print("| model | " + " | ".join(c.replace(":", " ") for c in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for m in order:
        cells = []
        for col in columns:
            if (col, m) not in data:
                cells.append("–")
                continue
            mean, std = data[(col, m)]
            s = f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")
            cells.append(f"**{s}**" if best[col] == m else s)
        print(f"| {labels[m]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
