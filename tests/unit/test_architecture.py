"""The house's design, checked: imports run downhill, no circle, no two modules share a name."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "callflow"

# The pure rooms: they know nothing of Asterisk, databases, HTTP or the daemon around them.
PURE = ("callflow.flow", "callflow.schedule", "callflow.drills", "callflow.telephony")
ADAPTERS = (
    "callflow.agi",
    "callflow.ari",
    "callflow.ami",
    "callflow.api",
    "callflow.store",
    "callflow.metrics",
    "callflow.app",
    "callflow.cli",
)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The callflow modules ``name`` imports, wherever in the file (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in MODULES else source)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _within(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def test_no_import_circle() -> None:
    # Depth-first search for a back edge; report the circle it closes.
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                circles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert circles == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, PURE)))
def test_pure_rooms_import_no_adapter(module: str) -> None:
    assert sorted(d for d in GRAPH[module] if _within(d, ADAPTERS)) == []


def test_no_two_modules_share_a_name() -> None:
    names = Counter(p.stem for p in MODULES.values() if p.stem != "__init__")
    assert sorted(n for n, count in names.items() if count > 1) == []


def test_the_readme_layout_names_every_room() -> None:
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert sorted(r for r in rooms if f"{r}/" not in layout) == []
