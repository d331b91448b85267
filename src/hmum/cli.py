"""The ``hmum`` command line (Typer + rich). The only module that imports everything."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hmum import cli_bench
from hmum.cli_common import console
from hmum.cli_common import fail as _fail
from hmum.cli_ddm import decide, policy_eval, strategy_rich_table, train_value_weights
from hmum.cli_service import serve
from hmum.cli_serving import score, store_app

app = typer.Typer(
    help="hmum: heterogeneous multi-treatment, multi-response uplift modeling (HMUM).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)



# --------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------


def print_simulation_summary(summary: dict) -> None:
    """Rich tables: rows per arm, true relative effects of each strategy and the oracle."""
    arms, responses = summary["arms"], summary["responses"]
    t = Table(title="Simulated experiment: rows and observed means per arm")
    t.add_column("arm")
    t.add_column("rows", justify="right")
    for r in responses:
        t.add_column(f"mean {r}", justify="right")
    for a in arms:
        t.add_row(a, f"{summary['rows_per_arm'][a]:,}",
                  *[f"{summary['mean_response'][a][r]:.3f}" for r in responses])
    console.print(t)
    t = Table(title="Ground truth: relative change vs control when applied to everyone")
    t.add_column("strategy")
    for r in responses:
        t.add_column(r, justify="right")
    for name, eff in summary["true_relative_effect"].items():
        t.add_row(f"everyone {name}", *[f"{100 * eff[r]:+.3f}%" for r in responses])
    oracle = summary["oracle_policy"]
    t.add_row("[bold]oracle personalized[/]",
              *[f"[bold]{100 * oracle['relative_effect'][r]:+.3f}%[/]" for r in responses])
    console.print(t)


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/sim"),
    users: Annotated[int, typer.Option(help="number of users")] = 200_000,
    treatments: Annotated[int, typer.Option(help="K treatments (1-4)")] = 2,
    responses: Annotated[int, typer.Option(help="R responses")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    effect_scale: Annotated[float, typer.Option(help="multiplies every true effect")] = 1.0,
    confounded: Annotated[bool, typer.Option(help="assignment depends on features")] = False,
    requests: Annotated[int, typer.Option(help="request-level log rows")] = 20_000,
    candidates: Annotated[int, typer.Option(help="L candidates per request")] = 100,
) -> None:
    """Simulate a short-video A/B experiment with ground truth and request logs."""
    from pydantic import ValidationError
    from rich.progress import Progress

    from hmum.data.simulator import SimulatorConfig
    from hmum.data.simulator import simulate as run_simulation

    try:
        cfg = SimulatorConfig(
            n_users=users, n_treatments=treatments, n_responses=responses, seed=seed,
            effect_scale=effect_scale, confounded=confounded, n_requests=requests,
            n_candidates=candidates,
        )
    except ValidationError as e:
        _fail(str(e))
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"simulating {stage}", total=total)
            bar.update(tasks[stage], completed=done)

        res = run_simulation(cfg, out, progress=progress)
    console.print(f"wrote {res.users_path}, {res.requests_path}, {res.schema_path} "
                  f"in {time.perf_counter() - t0:.1f}s")
    print_simulation_summary(res.summary)


# --------------------------------------------------------------------------------------
# train / evaluate
# --------------------------------------------------------------------------------------


def _load(data: Path, schema: Path | None):
    from hmum.data.io import DataError
    from hmum.data.schema import Schema
    from hmum.data.validate import load_experiment

    schema_path = schema or data.parent / "schema.json"
    if not schema_path.is_file():
        _fail(f"schema not found at {schema_path}; pass --schema")
    try:
        s = Schema.from_json(schema_path)
        return s, load_experiment(data, s)
    except (DataError, FileNotFoundError, ValueError) as e:
        _fail(str(e))


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="training data (Parquet/CSV)")],
    out: Annotated[Path, typer.Option(help="model artifact folder")],
    schema: Annotated[Path | None, typer.Option(help="schema JSON (default: beside data)")] = None,
    valid_data: Annotated[Path | None, typer.Option(help="validation data")] = None,
    split: Annotated[bool, typer.Option(help="hold out an 8:1:1 test split (seeded)")] = True,
    kl_weight: Annotated[float, typer.Option(help="KL coefficient; 0 = HUM w/o KL")] = 1.0,
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = 30,
    batch_size: Annotated[int, typer.Option()] = 4096,
    lr: Annotated[float, typer.Option()] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="resumable checkpoints")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint")] = False,
    nproc: Annotated[int | None, typer.Option(
        help="data-parallel training (DDP) with N local worker processes, each reading only "
        "its Parquet row groups; the split is then a seeded hash of the row index "
        "(hmum.training.distributed). Leave unset under torchrun", min=1)] = None,
    device: Annotated[str, typer.Option(
        help="cpu or cuda; distributed: gloo on cpu, NCCL on cuda (one GPU per worker)")] = "cpu",
) -> None:
    """Train HUM on experiment data and write a model artifact.

    Several processes or machines: ``--nproc N``, or ``torchrun [--nnodes ..]
    --nproc-per-node N -m hmum.cli train ...`` (same options, without --nproc).
    """
    import os

    from hmum.training import distributed as hd

    trainer = {"max_epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
               "num_threads": threads, "device": device}
    if nproc is not None or hd.launched_by_torchrun():
        from hmum.data.io import DataError
        from hmum.data.schema import Schema
        from hmum.pipeline import SPLIT

        schema_path = schema or data.parent / "schema.json"
        if not schema_path.is_file():
            _fail(f"schema not found at {schema_path}; pass --schema")
        try:
            job = hd.DistributedJob(
                data=data, data_schema=Schema.from_json(schema_path).model_dump(), out=out,
                valid_data=valid_data, fractions=SPLIT if split else (0.9, 0.1),
                model={"kl_weight": kl_weight},
                trainer={k: v for k, v in trainer.items() if v is not None and k != "device"},
                device=device, checkpoint_dir=checkpoint_dir, resume=resume, progress=True,
            )
            est = hd.run(job, nproc)
        except (DataError, FileNotFoundError, ValueError, hd.DistributedError) as e:
            _fail(str(e))
        if os.environ.get("RANK", "0") == "0":
            h = est.history_
            console.print(f"saved {out} (best epoch {h.best_epoch}, valid loss "
                          f"{h.best_valid_loss:.4f}; data-parallel, "
                          f"{os.environ.get('WORLD_SIZE', nproc)} workers)")
        return

    from hmum.pipeline import train_hum

    s, d = _load(data, schema)
    valid = _load(valid_data, schema or data.parent / "schema.json")[1] if valid_data else None
    est, split_info = train_hum(
        d, valid, kl_weight=kl_weight, trainer=trainer, split=split,
        checkpoint_dir=checkpoint_dir, resume=resume, progress=True,
    )
    est.save(out)
    h = est.history_
    console.print(f"saved {out} (best epoch {h.best_epoch}, valid loss {h.best_valid_loss:.4f}; "
                  f"{split_info})")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="model artifact folder")],
    data: Annotated[Path, typer.Option(help="evaluation data (Parquet/CSV)")],
    schema: Annotated[Path | None, typer.Option(help="schema JSON (default: the model's)")] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("runs/eval"),
    test_split: Annotated[bool, typer.Option(
        help="evaluate on the test rows that train held out of --data (the split recorded "
        "in the model; else the seeded stratified 8:1:1 test part)"
    )] = False,
    seed: Annotated[int, typer.Option(help="seed of that split when the model has none")] = 0,
) -> None:
    """K x R table of normalized Qini/AUUC (+ ground-truth errors), curves and a report."""
    from hmum.data.io import DataError
    from hmum.data.schema import Schema
    from hmum.data.validate import load_experiment
    from hmum.pipeline import evaluate_models, held_out_indices
    from hmum.training.artifacts import ArtifactError
    from hmum.training.estimator import load_estimator

    try:
        est = load_estimator(model)
        s = Schema.from_json(schema) if schema is not None else est.schema
        d = load_experiment(data, s)
    except (ArtifactError, DataError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    if test_split:
        d = d.take(held_out_indices(est, d.arm, seed))
    res = evaluate_models({model.name: est}, d, out)
    print_evaluation(res)
    console.print(f"report: {res['report']}")


def _print_frame(title: str, df) -> None:
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right")
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)


def print_evaluation(res: dict) -> None:
    for name, tab in res["tables"].items():
        _print_frame(f"{name}: normalized Qini / AUUC per (treatment, response)",
                     tab[["treatment", "response", "qini", "auuc", "n_control", "n_treated"]])
        truth = res["truth"].get(name)
        if truth is not None:
            _print_frame(f"{name}: errors against the ground truth", truth)


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/demo"),
    users: Annotated[int, typer.Option(help="simulated users")] = 200_000,
    epochs: Annotated[int, typer.Option(help="maximum epochs per model")] = 12,
    effect_scale: Annotated[float, typer.Option(help="true effect multiplier")] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    ddm: Annotated[bool, typer.Option(help="also run the decision half (DDM)")] = True,
    serve: Annotated[bool, typer.Option(
        help="with --ddm: score into SQLite, start the service, send requests")] = True,
) -> None:
    """The main job: simulate -> train HUM (+ w/o KL) -> evaluate -> DDM decisions -> report."""
    from hmum.pipeline import run_demo

    t0 = time.perf_counter()
    res = run_demo(out, users=users, epochs=epochs, effect_scale=effect_scale, seed=seed,
                   threads=threads, ddm=ddm, serve=serve and ddm, console=console)
    print_simulation_summary(res["simulation"])
    print_evaluation(res)
    if "ddm" in res:
        console.print(strategy_rich_table(res["ddm"]["strategy_table"],
                                          list(res["simulation"]["responses"])))
    console.print(f"[bold green]demo finished[/] in {time.perf_counter() - t0:.0f}s; "
                  f"report: {res['report']}")


app.command("train-value-weights")(train_value_weights)
app.command("decide")(decide)
app.command("policy-eval")(policy_eval)
app.command()(score)
app.add_typer(store_app, name="store")
app.command()(serve)
cli_bench.register(app)


@app.command()
def version() -> None:
    """Print the hmum version."""
    import hmum

    console.print(json.dumps({"hmum": hmum.__version__}))


if __name__ == "__main__":
    app()
