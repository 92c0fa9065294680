"""``cgr systemd``: unit files for the tick timer, the reaper timer and the daemon.

Two ways to run cgr (see the ADR): ``cgr-tick.timer`` starts ``cgr tick`` every polling
interval (fork mode) and ``cgr-reaper.timer`` runs ``cgr reap``; or ``cgr-daemon.service``
runs ``cgr daemon``, which schedules and reaps by itself. Enable one of the two, never both
(``cgr doctor`` checks).

The units sandbox cgr (read-only system, private /tmp where that is safe, no new
privileges) while leaving writable exactly what cgr writes: the workspace root, the
database's directory and the agent's own state directory. Every path is absolute, and the
command is the ``cgr`` that is running now, so a unit never depends on the service's PATH.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cgr_cli._errors import CgrError
from cgr_cli.config._model import Config

TICK_SERVICE = "cgr-tick.service"
TICK_TIMER = "cgr-tick.timer"
REAPER_SERVICE = "cgr-reaper.service"
REAPER_TIMER = "cgr-reaper.timer"
DAEMON_SERVICE = "cgr-daemon.service"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
# How often the reaper timer runs when cgr runs in fork mode.
REAPER_INTERVAL_SECONDS = 300
# After the grace period the daemon still ends the children's process groups and reports
# each run on GitHub; this is the time allowed for that on top of the grace period.
STOP_MARGIN_SECONDS = 60


class SystemdError(CgrError):
    """Unit files could not be written to ``directory``."""

    def __init__(self, message: str, *, directory: str) -> None:
        self.directory = directory
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    text: str


def user_unit_dir() -> Path:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "systemd" / "user"


def cgr_command() -> list[str]:
    """The argv that starts this very cgr: its console script if that is what runs, else
    ``python -m cgr_cli`` with this interpreter (both absolute)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "cgr":
        found = argv0 if argv0.is_absolute() else shutil.which(str(argv0))
        if found:
            return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "cgr_cli"]


def _quote(arg: str) -> str:
    # systemd splits ExecStart= like a shell without expansion; quote what would split,
    # and double "%" and "$" so specifiers and variables in a path stay literal.
    arg = arg.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() for c in arg) or '"' in arg or "\\" in arg:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _exec(argv: Sequence[str]) -> str:
    return " ".join(_quote(a) for a in argv)


def _writable_paths(config: Config, *, user: bool) -> list[str]:
    """What cgr writes: workspace root (run logs live in it), database directory, and
    the agent's state. A leading ``-`` lets the unit start if a path does not exist yet."""
    paths = [str(config.workspace_root.absolute()), str(config.database.absolute().parent)]
    unique: list[str] = []
    for path in paths:
        if not any(path == p or path.startswith(p.rstrip("/") + "/") for p in unique):
            unique = [p for p in unique if not p.startswith(path.rstrip("/") + "/")]
            unique.append(path)
    # Claude Code keeps sessions and settings in $CLAUDE_CONFIG_DIR (~/.claude by default);
    # `--resume` needs them, so the agent must be able to write there.
    agent_state = "%h/.claude" if user else "%S/cgr/claude"
    return [*unique, agent_state]


def _under_home(path: str) -> bool:
    return path in ("/home", "/root", "/run/user") or path.startswith(
        ("/home/", "/root/", "/run/user/")
    )


def _sandbox(config: Config, *, user: bool, private_tmp: bool) -> list[str]:
    writable = _writable_paths(config, user=user)
    # A system service gets an empty /home (tmpfs) unless cgr's own paths live there; a
    # user service lives in the home directory, so it is read-only except cgr's paths.
    homes = any(_under_home(p) for p in writable if not p.startswith("%"))
    protect_home = "read-only" if user else "tmpfs" if homes else "yes"
    return [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ProtectHome={protect_home}",
        "ReadWritePaths=" + " ".join(f"-{p}" for p in writable),
        "PrivateTmp=yes" if private_tmp else "PrivateTmp=no",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        *([] if user else _SYSTEM_HARDENING),
    ]


# System services only (a user manager cannot drop what it never had, and some of these
# need privileges it lacks). `systemd-analyze security --offline=yes` rates the daemon
# with them 1.4 ("OK"; 7.6 "EXPOSED" without); a test keeps it at or below 4.0. Left out
# on purpose: MemoryDenyWriteExecute (Node's JIT, so Claude Code, needs W+X memory),
# PrivateNetwork/IPAddressDeny (GitHub and the model API are on the network),
# ProcSubset=pid (runtimes read /proc/meminfo and /proc/cpuinfo).
_SYSTEM_HARDENING = [
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "PrivateDevices=yes",
    "PrivateMounts=yes",
    "ProtectClock=yes",
    "ProtectKernelLogs=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RemoveIPC=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged",
    "SystemCallErrorNumber=EPERM",
]
# The watchdog: the daemon pings every WatchdogSec/2 while its loop is alive (_notify).
WATCHDOG_SECONDS = 120
SYSUSERS_PATH = Path("/etc/sysusers.d/cgr.conf")


def _service_head(
    description: str, *, user: bool, config_path: Path, log_format: str = "text"
) -> list[str]:
    env_file = config_path.parent / "cgr.env"
    lines = [
        "[Unit]",
        f"Description={description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
    ]
    if not user:
        # A dedicated account, created the systemd way: /etc/sysusers.d/cgr.conf (written
        # by `cgr systemd --install`, applied by `systemd-sysusers`).
        lines += ["User=cgr", "Group=cgr", "StateDirectory=cgr", "StateDirectoryMode=0700"]
    lines += [
        # CGR_GITHUB_TOKEN (and ANTHROPIC_API_KEY) live here, mode 0600, never in the unit.
        f"EnvironmentFile=-{_quote(str(env_file))}",
        "Environment=PYTHONUNBUFFERED=1",
        f"Environment=CGR_LOG_FORMAT={log_format}",
        "Environment=CLAUDE_CONFIG_DIR=" + ("%h/.claude" if user else "%S/cgr/claude"),
        "UMask=0077",
    ]
    return lines


def render_units(
    config: Config,
    config_path: Path,
    *,
    user: bool,
    grace: float = 300.0,
    cgr_argv: Sequence[str] | None = None,
    log_format: str = "text",
) -> list[Unit]:
    """The five units, in install order. ``grace`` is the daemon's drain time on stop;
    ``log_format`` (``text`` or ``json``) is what cgr writes to the journal."""
    cgr = list(cgr_argv or cgr_command())
    config_arg = ["--config", str(config_path.absolute())]
    wanted_by = "default.target" if user else "multi-user.target"
    interval = max(1, math.ceil(config.polling.interval_seconds))
    stop_timeout = math.ceil(grace) + STOP_MARGIN_SECONDS

    tick_service = [
        *_service_head(
            "cgr: one scheduling pass (fork mode)",
            user=user,
            config_path=config_path,
            log_format=log_format,
        ),
        "Type=oneshot",
        f"ExecStart={_exec([*cgr, 'tick', *config_arg])}",
        "# `cgr tick` forks one child per run and returns at once. The children stay in",
        "# this service's control group, so the default KillMode=control-group would kill",
        "# every running agent the moment the oneshot's main process exits. KillMode=process",
        "# ends only the main process; the runs live on and `cgr reap` (or `cgr cancel`)",
        "# ends them. For the same reason /tmp is not private here: systemd removes a",
        "# private /tmp when the unit stops, under the feet of the still-running runs.",
        "KillMode=process",
        "TimeoutStartSec=300",
        *_sandbox(config, user=user, private_tmp=False),
    ]
    tick_timer = [
        "[Unit]",
        "Description=cgr: run `cgr tick` every polling interval",
        "",
        "[Timer]",
        "OnBootSec=60",
        f"OnUnitActiveSec={interval}",
        "AccuracySec=1",
        f"Unit={TICK_SERVICE}",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    reaper_service = [
        *_service_head(
            "cgr: end runs whose process is gone or over time",
            user=user,
            config_path=config_path,
            log_format=log_format,
        ),
        "Type=oneshot",
        f"ExecStart={_exec([*cgr, 'reap', *config_arg])}",
        "TimeoutStartSec=600",
        *_sandbox(config, user=user, private_tmp=True),
    ]
    reaper_timer = [
        "[Unit]",
        "Description=cgr: run `cgr reap` regularly (fork mode)",
        "",
        "[Timer]",
        "OnBootSec=120",
        f"OnUnitActiveSec={REAPER_INTERVAL_SECONDS}",
        f"Unit={REAPER_SERVICE}",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]
    daemon_service = [
        *_service_head(
            "cgr daemon: schedule runs continuously",
            user=user,
            config_path=config_path,
            log_format=log_format,
        ),
        "# notify: started once cgr says READY=1 (lock and store held); the watchdog",
        "# restarts a daemon whose loop hangs (it pings only while the loop is alive).",
        "Type=notify",
        "NotifyAccess=main",
        f"WatchdogSec={WATCHDOG_SECONDS}",
        f"ExecStart={_exec([*cgr, 'daemon', *config_arg, '--grace', f'{grace:g}'])}",
        "Restart=on-failure",
        "RestartSec=10",
        "# On stop the daemon alone gets SIGTERM (mixed): it stops claiming, hands the runs",
        "# that have not begun their agent back to the queue and gives the others the grace",
        "# period; systemd waits that long plus a margin for the reports to GitHub, then",
        "# SIGKILLs whatever is left in the whole control group (children included). The",
        "# default (control-group) would SIGTERM every run and agent at once: each cancelled.",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={stop_timeout}",
        *_sandbox(config, user=user, private_tmp=True),
        "",
        "[Install]",
        f"WantedBy={wanted_by}",
    ]
    return [
        Unit(TICK_SERVICE, "\n".join(tick_service) + "\n"),
        Unit(TICK_TIMER, "\n".join(tick_timer) + "\n"),
        Unit(REAPER_SERVICE, "\n".join(reaper_service) + "\n"),
        Unit(REAPER_TIMER, "\n".join(reaper_timer) + "\n"),
        Unit(DAEMON_SERVICE, "\n".join(daemon_service) + "\n"),
    ]


def sysusers_snippet() -> str:
    """sysusers.d(5): the system account the system units run as, home /var/lib/cgr."""
    return (
        "# cgr's service account (see sysusers.d(5)); apply with `systemd-sysusers`.\n"
        'u cgr - "cgr runner" /var/lib/cgr\n'
    )


def check_system_command(argv: Sequence[str]) -> None:
    """Refuse system units whose command lives under a home directory: ProtectHome hides
    it from the service, which would fail with "No such file" (a pipx install of your own
    lands in ~/.local). The fix is a system-wide install."""
    program = argv[0] if argv else ""
    if _under_home(program):
        raise SystemdError(
            f"the cgr command {program} is under a home directory, which the system units "
            "cannot see (ProtectHome); install cgr system-wide (as root: PIPX_HOME=/opt/pipx "
            "PIPX_BIN_DIR=/usr/local/bin nox -s install) and run `cgr systemd` from there, "
            "or use --user units",
            directory=str(SYSTEM_UNIT_DIR),
        )


def install_units(units: Sequence[Unit], directory: Path) -> list[Path]:
    """Write the units into ``directory`` (created if missing); returns the paths."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for unit in units:
            path = directory / unit.name
            tmp = path.with_name(f".{unit.name}.tmp")
            tmp.write_text(unit.text, encoding="utf-8")
            tmp.chmod(0o644)
            os.replace(tmp, path)
            written.append(path)
    except PermissionError:
        raise SystemdError(
            f"cannot write unit files to {directory}: permission denied "
            "(run as root, or use --user for your own systemd instance)",
            directory=str(directory),
        ) from None
    except OSError as exc:
        raise SystemdError(
            f"cannot write unit files to {directory}: {exc.strerror}", directory=str(directory)
        ) from None
    return written


def after_install(directory: Path, *, user: bool) -> str:
    flag = " --user" if user else ""
    return (
        f"Wrote the units to {directory}. Then:\n"
        + ("" if user else f"  systemd-sysusers {SYSUSERS_PATH}   # creates the cgr account\n")
        + f"  systemctl{flag} daemon-reload\n"
        f"  systemctl{flag} enable --now {TICK_TIMER} {REAPER_TIMER}    # fork mode, or\n"
        f"  systemctl{flag} enable --now {DAEMON_SERVICE}                # daemon mode\n"
        "Enable one of the two, not both (cgr doctor checks).\n"
        + (
            "  loginctl enable-linger $USER   # keep user units running after logout\n"
            if user
            else ""
        )
    )
