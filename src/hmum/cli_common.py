"""What every command module of the ``hmum`` CLI shares: the console and error exit."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()


def fail(msg: str) -> None:
    """Print ``msg`` as an error and exit with status 2 (bad input or usage)."""
    console.print(f"[bold red]error:[/] {msg}")
    raise typer.Exit(code=2)
