"""The one way tests read what the ``hmum`` command printed.

``flat(res)`` is the output as one line of words: ANSI escape codes removed,
rich's box-drawing characters (table borders) turned into spaces and every run of
whitespace collapsed to one space. An assertion on ``flat(...)`` therefore never
depends on the terminal's width, on where rich or click wrapped a line, or on the
length of a temporary path inside a message.
"""

from __future__ import annotations

import re

#: CSI sequences (colours, cursor moves) and OSC sequences (hyperlinks)
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
#: box drawing (U+2500..U+257F) and block elements (U+2580..U+259F): rich's borders
_BOX = re.compile("[\u2500-\u259f]")


def text_of(res) -> str:
    """The printed text of ``res``: a CliRunner result (``.output``), a
    ``subprocess.CompletedProcess`` (stdout then stderr) or a string."""
    if isinstance(res, str):
        return res
    if hasattr(res, "output"):
        return res.output
    return (res.stdout or "") + (res.stderr or "")


def flat(res) -> str:
    """The output of ``res`` (see ``text_of``) as one line: no ANSI codes, no table
    borders, single spaces."""
    s = _BOX.sub(" ", _ANSI.sub("", text_of(res)))
    return " ".join(s.split())


def assert_one_line_error(res, *parts: str, exit_code: int = 2) -> str:
    """``res`` failed with ``exit_code`` printing one unwrapped line ``error: ...`` (no
    traceback, no boxed panel) that holds every part; returns that line, flattened."""
    code = res.exit_code if hasattr(res, "exit_code") else res.returncode
    out = text_of(res)
    assert code == exit_code, out
    if hasattr(res, "exception"):
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    lines = [ln for ln in _ANSI.sub("", out).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert "Traceback" not in out, out
    line = flat(lines[0])
    for p in parts:
        assert p in line, (p, out)
    return line
