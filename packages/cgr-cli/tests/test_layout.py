"""The architecture, checked from the import statements of every module under ``src/``.

Nothing is imported: each file is parsed with ``ast``. Every import counts, the ones under
``if TYPE_CHECKING:`` and inside functions included — a lazy import is still a dependency a
reader has to follow, and a cycle through one is a cycle in the design.

Rules:
- no import cycle among the modules of any of the four packages;
- the three leaves (cgr_store, cgr_exec, cgr_discovery) never import each other or cgr_cli;
- inside cgr_cli imports go one way, down the layers ``__main__ → _main → commands →
  ops/ui/demo → schedule → run → config → _errors/_redact/_version``;
  ops, ui and demo sit side by side and do not import each other;
- no module imports its own package's ``__init__`` (the public API imports everything);
- every module of cgr_cli other than ``__init__``/``__main__`` is ``_private``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGES_DIR = Path(__file__).resolve().parents[2]
LEAVES = ("cgr_store", "cgr_exec", "cgr_discovery")
FIRST_PARTY = (*LEAVES, "cgr_cli")

# cgr_cli's layers, top (0) to bottom. A module may import its own group or a lower layer.
CLI_LAYERS: dict[str, int] = {
    "cgr_cli.__main__": -1,
    "cgr_cli._main": 0,
    "cgr_cli.commands": 1,
    "cgr_cli.ops": 2,
    "cgr_cli.ui": 2,
    "cgr_cli.demo": 2,
    "cgr_cli.schedule": 3,
    "cgr_cli.run": 4,
    "cgr_cli.config": 5,
    "cgr_cli._errors": 6,
    "cgr_cli._hand_back": 6,
    "cgr_cli._redact": 6,
    "cgr_cli._version": 6,
}


def module_files(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``src`` (a src/ layout root)."""
    found: dict[str, Path] = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_package(name: str, modules: Mapping[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The first-party modules ``name`` imports (``from pkg import mod`` resolved to
    ``pkg.mod`` when ``mod`` is a module, else to ``pkg``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                targets.add(candidate if candidate in modules else module)
    return {t for t in targets if t in modules and t != name}


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> tuple[str, int] | None:
    for prefix, rank in sorted(CLI_LAYERS.items(), key=lambda item: -len(item[0])):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, rank
    return None


def layer_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Imports that go up (or sideways between groups of one layer) in CLI_LAYERS."""
    wrong: list[str] = []
    for source, targets in sorted(graph.items()):
        here = layer_of(source)
        for target in sorted(targets):
            if target == "cgr_cli" or (here is None and not source.startswith("cgr_cli")):
                continue
            there = layer_of(target)
            if here is None or there is None:
                continue
            (group, rank), (target_group, target_rank) = here, there
            if group != target_group and target_rank <= rank:
                wrong.append(f"{source} imports {target} ({group} may not use {target_group})")
    return wrong


def _all_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for src in sorted(PACKAGES_DIR.glob("*/src")):
        modules.update(module_files(src))
    return modules


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _all_modules()
    assert {m for m in modules if "." not in m} >= set(FIRST_PARTY), modules.keys()
    return import_graph(modules)


@pytest.mark.parametrize("package", FIRST_PARTY)
def test_no_import_cycle(graph: dict[str, set[str]], package: str) -> None:
    inside = {
        name: {t for t in targets if t.split(".")[0] == package}
        for name, targets in graph.items()
        if name.split(".")[0] == package
    }
    assert find_cycle(inside) is None


def test_cgr_cli_imports_go_down_the_layers(graph: dict[str, set[str]]) -> None:
    assert layer_violations(graph) == []
    # every cgr_cli module sits in a layer (a new top-level module must be placed)
    unplaced = [m for m in graph if m.startswith("cgr_cli.") and layer_of(m) is None]
    assert unplaced == []


def test_the_leaves_never_import_each_other(graph: dict[str, set[str]]) -> None:
    crossing = [
        f"{source} imports {target}"
        for source, targets in graph.items()
        for target in targets
        if source.split(".")[0] in LEAVES
        and target.split(".")[0] in FIRST_PARTY
        and target.split(".")[0] != source.split(".")[0]
    ]
    assert crossing == []


def test_no_module_imports_its_own_package_root(graph: dict[str, set[str]]) -> None:
    offending = [
        f"{source} imports {source.split('.')[0]}"
        for source, targets in graph.items()
        if "." in source and source.split(".")[0] in targets and not source.endswith("__main__")
    ]
    assert offending == []


def test_every_cgr_cli_module_is_private() -> None:
    src = PACKAGES_DIR / "cgr-cli" / "src" / "cgr_cli"
    public = [str(p.relative_to(src)) for p in src.rglob("*.py") if not p.name.startswith("_")]
    assert public == []


# -- the checker itself can fail ---------------------------------------------------------


def _plant(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(module_files(tmp_path))


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    graph = _plant(
        tmp_path,
        {
            "cgr_cli/__init__.py": "",
            "cgr_cli/schedule/__init__.py": "",
            "cgr_cli/schedule/_a.py": "def f():\n    from cgr_cli.schedule import _b\n",
            "cgr_cli/schedule/_b.py": "from . import _c\n",
            "cgr_cli/schedule/_c.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from cgr_cli.schedule._a import f\n",
        },
    )
    assert find_cycle(graph) == [
        "cgr_cli.schedule._a",
        "cgr_cli.schedule._b",
        "cgr_cli.schedule._c",
        "cgr_cli.schedule._a",
    ]


def test_a_planted_upward_import_is_found(tmp_path: Path) -> None:
    graph = _plant(
        tmp_path,
        {
            "cgr_cli/__init__.py": "",
            "cgr_cli/run/__init__.py": "",
            "cgr_cli/run/_pipeline.py": "from cgr_cli.schedule._plan import plan_pass\n",
            "cgr_cli/schedule/__init__.py": "",
            "cgr_cli/schedule/_plan.py": "from cgr_cli.run import _pipeline\n",
            "cgr_cli/ops/__init__.py": "",
            "cgr_cli/ops/_doctor.py": "import cgr_cli.demo._world\n",
            "cgr_cli/demo/__init__.py": "",
            "cgr_cli/demo/_world.py": "",
        },
    )
    assert layer_violations(graph) == [
        "cgr_cli.ops._doctor imports cgr_cli.demo._world (cgr_cli.ops may not use cgr_cli.demo)",
        "cgr_cli.run._pipeline imports cgr_cli.schedule._plan "
        "(cgr_cli.run may not use cgr_cli.schedule)",
    ]
