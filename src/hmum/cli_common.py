"""What every command module of the ``hmum`` CLI shares: the console and error exit."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

console = Console()


def fail(msg: str) -> None:
    """Print ``msg`` as an error and exit with status 2 (bad input or usage)."""
    # escaped: messages hold brackets (column lists, 'hmum[ray]') that rich would eat
    console.print(f"[bold red]error:[/] {escape(msg)}")
    raise typer.Exit(code=2)
