"""Structure of the code base (read from the source with `ast`, nothing imported) and of the test suite.

Why: the library must stay free of the app layer (argparse lives in svl/cli/ only) and free of import
cycles, which make import order matter and hide layering mistakes. Imports inside functions count too:
a lazy import is still a dependency, and it turns into a cycle as soon as someone hoists it.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the import graph
@dataclass(frozen=True, order=True)
class Site:
    """Where an import statement is: file (relative to the repo), line, and the line's code."""

    file: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code}"


@dataclass(frozen=True)
class Edge:
    """One import statement: module `source` imports module `target` at `where`."""

    source: str
    target: str
    where: Site


def module_name(path: Path, root: Path = REPO) -> str:
    """svl/a/b.py -> svl.a.b; svl/a/__init__.py -> svl.a (a package is the node of its __init__)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def svl_modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of the svl package under `root`, by dotted name."""
    files = sorted(p for p in (root / "svl").rglob("*.py") if "__pycache__" not in p.parts)
    return {module_name(p, root): p for p in files}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name imports: itself if it is a module, else its longest module prefix."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import (or an importlib.import_module("...") call) brings in; [] for other nodes.

    `from a.b import c` yields "a.b.c": the submodule if c is one (_resolve falls back to a.b if not).
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: from the package of `module`, up level - 1 packages
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        return [base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if fname in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [node.args[0].value]
    return []


def _imports(path: Path, module: str, root: Path) -> list[tuple[str, Site]]:
    """(imported dotted name, site) for every import anywhere in the file."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        for name in imported_names(node, module, path.name == "__init__.py"):
            site = Site(str(path.relative_to(root)), node.lineno, lines[node.lineno - 1].strip())
            out.append((name, site))
    return out


def import_edges(modules: dict[str, Path], root: Path = REPO) -> list[Edge]:
    """Every svl -> svl import, from every statement anywhere in each file (functions, try, if)."""
    edges = []
    for source, path in modules.items():
        for name, where in _imports(path, source, root):
            if name == "svl" or name.startswith("svl."):
                target = _resolve(name, modules)
                if target is not None and target != source:
                    edges.append(Edge(source, target, where))
    return edges


def import_graph(edges: list[Edge], modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        graph[e.source].add(e.target)
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on deep graphs); each component sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        work.append((node, iter(sorted(graph.get(node, ())))))

    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = []
        visit(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    visit(child)
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:  # all children done: close the node
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def shortest_path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """The shortest import chain start -> ... -> goal (a loop when goal == start), or None."""
    prev: dict[str, str] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child == goal:
                path = [goal, node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return path[::-1]
            if child not in seen:
                seen.add(child)
                prev[child] = node
                queue.append(child)
    return None


def describe_cycles(edges: list[Edge], modules: dict[str, Path], root: Path = REPO) -> list[str]:
    """One paragraph per import cycle: its files, one shortest loop, and every import inside it."""
    graph = import_graph(edges, modules)
    out = []
    for component in sorted(strongly_connected_components(graph)):
        if len(component) < 2:
            continue
        members = set(component)
        files = ", ".join(str(modules[m].relative_to(root)) for m in component)
        loop = shortest_path(graph, component[0], component[0]) or component
        inner = [
            str(w) for w in sorted({e.where for e in edges if e.source in members and e.target in members})
        ]
        out.append(
            f"cycle of {len(component)} modules: {files}\n"
            f"  e.g. {' -> '.join(loop)}\n"
            "  imports inside the cycle (remove or invert one per loop):\n    " + "\n    ".join(inner)
        )
    return out


def argparse_imports(modules: dict[str, Path], root: Path = REPO) -> list[str]:
    """Every import of argparse outside the app layer svl/cli/, as "file:line: code"."""
    app = root / "svl" / "cli"
    return [
        str(where)
        for module, path in modules.items()
        if not path.is_relative_to(app)
        for name, where in _imports(path, module, root)
        if name == "argparse" or name.startswith("argparse.")
    ]


def layering_violations(modules: dict[str, Path], edges: list[Edge], lower: str, upper: str) -> list[str]:
    """Import chains from package `lower` (or its modules) to package `upper`, one per lower module."""
    graph = import_graph(edges, modules)
    sources = sorted(m for m in modules if m == lower or m.startswith(lower + "."))
    targets = sorted(m for m in modules if m == upper or m.startswith(upper + "."))
    chains = []
    for source in sources:
        paths = [p for t in targets if (p := shortest_path(graph, source, t)) is not None]
        if paths:
            path = min(paths, key=len)
            first = next(e.where for e in edges if e.source == path[0] and e.target == path[1])
            chains.append(f"{' -> '.join(path)}   (first step {first})")
    return chains


# ----------------------------------------------------------------------------- the rules
def test_library_does_not_import_argparse() -> None:
    """argparse belongs to the app layer (svl/cli/): the library takes typed arguments."""
    offenders = argparse_imports(svl_modules())
    assert not offenders, (
        "argparse imported outside the app layer svl/cli/ (the library takes typed arguments; "
        "parse in a svl/cli/ command module):\n  " + "\n  ".join(offenders)
    )


def test_no_import_cycles_among_svl_modules() -> None:
    """A package __init__ importing a submodule that imports the package back is a cycle too."""
    modules = svl_modules()
    edges = import_edges(modules)
    assert len(modules) > 30 and len(edges) > 50, (
        f"{len(modules)} modules, {len(edges)} imports: scanner broken"
    )
    cycles = describe_cycles(edges, modules)
    assert not cycles, (
        f"{len(cycles)} import cycle(s) among svl modules (imports inside functions count; a submodule "
        "must import the defining submodule, not its package's __init__ when that imports it back):\n"
        + "\n".join(cycles)
    )


# The floors of docs/DESIGN.md, from the ground up. A module may import its own floor and the floors
# below, never a floor above (imports inside functions count). Every svl module must have a floor:
# the longest prefix in this table names it.
FLOORS: list[tuple[str, ...]] = [
    ("svl._version", "svl.conventions", "svl.registry", "svl.utils"),
    ("svl.config", "svl.checkpoint", "svl.vocab", "svl.boxes", "svl.spiking", "svl.sparse", "svl.plots"),
    ("svl.data",),
    ("svl.models",),
    ("svl.teachers",),
    ("svl.train", "svl.eval", "svl.energy"),
    ("svl.infer",),
    ("svl.tasks",),
    ("svl.cli", "svl.__main__", "svl"),
]


def floor_of(module: str, floors: list[tuple[str, ...]] = FLOORS) -> int | None:
    """The floor of a module: the entry that is its longest dotted prefix (None: not in the table)."""
    best: tuple[int, int] | None = None  # (prefix length, floor)
    for level, names in enumerate(floors):
        for name in names:
            if module == name or module.startswith(name + "."):
                if best is None or len(name) > best[0]:
                    best = (len(name), level)
    return None if best is None else best[1]


def upward_imports(edges: list[Edge], floors: list[tuple[str, ...]] = FLOORS) -> list[str]:
    """Every import whose target sits on a higher floor than its source, as "site (floor a -> b)"."""
    out = []
    for e in edges:
        a, b = floor_of(e.source, floors), floor_of(e.target, floors)
        if a is not None and b is not None and b > a:
            out.append(f"{e.where}   ({e.source} on floor {a} imports {e.target} on floor {b})")
    return sorted(out)


def test_every_module_has_a_floor() -> None:
    missing = [m for m in svl_modules() if floor_of(m) is None]
    assert not missing, (
        "svl modules missing from FLOORS (add them to the table and to docs/DESIGN.md): " + ", ".join(missing)
    )


def test_nothing_imports_upward() -> None:
    """docs/DESIGN.md's floors: the library below the tasks, the tasks below the CLI, and each floor
    free of the ones above it, lazy imports included."""
    modules = svl_modules()
    bad = upward_imports(import_edges(modules))
    assert not bad, f"{len(bad)} import(s) point up the floors of docs/DESIGN.md:\n  " + "\n  ".join(bad)


def test_tasks_import_no_other_task_but_their_base_recipe() -> None:
    """A task file is a recipe: it may import svl/tasks/base.py and the one recipe it extends."""
    allowed = {
        "svl.tasks.align": {"svl.tasks.pretrain"},
        "svl.tasks.events": {"svl.tasks.finetune"},
        "svl.tasks.distill": {"svl.tasks.finetune"},
        "svl.tasks.segment": {"svl.tasks.dense"},
        "svl.tasks.detect": {"svl.tasks.dense"},
    }
    modules = svl_modules()
    bad = [
        str(e.where)
        for e in import_edges(modules)
        if e.source.startswith("svl.tasks.") and e.target.startswith("svl.tasks.")
        and e.target != "svl.tasks.base" and e.target not in allowed.get(e.source, set())
    ]  # fmt: skip
    assert not bad, "task files importing other task files:\n  " + "\n  ".join(bad)


# ----------------------------------------------------------------------------- the checker itself
def _write_tree(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return svl_modules(root)


FAKE_SVL = {
    "svl/__init__.py": "",
    "svl/a/__init__.py": "from svl.a.impl import Thing\nfrom . import other\n",
    "svl/a/impl.py": "def f():\n    from svl.a import helper  # lazy, still an edge\n    import argparse\n",
    "svl/a/other.py": "import svl.b.leaf as leaf\nfrom argparse import Namespace\n",
    "svl/b/__init__.py": "",
    "svl/b/leaf.py": "from ..a import other\nimport importlib\nimportlib.import_module('svl.b')\n",
    "svl/c.py": "from svl.b import leaf, name_in_init\n",
    "svl/cli/__init__.py": "import argparse\nfrom svl import c\n",
}


def test_checker_resolves_imports_and_finds_cycles_on_a_made_up_package(tmp_path: Path) -> None:
    """The rules above catch what they claim to: checked on a small package written here."""
    modules = _write_tree(tmp_path, FAKE_SVL)
    edges = import_edges(modules, tmp_path)
    assert {(e.source, e.target) for e in edges} == {
        ("svl.a", "svl.a.impl"),  # from svl.a.impl import Thing
        ("svl.a", "svl.a.other"),  # from . import other (a submodule)
        ("svl.a.impl", "svl.a"),  # from svl.a import helper (not a module: the package)
        ("svl.a.other", "svl.b.leaf"),
        ("svl.b.leaf", "svl.a.other"),  # from ..a import other
        ("svl.b.leaf", "svl.b"),  # importlib.import_module('svl.b')
        ("svl.c", "svl.b.leaf"),
        ("svl.c", "svl.b"),
        ("svl.cli", "svl.c"),
    }
    cycles = describe_cycles(edges, modules, tmp_path)
    assert len(cycles) == 2
    first, second = cycles
    assert first.startswith("cycle of 2 modules: svl/a/__init__.py, svl/a/impl.py\n")
    assert "svl.a -> svl.a.impl -> svl.a" in first and "svl/a/impl.py:2: from svl.a import helper" in first
    assert second.startswith("cycle of 2 modules: svl/a/other.py, svl/b/leaf.py\n")
    assert argparse_imports(modules, tmp_path) == [
        "svl/a/impl.py:3: import argparse",
        "svl/a/other.py:2: from argparse import Namespace",
    ]
    chains = layering_violations(modules, edges, "svl.c", "svl.a")
    assert chains == [
        "svl.c -> svl.b.leaf -> svl.a.other   (first step svl/c.py:1: from svl.b import leaf, name_in_init)"
    ]
    assert layering_violations(modules, edges, "svl.a", "svl.c") == []


def test_floor_checker_catches_a_made_up_upward_import(tmp_path: Path) -> None:
    """The floor rule on a made-up package: a lazy import from a low floor to a high one is caught,
    a downward one is not, and the longest prefix decides a module's floor."""
    files = {
        "svl/__init__.py": "",
        "svl/low.py": "import os\n",
        "svl/mid/__init__.py": "from svl import low\n",
        "svl/mid/special.py": "def f():\n    from svl.top import thing  # lazy, still upward\n",
        "svl/top.py": "from svl.mid import special\nthing = 1\n",
    }
    modules = _write_tree(tmp_path, files)
    edges = import_edges(modules, tmp_path)
    floors = [("svl.low",), ("svl.mid",), ("svl.top", "svl")]
    assert floor_of("svl.mid.special", floors) == 1 and floor_of("svl", floors) == 2
    assert floor_of("svl.low", floors) == 0 and floor_of("svl.other", floors) == 2
    bad = upward_imports(edges, floors)
    assert bad == [
        "svl/mid/special.py:2: from svl.top import thing  # lazy, still upward   "
        "(svl.mid.special on floor 1 imports svl.top on floor 2)"
    ]
    assert upward_imports(edges, [("svl.low", "svl.mid", "svl.top", "svl")]) == []


def test_the_real_floor_table_catches_an_upward_import(tmp_path: Path) -> None:
    """The real FLOORS table flags an eval module importing a task (a copy of svl with one bad line)."""
    modules = svl_modules()
    edges = import_edges(modules)
    fake = Edge("svl.eval.segmentation", "svl.tasks.segment", Site("svl/eval/segmentation.py", 1, "import"))
    assert upward_imports([fake]) and not upward_imports([e for e in edges if e != fake])


def test_tarjan_and_shortest_path_on_known_graphs() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"f"}, "g": set()}
    assert sorted(strongly_connected_components(graph)) == [["a", "b", "c"], ["d", "e"], ["f"], ["g"]]
    deep = {str(i): {str(i + 1)} for i in range(5000)} | {"5000": {"0"}}  # no recursion limit
    assert [len(c) for c in strongly_connected_components(deep)] == [5001]
    assert shortest_path(graph, "a", "a") == ["a", "b", "c", "a"]
    assert shortest_path(graph, "a", "e") == ["a", "b", "c", "d", "e"]
    assert shortest_path(graph, "d", "a") is None and shortest_path(graph, "g", "g") is None


# ----------------------------------------------------------------------------- test-suite fixtures
_INNER_TEST = """
import os
from pathlib import Path

from svl.utils import data_root


def test_shared_data_is_svl_data(shared_data):
    want = Path(os.environ["SVL_DATA"]).resolve()
    assert shared_data == want and data_root() == want
    assert (shared_data / "labels" / "marker.txt").read_text() == "copy"
"""


def _run_with_svl_data(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, svl_data: Path):
    """A pytest session of its own, under this suite's conftest, with $SVL_DATA set."""
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(_INNER_TEST)
    monkeypatch.setenv("SVL_DATA", str(svl_data))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def test_shared_data_fixture_uses_svl_data(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """$SVL_DATA set to a folder is the folder every data test reads (here a tmp copy, not the real one)."""
    copy = tmp_path / "data-copy"
    (copy / "labels").mkdir(parents=True)
    (copy / "labels" / "marker.txt").write_text("copy")
    result = _run_with_svl_data(pytester, monkeypatch, copy)
    result.assert_outcomes(passed=1)


def test_shared_data_fixture_refuses_a_wrong_svl_data(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A mistyped $SVL_DATA is an error naming it, not a quiet skip of every data test."""
    result = _run_with_svl_data(pytester, monkeypatch, tmp_path / "no-such-folder")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*SVL_DATA=*no-such-folder* is not an existing directory*"])
