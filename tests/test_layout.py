"""The tree reads as the flow (README, Layout): no import cycle among the agent's modules, and
the stage packages depend on each other only downstream, so a reader can take them in order.
Imports inside functions and under TYPE_CHECKING count too: a cycle hidden in a function is
still a cycle a reader has to untangle."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AGENT = REPO / "agent"

# Each stage may import only the stages listed before it (and itself). The shared foundations
# come first; the two programs (cli, fabricctl) come last.
STAGES = (
    ("vocabulary", "errors", "process", "validate", "config", "events", "logs"),
    ("cluster",),
    ("headroom",),
    ("plan",),
    ("informers",),
    ("apply",),
    ("status",),
    ("runtime",),
    ("cli", "fabricctl"),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in AGENT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name) if m in modules and m != name}
    return graph


def _stage(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(STAGES):
        if top in names:
            return index
    raise AssertionError(f"{module}: not in any stage of STAGES; add its package there")


def test_no_import_cycle_among_agent_modules() -> None:
    graph = _graph()
    # A package's __init__ is imported with any of its modules; edges *to* a package count,
    # edges from an __init__ to its own modules do not make a cycle on their own.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_stages_import_only_upstream() -> None:
    wrong = []
    for module, deps in sorted(_graph().items()):
        if module == "agent":
            continue
        for dep in sorted(deps):
            if dep != "agent" and _stage(dep) > _stage(module):
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_tests_imports_from_tests() -> None:
    offenders = []
    for folder in ("agent", "lab", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            for module in _imports(path, _module_name(path)):
                if module == "tests" or module.startswith("tests."):
                    offenders.append(f"{path.relative_to(REPO)} imports {module}")
    assert not offenders, "\n".join(offenders)
