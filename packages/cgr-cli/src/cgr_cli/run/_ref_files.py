"""A repository's refs read from its files, without starting git: two processes fewer on
every run's way to its agent (``rev-parse`` of the mirror's HEAD for the repository file,
``for-each-ref`` of the fresh clone's remote branches), each 3-10 ms of a loaded host's
CPU.

Only git's ``files`` ref storage is read - what the mirror and the clones cgr makes use:
loose refs (a file per ref: a object name, or ``ref: <target>`` for a symbolic ref) over
``packed-refs`` (a line per ref, ``^`` lines peeling the tag before them). Anything else -
a ``reftable`` repository, a line or file this reader does not know, a symbolic ref that
leads nowhere - answers None, and the caller asks git as before: this is a shortcut, never
a second opinion on what git would say.

A ref being rewritten while it is read (another run's fetch into the mirror) is a rename
on git's side: the reader sees the old or the new file, each a true state. Loose refs are
read before ``packed-refs`` because ``git pack-refs`` writes the packed file first and then
deletes the loose ones: read in that order, a ref is never missed in between.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["head_branch", "read_refs", "resolve"]

_OBJECT_NAME = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_SYMREF = "ref: "
_MAX_DEPTH = 5  # git's own limit for symbolic ref chains is 5 as well


def _files_storage(git_dir: Path) -> bool:
    """Whether ``git_dir`` keeps its refs in files (not in a reftable)."""
    return (git_dir / "HEAD").is_file() and not (git_dir / "reftable").exists()


def _loose(git_dir: Path, name: str) -> str | None:
    """A loose ref's content (an object name or ``ref: …``), None when there is none."""
    try:
        return (git_dir / name).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _packed(git_dir: Path) -> dict[str, str] | None:
    """``packed-refs`` as {refname: object name}; {} without the file; None if unknown."""
    try:
        text = (git_dir / "packed-refs").read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    refs: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith(("#", "^")):
            continue  # the header, and the peeled object of the tag on the line before
        sha, _, name = line.partition(" ")
        if not _OBJECT_NAME.fullmatch(sha) or not name.startswith("refs/"):
            return None
        refs[name] = sha
    return refs


def read_refs(git_dir: Path, prefix: str) -> tuple[dict[str, str], dict[str, str]] | None:
    """The refs under ``prefix`` (``refs/remotes/origin/``): ({name: object name},
    {name: target of a symbolic ref}), names without the prefix; None when only git can
    tell (see the module docstring)."""
    if not _files_storage(git_dir):
        return None
    base = git_dir / prefix
    loose: dict[str, str] = {}
    if base.is_dir():
        for path in base.rglob("*"):
            if path.is_file() and not path.name.endswith(".lock"):
                content = _loose(git_dir, path.relative_to(git_dir).as_posix())
                if content is not None:
                    loose[path.relative_to(base).as_posix()] = content
    packed = _packed(git_dir)
    if packed is None:
        return None
    values: dict[str, str] = {
        name.removeprefix(prefix): sha for name, sha in packed.items() if name.startswith(prefix)
    }
    symbolic: dict[str, str] = {}
    for name, content in loose.items():
        if content.startswith(_SYMREF):
            symbolic[name] = content.removeprefix(_SYMREF)
            values.pop(name, None)
        elif _OBJECT_NAME.fullmatch(content):
            values[name] = content
        else:
            return None
    return values, symbolic


def resolve(git_dir: Path, name: str = "HEAD") -> str | None:
    """The object name ``name`` leads to through symbolic refs; None when only git can
    tell, or when it leads nowhere (an unborn branch: git says why)."""
    if not _files_storage(git_dir):
        return None
    packed: dict[str, str] | None = None
    for _ in range(_MAX_DEPTH):
        content = _loose(git_dir, name)
        if content is None:
            if packed is None:
                packed = _packed(git_dir)
            return packed.get(name) if packed is not None else None
        if content.startswith(_SYMREF):
            name = content.removeprefix(_SYMREF)
            if not name.startswith("refs/") or ".." in name:
                return None
            continue
        return content if _OBJECT_NAME.fullmatch(content) else None
    return None


def head_branch(git_dir: Path) -> str | None:
    """The branch ``HEAD`` names (``main`` for ``ref: refs/heads/main``); None when it is
    not a branch or only git can tell."""
    if not _files_storage(git_dir):
        return None
    content = _loose(git_dir, "HEAD")
    if content is None or not content.startswith(_SYMREF + "refs/heads/"):
        return None
    return content.removeprefix(_SYMREF + "refs/heads/") or None
