"""cgr's own git never runs a command the agent configured in its checkout.

The agent (and the repository's set-up and check commands, which run confined like it) can
write the checkout's ``.git/``: a clean or smudge filter, ``core.fsmonitor``, a textconv or
merge driver, ``gpg.program`` with ``commit.gpgSign``, ``core.pager``, an ``include.path``,
a ``commondir`` pointing at a config of its own. Each names a command that git runs inside
*cgr's* git processes: as cgr's user (often root), outside the sandbox, with the network
open: a way out of the confinement. Hooks are already off (``core.hooksPath=/dev/null``).

So cgr pins the repository's configuration: right after it cloned and set up the branch it
keeps ``.git/config`` (``snapshot``), and before every git command of its own in that
checkout (``Git.guard``) it puts it back if it changed and removes the files a plain clone
never has that make git read other configuration or attributes (``restore``). Attributes
in the work tree (a committed ``.gitattributes``) can only name drivers; a driver that is
not configured does nothing. ``.git`` itself replaced by a symlink or a file (``gitdir:``
elsewhere) is refused: cgr's git would work in another repository.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

from cgr_cli._errors import CgrError

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Read by git from the repository besides ``config``, absent after a clone: a common dir
# (with its own config), per-worktree config, repository-wide attributes.
_EXTRA = ("commondir", "config.worktree", "info/attributes")


class GitDirTamperedError(CgrError):
    """The checkout's ``.git`` is not the directory cgr cloned."""

    def __init__(self, checkout: Path, what: str) -> None:
        self.checkout = checkout
        super().__init__(
            f"the checkout's .git {what} (replaced by the agent?); cgr ran no git command "
            "in it and published nothing"
        )


@contextlib.contextmanager
def _git_dir(checkout: Path) -> Iterator[int]:
    # The checkout itself is cgr's (its parent is not writable for the agent); ``.git``
    # below it is the agent's to change, so it is opened without following a symlink.
    top = os.open(checkout, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(".git", _DIR, dir_fd=top)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise GitDirTamperedError(checkout, "is a symlink or a file") from None
            raise
    finally:
        os.close(top)
    try:
        yield fd
    finally:
        os.close(fd)


def _read(name: str, dir_fd: int) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None  # missing, a symlink (ELOOP), a directory: not what cgr wrote
    with os.fdopen(fd, "rb") as f:
        return f.read()


def snapshot(checkout: Path) -> bytes:
    """``.git/config`` as cgr set it up (before any confined process ran in the checkout)."""
    with _git_dir(checkout) as fd:
        data = _read("config", fd)
    if data is None:
        raise GitDirTamperedError(checkout, "has no readable config")
    return data


def restore(checkout: Path, saved: bytes) -> list[str]:
    """Put ``saved`` back as ``.git/config`` and remove ``_EXTRA``; what was undone."""
    undone: list[str] = []
    with _git_dir(checkout) as fd:
        if _read("config", fd) != saved:
            tmp = f".cgr-config-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o644, dir_fd=fd)  # fmt: skip
            with os.fdopen(out, "wb") as f:
                f.write(saved)
            try:
                # rename() replaces a symlink named config, never what it points at.
                os.replace(tmp, "config", src_dir_fd=fd, dst_dir_fd=fd)
            except OSError as exc:
                os.unlink(tmp, dir_fd=fd)
                what = f"config cannot be replaced: {exc.strerror}"
                raise GitDirTamperedError(checkout, what) from None
            undone.append(".git/config")
        for name in _EXTRA:
            directory, _, leaf = name.rpartition("/")
            try:
                if directory:
                    sub = os.open(directory, _DIR, dir_fd=fd)
                    try:
                        os.unlink(leaf, dir_fd=sub)
                    finally:
                        os.close(sub)
                else:
                    os.unlink(leaf, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # ``info`` made a link/file
                    os.unlink(directory, dir_fd=fd)
                elif exc.errno in (errno.EISDIR, errno.EPERM):  # a directory by that name
                    raise GitDirTamperedError(checkout, f"has a directory {name}") from None
                else:
                    raise
            undone.append(f".git/{name}")
    return undone
