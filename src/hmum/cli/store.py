"""``hmum score`` and ``hmum store ...``: the daily scoring job and the uplift store.

Parse, call ``hmum.workflows.store`` or the store, print; store failures become one
error line naming the store.

Registered in ``hmum.cli.app`` with::

    from hmum.cli.store import score, store_app
    app.command()(score)
    app.add_typer(store_app, name="store")
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hmum.cli.common import console
from hmum.cli.common import fail as _fail

DEFAULT_STORE = "runs/uplift.sqlite"
StoreOpt = Annotated[str, typer.Option(
    "--store", help="store URL: redis://127.0.0.1:6379/0, sqlite:///path or a file path")]
NamespaceOpt = Annotated[str, typer.Option(help="store namespace")]


class Engine(StrEnum):
    """Where ``hmum score`` computes the shards."""

    local = "local"
    ray = "ray"


store_app = typer.Typer(help="The versioned uplift store: status, switch, rollback, cleanup, get.",
                        no_args_is_help=True, rich_markup_mode=None)


def _store_failure(store: str, e: BaseException) -> str:
    """One line for an expected store failure; our own errors already name the store."""
    from hmum.exceptions import StoreError
    from hmum.serving.store import redact_url

    return str(e) if isinstance(e, StoreError) else f"store {redact_url(store)}: {e}"


@contextlib.contextmanager
def _open(store: str, namespace: str) -> Iterator:
    """The existing store at ``store`` (never created: "no store at PATH"), closed on
    exit; any store failure inside the block is one error line, exit 2."""
    from hmum.serving.store import open_store, store_errors

    errors = (*store_errors(), ValueError, OSError)
    try:
        st = open_store(store, namespace)
    except errors as e:
        _fail(_store_failure(store, e))
    try:
        yield st
    except errors as e:
        _fail(_store_failure(store, e))
    finally:
        st.close()


def _decision_dict(path: Path | None) -> dict | None:
    """--decision-config: the frozen rule as a dict (its folder's sha256 checked)."""
    if path is None:
        return None
    from hmum.decision.rules import load_rule
    from hmum.exceptions import DecisionConfigError

    try:
        return load_rule(path).to_dict()
    except DecisionConfigError as e:
        _fail(f"--decision-config: {e}")


def score(
    model: Annotated[Path, typer.Option(help="model artifact folder")],
    input: Annotated[Path, typer.Option(help="users: one Parquet file or a folder of them")],
    out: Annotated[Path, typer.Option(help="root of the Parquet record")] = Path("runs/scores"),
    store: StoreOpt = DEFAULT_STORE,
    namespace: NamespaceOpt = "default",
    date: Annotated[str | None, typer.Option(help="scoring date YYYY-MM-DD (default: today, UTC)")
                    ] = None,
    model_version: Annotated[str | None, typer.Option(
        help="model version (default: from the artifact's sha256)")] = None,
    id_column: Annotated[str | None, typer.Option(help="user id column")] = None,
    shard_rows: Annotated[int, typer.Option(help="rows per shard (the resume unit)")] = 200_000,
    batch_size: Annotated[int, typer.Option(help="rows per model forward")] = 65_536,
    threads: Annotated[int | None, typer.Option(
        help="torch threads (with --engine ray: per worker, default 1)")] = None,
    engine: Annotated[Engine, typer.Option(
        help="local: shards one after another in this process; ray: Ray Data actors "
        "(needs: pip install 'hmum[ray]')")] = Engine.local,
    workers: Annotated[int | None, typer.Option(
        help="Ray actors, each with --threads CPUs (default: one per CPU)")] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="Ray cluster to join (default: start a local one for the run)")] = None,
    store_max_rows_per_s: Annotated[float | None, typer.Option(
        help="throttle of the store load, rows/s (default: no limit)")] = None,
    switch: Annotated[bool, typer.Option(help="make the new version current once checked")
                      ] = True,
    force: Annotated[bool, typer.Option(
        help="switch even when the responses or treatments differ from the current "
        "version's (the serving value-weight model's)")] = False,
    cleanup: Annotated[bool, typer.Option(help="delete versions older than the previous")] = True,
    restart: Annotated[bool, typer.Option(help="discard this run's earlier output first")
                       ] = False,
    decision_config: Annotated[Path | None, typer.Option(
        help="freeze this decision config (hmum decide --decision-config-out) into the new "
        "store version: hmum serve decides by it while the version is current")] = None,
) -> None:
    """Score all users (any saved model: HUM or a baseline; every arm) into a Parquet
    record and the uplift store.

    Resumable: run the same command again after an interruption (with either
    engine: both write the same shards, files and store content).
    """
    from pydantic import ValidationError
    from rich.progress import Progress

    from hmum.exceptions import ArtifactError, DataError, ScoringError
    from hmum.serving.scoring import ScoringConfig
    from hmum.serving.store import store_errors
    from hmum.workflows.store import run_score

    try:
        day = dt.date.fromisoformat(date) if date else None
    except ValueError:
        _fail(f"--date: expected YYYY-MM-DD, got {date!r}")
    try:
        cfg = ScoringConfig(shard_rows=shard_rows, batch_size=batch_size, date=day,
                            model_version=model_version, id_column=id_column, switch=switch,
                            force=force, cleanup=cleanup, restart=restart, threads=threads,
                            store_max_rows_per_s=store_max_rows_per_s,
                            decision=_decision_dict(decision_config))
    except ValidationError as e:
        _fail(str(e))
    if workers is not None and workers < 1:
        _fail(f"--workers: expected at least 1, got {workers}")
    if engine is Engine.local and ray_address:
        _fail("--ray-address needs --engine ray")
    try:
        # off a terminal (a pipe, a file) no bar: it would only leave a blank line
        with Progress(console=console, transient=True,
                      disable=not console.is_terminal) as bar:
            task = None

            def progress(stage: str, done: int, total: int) -> None:
                nonlocal task
                if task is None:
                    task = bar.add_task(f"scoring {stage}", total=total)
                bar.update(task, completed=done)

            rep = run_score(model, input, out, store, cfg, engine=engine.value,
                            namespace=namespace, workers=workers, address=ray_address,
                            progress=progress)
    except store_errors() as e:  # Redis down, a file that is not a store, ...
        _fail(_store_failure(store, e))
    except (DataError, ScoringError, ArtifactError, FileNotFoundError, ImportError,
            ValueError) as e:
        _fail(str(e))
    console.print(
        f"scored {rep.rows:,} users in {rep.n_shards} shard(s) ({rep.shards_scored} scored, "
        f"{rep.shards_loaded} loaded now) in {rep.seconds:.1f}s ({rep.users_per_s:,.0f} users/s)")
    if rep.engine == "ray" and rep.workers:
        console.print("ray workers: " + ", ".join(
            f"pid {w['pid']}: {w['shards']} shard(s), peak RSS {w['peak_rss_mib']:,.0f} MiB"
            for w in rep.workers))
    console.print(f"record: {rep.partition}")
    console.print(f"store version {rep.store_version}: current={rep.current} "
                  f"previous={rep.previous}" + (f"; cleaned {rep.cleaned}" if rep.cleaned else ""))


@store_app.command("status")
def store_status(
    store: StoreOpt = DEFAULT_STORE,
    namespace: NamespaceOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Versions of the namespace, with the current and previous pointers."""
    with _open(store, namespace) as st:
        s = st.status()
    if as_json:
        console.print_json(json.dumps(s))
        return
    t = Table(title=f"uplift store ({s['backend']}) namespace {s['namespace']!r}")
    t.add_column("version", no_wrap=True)
    t.add_column("pointer", no_wrap=True)
    t.add_column("status", no_wrap=True)
    t.add_column("users", justify="right", no_wrap=True)
    t.add_column("K x R", no_wrap=True)
    t.add_column("members", justify="right", no_wrap=True)  # M: the bound's spread is held
    t.add_column("created (UTC)")
    for v in s["versions"]:
        ptr = ("current" if v["version"] == s["current"] else
               "previous" if v["version"] == s["previous"] else "")
        t.add_row(v["version"], ptr, v["status"], f"{v['rows']:,}" if v["rows"] else "-",
                  f"{v['K']} x {v['R']}", str(v.get("members") or "-"),
                  v["created"][:19].replace("T", " "))
    console.print(t)


@store_app.command("switch")
def store_switch(
    version: Annotated[str, typer.Argument(help="a ready version")],
    store: StoreOpt = DEFAULT_STORE,
    namespace: NamespaceOpt = "default",
) -> None:
    """Make VERSION current (atomic); the old current becomes previous."""
    with _open(store, namespace) as st:
        cur, prev = st.switch(version)
    console.print(f"current={cur} previous={prev}")


@store_app.command("rollback")
def store_rollback(
    store: StoreOpt = DEFAULT_STORE,
    namespace: NamespaceOpt = "default",
) -> None:
    """Make the previous version current again (one step)."""
    with _open(store, namespace) as st:
        cur, prev = st.rollback()
    console.print(f"current={cur} previous={prev}")


@store_app.command("cleanup")
def store_cleanup(
    store: StoreOpt = DEFAULT_STORE,
    namespace: NamespaceOpt = "default",
    include_loading: Annotated[bool, typer.Option(
        help="also delete unfinished (loading) versions; only when no job is running")] = False,
) -> None:
    """Delete every version that is neither current nor previous."""
    with _open(store, namespace) as st:
        gone = st.cleanup(include_loading=include_loading)
    console.print(f"deleted {len(gone)} version(s): {gone}")


@store_app.command("get")
def store_get(
    user_ids: Annotated[list[str], typer.Argument(help="user ids")],
    store: StoreOpt = DEFAULT_STORE,
    namespace: NamespaceOpt = "default",
    version: Annotated[str | None, typer.Option(help="version (default: current)")] = None,
    timeout: Annotated[float, typer.Option(help="read timeout, seconds")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Relative uplifts delta (K x R) of the given users.

    On a version of integer ids, each id must be written in plain decimal
    ("7"; not "007", "+7" or " 7"): ids are matched exactly, never converted.
    """
    from hmum.exceptions import DataError
    from hmum.workflows.store import read_deltas

    with _open(store, namespace) as st:
        try:
            res = read_deltas(st, user_ids, version=version, timeout=timeout)
        except DataError as e:  # ids or version as typed: the message names them
            _fail(str(e))
    rows, treatments, responses = res["users"], res["treatments"], res["responses"]
    if as_json:
        console.print_json(json.dumps({"version": res["version"], "users": rows}))
        return
    t = Table(title=f"delta (relative uplift) from version {res['version']}")
    t.add_column("user")
    cols = [(tr, r) for tr in treatments for r in responses]
    for tr, r in cols:
        t.add_column(f"{tr} / {r}", justify="right")
    for row in rows:
        vals = [f"{100 * row['delta'][tr][r]:+.3f}%" if row["found"] else "not found"
                for tr, r in cols]
        t.add_row(str(row["user_id"]), *vals)
    console.print(t)
