"""The ``hmum`` command (Typer + rich): every command group registered on one app.

Each group lives in its own thin module (parse, call a workflow, print):
``train`` (simulate, train, evaluate, demo), ``ddm`` (train-value-weights, decide,
policy-eval), ``store`` (score, store …), ``serve``, ``bench``, ``models`` and ``explain``.

Help is click's plain layout (``rich_markup_mode=None``): every option name whole,
its help wrapped beside or below it, legible at 80 columns and narrower. The
command modules import nothing heavy (torch, pandas, pyarrow, the models or the
workflows) until a command runs, so ``hmum --help``, ``hmum CMD --help`` and the
errors found before any work answer in a fraction of a second.
"""

from __future__ import annotations

import typer

from hmum.cli import bench, ddm, explain, models, serve, store, train
from hmum.cli.common import HmumGroup, console

#: help text wraps at the terminal's width, at most this many columns
HELP_WIDTH = 100

app = typer.Typer(
    cls=HmumGroup,  # the CLI's one error boundary (hmum.cli.common)
    help="hmum: heterogeneous multi-treatment, multi-response uplift modeling (HMUM).",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"max_content_width": HELP_WIDTH},
    pretty_exceptions_show_locals=False,
)

# short_help: the one line of ``hmum --help``'s command list (click cuts longer ones)
app.command(short_help="Simulate an A/B experiment with ground truth")(train.simulate)
app.command(short_help="Train HUM and write a model artifact")(train.train)
app.command(short_help="Qini / AUUC per treatment and response, a report")(train.evaluate)
app.command(short_help="The whole job on simulated data, with a report")(train.demo)
app.command("train-value-weights",
            short_help="Train the value-weight model on request logs")(ddm.train_value_weights)
app.command("decide", short_help="Per-request weights, scores phi and decisions")(ddm.decide)
app.command("policy-eval",
            short_help="Strategy table and trade-off plot of the policy")(ddm.policy_eval)
app.command(short_help="Score all users into the record and the store")(store.score)
app.add_typer(store.store_app, name="store", short_help="The versioned uplift store")
app.command(short_help="Run the online decision service")(serve.serve)
app.command(name="bench",
            short_help="Every model on every seed of a benchmark dataset")(bench.bench)
app.command(name="models", short_help="List the registered model names")(models.models)
app.command(name="explain",
            short_help="Which features drive the predicted uplift")(explain.explain)


@app.command(short_help="Print the hmum version")
def version() -> None:
    """Print the hmum version."""
    import json

    from hmum._version import __version__

    console.print(json.dumps({"hmum": __version__}))


if __name__ == "__main__":
    app()
