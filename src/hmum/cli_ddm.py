"""Commands of the decision half (DDM): ``train-value-weights``, ``decide``, ``policy-eval``.

Plain functions with Typer annotations; ``hmum.cli`` registers them:

    from hmum.cli_ddm import decide, policy_eval, train_value_weights
    app.command("train-value-weights")(train_value_weights)
    app.command("decide")(decide)
    app.command("policy-eval")(policy_eval)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.table import Table

from hmum.cli_common import (
    check_out_artifact,
    check_out_file,
    check_out_folder,
    console,
    validated,
)
from hmum.cli_common import fail as _fail
from hmum.ddm_pipeline import pct_text as _pct
from hmum.errors import cli_flags

if TYPE_CHECKING:  # pandas loads lazily: ``hmum --help`` stays fast
    import pandas as pd


MODES = ("independent", "exclusive")
#: TrainerConfig field -> the flag of train-value-weights that sets it
TRAINER_FLAGS = {"max_epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
                 "seed": "--seed", "num_threads": "--threads"}
#: Python parameters whose messages name these flags instead (hmum.errors.option_name)
DDM_FLAGS = {"missing": "--drop-unknown-users", "test_split": "--test-split",
             "drop_invalid_responses": "--drop-invalid-responses"}




def _epoch_line(rec: dict) -> None:
    console.print(f"epoch {rec['epoch']}: train MSE {rec['train_loss']:.4f}, valid MSE "
                  f"{rec['valid_loss']:.4f} ({rec['seconds']:.1f}s)")


# --------------------------------------------------------------------------------------
# rich tables (also usable by ``hmum demo``)
# --------------------------------------------------------------------------------------


def strategy_rich_table(table: pd.DataFrame, response_names, title: str | None = None) -> Table:
    """The ground-truth strategy table as a rich Table (changes in %)."""
    t = Table(title=title or "Strategies on ground truth: true change vs everyone in control")
    t.add_column("strategy")
    shares = [c for c in table.columns if c.startswith("share_")]
    for c in shares:
        t.add_column(c[6:], justify="right")
    for r in response_names:
        t.add_column(f"Δ {r}", justify="right")
    t.add_column("value", justify="right")
    if "oracle_share" in table:
        t.add_column("oracle share", justify="right")
    for _, row in table.iterrows():
        both_up = all(row[f"change_{r}"] > 0 for r in response_names)
        name = f"[bold]{row['strategy']}[/]" if both_up else str(row["strategy"])
        cells = [name, *[f"{row[c]:.2f}" for c in shares],
                 *[_pct(row[f"change_{r}"]) for r in response_names],
                 f"{100 * row['value']:+.4f}%"]
        if "oracle_share" in table:
            cells.append(f"{row['oracle_share']:.2f}")
        t.add_row(*cells)
    return t


def ope_rich_table(table: pd.DataFrame, response_names, title: str | None = None) -> Table:
    """The off-policy table (IPW / DR with bootstrap intervals) as a rich Table."""
    t = Table(title=title or "Off-policy estimates: change vs everyone in control [95% CI]")
    t.add_column("strategy")
    t.add_column("estimator")
    for r in response_names:
        t.add_column(f"Δ {r}", justify="right")
        if f"true_change_{r}" in table:
            t.add_column(f"true Δ {r}", justify="right")
    for _, row in table.iterrows():
        cells = [str(row["strategy"]), str(row["estimator"])]
        for r in response_names:
            cells.append(f"{_pct(row[f'change_{r}'])} [{_pct(row[f'change_{r}_lo'])}, "
                         f"{_pct(row[f'change_{r}_hi'])}]")
            if f"true_change_{r}" in table:
                cells.append(_pct(row[f"true_change_{r}"]))
        t.add_row(*cells)
    return t


# --------------------------------------------------------------------------------------
# loading helpers
# --------------------------------------------------------------------------------------


def _load_hum(path: Path):
    from hmum.training.artifacts import ArtifactError
    from hmum.training.estimator import load_estimator

    try:
        return load_estimator(path)
    except ArtifactError as e:
        _fail(str(e))


def _load_vw(path: Path):
    from hmum.training.artifacts import ArtifactError
    from hmum.training.value_weight import load_value_weight_model

    try:
        return load_value_weight_model(path)
    except ArtifactError as e:
        _fail(str(e))


def _read_requests(path: Path, vw=None):
    """The request table; with a fitted model only the columns it needs (+ ids)."""
    from hmum.data.io import DataError, column_names, read_table

    try:
        if vw is None:
            return read_table(path)
        names = column_names(path)
        cols = [c for c in ("request_id", "user_id") if c in names]
        cols += [f"cand_{f}" for f in vw.cand_fields_] + [f"recent_{f}" for f in vw.recent_fields_]
        missing = [c for c in cols if c not in names]
        if missing:
            _fail(f"{path}: missing request column(s) {missing} the value-weight model needs")
        return read_table(path, columns=cols)
    except (DataError, FileNotFoundError) as e:
        _fail(str(e))


# --------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------


def train_value_weights(
    requests: Annotated[Path, typer.Option(help="request logs with o_<response> labels")],
    out: Annotated[Path, typer.Option(help="value-weight model artifact folder")],
    onnx: Annotated[Path | None, typer.Option(help="also export the ONNX graph here")] = None,
    epochs: Annotated[int, typer.Option(help="maximum epochs")] = 30,
    batch_size: Annotated[int, typer.Option()] = 512,
    lr: Annotated[float, typer.Option()] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing model at --out")] = False,
) -> None:
    """Train the value-weight model (paper eqs. 8-10) on request logs."""
    from hmum.training.trainer import TrainerConfig
    from hmum.training.value_weight import ValueWeightEstimator

    # every option and output path is checked before any row is read
    check_out_artifact(out, "--out", force)
    if onnx is not None:
        check_out_file(onnx, "--onnx", (".onnx",))
    trainer = {"max_epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
               "num_threads": threads}
    validated(TrainerConfig, TRAINER_FLAGS, **trainer)
    table = _read_requests(requests)
    t0 = time.perf_counter()
    est = ValueWeightEstimator(trainer=trainer).fit(table, log=_epoch_line)
    est.save(out)
    h = est.history_
    console.print(f"saved {out} (best epoch {h.best_epoch}, valid MSE {h.best_valid_loss:.4f}, "
                  f"responses {est.responses_}, {time.perf_counter() - t0:.0f}s)")
    if onnx is not None:
        console.print(f"ONNX graph: {est.export_onnx(onnx)}")


def decide(
    requests: Annotated[Path, typer.Option(help="request table (Parquet/CSV) with user_id")],
    users: Annotated[Path, typer.Option(help="users' features (Parquet/CSV) with user_id")],
    hum_model: Annotated[Path, typer.Option(help="HUM model artifact folder")],
    value_model: Annotated[Path, typer.Option(help="value-weight model artifact folder")],
    out: Annotated[Path, typer.Option(help="decisions file (.parquet or .csv)")] = Path(
        "runs/decisions.parquet"),
    sigma: Annotated[float, typer.Option(help="enable k where phi^k > sigma")] = 0.0,
    mode: Annotated[str, typer.Option(
        help="independent (any subset, the paper) or exclusive (best arm or none)")]
    = "independent",
    drop_unknown_users: Annotated[bool, typer.Option(
        help="skip requests whose user is not in --users (default: error)")] = False,
) -> None:
    """Per-request value weights, balanced scores phi and decisions (paper eqs. 6-11)."""
    from hmum.data.validate import load_experiment
    from hmum.ddm_pipeline import decide as run_decide

    if mode not in MODES:
        _fail(f"--mode must be one of {MODES}, got {mode!r}")
    check_out_file(out, "--out", (".parquet", ".csv"))
    hum = _load_hum(hum_model)
    vw = _load_vw(value_model)
    req = _read_requests(requests, vw)
    with cli_flags(**DDM_FLAGS):
        u = load_experiment(users, hum.schema, require_arm=False, require_responses=False,
                            require_all_arms=False)
        if u.user_id is not None and "user_id" in req.column_names:
            # score only the users that have requests (the users file may be large)
            u = u.take(np.flatnonzero(np.isin(u.user_id, req.column("user_id").to_numpy())))
        t0 = time.perf_counter()
        df = run_decide(req, u, hum, vw, sigma=sigma, mode=mode, out_path=out,
                        missing="drop" if drop_unknown_users else "error")
    if df.attrs.get("n_dropped"):
        console.print(f"--drop-unknown-users: dropped {df.attrs['n_dropped']:,} of "
                      f"{req.num_rows:,} request(s) whose user is not in --users")
    tn = hum.schema.arms[1:]
    rn = vw.responses_
    t = Table(title=f"Decisions for {len(df):,} requests (sigma {sigma}, {mode} mode)")
    t.add_column("")
    t.add_column("value", justify="right")
    for r in rn:
        t.add_row(f"mean w {r}", f"{df[f'w_{r}'].mean():.3f}")
    for k in tn:
        t.add_row(f"mean phi {k}", f"{df[f'phi_{k}'].mean():+.4f}")
        t.add_row(f"share enabling {k}", f"{df[f'enable_{k}'].mean():.3f}")
    for arms, share in df["arms"].value_counts(normalize=True).items():
        t.add_row(f"arm set {arms}", f"{share:.3f}")
    console.print(t)
    console.print(f"wrote {out} ({time.perf_counter() - t0:.1f}s)")


def policy_eval(
    users: Annotated[Path, typer.Option(help="experiment data (Parquet/CSV): arm, responses, "
                                              "ground truth if simulated")],
    hum_model: Annotated[Path, typer.Option(help="HUM model artifact folder")],
    requests: Annotated[Path | None, typer.Option(help="request table for personal weights")]
    = None,
    value_model: Annotated[Path | None, typer.Option(help="value-weight model artifact")] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("runs/policy_eval"),
    schema: Annotated[Path | None, typer.Option(help="schema JSON (default: the model's)")]
    = None,
    test_split: Annotated[bool, typer.Option(
        help="evaluate on the test rows that train held out of --users (the split recorded "
        "in the model; --users must be the very table the model was trained from)"
    )] = False,
    seed: Annotated[int, typer.Option(help="seed of the random policy and the bootstrap")]
    = 0,
    sigma: Annotated[float, typer.Option(help="decision threshold")] = 0.0,
    fixed_weights: Annotated[str | None, typer.Option(
        help="global weights of the fixed-weight strategy, e.g. '0.5,0.5' (default: the mean "
             "predicted weight)")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples of the off-policy CIs")]
    = 500,
    drop_invalid_responses: Annotated[bool, typer.Option(
        help="drop rows whose response is NaN, inf, missing or beyond float32 (default: "
             "error); the number dropped is printed")] = False,
) -> None:
    """The strategy table (paper Tables 3 and 4) with the trade-off plot and a report."""
    from hmum.data.io import column_names, read_table
    from hmum.data.schema import Schema
    from hmum.data.validate import load_experiment
    from hmum.ddm_pipeline import policy_eval as run_policy_eval
    from hmum.pipeline import held_out_rows

    if (requests is None) != (value_model is None):
        _fail("--requests and --value-model go together (personal weights need both)")
    if n_boot < 1:
        _fail(f"--n-boot: expected an integer >= 1, got {n_boot}")
    check_out_folder(out, "--out")
    hum = _load_hum(hum_model)
    s = Schema.from_json(schema) if schema is not None else hum.schema
    fw = None
    if fixed_weights is not None:
        try:
            fw = [float(v) for v in fixed_weights.split(",")]
        except ValueError:
            _fail(f"--fixed-weights must be comma-separated numbers, got {fixed_weights!r}")
    with cli_flags(**DDM_FLAGS):
        d = load_experiment(users, s, drop_invalid_responses=drop_invalid_responses)
        if d.n_dropped:
            console.print(f"--users: dropped {d.n_dropped:,} row(s) with invalid responses "
                          "(--drop-invalid-responses)")
        # the simulator's latent weights, when written, define the value and the oracle
        names = column_names(users)
        wcols = [f"true_w_{r}" for r in s.response_names]
        w_true = None
        if all(c in names for c in wcols):
            if d.n_dropped:
                _fail("--drop-invalid-responses: not supported on simulated data with true "
                      f"weights {wcols} (their rows would no longer line up)")
            wt = read_table(users, columns=wcols)
            w_true = np.stack([wt.column(c).to_numpy() for c in wcols], axis=1)
        if test_split:
            idx = held_out_rows(hum, d, source=f"--users {users}")
            d = d.take(idx)
            w_true = None if w_true is None else w_true[idx]
        vw = _load_vw(value_model) if value_model is not None else None
        req = _read_requests(requests, vw) if requests is not None else None
        t0 = time.perf_counter()
        res = run_policy_eval(d, hum, out, requests=req, vw_estimator=vw, w_true=w_true,
                              sigma=sigma, fixed_weights=fw, n_boot=n_boot, seed=seed)
    rn = s.response_names
    if res["strategy_table"] is not None:
        console.print(strategy_rich_table(res["strategy_table"], rn))
    if res["ope_table"] is not None:
        console.print(ope_rich_table(res["ope_table"], rn))
    console.print(f"report: {res['report']}" + (f", plot: {res['plot']}" if res["plot"] else "")
                  + f" ({time.perf_counter() - t0:.1f}s)")
