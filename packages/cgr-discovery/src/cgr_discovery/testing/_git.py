"""Real bare git repositories on disk and the smart-HTTP bridge to ``git http-backend``."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cgr_discovery.testing._errors import SimulatorGitError

# The simulator's own commits must not depend on the developer's ~/.gitconfig (hooks,
# signing, templates), so every git command it runs gets this environment.
_ISOLATED = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def _env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_ISOLATED}
    if extra:
        env.update(extra)
    return env


def run_git(
    git_dir: Path,
    *args: str,
    input_: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> str:
    """Run ``git --git-dir=<git_dir> args...`` and return stripped stdout."""
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", *args],
        input=input_,
        capture_output=True,
        env=_env(env),
        check=False,
    )
    if check and proc.returncode != 0:
        raise SimulatorGitError(list(args), proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode(errors="replace").strip()


@dataclass(frozen=True, kw_only=True)
class Author:
    name: str
    email: str
    epoch: int


def _commit_env(author: Author) -> dict[str, str]:
    date = f"{author.epoch} +0000"
    return {
        "GIT_AUTHOR_NAME": author.name,
        "GIT_AUTHOR_EMAIL": author.email,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_NAME": author.name,
        "GIT_COMMITTER_EMAIL": author.email,
        "GIT_COMMITTER_DATE": date,
    }


def init_bare(git_dir: Path, default_branch: str, author: Author, readme: str) -> str:
    """Create a bare repository whose default branch holds one commit with a README."""
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(git_dir)],
        capture_output=True,
        env=_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise SimulatorGitError(["init"], proc.returncode, proc.stderr.decode(errors="replace"))
    return commit_files(
        git_dir, default_branch, {"README.md": readme.encode()}, "Initial commit", author
    )


def commit_files(
    git_dir: Path,
    branch: str,
    files: Mapping[str, bytes],
    message: str,
    author: Author,
    *,
    start_point: str | None = None,
) -> str:
    """Commit ``files`` on top of ``branch`` (or ``start_point`` for a new branch).

    Works on the bare repository with a throw-away index file, the way a server-side
    edit on GitHub's web UI would, so no working tree is needed. Returns the new sha.
    """
    parent = heads(git_dir).get(branch)
    if parent is None and start_point is not None:
        parent = run_git(git_dir, "rev-parse", "--verify", f"{start_point}^{{commit}}")
    with tempfile.TemporaryDirectory(prefix="cgr-sim-index-") as tmp:
        index_env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if parent is not None:
            run_git(git_dir, "read-tree", parent, env=index_env)
        for path, content in files.items():
            blob = run_git(git_dir, "hash-object", "-w", "--stdin", input_=content)
            run_git(
                git_dir, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}",
                env=index_env,
            )  # fmt: skip
        tree = run_git(git_dir, "write-tree", env=index_env)
    parents = ["-p", parent] if parent is not None else []
    sha = run_git(git_dir, "commit-tree", tree, *parents, "-m", message, env=_commit_env(author))
    run_git(git_dir, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def heads(git_dir: Path) -> dict[str, str]:
    """Every branch of the repository and the sha it points at."""
    out = run_git(git_dir, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
    result: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, ref = line.partition(" ")
        result[ref.removeprefix("refs/heads/")] = sha
    return result


def count_commits(git_dir: Path, base: str, head: str) -> int:
    """Commits reachable from ``head`` but not from ``base`` (what a PR would contain)."""
    return int(run_git(git_dir, "rev-list", "--count", f"{base}..{head}"))


@dataclass(frozen=True, kw_only=True)
class DiffStat:
    additions: int
    deletions: int
    changed_files: int


def diff_stat(git_dir: Path, base: str, head: str) -> DiffStat:
    """Additions, deletions and changed files between the merge base and ``head``."""
    out = run_git(git_dir, "diff", "--numstat", f"{base}...{head}")
    additions = deletions = files = 0
    for line in out.splitlines():
        added, removed, _ = line.split("\t", 2)
        files += 1
        # Binary files show "-" in numstat; GitHub counts them as changed with no lines.
        additions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    return DiffStat(additions=additions, deletions=deletions, changed_files=files)


@dataclass(frozen=True, kw_only=True)
class CGIResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes


def http_backend(
    project_root: Path,
    *,
    method: str,
    path_info: str,
    query: str,
    content_type: str | None,
    body: bytes,
    remote_user: str,
    git_protocol: str | None,
    content_encoding: str | None,
) -> CGIResponse:
    """Run one smart-HTTP request through ``git http-backend`` (CGI) and parse its answer.

    One subprocess per request is what a CGI server does; it keeps the simulator free of
    any git protocol code of its own, so clones and pushes behave exactly like git's.
    """
    env = _env(
        {
            "GIT_PROJECT_ROOT": str(project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_METHOD": method,
            "CONTENT_LENGTH": str(len(body)),
            # http-backend refuses receive-pack (push) unless the CGI server says who
            # authenticated; the token check has already happened in the simulator.
            "REMOTE_USER": remote_user,
            "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
    )
    if content_type:
        env["CONTENT_TYPE"] = content_type
    if git_protocol:
        # Protocol v2 is negotiated through this header; without it git falls back to v0.
        env["GIT_PROTOCOL"] = git_protocol
    if content_encoding:
        env["HTTP_CONTENT_ENCODING"] = content_encoding
    proc = subprocess.run(
        ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
    )
    raw = proc.stdout
    head, sep, payload = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, payload = raw.partition(b"\n\n")
    status, reason = 200, "OK"
    headers: list[tuple[str, str]] = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not name:
            continue
        if name.lower() == "status":
            code, _, reason = value.partition(" ")
            status = int(code)
        else:
            headers.append((name, value))
    if proc.returncode != 0 and status == 200:
        # http-backend died without a status line: report it as the server error it is.
        message = proc.stderr.decode(errors="replace") or "git http-backend failed"
        return CGIResponse(
            status=500, reason="Internal Server Error",
            headers=[("Content-Type", "text/plain")], body=message.encode(),
        )  # fmt: skip
    return CGIResponse(status=status, reason=reason, headers=headers, body=payload)
