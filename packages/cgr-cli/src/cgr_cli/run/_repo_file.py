"""Reading a repository's ``cgr.toml`` from its default branch.

Only the default branch's file counts: a run on a pull request works on the PR's branch,
and that branch must not be able to change the rules it is held to (raise its own budget,
drop its checks). So the file is read from a commit of the default branch, never from the
checkout: in a run from the repository's mirror (its ``HEAD`` is the default branch, just
fetched), in ``cgr config check --repo`` and ``cgr doctor`` from a one-commit fetch of the
remote's ``HEAD``. ``instructions_file`` is read from that same commit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cgr_cli._errors import ConfigError
from cgr_cli.config._model import Config
from cgr_cli.config._repo import (
    MAX_FILE_BYTES,
    MAX_INSTRUCTIONS_CHARS,
    REPO_FILE_PATHS,
    RepoSettings,
    merge,
    parse_repo_file,
)
from cgr_cli.run._git import Git, clone_url
from cgr_cli.run._ref_files import resolve


def read_repo_settings(git: Git, git_dir: Path, host: Config, *, rev: str = "HEAD") -> RepoSettings:
    """The settings for runs in the repository whose objects are in ``git_dir``: the host's
    configuration tightened by the file at ``rev`` (the default branch). Raises
    ``ConfigError`` (naming the file and key) when the file is invalid."""
    # The default branch's commit from the mirror's ref files (no process); git says it
    # when they cannot (run/_ref_files.py), and why when there is none (an empty repository).
    commit = resolve(git_dir, rev) if rev == "HEAD" else None
    if commit is None:
        sha = git.run(["rev-parse", "--verify", "-q", f"{rev}^{{commit}}"], cwd=git_dir)
        commit = sha.stdout.strip()
    found = _entries(git, git_dir, commit, REPO_FILE_PATHS)
    present = [p for p in REPO_FILE_PATHS if p in found]
    if not present:
        return RepoSettings.host_only(host)
    if len(present) > 1:
        raise ConfigError(
            f"both {' and '.join(present)} exist on the default branch; keep one "
            f"({present[0]} is the usual place)",
            source=present[0],
        )
    path = present[0]
    repo = parse_repo_file(
        _blob(git, git_dir, commit, path, found[path], limit=MAX_FILE_BYTES, source=path),
        source=path,
    )
    instructions = repo.instructions or ""
    instructions_source = f"{path}@{commit[:7]}" if repo.instructions else None
    if repo.instructions_file is not None:
        where = repo.instructions_file
        entry = _entries(git, git_dir, commit, [where]).get(where)
        if entry is None:
            raise ConfigError(
                f"instructions_file = {where!r}: no such file on the default branch",
                key="instructions_file",
                source=path,
            )
        # Characters are at most 4 bytes: read enough for the limit, then count characters.
        text = _blob(
            git, git_dir, commit, where, entry, limit=MAX_INSTRUCTIONS_CHARS * 4, source=path
        )
        if len(text) > MAX_INSTRUCTIONS_CHARS:
            raise ConfigError(
                f"instructions_file = {where!r}: {len(text)} characters; at most "
                f"{MAX_INSTRUCTIONS_CHARS} are given to the agent",
                key="instructions_file",
                source=path,
            )
        instructions, instructions_source = text, f"{where}@{commit[:7]}"
    return merge(
        host,
        repo,
        source=f"{path}@{commit[:7]}",
        instructions=instructions.strip(),
        instructions_source=instructions_source,
    )


def fetch_repo_settings(git: Git, url: str, host: Config) -> RepoSettings:
    """The same, for a repository cgr has no mirror of at hand: one commit of the remote's
    default branch (``HEAD``) fetched into a temporary bare repository."""
    with tempfile.TemporaryDirectory(prefix="cgr-repo-file-") as tmp:
        git_dir = Path(tmp) / "repo.git"
        git.run(["init", "-q", "--bare", str(git_dir)])
        git.run(
            ["fetch", "-q", "--depth=1", "--no-tags", url, "HEAD"],
            cwd=git_dir,
            timeout=git.network_timeout,
            auth=True,
        )
        return read_repo_settings(git, git_dir, host, rev="FETCH_HEAD")


def fetch_for(config: Config, repo: str, *, timeout: float | None = None) -> RepoSettings:
    """``fetch_repo_settings`` for ``repo`` with the host's GitHub token and git limits
    (``cgr config check --repo``, ``cgr doctor``; ``timeout`` caps each git command)."""
    token = config.github.resolved_token()
    git = Git(
        token=token.reveal() if token else None,
        timeout=min(config.timeouts.git_seconds, timeout or config.timeouts.git_seconds),
        network_timeout=min(
            config.timeouts.clone_seconds, timeout or config.timeouts.clone_seconds
        ),
    )
    return fetch_repo_settings(git, clone_url(config.github.api_url, repo), config)


def _entries(
    git: Git, git_dir: Path, commit: str, paths: Sequence[str]
) -> dict[str, tuple[str, int | None]]:
    """The ones of ``paths`` that exist at ``commit``: path → (object type, size; None for
    a tree). One ``ls-tree`` for all of them (a run asks this before every agent start)."""
    listed = git.run(["ls-tree", "-l", "-z", commit, "--", *paths], cwd=git_dir).stdout
    entries: dict[str, tuple[str, int | None]] = {}
    for record in listed.split("\0"):
        meta, tab, name = record.partition("\t")
        fields = meta.split()
        if not tab or len(fields) != 4:
            continue
        # Paths are matched as prefixes ("a" lists "a/b" too): keep exact names only.
        if name in paths:
            entries[name] = (fields[1], int(fields[3]) if fields[3].isdigit() else None)
    return entries


def _blob(
    git: Git,
    git_dir: Path,
    commit: str,
    path: str,
    entry: tuple[str, int | None],
    *,
    limit: int,
    source: str,
) -> str:
    kind, size = entry
    if kind != "blob" or size is None:
        raise ConfigError(f"{path} is a {kind}, not a file", source=source)
    if size > limit:
        raise ConfigError(f"{path} is {size} bytes; at most {limit} are read", source=source)
    try:
        return git.run(["cat-file", "blob", f"{commit}:{path}"], cwd=git_dir).stdout
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", source=source) from None


def blocked_by_repo(issue: Mapping[str, Any], config: Config, settings: RepoSettings) -> str | None:
    """The first of the issue's labels that only the repository's ``labels.blocked``
    names (the host's own blocked labels were checked before the claim)."""
    names = {str(label.get("name")) for label in issue.get("labels") or []}
    for name in settings.file.labels.blocked:
        if name in names:
            return name
    return None
