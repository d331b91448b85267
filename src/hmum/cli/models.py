"""``hmum models``: the model registry (the names ``hmum bench --models`` and
``hmum.get_model`` accept).

Registered in ``hmum.cli.app``. Listing the registry imports every model family
(torch included), so it has a command of its own instead of living in the help
text of ``bench --models``, which stays fast.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from hmum.cli.common import console


def models(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List every registered model: name, label, model type and the largest K it runs on.

    The names are what hmum bench --models and hmum.get_model(name, schema) take;
    the model type is what a saved artifact records.
    """
    from hmum.workflows.bench import model_catalog

    rows = model_catalog()
    if as_json:
        console.print_json(json.dumps(rows))
        return
    t = Table(title=f"{len(rows)} registered models (hmum bench --models NAME,...)")
    t.add_column("name", no_wrap=True)
    t.add_column("label")
    t.add_column("model type", no_wrap=True)
    t.add_column("max treatments", justify="right")
    t.add_column("family")
    for r in rows:
        k = r["max_treatments"]
        t.add_row(r["name"], r["label"], r["model_type"], "any" if k is None else str(k),
                  "HUM" if r["ours"] else "baseline")
    console.print(t)
