"""One-way imports (DESIGN.md §4), function-level imports included: no cycles, and no
module imports a layer above its own.

The layers, bottom to top. ``hmum.training``'s loop (trainer, DDP primitives)
sits below ``hmum.models`` because every estimator's ``fit`` calls it; its
launcher (``hmum.training.distributed``), which builds estimators, sits above.
``hmum`` itself (the public API) re-exports from every layer and only the
command line is above it.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (SRC / "hmum").rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):  # every level, not just the top
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # `from pkg import sub` depends on the submodule, `from mod import x` on mod
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in files]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            for t in targets:
                # a package's own parents are initialised by any import of it: not a cycle
                if t in files and t != mod and not mod.startswith(t + "."):
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


#: (layer, module prefixes) bottom to top; a module belongs to its longest matching prefix
LAYERS = [
    ("base", ["hmum._lazy", "hmum._version", "hmum.exceptions"]),
    ("decision", ["hmum.decision"]),  # arrays only
    ("metrics", ["hmum.metrics"]),  # arrays only (delta from hmum.decision.core)
    ("data", ["hmum.data"]),
    ("nn", ["hmum.nn"]),
    ("training loop", ["hmum.training"]),
    ("models", ["hmum.models"]),
    ("launcher", ["hmum.training.distributed"]),
    ("serving", ["hmum.serving"]),
    ("workflows", ["hmum.workflows"]),
    ("api", ["hmum"]),
    ("cli", ["hmum.cli", "hmum.__main__"]),
]


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    if rank is None:
        raise AssertionError(f"{module} is in no layer of LAYERS: add it")
    return rank


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """'a (layer) -> b (layer)' for every import of a higher layer."""
    return sorted(f"{a} ({LAYERS[_layer(a)][0]}) -> {b} ({LAYERS[_layer(b)][0]})"
                  for a, targets in graph.items() for b in targets if _layer(b) > _layer(a))


def test_the_layer_check_finds_a_planted_upward_import():
    graph = {"hmum.data.io": {"hmum.models.hum"}, "hmum.models.hum": {"hmum.nn.links"},
             "hmum.training.distributed": {"hmum.models.registry"},
             "hmum.models.base": {"hmum.training.trainer"}}
    assert _upward(graph) == ["hmum.data.io (data) -> hmum.models.hum (models)"]


def test_imports_follow_the_layer_order():
    graph = _graph()
    assert len(graph) > 60 and all(_layer(m) is not None for m in graph)
    assert _upward(graph) == []


def test_the_checker_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = _graph()
    assert "hmum.training.trainer" in graph and graph["hmum.training.trainer"]
    assert _cycles(graph) == []
