"""What every command module of the ``hmum`` CLI shares: consoles, the error boundary,
output-path checks and option validation.

Output reads well anywhere: on a terminal rich wraps to its width; written to a
pipe or a file (``hmum ... | less``, ``> out.txt``, a test's runner) nothing is
wrapped or squeezed: tables keep their natural width and lines stay whole, so a
grep never depends on the terminal's width or the length of a path.

Imports stay light (no torch, pandas, pyarrow or pydantic models at import time):
``hmum --help`` and the error paths should not pay for the models' stack.

The error boundary (``HmumGroup``, the class of the ``hmum`` app): an expected
failure raised anywhere inside a command (``hmum.exceptions.HmumError``, ``ValueError``
and so ``DataError``, a pydantic ``ValidationError``, a missing or unwritable
file) is printed as one line on stderr, ``error: <message>``, and the exit code
is 2. Anything else is a bug and keeps its traceback. ``HMUM_TRACEBACK=1`` shows
the traceback of expected failures too.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from hmum.exceptions import HmumError, format_validation_error

if TYPE_CHECKING:
    from pydantic import BaseModel

#: the width of output written to a pipe or a file: wide enough for any table, never
#: padded to (tables and text only take the width they need)
UNWRAPPED_WIDTH = 10_000


class OutputConsole(Console):
    """A rich console that wraps only on a terminal.

    On a terminal: rich's width (the terminal's, or ``COLUMNS``). Elsewhere (a pipe,
    a file, a test runner's buffer) rich would assume 80 columns (or a terminal's width
    seen on another stream) and squeeze tables ("HMUM (indep…") and wrap lines; here
    the width is unbounded and text is not soft-wrapped, so each line comes out whole.
    """

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self.is_terminal:
            return dims
        return ConsoleDimensions(UNWRAPPED_WIDTH, dims.height)

    @size.setter
    def size(self, new_size) -> None:  # rich's setter, kept with the property
        Console.size.fset(self, new_size)

    def print(self, *objects, soft_wrap: bool | None = None, **kwargs) -> None:
        if soft_wrap is None and not self.is_terminal:
            soft_wrap = True  # no line breaks inserted into text written to a pipe or file
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)


console = OutputConsole()
#: errors go to stderr, one line, never wrapped (whatever the width or the path length)
err_console = OutputConsole(stderr=True, soft_wrap=True)

#: OS errors that mean "a path the user gave is wrong", not a bug
_PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                PermissionError)


def one_line(msg: str) -> str:
    """``msg`` with every run of whitespace (newlines included) as one space."""
    return re.sub(r"\s+", " ", msg).strip()


def fail(msg: str) -> None:
    """Print ``msg`` as a one-line error on stderr and exit with status 2 (bad input)."""
    # escaped: messages hold brackets (column lists, 'hmum[ray]') that rich would eat
    err_console.print(f"[bold red]error:[/] {escape(one_line(msg))}")
    raise typer.Exit(code=2)


def expected_message(e: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug (keep the traceback)."""
    if isinstance(e, ValidationError):
        return format_validation_error(e)
    if isinstance(e, _PATH_ERRORS):
        # OSError's str() puts "[Errno 2]" first; the file and the reason are what help
        if e.filename is not None and e.strerror:
            return f"{e.filename}: {e.strerror}"
        return str(e)
    if isinstance(e, HmumError | ValueError):
        return str(e) or type(e).__name__
    return None


class HmumGroup(TyperGroup):
    """The ``hmum`` group: every subcommand runs inside the CLI's one error boundary.

    Usage errors found while parsing (``--epochs abc``, an unknown option, a missing
    one) are one line too, ``error: <click's message> (see hmum COMMAND --help)``,
    exit 2, instead of typer's boxed panel.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            err_console.print("Aborted!")
            sys.exit(1)
        except TyperException as e:  # typer's (vendored click's) usage errors
            if not hasattr(e, "format_message"):
                raise
            where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "hmum"
            err_console.print(f"[bold red]error:[/] {escape(one_line(e.format_message()))} "
                              f"(see {escape(where)} --help)")
            sys.exit(getattr(e, "exit_code", 2))
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - sorted into expected / bug just below
            msg = expected_message(e)
            if msg is None or os.environ.get("HMUM_TRACEBACK"):
                raise
            fail(msg)


# --------------------------------------------------------------------------------------
# option values and output paths: checked before any work
# --------------------------------------------------------------------------------------


#: TrainerConfig field -> the flag that sets it (messages name the flag), for every
#: command that trains (train, train-value-weights)
TRAINER_FLAGS = {"max_epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
                 "seed": "--seed", "num_threads": "--threads", "device": "--device",
                 "crossfit": "--crossfit"}


def validated(cls: type[BaseModel], flags: Mapping[str, str], **values) -> BaseModel:
    """``cls(**values)``, failing with the flags' names on invalid values.

    ``flags``: field -> CLI flag (``{"max_epochs": "--epochs"}``); values that are
    None are left to the config's defaults.
    """
    try:
        return cls(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        fail(format_validation_error(e, names=flags))


def _blocking_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a folder, if any."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_out_folder(path: Path, flag: str) -> None:
    """``path`` can be a folder of outputs (reports, data): absent or a folder."""
    if path.exists() and not path.is_dir():
        fail(f"{flag}: expected a folder, got an existing file {path}")
    blocker = _blocking_ancestor(path)
    if blocker is not None:
        fail(f"{flag}: cannot create {path}: {blocker} is a file, not a folder")


def check_out_artifact(path: Path, flag: str, force: bool) -> None:
    """``path`` can receive a model artifact: absent, an empty folder, or an artifact
    folder with ``--force``. A folder holding anything else is never replaced."""
    check_out_folder(path, flag)
    if path.is_dir() and any(path.iterdir()):
        if not (path / "manifest.json").is_file():
            fail(f"{flag}: {path} is a folder that is not an hmum model artifact (no "
                 "manifest.json); refusing to replace it: choose a new or empty folder")
        if not force:
            fail(f"{flag}: a model already exists at {path}; pass --force to replace it")


def check_out_file(path: Path, flag: str, suffixes: tuple[str, ...]) -> None:
    """``path`` can be written as a file with one of ``suffixes``."""
    if path.suffix.lower() not in suffixes:
        fail(f"{flag}: expected a file name ending in {' or '.join(suffixes)}, got {path}")
    if path.is_dir():
        fail(f"{flag}: expected a file, got an existing folder {path}")
    blocker = _blocking_ancestor(path)
    if blocker is not None:
        fail(f"{flag}: cannot create {path}: {blocker} is a file, not a folder")
