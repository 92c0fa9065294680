from __future__ import annotations

import subprocess
import sys

import pytest

import cgr_cli
from cgr_cli import main


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "pull requests" in capsys.readouterr().out


def test_version_names_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"cgr {cgr_cli.__version__}"


def test_module_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("cgr 0.")
