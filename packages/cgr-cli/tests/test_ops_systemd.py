"""``cgr systemd``: the units parse, verify with systemd-analyze where it exists, and say
the settings that matter (sandbox with cgr's paths writable, kill modes, restarts)."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cgr_cli import main
from cgr_cli.config._load import load_config
from cgr_cli.ops._systemd import render_units

CGR = [sys.executable, "-m", "cgr_cli"]


def _config(tmp_path: Path, workspace: str, database: str) -> Path:
    path = tmp_path / "etc" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'repositories = ["acme/widgets"]\n[polling]\ninterval_seconds = 45\n'
        f'[paths]\nworkspace_root = "{workspace}"\ndatabase = "{database}"\n'
    )
    return path


def _parse(text: str) -> configparser.ConfigParser:
    # systemd allows repeated keys (Environment=); keep the last like a plain reader would.
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def _units(tmp_path: Path, *, user: bool, workspace: str, database: str) -> dict[str, str]:
    path = _config(tmp_path, workspace, database)
    config, _ = load_config(path)
    return {u.name: u.text for u in render_units(config, path, user=user, grace=120,
                                                  cgr_argv=CGR)}  # fmt: skip


def test_system_units(tmp_path: Path) -> None:
    units = _units(
        tmp_path, user=False, workspace="/srv/cgr/ws", database="/var/lib/cgr/db.sqlite3"
    )
    assert sorted(units) == ["cgr-daemon.service", "cgr-reaper.service", "cgr-reaper.timer",
                             "cgr-tick.service", "cgr-tick.timer"]  # fmt: skip
    config_path = str((tmp_path / "etc" / "config.toml").absolute())

    tick = _parse(units["cgr-tick.service"])["Service"]
    assert tick["Type"] == "oneshot"
    assert tick["ExecStart"] == f"{sys.executable} -m cgr_cli tick --config {config_path}"
    assert tick["KillMode"] == "process"
    assert "forked" in units["cgr-tick.service"] or "forks" in units["cgr-tick.service"]
    assert tick["ProtectSystem"] == "strict"
    assert tick["NoNewPrivileges"] == "yes"
    assert tick["ReadWritePaths"].split() == ["-/srv/cgr/ws", "-/var/lib/cgr", "-%S/cgr/claude"]
    assert tick["ProtectHome"] == "yes"  # nothing of cgr's under /home: hide it all
    assert tick["User"] == "cgr"

    daemon = _parse(units["cgr-daemon.service"])
    service = daemon["Service"]
    assert service["ExecStart"].endswith(f"daemon --config {config_path} --grace 120")
    assert service["Restart"] == "on-failure"
    # SIGTERM to the daemon alone: its drain hands waiting runs back and gives the others
    # their grace; control-group would SIGTERM every run and agent at once (all cancelled).
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) >= 120
    assert service["PrivateTmp"] == "yes"
    assert service["ReadWritePaths"] == tick["ReadWritePaths"]
    assert daemon["Install"]["WantedBy"] == "multi-user.target"

    timer = _parse(units["cgr-tick.timer"])["Timer"]
    assert timer["OnUnitActiveSec"] == "45"
    assert timer["Unit"] == "cgr-tick.service"
    reaper = _parse(units["cgr-reaper.service"])["Service"]
    assert reaper["ExecStart"].endswith(f"reap --config {config_path}")
    assert _parse(units["cgr-reaper.timer"])["Install"]["WantedBy"] == "timers.target"


def test_user_units_keep_home_read_only_but_cgr_paths_writable(tmp_path: Path) -> None:
    units = _units(tmp_path, user=True, workspace="/home/ann/.local/share/cgr/workspaces",
                   database="/home/ann/.local/share/cgr/cgr.sqlite3")  # fmt: skip
    service = _parse(units["cgr-daemon.service"])
    assert service["Service"]["ProtectHome"] == "read-only"
    assert service["Service"]["ReadWritePaths"].split() == [
        "-/home/ann/.local/share/cgr", "-%h/.claude"]  # fmt: skip
    assert "User" not in service["Service"]
    assert service["Install"]["WantedBy"] == "default.target"


def test_paths_with_spaces_and_percent_are_quoted(tmp_path: Path) -> None:
    from cgr_cli.ops._systemd import _exec

    assert _exec(["/opt/my cgr/bin/cgr", "--config", "/etc/100%/c.toml"]) == (
        '"/opt/my cgr/bin/cgr" --config /etc/100%%/c.toml'
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
@pytest.mark.parametrize("user", [False, True])
def test_systemd_analyze_verify(tmp_path: Path, user: bool) -> None:
    units = _units(tmp_path, user=user, workspace=str(tmp_path / "ws"),
                   database=str(tmp_path / "db" / "cgr.sqlite3"))  # fmt: skip
    directory = tmp_path / "units"
    directory.mkdir()
    for name, text in units.items():
        (directory / name).write_text(text)
    # The user manager needs a runtime directory, even offline; a short path, because
    # other units' socket paths are made from it.
    with tempfile.TemporaryDirectory(prefix="cgr-rt-", dir="/tmp") as runtime:
        done = subprocess.run(
            ["systemd-analyze", "verify", *(["--user"] if user else []),
             *sorted(str(p) for p in directory.iterdir())],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "XDG_RUNTIME_DIR": runtime},
        )  # fmt: skip
    # verify exits 0 even for settings it ignores: anything it says about our units (or
    # any unknown or failed setting) is a problem. Other units of the machine are not ours.
    problems = [line for line in done.stderr.splitlines()
                if "cgr-" in line or str(directory) in line]  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert problems == []


def test_print_and_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, str(tmp_path / "ws"), str(tmp_path / "cgr.sqlite3"))
    assert main(["systemd", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "# --- cgr-daemon.service ---" in printed
    target = tmp_path / "units"
    assert main(["systemd", "--config", str(path), "--user", "--dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert "systemctl --user enable --now cgr-tick.timer cgr-reaper.timer" in out
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["cgr-daemon.service", "cgr-reaper.service", "cgr-reaper.timer", "cgr-tick.service",
         "cgr-tick.timer"])  # fmt: skip
    assert (target / "cgr-tick.service").stat().st_mode & 0o777 == 0o644


def test_install_into_an_unwritable_place_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, str(tmp_path / "ws"), str(tmp_path / "cgr.sqlite3"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["systemd", "--config", str(path), "--dir", str(blocker / "units")]) == 1
    assert "cannot write unit files" in capsys.readouterr().err


def test_every_exec_start_is_a_command_cgr_accepts(tmp_path: Path) -> None:
    """The units name real `cgr` subcommands and options (tick, reap, daemon --grace)."""
    import shlex

    from cgr_cli._main import _parser

    units = _units(tmp_path, user=False, workspace="/srv/ws", database="/srv/db/c.sqlite3")
    seen = []
    for name in ("cgr-tick.service", "cgr-reaper.service", "cgr-daemon.service"):
        argv = shlex.split(_parse(units[name])["Service"]["ExecStart"])
        assert argv[:3] == CGR
        args = _parser().parse_args(argv[3:])
        assert Path(args.config).is_absolute()
        seen.append(args.command)
    assert seen == ["tick", "reap", "daemon"]


def test_json_logs_for_the_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, str(tmp_path / "ws"), str(tmp_path / "cgr.sqlite3"))
    assert main(["systemd", "--config", str(path), "--log-format", "json"]) == 0
    out = capsys.readouterr().out
    assert out.count("Environment=CGR_LOG_FORMAT=json") == 3
    assert "CGR_LOG_FORMAT=text" not in out


# systemd-analyze comes with Debian's `systemd` package, which .ci/run installs when it is
# missing; the test skips only where the binary truly is not there.
@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_the_daemon_unit_rates_ok_in_systemd_analyze_security(tmp_path: Path) -> None:
    units = _units(tmp_path, user=False, workspace="/var/lib/cgr/workspaces",
                   database="/var/lib/cgr/cgr.sqlite3")  # fmt: skip
    scores = {}
    for name in ("cgr-daemon.service", "cgr-tick.service", "cgr-reaper.service"):
        unit = tmp_path / name
        unit.write_text(units[name])
        done = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", str(unit)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
        assert found, done.stdout + done.stderr
        scores[name] = float(found.group(1))
    assert scores["cgr-daemon.service"] <= 4.0, scores
    assert max(scores.values()) <= 4.0, scores


def test_the_daemon_is_type_notify_with_a_watchdog(tmp_path: Path) -> None:
    units = _units(tmp_path, user=False, workspace="/srv/ws", database="/srv/db/c.sqlite3")
    service = _parse(units["cgr-daemon.service"])["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["CapabilityBoundingSet"] == ""
    assert "MemoryDenyWriteExecute" not in service  # Node's JIT needs it
    user = _parse(_units(tmp_path / "u", user=True, workspace="/home/a/ws",
                         database="/home/a/db")["cgr-daemon.service"])["Service"]  # fmt: skip
    assert user["Type"] == "notify"
    assert "CapabilityBoundingSet" not in user  # system services only


def test_the_service_account_comes_from_sysusers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, str(tmp_path / "ws"), str(tmp_path / "cgr.sqlite3"))
    assert main(["systemd", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "# --- /etc/sysusers.d/cgr.conf ---" in printed
    assert 'u cgr - "cgr runner" /var/lib/cgr' in printed
    target = tmp_path / "units"
    assert main(["systemd", "--config", str(path), "--dir", str(target)]) == 0
    out = capsys.readouterr().out
    snippet = target / "cgr.sysusers.conf"
    assert snippet.read_text().splitlines()[-1] == 'u cgr - "cgr runner" /var/lib/cgr'
    assert "systemd-sysusers" in out
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is not None:  # systemd's own parser accepts it (--dry-run changes nothing)
        root = tmp_path / "root"
        (root / "etc").mkdir(parents=True)
        done = subprocess.run(
            [sysusers, "--dry-run", f"--root={root}", str(snippet)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "cgr" in done.stdout + done.stderr


def test_system_units_refuse_a_cgr_under_a_home_directory() -> None:
    from cgr_cli.ops._systemd import SystemdError, check_system_command

    with pytest.raises(SystemdError, match="PIPX_BIN_DIR=/usr/local/bin"):
        check_system_command(["/home/ann/.local/bin/cgr"])
    with pytest.raises(SystemdError, match="ProtectHome"):
        check_system_command(["/root/.local/pipx/venvs/cgr-cli/bin/python", "-m", "cgr_cli"])
    check_system_command(["/usr/local/bin/cgr"])
    check_system_command(["/opt/pipx/venvs/cgr-cli/bin/cgr"])
