"""The installed package, as a user gets it: one import name in site-packages, nothing named
``engine``, ``kernels`` or ``models``, and working from a folder that holds its own
``models/`` and ``engine/`` packages (issue 28: a user's ``models/`` next to a notebook
shadowed ours when we installed three top-level packages).

The wheel is built from a copy of the tree's sources (never the checkout's own build/ or
egg-info, which a developer's earlier ``pip install .`` leaves behind), without build
isolation (no download: setuptools comes with the dev extras), and installed with
``--no-deps`` into a fresh venv that has no pip of its own; that venv sees the test
environment's dependencies (numpy, scipy, ...) through a ``.pth`` line, which adds their
folder without running the editable install's hooks there. The copy carries the leftovers
of a build of the old layout (``build/lib/engine``, a stale egg-info): the build backend
(src/lastlayer_build.py) must keep them out of the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE_LAYOUT = ("engine", "kernels", "models")
SOURCES = ("pyproject.toml", "README.md", "MANIFEST.in", "src", *ENGINE_LAYOUT)


def source_copy(into: Path) -> Path:
    """The files a build reads, copied to ``into``, plus what ``pip install .`` of the old
    layout left in a checkout: build/lib/{engine,kernels,models} and an egg-info listing
    them."""
    into.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, into / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, into / name)
    for old in ENGINE_LAYOUT:
        (into / "build" / "lib" / old).mkdir(parents=True)
        (into / "build" / "lib" / old / "__init__.py").write_text("raise ImportError('stale')\n")
    (into / "lastlayer.egg-info").mkdir()
    (into / "lastlayer.egg-info" / "SOURCES.txt").write_text(
        "".join(f"{old}/__init__.py\n" for old in ENGINE_LAYOUT))
    (into / "lastlayer.egg-info" / "top_level.txt").write_text("\n".join(ENGINE_LAYOUT) + "\n")
    return into


def run(*argv, cwd, env=None):
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, site-packages, script) of a fresh venv with lastlayer's wheel installed."""
    tmp = tmp_path_factory.mktemp("install")
    tree = source_copy(tmp / "tree")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", tmp / "dist", tree, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("lastlayer-*.whl")
    venv.create(tmp / "venv", with_pip=False)
    python = tmp / "venv" / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp).strip())
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q",
        wheel, cwd=tmp)
    deps = sysconfig.get_paths()["purelib"]  # numpy, scipy, ... of the test environment
    (site / "zz_test_dependencies.pth").write_text(deps + "\n")
    return python, site, tmp / "venv" / "bin" / "lastlayer"


def test_site_packages_holds_one_import_package(installed):
    _, site, _ = installed
    names = sorted(p.name for p in site.iterdir() if p.name != "zz_test_dependencies.pth")
    assert [n for n in names if not n.endswith(".dist-info")] == ["lastlayer"], names
    assert [n for n in names if n.endswith(".dist-info")] == ["lastlayer-0.1.0.dist-info"], names
    assert not set(ENGINE_LAYOUT) & set(names)
    top = (site / "lastlayer-0.1.0.dist-info" / "RECORD").read_text().splitlines()
    assert {line.split("/")[0] for line in top if "/" in line} <= {
        "lastlayer", "lastlayer-0.1.0.dist-info", "..", "../.."}, "a second top-level name"


def test_the_installed_package_ignores_a_users_models_and_engine(installed, tmp_path):
    """From a folder whose own models/ and engine/ raise on import (so that importing them
    by mistake shows), lastlayer and its command line work and the user's packages stay
    theirs."""
    python, _, script = installed
    for name in ("models", "engine", "kernels"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s {name}')\n")
    probe = textwrap.dedent("""
        import sys, lastlayer
        from lastlayer.models.papers.pof.method import PoF
        from lastlayer.engine.solvers import LastLayerLaplace
        import lastlayer.models.cli
        assert lastlayer.__version__ == "0.1.0", lastlayer.__version__
        assert not {"models", "engine", "kernels"} & set(sys.modules), sorted(sys.modules)
        assert "site-packages" in lastlayer.__file__, lastlayer.__file__
        try:
            import models
        except ImportError as err:
            print("user:", err)
        print(lastlayer.__version__, len(lastlayer.__all__))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = run(python, "-c", probe, cwd=tmp_path, env=env)
    assert "user: the user's models" in out and out.split()[-2] == "0.1.0"
    assert run(script, "--version", cwd=tmp_path, env=env).strip() == "lastlayer 0.1.0"
    assert "verify" in run(python, "-m", "lastlayer", "--help", cwd=tmp_path, env=env)
