"""The two README commands, CI and the repository hygiene that DEVELOPERS promise."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must open with a bash block of two commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_install_and_run_then_install_and_test():
    text = (ROOT / "README.md").read_text()
    assert text.index("```bash") < 40, "the commands must come first"
    run, test = readme_commands()[:2]
    assert "pip install" in run and "lastlayer" in run.split("&&")[-1]
    assert "pip install" in test and "[dev]" in test and "pytest" in test


def test_ci_runs_both_readme_lines_in_order_and_ends_with_the_test_command():
    """Line 1 then line 2 in one folder is the order that once broke the CLI (a package
    shadowed by line 1's leftovers); the installed script is run from outside the
    repository in between, and the test command is the last line (its summary ends CI)."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    run, test = readme_commands()[:2]
    assert run in ci and ci[-1] == test
    between = ci[ci.index(run) + 1:-1]
    assert any(line.startswith("(cd / &&") and "lastlayer" in line for line in between)


def test_generated_artefacts_are_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    for pattern in ("*.h5", "*.png", "__pycache__/", ".venv/", ".benchmarks/", "runs/"):
        assert pattern in ignored


def test_package_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == "lastlayer" and project["requires-python"] == ">=3.11"
    assert project["scripts"]["lastlayer"] == "lastlayer.models.cli:main"
    deps = " ".join(project["dependencies"])
    for dep in ("numpy", "scipy", "numba", "h5py", "scikit-learn", "rich", "matplotlib",
                "dask[distributed]"):  # reproduce / compare run their tasks on Dask
        assert dep in deps
    extras = project["optional-dependencies"]
    assert any("cupy" in d for d in extras["gpu"]) and any("numba-cuda" in d for d in extras["gpu"])
    for dep in ("pytest", "pytest-benchmark", "hypothesis", "numba-cuda"):
        assert any(d.startswith(dep) for d in extras["dev"])


def source_packages(root: Path = ROOT) -> list[str]:
    """The import names of every folder of engine/, kernels/ and models/ that holds Python."""
    names = []
    for top in ("engine", "kernels", "models"):
        for folder in [root / top, *(p for p in (root / top).rglob("*") if p.is_dir())]:
            if folder.name != "__pycache__" and any(folder.glob("*.py")):
                assert (folder / "__init__.py").exists(), f"{folder.relative_to(root)} has no __init__.py"
                names.append("lastlayer." + ".".join(folder.relative_to(root).parts))
    return sorted(names)


def test_every_source_folder_is_a_package_that_an_install_includes():
    """The packages are listed in pyproject.toml (one import name, lastlayer, mapped onto the
    repository's top-level folders): a folder left off the list, or without __init__.py,
    would be missing from `pip install .` while an editable install still finds it."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, present = set(setuptools["packages"]), {"lastlayer", *source_packages()}
    assert listed == present, ("pyproject.toml's [tool.setuptools] packages: add "
                               f"{sorted(present - listed)}, remove {sorted(listed - present)}")
    assert setuptools["package-dir"] == {"lastlayer": "src/lastlayer", "lastlayer.engine": "engine",
                                         "lastlayer.kernels": "kernels", "lastlayer.models": "models"}
    # src/ holds the top package and the build backend (not installed: it is no package)
    assert sorted(p.name for p in (ROOT / "src").iterdir() if p.name != "__pycache__") == [
        "lastlayer", "lastlayer_build.py"]


def test_the_package_reader_names_a_folder_without_init(tmp_path):
    """source_packages can fail: a folder of Python without __init__.py is named."""
    for top in ("engine", "kernels", "models"):
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "models" / "cli").mkdir()
    (tmp_path / "models" / "cli" / "x.py").write_text("")
    with pytest.raises(AssertionError, match="cli has no __init__.py"):
        source_packages(tmp_path)
    (tmp_path / "models" / "cli" / "__init__.py").write_text("")
    assert source_packages(tmp_path) == ["lastlayer.engine", "lastlayer.kernels", "lastlayer.models",
                                         "lastlayer.models.cli"]


def test_no_file_in_engine_is_over_500_lines():
    """Issue 28: engine/solvers grew to one 770-line module; split by concern instead."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "engine").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_no_file_in_models_is_over_400_lines():
    """docs/design.md: files that learners read stay short; split a command or a paper's
    module before it grows past this (models/cli/__init__.py was 524 lines)."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "models").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
