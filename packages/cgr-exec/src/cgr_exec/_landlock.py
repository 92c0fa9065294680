"""Landlock through ctypes: the three syscalls, ABI versions, and a ruleset built in the parent.

Landlock (Linux >= 5.13) lets an unprivileged process restrict itself and, irrevocably,
every process it later starts. A *ruleset* declares which access rights it *handles*;
once enforced, a handled right is denied everywhere except where a rule grants it back
(beneath a directory, on a file, or for a TCP port). Rights it does not handle stay
allowed. The kernel facts this module rests on:

* Three syscalls, numbered 444, 445 and 446 on every architecture that has them
  (x86_64 and aarch64 alike): ``landlock_create_ruleset``, ``landlock_add_rule`` and
  ``landlock_restrict_self``. ``landlock_create_ruleset(NULL, 0, VERSION)`` returns the
  ABI version; ENOSYS means not built in, EOPNOTSUPP built in but disabled at boot.
* Each ABI version added rights; handling a right the kernel does not know is EINVAL, so
  the handled set is masked per ABI: v1 the 13 basic filesystem rights, v2 REFER
  (rename/link across directories), v3 TRUNCATE, v4 TCP bind/connect, v5 IOCTL_DEV,
  v6 scopes (abstract unix sockets and signals to processes outside the domain).
  v7 added audit-log flags only. Rights from later ABIs are unknown here and therefore
  not handled: they stay allowed.
* A ruleset is a file descriptor. It is built here, *in the parent*: every path is
  opened (``O_PATH``) and added as a rule, and the path fds are closed again. The child
  between fork and exec then only needs two syscalls - ``prctl(PR_SET_NO_NEW_PRIVS)``
  (required to restrict oneself without CAP_SYS_ADMIN) and ``landlock_restrict_self`` on
  the inherited ruleset fd - so nothing in the child allocates, imports or opens files.
* A domain also stops its processes from ptracing - and so from reading
  ``/proc/<pid>/environ`` or ``mem`` of - any process outside it, even as root.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ACCESS_FS_READ_ONLY",
    "ACCESS_FS_READ_WRITE",
    "ChildRestrictor",
    "LandlockRuleset",
    "abi_version",
    "build_ruleset",
    "handled_fs",
]

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2
PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights (include/uapi/linux/landlock.h).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FS_V1 = (1 << 13) - 1
# The only rights a rule on a *file* (not a directory) may carry; others are EINVAL.
_FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

ACCESS_FS_READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
"""Rights a read-only path grants: list, read and execute (which also covers mmap of
shared libraries, read through READ_FILE)."""
ACCESS_FS_READ_WRITE = (1 << 16) - 1
"""Rights a read-write path grants: every filesystem right (masked to the ABI)."""


def handled_fs(abi: int) -> int:
    """The filesystem rights ABI ``abi`` can handle (so deny by default)."""
    rights = _FS_V1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


class _RulesetAttr(ctypes.Structure):
    # struct landlock_ruleset_attr; the kernel is told how much of it this ABI knows.
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    # struct landlock_path_beneath_attr is __attribute__((packed)): 12 bytes.
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.prctl.restype = ctypes.c_int
        _libc = lib
    return _libc


def _syscall(number: int, *args: object) -> int:
    # Callers pass ctypes values of the kernel's argument types: syscall(2) is variadic,
    # so nothing would convert a Python int to the width the kernel reads.
    result = int(_lib().syscall(ctypes.c_long(number), *args))
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is unavailable."""
    try:
        return _syscall(
            _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
        )
    except OSError as exc:
        # ENOSYS: kernel built without Landlock (or older than 5.13); EOPNOTSUPP: built
        # in but not enabled at boot (the `lsm=` list).
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise


@dataclass(frozen=True, slots=True)
class LandlockRuleset:
    """A ruleset fd built in the parent, and what it enforces once a child restricts itself.

    The fd is close-on-exec: the child restricts itself with it between fork and exec,
    the command it then runs never sees it. The parent closes it with :meth:`close`.
    """

    fd: int
    abi: int
    handled_fs: int
    handled_net: int
    scoped: int

    def close(self) -> None:
        os.close(self.fd)


def _open_path(path: str) -> int:
    # O_PATH: a handle naming the inode without read permission on it (so an unreadable
    # directory can still be granted); follows symlinks, so a rule on /lib (a link to
    # usr/lib) lands on the real directory.
    return os.open(path, os.O_PATH | os.O_CLOEXEC)


def build_ruleset(
    *,
    abi: int,
    read_only: Iterable[str],
    read_write: Iterable[str],
    tcp_connect_ports: Iterable[int] | None,
    tcp_bind_ports: Iterable[int] | None,
    scopes: bool,
) -> LandlockRuleset:
    """Create a ruleset fd granting exactly the given paths and ports (raises OSError).

    Every filesystem right this ABI knows is handled; ``read_only`` paths get
    :data:`ACCESS_FS_READ_ONLY`, ``read_write`` ones every right. Ports: None leaves that
    kind of TCP access unrestricted; a collection allows those ports only. ``scopes``
    (ABI >= 6) isolates abstract unix sockets and signals. Callers check existence of the
    paths and the ABI's support of what they ask for before calling this.
    """
    fs = handled_fs(abi)
    net = 0
    if tcp_connect_ports is not None:
        net |= NET_CONNECT_TCP
    if tcp_bind_ports is not None:
        net |= NET_BIND_TCP
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if scopes else 0
    attr = _RulesetAttr(handled_access_fs=fs, handled_access_net=net, scoped=scoped)
    # Older kernels reject a struct larger than they know unless the tail is zero; pass
    # exactly the fields this ABI defines.
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = _syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    try:
        os.set_inheritable(fd, False)
        for paths, rights in ((read_only, ACCESS_FS_READ_ONLY), (read_write, ACCESS_FS_READ_WRITE)):
            for path in paths:
                _add_path(fd, path, rights & fs)
        for ports, right in ((tcp_connect_ports, NET_CONNECT_TCP), (tcp_bind_ports, NET_BIND_TCP)):
            for port in ports or ():
                rule = _NetPortAttr(allowed_access=right, port=port)
                _syscall(
                    _SYS_ADD_RULE,
                    ctypes.c_int(fd),
                    ctypes.c_int(_RULE_NET_PORT),
                    ctypes.byref(rule),
                    ctypes.c_uint32(0),
                )
    except BaseException:
        os.close(fd)
        raise
    return LandlockRuleset(fd=fd, abi=abi, handled_fs=fs, handled_net=net, scoped=scoped)


def _add_path(ruleset_fd: int, path: str, rights: int) -> None:
    path_fd = _open_path(path)
    try:
        if not os.path.isdir(f"/proc/self/fd/{path_fd}"):
            rights &= _FS_FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=path_fd)
        try:
            _syscall(
                _SYS_ADD_RULE,
                ctypes.c_int(ruleset_fd),
                ctypes.c_int(_RULE_PATH_BENEATH),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
        except OSError as exc:
            raise OSError(exc.errno, f"landlock_add_rule: {exc.strerror}", path) from None
    finally:
        os.close(path_fd)


class ChildRestrictor:
    """The two syscalls a child makes to enter a ruleset, prepared in the parent.

    Every ctypes argument object is created here, so :meth:`__call__` in the forked child
    only calls two already-resolved C functions with already-built arguments.
    """

    __slots__ = ("_nnp_args", "_prctl", "_restrict_args", "_syscall")

    def __init__(self, ruleset_fd: int) -> None:
        lib = _lib()
        self._prctl = lib.prctl
        self._syscall = lib.syscall
        self._nnp_args = (
            ctypes.c_int(PR_SET_NO_NEW_PRIVS),
            ctypes.c_ulong(1),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        self._restrict_args = (
            ctypes.c_long(_SYS_RESTRICT_SELF),
            ctypes.c_long(ruleset_fd),
            ctypes.c_long(0),
        )

    def __call__(self) -> tuple[str, int] | None:
        """Restrict the calling process; None on success, else (step, errno)."""
        # no_new_privs first: without CAP_SYS_ADMIN the kernel refuses restrict_self
        # otherwise, and it keeps a confined process from regaining rights through a
        # set-uid program.
        if self._prctl(*self._nnp_args) != 0:
            return ("prctl(PR_SET_NO_NEW_PRIVS)", ctypes.get_errno())
        if self._syscall(*self._restrict_args) != 0:
            return ("landlock_restrict_self", ctypes.get_errno())
        return None
