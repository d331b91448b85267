"""``hmum bench``: every model on every seed of a benchmark dataset, as the paper's tables.

Registered in ``hmum.cli.app``. The registry and the harness (torch, pandas) load
only when the command runs; ``hmum models`` lists the model names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hmum.cli.common import console
from hmum.cli.common import fail as _fail

#: the benchmark datasets (hmum.data.datasets.DATASETS), named here so --help stays fast
DATASET_NAMES = ("simulator", "criteo", "lazada", "hillstrom", "starbucks", "social_pressure",
                 "ihdp", "acic2016")


def rich_bench_progress(bar):
    """Two rich bars: cells done (model, seed, split) and the current fit's epochs
    (a ``hmum.workflows.bench.BenchCallbacks``)."""
    from hmum.workflows.bench import BenchCallbacks

    class RichBenchProgress(BenchCallbacks):
        def __init__(self, bar) -> None:
            self.bar = bar
            self.cells = None
            self.epochs = None

        def start(self, total_cells: int) -> None:
            self.cells = self.bar.add_task("cells", total=total_cells, what="")
            self.epochs = self.bar.add_task("epochs", total=1, what="", visible=False)

        def cell_start(self, model: str, seed: int, split: str, max_epochs: int | None) -> None:
            what = f"{model} · seed {seed} · {split}"
            self.bar.update(self.cells, what=what)
            self.bar.reset(self.epochs, total=max_epochs or 1,
                           what=f"{what} · epoch 0/{max_epochs}", visible=True)

        def epoch(self, record: dict) -> None:
            task = self.bar.tasks[self.epochs]
            e = int(record.get("epoch", task.completed + 1))
            loss = record.get("valid_loss")
            base = task.fields["what"].rsplit(" · epoch", 1)[0]
            what = f"{base} · epoch {e}/{int(task.total)}" + (
                f" · valid {loss:.4f}" if isinstance(loss, float) else "")
            self.bar.update(self.epochs, completed=min(e, task.total), what=what)

        def cell_end(self, cell: dict, reused: bool) -> None:
            self.bar.update(self.epochs, visible=False)
            self.bar.advance(self.cells)
            if cell["status"] == "failed" and not reused:
                self.bar.console.print(
                    f"[red]failed[/] {cell['model']} seed {cell['seed']} {cell['split']}: "
                    f"{cell['error']}", markup=True, highlight=False)

    return RichBenchProgress(bar)


def _parse_models(models: list[str] | None) -> list[str] | None:
    if not models:
        return None
    names = [m.strip() for item in models for m in item.split(",") if m.strip()]
    return names or None


def _parse_options(options: list[str] | None) -> dict:
    """KEY=VALUE pairs; a value is read as JSON when it parses (10, 0.5, true), else a string."""
    out = {}
    for o in options or []:
        key, sep, value = o.partition("=")
        if not sep or not key.strip():
            _fail(f"--option: expected KEY=VALUE (e.g. replications=10), got {o!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def bench(
    dataset: Annotated[str | None, typer.Option(
        "--dataset", "-d", metavar="NAME",
        help="benchmark dataset: " + ", ".join(DATASET_NAMES) + " (or --data)")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", metavar="FILE",
        help="your own experiment (Parquet or CSV) instead of --dataset; needs --schema. "
        "Without --test-data: a seeded 8:1:1 train/valid/test split stratified by arm")] = None,
    schema: Annotated[Path | None, typer.Option(
        "--schema", metavar="SCHEMA.json",
        help="with --data: the schema JSON naming the feature, arm, response (and "
        "ground-truth) columns")] = None,
    test_data: Annotated[Path | None, typer.Option(
        "--test-data", metavar="FILE",
        help="with --data: a separate test file (same schema); --data is then split 9:1 "
        "into train/valid")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", metavar="NAME",
        help="the model the paired differences are taken to (default: the best baseline "
        "per column, i.e. the best model outside the HUM family)")] = None,
    models: Annotated[list[str] | None, typer.Option(
        "--models", "-m", metavar="NAME,...",
        help="models, comma separated or repeated (default: every model that can run on "
        "the dataset); `hmum models` lists the names")] = None,
    seeds: Annotated[int, typer.Option(help="seeds 0..N-1 (each: split and model init)")] = 3,
    out: Annotated[Path | None, typer.Option(
        help="output folder (default runs/bench/<dataset>)")] = None,
    path: Annotated[Path | None, typer.Option(
        help="the dataset's file or folder in its publisher's format. Default: its folder "
        "under $HMUM_DATA (the folder of public datasets), else under ../shared/data "
        "relative to the current folder (a development checkout)")] = None,
    epochs: Annotated[int | None, typer.Option(
        help="max epochs of the neural models (default: the paper's)")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="batch size of the neural models (default: the paper's)")] = None,
    threads: Annotated[int | None, typer.Option(
        help="torch threads and LightGBM n_jobs (default: torch as is, LightGBM 1)")] = None,
    resume: Annotated[bool, typer.Option(
        help="reuse cells an earlier run with the same settings finished")] = True,
    retry_failed: Annotated[bool, typer.Option(
        help="with --resume: run failed cells again")] = False,
    options: Annotated[list[str] | None, typer.Option(
        "--option", "-o", metavar="KEY=VALUE",
        help="dataset option, repeatable (e.g. replications=10)")] = None,
) -> None:
    """Train and evaluate models on every seed; write Qini / AUUC (/ PEHE) tables.

    On a benchmark dataset (--dataset) or your own experiment (--data FILE --schema
    SCHEMA.json). Every table comes with paired differences to the best baseline
    (or --reference) with bootstrap intervals over the test rows.

    Writes results.md, results.csv and results.json under --out, and one JSON per
    finished (model, seed, split) cell under --out/cells: an interrupted run started
    again resumes without redoing finished cells (read back from results.json where
    cells/ is gone, as in a fresh clone). A model that fails is reported in
    the table and the run goes on.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hmum.models.registry import list_models
    from hmum.workflows import bench as bench_lib

    names = _parse_models(models)
    opts = _parse_options(options)
    if data is not None and dataset is not None:
        _fail("--data and --dataset are mutually exclusive: pass one of them")
    if data is None and dataset is None:
        _fail("pass --dataset NAME (a benchmark dataset) or --data FILE --schema SCHEMA.json "
              "(your own experiment)")
    if data is None and (schema is not None or test_data is not None):
        _fail("--schema and --test-data go with --data FILE, not with --dataset")
    if data is not None and schema is None:
        _fail("--data: needs --schema SCHEMA.json naming the columns' roles")
    if data is not None and path is not None:
        _fail("--path goes with --dataset; with --data the file is the path")
    for flag, v in (("--seeds", seeds), ("--epochs", epochs), ("--batch-size", batch_size),
                    ("--threads", threads)):
        if v is not None and v < 1:
            _fail(f"{flag}: expected an integer >= 1, got {v}")
    if names is not None:
        unknown = [m for m in names if m not in list_models()]
        if unknown:
            _fail(f"--models: unknown model name(s) {unknown}; known: {', '.join(list_models())}")
    if reference is not None and reference not in (names or list_models()):
        _fail(f"--reference: expected one of the models run, got {reference!r}; known: "
              + ", ".join(names or list_models()))
    try:
        if data is not None:
            from hmum.data.datasets import UserData

            fractions = opts.pop("fractions", None)
            if opts:
                _fail(f"--option: with --data only fractions=[...] is known, got {sorted(opts)}")
            source = UserData(data, schema, test_path=test_data, fractions=fractions)
            source.key()  # read and validate the file(s) before the progress bars
            target = source
        else:
            target = dataset
    except (ValueError, FileNotFoundError, TypeError) as e:
        _fail(f"{type(e).__name__}: {e}")
    out = out or Path("runs/bench") / (target if isinstance(target, str) else target.name)
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[what]}"), TimeElapsedColumn(), console=console,
    )
    try:
        with bar:
            res = bench_lib.run_bench(
                target, names, seeds, out, path=path, epochs=epochs, batch_size=batch_size,
                threads=threads, options=opts, resume=resume, retry_failed=retry_failed,
                callbacks=rich_bench_progress(bar), reference=reference,
            )
    except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        _fail(f"{type(e).__name__}: {msg}")
    console.print(res.markdown, markup=False, highlight=False, soft_wrap=True)
    na = sum(c["status"] == "n/a" for c in res.cells)
    console.print(
        f"{res.fitted} cell(s) run, {res.reused} reused, {na} n/a; wrote "
        + ", ".join(str(p) for p in res.files.values()), highlight=False)

