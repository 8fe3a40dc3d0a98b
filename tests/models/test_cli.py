"""The command line: exit codes, --only, --json, --list, and the installed entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lastlayer.models.cli as cli
import lastlayer.models.cli.verify as verify_cmd
from lastlayer.models.ledger import Check, Outcome


def test_verify_selected_rows_pass_and_write_json(tmp_path, capsys):
    out = tmp_path / "ledger.json"
    assert cli.main(["verify", "--only", "G-Dense", "G-Soft", "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "G-Dense" in text and "G-SoftmaxCE" in text and "G-Conv2D" not in text
    assert "2 checks: 2 passed, 0 failed" in text
    data = json.loads(out.read_text())
    assert set(data) == {"result", "timings", "lastlayer"}
    rows = data["result"]["rows"]
    assert [r["id"] for r in rows] == ["G-Dense", "G-SoftmaxCE"]
    assert set(data["timings"]["row_seconds"]) == {"G-Dense", "G-SoftmaxCE"}
    assert set(rows[0]) == {"id", "description", "measured", "expected", "tolerance", "status"}
    assert all(r["status"] == "PASS" and r["measured"] < r["tolerance"] for r in rows)


def test_a_failing_row_makes_verify_exit_1(monkeypatch, capsys):
    bad = Check("G-Broken", "a check that fails", lambda: Outcome(1.0, 0.0, 1e-7, "FAIL"))
    monkeypatch.setattr(verify_cmd, "all_checks", lambda: [bad])
    assert cli.main(["verify"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_a_prefix_that_selects_nothing_is_a_usage_error(capsys):
    assert cli.main(["verify", "--only", "Z9"]) == 2
    err = capsys.readouterr().err
    assert "selects no check; IDs start with C, CAL, E, ETF, G, H, LA, M, NC, P" in err and "C1-" not in err


def test_list_runs_nothing(monkeypatch, capsys):
    def never():
        raise AssertionError("--list must not run checks")

    monkeypatch.setattr(verify_cmd, "all_checks", lambda: [Check("G-X", "listed", never)])
    assert cli.main(["verify", "--list"]) == 0
    assert "G-X" in capsys.readouterr().out


def test_help_and_missing_command():
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


def test_installed_console_script():
    """`lastlayer` is on the PATH of the environment that runs the tests."""
    script = Path(sys.executable).parent / "lastlayer"
    assert script.exists(), "the console script is not installed: pip install -e '.[dev]'"
    result = subprocess.run([str(script), "verify", "--only", "G-Flatten"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "1 checks: 1 passed" in result.stdout
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "verify" in result.stdout
