"""The house rules that keep greenq readable, checked on the source: no import cycle between greenq's
modules (TYPE_CHECKING and function-level imports count), the producer side never reaches the
worker, pools or gevent, and no module is over the line budget."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "greenq"
MAX_LINES = 450
# What a service that only enqueues imports: none of it may import the worker, pools or gevent.
PRODUCER_SIDE = (
    "greenq.app",
    "greenq.task",
    "greenq.results",
    "greenq.message",
    "greenq.producer",
    "greenq.control",
    "greenq.canvas",
    "greenq.canvas_send",
    "greenq.group_result",
    "greenq.workflow",
    "greenq.schedules",
    "greenq.cron",
    "greenq.config",
    "greenq.config_object",
    "greenq.routing",
    "greenq.exceptions",
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute or relative)."""
    named = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)
    return named


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in _imports(name, path):
            while target and target not in modules:  # ``from greenq.x import f`` names greenq.x
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    return visit(start)


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = [cycle for name in sorted(graph) if (cycle := _cycle_from(name, graph))]
    assert not cycles, "import cycle: " + " -> ".join(cycles[0])


def test_the_producer_side_never_imports_the_worker_pools_or_gevent() -> None:
    modules = _modules()
    for name in PRODUCER_SIDE:
        named = _imports(name, modules[name])
        bad = sorted(
            n for n in named if n.split(".")[0] == "gevent" or n.startswith(("greenq.worker", "greenq.pools"))
        )
        assert not bad, f"{name} imports {bad}"


def test_no_module_over_the_line_budget() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in _modules().items()}
    assert not {name: n for name, n in sizes.items() if n > MAX_LINES}
