"""The package's own import graph has no cycles, and evaluation never reaches up into training.

Imports are read from the source (``ast``), wherever they sit: at module level or inside a function,
since a function-level import only postpones a cycle to the first call. Imports under
``if TYPE_CHECKING:`` never run and are left out. Importing ``a.b.c`` runs ``a/__init__`` and
``a/b/__init__`` first, so it counts as importing those packages too, except the importer's own
enclosing packages, which are already being imported when it runs.

Run as a script to print the graph's cycles: ``python tests/test_imports.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "vqct_tokenizer"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE


def package_modules(root: Path = PACKAGE_DIR, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file of the package (``pkg`` for ``pkg/__init__.py``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that running ``name`` (the file ``path``) can import, directly."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        targets.add(source)
        # "from pkg import sub" imports the submodule pkg.sub
        targets.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules)
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1 + is_package)}
    edges = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # the target and the packages it sits in
            module = ".".join(parts[:i])
            if module in modules and module not in own_packages and module != name:
                edges.add(module)
    return edges


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    modules = package_modules() if modules is None else modules
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete path a -> ... -> a through the component, for the error message."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30 and graph[f"{PACKAGE}.tokenizer"], "the walker found no package modules or imports"
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(one_cycle(graph, c)) for c in found)


def test_evaluation_does_not_import_training():
    graph = import_graph()
    evaluation = [m for m in graph if m.startswith(f"{PACKAGE}.evaluation")]
    assert evaluation
    upward = {m: sorted(t for t in graph[m] if t.startswith(f"{PACKAGE}.training")) for m in evaluation}
    assert not any(upward.values()), f"evaluation imports training: { {m: t for m, t in upward.items() if t} }"


def test_the_walker_sees_function_level_relative_and_package_imports(tmp_path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import f\n",
        "a.py": "def f():\n    from .sub.c import g\n    return g\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\nimport pkg.sub\n",
        "sub/__init__.py": "from . import c\n",
        "sub/c.py": "from .. import b\nfrom ..a import f\n",
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
    modules = package_modules(root, "pkg")
    graph = import_graph(modules)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.sub", "pkg.sub.c"}, "pkg.b": {"pkg.sub"},
                     "pkg.sub": {"pkg.sub.c"}, "pkg.sub.c": {"pkg.a", "pkg.b"}}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"]]
    assert one_cycle(graph, cycles(graph)[0]) == ["pkg.a", "pkg.sub.c", "pkg.a"]  # the shortest


if __name__ == "__main__":
    graph = import_graph()
    found = cycles(graph)
    for component in found:
        print(f"{len(component)} modules: " + " -> ".join(one_cycle(graph, component)))
        print("    all of: " + ", ".join(component))
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, {len(found)} cycles")
