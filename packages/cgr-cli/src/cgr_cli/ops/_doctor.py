"""``cgr doctor``: check a whole installation, one line per check, each with its fix.

Checks run in a fixed order and each reports ``pass``, ``warn``, ``fail`` or ``skip`` with
a one-line detail and, unless it passed, the exact thing to do. A check that cannot run
(the configuration is invalid, systemctl is missing) says ``skip`` and why, never a silent
pass. ``--fix`` repairs what cgr can repair itself: missing labels, a missing workspace
root, an old database schema. Only failures make the exit code non-zero.

The GitHub token is used through ``GitHubClient`` only; no message, JSON field or
exception text here ever contains it.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgr_cli._errors import CgrError
from cgr_cli.config._model import Config

if TYPE_CHECKING:
    from cgr_discovery import AppInstallations, DiscoveryError, GitHubClient

GIB = 1024**3
# cgr hands the token to git through GIT_CONFIG_COUNT/KEY_n/VALUE_n, which git reads
# since 2.31; an older git would ignore it and fall back to asking for a password.
MIN_GIT = (2, 31)
DAEMON_SERVICE = "cgr-daemon.service"
TICK_TIMER = "cgr-tick.timer"
# Colours and descriptions of the labels cgr uses, for `--fix`.
_LABEL_STYLE = {
    "ready": ("0e8a16", "cgr: ready for the runner to pick up"),
    "in_progress": ("fbca04", "cgr: a run is working on this"),
    "needs_human": ("d93f0b", "cgr: the run needs a person to look at it"),
    "blocked": ("b60205", "cgr: do not run on this"),
    "done": ("5319e7", "cgr: a run finished with a pull request"),
}
_ENABLED = frozenset({"enabled", "enabled-runtime"})


class CheckStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - a check's outcome, not a password
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One line of the report: ``fix`` says what to do when it did not pass."""

    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _fail(name: str, detail: str, fix: str | None, data: dict[str, Any] | None = None) -> Check:
    """A failed check: what is wrong (``detail``) and what to do (``fix``)."""
    return Check(
        name=name,
        status=CheckStatus.FAIL,
        detail=detail,
        fix=fix,
        data={} if data is None else data,
    )


@dataclass(slots=True)
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status is not CheckStatus.FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [{**asdict(c), "status": str(c.status)} for c in self.checks],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DoctorOptions:
    """``confirm`` (if given) is asked before creating missing labels without ``fix``.

    ``systemctl`` is the program to ask (``None``: skip that check); ``systemd_root`` runs
    it with ``--root`` (tests use a unit tree in a temporary directory).
    """

    config_path: str | None = None
    fix: bool = False
    min_free_bytes: int = 2 * GIB
    timeout: float = 20.0
    systemctl: str | None = "systemctl"
    systemd_root: Path | None = None
    confirm: Callable[[str], bool] | None = None


def run_doctor(
    options: DoctorOptions, on_check: Callable[[Check], None] | None = None
) -> DoctorReport:
    """Run every check; ``on_check`` sees each result as soon as it is known."""
    report = DoctorReport()

    def add(check: Check) -> None:
        report.checks.append(check)
        if on_check is not None:
            on_check(check)

    config_check, config = check_config(options.config_path)
    add(config_check)
    add(check_git())
    if config is None:
        for name in ("database", "workspace", "agent", "sandbox", "github", "repositories",
                     "systemd"):  # fmt: skip
            add(Check(name=name, status=CheckStatus.SKIP, detail="needs a valid configuration"))
        return report
    if config.database_url is not None:  # a fleet on PostgreSQL: server, schema, clock
        for check in postgres_checks(config, config.database_url):
            add(check)
    else:
        add(check_database(config.database, fix=options.fix))
    add(check_workspace(config, options.min_free_bytes, fix=options.fix))
    add(check_agent(config, timeout=options.timeout))
    add(check_sandbox(config))
    import anyio

    anyio.run(_github_checks, config, options, add)
    add(check_systemd(options.systemctl, options.systemd_root))
    return report


def postgres_checks(
    config: Config, url: str, *, clock: Callable[[], float] = time.time
) -> list[Check]:
    """``database`` and ``clock`` for a store on PostgreSQL (_doctor_fleet); ``clock``:
    this host's clock (a test offsets it)."""
    from cgr_cli.ops._doctor_fleet import check_postgres

    return [
        Check(name=f.name, status=CheckStatus(f.status), detail=f.detail, fix=f.fix, data=f.data)
        for f in check_postgres(config, url, clock=clock)
    ]


# -- configuration -------------------------------------------------------------------------


def check_config(path: str | None) -> tuple[Check, Config | None]:
    from cgr_cli._errors import ConfigError, ConfigNotFoundError
    from cgr_cli.config._load import default_config_paths, load_config

    name = "configuration"
    try:
        config, found = load_config(path)
    except ConfigNotFoundError as exc:
        return _fail(
            name, str(exc), "give an existing file with --config, or write one: cgr init"
        ), None
    except ConfigError as exc:
        return _fail(
            name,
            str(exc),
            f"edit {exc.source or 'the file'} at the key named above "
            "(`cgr config check` shows the effective settings)",
        ), None
    if found is None:
        looked = ", ".join(str(p) for p in default_config_paths())
        return _fail(
            name,
            f"no configuration file found (looked at $CGR_CONFIG, {looked})",
            "write one: cgr init OWNER/NAME (or cgr init --system)",
        ), None
    if not config.repositories:
        return _fail(
            name,
            f"{found}: no repositories configured; cgr would do nothing",
            f'add repositories = ["OWNER/NAME"] to {found}',
            {"path": str(found)},
        ), config
    count = len(config.repositories)
    return Check(
        name=name,
        status=CheckStatus.PASS,
        detail=f"{found}: valid, {count} repositor{'y' if count == 1 else 'ies'}",
        data={"path": str(found), "repositories": list(config.repositories)},
    ), config


# -- database ------------------------------------------------------------------------------


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_dir(path: Path) -> bool:
    """Really create a file there: os.access says yes to root on a read-only mount."""
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".cgr-doctor-"):
            return True
    except OSError:
        return False


def check_database(path: Path, *, fix: bool = False) -> Check:  # noqa: PLR0911 - one per outcome
    from cgr_store import SCHEMA_VERSION, SQLiteStore, StoreError

    name = "database"
    data: dict[str, Any] = {"path": str(path), "schema_current": SCHEMA_VERSION}
    if not path.exists():
        ancestor = _existing_ancestor(path.parent)
        if ancestor.is_dir() and _writable_dir(ancestor):
            return Check(
                name=name,
                status=CheckStatus.PASS,
                data=data,
                detail=f"{path} does not exist yet; it is created on first use",
            )
        return _fail(
            name,
            f"{path} cannot be created: {ancestor} is not a writable directory",
            f"create {path.parent} writable by the user cgr runs as, "
            "or set paths.database elsewhere",
            data,
        )
    if path.is_dir():
        return _fail(name, f"{path} is a directory", "set paths.database to a file path", data)
    try:
        # Read-only first: doctor must not migrate (or create) anything without --fix.
        uri = path.absolute().as_uri() + "?mode=ro"
        with closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        return _fail(
            name,
            f"{path} cannot be read as SQLite: {exc}",
            "point paths.database at another file, or move this one away",
            data,
        )
    data["schema_version"] = version
    migrated = ""
    if 0 < version < SCHEMA_VERSION and not fix:
        return _fail(
            name,
            f"{path} has schema version {version}; this cgr uses {SCHEMA_VERSION}",
            f"back it up (cp {path} {path}.bak), then `cgr doctor --fix` migrates it "
            "(so would any cgr command)",
            data,
        )
    if 0 < version < SCHEMA_VERSION:
        migrated = f" (migrated from version {version})"
    try:
        # Validates the file (ours, not damaged, not too new) and, with --fix, migrates it.
        with SQLiteStore(path, busy_deadline=10.0) as store:
            version = store.schema_version
    except StoreError as exc:
        return _fail(name, str(exc), "see above; the file was left as it was", data)
    data["schema_version"] = version
    problem = _write_probe(path)
    if problem is not None:
        return _fail(
            name,
            f"{path} is not writable: {problem}",
            f"make {path} and its directory writable by the user cgr runs as",
            data,
        )
    return Check(
        name=name,
        status=CheckStatus.PASS,
        data=data,
        detail=f"{path}: writable, schema version {version} (current){migrated}",
    )


def _write_probe(path: Path) -> str | None:
    """Take SQLite's write lock and give it back: proves writes work, changes nothing."""
    if not os.access(path.parent, os.W_OK):
        return f"its directory {path.parent} is read-only (SQLite needs it for the WAL)"
    try:
        with closing(sqlite3.connect(path, timeout=10.0, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return str(exc)
    return None


# -- workspace -----------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def check_workspace(config: Config, min_free: int, *, fix: bool = False) -> Check:
    name, root = "workspace", config.workspace_root
    data: dict[str, Any] = {"path": str(root), "min_free_bytes": min_free}
    created = ""
    if not root.exists() and fix:
        try:
            root.mkdir(mode=0o700, parents=True)
            created = " (created)"
        except OSError as exc:
            return _fail(
                name,
                f"cannot create {root}: {exc.strerror}",
                f"create {root} writable by the user cgr runs as",
                data,
            )
    probe = root if root.exists() else _existing_ancestor(root)
    if not probe.is_dir():
        return _fail(
            name, f"{probe} is not a directory", "set paths.workspace_root to a directory", data
        )
    if not _writable_dir(probe):
        return _fail(
            name,
            f"{probe} is not writable",
            f"make {probe} writable by the user cgr runs as, or set paths.workspace_root elsewhere",
            data,
        )
    free = shutil.disk_usage(probe).free
    data["free_bytes"] = free
    if free < min_free:
        return _fail(
            name,
            f"only {_gib(free)} free under {probe}; cgr wants at least {_gib(min_free)}",
            "free some space (old runs: cgr reap), or move paths.workspace_root",
            data,
        )
    from cgr_cli.run._agent_gate import SLOTS_DIR, slots_problem

    if problem := slots_problem(config):
        return _fail(
            name,
            f"the agent slots cannot be used: {problem}",
            f"remove {root / SLOTS_DIR} while no run is working (cgr makes it again)",
            data,
        )
    state = "writable" if root.exists() else f"does not exist yet; {probe} is writable"
    return Check(
        name=name,
        status=CheckStatus.PASS,
        data=data,
        detail=f"{root}: {state}{created}, {_gib(free)} free",
    )


# -- programs ------------------------------------------------------------------------------


def _version_tuple(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


def check_git() -> Check:
    name = "git"
    git = shutil.which("git")
    if git is None:
        return _fail(
            name, "git is not on PATH", "install git 2.31 or newer (e.g. apt-get install git)"
        )
    try:
        done = subprocess.run(
            [git, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _fail(name, f"{git} --version: {exc}", "reinstall git")
    version = done.stdout.strip()
    data = {"path": git, "version": version}
    if _version_tuple(version)[:2] < MIN_GIT:
        return _fail(
            name,
            f"{version or 'unknown version'} at {git}: too old",
            "install git 2.31 or newer (cgr passes the token through GIT_CONFIG_COUNT)",
            data,
        )
    return Check(name=name, status=CheckStatus.PASS, detail=f"{version} ({git})", data=data)


def check_agent(config: Config, *, timeout: float = 20.0) -> Check:
    """Whether the agent can be used is the preflight's answer (``ask_agent``); doctor adds
    where its release stands against the tested range."""
    from cgr_cli.run._preflight import ask_agent

    answer = ask_agent(config, timeout=timeout)
    data: dict[str, Any] = {}
    if answer.output is not None:
        data = {"path": answer.program, "version": answer.output}
    if answer.problem is not None:
        detail = answer.problem
        if answer.program is None:  # not found: show the PATH it was looked for on
            detail += f" (PATH={os.environ.get('PATH', '')})"
        return _fail("agent", detail, answer.fix, data)
    # No problem: it was found and answered, so both are set.
    program, output = answer.program or "", answer.output or ""
    return _agent_release(output, program, config.agent.extra_args, data)


def _agent_release(
    reported: str, program: str, extra_args: list[str], data: dict[str, Any]
) -> Check:
    """Where the release stands against the range ``nox -s e2e`` tests: fail below the
    oldest supported (cgr refuses to run it), warn above the newest tested or when the
    program is not Claude Code, pass in between."""
    from cgr_cli.run._agent_cli import (
        NEWEST_TESTED,
        OLDEST_SUPPORTED,
        AgentCli,
        AgentVersionError,
        ClaudeVersion,
        Support,
    )

    cli = AgentCli(ClaudeVersion.parse(reported), reported)
    tested = f"{OLDEST_SUPPORTED} to {NEWEST_TESTED}"
    data.update(release=str(cli.version) if cli.version else None, support=str(cli.support))
    data["tested"] = [str(OLDEST_SUPPORTED), str(NEWEST_TESTED)]
    upgrade = "npm install -g @anthropic-ai/claude-code"
    if cli.support is Support.UNKNOWN:
        return Check(
            name="agent",
            status=CheckStatus.WARN,
            data=data,
            detail=f"{reported!r} ({program}) is not Claude Code's version line; cgr tests "
            f"Claude Code {tested} and gives this program the oldest one's flags",
            fix="point agent.command at Claude Code, or make sure the program takes its flags",
        )
    if cli.support is Support.TOO_OLD:
        return _fail(
            "agent",
            f"Claude Code {cli.version} ({program}) is older than the oldest release "
            f"cgr supports, {OLDEST_SUPPORTED}; runs are refused",
            f"upgrade it ({upgrade}) or point agent.command at a newer release",
            data,
        )
    try:
        cli.check(extra_args)
    except AgentVersionError as exc:
        fix = f"upgrade the agent ({upgrade}) or edit agent.extra_args"
        return _fail("agent", str(exc), fix, data)
    if cli.support is Support.NEWER:
        return Check(
            name="agent",
            status=CheckStatus.WARN,
            data=data,
            detail=f"Claude Code {cli.version} ({program}) is newer than the newest release "
            f"cgr was tested with ({tested}); it is used, and unknown output is ignored",
            fix="if runs misbehave, install the newest tested release "
            f"(npm install -g @anthropic-ai/claude-code@{NEWEST_TESTED}) and report it",
        )
    return Check(
        name="agent",
        status=CheckStatus.PASS,
        data=data,
        detail=f"{reported} ({program}), in the tested range {tested}",
    )


def check_sandbox(config: Config, environ: dict[str, str] | None = None) -> Check:
    """What confinement this machine offers and what ``agent.sandbox`` puts in force."""
    from cgr_cli._errors import ConfigError
    from cgr_cli.run._agent import agent_env
    from cgr_cli.run._agent_account import check_reachable
    from cgr_cli.run._sandbox import RunPaths, plan_sandbox
    from cgr_exec import probe_confinement

    environ = dict(os.environ if environ is None else environ)
    support = probe_confinement()
    available = "; ".join(support.lines())
    root = config.workspace_root
    paths = RunPaths.of(config, root / "targets" / "doctor" / "repo", root / "doctor")
    data: dict[str, Any] = {"available": support.lines(), "mode": config.agent.sandbox.mode}
    try:
        plan = plan_sandbox(
            config, paths, agent_env(config.agent, environ), support=support, environ=environ
        )
    except ConfigError as exc:
        detail = f"{exc} (available: {available})"
        return _fail("sandbox", detail, "choose an agent.sandbox.mode this machine supports", data)
    data["in_force"] = plan.describe()
    try:
        # User modes: the account exists and can reach the workspace (else runs refuse).
        check_reachable(config)
    except ConfigError as exc:
        detail = f"{exc} (in force: {plan.describe()})"
        reach = "let the agent's account reach the workspace, as the detail says"
        return _fail("sandbox", detail, reach, data)
    status = CheckStatus.PASS if plan.confined else CheckStatus.WARN
    fix = (
        None
        if plan.confined
        else (
            "the agent can read cgr's configuration and other runs; set agent.sandbox.mode = "
            '"landlock" where the kernel supports it'
        )
    )
    return Check(name="sandbox", status=status, data=data, fix=fix,
                 detail=f"in force: {plan.describe()} (available: {available})")  # fmt: skip


# -- GitHub --------------------------------------------------------------------------------


_CLASSIC_SCOPES_NEEDED = ("repo",)
# Advice text only; it holds no token.
_CREDENTIAL_ADVICE = (
    "create a token for the bot account (classic: scope `repo`; fine-grained: Contents, "
    "Issues and Pull requests read and write) and set $CGR_GITHUB_TOKEN or github.token"
)


async def _github_checks(
    config: Config, options: DoctorOptions, add: Callable[[Check], None]
) -> None:
    import anyio.to_thread

    from cgr_discovery import (
        AuthError,
        DiscoveryError,
        GitHubClient,
        RetryPolicy,
        TokenAuth,
    )

    if config.github.app_mode:
        await _app_checks(config, options, add)
        return
    token = config.github.resolved_token()
    if token is None:
        add(
            _fail(
                "github",
                "no GitHub token: github.token is not set and $CGR_GITHUB_TOKEN is empty",
                _CREDENTIAL_ADVICE,
            )
        )
        add(Check(name="repositories", status=CheckStatus.SKIP, detail="needs a GitHub token"))
        return
    # Few retries and no long rate-limit waits: a doctor answers now or says why not.
    retry = RetryPolicy(attempts=2, max_rate_limit_wait=0.0)
    async with GitHubClient(
        auth=TokenAuth(token.reveal(), source="configuration"),
        base_url=config.github.api_url,
        retry=retry,
        timeout=options.timeout,
        cache=None,
    ) as gh:
        try:
            auth_check, login = await _check_auth(gh, config)
        except AuthError as exc:
            add(_fail("github", str(exc), _CREDENTIAL_ADVICE))
            add(
                Check(
                    name="repositories",
                    status=CheckStatus.SKIP,
                    detail="needs working GitHub authentication",
                )
            )
            return
        except DiscoveryError as exc:
            add(
                _fail(
                    "github",
                    f"cannot talk to {config.github.api_url}: {exc}",
                    "check github.api_url, the network and any proxy settings",
                )
            )
            add(Check(name="repositories", status=CheckStatus.SKIP, detail="GitHub unreachable"))
            return
        add(auth_check)
        for repo in config.repositories:
            repo_check, answered = await _guarded(
                f"repository {repo}", _check_repo(gh, repo, login), _repo_failure(repo, login)
            )
            add(repo_check)
            if answered:
                labels, _ = await _guarded(
                    f"labels {repo}", _check_labels(gh, config, repo, options), _LABELS_FIX
                )
                add(labels)
                # Blocking git in a worker thread: the event loop keeps the client alive.
                add(await anyio.to_thread.run_sync(check_repo_file, config, repo, options.timeout))


_LABELS_FIX = "the account needs the Triage or Write role to manage labels"

# What cgr does as a GitHub App: labels, comments, reactions and assignees (issues), pull
# requests, pushing branches (contents); metadata comes with every App.
APP_PERMISSIONS = {"issues": "write", "pull_requests": "write", "contents": "write",
                   "metadata": "read"}  # fmt: skip
_LEVELS = {"read": 1, "write": 2, "admin": 3}
_APP_KEY_FIX = (
    "generate a private key on the App's settings page (GitHub → Settings → Developer "
    "settings → GitHub Apps → your App → Private keys) and set github.private_key_file to it"
)


def missing_app_permissions(granted: dict[str, Any]) -> list[str]:
    """``name: level`` for each permission cgr needs that ``granted`` lacks or has lower."""
    return [
        f"{name}: {level}"
        for name, level in APP_PERMISSIONS.items()
        if _LEVELS.get(str(granted.get(name, "")), 0) < _LEVELS[level]
    ]


async def _app_checks(config: Config, options: DoctorOptions, add: Callable[[Check], None]) -> None:
    """As a GitHub App: the key signs, GitHub knows the App, each installation (all of
    them, or ``installation_id``) gives a token and grants the permissions cgr needs, and
    the repositories it follows."""
    from cgr_cli.run._github_auth import followed, github_auth
    from cgr_discovery import AppInstallations, AuthError, DiscoveryError, GitHubClient, RetryPolicy

    g = config.github
    skip_repos = Check(name="repositories", status=CheckStatus.SKIP, detail="needs the App")
    try:
        auth = github_auth(config)
        jwt_ok = isinstance(auth, AppInstallations) and bool(auth.app_jwt())
    except (CgrError, AuthError) as exc:
        add(_fail("github app", str(exc), _APP_KEY_FIX))
        add(skip_repos)
        return
    if not jwt_ok or not isinstance(auth, AppInstallations):  # pragma: no cover - app_mode
        return
    retry = RetryPolicy(attempts=2, max_rate_limit_wait=0.0)
    async with GitHubClient(
        auth=auth, base_url=g.api_url, retry=retry, timeout=options.timeout, cache=None
    ) as gh:
        try:
            app = await gh.getitem("/app", jwt=auth.app_jwt())
        except DiscoveryError as exc:
            add(_fail("github app", f"GitHub refused App {g.app_id}'s JWT: {exc}",
                      "check github.app_id (the App ID on its settings page) and that "
                      "private_key_file is a current key of that App"))  # fmt: skip
            add(skip_repos)
            return
        bot = f"{app.get('slug')}[bot]"
        add(Check(name="github app", status=CheckStatus.PASS,
                  detail=f"App {g.app_id} ({app.get('slug')}): the key signs; its bot is {bot}",
                  data={"slug": app.get("slug"), "bot_login": bot}))  # fmt: skip
        if not await _installation_checks(auth, gh, add):
            add(skip_repos)
            return
        try:
            repos = await followed(config, auth, gh)
        except DiscoveryError as exc:
            add(_fail("repositories", str(exc), "check the App's installations"))
            return
        if not repos:
            add(_fail("repositories", f"no repository of the installations matches "
                      f"{', '.join(config.repositories) or '(none configured)'}",
                      "add repositories to the App's installations, or change "
                      "`repositories`"))  # fmt: skip
            return
        add(Check(name="repositories", status=CheckStatus.PASS,
                  detail=f"{len(repos)} followed: {', '.join(repos[:10])}"
                  + (" …" if len(repos) > 10 else ""), data={"repositories": repos}))  # fmt: skip
        for repo in repos:
            labels, _ = await _guarded(
                f"labels {repo}", _check_labels(gh, config, repo, options), _LABELS_FIX
            )
            add(labels)


_INSTALL_FIX = (
    "install the App on the accounts whose repositories cgr follows (the App's public "
    "page → Install), or set github.installation_id to one installation's id"
)


async def _installation_checks(
    auth: AppInstallations, gh: GitHubClient, add: Callable[[Check], None]
) -> bool:
    """One check per installation: a token is minted and the permissions suffice.
    Returns whether any installation can be used."""
    from cgr_discovery import AuthError, DiscoveryError

    try:
        installations = await auth.installations(gh)
    except (AuthError, DiscoveryError) as exc:
        add(_fail("installation", str(exc), _INSTALL_FIX))
        return False
    if not installations:
        add(_fail("installation", f"GitHub App {auth.app_id} is not installed on any account",
                  _INSTALL_FIX))  # fmt: skip
        return False
    usable = False
    for found in installations:
        ident = str(found["id"])
        account = str((found.get("account") or {}).get("login") or "?")
        where = f"installation {ident} ({account})"
        try:
            await auth.installation(ident).token(gh)
        except (AuthError, DiscoveryError) as exc:
            add(_fail("installation", f"{where}: {exc}",
                      "check the installation on the App's settings page (Install App): "
                      "it may be suspended"))  # fmt: skip
            continue
        granted = dict(found.get("permissions") or {})
        missing = missing_app_permissions(granted)
        usable = usable or not missing
        add(Check(
            name="installation",
            status=CheckStatus.FAIL if missing else CheckStatus.PASS,
            detail=f"{where}: a token was minted; "
            + (f"missing {', '.join(missing)}" if missing else "issues, pull requests and "
               "contents: write; metadata: read"),
            fix="on the App's settings page, Permissions & events: grant "
            + ", ".join(missing) + f"; then accept the new permissions on {account}'s "
            "installation (Settings → Applications → Configure)"
            if missing else None,
            data={"id": int(ident), "account": account, "permissions": granted},
        ))  # fmt: skip
    return usable


def _repo_failure(repo: str, login: str | None) -> Explain:
    """What to say when GitHub refused or failed a repository check, by what it said."""

    def explain(exc: DiscoveryError) -> tuple[str, str]:
        from cgr_discovery import GitHubRequestError

        if isinstance(exc, GitHubRequestError) and exc.status_code == 404:
            return (
                f"{repo} not found, or {login or 'the token'} cannot see it",
                f"check the name in `repositories`; give {login or 'the account'} access to "
                "it (a collaborator with the Write role)",
            )
        if isinstance(exc, GitHubRequestError):
            return str(exc), "see GitHub's message above"
        return str(exc), "check the network; run cgr doctor again"

    return explain


# (detail, fix) for a check that GitHub refused or failed
Explain = Callable[["DiscoveryError"], tuple[str, str]]


async def _guarded(
    name: str, check: Awaitable[Check], explain: str | Explain
) -> tuple[Check, bool]:
    """``(check's result, True)``, or a failed check named ``name`` and False when GitHub
    refused or failed (``explain``: the fix, or a function giving detail and fix)."""
    from cgr_discovery import DiscoveryError

    try:
        return await check, True
    except DiscoveryError as exc:
        detail, fix = (str(exc), explain) if isinstance(explain, str) else explain(exc)
        return _fail(name, detail, fix), False


async def _check_auth(gh: GitHubClient, config: Config) -> tuple[Check, str | None]:
    from gidgethub import sansio

    from cgr_discovery import GitHubRequestError

    url = sansio.format_url("/user", {}, base_url=gh.base_url)
    headers = sansio.create_headers(gh.requester, accept=sansio.accept_format())
    data: dict[str, Any] = {}
    login: str | None
    try:
        response = await gh.send("GET", url, headers)
    except GitHubRequestError as exc:
        # GitHub App installation tokens may not read /user (403 "Resource not accessible
        # by integration"); they still work for everything cgr does per repository.
        if exc.status_code != 403:
            raise
        login = config.github.bot_login
        kind = "GitHub App installation token (GET /user not allowed)"
        scopes_text = "permissions are those of the app installation, checked per repository"
    else:
        user = response.json()
        login = str(user.get("login"))
        kind = f"{login} ({user.get('type', 'User')})"
        raw = response.headers.get("x-oauth-scopes")
        if raw is None:
            scopes_text = (
                "no x-oauth-scopes header (a fine-grained or app token): "
                "permissions checked per repository"
            )
        else:
            scopes = sorted(s.strip() for s in raw.split(",") if s.strip())
            data["scopes"] = scopes
            scopes_text = f"scopes: {', '.join(scopes) or '(none)'}"
            missing = [s for s in _CLASSIC_SCOPES_NEEDED if s not in scopes]
            if missing:
                return _fail(
                    "github",
                    f"token of {kind}: {scopes_text}; cgr needs `repo`",
                    "give the token the `repo` scope (Settings → Developer settings → "
                    "Tokens), or use a fine-grained token",
                    data,
                ), login
    data["login"] = login
    stats = gh.stats()
    data["rate_limit"] = {
        "limit": stats.rate_limit_limit,
        "remaining": stats.rate_limit_remaining,
        "reset": stats.rate_limit_reset.isoformat() if stats.rate_limit_reset else None,
    }
    quota = (
        f"rate limit {stats.rate_limit_remaining}/{stats.rate_limit_limit}"
        + (f", resets {stats.rate_limit_reset:%H:%M} UTC" if stats.rate_limit_reset else "")
        if stats.rate_limit_limit is not None
        else "rate limit not reported"
    )
    detail = f"authenticated as {kind}; {scopes_text}; {quota}"
    if config.github.bot_login and login and config.github.bot_login.lower() != login.lower():
        return _fail(
            "github",
            f"github.bot_login is {config.github.bot_login!r} but the token belongs to {login!r}",
            f"set github.bot_login = {login!r} (or remove it), or use the bot's token",
            data,
        ), login
    if stats.rate_limit_remaining == 0:
        return _fail(
            "github", detail, "wait for the reset, or give cgr a token of its own", data
        ), login
    return Check(name="github", status=CheckStatus.PASS, data=data, detail=detail), login


async def _check_repo(gh: GitHubClient, repo: str, login: str | None) -> Check:
    owner, name = repo.split("/", 1)
    data: dict[str, Any] = await gh.getitem("/repos/{owner}/{repo}", {"owner": owner, "repo": name})
    check_name = f"repository {repo}"
    full = str(data.get("full_name", repo))
    facts = {"full_name": full, "permissions": data.get("permissions")}
    if full.lower() != repo.lower():
        return _fail(
            check_name,
            f"{repo} was renamed or moved to {full}",
            f"write {full!r} in `repositories`",
            facts,
        )
    if data.get("archived"):
        return _fail(
            check_name,
            f"{repo} is archived (read-only)",
            "unarchive it, or remove it from `repositories`",
            facts,
        )
    if data.get("has_issues") is False:
        return _fail(
            check_name,
            f"{repo} has issues turned off",
            "turn on Issues in the repository's settings",
            facts,
        )
    permissions = data.get("permissions")
    if not isinstance(permissions, dict):
        return Check(
            name=check_name,
            status=CheckStatus.WARN,
            data=facts,
            detail=f"{repo}: reachable; GitHub did not report the token's permissions",
            fix="make sure the token may push, and write issues and pull requests",
        )
    granted = [k for k in ("admin", "maintain", "push", "triage", "pull") if permissions.get(k)]
    if not permissions.get("push"):
        who = login or "the account"
        return _fail(
            check_name,
            f"{who} may only {', '.join(granted) or 'nothing'} on {repo}; cgr needs "
            "push (branches), and to write issues (labels, comments) and pull requests",
            f"add {who} as a collaborator with the Write role "
            "(or grant the fine-grained token Contents, Issues and Pull requests: write)",
            facts,
        )
    return Check(
        name=check_name,
        status=CheckStatus.PASS,
        data=facts,
        detail=f"{repo}: reachable; issues, pull requests and push allowed ({', '.join(granted)})",
    )


# -- a repository's own settings file -----------------------------------------------------


def check_repo_file(config: Config, repo: str, timeout: float | None = None) -> Check:
    """Fetch the default branch's ``.github/cgr.toml`` (or ``.cgr.toml``) and validate it
    as a run would: fail when it is invalid (the key named), warn when it asks for more
    than the host allows (those values are not applied), pass otherwise."""
    from cgr_cli._errors import ConfigError, GitError
    from cgr_cli._redact import Redactor
    from cgr_cli.run._repo_file import fetch_for

    name = f"repository file {repo}"
    token = config.github.resolved_token()
    redact = Redactor([token.reveal()] if token else [])
    try:
        settings = fetch_for(config, repo, timeout=timeout)
    except ConfigError as exc:
        return _fail(
            name,
            f"{repo}: {redact(str(exc))}",
            f"fix {exc.source or 'the file'} on {repo}'s default branch at the key named "
            f"(runs there fail until then); `cgr config check --repo {repo}` checks it again",
            {"key": exc.key, "file": exc.source},
        )
    except GitError as exc:
        code = "timed out" if exc.returncode is None else f"exit code {exc.returncode}"
        return _fail(
            name,
            f"{repo}: could not fetch its default branch (git {exc.command}: {code})",
            "the token must be able to read the repository's code (Contents: read)",
        )
    if settings.source is None:
        return Check(
            name=name,
            status=CheckStatus.PASS,
            detail=f"{repo}: no .github/cgr.toml or .cgr.toml; the host's settings apply",
        )
    data = {
        "file": settings.source,
        "setup": len(settings.setup),
        "check": len(settings.check),
        "tightened": sorted(settings.origins),
        "not_applied": list(settings.notes),
    }
    summary = (
        f"{repo}: {settings.source} is valid ({len(settings.setup)} set-up, "
        f"{len(settings.check)} check command(s)"
        + (", instructions" if settings.instructions else "")
        + ")"
    )
    if settings.notes:
        return Check(
            name=name,
            status=CheckStatus.WARN,
            detail=f"{summary}; not applied: " + " | ".join(settings.notes),
            fix="lower those values in the repository's file, or raise the host's limits",
            data=data,
        )
    return Check(name=name, status=CheckStatus.PASS, detail=summary, data=data)


def needed_labels(config: Config) -> list[tuple[str, str, str]]:
    """(name, colour, description) of every label cgr reads or writes."""
    labels = config.labels
    out = [
        (labels.ready, *_LABEL_STYLE["ready"]),
        (labels.in_progress, *_LABEL_STYLE["in_progress"]),
        (labels.needs_human, *_LABEL_STYLE["needs_human"]),
        *((name, *_LABEL_STYLE["blocked"]) for name in labels.blocked),
    ]
    if labels.done:
        out.append((labels.done, *_LABEL_STYLE["done"]))
    seen: set[str] = set()
    unique = []
    for item in out:
        if item[0].lower() not in seen:
            seen.add(item[0].lower())
            unique.append(item)
    return unique


async def _check_labels(
    gh: GitHubClient, config: Config, repo: str, options: DoctorOptions
) -> Check:
    from cgr_discovery import RunGitHub

    github = RunGitHub(gh)
    check_name = f"labels {repo}"
    # GitHub compares label names without regard to case.
    present = {str(label["name"]).lower() for label in await github.list_labels(repo)}
    missing = [spec for spec in needed_labels(config) if spec[0].lower() not in present]
    if not missing:
        return Check(
            name=check_name,
            status=CheckStatus.PASS,
            detail=f"{repo}: all {len(needed_labels(config))} labels exist",
        )
    names = ", ".join(spec[0] for spec in missing)
    create = options.fix or (
        options.confirm is not None and options.confirm(f"Create the labels {names} in {repo}?")
    )
    if not create:
        return _fail(
            check_name,
            f"{repo}: missing {names}",
            "cgr doctor --fix creates them (or create them on the repository's Labels page)",
            {"missing": [spec[0] for spec in missing]},
        )
    for label, color, description in missing:
        await github.create_label(repo, label, color=color, description=description)
    return Check(
        name=check_name,
        status=CheckStatus.PASS,
        data={"created": [spec[0] for spec in missing]},
        detail=f"{repo}: created {names}",
    )


# -- systemd -------------------------------------------------------------------------------


def _unit_state(argv: Sequence[str], unit: str) -> tuple[str, str]:
    """``systemctl is-enabled`` answer: (state, error text)."""
    try:
        done = subprocess.run(
            [*argv, "is-enabled", unit],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "unknown", str(exc)
    state = done.stdout.strip()
    if state:
        return state, ""
    error = done.stderr.strip()
    if "No such file" in error or "not found" in error.lower():
        return "not-found", ""
    return "unknown", error.splitlines()[0] if error else f"exit {done.returncode}"


def check_systemd(systemctl: str | None, root: Path | None = None) -> Check:
    name = "systemd"
    program = shutil.which(systemctl) if systemctl else None
    if program is None:
        return Check(
            name=name,
            status=CheckStatus.SKIP,
            detail="skipped: systemctl not found (not a systemd host), so "
            "nothing can enable both the daemon and the tick timer",
        )
    base = [program, f"--root={root}"] if root is not None else [program]
    # `--root` reads a unit tree offline; the user scope needs the user's manager.
    scopes = [("system", base)] + ([("user", [*base, "--user"])] if root is None else [])
    states: dict[str, dict[str, str]] = {}
    errors: list[str] = []
    for scope, argv in scopes:
        for unit in (DAEMON_SERVICE, TICK_TIMER):
            state, error = _unit_state(argv, unit)
            states.setdefault(scope, {})[unit] = state
            if error:
                errors.append(f"{scope}: {error}")
    enabled = {
        unit: [scope for scope in states if states[scope][unit] in _ENABLED]
        for unit in (DAEMON_SERVICE, TICK_TIMER)
    }
    data: dict[str, Any] = {"states": states}
    if enabled[DAEMON_SERVICE] and enabled[TICK_TIMER]:
        where = (
            f"{DAEMON_SERVICE} ({', '.join(enabled[DAEMON_SERVICE])}) and "
            f"{TICK_TIMER} ({', '.join(enabled[TICK_TIMER])})"
        )
        user_flag = " --user" if "user" in enabled[TICK_TIMER] else ""
        return _fail(
            name,
            f"both {where} are enabled: two schedulers would start runs side by side",
            f"keep one: systemctl{user_flag} disable --now {TICK_TIMER} cgr-reaper.timer "
            f"(or disable {DAEMON_SERVICE})",
            data,
        )
    known = {scope: s for scope, s in states.items() if "unknown" not in s.values()}
    if not known:
        return Check(
            name=name,
            status=CheckStatus.SKIP,
            data=data,
            detail="skipped: systemctl could not answer (" + "; ".join(errors) + ")",
        )
    summary = "; ".join(
        f"{scope}: {DAEMON_SERVICE} {s[DAEMON_SERVICE]}, {TICK_TIMER} {s[TICK_TIMER]}"
        for scope, s in known.items()
    )
    return Check(
        name=name,
        status=CheckStatus.PASS,
        data=data,
        detail=f"not both the daemon and the tick timer are enabled ({summary})",
    )


# -- output --------------------------------------------------------------------------------

_COLOURS = {
    CheckStatus.PASS: "\x1b[32m",
    CheckStatus.WARN: "\x1b[33m",
    CheckStatus.FAIL: "\x1b[1;31m",
    CheckStatus.SKIP: "\x1b[2m",
}


def format_check(check: Check, *, colour: bool = False, width: int = 28) -> str:
    """``PASS  name  detail`` and, unless it passed, an indented ``fix:`` line."""
    label = str(check.status).upper().ljust(4)
    if colour:
        label = f"{_COLOURS[check.status]}{label}\x1b[0m"
    line = f"{label}  {check.name.ljust(width)} {check.detail}"
    if check.fix and check.status is not CheckStatus.PASS:
        line += f"\n{'':6}{'':{width}} fix: {check.fix}"
    return line
