"""``python -m hmum``: the command line."""

from hmum.cli.app import app

app(prog_name="hmum")
