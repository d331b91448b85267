"""The ``hmum`` command (Typer + rich): every command group registered on one app.

Each group lives in its own thin module (parse, call a workflow, print):
``train`` (simulate, train, evaluate, demo), ``ddm`` (train-value-weights, decide,
policy-eval), ``store`` (score, store …), ``serve`` and ``bench``.
"""

from __future__ import annotations

import json

import typer

from hmum.cli import bench, ddm, serve, store, train
from hmum.cli.common import HmumGroup, console

app = typer.Typer(
    cls=HmumGroup,  # the CLI's one error boundary (hmum.cli.common)
    help="hmum: heterogeneous multi-treatment, multi-response uplift modeling (HMUM).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

app.command()(train.simulate)
app.command()(train.train)
app.command()(train.evaluate)
app.command()(train.demo)
app.command("train-value-weights")(ddm.train_value_weights)
app.command("decide")(ddm.decide)
app.command("policy-eval")(ddm.policy_eval)
app.command()(store.score)
app.add_typer(store.store_app, name="store")
app.command()(serve.serve)
app.command(name="bench")(bench.bench)


@app.command()
def version() -> None:
    """Print the hmum version."""
    from hmum._version import __version__

    console.print(json.dumps({"hmum": __version__}))




if __name__ == "__main__":
    app()
