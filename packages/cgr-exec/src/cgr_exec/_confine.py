"""Confinement of a child: what it may read, write and connect to, and as which user.

A :class:`Confinement` is plain data. :func:`prepare_confinement` turns it, in the
parent, into everything the child needs (a Landlock ruleset fd, a uid/gid, the two
prepared syscalls); the child applies it between fork and exec (see ``_spawn``). Work is
split that way because code between fork and exec must not take locks, import or open
files: another thread of the parent may have held a lock at the moment of the fork.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import _landlock
from ._errors import ConfinementError
from ._jobs import cgroup_root

__all__ = [
    "Confinement",
    "ConfinementSupport",
    "PreparedConfinement",
    "landlock_supported",
    "prepare_confinement",
    "probe_confinement",
]


def landlock_supported() -> int:
    """The running kernel's Landlock ABI version, 0 when Landlock is not available."""
    return _landlock.abi_version()


def _paths(value: Iterable[str | os.PathLike[str]], name: str) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise TypeError(f"Confinement.{name} must be a list of paths, not one string")
    paths = tuple(os.fspath(p) for p in value)
    for path in paths:
        if not os.path.isabs(path):
            raise ValueError(f"Confinement.{name}: {path!r} is not an absolute path")
    return paths


def _ports(value: Iterable[int] | None, name: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    ports = tuple(value)
    for port in ports:
        # bool is an int subclass; a stray True in a config list is not port 1.
        if type(port) is not int or not 0 <= port <= 65535:
            raise ValueError(f"Confinement.{name}: {port!r} is not a TCP port (0-65535)")
    return ports


@dataclass(frozen=True, slots=True, kw_only=True)
class Confinement:
    """What a child may do; applied between fork and exec, inherited by all it starts.

    * ``read_only`` / ``read_write``: absolute paths (directories cover everything
      beneath them). With Landlock in force, every other path is neither readable,
      writable nor executable. A missing ``read_only`` path is skipped (system layouts
      differ: ``/lib64``); a missing ``read_write`` path is an error.
    * ``tcp_connect_ports`` / ``tcp_bind_ports``: None leaves that TCP access
      unrestricted; a list allows those ports only (any address), ``[]`` none at all.
      Needs Landlock ABI >= 4. UDP and unix sockets are not restricted by these.
    * ``scopes``: where the kernel has ABI >= 6, the child can neither signal processes
      outside its Landlock domain nor connect to abstract unix sockets created outside it.
    * ``landlock``: False applies no Landlock at all (``user`` mode alone).
    * ``drop_capabilities``: the child keeps no Linux capability (effective, permitted,
      inheritable, ambient, bounding), even when it runs as root. This matters: a root
      process holding CAP_SYS_ADMIN or CAP_PERFMON reads ``/proc/<pid>/environ`` of
      processes outside its Landlock domain (measured on Linux 6.18); without them it
      cannot. Switching ``user`` away from root drops them anyway.
    * ``user`` / ``group``: run as this uid or user name (and its primary group, or
      ``group``), with no supplementary groups; needs root.
    * ``require``: True (the default) refuses to start the child when Landlock is
      unavailable or cannot enforce a requested port restriction; False runs it with
      what the kernel offers. A failure in the child is always fatal (the command is not
      executed), whatever ``require`` says.
    """

    read_only: tuple[str, ...] = ()
    read_write: tuple[str, ...] = ()
    tcp_connect_ports: tuple[int, ...] | None = None
    tcp_bind_ports: tuple[int, ...] | None = None
    scopes: bool = True
    landlock: bool = True
    drop_capabilities: bool = True
    user: int | str | None = None
    group: int | str | None = None
    require: bool = True

    def __post_init__(self) -> None:
        # Accept any iterable (lists from a config file) but store tuples: a frozen spec
        # must not change under the caller's feet.
        set_ = object.__setattr__
        set_(self, "read_only", _paths(self.read_only, "read_only"))
        set_(self, "read_write", _paths(self.read_write, "read_write"))
        set_(self, "tcp_connect_ports", _ports(self.tcp_connect_ports, "tcp_connect_ports"))
        set_(self, "tcp_bind_ports", _ports(self.tcp_bind_ports, "tcp_bind_ports"))


@dataclass(frozen=True, slots=True)
class ConfinementSupport:
    """What this machine and process can enforce (for a ``doctor`` command)."""

    landlock_abi: int
    """0 when Landlock is unavailable."""
    can_change_user: bool
    """True when running as root (needed for ``Confinement.user``)."""
    cgroup_v2: str | None = None
    """Where the cgroup v2 hierarchy is mounted, None if it is not."""

    @property
    def job_cgroups(self) -> bool:
        """Per-job cgroups can be made (root and a cgroup v2 hierarchy)."""
        return self.can_change_user and self.cgroup_v2 is not None

    @property
    def filesystem(self) -> bool:
        return self.landlock_abi >= 1

    @property
    def network(self) -> bool:
        """TCP bind/connect port rules (ABI >= 4)."""
        return self.landlock_abi >= 4

    @property
    def scopes(self) -> bool:
        """Signal and abstract-unix-socket isolation (ABI >= 6)."""
        return self.landlock_abi >= 6

    def lines(self) -> list[str]:
        """One human-readable line per capability."""
        abi = self.landlock_abi
        if abi == 0:
            landlock = "landlock: not available (kernel < 5.13, or not in the boot `lsm=` list)"
        else:
            landlock = f"landlock: ABI {abi} (filesystem rules"
            landlock += ", TCP port rules" if self.network else "; no TCP port rules: ABI < 4"
            landlock += ", signal/socket scopes)" if self.scopes else "; no scopes: ABI < 6)"
        user = (
            "run as another user: yes (running as root)"
            if self.can_change_user
            else "run as another user: no (needs root)"
        )
        if self.job_cgroups:
            cgroups = f"job cgroups: yes (cgroup v2 at {self.cgroup_v2})"
        elif self.cgroup_v2 is None:
            cgroups = "job cgroups: no (no cgroup v2 hierarchy mounted); env marker only"
        else:
            cgroups = "job cgroups: no (needs root); env marker only"
        return [landlock, user, cgroups]


def probe_confinement() -> ConfinementSupport:
    """Probe what confinement this kernel and process support."""
    root = cgroup_root()
    return ConfinementSupport(
        landlock_abi=landlock_supported(),
        can_change_user=os.geteuid() == 0,
        cgroup_v2=None if root is None else str(root),
    )


@dataclass(slots=True)
class PreparedConfinement:
    """A :class:`Confinement` resolved in the parent: ids, ruleset fd, what is in force."""

    spec: Confinement
    uid: int | None = None
    gid: int | None = None
    ruleset: _landlock.LandlockRuleset | None = None
    restrictor: _landlock.ChildRestrictor | None = None
    cap_dropper: CapabilityDropper | None = None
    skipped_paths: tuple[str, ...] = ()
    in_force: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """What the child will run under, in one line."""
        return "; ".join(self.in_force) if self.in_force else "no confinement"

    def close(self) -> None:
        """Release the ruleset fd (the child has its own copy once forked)."""
        if self.ruleset is not None:
            self.ruleset.close()
            self.ruleset = None


def _resolve_user(spec: Confinement) -> tuple[int | None, int | None]:
    if spec.user is None and spec.group is None:
        return None, None
    uid: int | None = None
    gid: int | None = None
    if spec.user is not None:
        try:
            entry = (
                pwd.getpwnam(spec.user) if isinstance(spec.user, str) else pwd.getpwuid(spec.user)
            )
        except KeyError:
            if isinstance(spec.user, str):
                raise ConfinementError(
                    f"Confinement.user: no user named {spec.user!r} on this machine"
                ) from None
            uid, gid = spec.user, spec.user  # a bare uid without a passwd entry
        else:
            uid, gid = entry.pw_uid, entry.pw_gid
    if spec.group is not None:
        if isinstance(spec.group, str):
            try:
                gid = grp.getgrnam(spec.group).gr_gid
            except KeyError:
                raise ConfinementError(
                    f"Confinement.group: no group named {spec.group!r} on this machine"
                ) from None
        else:
            gid = spec.group
    if os.geteuid() != 0 and (uid not in (None, os.geteuid()) or gid not in (None, os.getegid())):
        raise ConfinementError(
            "Confinement.user/group: running a command as another user needs root "
            f"(this process runs as uid {os.geteuid()}); unset user/group or run as root"
        )
    return uid, gid


def prepare_confinement(spec: Confinement, *, abi: int | None = None) -> PreparedConfinement:
    """Resolve ``spec`` in the parent; raise :class:`ConfinementError` if it cannot hold.

    ``abi`` overrides the probed Landlock ABI (lower only: to test degraded kernels).
    The caller must :meth:`~PreparedConfinement.close` the result after spawning.
    """
    prepared = PreparedConfinement(spec)
    prepared.uid, prepared.gid = _resolve_user(spec)
    if prepared.uid is not None:
        prepared.in_force.append(f"user uid {prepared.uid} gid {prepared.gid}, no extra groups")
    elif prepared.gid is not None:
        prepared.in_force.append(f"group gid {prepared.gid}, no extra groups")
    if spec.drop_capabilities and prepared.uid in (None, 0) and _has_capabilities():
        prepared.cap_dropper = CapabilityDropper()
        prepared.in_force.append("no capabilities")
    if spec.landlock:
        _prepare_landlock(spec, prepared, abi)
    return prepared


def _prepare_landlock(spec: Confinement, prepared: PreparedConfinement, abi: int | None) -> None:
    kernel_abi = landlock_supported()
    abi = kernel_abi if abi is None else min(abi, kernel_abi)
    if abi == 0:
        if spec.require:
            raise ConfinementError(
                "Landlock is not available on this kernel (Linux >= 5.13 with landlock in "
                "the boot `lsm=` list); set require=False to run without it, or "
                "landlock=False to confine by user only"
            )
        prepared.in_force.append("landlock: not available, not applied")
        return
    wants_ports = spec.tcp_connect_ports is not None or spec.tcp_bind_ports is not None
    connect, bind = spec.tcp_connect_ports, spec.tcp_bind_ports
    if wants_ports and abi < 4:
        if spec.require:
            raise ConfinementError(
                f"Landlock ABI {abi} cannot restrict TCP ports (needs ABI 4, Linux >= 6.7); "
                "set tcp_connect_ports/tcp_bind_ports to None or require=False"
            )
        connect = bind = None
    missing = [p for p in spec.read_write if not os.path.exists(p)]
    if missing:
        raise ConfinementError(
            f"Confinement.read_write: {missing[0]!r} does not exist; create it before "
            "starting the command",
            path=missing[0],
        )
    read_only = [p for p in spec.read_only if os.path.exists(p)]
    prepared.skipped_paths = tuple(p for p in spec.read_only if p not in read_only)
    scopes = spec.scopes and abi >= 6
    try:
        prepared.ruleset = _landlock.build_ruleset(
            abi=abi,
            read_only=read_only,
            read_write=spec.read_write,
            tcp_connect_ports=connect,
            tcp_bind_ports=bind,
            scopes=scopes,
        )
    except OSError as exc:
        raise ConfinementError(
            f"cannot build the Landlock ruleset: {exc.strerror}"
            + (f" ({exc.filename})" if exc.filename else ""),
            step="build ruleset",
            errno=exc.errno,
            path=exc.filename,
        ) from exc
    prepared.restrictor = _landlock.ChildRestrictor(prepared.ruleset.fd)
    text = (
        f"landlock ABI {abi}: read-only {len(read_only)} paths, "
        f"read-write {len(spec.read_write)} paths"
    )
    if connect is not None:
        text += f", TCP connect only to {_port_list(connect)}"
    if bind is not None:
        text += f", TCP bind only to {_port_list(bind)}"
    if scopes:
        text += ", signals and abstract unix sockets scoped"
    prepared.in_force.append(text)


def _port_list(ports: tuple[int, ...]) -> str:
    return ", ".join(map(str, ports)) if ports else "no port"


_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522


def _has_capabilities() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16) != 0
    return False


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


class CapabilityDropper:
    """Drops every capability of the calling process; prepared in the parent, like
    :class:`~cgr_exec._landlock.ChildRestrictor`, so the child only makes syscalls."""

    __slots__ = ("_ambient", "_bounding", "_capset", "_data", "_header", "_prctl")

    def __init__(self) -> None:
        lib = ctypes.CDLL(None, use_errno=True)
        self._prctl = lib.prctl
        self._capset = lib.capset
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                last = int(f.read())
        except OSError:
            last = 63
        zero = ctypes.c_ulong(0)
        self._bounding = [
            (ctypes.c_int(_PR_CAPBSET_DROP), ctypes.c_ulong(cap), zero, zero, zero)
            for cap in range(last + 1)
        ]
        self._ambient = (
            ctypes.c_int(_PR_CAP_AMBIENT),
            ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL),
            zero,
            zero,
            zero,
        )
        self._header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        self._data = (_CapData * 2)()  # all zero: no capability in any set

    def __call__(self) -> tuple[str, int] | None:
        """None on success, else (step, errno)."""
        # The bounding set first: dropping from it needs CAP_SETPCAP, which capset
        # removes. It keeps an exec'd file with capabilities from granting them again.
        for args in self._bounding:
            if self._prctl(*args) != 0:
                return ("prctl(PR_CAPBSET_DROP)", ctypes.get_errno())
        if self._prctl(*self._ambient) != 0:
            return ("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", ctypes.get_errno())
        if self._capset(ctypes.byref(self._header), self._data) != 0:
            return ("capset", ctypes.get_errno())
        return None
