"""``hmum explain``: which features drive each model's predicted uplift.

A thin command (parse, call ``hmum.workflows.explain``, print); ``hmum.cli.app``
registers it. Heavy imports happen inside the command.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from hmum.cli.common import check_out_folder, console
from hmum.cli.common import fail as _fail


def explain(
    model: Annotated[Path, typer.Option(help="model artifact folder (any registered model)")],
    data: Annotated[Path, typer.Option(help="rows to explain (Parquet/CSV): the model's "
                                            "feature columns (arm and responses not needed)")],
    out: Annotated[Path, typer.Option(help="output folder (importance.csv / .md, bar charts)")],
    schema: Annotated[Path | None, typer.Option(
        help="schema JSON to read --data with (default: the model's)")] = None,
    repeats: Annotated[int, typer.Option(help="permutations per feature (the spread is their "
                                              "std)")] = 5,
    rows: Annotated[int, typer.Option(help="explain a seeded sample of at most this many "
                                           "rows")] = 20000,
    seed: Annotated[int, typer.Option(help="seed of the sample and the permutations")] = 0,
) -> None:
    """Permutation importance of each feature on the predicted uplift, per (treatment,
    response): the mean |change of tau_hat| when the feature is permuted, with its spread
    over repeats. Works for every model (only predict_uplift is used)."""
    if repeats < 1:
        _fail(f"--repeats: expected an integer >= 1, got {repeats}")
    if rows < 2:
        _fail(f"--rows: expected an integer >= 2, got {rows}")
    check_out_folder(out, "--out")
    from hmum.data.schema import Schema
    from hmum.data.validate import load_experiment
    from hmum.models.registry import load_estimator
    from hmum.workflows.explain import explain as run_explain

    est = load_estimator(model)
    s = Schema.from_json(schema) if schema is not None else est.schema
    d = load_experiment(data, s, require_arm=False, require_responses=False,
                        require_all_arms=False)
    t0 = time.perf_counter()
    res = run_explain(est, d, out, repeats=repeats, rows=rows, seed=seed)
    console.print(res["markdown"], markup=False, highlight=False)
    console.print(f"wrote {res['csv']}, {res['md']} and {len(res['images'])} chart(s) in {out} "
                  f"({res['rows']:,} rows, {time.perf_counter() - t0:.1f}s)")
