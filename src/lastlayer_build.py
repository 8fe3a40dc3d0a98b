"""lastlayer's build backend: setuptools' own, each build started from a clean slate.

setuptools copies the packages into ``build/lib`` and puts into the wheel whatever that
folder holds, files of an earlier build included (pypa/setuptools#1347), and it reuses the
file list of an earlier ``*.egg-info``. After ``pip install .`` in a checkout, a later layout
would then ship the old modules beside the new ones: lastlayer 0.1.0 installed ``engine``,
``kernels`` and ``models`` as top-level packages, and ``pip install .`` in the same folder
after the move to ``lastlayer.*`` put all three back into site-packages. So every wheel,
editable install and metadata build first removes ``build/lib``, ``build/bdist.*`` and the
project's ``*.egg-info`` (setuptools' own products, never a user's): what is installed is
exactly the tree. The hooks not wrapped here are setuptools' (``setuptools.build_meta``).
PEP 517 runs every hook in the project's root folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (the hooks not wrapped below)


def _clean() -> None:
    root = Path.cwd()
    build = root / "build"
    for stale in [build / "lib", *build.glob("bdist.*"), *root.glob("*.egg-info"),
                  *(root / "src").glob("*.egg-info")]:
        shutil.rmtree(stale, ignore_errors=True)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _clean()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _clean()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _clean()
    return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    _clean()
    return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)
