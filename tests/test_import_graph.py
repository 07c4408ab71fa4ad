"""The import graph of tipo: no cycles (counting imports inside functions too) and no module that
imports another module's private names. Read from the source with ``ast``; nothing is imported."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tipo", "eval")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = modules()


def _target(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports() -> dict[str, list[tuple[str, str]]]:
    """module -> (imported module, imported name) for every import of our packages, at any depth
    (``if TYPE_CHECKING:`` blocks left out: they never run)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for child in node.body for n in ast.walk(child)}
        found = []
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom):
                target = _target(module, path, node)
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub, "") if sub in MODULES else (target, alias.name))
            elif isinstance(node, ast.Import):
                found.extend((alias.name, "") for alias in node.names)
        out[module] = [(t, n) for t, n in found if t in MODULES and t != module]
    return out


def test_no_module_imports_private_names_of_another():
    bad = [f"{m} imports {name} from {t}" for m, found in imports().items() for t, name in found
           if name.startswith("_") and not name.startswith("__")]
    assert bad == []


def test_the_import_graph_has_no_cycles():
    graph = {m: {t for t, _ in found} for m, found in imports().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == []


def test_the_graph_walk_sees_imports():
    """The checks above can fail: the walk finds known edges, inside functions too."""
    found = imports()
    assert ("tipo.options", "by_name") in found["tipo.request"]  # module level
    assert any(t == "tipo.planner" for t, _ in found["tipo.cli"])  # inside a function
