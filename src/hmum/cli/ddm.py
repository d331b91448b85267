"""Commands of the decision half (DDM): ``train-value-weights``, ``decide``, ``policy-eval``.

Plain functions with Typer annotations (parse, call ``hmum.workflows.ddm``, print);
``hmum.cli.app`` registers them:

    from hmum.cli.ddm import decide, policy_eval, train_value_weights
    app.command("train-value-weights")(train_value_weights)
    app.command("decide")(decide)
    app.command("policy-eval")(policy_eval)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from hmum.cli.common import (
    TRAINER_FLAGS,
    check_out_artifact,
    check_out_file,
    check_out_folder,
    console,
    validated,
)
from hmum.cli.common import fail as _fail
from hmum.exceptions import cli_flags

if TYPE_CHECKING:  # pandas loads lazily: ``hmum --help`` stays fast
    import pandas as pd


MODES = ("independent", "exclusive")
#: Python parameters whose messages name these flags instead (hmum.exceptions.option_name)
DDM_FLAGS = {"missing": "--drop-unknown-users", "test_split": "--test-split",
             "drop_invalid_responses": "--drop-invalid-responses", "users": "--users",
             "requests": "--requests", "guardrails": "--guardrail",
             "calibration_share": "--calibration-share", "folds": "--calibration-folds"}


WEIGHTS_HELP = ("fixed business weights per response instead of a value-weight model, e.g. "
                "usage_time=0.7,video_views=0.3 (normalized to sum 1; unnamed responses get 0)")
WEIGHTS_CONFIG_HELP = ("fixed weights from a JSON file {\"usage_time\": 0.7, ...} (or "
                       "{\"weights\": {...}}) instead of a value-weight model")
WEIGHT_COLUMN_HELP = ("per-user weights from columns of --users, e.g. "
                      "usage_time=w_usage,video_views=w_views (each row normalized to sum 1)")


def _check_weights_sources(value_model, weights, weights_config, weight_column, requests, *,
                           need_requests: bool) -> None:
    """Exactly one weights source; the learned one needs --requests."""
    given = [f for f, v in (("--value-model", value_model), ("--weights", weights),
                            ("--weights-config", weights_config),
                            ("--weight-column", weight_column or None)) if v is not None]
    if len(given) != 1:
        _fail("give exactly one weights source: --value-model (with --requests), --weights, "
              "--weights-config or --weight-column"
              + (f"; got {', '.join(given)}" if given else ""))
    if need_requests and value_model is not None and requests is None:
        _fail("--value-model predicts weights per request: it needs --requests (or use "
              "--weights / --weights-config / --weight-column)")


def _weights_of(weights, weights_config, weight_column, responses):
    """(fixed w (R,) or None, {response: column} or None, the source's record)."""
    from hmum.decision import weights as dw

    if weights is not None:
        w = dw.parse_weights(weights, responses)
        return w, None, dw.weights_record("fixed", weights=w, responses=responses)
    if weights_config is not None:
        w = dw.load_weights_config(weights_config, responses)
        return w, None, dw.weights_record("config", weights=w, responses=responses,
                                          path=str(weights_config))
    if weight_column:
        cols = dw.parse_weight_columns(weight_column, responses)
        return None, cols, dw.weights_record("columns", columns=cols)
    return None, None, dw.weights_record("value_model")


def _user_weights(wf, users_path, u, fixed_w, columns):
    """w_user (N, R) of the loaded users for the fixed or column sources, else None."""
    import numpy as np

    if fixed_w is not None:
        return np.broadcast_to(fixed_w, (len(u), len(fixed_w))).copy()
    if columns is not None:
        return wf.read_weight_columns(users_path, u, columns)
    return None


def _request_weights_model(u, fixed_w, w_user, responses):
    from hmum.decision.weights import FixedWeights, UserColumnWeights

    if fixed_w is not None:
        return FixedWeights(fixed_w, responses)
    if u.user_id is None:
        _fail("--weight-column with --requests needs user ids in --users (the schema's "
              "user_id) to give each request its user's weights")
    return UserColumnWeights(u.user_id, w_user, responses)


def _with_weights(rule, fixed_w, rec):
    """The rule with its weights source recorded (and the fixed weights it applies)."""
    from dataclasses import replace

    fit = {**rule.fit, "weights_source": rec}
    if fixed_w is not None:
        return replace(rule, weights="fixed", fixed_weights=[float(v) for v in fixed_w], fit=fit)
    return replace(rule, fit=fit)


def _weights_text(rec: dict) -> str:
    if rec["source"] in ("fixed", "config"):
        return "fixed " + ", ".join(f"{r}={v:.3g}" for r, v in rec["weights"].items())
    if rec["source"] == "columns":
        return "per-user columns " + ", ".join(f"{r}={c}" for r, c in rec["columns"].items())
    return "value-weight model"


def _pct(v: float) -> str:
    from hmum.workflows.ddm import pct_text

    return pct_text(v)


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
    from hmum.workflows.ddm import read_requests
    from hmum.workflows.ddm import train_value_weights as fit_value_weights

    # every option and output path is checked before any row is read
    check_out_artifact(out, "--out", force)
    if onnx is not None:
        check_out_file(onnx, "--onnx", (".onnx",))
    trainer = {"max_epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
               "num_threads": threads}
    validated(TrainerConfig, TRAINER_FLAGS, **trainer)
    table = read_requests(requests)
    t0 = time.perf_counter()
    est = fit_value_weights(table, trainer=trainer, log=_epoch_line)
    est.save(out)
    h = est.history_
    console.print(f"saved {out} (best epoch {h.best_epoch}, valid MSE {h.best_valid_loss:.4f}, "
                  f"responses {est.responses_}, {time.perf_counter() - t0:.0f}s)")
    if onnx is not None:
        console.print(f"ONNX graph: {est.export_onnx(onnx)}")


def decide(
    users: Annotated[Path, typer.Option(help="users' features (Parquet/CSV) with user_id")],
    hum_model: Annotated[Path, typer.Option(
        "--model", "--hum-model",
        help="uplift model artifact folder (any model hmum train saves: HUM or a baseline); "
             "--hum-model is the former name, kept as an alias")],
    requests: Annotated[Path | None, typer.Option(
        help="request table (Parquet/CSV) with user_id; needed with --value-model, optional "
             "with fixed or per-user weights (without it: one decision per user)")] = None,
    value_model: Annotated[Path | None, typer.Option(
        help="value-weight model artifact folder (learned weights per request)")] = None,
    weights: Annotated[str | None, typer.Option(
        metavar="RESPONSE=W,...", help=WEIGHTS_HELP)] = None,
    weights_config: Annotated[Path | None, typer.Option(help=WEIGHTS_CONFIG_HELP)] = None,
    weight_column: Annotated[list[str] | None, typer.Option(
        metavar="RESPONSE=COLUMN,...", help=WEIGHT_COLUMN_HELP)] = None,
    out: Annotated[Path, typer.Option(help="decisions file (.parquet or .csv)")] = Path(
        "runs/decisions.parquet"),
    sigma: Annotated[float, typer.Option(help="enable k where phi^k > sigma")] = 0.0,
    mode: Annotated[str, typer.Option(
        metavar="<independent|exclusive>",
        help="independent (any subset, the paper) or exclusive (best arm or none)")]
    = "independent",
    drop_unknown_users: Annotated[bool, typer.Option(
        help="skip requests whose user is not in --users (default: error)")] = False,
    guardrail: Annotated[list[str] | None, typer.Option(
        metavar="RESPONSE>=FLOOR",
        help="the response's population change must stay >= FLOOR (a fraction, or percent "
             "with '%'), e.g. video_views>=-0.0; repeatable")] = None,
    max_share: Annotated[list[str] | None, typer.Option(
        metavar="TREATMENT=SHARE",
        help="at most SHARE of users get TREATMENT, e.g. t2=0.3; repeatable")] = None,
    guardrail_estimate: Annotated[str, typer.Option(
        metavar="<auto|model|dr>",
        help="how the guarded change is estimated on the calibration users: model (the "
             "uplift model), dr (doubly robust lower bound from the logged arm and "
             "responses; exclusive mode) or auto (dr when possible)")] = "auto",
    guardrail_confidence: Annotated[float, typer.Option(
        help="one-sided confidence of the dr lower bound")] = 0.9,
    guardrail_margin: Annotated[float, typer.Option(
        help="with the model estimate: added to every floor (a fraction)")] = 0.0,
    calibration_share: Annotated[float | None, typer.Option(
        help="share of --users the guardrail rule is fitted on (seeded); the rest checks it "
             "[default: 0.5]")] = None,
    calibration_folds: Annotated[int | None, typer.Option(
        help="fit the guardrail rule on every user of --users instead, each scored by a "
             "refit of --model's recipe on the other F-1 folds (F fits), so the doubly "
             "robust bound uses them all, the rows --model trained on included; --model "
             "then makes the decisions", min=2)] = None,
    seed: Annotated[int, typer.Option(help="seed of the calibration split or folds")] = 0,
    decision_config: Annotated[Path | None, typer.Option(
        help="apply this frozen decision config (written by --decision-config-out) instead "
             "of --sigma / --mode / guardrails")] = None,
    decision_config_out: Annotated[Path | None, typer.Option(
        help="write the decision config (mode, sigma per treatment, guardrail bonuses) to "
             "this folder (decision.json + sha256 manifest), for hmum serve")] = None,
    bound: Annotated[float | None, typer.Option(
        metavar="LEVEL",
        help="enable k only where the lower bound of a LEVEL (e.g. 0.9) confidence interval "
             "of phi clears sigma; the interval comes from --model's members (a HUM with "
             "branches_per_treatment >= 2 or trainer crossfit >= 2; cross-fit members "
             "measured closest to nominal, docs/decisions.md)")] = None,
    bound_method: Annotated[str, typer.Option(
        metavar="<t|normal>",
        help="with --bound: t (a prediction interval with M-1 degrees of freedom) or normal "
             "(z * sd)")] = "t",
) -> None:
    """Per-request value weights, balanced scores phi and decisions (paper eqs. 6-11).

    Exactly one weights source: --value-model (learned, with --requests), --weights,
    --weights-config (fixed business weights) or --weight-column (per-user weights from
    columns of --users). Without --requests the decision is made per user.

    With --guardrail / --max-share the per-treatment thresholds and one multiplier per
    guarded response are fitted on a calibration split of --users (best predicted value
    subject to the guardrails and caps), checked on the rest, and frozen into the
    decision config. With --calibration-folds F they are fitted on every user instead,
    each scored by a refit of --model's recipe that did not see them.
    """
    from hmum.models.registry import load_estimator
    from hmum.models.value_weight import load_value_weight_model
    from hmum.workflows import ddm as wf

    _check_weights_sources(value_model, weights, weights_config, weight_column, requests,
                           need_requests=True)
    if mode not in MODES:
        _fail(f"--mode must be one of {MODES}, got {mode!r}")
    if guardrail_estimate not in ("auto", "model", "dr"):
        _fail(f"--guardrail-estimate: expected one of auto, model, dr, got {guardrail_estimate!r}")
    fitting = bool(guardrail or max_share)
    if calibration_folds is not None and calibration_share is not None:
        _fail("--calibration-share: with --calibration-folds every user calibrates (out of "
              "fold); leave out one of them")
    if calibration_folds is not None and not fitting:
        _fail("--calibration-folds: calibrates a guardrail rule; give --guardrail or "
              "--max-share")
    calibration_share = 0.5 if calibration_share is None else calibration_share
    if fitting and decision_config is not None:
        _fail("--decision-config applies a frozen rule; it cannot be combined with --guardrail "
              "or --max-share (which fit a new one)")
    if bound is not None:
        if not 0 < bound < 1:
            _fail(f"--bound: expected a confidence level in (0, 1), e.g. 0.9; got {bound}")
        if bound_method not in ("t", "normal"):
            _fail(f"--bound-method: expected t or normal, got {bound_method!r}")
        if decision_config is not None:
            _fail("--bound: --decision-config applies a frozen rule with its own bound (or "
                  "none); leave out one of them")
        if fitting:
            _fail("--bound: the guardrail rule is fitted on point scores, so a lower bound "
                  "would break the guardrails it checked; leave out --bound, or --guardrail "
                  "and --max-share")
    check_out_file(out, "--out", (".parquet", ".csv"))
    if decision_config_out is not None:
        check_out_folder(decision_config_out, "--decision-config-out")
    hum = load_estimator(hum_model)
    vw = load_value_weight_model(value_model) if value_model is not None else None
    rule = None
    if decision_config is not None:
        from hmum.decision.rules import load_rule

        rule = load_rule(decision_config)
    rn_, tn_ = hum.schema.response_names, hum.schema.arms[1:]
    if bound is not None:
        from hmum.decision.rules import DecisionRule

        m = getattr(hum, "n_members_", 1)
        if m < 2:
            _fail(f"--bound: the interval of phi comes from --model's members, and {hum_model} "
                  f"has {m}; train a HUM with members: hmum train --crossfit 5 (measured "
                  "closest to nominal) or -o branches_per_treatment=5")
        rule = DecisionRule(rn_, tn_, mode=mode, sigma=[sigma] * len(tn_), bound={
            "level": bound, "source": hum.member_source_, "method": bound_method})
    guards, caps = [], {}
    if fitting:
        from hmum.decision.guardrails import parse_guardrail, parse_max_share

        guards = [parse_guardrail(g, rn_) for g in guardrail or []]
        caps = dict(parse_max_share(c, tn_) for c in max_share or [])
    fixed_w, columns, w_rec = _weights_of(weights, weights_config, weight_column, rn_)
    req = wf.read_requests(requests, vw) if requests is not None else None
    with cli_flags(**DDM_FLAGS):
        u = wf.load_decision_users(users, hum.schema, req, for_guardrails=fitting)
        t0 = time.perf_counter()
        w_user = _user_weights(wf, users, u, fixed_w, columns)
        if vw is None and req is not None:  # fixed / per-user weights for each request
            vw = _request_weights_model(u, fixed_w, w_user, rn_)
        deltas = None
        if fitting:
            fit_options = {"mode": mode, "sigma": sigma, "estimate": guardrail_estimate,
                           "confidence": guardrail_confidence, "margin": guardrail_margin,
                           "calibration_share": calibration_share, "seed": seed}
            if calibration_folds is not None:
                fit_options["oof_deltas"] = wf.out_of_fold_deltas(
                    hum, u, calibration_folds, seed=seed, log_fold=console.print)
            if req is None:
                deltas = wf.hum_deltas(hum, u)
                rule, rep = wf.fit_guardrail_rule(u, deltas, w_user, guardrails=guards,
                                                  max_share=caps, **fit_options)
            else:
                rule, deltas, rep = wf.fit_request_guardrails(u, hum, vw, req, guards, caps,
                                                              **fit_options)
            console.print(guardrail_rich_table(rep, u.schema.response_names, guards))
            for line in guardrail_lines(rep, guards):
                console.print(line)
            if calibration_folds is None and rep["estimate"] == "dr" and wf.trained_on(hum, u):
                console.print("note: --users is the table --model was trained from, so the dr "
                              "bound's outcome model has seen most calibration users' "
                              "outcomes; --calibration-folds F scores every user with a "
                              "refit that did not")
        if req is None:
            df = wf.decide_users(u, hum, w_user, sigma=sigma, mode=mode, out_path=out,
                                 deltas=deltas, rule=rule)
        else:
            df = wf.decide(req, u, hum, vw, sigma=sigma, mode=mode, out_path=out,
                           deltas=deltas, missing="drop" if drop_unknown_users else "error",
                           rule=rule)
    if decision_config_out is not None:
        from hmum.decision.rules import DecisionRule, save_rule

        rule = rule or DecisionRule(rn_, tn_, mode=mode, sigma=[sigma] * len(tn_))
        rule = _with_weights(rule, fixed_w, w_rec)
        console.print(f"decision config: {save_rule(rule, decision_config_out)}")
    if df.attrs.get("n_dropped"):
        console.print(f"--drop-unknown-users: dropped {df.attrs['n_dropped']:,} of "
                      f"{req.num_rows:,} request(s) whose user is not in --users")
    tn = hum.schema.arms[1:]
    rn = rn_
    how = (f"decision config, {rule.mode} mode, sigma {[round(x, 6) for x in rule.sigma]}"
           if rule is not None else f"sigma {sigma}, {mode} mode")
    if rule is not None and rule.bound is not None:
        how += f", lower bound at {rule.bound['level']:g} from the {rule.bound['source']} members"
    how += f", weights: {_weights_text(w_rec)}"
    t = Table(title=f"Decisions for {len(df):,} {'requests' if req is not None else 'users'} "
                    f"({how})")
    t.add_column("")
    t.add_column("value", justify="right")
    for r in rn:
        t.add_row(f"mean w {r}", f"{df[f'w_{r}'].mean():.3f}")
    for k in tn:
        t.add_row(f"mean phi {k}", f"{df[f'phi_{k}'].mean():+.4f}")
        if f"phi_lower_{k}" in df:
            t.add_row(f"mean lower bound of phi {k}", f"{df[f'phi_lower_{k}'].mean():+.4f}")
            if not any(rule.response_bonus):  # then phi is the rule's point score
                t.add_row(f"share with phi {k} > sigma (point)",
                          f"{(df[f'phi_{k}'] > rule.sigma[tn.index(k)]).mean():.3f}")
        t.add_row(f"share enabling {k}", f"{df[f'enable_{k}'].mean():.3f}")
    for arms, share in df["arms"].value_counts(normalize=True).items():
        t.add_row(f"arm set {arms}", f"{share:.3f}")
    console.print(t)
    console.print(f"wrote {out} ({time.perf_counter() - t0:.1f}s)")


def guardrail_lines(rep: dict, guards) -> list[str]:
    """Plain sentences of the held-out check (the table cells wrap in narrow terminals)."""
    hc, hf = rep["held_out"]["chosen"], rep["held_out"]["unconstrained"]
    on = _check_words(rep)
    out = []
    for g in guards:
        if hc.get("true_change") is not None:
            v = hc["true_change"][g.response]
            out.append(f"guardrail {g.text()}: true change {on} {_pct(v)}, "
                       + ("held" if hc["held"][g.response] else "NOT held"))
        elif "dr_change" in hc:
            out.append(f"guardrail {g.text()}: dr estimate on the held-out users "
                       f"{_pct(hc['dr_change'][g.response])} (lower bound "
                       f"{_pct(hc['dr_lower'][g.response])})")
    if "true_value" in hc and "true_value" in hf:
        out.append(f"cost of the guardrails on the truth: value {100 * hc['true_value']:+.4f}% "
                   f"vs {100 * hf['true_value']:+.4f}% unconstrained")
    if "unconstrained_users_needed" in rep["fit"]:
        need = rep["fit"]["unconstrained_users_needed"]
        out.append(
            f"the unconstrained rule failed the dr bound on {rep['n_calibration']:,} "
            "calibration users: " + (
                "its estimate itself is below a floor" if need is None else
                f"its estimate clears the floor(s), and its bound would at about {need:,} "
                "calibration users (the guardrail may cost value only for want of data)"))
    return out


def _check_words(rep: dict) -> str:
    """Where the fitted rule was checked, in words."""
    if rep.get("check") == "in_sample":
        return "with the deployed model on the same users"
    return "on the held-out users"


def guardrail_rich_table(rep: dict, response_names, guards) -> Table:
    """The guardrail fit: chosen vs unconstrained rule, on calibration and held-out users."""
    fit, held = rep["fit"], rep["held_out"]
    in_sample = rep.get("check") == "in_sample"
    where = (f"fitted out of fold on all {rep['n_calibration']:,} users, checked "
             f"{_check_words(rep)}" if in_sample else
             f"fitted on {rep['n_calibration']:,} calibration users, checked on "
             f"{held['n_users']:,} others")
    t = Table(title=f"Guardrail rule ({rep['estimate']} estimate; {where})")
    t.add_column("")
    t.add_column("chosen", justify="right")
    t.add_column("unconstrained", justify="right")
    ch, fr = fit["chosen"], fit["unconstrained"]
    t.add_row("multiplier per response", ", ".join(f"{b:.3g}" for b in ch["response_bonus"]),
              "0")
    t.add_row("sigma per treatment", ", ".join(f"{x:.4g}" for x in ch["sigma"]),
              ", ".join(f"{x:.4g}" for x in fr["sigma"]))
    t.add_row("calibration: predicted value", f"{100 * ch['value']:+.4f}%",
              f"{100 * fr['value']:+.4f}%")
    for r in response_names:
        t.add_row(f"calibration: predicted Δ {r}", _pct(ch["change"][r]), _pct(fr["change"][r]))
        if "dr_lower" in ch:
            t.add_row(f"calibration: dr lower bound Δ {r}", _pct(ch["dr_lower"][r]),
                      _pct(fr["dr_lower"][r]))
    hc, hf = held["chosen"], held["unconstrained"]
    pre = "deployed model" if in_sample else "held-out"
    for key, label in (("predicted_change", f"{pre}: predicted Δ"),
                       ("dr_change", f"{pre}: dr Δ"), ("true_change", f"{pre}: true Δ")):
        if hc.get(key) is not None:
            for r in response_names:
                other = hf.get(key) or {}
                t.add_row(f"{label} {r}", _pct(hc[key][r]),
                          _pct(other[r]) if r in other else "n/a")
    if "true_value" in hc:
        t.add_row(f"{pre}: true value", f"{100 * hc['true_value']:+.4f}%",
                  f"{100 * hf.get('true_value', float('nan')):+.4f}%")
        for g in guards:
            t.add_row(f"{pre}: guardrail {g.text()} held on the truth",
                      "yes" if hc["held"][g.response] else "NO",
                      "yes" if hf.get("held", {}).get(g.response) else "no")
    for k, v in hc["share"].items():
        t.add_row(f"share enabling {k}", f"{v:.3f}", f"{hf['share'][k]:.3f}")
    return t


def policy_eval(
    users: Annotated[Path, typer.Option(help="experiment data (Parquet/CSV): arm, responses, "
                                              "ground truth if simulated")],
    hum_model: Annotated[Path, typer.Option(
        "--model", "--hum-model",
        help="uplift model artifact folder (any model hmum train saves: HUM or a baseline); "
             "--hum-model is the former name, kept as an alias")],
    requests: Annotated[Path | None, typer.Option(help="request table for personal weights")]
    = None,
    value_model: Annotated[Path | None, typer.Option(help="value-weight model artifact")] = None,
    weights: Annotated[str | None, typer.Option(
        metavar="RESPONSE=W,...", help=WEIGHTS_HELP)] = None,
    weights_config: Annotated[Path | None, typer.Option(help=WEIGHTS_CONFIG_HELP)] = None,
    weight_column: Annotated[list[str] | None, typer.Option(
        metavar="RESPONSE=COLUMN,...", help=WEIGHT_COLUMN_HELP)] = None,
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
        metavar="W1,W2,...",
        help="global weights of the fixed-weight strategy, e.g. '0.5,0.5' (default: the "
             "mean predicted weight)")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples of the off-policy CIs")]
    = 500,
    drop_invalid_responses: Annotated[bool, typer.Option(
        help="drop rows whose response is NaN, inf, missing or beyond float32 (default: "
             "error); the number dropped is printed")] = False,
) -> None:
    """The strategy table (paper Tables 3 and 4) with the trade-off plot and a report.

    HMUM's weights: learned (--requests with --value-model), fixed (--weights,
    --weights-config) or per user (--weight-column, columns of --users); at most one
    source (none: equal weights).
    """
    from hmum.data.schema import Schema
    from hmum.models.registry import load_estimator
    from hmum.models.value_weight import load_value_weight_model
    from hmum.workflows import ddm as wf

    if (requests is None) != (value_model is None):
        _fail("--requests and --value-model go together (personal weights need both)")
    if weights is not None or weights_config is not None or weight_column:
        _check_weights_sources(value_model, weights, weights_config, weight_column, requests,
                               need_requests=False)
    if n_boot < 1:
        _fail(f"--n-boot: expected an integer >= 1, got {n_boot}")
    check_out_folder(out, "--out")
    hum = load_estimator(hum_model)
    s = Schema.from_json(schema) if schema is not None else hum.schema
    fw = None
    if fixed_weights is not None:
        try:
            fw = [float(v) for v in fixed_weights.split(",")]
        except ValueError:
            _fail(f"--fixed-weights must be comma-separated numbers, got {fixed_weights!r}")
    with cli_flags(**DDM_FLAGS):
        d, w_true, n_dropped = wf.load_policy_eval_users(
            users, s, hum_estimator=hum, test_split=test_split,
            drop_invalid_responses=drop_invalid_responses)
        if n_dropped:
            console.print(f"--users: dropped {n_dropped:,} row(s) with invalid responses "
                          "(--drop-invalid-responses)")
        vw = load_value_weight_model(value_model) if value_model is not None else None
        req = wf.read_requests(requests, vw) if requests is not None else None
        fixed_w, columns, w_rec = _weights_of(weights, weights_config, weight_column,
                                              s.response_names)
        w_user = _user_weights(wf, users, d, fixed_w, columns)
        t0 = time.perf_counter()
        res = wf.policy_eval(d, hum, out, requests=req, vw_estimator=vw, w_true=w_true,
                             sigma=sigma, fixed_weights=fw, n_boot=n_boot, seed=seed,
                             world=wf.world_of(users), user_weights=w_user,
                             weights_text=_weights_text(w_rec) if w_user is not None else None)
        if w_user is not None:
            import json

            (out / "weights_source.json").write_text(json.dumps(w_rec, indent=2) + "\n")
    rn = s.response_names
    if res["strategy_table"] is not None:
        console.print(strategy_rich_table(res["strategy_table"], rn))
    if res.get("personalization") is not None:
        for line in wf.personalization_lines(res["personalization"], rn)[2:]:
            if line:
                console.print(line)
    if res["ope_table"] is not None:
        console.print(ope_rich_table(res["ope_table"], rn))
    console.print(f"report: {res['report']}" + (f", plot: {res['plot']}" if res["plot"] else "")
                  + f" ({time.perf_counter() - t0:.1f}s)")
