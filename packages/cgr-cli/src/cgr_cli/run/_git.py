"""Git for a run: mirror, clone, branch, rebase, commit, push, verify.

The token only ever travels in the environment of git processes, as
``GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=http.extraHeader GIT_CONFIG_VALUE_0=Authorization: …``:
never in argv (visible in ``ps``), in a remote URL, or in ``.git/config``. Every command has
a timeout; a clone or fetch has its own, longer one.

Only the network commands get the token, and none of them runs in the agent's checkout:
the agent can write that repository's config and hooks (a ``pre-push`` hook, a
``url.insteadOf`` or a new ``origin`` would otherwise receive the token). cgr publishes by
fetching the agent's commits (locally, without the token) into a bare repository of its
own and pushing from there to the explicit URL, with hooks off and without global or
system git config.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cgr_cli._errors import GitError, RebaseConflictError
from cgr_cli.config._load import FORBIDDEN_PASSTHROUGH
from cgr_cli.run._git_retry import GitRetryPolicy, OutcomeUnknownError, retrying
from cgr_cli.run._ref_files import read_refs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

# Variables that would make git talk to another repository or config than the one we name.
_STRIP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
          "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS")  # fmt: skip


def auth_header(token: str) -> str:
    """The ``Authorization`` header git sends with every smart-HTTP request."""
    return f"Authorization: Bearer {token}"


# Tracing that prints HTTP headers to stderr (which cgr logs and puts in GitError).
_CURL_TRACE = ("GIT_TRACE_CURL", "GIT_CURL_VERBOSE", "GIT_TRACE_PACKET")


def git_env(
    token: str | None, base: dict[str, str] | None = None, *, hide: tuple[str, ...] = ()
) -> dict[str, str]:
    """The environment for git processes: the caller's minus repository overrides, no
    prompts; with a token, the token as an extra HTTP header from environment config and
    no global or system config (which other processes of this user could have changed).

    No GitHub token variable (and no variable whose value holds ``token`` or one of
    ``hide``) is passed on: in the agent's checkout git runs the filters and
    ``core.fsmonitor`` the agent configured, and they inherit this environment.
    """
    env = dict(os.environ if base is None else base)
    secrets = [s for s in (token, *hide) if s]
    for name in list(env):
        if (
            name in _STRIP
            or name in _CURL_TRACE
            or name.upper() in FORBIDDEN_PASSTHROUGH
            or name.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))
            or any(s in env[name] for s in secrets)
        ):
            del env[name]
    env.pop("GIT_CONFIG_COUNT", None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"
    # Git's default, restated: an inherited GIT_TRACE_REDACT=0 would print the header.
    env["GIT_TRACE_REDACT"] = "1"
    if token:
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["GIT_CONFIG_GLOBAL"] = os.devnull
        env["GIT_CONFIG_COUNT"] = "1"
        env["GIT_CONFIG_KEY_0"] = "http.extraHeader"
        env["GIT_CONFIG_VALUE_0"] = auth_header(token)
    return env


def slugify(title: str, *, max_length: int = 40, fallback: str = "work") -> str:
    """ASCII-folded, lower-case, dash-separated; never empty, at most ``max_length``."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    out: list[str] = []
    for char in folded.lower():
        if char.isalnum():
            out.append(char)
        elif out and out[-1] != "-":
            out.append("-")
    slug = "".join(out).strip("-")[:max_length].rstrip("-")
    return slug or fallback


def branch_name(prefix: str, number: int, title: str) -> str:
    return f"{prefix.strip('/')}/{number}-{slugify(title)}"


def clone_url(api_url: str, repo: str) -> str:
    """``https://github.com/o/r.git`` for api.github.com, ``https://host/o/r.git`` for
    GitHub Enterprise (``https://host/api/v3``) and the simulator (``http://127.0.0.1:N``)."""
    base = api_url.rstrip("/")
    if base == "https://api.github.com":
        base = "https://github.com"
    base = base.removesuffix("/api/v3")
    return f"{base}/{repo}.git"


_ORIGIN = "refs/remotes/origin/"


@dataclass(frozen=True, slots=True)
class RemoteRefs:
    """``refs/remotes/origin/*`` of a fresh clone: the default branch (None when origin's
    HEAD names none) and each branch's sha."""

    default: str | None
    heads: dict[str, str]


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    email: str


PUSH_ATTEMPTS = 8
"""Tries of a push (and of the check that it landed) before the run gives up on it."""


class Git:
    """Runs git with the run's token in its environment and a timeout on every call."""

    def __init__(
        self,
        *,
        token: str | Callable[[], str] | None,
        timeout: float = 120.0,
        network_timeout: float = 900.0,
        log: Callable[[str], None] | None = None,
        retry: GitRetryPolicy | None = None,
        push_retry: GitRetryPolicy | None = None,
    ) -> None:
        # A callable token is asked for as each network command starts: a GitHub App's
        # installation token is renewed while a run goes on (run/_github_auth.py).
        self._token = token if callable(token) else None
        first = token() if callable(token) else token
        self._auth_env = git_env(first)
        self._auth_token = first
        self._plain_env = git_env(None, hide=(first,) if first else ())
        self.timeout = timeout
        self.network_timeout = network_timeout
        self._log = log or (lambda _line: None)
        self.retry = retry or GitRetryPolicy()
        # A push carries the agent's work, which cost time and money: it is tried longer
        # (about a minute and a half of waits) than a fetch, which costs nothing to redo.
        self.push_retry = push_retry or GitRetryPolicy(attempts=PUSH_ATTEMPTS)
        # Checkouts handed to the agent's own account (see ``trust``).
        self._trusted: set[str] = set()
        # Checkouts whose .git/config cgr pinned (see ``guard``): real path → content.
        self._guarded: dict[str, tuple[Path, bytes]] = {}

    def guard(self, checkout: Path) -> None:
        """Pin ``checkout``'s git configuration as it is now (cgr's own, before anything
        confined runs there): from now on every git command of cgr's in it first puts
        that configuration back, so no filter, fsmonitor, driver or program the agent
        configured runs in cgr's git (see ``_git_guard``)."""
        from cgr_cli.run._git_guard import snapshot

        self._guarded[os.path.realpath(checkout)] = (checkout, snapshot(checkout))

    def _pin(self, path: Path | None) -> None:
        if path is None or not self._guarded:
            return
        found = self._guarded.get(os.path.realpath(path))
        if found is None:
            return
        from cgr_cli.run._git_guard import restore

        undone = restore(*found)
        if undone:
            self._log(
                "the agent changed " + ", ".join(undone) + ": cgr's own configuration put "
                "back (commands it names never run in cgr's git)"
            )

    def trust(self, checkout: Path) -> None:
        """Let cgr's git work in ``checkout`` once another account owns it
        (``agent.sandbox.mode = "user"``): git refuses a repository owned by another uid
        ("dubious ownership") unless its path is in ``safe.directory``. The exception is
        given on cgr's own command lines for this one path (and its ``.git``, which a local
        fetch from it checks), never in a config file and never as ``*``. It adds no
        trust cgr did not already give: cgr's git reads that checkout's config in every
        mode, and runs its hooks in none (``core.hooksPath=/dev/null``)."""
        self._trusted.add(os.path.realpath(checkout))

    def _safe_directory(self, cwd: Path | None) -> list[str]:
        if cwd is None or not self._trusted:
            return []
        real = os.path.realpath(cwd)
        return ["-c", f"safe.directory={real}"] if real in self._trusted else []

    def network(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        prepare: Callable[[], None] | None = None,
        settings: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """A network command (with the token, the network timeout), retried on transient
        failures (see ``_git_retry``); ``prepare`` runs before every attempt (e.g. removing
        what a failed clone left); ``settings`` as in :meth:`run`."""

        def attempt() -> subprocess.CompletedProcess[str]:
            if prepare is not None:
                prepare()
            return self.run(args, cwd=cwd, timeout=self.network_timeout, auth=True,
                            settings=settings)  # fmt: skip

        return retrying(attempt, what=args[0], policy=self.retry, log=self._log)

    def remote_sha(self, url: str, branch: str, *, cwd: Path | None = None) -> str | None:
        """The sha ``branch`` has at ``url`` (one ``ls-remote``, not retried), None if absent."""
        done = self.run(["ls-remote", url, f"refs/heads/{branch}"], cwd=cwd,
                        timeout=self.network_timeout, auth=True)  # fmt: skip
        lines = done.stdout.strip().splitlines()
        return lines[0].split()[0] if lines else None

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        timeout: float | None = None,
        check: bool = True,
        auth: bool = False,
        log_output: bool = True,
        settings: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[str]:
        """Run one git command; ``auth`` gives it the token (network commands only);
        ``log_output=False`` keeps a large output (a whole patch) out of the run's log;
        ``settings``: ``name=value`` configuration for this command alone (``-c``), e.g.
        ``_NO_UPKEEP``."""
        command = " ".join(args)
        self._pin(cwd)
        self._log(f"$ git {command}" + (f"  (in {cwd.name})" if cwd else ""))
        # Hooks never run in cgr's own git commands: in the checkout they are the agent's
        # to write.
        argv = ["git", "-c", "core.hooksPath=/dev/null", *self._safe_directory(cwd)]
        for setting in settings:
            argv += ["-c", setting]
        try:
            done = subprocess.run(
                [*argv, *args],
                cwd=cwd,
                env=self._env_with_token() if auth else self._plain_env,
                capture_output=True,
                text=True,
                timeout=timeout or self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            # subprocess.run kills the child on timeout; git's own children (remote helpers)
            # die with the broken pipe.
            raw: object = exc.stderr
            output = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
            raise GitError(args[0], None, output) from None
        if log_output and (done.stdout.strip() or done.stderr.strip()):
            self._log((done.stdout + done.stderr).rstrip())
        if check and done.returncode != 0:
            raise GitError(args[0], done.returncode, done.stderr or done.stdout)
        return done

    def _env_with_token(self) -> dict[str, str]:
        if self._token is not None:
            current = self._token()
            if current != self._auth_token:
                self._auth_env, self._auth_token = git_env(current), current
        return self._auth_env

    # -- repositories --------------------------------------------------------------------

    def ensure_mirror(
        self,
        url: str,
        mirror: Path,
        *,
        needed_since: float | None = None,
        only: Sequence[str] = (),
        remote_heads: Mapping[str, str] | None = None,
    ) -> tuple[str, ...] | None:
        """Create or refresh the bare mirror that work copies borrow objects from; the
        branches it is now fresh for (names, or ``prefix*`` patterns), None for all.

        Runs of one repository start side by side (``cgr tick``, ``cgr daemon``): an flock
        on ``<mirror>.lock`` lets one create or fetch the mirror at a time (two clones
        into one ``.tmp`` or two fetches into one repository fail), while no run clones
        from it (:meth:`clone` holds the lock shared). With ``needed_since``
        (``time.monotonic()``: when the caller began to need the remote's state), a fetch
        of every branch that began at or after it - another run's, done while this one
        waited for the lock - is enough, and none is made (``_mirror_stamp``).

        ``only``: the branches the caller needs (``main``, ``cgr/12-*``), fetched alone
        (see ``narrow_refspecs``): other branches are neither downloaded nor pruned. A
        fetch of them that git refuses (a branch no longer on the remote) falls back to
        fetching every branch; an outage is raised, as for any fetch. Every branch is
        fetched all the same when the last such fetch is older than
        ``MIRROR_FULL_FETCH_SECONDS`` (or unknown): branches deleted on GitHub leave the
        mirror (and the clones made from it) within that time, and their objects with the
        mirror's housekeeping.

        ``remote_heads``: what the remote's API says ``only``'s branches point at (read
        after ``needed_since``). When the mirror's branches that ``only`` names are exactly
        those, at the same commits, there is nothing to fetch and no fetch is made - the
        usual case for an issue's run, whose branches rarely move between its runs.
        """
        import time

        from cgr_cli.run._git_retry import is_transient
        from cgr_cli.run._mirror_stamp import record_fetch

        with _mirror_lock(mirror, exclusive=True):
            due = mirror_fetch_due(mirror, needed_since, only)
            if due is None:
                self._log("mirror: fetched by another run since this one began; not again")
                return None
            refspecs = narrow_refspecs(only) if due == "named" else None
            if refspecs is not None:
                if remote_heads is not None and mirror_holds(mirror, only, remote_heads):
                    self._log(f"mirror: {', '.join(only)} as on the remote; nothing to fetch")
                    return tuple(only)
                try:
                    self.network(["fetch", "--prune", "--no-tags", "--no-write-fetch-head",
                                  url, *refspecs], cwd=mirror, settings=_MIRROR_FETCH)  # fmt: skip
                except GitError as exc:
                    if is_transient(exc):
                        raise
                    self._log(f"mirror: fetching {', '.join(only)} alone failed "
                              f"(exit {exc.returncode}); fetching every branch")  # fmt: skip
                else:
                    self._keep_packed(mirror)
                    return tuple(only)
            began = time.monotonic_ns()
            self._ensure_mirror(url, mirror)
            # Only a fetch of every branch serves other runs (they need other branches).
            record_fetch(mirror, began)
            return None

    def _ensure_mirror(self, url: str, mirror: Path) -> None:
        if (mirror / "HEAD").is_file():
            # The URL and the mirror's refspec given here rather than ``remote set-url``
            # first: one git process per run instead of two.
            self.network(["fetch", "--prune", "--no-tags", "--no-write-fetch-head", url,
                          _MIRROR_REFSPEC],
                         cwd=mirror, settings=_MIRROR_FETCH)  # fmt: skip
            if not self._collect_garbage(mirror):
                self._keep_packed(mirror)
            return
        # (The mirror's directory exists: ``_mirror_lock`` made it for its lock file.)
        # Per process: the git of a creator that was killed may still be writing its own.
        tmp = mirror.with_name(f"{mirror.name}.tmp-{os.getpid()}")
        self.network(["clone", "--bare", "--no-tags", url, str(tmp)],
                     prepare=lambda: _rmtree(tmp), settings=_MIRROR_CLONE)  # fmt: skip
        # Renamed into place only when complete, so a killed clone never looks like a mirror.
        tmp.rename(mirror)
        from cgr_cli.run._mirror_stamp import record_collection

        record_collection(mirror, _pack_bytes(mirror))  # nothing to collect for a while

    def _collect_garbage(self, mirror: Path) -> bool:
        """Right after a fetch of every branch (which prunes the branches deleted on
        GitHub), at most once every ``MIRROR_GC_SECONDS`` and only once the mirror's packs
        have grown by ``MIRROR_GC_GROWTH`` since the last time: ``git gc --prune=now``, so
        that the objects only those branches held leave the mirror. Nothing else ever
        removes them - the geometric repack keeps every object it rolls together - and
        every local clone copies every object file (``--no-hardlinks``): a busy
        repository's mirror would grow, and each run's clone slow down, with every branch
        merged and deleted. A collection rewrites every pack (its cost grows with the
        repository): tied to growth, it costs in proportion to what came since, and a large
        repository that changes little is seldom rewritten. Under the mirror's lock (no
        clone copies meanwhile, no fetch writes); the clones made before are copies, not
        borrowers of its objects. True when it ran."""
        import time

        from cgr_cli.run._mirror_stamp import collected, record_collection

        last = collected(mirror)  # None: a mirror from before the stamp, due now
        if last is not None:
            age, before = last
            if age < MIRROR_GC_SECONDS or _pack_bytes(mirror) < before * MIRROR_GC_GROWTH:
                return False
        started = time.monotonic()
        try:
            self.run(["gc", "--prune=now", "--quiet"], cwd=mirror,
                     timeout=self.network_timeout, settings=_NO_UPKEEP)  # fmt: skip
        except GitError as exc:
            # The mirror works as it is (git's gc is safe to stop); tried again in a day.
            self._log(f"mirror: gc failed ({exc}); tried again in {MIRROR_GC_SECONDS:g} s")
        else:
            self._log(f"mirror: garbage collected in {time.monotonic() - started:.1f} s")
        record_collection(mirror, _pack_bytes(mirror))
        return True

    def _keep_packed(self, mirror: Path) -> None:
        """Roll the mirror's small packs into fewer (``repack --geometric``) once there are
        more than ``_MIRROR_MAX_PACKS``: a local clone copies each of the mirror's object
        files (``--no-hardlinks``), and each file costs (a clone of the same 302 objects
        from 41 small packs: 49 ms, from one pack: 14 ms). A geometric repack rewrites the
        small packs only, never the big one a large repository's history is in, and rolls
        in the loose objects an older cgr's fetches left. Under the mirror's lock, as the
        fetch is: no clone copies meanwhile."""
        pack_dir = mirror / "objects" / "pack"
        try:
            packs = sum(1 for name in os.listdir(pack_dir) if name.endswith(".pack"))
        except OSError:
            return
        if packs <= _MIRROR_MAX_PACKS:
            return
        done = self.run(["repack", "--geometric=2", "-d", "-q"], cwd=mirror, check=False)
        if done.returncode != 0:
            # (git before 2.33 has no --geometric.) The mirror works as it is; git's own
            # gc --auto packs it once it holds 50 packs.
            self._log(f"mirror: repack failed (exit {done.returncode}); it stays as it is")

    def clone(
        self,
        url: str,
        dest: Path,
        *,
        mirror: Path | None,
        identity: Identity,
        hardlinks: bool = True,
    ) -> None:
        """A work copy at ``dest`` whose origin is the real URL (without credentials).

        With a mirror (just fetched), the work copy is a local clone of it — objects are
        hard-linked, so no object crosses the network or is copied — and then its origin
        is pointed at the real URL. Hard links keep the copy independent of the mirror: a
        later ``fetch --prune``/``gc`` in the mirror only drops the mirror's own links.
        ``hardlinks=False`` copies the objects instead: a confined agent can write its
        checkout's files (and chmod those its uid owns), a checkout handed to another
        account is chowned, and either would change the inode the mirror shares.
        """
        # Commits by cgr and by the agent carry the configured identity (not a secret),
        # written into the new repository's config by the clone itself (``-c``).
        who = ["-c", f"user.name={identity.name}", "-c", f"user.email={identity.email}"]
        if mirror is not None and (mirror / "HEAD").is_file():
            # A path, so a local clone: hard links, no transport, nothing over the network.
            copy = [] if hardlinks else ["--no-hardlinks"]
            # A local clone walks the mirror's object directories and links or copies each
            # file; a fetch into the mirror meanwhile (another run's) renames its
            # temporary object files away under it, and the clone dies ("failed to copy
            # file ... tmp_obj_..."). Clones share the mirror's lock; a fetch waits.
            with _mirror_lock(mirror, exclusive=False):
                self.run(["clone", "--no-tags", *copy, *who, str(mirror), str(dest)])
            if not _point_origin_at(dest, mirror, url):
                self.run(["remote", "set-url", "origin", url], cwd=dest)
        else:
            self.network(["clone", "--no-tags", *who, url, str(dest)],
                         prepare=lambda: _rmtree(dest))  # fmt: skip

    def remote_refs(self, repo: Path) -> RemoteRefs:
        """origin's default branch and branch heads as the clone saw them: read from the
        clone's ref files (run/_ref_files.py), or from one git process."""
        found = read_refs(repo / ".git", _ORIGIN)
        if found is not None:
            values, symbolic = found
            target = symbolic.get("HEAD", "")
            origin_head = target.removeprefix(_ORIGIN) if target.startswith(_ORIGIN) else None
            return RemoteRefs(origin_head, {k: v for k, v in values.items() if k != "HEAD"})
        done = self.run(
            ["for-each-ref", "--format=%(objectname) %(refname) %(symref)", _ORIGIN], cwd=repo
        )
        default: str | None = None
        heads: dict[str, str] = {}
        for line in done.stdout.splitlines():
            sha, ref, *symref = line.split(" ")
            name = ref.removeprefix(_ORIGIN)
            if name == "HEAD":
                target = symref[0] if symref else ""
                default = target.removeprefix(_ORIGIN) if target.startswith(_ORIGIN) else None
            else:
                heads[name] = sha
        return RemoteRefs(default, heads)

    def default_branch(self, repo: Path) -> str:
        done = self.run(["symbolic-ref", "--short", "refs/remotes/origin/HEAD"], cwd=repo)
        return done.stdout.strip().removeprefix("origin/")

    def head(self, repo: Path) -> str:
        return self.run(["rev-parse", "HEAD"], cwd=repo).stdout.strip()

    def checkout_new(self, repo: Path, branch: str, start: str) -> None:
        self.run(["checkout", "--no-track", "-B", branch, start], cwd=repo)

    def rebase(self, repo: Path, onto: str) -> None:
        """Rebase the checked-out branch onto ``onto``; on conflict list the files, abort,
        and raise RebaseConflictError (the files are read before ``--abort`` erases them)."""
        done = self.run(["rebase", onto], cwd=repo, check=False)
        if done.returncode == 0:
            return
        files = self.run(["diff", "--name-only", "--diff-filter=U"], cwd=repo, check=False)
        conflicted = [f for f in files.stdout.splitlines() if f.strip()]
        self.run(["rebase", "--abort"], cwd=repo, check=False)
        if not conflicted:
            raise GitError("rebase", done.returncode, done.stderr or done.stdout)
        raise RebaseConflictError(conflicted)

    def commit_all(self, repo: Path, message: str) -> bool:
        """Commit everything the agent left uncommitted; False when there was nothing."""
        self.run(["add", "--all"], cwd=repo)
        if self.run(["diff", "--cached", "--quiet"], cwd=repo, check=False).returncode == 0:
            return False
        self.run(["commit", "--no-verify", "-m", message], cwd=repo, settings=_NO_UPKEEP)
        return True

    def diff(self, repo: Path, base: str) -> str:
        return self.run(["diff", "--binary", f"{base}..HEAD"], cwd=repo).stdout

    def changed_files(self, repo: Path, base: str) -> list[str]:
        done = self.run(["diff", "--name-only", f"{base}..HEAD"], cwd=repo)
        return [line for line in done.stdout.splitlines() if line]

    def new_commits(self, repo: Path, base: str) -> list[str]:
        """Commits on HEAD that ``base`` lacks, newest (HEAD) first: the head and the count
        in one process."""
        return self.run(["rev-list", f"{base}..HEAD"], cwd=repo).stdout.split()

    def commit_count(self, repo: Path, base: str) -> int:
        return int(self.run(["rev-list", "--count", f"{base}..HEAD"], cwd=repo).stdout.strip())

    def publish(
        self,
        checkout: Path,
        url: str,
        branch: str,
        *,
        commit: str,
        workdir: Path,
        mirror: Path | None,
        lease: str | None = None,
    ) -> str | None:
        """Push ``commit`` of the checkout (its HEAD, as the secret gate read it) to
        ``branch`` at ``url``; return the sha pushed (the remote branch's from then on).

        Exactly that commit is taken, by its sha: a HEAD moved after the gate read it (by a
        process the agent left behind) is not what gets pushed.

        The push runs from ``workdir``, a bare repository cgr creates (borrowing the
        mirror's objects through ``alternates``), never from the agent's checkout. Never a
        plain force: with ``lease`` (the sha the remote branch had before cgr's own
        rebase) it is ``--force-with-lease`` on exactly that.
        """
        _rmtree(workdir)
        # No template: nothing of it is used (sample hooks, which hooksPath disables anyway).
        self.run(["init", "-q", "--bare", "--template=", str(workdir)])
        if mirror is not None and (mirror / "objects").is_dir():
            alternates = workdir / "objects" / "info" / "alternates"
            alternates.write_text(f"{(mirror / 'objects').resolve()}\n", encoding="utf-8")
        # Local fetch, no token: only objects and the one ref come over.
        fetch = ["fetch", "--no-tags", "--no-write-fetch-head"]
        self._pin(checkout)  # the local upload-pack reads the checkout's config
        real = os.path.realpath(checkout)
        if real in self._trusted:
            # The local upload-pack runs in the checkout and checks its owner too; git
            # drops ``-c`` settings for a local transport, so they go on its command line.
            # It is run by a shell: the path is quoted.
            upload = f"git -c {shlex.quote(f'safe.directory={real}/.git')} upload-pack"
            fetch.append(f"--upload-pack={upload}")
        self.run([*fetch, str(checkout), f"+{commit}:refs/cgr/publish"], cwd=workdir,
                 settings=_NO_UPKEEP)  # fmt: skip
        args = ["push", url, f"refs/cgr/publish:refs/heads/{branch}"]
        if lease is not None:
            args.insert(1, f"--force-with-lease=refs/heads/{branch}:{lease}")

        def landed() -> str | None:
            # A push whose answer was lost may have updated the branch: look first.
            return commit if self.remote_sha(url, branch, cwd=workdir) == commit else None

        def push() -> str | None:
            try:
                self.run(args, cwd=workdir, timeout=self.network_timeout, auth=True)
            except GitError:
                # libcurl resends a request whose reused connection died before an answer,
                # so a push that landed can come back "rejected" (the ref already moved):
                # whatever git says, the remote branch decides.
                try:
                    if landed() is not None:
                        self._log("git push: the earlier attempt landed; not repeating it")
                        return None
                except GitError as check:
                    # Whether it landed is unknown, so this is not a verdict (even a
                    # "rejected" may be our own resent push): try again, looking first.
                    raise OutcomeUnknownError("push", check) from None
                raise
            return None

        try:
            retrying(push, what="push", policy=self.push_retry, log=self._log, before_retry=landed)
            # Pushed (git exits 0 only once the remote ref is updated) or found landed: the
            # remote branch is at ``commit``; no ls-remote round trip to be told so.
            return commit
        finally:
            _rmtree(workdir)


# A commit or fetch starts `git maintenance run --auto` (`gc --auto` before git 2.29),
# which may leave a detached gc running: in a checkout or publish.git that is a process
# outliving the run in a directory cgr is about to clean, for repositories that live one
# run or one target. Commands there run with these settings.
_NO_UPKEEP = ("maintenance.auto=false", "gc.auto=0")
# The mirror holds the branches alone: a run checks out a branch and pushes one. Not
# ``+refs/*:refs/*`` (``clone --mirror``): on GitHub that is also refs/pull/N/head and
# refs/pull/N/merge of every pull request ever opened, forks' commits included, and
# GitHub rewrites each open one's merge ref whenever its base moves - objects every fetch
# would bring and every local clone copy. Nor tags (work copies are cloned without them).
_MIRROR_REFSPEC = "+refs/heads/*:refs/heads/*"
# Protocol v0: v2's ref filtering would spare the advertisement of the refs not fetched
# (on GitHub, the pull requests' refs), but v2 spends a round trip more on each clone and
# fetch (GET info/refs, then POST ls-refs, then POST fetch; v0's GET info/refs carries the
# refs, and a mirror already up to date stops there). The fetch is on the way to every
# agent's start.
# The automatic maintenance a fetch starts (``gc --auto`` once loose objects pile up) runs
# in the foreground, under the mirror's lock: detached, it would repack and delete object
# files while a run's local clone copies them (the clone dies of it).
# A fetch that brings objects keeps them as one pack (fetch.unpackLimit=1), like the first
# clone: git unpacks fewer than 100 objects into loose files, one file per object, and
# every later local clone copies each of those files. The branch each run pushes came back
# with the next fetch as ~3 loose objects, so a mirror collected hundreds of them before
# git's gc --auto (at 6,700): 182 of them made a clone take 107 ms instead of 14.
_MIRROR_FETCH = ("protocol.version=0", "gc.autoDetach=false", "maintenance.autoDetach=false",
                 "fetch.unpackLimit=1")  # fmt: skip
# More packs than this after a fetch: roll the small ones together (Git._keep_packed).
_MIRROR_MAX_PACKS = 4
MIRROR_GC_SECONDS = 86400.0
"""How often at most a mirror's unreachable objects are collected (``Git._collect_garbage``)."""
MIRROR_GC_GROWTH = 1.25
"""...and only once its packs are this many times their size after the last collection."""
MIRROR_FULL_FETCH_SECONDS = 3600.0
"""How long fetches of a run's own branches alone may follow the mirror's last fetch of
every branch (``Git.ensure_mirror``)."""
# Over v0 a small clone is unpacked into loose objects, each of which every local clone
# would copy as a file of its own: the first clone keeps its pack, as over v2.
_MIRROR_CLONE = ("protocol.version=0", "fetch.unpackLimit=1")


@contextlib.contextmanager
def _mirror_lock(mirror: Path, *, exclusive: bool) -> Iterator[None]:
    """The flock on ``<mirror>.lock``: exclusive to create or fetch the mirror, shared to
    clone from it (released when the file is closed, or when the process dies)."""
    import fcntl

    mirror.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.with_name(mirror.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


_BRANCH_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]*\*?")


def _pack_bytes(mirror: Path) -> int:
    """The size of the mirror's pack files (a handful: ``Git._keep_packed``)."""
    pack_dir = mirror / "objects" / "pack"
    try:
        with os.scandir(pack_dir) as entries:
            return sum(e.stat().st_size for e in entries if e.name.endswith(".pack"))
    except OSError:
        return 0


def mirror_fetch_due(
    mirror: Path, needed_since: float | None, only: Sequence[str] = ()
) -> Literal["named", "every"] | None:
    """What :meth:`Git.ensure_mirror` would fetch now for a caller that needs ``only``:
    None - nothing, a fetch of every branch that began after ``needed_since``
    (``time.monotonic()``) was made by another run; ``"named"`` - ``only`` alone (names a
    refspec takes: ``narrow_refspecs``), the mirror's last fetch of every branch being
    recent (``MIRROR_FULL_FETCH_SECONDS``); ``"every"`` - every branch (no mirror yet, no
    recent fetch of every branch, or ``only`` empty or not fetchable alone). Read without
    the mirror's lock, it is a forecast; ``ensure_mirror`` asks again under the lock."""
    import time

    from cgr_cli.run._mirror_stamp import fetched_since

    if not (mirror / "HEAD").is_file():
        return "every"
    if needed_since is not None and fetched_since(mirror, int(needed_since * 1e9)):
        return None
    recent = time.monotonic_ns() - int(MIRROR_FULL_FETCH_SECONDS * 1e9)
    named = narrow_refspecs(only) is not None and fetched_since(mirror, recent)
    return "named" if named else "every"


def mirror_holds(mirror: Path, branches: Sequence[str], remote: Mapping[str, str]) -> bool:
    """Whether the mirror's branches that ``branches`` name (names, ``prefix*``) are
    exactly ``remote``'s (``{branch: sha}``): none more, none fewer, none elsewhere. Read
    from its ref files; False whenever only git could tell (``_ref_files``)."""
    found = read_refs(mirror, "refs/heads/")
    if found is None:
        return False
    values, symbolic = found
    if any(covers(branches, name) for name in symbolic):
        return False
    mine = {name: sha for name, sha in values.items() if covers(branches, name)}
    return mine == {name: sha for name, sha in remote.items() if covers(branches, name)}


def narrow_refspecs(branches: Sequence[str]) -> list[str] | None:
    """Refspecs that fetch ``branches`` (names, or a ``prefix*`` pattern: git's refspec
    glob) into the mirror under the same names; None - fetch every branch - for a name
    this conservative check does not pass (any character a refspec or refname could
    read otherwise, ``..``, ``//``, a ``.lock`` end)."""
    if not branches:
        return None
    for name in branches:
        if (
            not _BRANCH_PATTERN.fullmatch(name)
            or ".." in name
            or "//" in name
            or name.rstrip("*").endswith((".lock", "/", "."))
        ):
            return None
    return [f"+refs/heads/{name}:refs/heads/{name}" for name in branches]


def covers(fresh: Sequence[str] | None, branch: str) -> bool:
    """Whether a mirror fetch fresh for ``fresh`` (``ensure_mirror``'s answer) covers
    ``branch``."""
    if fresh is None:
        return True
    return any(branch.startswith(p[:-1]) if p.endswith("*") else branch == p for p in fresh)


_PLAIN_CONFIG_VALUE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/?[]@!$&'()*+,=%"
)


def _point_origin_at(repo: Path, mirror: Path, url: str) -> bool:
    """``git remote set-url origin URL`` on a clone just made from ``mirror``, without a git
    process: the one line git wrote (``url = <mirror>`` in ``[remote "origin"]``) rewritten.
    False - and nothing written - unless the file is exactly as expected and both values
    need no quoting in git's config syntax; the caller then asks git."""
    config = repo / ".git" / "config"
    values = (str(mirror), url)
    if not all(v and set(v) <= _PLAIN_CONFIG_VALUE for v in values):
        return False
    try:
        text = config.read_text(encoding="utf-8")
    except OSError:
        return False
    lines = text.split("\n")
    section = [i for i, line in enumerate(lines) if line == '[remote "origin"]']
    found = [i for i, line in enumerate(lines) if line == f"\turl = {mirror}"]
    if len(section) != 1 or len(found) != 1 or found[0] != section[0] + 1:
        return False
    lines[found[0]] = f"\turl = {url}"
    temporary = config.with_name("config.cgr-tmp")
    temporary.write_text("\n".join(lines), encoding="utf-8")
    os.replace(temporary, config)  # whole or not at all, as git's own config.lock rename
    return True


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
