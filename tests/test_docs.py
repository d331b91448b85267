"""The README and the docs/ site stay true: short README with the set-up commands, no
broken relative links or anchors, no module path that does not exist, every page in the
site's navigation, and a Python quick start that runs. Needs neither mkdocs nor the
network (`make docs` builds the site itself, with --strict)."""

import ast
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

import hmum

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SRC = ROOT / "src"
PAGES = sorted(DOCS.rglob("*.md"))
MARKDOWN = [README, *PAGES]

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
# [text](target) or [text](target "title"); images too
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (mkdocs' default) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\[[^\]]*\]|\[([^\]]*)\]\([^)]*\)", r"\1\2", heading)
    text = text.replace("`", "").replace("**", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def _python_block(path: Path, section: str) -> str:
    m = re.search(rf"^## {re.escape(section)}\n.*?^```python\n(.*?)^```", path.read_text(),
                  re.S | re.M)
    assert m, f"{path.name}: no ```python block under '## {section}'"
    return m.group(1)


def test_readme_is_short_and_names_both_setup_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    setup = re.search(r"^## Set-up on a fresh machine\n+```bash\n(.*?)```", text, re.S | re.M)
    assert setup, "README: no ```bash block under '## Set-up on a fresh machine'"
    commands = [line.split("#")[0].strip() for line in setup.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's command


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_anchors(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def _defined_names(path: Path) -> dict[str, set[str]]:
    """Top-level names of a module -> the names defined in their bodies (for classes)."""
    out: dict[str, set[str]] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            members = set()
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    members.add(sub.name)
                elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                    members.add(sub.target.id)
                elif isinstance(sub, ast.Assign):
                    members |= {t.id for t in sub.targets if isinstance(t, ast.Name)}
            out[node.name] = members
        elif isinstance(node, ast.Assign):
            out.update({t.id: set() for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = set()
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update({(a.asname or a.name).split(".")[0]: set() for a in node.names})
    return out


def _module_file(parts: list[str]) -> Path | None:
    base = SRC.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _unresolved(dotted: str) -> str | None:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module = _module_file(parts[:i])
        if module is None:
            continue
        rest = parts[i:]
        if not rest:
            return None
        names = _defined_names(module)
        if parts[:i] == ["hmum"]:  # the public API's names are loaded lazily
            names.update({n: set() for n in hmum.__all__})
        if rest[0] not in names:
            return f"{'.'.join(parts[:i])} defines no {rest[0]!r}"
        if len(rest) > 1 and names[rest[0]] and rest[1] not in names[rest[0]]:
            return f"{'.'.join(parts[:i + 1])} has no member {rest[1]!r}"
        return None
    return "no such module"


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_path_named_exists(page):
    """hmum.x.y in the text (code, prose or `::: hmum.x.y` directives) must exist in src/."""
    names = set(re.findall(r"(?<![\w/.-])hmum(?:\.[A-Za-z_]\w*)+", page.read_text()))
    names = {n for n in names if not n.endswith(".md")}  # a link to docs/api/hmum.md
    wrong = {n: why for n in sorted(names) if (why := _unresolved(n))}
    assert not wrong, f"{page.name}: {wrong}"


def test_every_page_is_in_the_site_navigation():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r"^\s*- (?:[^:\n]+: )?(\S+\.md)\s*$", config, re.M))
    pages = {str(p.relative_to(DOCS)) for p in PAGES}
    assert nav == pages


def test_the_public_api_page_lists_every_exported_name():
    page = (DOCS / "api" / "hmum.md").read_text()
    missing = [n for n in hmum.__all__ if n != "__version__" and f"[`{n}`]" not in page]
    assert not missing, f"docs/api/hmum.md lacks {missing}"


def test_quick_start_uses_public_names_and_docs_repeat_it():
    code = _python_block(README, "Quick start in Python")
    assert len(code.splitlines()) <= 12
    tree = ast.parse(code)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports and all(isinstance(n, ast.ImportFrom) and n.module == "hmum" for n in imports)
    names = {a.name for n in imports for a in n.names}
    assert names <= set(hmum.__all__), names - set(hmum.__all__)
    assert code == _python_block(DOCS / "getting-started.md", "Quick start in Python")


@pytest.mark.slow
def test_readme_python_quick_start_runs(tmp_path):
    code = _python_block(README, "Quick start in Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HMUM_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pehe" in done.stdout
    assert (tmp_path / "runs" / "hum" / "manifest.json").is_file()
