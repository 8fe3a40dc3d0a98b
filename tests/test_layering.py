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
    if parts[0] == "src":  # src/lastlayer: the top package
        return ".".join(parts[1:])
    return ".".join(["lastlayer", *parts] if parts[0] in LAYERS else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from a import b`` gives a and a.b)."""
    is_package = path.name == "__init__.py"
    package = module_name(path) if is_package else module_name(path).rpartition(".")[0]
    return imports_of(path.read_text(), package)


def imports_of(source: str, package: str) -> set[str]:
    """Absolute names of the modules imported by ``source``, a module of ``package``."""
    found = set()
    for module, names in import_statements(source, package):
        found.add(module)
        found |= {f"{module}.{name}" for name in names}
    return found


def top_level(names: set[str]) -> set[str]:
    """The layer (or outside package) of each name: lastlayer.engine.x -> engine; the top
    package and the names it re-exports (lastlayer, lastlayer.Network) -> lastlayer."""
    layers = set()
    for n in names:
        parts = n.split(".")
        layers.add(parts[1] if parts[0] == "lastlayer" and len(parts) > 1 and parts[1] in LAYERS
                   else parts[0])
    return layers


def sources(folder: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / folder).rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [
    ("kernels", {"engine", "models", "lastlayer"}),
    ("engine", {"models", "lastlayer", "cupy", "numba_cuda"}),
    ("models", {"lastlayer"}),  # the top package imports the layers, never the other way
    ("tests/engine", {"models"}),
    ("tests/kernels", {"models"}),
])
def test_imports_point_down(package, forbidden):
    for path in sources(package):
        bad = top_level(imports(path)) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("folder", ["src", "engine", "kernels", "models", "tests", "bench"])
def test_nothing_imports_a_bare_engine_kernels_or_models(folder):
    for path in sources(folder):
        bare = {n for n in imports(path) if n.split(".")[0] in LAYERS}
        assert not bare, f"{path.relative_to(ROOT)} imports {sorted(bare)}: use lastlayer.*"


def import_statements(source: str, package: str) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import statement of ``source``, relative ones
    resolved: ``import a.b`` is ("a.b", []), ``from . import x, y`` in package p is
    ("p", ["x", "y"])."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((module, [alias.name for alias in node.names]))
    return found


def import_graph(folders: tuple[str, ...], root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ``folders`` whose code it runs by importing (anywhere in the
    file): ``from p import m`` with m a module is an edge to p.m alone (p, its parent, is
    already being imported), ``from p import name`` with a name p defines or re-exports is
    an edge to p (its __init__), ``import a.b`` an edge to a.b. Each target is the longest
    prefix of the name that is a module of ``folders``."""
    modules = {module_name(p, root): p for folder in folders for p in sources(folder, root)}

    def known(name: str) -> str | None:
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        return ".".join(parts) or None

    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        targets = set()
        for module, names in import_statements(path.read_text(), package):
            submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            targets |= set(submodules)
            if len(submodules) < len(names) or not names:
                targets.add(known(module))
        graph[name] = targets - {None, name}
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


@pytest.mark.parametrize("folder", ["engine", "kernels", "models"])
def test_no_import_cycle(folder):
    """Issue 28: laplace.py and laplace_select.py imported each other (inside functions).
    Every import counts, at the top of a file or inside a function, and so does a cycle
    through a package's re-exports (a module that imports a name of its own package, whose
    __init__ imports that module back)."""
    graph = import_graph(("src", "engine", "kernels", "models"))
    inside = {m: {t for t in targets if top_level({t}) == {folder}}
              for m, targets in graph.items() if top_level({m}) == {folder}}
    assert not cycles(inside), cycles(inside)


def test_the_graph_reader_sees_cycles_through_a_package(tmp_path):
    """The reader can fail: a lazy import of a name re-exported by the package closes a
    cycle (package -> a -> package); importing a sibling module alone does not."""
    (tmp_path / "engine" / "p").mkdir(parents=True)
    (tmp_path / "engine" / "__init__.py").write_text("")
    (tmp_path / "engine" / "p" / "__init__.py").write_text("from .a import f\nfrom .b import g\n")
    (tmp_path / "engine" / "p" / "a.py").write_text("from . import b\ndef f():\n    return b.g()\n")
    (tmp_path / "engine" / "p" / "b.py").write_text("def g():\n    from . import f\n    return f\n")
    graph = import_graph(("engine",), tmp_path)
    assert graph["lastlayer.engine.p.a"] == {"lastlayer.engine.p.b"}
    assert graph["lastlayer.engine.p.b"] == {"lastlayer.engine.p"}
    assert cycles(graph) == [["lastlayer.engine.p", "lastlayer.engine.p.a", "lastlayer.engine.p.b"]]


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
