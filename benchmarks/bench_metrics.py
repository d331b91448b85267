"""hmum vs scikit-uplift 0.5.1: normalized Qini and AUUC at Criteo scale (14 M rows).

    python benchmarks/bench_metrics.py [--rows 14000000] [--repeats 3] [--tracemalloc]

Method
------
* The data are generated once (seeded) and saved as .npy files: 85 % treated rows
  (as in Criteo), a binary label (about 5 % responders) and a continuous one (a
  heavy-tailed "time spent"), both with a heterogeneous effect, and a float64 score
  (a noisy true uplift: 14 M distinct values, the hardest case for ties).
* Every measurement runs in a fresh Python process that loads the arrays, resets
  the kernel's record of its peak resident memory (``/proc/self/clear_refs``),
  calls the score once and records the wall time (``perf_counter``) and the peak
  (``VmHWM`` in ``/proc/self/status``). "Peak memory" is that peak minus what the
  process held just before the call (interpreter, libraries, inputs). (``ru_maxrss``
  would not do: a child inherits its parent's peak across fork and exec.)
  With ``--tracemalloc`` one more run per cell reports the peak of the memory
  allocated through Python and numpy during the call (tracemalloc).
* hmum and scikit-uplift runs alternate, so both meet the same machine load;
  times are the median of ``--repeats`` runs, memory the largest peak seen. Wall
  time depends on what else runs on the machine, so the CPU time of the call (user
  + system, all threads) is reported too: the work done, which load hardly changes.
* Continuous labels: scikit-uplift refuses them (it checks for 0/1 labels). Its
  reference is what the HMUM paper describes doing: scikit-uplift's own curve
  functions on the min-max normalized labels, the binary check switched off, and
  the perfect curve from the ranking ``y' (2 t - 1)``. That is the definition hmum
  implements, so the values are compared too.
* Results must agree: within 1e-9 (binary, against scikit-uplift itself) and
  1e-9 relative (continuous, against the scikit-uplift-based reference).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METRICS = ("qini_auc_score", "uplift_auc_score")
LABELS = ("binary", "continuous")


def make_data(rows: int, folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = (rng.random(rows) < 0.85).astype(np.int64)
    x = rng.standard_normal(rows)
    effect = 0.01 * (1 + np.tanh(x))  # heterogeneous, always >= 0
    y_bin = (rng.random(rows) < 0.04 + effect * t).astype(np.int64)
    y_cont = rng.lognormal(2.0, 1.0, rows) * (1 + 5 * effect * t)
    score = effect + 0.01 * rng.standard_normal(rows)
    for name, a in [("t", t), ("binary", y_bin), ("continuous", y_cont), ("score", score)]:
        np.save(folder / f"{name}.npy", a)


def sklift_continuous(metric: str):
    """scikit-uplift's curves on normalized labels, perfect curve from y'(2t - 1)."""
    import warnings

    import sklift.metrics.metrics as sm
    from sklearn.metrics import auc

    warnings.filterwarnings("ignore")
    sm.check_is_binary = lambda array: None  # the check rejects non-0/1 labels
    curve = sm.qini_curve if metric == "qini_auc_score" else sm.uplift_curve

    def score(y, uplift, treatment):
        yn = (y - y.min()) / (y.max() - y.min())
        x_model, v_model = curve(yn, uplift, treatment)
        x_best, v_best = curve(yn, yn * (2 * treatment - 1), treatment)
        random = auc([0, x_best[-1]], [0, v_best[-1]])
        return (auc(x_model, v_model) - random) / (auc(x_best, v_best) - random)

    return score


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(lib: str, metric: str, labels: str, folder: str, trace: bool) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    import gc
    import warnings

    warnings.filterwarnings("ignore")  # sklearn's stable_cumsum deprecation
    folder = Path(folder)
    t = np.load(folder / "t.npy")
    y = np.load(folder / f"{labels}.npy")
    score = np.load(folder / "score.npy")
    if lib == "hmum":
        import hmum.metrics as hm

        f = getattr(hm, metric)
    elif labels == "binary":
        import sklift.metrics as sk

        f = getattr(sk, metric)
    else:
        f = sklift_continuous(metric)
    gc.collect()
    if trace:
        import tracemalloc

        tracemalloc.start()
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kb("VmRSS")
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    value = f(y, score, t)
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    peak_kb = _status_kb("VmHWM") - before
    cpu_s = (cpu_after.ru_utime - cpu.ru_utime) + (cpu_after.ru_stime - cpu.ru_stime)
    out = {"seconds": seconds, "cpu_s": cpu_s, "rss_mb": peak_kb / 1024, "value": float(value)}
    if trace:
        out["traced_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps(out))


def run_child(lib, metric, labels, folder, trace=False) -> dict:
    cmd = [sys.executable, __file__, "--child", lib, metric, labels, str(folder)]
    if trace:
        cmd.append("--trace")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rows", type=int, default=14_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tracemalloc", action="store_true", help="also trace allocations")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, trace=args.trace)
        return

    import sklearn
    import sklift

    print(
        f"{args.rows:,} rows, {args.repeats} repeats; Python {platform.python_version()}, "
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, scikit-uplift "
        f"{sklift.__version__}; {os.cpu_count()} CPUs, HMUM_NUM_THREADS="
        f"{os.environ.get('HMUM_NUM_THREADS', 'unset')}; load average at start "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="hmum_bench_metrics_") as tmp:
        folder = Path(tmp)
        make_data(args.rows, folder)
        for rep in range(args.repeats):
            for labels in LABELS:
                for metric in METRICS:
                    for lib in ("hmum", "sklift"):
                        r = run_child(lib, metric, labels, folder)
                        results.setdefault((metric, labels, lib), []).append(r)
                        print(
                            f"  run {rep + 1}: {lib:6s} {metric:16s} {labels:10s} "
                            f"{r['seconds']:6.2f} s (CPU {r['cpu_s']:6.2f} s) "
                            f"{r['rss_mb']:7.0f} MB",
                            flush=True,
                        )
        traced = {}
        if args.tracemalloc:
            for labels in LABELS:
                for metric in METRICS:
                    for lib in ("hmum", "sklift"):
                        traced[(metric, labels, lib)] = run_child(
                            lib, metric, labels, folder, trace=True
                        )["traced_mb"]
    print(f"load average at end {os.getloadavg()[0]:.1f}\n")
    header = (
        "| score | labels | hmum s | scikit-uplift s | speed-up | CPU s hmum / sklift "
        "(ratio) | hmum peak MB | scikit-uplift peak MB | agree |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for labels in LABELS:
        for metric in METRICS:
            ours = results[(metric, labels, "hmum")]
            theirs = results[(metric, labels, "sklift")]
            t_ours = statistics.median(r["seconds"] for r in ours)
            t_theirs = statistics.median(r["seconds"] for r in theirs)
            c_ours = statistics.median(r["cpu_s"] for r in ours)
            c_theirs = statistics.median(r["cpu_s"] for r in theirs)
            m_ours = max(r["rss_mb"] for r in ours)
            m_theirs = max(r["rss_mb"] for r in theirs)
            v_ours, v_theirs = ours[0]["value"], theirs[0]["value"]
            diff = abs(v_ours - v_theirs)
            tol = 1e-9 if labels == "binary" else max(1e-9 * abs(v_theirs), 1e-12)
            ok = diff <= tol and all(r["value"] == v_ours for r in ours)
            rows.append(
                {
                    "score": metric,
                    "labels": labels,
                    "hmum_s": t_ours,
                    "sklift_s": t_theirs,
                    "speedup": t_theirs / t_ours,
                    "hmum_cpu_s": c_ours,
                    "sklift_cpu_s": c_theirs,
                    "cpu_speedup": c_theirs / c_ours,
                    "hmum_peak_mb": m_ours,
                    "sklift_peak_mb": m_theirs,
                    "hmum_value": v_ours,
                    "sklift_value": v_theirs,
                    "abs_diff": diff,
                }
            )
            if traced:
                rows[-1]["hmum_traced_mb"] = traced[(metric, labels, "hmum")]
                rows[-1]["sklift_traced_mb"] = traced[(metric, labels, "sklift")]
            print(
                f"| {metric} | {labels} | {t_ours:.2f} | {t_theirs:.2f} | "
                f"{t_theirs / t_ours:.1f}x | {c_ours:.2f} / {c_theirs:.2f} "
                f"({c_theirs / c_ours:.1f}x) | {m_ours:.0f} | {m_theirs:.0f} | "
                f"{'yes' if ok else 'NO'} ({diff:.1e}) |"
            )
    if traced:
        print(
            "\ntracemalloc peak during the call (MB): "
            + ", ".join(
                f"{r['score']}/{r['labels']}: hmum {r['hmum_traced_mb']:.0f}, "
                f"scikit-uplift {r['sklift_traced_mb']:.0f}"
                for r in rows
            )
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
