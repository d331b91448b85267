"""``hmum demo``: simulate, train HUM, evaluate, decide with DDM, score into a store
and serve, end to end on embedded defaults (no server to start by hand)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from hmum.data.io import write_frame
from hmum.data.validate import ExperimentData, data_fingerprint
from hmum.exceptions import DataError
from hmum.workflows.ddm import (
    contested_world_section,
    decide,
    hum_deltas,
    policy_eval,
    simulate_user_requests,
    train_value_weights,
    true_user_weights,
    world_label,
)
from hmum.workflows.train import SPLIT, evaluate_models, split_data, train_hum


def run_demo(
    out: str | Path,
    *,
    users: int = 200_000,
    epochs: int = 12,
    effect_scale: float = 1.0,
    seed: int = 0,
    threads: int | None = None,
    ddm: bool = True,
    serve: bool = True,
    console=None,
    model: dict | None = None,
) -> dict:
    """simulate -> train HUM and HUM w/o KL -> evaluate both on the test split ->
    (ddm) value weights -> per-request decisions -> strategy table and plot ->
    (serve) score everyone into SQLite -> decision service -> requests -> report.

    ``model``: HUMConfig fields for both models (kl_weight is the demo's own)."""
    from hmum.data.simulator import SimulatorConfig, simulate
    from hmum.data.validate import load_experiment

    out = Path(out)
    say = console.print if console is not None else print
    t0 = time.perf_counter()
    cfg = SimulatorConfig(n_users=users, seed=seed, effect_scale=effect_scale,
                          n_requests=min(20_000, users))
    sim = simulate(cfg, out / "data")
    say(f"simulated {users:,} users in {time.perf_counter() - t0:.1f}s -> {sim.users_path}")
    data = load_experiment(sim.users_path, sim.schema)
    train, valid, test = split_data(data, seed)
    # recorded in each artifact: `hmum evaluate --test-split` on users.parquet finds `test`
    split_record = {"rule": "stratified", "fractions": list(SPLIT), "seed": seed}
    fingerprint = data_fingerprint(data)
    trainer = {"max_epochs": epochs, "seed": seed, "num_threads": threads}
    models = {}
    for name, kl in (("HUM", 1.0), ("HUM_wo_KL", 0.0)):
        t1 = time.perf_counter()
        say(f"training {name} on {len(train):,} rows (valid {len(valid):,})")
        est, _ = train_hum(train, valid, kl_weight=kl, model=model, trainer=trainer,
                           split=False, progress=console is not None)
        est.split_, est.data_fingerprint_ = split_record, fingerprint
        est.save(out / "models" / name)
        h = est.history_
        say(f"{name}: best epoch {h.best_epoch}, valid loss {h.best_valid_loss:.4f}, "
            f"{time.perf_counter() - t1:.0f}s")
        models[name] = est
    summary = sim.summary
    pre = (
        f"Simulated short-video experiment: {users:,} users, arms {sim.schema.arms}, responses "
        f"{sim.schema.response_names}, effect_scale {effect_scale}, seed {seed}. True "
        "population effects (relative change vs control when applied to everyone): "
        + "; ".join(
            f"{a}: " + ", ".join(f"{r} {100 * v:+.2f}%" for r, v in eff.items())
            for a, eff in summary["true_relative_effect"].items()
        )
        + ". Models trained on the 80 % split (10 % validation), evaluated on the 10 % test split."
    )
    res = evaluate_models(models, test, out / "report", title="hmum demo", preamble=pre)
    res["simulation"] = summary
    if ddm:
        import pyarrow.parquet as pq

        from hmum.workflows.demo import run_ddm_demo_stage

        say("DDM: training the value-weight model and deciding per request")
        stage = run_ddm_demo_stage(
            out / "report", sim, models["HUM"], test, pq.read_table(sim.requests_path),
            seed=seed, threads=threads, console=console,
        )
        with open(res["report"], "a") as f:
            f.write("\n" + stage["markdown"] + "\n")
        res["ddm"] = stage
        if serve:
            res["service"] = run_service_stage(
                out, sim, out / "models" / "HUM", stage["value_weight_model"], stage["onnx"],
                threads=threads, say=say,
            )
            with open(res["report"], "a") as f:
                f.write("\n" + res["service"]["markdown"] + "\n")
    # report.html again: the DDM and service sections were appended to report.md
    from hmum.workflows.reports import write_html_report

    res["html"] = write_html_report(res["report"])
    return res


def run_service_stage(
    out: Path, sim, hum_model: Path, vw_model: Path, vw_onnx: Path | None, *,
    n_requests: int = 300, threads: int | None = None, say=print,
) -> dict:
    """The production loop on one machine: score every user into SQLite, start the
    decision service on a free loopback port, send requests, report latency.

    Returns {"scoring": ScoringReport, "latency_ms": {...}, "decisions": [first few],
    "markdown": report section}.
    """
    import json as _json
    import socket
    import threading
    import urllib.request

    import pyarrow.parquet as pq
    import uvicorn

    from hmum.data.simulator import ITEM_FIELDS
    from hmum.serving.config import ServiceConfig
    from hmum.serving.scoring import run_scoring
    from hmum.serving.service import create_app

    store_url = f"sqlite:///{(out / 'uplift.sqlite').resolve()}"
    t0 = time.perf_counter()
    rep = run_scoring(hum_model, sim.users_path, out / "scores", store_url,
                      {"threads": threads, "restart": True})
    say(f"scored {rep.rows:,} users into {store_url} (version {rep.store_version}) in "
        f"{time.perf_counter() - t0:.1f}s ({rep.rows / max(rep.seconds, 1e-9):,.0f} users/s)")

    cfg = ServiceConfig(value_weight_model=vw_model, value_weight_onnx=vw_onnx,
                        store_url=store_url, store_timeout_ms=50.0)
    app = create_app(cfg)
    with socket.socket() as sock:  # a free loopback port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the service reports ready
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the decision service did not become ready within 30 s")
        req = pq.read_table(sim.requests_path).slice(0, n_requests).to_pylist()
        fields = list(ITEM_FIELDS)
        lat, answers = [], []
        for row in req:
            body = _json.dumps({
                "user_id": row["user_id"],
                "candidates": {f: row[f"cand_{f}"] for f in fields},
                "recent": {f: row[f"recent_{f}"] for f in fields},
            }).encode()
            rq = urllib.request.Request(base + "/v1/decide", data=body,
                                        headers={"Content-Type": "application/json"})
            t1 = time.perf_counter()
            with urllib.request.urlopen(rq, timeout=5) as r:
                answers.append(_json.loads(r.read()))
            lat.append((time.perf_counter() - t1) * 1000)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    lat_a = np.asarray(lat)
    latency = {"p50": float(np.percentile(lat_a, 50)), "p99": float(np.percentile(lat_a, 99)),
               "n": len(lat)}
    enabled = pd.Series([",".join(a["enabled"]) or "none" for a in answers]).value_counts()
    degraded = sum(a["degraded"] for a in answers)
    say(f"decision service on {base}: {len(answers)} requests, HTTP round trip p50 "
        f"{latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms (urllib client, one at a time), "
        f"{degraded} degraded; enabled: { {k: int(v) for k, v in enabled.items()} }")
    md = "\n".join([
        "## Production loop (score -> store -> service)", "",
        f"`hmum score` wrote {rep.rows:,} users into `{store_url}` (store version "
        f"`{rep.store_version}`, {rep.n_shards} shards) in {rep.seconds:.1f}s. The decision "
        f"service (`hmum serve`) answered {len(answers)} logged requests over HTTP on "
        f"loopback: round trip p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms "
        f"(Python urllib client, one request at a time), {degraded} degraded.", "",
        "| enabled treatments | requests |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in enabled.items()], "",
        "First answers:", "", "```json",
        *[_json.dumps(a) for a in answers[:3]], "```",
    ])
    return {"scoring": rep, "latency_ms": latency, "decisions": answers[:10], "markdown": md}


def run_ddm_demo_stage(
    out_dir: str | Path,
    sim_result,
    hum_estimator,
    users_test: ExperimentData,
    requests_table: pa.Table,
    *,
    sigma: float = 0.0,
    seed: int = 0,
    epochs: int = 15,
    threads: int | None = None,
    n_boot: int = 500,
    decision_requests: str = "simulate",
    console=None,
    contested_world: bool = True,
) -> dict:
    """The DDM half of the demo: value weights -> decisions -> strategy table and plot.

    With ``contested_world`` (and a simulation in today's world) the report also
    holds ``contested_world_section``: the other world, on its true uplift.

    1. Train the value-weight model on ``requests_table`` (the requests of test
       users left out), save it to ``out_dir/models/value_weight`` and export
       ``out_dir/models/value_weight.onnx`` (ONNX Runtime parity checked; skipped
       when onnx / onnxruntime are not installed).
    2. Score requests of the test users: ``decision_requests="simulate"`` draws
       one fresh request per test user from the simulation's world (the logged
       requests cover only the first n_requests / requests_per_user users);
       "given" uses the test users' rows of ``requests_table`` (users without a
       request fall back to the mean weight).
    3. Per-request decisions (``decisions.parquet``) and, per user, the strategy
       table on ground truth (true value weights from the simulator), the
       off-policy table from the test users' logged arms and responses, the
       trade-off plot and ``ddm_report.md`` — all in ``out_dir``.

    Returns {"strategy_table", "ope_table", "plot", "report", "markdown" (a
    Markdown section whose image link is relative to ``out_dir``),
    "value_weight_model", "onnx", "decisions", "summary" (JSON-able)}.
    """
    from hmum.data.simulator import SimulatorConfig
    from hmum.models.value_weight import OnnxValueWeights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say: Callable[[str], None] = console.print if console is not None else print
    cfg = SimulatorConfig.model_validate_json(Path(sim_result.config_path).read_text())
    if users_test.user_id is None:
        raise DataError("users_test: no user_id column to join requests to users")
    test_ids = np.asarray(users_test.user_id)

    t0 = time.perf_counter()
    say(f"training the value-weight model on {requests_table.num_rows:,} requests "
        "(test users' requests left out)")
    def epoch_line(rec: dict) -> None:
        say(f"  value-weight epoch {rec['epoch']}: train MSE {rec['train_loss']:.4f}, valid MSE "
            f"{rec['valid_loss']:.4f} ({rec['seconds']:.1f}s)")

    vw = train_value_weights(requests_table, exclude_users=test_ids, epochs=epochs, seed=seed,
                             threads=threads, log=epoch_line if console is not None else None)
    h = vw.history_
    vw_path = vw.save(out / "models" / "value_weight")
    try:  # the serving graph; the stage still runs where onnx is not installed
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401

        onnx_path = vw.export_onnx(out / "models" / "value_weight.onnx")
    except ImportError:
        onnx_path = None
        say("onnx / onnxruntime not installed: no ONNX export")
    say(f"value-weight model: best epoch {h.best_epoch}, valid MSE {h.best_valid_loss:.4f}, "
        f"{time.perf_counter() - t0:.0f}s -> {vw_path}")

    t1 = time.perf_counter()
    if decision_requests == "simulate":
        parts = list(simulate_user_requests(cfg, test_ids))
    elif decision_requests == "given":
        keep = np.isin(requests_table.column("user_id").to_numpy(), test_ids)
        parts = [requests_table.filter(pa.array(keep))]
    else:
        raise ValueError(f"decision_requests must be 'simulate' or 'given', got "
                         f"{decision_requests!r}")
    deltas = hum_deltas(hum_estimator, users_test)
    frames, onnx_diff = [], float("nan")
    session = OnnxValueWeights(onnx_path) if onnx_path is not None else None
    for part in parts:
        if part.num_rows == 0:
            continue
        frames.append(decide(part, users_test, hum_estimator, vw, sigma=sigma,
                             mode="independent", deltas=deltas))
        if session is not None and not np.isfinite(onnx_diff):
            sub = part.slice(0, 256)
            _, w_onnx = session.run(*vw.encode(sub))
            onnx_diff = float(np.abs(w_onnx - vw.predict_weights(sub)).max())
    rn, tn = users_test.schema.response_names, users_test.schema.arms[1:]
    if frames:
        decisions = pd.concat(frames, ignore_index=True)
    else:
        decisions = decide(requests_table.slice(0, 0), users_test, hum_estimator, vw,
                           deltas=deltas)
    dec_path = out / "decisions.parquet"
    write_frame(decisions, dec_path)
    say(f"scored {len(decisions):,} requests of {len(test_ids):,} test users "
        f"({time.perf_counter() - t1:.0f}s); ONNX Runtime vs PyTorch max |Δw| {onnx_diff:.1e}")

    w_req = decisions[[f"w_{r}" for r in rn]].to_numpy()
    w_true = true_user_weights(cfg, test_ids)
    pre = (f"Value-weight model trained on {requests_table.num_rows:,} logged requests "
           f"(best epoch {h.best_epoch}, valid MSE {h.best_valid_loss:.4f}); decisions for "
           f"{len(test_ids):,} test users from "
           + ("one fresh simulated request each" if decision_requests == "simulate"
              else "their logged requests") + ".")
    # policy_eval adds the diagnostic rows: the same decisions on the true uplift
    res = policy_eval(
        users_test, hum_estimator, out, request_w=(decisions["user_id"].to_numpy(), w_req),
        w_true=w_true, sigma=sigma, n_boot=n_boot, seed=seed, world=world_label(cfg),
        title="hmum demo: decisions (DDM)", preamble=pre, report_name="ddm_report.md",
    )
    report = res["report"]
    # the per-user weight against the truth: how personal the predicted weights are
    corr = float(np.corrcoef(res["w_user"][:, 0], w_true[:, 0])[0, 1]) if len(rn) > 1 else 1.0
    summary = {
        "value_weight": {"best_epoch": h.best_epoch, "valid_mse": h.best_valid_loss,
                         "corr_w_true": corr, "onnx_max_abs_diff": onnx_diff},
        "n_requests_scored": len(decisions),
        "request_enable_share": {t: float(decisions[f"enable_{t}"].mean()) for t in tn},
        "strategy_table": (res["strategy_table"].to_dict(orient="records")
                           if res["strategy_table"] is not None else None),
        "ope_table": (res["ope_table"].to_dict(orient="records")
                      if res["ope_table"] is not None else None),
    }
    (out / "ddm_summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    # one level down: the section is meant to sit inside the demo's report.md
    section = res["markdown"].replace("\n## ", "\n### ")
    md = "## Decisions (DDM)\n\n" + pre + (
        f" Predicted per-user weight of {rn[0]} vs the true latent weight: correlation "
        f"{corr:.2f}." if len(rn) > 1 else "") + "\n\n" + section
    if contested_world and not cfg.contested and len(rn) > 1:
        t2 = time.perf_counter()
        other, other_md = contested_world_section(
            cfg, n_users=len(test_ids), epochs=epochs, seed=seed, threads=threads)
        summary["contested_world"] = other
        (out / "ddm_summary.json").write_text(json.dumps(summary, indent=2, default=float)
                                              + "\n")
        md += "\n\n" + other_md
        with report.open("a") as f:
            f.write("\n" + other_md.replace("\n### ", "\n## ").replace("### ", "## ", 1) + "\n")
        say(f"contested world on its true uplift: true w {other['exclusive']['true w']:.3f}, "
            f"fixed w {other['exclusive']['fixed w (mean true w)']:.3f}, value-weight model "
            f"{other['exclusive']['value-weight model w']:.3f} of the oracle "
            f"({time.perf_counter() - t2:.0f}s)")
    return {
        "strategy_table": res["strategy_table"], "ope_table": res["ope_table"],
        "plot": res["plot"], "report": report, "markdown": md, "value_weight_model": vw_path,
        "onnx": onnx_path, "decisions": dec_path, "summary": summary, "policies": res["policies"],
    }
