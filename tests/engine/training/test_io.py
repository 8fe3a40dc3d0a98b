"""Atomic writes: a file is replaced whole or not at all."""

from __future__ import annotations

import pytest

from lastlayer.engine.training.io import atomic_write, atomic_write_text


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failure_midway_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "intact")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(path) as f:
            f.write("half of the new con")
            raise RuntimeError("disk on fire")
    assert path.read_text() == "intact"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.txt", "x")
