"""What the agent may touch: the sandbox configuration turned into a cgr-exec Confinement.

``plan_sandbox`` is a pure function of the configuration, the run's paths, the agent's
environment and what the machine supports (``cgr_exec.probe_confinement()``): it reads
directory listings (to narrow a directory that holds something forbidden) but changes
nothing, so every rule is testable without running anything.

The rules (``agent.sandbox.mode = "landlock"``, the default):

- read-only: the system (``/usr /bin /sbin /lib* /etc /opt /proc /sys``, DNS under
  ``/run``), the agent's installation (the directory of its command and of a script's
  interpreter, and the prefix above a ``bin/``), the directories of the agent's ``PATH``,
  and ``agent.sandbox.read_only``;
- read-write: the run's checkout, the agent's own home (``agent.sandbox.home``, by default
  one per target next to its checkout), a private temp dir in the run directory, a few
  character devices, and ``agent.sandbox.read_write``;
- TCP connect: ``agent.sandbox.tcp_ports`` (default 443, the model API's port from
  ``ANTHROPIC_BASE_URL`` and an HTTPS proxy's port).

Landlock is an allow-list, so everything else is denied: cgr's configuration and env file,
the store, the workspace root (other runs, this run's ``logs/`` and ``artifacts/``), the gh
CLI's configuration. Should an allowed directory contain one of those (``/etc`` holding
``/etc/cgr``, a ``~/.local`` prefix holding the store), it is replaced by its other
children, recursively (``narrow``): a rule can never cover a forbidden path.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cgr_cli._errors import ConfigError
from cgr_cli.config._model import Config

if TYPE_CHECKING:
    from cgr_exec import Confinement, ConfinementSupport

SYSTEM_READ_ONLY = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
    "/proc", "/sys", "/run/systemd/resolve", "/run/resolvconf", "/dev",
)  # fmt: skip
# Character devices programs open for writing (the shell's redirections, ptys for tools).
DEVICES_READ_WRITE = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                      "/dev/tty", "/dev/ptmx", "/dev/pts")  # fmt: skip
# Readable for root in /etc, and never the agent's business.
SYSTEM_FORBIDDEN = ("/etc/cgr", "/etc/shadow", "/etc/gshadow", "/etc/sudoers",
                    "/etc/sudoers.d", "/etc/ssh", "/etc/ssl/private")  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The paths of one run the sandbox is built around."""

    checkout: Path
    run_dir: Path
    workspace_root: Path
    # The agent's home and private temp dir (created by the caller before the agent runs).
    home: Path
    tmp: Path

    @classmethod
    def of(cls, config: Config, checkout: Path, run_dir: Path) -> RunPaths:
        home = config.agent.sandbox.home
        return cls(
            checkout=checkout,
            run_dir=run_dir,
            workspace_root=config.workspace_root,
            home=Path(home).expanduser() if home else checkout.with_name("home"),
            tmp=run_dir / "tmp",
        )


@dataclass(frozen=True, slots=True)
class SandboxPlan:
    """What the agent runs under: a spec for cgr-exec (None: unconfined) and the variables
    that point the agent at its own home and temp dir."""

    mode: str
    read_only: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()
    tcp_ports: tuple[int, ...] | None = None
    user: str | None = None
    landlock: bool = False
    env: dict[str, str] = field(default_factory=dict)
    forbidden: tuple[str, ...] = ()

    @property
    def confined(self) -> bool:
        return self.landlock or self.user is not None

    def confinement(self) -> Confinement | None:
        from cgr_exec import Confinement

        if not self.confined:
            return None
        return Confinement(
            read_only=self.read_only,
            read_write=self.read_write,
            tcp_connect_ports=self.tcp_ports if self.landlock else None,
            landlock=self.landlock,
            user=self.user,
            require=True,
        )

    def describe(self) -> str:
        if not self.confined:
            return 'no confinement (agent.sandbox.mode = "off")'
        parts = []
        if self.landlock:
            ports = ", ".join(map(str, self.tcp_ports or ())) or "none"
            parts.append(
                f"landlock ({len(self.read_only)} read-only and {len(self.read_write)} "
                f"read-write paths, TCP connect to {ports})"
            )
        if self.user:
            parts.append(f"user {self.user}")
        return " + ".join(parts)


def forbidden_paths(config: Config, environ: Mapping[str, str]) -> list[Path]:
    """Paths no rule may cover: cgr's configuration and env file, the store, the workspace
    root, the gh CLI's configuration, and the secrets of the system."""
    home = Path(environ.get("HOME") or Path.home())
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    found = [config_home / "cgr", config_home / "gh", home / ".config" / "gh"]
    for name in ("CGR_CONFIG", "CGR_ENV_FILE"):
        if environ.get(name):
            found.append(Path(environ[name]).parent)
    if environ.get("GH_CONFIG_DIR"):
        found.append(Path(environ["GH_CONFIG_DIR"]))
    db = config.database
    found += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
              db.with_name(db.name + "-journal"), config.workspace_root]  # fmt: skip
    found += [Path(p) for p in SYSTEM_FORBIDDEN]
    return [_real(p) for p in found]


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def narrow(path: Path, forbidden: Iterable[Path], *, _depth: int = 0) -> list[Path]:
    """``path`` as rules that cover none of ``forbidden``: itself when it holds none of
    them, nothing when it is one, else its children narrowed the same way. A symlinked
    child is followed to its target (Landlock rules act on the target) and narrowed too."""
    everywhere = tuple(str(f) for f in forbidden)
    return [Path(p) for p in _narrow(str(_real(path)), everywhere, everywhere, _depth)]


def _narrowed(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    """``narrow`` in strings, for a plan: its rules are strings (a plan's ~350 paths made
    into ``Path`` objects and back took a third of its time)."""
    return _narrow(os.path.realpath(path), forbidden, forbidden, 0)


@functools.lru_cache(maxsize=64)
def _below(paths: tuple[str, ...]) -> tuple[str, ...]:
    """What a path below each of ``paths`` begins with (``/a`` -> ``/a/``, ``/`` -> ``/``)."""
    return tuple(p if p.endswith("/") else p + "/" for p in paths)


def _narrow(
    path: str, forbidden: tuple[str, ...], everywhere: tuple[str, ...], depth: int
) -> list[str]:
    """``narrow`` of a real ``path``, in strings. ``forbidden``: the paths that may
    concern it (for a child reached without a symlink, those inside its parent: no other
    can be within it or hold it, since its parent holds none of them); ``everywhere``:
    all of them, for a symlink's target, which may be anywhere. A plan runs this for
    every child of /etc and the like, before every agent start: in strings, one C-level
    ``startswith`` per test (pathlib's objects made it 7 ms of every run's way to its
    agent)."""
    if path in forbidden or path.startswith(_below(forbidden)):
        return []
    below = path if path.endswith("/") else path + "/"
    inside = tuple(f for f in forbidden if f.startswith(below))
    if not inside:
        return [path]
    if depth > 8 or not os.path.isdir(path):
        return []
    try:
        with os.scandir(path) as entries:
            children = sorted((e.name, e.is_symlink()) for e in entries)
    except OSError:
        return []
    result: list[str] = []
    for name, symlink in children:
        child = below + name
        if symlink:
            result += _narrow(os.path.realpath(child), everywhere, everywhere, depth + 1)
        else:
            result += _narrow(child, inside, everywhere, depth + 1)
    return result


def _installation(argv: list[str], env: Mapping[str, str]) -> list[Path]:
    """Where the agent's program lives: each absolute argument that is a file (the
    command, a script it runs), the command found on the agent's PATH, a script's
    interpreter; their directories, and the prefix above a ``bin/`` (a venv, a node
    prefix, ``/usr/local``)."""
    files: list[Path] = []
    command = shutil.which(argv[0], path=env.get("PATH")) if argv else None
    for arg in [*([command] if command else []), *argv]:
        if os.path.isabs(arg) and os.path.isfile(arg):
            files += [Path(arg), _real(Path(arg))]
    for script in list(files):
        interpreter = _shebang(script, env)
        if interpreter is not None:
            files += [interpreter, _real(interpreter)]
    dirs: list[Path] = []
    for file in files:
        dirs.append(file.parent)
        if file.parent.name == "bin":
            dirs.append(file.parent.parent)
    return dirs


def _shebang(script: Path, env: Mapping[str, str]) -> Path | None:
    try:
        with script.open("rb") as f:
            first = f.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env" and len(words) > 1:
        found = shutil.which(words[-1], path=env.get("PATH"))
        return Path(found) if found else None
    return Path(words[0]) if os.path.isabs(words[0]) else None


def _ports(config: Config, env: Mapping[str, str]) -> tuple[int, ...]:
    configured = config.agent.sandbox.tcp_ports
    if configured is not None:
        return tuple(dict.fromkeys(configured))
    ports = [443]
    for name in ("ANTHROPIC_BASE_URL", "HTTPS_PROXY", "https_proxy"):
        value = env.get(name)
        if not value:
            continue
        try:
            parts = urlsplit(value if "://" in value else f"http://{value}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        ports.append(port)
    return tuple(dict.fromkeys(ports))


def refuse_impossible(config: Config, support: ConfinementSupport) -> None:
    """ConfigError naming ``agent.sandbox.mode`` when that mode cannot be had here, and for
    an unconfined root agent that bypasses permissions (never run)."""
    sandbox = config.agent.sandbox
    mode = sandbox.mode
    bypass = config.agent.permission_mode == "bypassPermissions" or (
        "--dangerously-skip-permissions" in config.agent.extra_args
    )
    if mode == "off":
        if bypass and support.can_change_user:  # running as root
            raise ConfigError(
                'agent.sandbox.mode = "off" with agent.permission_mode = '
                "'bypassPermissions' as root: an unconfined root agent that asks nobody is "
                'never run; choose agent.sandbox.mode = "landlock" or "user", or run cgr '
                "as another user",
                key="agent.sandbox.mode",
            )
        return
    want_landlock = mode in ("landlock", "landlock+user")
    want_user = mode in ("user", "landlock+user")
    if want_landlock and not support.filesystem:
        raise ConfigError(
            f"agent.sandbox.mode = \"{mode}\": Landlock is not available on this machine "
            "(Linux >= 5.13 with landlock in the boot `lsm=` list); "
            + ("set agent.sandbox.mode = \"user\" (cgr runs as root) "
               if support.can_change_user else "run cgr as root with agent.sandbox.mode = "
               "\"user\", ")
            + "or agent.sandbox.mode = \"off\" to run the agent unconfined",
            key="agent.sandbox.mode",
        )  # fmt: skip
    if want_user and not support.can_change_user:
        raise ConfigError(
            f'agent.sandbox.mode = "{mode}": running the agent as agent.sandbox.user = '
            f'{sandbox.user!r} needs cgr to run as root; use "landlock" instead',
            key="agent.sandbox.mode",
        )
    if want_landlock and not support.network and sandbox.tcp_ports != []:
        raise ConfigError(
            f'agent.sandbox.mode = "{mode}": this kernel\'s Landlock (ABI '
            f"{support.landlock_abi}) cannot restrict TCP ports (needs ABI 4, Linux 6.7); "
            'set agent.sandbox.mode = "user" or "off"',
            key="agent.sandbox.mode",
        )


def plan_sandbox(
    config: Config,
    paths: RunPaths,
    agent_env: Mapping[str, str],
    *,
    support: ConfinementSupport,
    environ: Mapping[str, str] | None = None,
) -> SandboxPlan:
    """The sandbox for one agent run, or ConfigError naming ``agent.sandbox.mode`` when it
    cannot be had (refused rather than run unconfined).

    ``agent_env`` is the agent's allow-listed environment (its PATH, the model API URL);
    ``environ`` is cgr's own (where cgr's config and the gh CLI's live).
    """
    sandbox = config.agent.sandbox
    mode = sandbox.mode
    environ = os.environ if environ is None else environ
    env = {"HOME": str(paths.home), "TMPDIR": str(paths.tmp)}
    refuse_impossible(config, support)
    if mode == "off":
        return SandboxPlan(mode=mode, env=env)
    want_landlock = mode in ("landlock", "landlock+user")
    want_user = mode in ("user", "landlock+user")
    ports = _ports(config, agent_env)
    forbidden = tuple(str(f) for f in forbidden_paths(config, environ))
    argv = config.agent.argv
    wanted_ro = [Path(p) for p in SYSTEM_READ_ONLY]
    wanted_ro += _installation(argv, agent_env)
    wanted_ro += [Path(p) for p in (agent_env.get("PATH") or "").split(os.pathsep) if p]
    wanted_ro += [Path(p).expanduser() for p in sandbox.read_only]
    read_only: dict[str, None] = {}
    for path in wanted_ro:
        if path.is_absolute():
            for allowed in _narrowed(path, forbidden):
                read_only[allowed] = None
    # The run's own places are inside the workspace root (forbidden as a whole): they are
    # the exceptions, granted as such.
    read_write: dict[str, None] = {}
    own = [paths.checkout, paths.home, paths.tmp]
    for path in own:
        read_write[str(_real(path))] = None
    for extra in sandbox.read_write:
        for allowed in _narrowed(Path(extra).expanduser(), forbidden):
            read_write[allowed] = None
    for device in DEVICES_READ_WRITE:
        if os.path.exists(device):
            read_write[device] = None
    for granted in read_write:
        read_only.pop(granted, None)
    return SandboxPlan(
        mode=mode,
        read_only=tuple(read_only),
        read_write=tuple(read_write),
        tcp_ports=ports if want_landlock else None,
        user=sandbox.user if want_user else None,
        landlock=want_landlock,
        env=env,
        forbidden=forbidden,
    )
