"""The command line: help, version, the demo, and one-line errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

import sparse_lc
from sparse_lc.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sparse-lc {sparse_lc.__version__}"


def test_help_lists_commands_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--config", "--set", "--size", "--rho", "--seed", "--threads"):
        assert option in out
    assert "default: [512, 512]" in out


def test_demo_prints_stage_shares(capsys):
    assert main(["demo", "--set", "model.backbone=tiny", "--size", "48", "64", "--rho", "0", "1"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))]
    assert [line[1:4] for line in lines] == [["100.0%", "0.0%", "0.0%"], ["0.0%", "0.0%", "100.0%"]]
    assert all(float(line[-1]) < 1e-4 for line in lines)  # sparse and dense agree


def test_bad_config_is_one_line_error(capsys, tmp_path):
    assert main(["demo", "--set", "model.backbone=resnet81"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown backbone 'resnet81'" in err and "resnet18" in err
    assert main(["demo", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read config" in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "sparse_lc.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout
