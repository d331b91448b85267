"""Start-up time of the ``hmum`` command: help, an error path and ``import hmum``.

Each case runs in a fresh interpreter several times; the table shows the median
wall time (and the fastest run). The same run times ``python -c pass`` (the
interpreter alone) and ``python -c 'import torch'`` (what a command that imports
torch pays at least), so figures from different machines or loads compare.

With ``--baseline REV`` the same cases also run against ``src/`` of a git revision
(extracted with ``git archive`` into a temporary folder; nothing in the checkout
changes), side by side with this checkout, interleaved run by run so that a change
in load hits both alike. Usage::

    python benchmarks/bench_cli_startup.py                       # this checkout
    python benchmarks/bench_cli_startup.py --baseline 5c48a94    # before / after
    python benchmarks/bench_cli_startup.py --runs 9 --json startup.json

The commands run as the ``hmum`` entry point does (``hmum.cli.app:app``) with
``COLUMNS=80``, in an empty temporary folder (so ``missing.parquet`` is missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: (label, hmum arguments or None for a plain python -c statement, python statement)
CASES: list[tuple[str, list[str] | None, str | None]] = [
    ("python -c pass (interpreter)", None, "pass"),
    ("python -c 'import torch' (reference)", None, "import torch"),
    ("python -c 'import hmum'", None, "import hmum"),
    ("hmum --help", ["--help"], None),
    ("hmum train --help", ["train", "--help"], None),
    ("hmum bench --help", ["bench", "--help"], None),
    ("hmum train --data missing.parquet --out x (error)",
     ["train", "--data", "missing.parquet", "--out", "x"], None),
]

#: what the ``hmum`` console script does
ENTRY = "import sys; sys.argv[0] = 'hmum'; from hmum.cli.app import app; sys.exit(app())"


def _extract(rev: str, dest: Path) -> Path:
    """``src/`` of git revision ``rev`` under ``dest``; returns the src folder."""
    blob = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def _command(case: tuple, python: str) -> list[str]:
    _, args, stmt = case
    return [python, "-c", stmt] if args is None else [python, "-c", ENTRY, *args]


def _time_once(cmd: list[str], src: Path, cwd: Path) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "80"}
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, p.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per case (median reported)")
    ap.add_argument("--baseline", help="git revision to compare against (e.g. a commit)")
    ap.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hmum-startup-") as tmp:
        tmp = Path(tmp)
        cwd = tmp / "cwd"
        cwd.mkdir()
        trees = {"now": REPO / "src"}
        if a.baseline:
            trees = {a.baseline: _extract(a.baseline, tmp / "baseline"), **trees}
        times: dict[tuple[str, str], list[float]] = {}
        codes: dict[tuple[str, str], int] = {}
        for case in CASES:
            cmd = _command(case, a.python)
            for _ in range(a.runs):
                for tree, src in trees.items():  # interleaved: the same load on both
                    if case[1] is None and tree != "now" and case[2] != "import hmum":
                        continue  # the references do not depend on the tree
                    s, rc = _time_once(cmd, src, cwd)
                    times.setdefault((case[0], tree), []).append(s)
                    codes[(case[0], tree)] = rc

    rows = []
    for label, _args, _stmt in CASES:
        row = {"case": label}
        for tree in trees:
            ts = times.get((label, tree))
            if ts:
                row[tree] = {"median_s": statistics.median(ts), "min_s": min(ts),
                             "runs": len(ts), "exit_code": codes[(label, tree)]}
        rows.append(row)

    names = list(trees)
    head = ["case"] + [f"{n}: median (min) s" for n in names] + (
        ["speed-up"] if len(names) == 2 else []) + ["exit"]
    lines = []
    for row in rows:
        cells = [row["case"]]
        for n in names:
            r = row.get(n)
            cells.append(f"{r['median_s']:.3f} ({r['min_s']:.3f})" if r else "")
        if len(names) == 2:
            old, new = row.get(names[0]), row.get(names[1])
            cells.append(f"{old['median_s'] / new['median_s']:.1f}x" if old and new else "")
        cells.append(",".join(sorted({str(row[n]["exit_code"]) for n in names if n in row})))
        lines.append(cells)
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    print(f"hmum start-up, median of {a.runs} runs ({a.python})")
    print(fmt.format(*head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in lines:
        print(fmt.format(*cells))
    if a.json:
        a.json.write_text(json.dumps({"runs": a.runs, "trees": names, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
