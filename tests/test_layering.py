"""The layering of docs/design.md, read from the import statements of every source file.

* one import name: engine/, kernels/ and models/ are installed as lastlayer.engine,
  lastlayer.kernels and lastlayer.models, and no file imports a bare ``engine``, ``kernels``
  or ``models`` (in a user's folder those are the user's own packages);
* kernels imports nothing of engine or models; engine nothing of models (nor CuPy or
  Numba-CUDA: only kernels know about CUDA); no import cycle among engine's modules;
* no test under tests/engine or tests/kernels imports models;
* no paper package imports another, and inside one the modules point down:
  method <- protocol <- claims, reproduce (claims and reproduce never import each other).

Imports are resolved to absolute module names, relative ones included, and checked
wherever they appear in a file (inside functions too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT / "models" / "papers"
PAPER_MODULES = ("method", "protocol", "claims", "reproduce")
# which modules of its own paper package each module may import
MAY_IMPORT = {"method": set(), "protocol": {"method"}, "claims": {"method", "protocol"},
              "reproduce": {"method", "protocol"}}


LAYERS = ("engine", "kernels", "models")


def module_name(path: Path, root: Path = ROOT) -> str:
    """The import name of a file: engine/x.py is lastlayer.engine.x (tests/ and bench/ keep
    their own names)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(["lastlayer", *parts] if parts[0] in LAYERS else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from a import b`` gives a and a.b)."""
    is_package = path.name == "__init__.py"
    package = module_name(path) if is_package else module_name(path).rpartition(".")[0]
    return imports_of(path.read_text(), package)


def imports_of(source: str, package: str) -> set[str]:
    """Absolute names of the modules imported by ``source``, a module of ``package``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def top_level(names: set[str]) -> set[str]:
    """The layer (or outside package) of each name: lastlayer.engine.x -> engine."""
    return {n.split(".")[1] if n.startswith("lastlayer.") else n.split(".")[0] for n in names}


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [
    ("kernels", {"engine", "models"}),
    ("engine", {"models", "cupy", "numba_cuda"}),
    ("tests/engine", {"models"}),
    ("tests/kernels", {"models"}),
])
def test_imports_point_down(package, forbidden):
    for path in sources(package):
        bad = top_level(imports(path)) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("folder", ["engine", "kernels", "models", "tests", "bench"])
def test_nothing_imports_a_bare_engine_kernels_or_models(folder):
    for path in sources(folder):
        bare = {n for n in imports(path) if n.split(".")[0] in LAYERS}
        assert not bare, f"{path.relative_to(ROOT)} imports {sorted(bare)}: use lastlayer.*"


def import_graph(folder: str) -> dict[str, set[str]]:
    """Module -> the modules of ``folder`` it imports (anywhere in the file), each import
    resolved to the longest name that is a module or package of the folder."""
    modules = {module_name(p): p for p in sources(folder)}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports(path):
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_engine():
    """Issue 28: laplace.py and laplace_select.py imported each other (inside functions).
    A package's __init__ importing its own modules is no cycle; a module importing its
    package back (``from . import x`` in a sibling) would be one."""
    graph = import_graph("engine")
    for package, imported in graph.items():  # a package importing its own children
        graph[package] = {m for m in imported if not m.startswith(package + ".")}
    assert not cycles(graph), cycles(graph)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_engine_has_no_cuda_specific_code():
    for path in sources("engine"):
        text = path.read_text()
        assert "numba.cuda" not in text and "cuda." not in text, path


def paper_packages() -> list[str]:
    return sorted(p.name for p in PAPERS.iterdir() if p.is_dir() and p.name != "__pycache__")


@pytest.mark.parametrize("paper", paper_packages())
def test_a_paper_package_has_the_four_modules_and_imports_no_other_paper(paper):
    folder = PAPERS / paper
    assert (folder / "__init__.py").exists(), f"models/papers/{paper}/__init__.py is missing " \
        "(without it the package is left out of an installed lastlayer)"
    for module in PAPER_MODULES:
        assert (folder / f"{module}.py").exists(), f"models/papers/{paper}/{module}.py is missing"
    own = f"lastlayer.models.papers.{paper}"
    for path in sorted(folder.rglob("*.py")):
        for name in imports(path):
            if name.startswith("lastlayer.models.papers.") and name != "lastlayer.models.papers":
                assert name == own or name.startswith(own + "."), \
                    f"{path.relative_to(ROOT)} imports {name}: paper packages are independent"
        if path.stem in MAY_IMPORT:
            siblings = {n.removeprefix(own + ".").split(".")[0] for n in imports(path)
                        if n.startswith(own + ".")}
            wrong = (siblings & set(PAPER_MODULES)) - MAY_IMPORT[path.stem]
            assert not wrong, (f"{path.relative_to(ROOT)} imports {sorted(wrong)} of its own "
                               f"package; {path.stem} may import only {sorted(MAY_IMPORT[path.stem])}")


def test_the_import_reader_resolves_relative_imports():
    """The reader itself can fail: relative imports of another paper or of a sibling module,
    also inside a function, resolve to the names the checks above look for."""
    names = imports(PAPERS / "layca" / "claims.py")
    assert "lastlayer.models.papers.layca.protocol" in names and "lastlayer.models.ledger" in names
    probe = "from ..post_training import method\ndef f():\n    from . import reproduce\n"
    assert {"lastlayer.models.papers.post_training", "lastlayer.models.papers.post_training.method",
            "lastlayer.models.papers.layca.reproduce"} <= imports_of(probe, "lastlayer.models.papers.layca")
