"""``hmum simulate``, ``train``, ``evaluate`` and ``demo``: an experiment from data to report."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hmum.cli.common import TRAINER_FLAGS, check_out_artifact, check_out_folder, console, validated
from hmum.cli.common import fail as _fail
from hmum.cli.ddm import strategy_rich_table
from hmum.exceptions import cli_flags

SIMULATOR_FLAGS = {"n_users": "--users", "n_treatments": "--treatments",
                   "n_responses": "--responses", "seed": "--seed",
                   "effect_scale": "--effect-scale", "confounded": "--confounded",
                   "n_requests": "--requests", "n_candidates": "--candidates",
                   "contested_share": "--contested-share", "weight_taste": "--weight-taste"}
#: Python parameters whose messages name these flags instead (hmum.exceptions.option_name)
DATA_FLAGS = {"drop_invalid_responses": "--drop-invalid-responses",
              "test_split": "--test-split"}


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


def _world_options(contested: bool, share: float | None, taste: float | None) -> dict:
    """SimulatorConfig options of the simulated world (defaults: today's world)."""
    from hmum.data.simulator import CONTESTED_WORLD

    out = dict(CONTESTED_WORLD) if contested else {}
    if share is not None:
        out["contested_share"] = share
    if taste is not None:
        out["weight_taste"] = taste
    return out


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
    contested_world: Annotated[bool, typer.Option(
        help="the contested world (docs/decisions.md): --contested-share 0.4 --weight-taste 1")]
    = False,
    contested_share: Annotated[float | None, typer.Option(
        help="share of users for whom t1/t2 trade one response off against the other")] = None,
    weight_taste: Annotated[float | None, typer.Option(
        help="sd of the value weights' taste that no feature reveals")] = None,
) -> None:
    """Simulate a short-video A/B experiment with ground truth and request logs."""
    from rich.progress import Progress

    from hmum.data.simulator import SimulatorConfig
    from hmum.data.simulator import simulate as run_simulation

    check_out_folder(out, "--out")
    cfg = validated(
        SimulatorConfig, SIMULATOR_FLAGS, n_users=users, n_treatments=treatments,
        n_responses=responses, seed=seed, effect_scale=effect_scale, confounded=confounded,
        n_requests=requests, n_candidates=candidates,
        **_world_options(contested_world, contested_share, weight_taste),
    )
    t0 = time.perf_counter()
    # off a terminal (a pipe, a file) no bar: it would only leave a blank line
    with Progress(console=console, transient=True,
                  disable=not console.is_terminal) as bar:
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


def _schema_path(data: Path, schema: Path | None) -> Path:
    """The schema of --data (--schema, else schema.json beside it); both must exist."""
    if not data.exists():
        _fail(f"--data: data file not found: {data}")
    path = schema or data.parent / "schema.json"
    if not path.is_file():
        _fail(f"--schema: schema not found at {path} (default: schema.json beside --data); "
              "pass --schema")
    return path


def _load(data: Path, schema_path: Path, flag: str = "--data", **kwargs):
    from hmum.data.schema import Schema
    from hmum.data.validate import load_experiment

    if not data.exists():
        _fail(f"{flag}: data file not found: {data}")
    s = Schema.from_json(schema_path)
    with cli_flags(**DATA_FLAGS):
        return s, load_experiment(data, s, **kwargs)


def _check_device(device: str) -> None:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        _fail(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            _fail(f"--device {device}: no CUDA device is available to torch here")


def model_options(name: str, options: list[str] | None, kl_weight: float | None = None):
    """(registry entry, model config fields) of ``--model NAME -o KEY=VALUE ...``.

    Values are parsed as JSON (``-o n_experts=4``, ``-o 'hidden=[64,32]'``), a value
    that is not JSON is taken as a string (``-o loss=mse``). Fails with one line for an
    unknown model, a model whose artifact cannot be saved (causalml), a malformed or
    unknown key (naming the key and the model) or an invalid value.
    """
    import json

    from pydantic import BaseModel

    from hmum.models.registry import get_entry, list_models

    try:
        entry = get_entry(name)
    except KeyError:
        _fail(f"--model: unknown model {name!r}; known: {', '.join(list_models())}")
    refusal = getattr(entry.cls, "save_refusal", None)
    if refusal:
        _fail(f"--model {name}: refused before training, its artifact could not be saved: "
              f"{refusal}")
    cfg_cls = getattr(entry.cls, "config_class", None)
    if cfg_cls is BaseModel:
        cfg_cls = None
    fields = sorted(cfg_cls.model_fields) if cfg_cls is not None else []
    out: dict = {}
    for item in options or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            _fail(f"-o: expected KEY=VALUE, got {item!r}")
        if key not in fields:
            _fail(f"-o {key}: model {name} ({entry.cls.__name__}) has no config field {key!r}; "
                  f"its fields: {', '.join(fields) or 'none (nothing to set)'}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    if kl_weight is not None:
        if "kl_weight" not in fields:
            _fail(f"--kl-weight: model {name} ({entry.cls.__name__}) has no KL term; "
                  "it is a HUM option")
        out.setdefault("kl_weight", kl_weight)
    if cfg_cls is not None:
        flags = {k: ("--kl-weight" if k == "kl_weight" and kl_weight is not None else f"-o {k}")
                 for k in out}
        validated(cfg_cls, flags, **{**entry.model, **out})
    return entry, out


def crossfit_for(entry, model_name: str, crossfit: int) -> int:
    """``crossfit`` if ``--model`` can take it; a one-line failure otherwise.

    Only the neural estimators train cross-fit members, and a variant that fixes its
    own (``hum_crossfit``) would silently win over the flag (its trainer settings are
    the variant), so a different value is refused rather than ignored.
    """
    from hmum.models.base import NeuralUpliftEstimator

    if not issubclass(entry.cls, NeuralUpliftEstimator):
        _fail(f"--crossfit: cross-fit members are trained by the neural models only; "
              f"--model {model_name} is not one (leave out --crossfit)")
    fixed = entry.trainer.get("crossfit")
    if fixed is not None and fixed != crossfit:
        _fail(f"--crossfit: --model {model_name} fixes crossfit {fixed}, got {crossfit} "
              f"(train its base model with --crossfit {crossfit} instead)")
    return crossfit


def train(
    data: Annotated[Path, typer.Option(help="training data (Parquet/CSV)")],
    out: Annotated[Path, typer.Option(help="model artifact folder")],
    schema: Annotated[Path | None, typer.Option(help="schema JSON (default: beside data)")] = None,
    model_name: Annotated[str, typer.Option(
        "--model", help="registered model to train (hmum models lists them); causalml "
        "models cannot be saved and are refused")] = "hum",
    option: Annotated[list[str] | None, typer.Option(
        "-o", "--option", metavar="KEY=VALUE",
        help="a field of the model's config, the value parsed as JSON (e.g. -o kl_weight=0.5, "
             "-o loss=mse); repeatable")] = None,
    valid_data: Annotated[Path | None, typer.Option(help="validation data")] = None,
    split: Annotated[bool, typer.Option(help="hold out an 8:1:1 test split (seeded)")] = True,
    kl_weight: Annotated[float | None, typer.Option(
        help="HUM only: KL coefficient (default 1); 0 = HUM w/o KL; same as -o kl_weight=")]
    = None,
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
    crossfit: Annotated[int | None, typer.Option(
        help="neural models: M cross-fit members (1-8), each trained on its own 1/M of the "
        "rows, the uplift shrunk by their measured reliability (hmum.models.crossfit); "
        "default: the model's own (1; hum_crossfit 2)", min=1)] = None,
    drop_invalid_responses: Annotated[bool, typer.Option(
        help="drop rows whose response is NaN, inf, missing or beyond float32 (default: "
             "error); the number dropped is printed")] = False,
    force: Annotated[bool, typer.Option(help="replace an existing model at --out")] = False,
) -> None:
    """Train a registered model (default HUM) on experiment data and write its artifact.

    Several processes or machines: --nproc N, or torchrun [--nnodes ..]
    --nproc-per-node N -m hmum.cli.app train ... (same options, without --nproc).
    """
    import os

    # every option and output path is checked before any row is read or step taken,
    # the paths first (no torch needed to refuse them)
    check_out_artifact(out, "--out", force)
    if checkpoint_dir is not None:
        check_out_folder(checkpoint_dir, "--checkpoint-dir")
    if resume and checkpoint_dir is None:
        _fail("--resume: needs --checkpoint-dir (the folder to resume from)")
    if valid_data is not None and not valid_data.exists():
        _fail(f"--valid-data: data file not found: {valid_data}")
    schema_path = _schema_path(data, schema)

    from hmum.training import distributed as hd
    from hmum.training.trainer import TrainerConfig

    entry, model_cfg = model_options(model_name, option, kl_weight)
    trainer = {"max_epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
               "num_threads": threads, "device": device}
    if crossfit is not None:
        trainer["crossfit"] = crossfit_for(entry, model_name, crossfit)
    validated(TrainerConfig, TRAINER_FLAGS, **trainer)
    _check_device(device)
    if nproc is not None or hd.launched_by_torchrun():
        from hmum.data.schema import Schema
        from hmum.models.hum import HUMEstimator
        from hmum.workflows.train import train_hum_distributed

        if entry.cls is not HUMEstimator:
            _fail(f"--nproc: data-parallel training is implemented for HUM models; "
                  f"--model {model_name} trains in one process (leave out --nproc)")
        if model_name != "hum" or option:
            _fail("--nproc: data-parallel training takes the default hum model with "
                  "--kl-weight and --crossfit only (no other --model or -o)")
        if drop_invalid_responses:
            _fail("--drop-invalid-responses: not supported with data-parallel training "
                  "(--nproc, torchrun); clean the file first")
        try:
            est = train_hum_distributed(
                data, Schema.from_json(schema_path), out, nproc=nproc, valid_data=valid_data,
                kl_weight=1.0 if kl_weight is None else kl_weight, trainer=trainer,
                split=split, device=device,
                checkpoint_dir=checkpoint_dir, resume=resume, progress=True)
        except hd.DistributedError as e:
            _fail(str(e))
        if os.environ.get("RANK", "0") == "0":
            h = est.history_
            console.print(f"saved {out} (best epoch {h.best_epoch}, valid loss "
                          f"{h.best_valid_loss:.4f}; data-parallel, "
                          f"{os.environ.get('WORLD_SIZE', nproc)} workers)")
        return

    from hmum.workflows.train import train_model

    s, d = _load(data, schema_path, drop_invalid_responses=drop_invalid_responses)
    valid = (_load(valid_data, schema_path, "--valid-data",
                   drop_invalid_responses=drop_invalid_responses)[1] if valid_data else None)
    for name, part in (("--data", d), ("--valid-data", valid)):
        if part is not None and part.n_dropped:
            console.print(f"{name}: dropped {part.n_dropped:,} row(s) with invalid responses "
                          "(--drop-invalid-responses)")
    est, split_info = train_model(
        model_name, d, valid, model=model_cfg, trainer=trainer, split=split,
        checkpoint_dir=checkpoint_dir, resume=resume, progress=True,
    )
    est.save(out)
    h = getattr(est, "history_", None)
    fitted = (f"best epoch {h.best_epoch}, valid loss {h.best_valid_loss:.4f}; "
              if h is not None else "")
    console.print(f"saved {out} ({model_name}; {fitted}{split_info})")


def evaluate(
    model: Annotated[Path, typer.Option(help="model artifact folder")],
    data: Annotated[Path, typer.Option(help="evaluation data (Parquet/CSV)")],
    schema: Annotated[Path | None, typer.Option(help="schema JSON (default: the model's)")] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("runs/eval"),
    test_split: Annotated[bool, typer.Option(
        help="evaluate on the test rows that train held out of --data (the split recorded "
        "in the model; --data must be the very table the model was trained from)"
    )] = False,
    drop_invalid_responses: Annotated[bool, typer.Option(
        help="drop rows whose response is NaN, inf, missing or beyond float32 (default: "
             "error); the number dropped is printed")] = False,
    explain: Annotated[bool, typer.Option(
        help="also explain the model (permutation importance on the predicted uplift, as "
             "hmum explain with its defaults) into --out/explain and the report")] = False,
) -> None:
    """K x R table of normalized Qini/AUUC (+ ground-truth errors), levels per arm, curves
    and a report (report.md and a self-contained report.html)."""
    check_out_folder(out, "--out")
    if not data.exists():
        _fail(f"--data: data file not found: {data}")

    from hmum.data.schema import Schema
    from hmum.data.validate import load_experiment
    from hmum.models.registry import load_estimator
    from hmum.workflows.train import evaluate_models, held_out_rows

    est = load_estimator(model)
    s = Schema.from_json(schema) if schema is not None else est.schema
    with cli_flags(**DATA_FLAGS):
        d = load_experiment(data, s, drop_invalid_responses=drop_invalid_responses)
        if d.n_dropped:
            console.print(f"--data: dropped {d.n_dropped:,} row(s) with invalid responses "
                          "(--drop-invalid-responses)")
        if test_split:
            d = d.take(held_out_rows(est, d, source=f"--data {data}"))
    explanations = None
    if explain:
        from hmum.workflows.explain import explain as run_explain

        explanations = {model.name: run_explain(est, d, out / "explain")}
    res = evaluate_models({model.name: est}, d, out, explanations=explanations)
    print_evaluation(res)
    console.print(f"report: {res['report']} and {res['html']}")


def _print_frame(title: str, df) -> None:
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right")
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(t)


def print_evaluation(res: dict) -> None:
    from hmum.metrics.levels import Z_FLAG

    for name, tab in res["tables"].items():
        _print_frame(f"{name}: normalized Qini / AUUC per (treatment, response)",
                     tab[["treatment", "response", "qini", "auuc", "n_control", "n_treated"]])
        truth = res["truth"].get(name)
        if truth is not None:
            _print_frame(f"{name}: errors against the ground truth", truth)
        lv = res.get("levels", {}).get(name)
        if lv is not None:
            _print_frame(f"{name}: levels, mean prediction vs observed mean on each arm's rows",
                         lv[["arm", "response", "n", "observed_mean", "observed_se",
                             "predicted_mean", "gap", "relative_gap", "flagged"]])
            off = lv[lv["flagged"]]
            if len(off):
                cells = ", ".join(f"{a}/{r} {g:+.4g} ({z:+.1f} SE)" for a, r, g, z in zip(
                    off["arm"], off["response"], off["gap"], off["gap_se"], strict=True))
                console.print(f"{name}: level gap beyond {Z_FLAG:g} SE in {len(off)} "
                              f"cell(s): {cells}", soft_wrap=True)


# --------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------


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
    option: Annotated[list[str] | None, typer.Option(
        "-o", "--option", metavar="KEY=VALUE",
        help="a field of HUM's config for both demo models, the value parsed as JSON (e.g. "
             "-o selector=fieldwise); repeatable")] = None,
) -> None:
    """The main job: simulate -> train HUM (+ w/o KL) -> evaluate -> DDM decisions -> report."""
    from hmum.data.simulator import SimulatorConfig
    from hmum.training.trainer import TrainerConfig
    from hmum.workflows.demo import run_demo

    check_out_folder(out, "--out")
    _, model_cfg = model_options("hum", option)
    if "kl_weight" in model_cfg:  # the demo's second model *is* the kl_weight=0 one
        _fail("-o kl_weight: the demo trains HUM (kl_weight 1) and HUM w/o KL (0) itself; "
              f"got kl_weight={model_cfg['kl_weight']!r}")
    validated(SimulatorConfig, SIMULATOR_FLAGS, n_users=users, seed=seed,
              effect_scale=effect_scale, n_requests=min(20_000, users))
    validated(TrainerConfig, TRAINER_FLAGS, max_epochs=epochs, seed=seed, num_threads=threads)
    t0 = time.perf_counter()
    res = run_demo(out, users=users, epochs=epochs, effect_scale=effect_scale, seed=seed,
                   threads=threads, ddm=ddm, serve=serve and ddm, console=console,
                   model=model_cfg or None)
    print_simulation_summary(res["simulation"])
    print_evaluation(res)
    if "ddm" in res:
        console.print(strategy_rich_table(res["ddm"]["strategy_table"],
                                          list(res["simulation"]["responses"])))
    console.print(f"[bold green]demo finished[/] in {time.perf_counter() - t0:.0f}s; "
                  f"report: {res['report']}")
