"""Writing a run's files so that nothing the agent planted can redirect them.

The agent works next to cgr's run directory, and with ``agent.sandbox.mode = "off"`` it
could replace ``<run>/artifacts`` by a symlink to anywhere; a plain ``open(path, "w")``
would then write ``summary.json`` (as cgr's user, maybe root) wherever it points. Every
file cgr writes under a run directory is therefore opened component by component from the
workspace root through directory file descriptors with ``O_NOFOLLOW``: a symlink anywhere
on the way is an error (``RedirectedError``), never followed. The same holds when cgr
redacts files the agent wrote (its CLI's transcript in its home): ``os.fwalk`` does not
follow symlinks and each file is opened ``O_NOFOLLOW`` relative to its directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from cgr_cli._errors import CgrError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RedirectedError(CgrError):
    """A path cgr writes under a run directory is (or passes through) a symlink."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is a symlink or not a plain directory/file (replaced by the agent?); "
            "cgr wrote nothing through it"
        )


class RunFiles:
    """Opens files below ``root`` (the workspace root, trusted) without following any
    symlink below it. Relative paths use ``/``; ``..`` is refused."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def _dir(self, parts: tuple[str, ...], *, create: bool) -> Iterator[int]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index, part in enumerate(parts):
                if part in ("", ".", ".."):
                    raise ValueError(f"bad path component {part!r}")
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise RedirectedError("/".join(parts[: index + 1])) from None
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _split(self, rel: str | os.PathLike[str]) -> tuple[tuple[str, ...], str]:
        path = Path(rel)
        if path.is_absolute():
            path = path.relative_to(self.root)
        parts = PurePosixPath(path.as_posix()).parts
        if not parts:
            raise ValueError("empty path")
        return tuple(parts[:-1]), parts[-1]

    def open(self, rel: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
        """An fd for ``rel`` opened with ``flags`` (plus O_NOFOLLOW, O_CLOEXEC); parent
        directories are created (0700) when ``flags`` has O_CREAT."""
        dirs, name = self._split(rel)
        with self._dir(dirs, create=bool(flags & os.O_CREAT)) as dir_fd:
            try:
                fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise RedirectedError("/".join((*dirs, name))) from None
                raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RedirectedError("/".join((*dirs, name)))
        return fd

    def write(self, rel: str | os.PathLike[str], data: bytes | str) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        fd = self.open(rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)

    def read(self, rel: str | os.PathLike[str]) -> bytes:
        fd = self.open(rel, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def rewrite(self, rel: str | os.PathLike[str], fn: Callable[[bytes], bytes]) -> bool:
        """Pass the file through ``fn`` piece by piece (see ``rewrite_fd``); False if it is
        missing."""
        try:
            fd = self.open(rel, os.O_RDWR)
        except FileNotFoundError:
            return False
        rewrite_fd(fd, fn)
        return True


# A piece is a line, or this much of a longer one: memory stays bounded whatever the file
# holds (an agent's 64 MB stream must not cost the run process hundreds of MB to redact).
PIECE_BYTES = 1 << 20


def rewrite_fd(fd: int, fn: Callable[[bytes], bytes]) -> bool:
    """Replace the content of the open regular file ``fd`` by ``fn`` applied to pieces of
    about ``PIECE_BYTES`` that end at line ends, in place, closing ``fd``; True if it
    changed.

    Output may be shorter or longer than input: pieces are read ahead of where the
    output is written by at least the growth so far, kept in a queue when writing would
    overtake reading. A secret split across two pieces of an over-long line is missed;
    lines cgr keeps are at most 1 MiB (``supervise``'s ``max_line_bytes``).
    """
    changed = False
    with os.fdopen(fd, "r+b") as f:
        read_at = write_at = 0
        pending: list[bytes] = []
        while True:
            f.seek(read_at)
            # About PIECE_BYTES, extended to the end of its last line (at most one more
            # PIECE_BYTES): pieces end at line ends, unless a line is longer than that.
            piece = f.read(PIECE_BYTES)
            if piece and not piece.endswith(b"\n"):
                piece += f.readline(PIECE_BYTES)
            read_at = f.tell()
            if piece:
                new = fn(piece)
                changed = changed or new != piece
                pending.append(new)
            # Write what fits before the read position (never past unread input).
            while pending and (not piece or write_at + len(pending[0]) <= read_at):
                chunk = pending.pop(0)
                f.seek(write_at)
                f.write(chunk)
                write_at += len(chunk)
            if not piece:
                break
        f.truncate(write_at)
    return changed


def run_dir_problems(run_dir: Path, names: tuple[str, ...] = ("logs", "artifacts")) -> list[str]:
    """The entries of a run directory that are not what cgr made: ``logs/`` or
    ``artifacts/`` replaced by a symlink or a file (only an unconfined agent can)."""
    problems = []
    for name in names:
        try:
            st = os.lstat(run_dir / name)
        except FileNotFoundError:
            problems.append(f"{name}/ is missing")
            continue
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            problems.append(f"{name}/ was replaced by {kind}")
    return problems


def redact_tree(top: Path, fn: Callable[[bytes], bytes], *, max_bytes: int = 64 << 20) -> int:
    """Apply ``fn`` to every regular file below ``top`` (symlinks neither followed nor
    touched; files over ``max_bytes`` are emptied rather than read whole). Returns how many
    files changed."""
    changed = 0
    if not os.path.isdir(top) or os.path.islink(top):
        return 0
    for _dirpath, _dirs, files, dir_fd in os.fwalk(top, follow_symlinks=False):
        for name in files:
            try:
                fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError:
                continue  # a symlink (ELOOP), a fifo: not ours to rewrite
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                continue
            if st.st_size > max_bytes:
                os.ftruncate(fd, 0)
                os.close(fd)
                changed += 1
                continue
            changed += rewrite_fd(fd, fn)
    return changed
