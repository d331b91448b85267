"""Parallel branches for one treatment: HUM's default 1 against the paper's 3.

With K = 1 the paper (§5.2.2) runs 3 parallel branches, each with its own selector,
experts and towers, and averages them; every row goes through all of them, which
made a HUM fit cost 4-5x an S-Learner fit on single-treatment data
(``bench_hum_speed.py --fit-dataset starbucks``). HUM's default is one branch per
treatment since this measured no worse (defaults_version 4). This runs the
single-treatment tables of ``bench_tables.sh`` (same settings) for HUM with 3
branches beside the default, reusing the committed cells of every other model, so
the two differ only in the branch count.

Usage: python benchmarks/bench_hum_branches.py [--datasets ihdp acic2016 starbucks criteo]
Results: runs/hum_branches/<dataset>/results.md (commit the tables you quote).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from hmum.models.hum import HUMEstimator
from hmum.models.registry import ModelEntry, get_entry
from hmum.workflows.bench import run_bench

# bench_tables.sh's settings per single-treatment dataset
SETTINGS = {
    "ihdp": dict(seeds=1, options={"replications": 10}, epochs=30, batch_size=64),
    "acic2016": dict(seeds=1, options={"replications": 5}, epochs=20, batch_size=256),
    "starbucks": dict(seeds=3, options={}, epochs=10, batch_size=None),
    "criteo": dict(seeds=3, options={}, epochs=20, batch_size=512),
}
THREE_BRANCHES = ModelEntry("hum_b3", HUMEstimator, {"branches_per_treatment": 3},
                            "HUM, 3 branches per treatment", True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/hum_branches"))
    args = ap.parse_args()
    specs = [get_entry("hum"), get_entry("hum_paper"), get_entry("slearner"), THREE_BRANCHES]
    for ds in args.datasets:
        out = args.out / ds
        committed = Path("benchmarks/results") / ds / "results.json"
        if committed.exists() and not (out / "results.json").exists():
            out.mkdir(parents=True, exist_ok=True)  # the committed cells are reused
            shutil.copy(committed, out / "results.json")
        s = SETTINGS[ds]
        t0 = time.perf_counter()
        res = run_bench(ds, specs, s["seeds"], out, epochs=s["epochs"],
                        batch_size=s["batch_size"], threads=args.threads, options=s["options"])
        print(res.markdown)
        print(f"{ds}: {res.fitted} cells fitted, {res.reused} reused, "
              f"{time.perf_counter() - t0:.0f} s; tables in {res.files['markdown']}")


if __name__ == "__main__":
    main()
