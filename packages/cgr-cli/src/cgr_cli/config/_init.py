"""``cgr init``: write a commented starting configuration and say what to do next.

The file is generated from a template, then parsed with the same code ``cgr config check``
uses before anything is written, so ``cgr init`` can never leave an invalid file behind.
It is written atomically (a temporary file renamed over the target) with mode 0600: the
operator may later put the GitHub token in it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cgr_cli._errors import CgrError

SYSTEM_CONFIG = Path("/etc/cgr/config.toml")
SYSTEM_DATA = Path("/var/lib/cgr")
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class InitError(CgrError):
    """``cgr init`` could not write the configuration; ``path`` is the file concerned."""

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class ConfigExistsError(InitError):
    """The configuration file exists and ``--force`` was not given."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} already exists; keep it, or overwrite it with `cgr init --force`",
            path=path,
        )


class BadRepositoryError(InitError):
    """A repository name given to ``cgr init`` is not ``OWNER/NAME``."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"{name!r} is not a repository name; expected 'OWNER/NAME'")


@dataclass(frozen=True, slots=True)
class InitPaths:
    """Where a new installation keeps its files."""

    config: Path
    workspace_root: Path
    database: Path

    @classmethod
    def for_user(cls) -> InitPaths:
        """``$XDG_CONFIG_HOME/cgr/config.toml`` and ``$XDG_DATA_HOME/cgr/…``."""
        home = Path.home()
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        data_home = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
        return cls(
            config=config_home / "cgr" / "config.toml",
            workspace_root=data_home / "cgr" / "workspaces",
            database=data_home / "cgr" / "cgr.sqlite3",
        )

    @classmethod
    def for_system(cls) -> InitPaths:
        """``/etc/cgr/config.toml``, ``/var/lib/cgr/workspaces``, ``/var/lib/cgr/cgr.sqlite3``."""
        return cls(
            config=SYSTEM_CONFIG,
            workspace_root=SYSTEM_DATA / "workspaces",
            database=SYSTEM_DATA / "cgr.sqlite3",
        )


def parse_repositories(values: Sequence[str]) -> list[str]:
    """Split on commas and whitespace, check each is ``OWNER/NAME``, drop duplicates."""
    repos: list[str] = []
    for value in values:
        for name in re.split(r"[\s,]+", value.strip()):
            if not name:
                continue
            if not _REPO_RE.match(name):
                raise BadRepositoryError(name)
            if name not in repos:
                repos.append(name)
    return repos


def ask_repositories(ask: Callable[[str], str], say: Callable[[str], None]) -> list[str]:
    """Ask until the answer is a valid list (an empty answer means none for now)."""
    while True:
        answer = ask("Repositories to watch (OWNER/NAME, separated by spaces or commas): ")
        try:
            return parse_repositories([answer])
        except BadRepositoryError as exc:
            say(f"  {exc}; try again")


def _q(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class AppSetup:
    """``cgr init --app-id``: cgr runs as this GitHub App (not with a token)."""

    app_id: int
    private_key_file: str
    installation_id: int | None = None


_GITHUB_PLAIN = """\
[github]
# The token is a secret: prefer the environment variable CGR_GITHUB_TOKEN (for systemd, an
# EnvironmentFile= next to this file, mode 0600) over writing it here.
# token = "ghp_..."
# api_url = "https://api.github.com"   # https://HOST/api/v3 for GitHub Enterprise Server
# bot_login = "my-bot"                 # default: the account the token belongs to
"""


def _app_section(app: AppSetup) -> str:
    installation = (
        f"installation_id = {app.installation_id}"
        if app.installation_id is not None
        else "# installation_id = 12345678          # default: every installation of the App"
    )
    return (
        "[github]\n"
        "# cgr runs as a GitHub App. It needs these repository permissions: Issues, Pull\n"
        "# requests and Contents: read and write; Metadata: read. `cgr doctor` checks the key,\n"
        "# the installation and the permissions. Its bot is `<app slug>[bot]`.\n"
        f"app_id = {app.app_id}\n"
        "# The .pem file from the App's settings page (a secret: mode 0600, cgr's user only).\n"
        f"private_key_file = {_q(app.private_key_file)}\n"
        f"{installation}\n"
        '# api_url = "https://api.github.com"   # https://HOST/api/v3 for GitHub Enterprise\n'
    )


def render_starting_config(
    repositories: Sequence[str], paths: InitPaths, *, app: AppSetup | None = None
) -> str:
    """The commented configuration ``cgr init`` writes (every commented key is a default)."""
    repos = ", ".join(_q(r) for r in repositories)
    if app is not None and not repositories:
        watched = (
            '# With a GitHub App: every repository of its installations (or globs: ["acme/*"]).\n'
            'repositories = "installation"'
        )
    else:
        also = ' (with a GitHub App also globs, e.g. "acme/*")' if app is not None else ""
        watched = f'# The repositories cgr watches, as "OWNER/NAME"{also}.\n'
        watched += f"repositories = [{repos}]"
    github = _GITHUB_PLAIN if app is None else _app_section(app)
    return f"""\
# cgr configuration, written by `cgr init`. Check it with `cgr config check --config FILE`.
# Every key has a default; the commented lines show it. Full reference: the cgr-cli README.

{watched}

[paths]
# Per-run directories (checkouts, prompts, logs, artifacts). Needs room for your clones.
workspace_root = {_q(str(paths.workspace_root))}
# The run records (SQLite). Its directory is created on first use.
database = {_q(str(paths.database))}

{github}
[labels]
# `cgr doctor --fix` creates missing labels in every repository.
# ready = "ready"
# in_progress = "in-progress"
# needs_human = "needs-human"
# blocked = ["blocked"]
# done = "cgr-done"                    # unset: no label on success

[polling]
# interval_seconds = 60                # for `cgr tick` (its systemd timer) and `cgr daemon`
# max_concurrency = 3                  # agents at once on this host
# runs_ahead = 3                       # runs getting ready or publishing beside them
#                                      # (unset: as many as max_concurrency; 0: none)
# max_concurrent_repos = 32            # repositories a discovery pass reads at once
# database_check_seconds = 3600        # `cgr daemon` reads its SQLite file whole (0: at start)

[webhook]
# `cgr daemon` receives GitHub webhooks here (a hook posting to / or /webhook), and polls
# only to reconcile: every reconcile_seconds while deliveries arrive as they should.
# listen = "127.0.0.1:8787"
# secret_file = "/etc/cgr/webhook-secret"   # the hook's secret (or secret = "...")
# reconcile_seconds = 900

[agent]
# command = "claude"                   # or an argv list, e.g. ["/opt/claude/bin/claude"]
# model = "claude-sonnet-4-5"
# max_turns = 40
# max_cost_usd = 5.0
# permission_mode = "acceptEdits"
# allowed_tools = ["Bash", "Edit", "Read", "Write"]
# env_passthrough = ["ANTHROPIC_API_KEY"]   # only needed for names outside ANTHROPIC_*

[timeouts]
# agent_seconds = 3600
# run_seconds = 5400
# agent_idle_seconds = 900
# watchdog_grace_seconds = 10

[trigger]
# require_write_access = true          # only people with write access trigger runs
# allow_users = []
# deny_users = []

[cleanup]
# policy = "delete"                    # "delete", "keep" or "archive" the checkout
# retention_days = 7

[git_identity]
# name = "cgr"
# email = "cgr@users.noreply.github.com"

[commands]
# Limits for each repository's own set-up and check commands (its .github/cgr.toml);
# a repository may lower them, never raise them.
# setup_seconds = 900
# check_seconds = 900
# fix_attempts = 1                     # more agent attempts when its checks fail
# on_failure = "draft"                 # checks still failing: a draft PR, or "no_pr"
"""


@dataclass(frozen=True, slots=True)
class InitResult:
    path: Path
    repositories: list[str]
    paths: InitPaths
    system: bool
    # The environment file the systemd units read (secrets), when init wrote it now.
    env_file: Path | None = None


def write_starting_config(
    repositories: Sequence[str],
    paths: InitPaths,
    *,
    force: bool = False,
    system: bool = False,
    app: AppSetup | None = None,
) -> InitResult:
    """Validate and write the starting configuration to ``paths.config``."""
    from cgr_cli.config._load import parse_config, read_config_file

    target = paths.config
    if (target.exists() or target.is_symlink()) and not force:
        raise ConfigExistsError(str(target))
    text = render_starting_config(repositories, paths, app=app)
    try:
        target.parent.mkdir(mode=0o700 if not system else 0o755, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=target.parent)
    except PermissionError:
        hint = " (run it as root: sudo cgr init --system)" if system else ""
        raise InitError(
            f"cannot write {target}: permission denied{hint}", path=str(target)
        ) from None
    except OSError as exc:
        raise InitError(f"cannot write {target}: {exc.strerror}", path=str(target)) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        # Parsed back from disk with the loader `cgr config check` uses: what is renamed
        # into place is exactly what was validated.
        parse_config(read_config_file(tmp), source=str(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return InitResult(
        path=target,
        repositories=list(repositories),
        paths=paths,
        system=system,
        env_file=write_env_template(target.parent / ENV_FILE_NAME),
    )


ENV_FILE_NAME = "cgr.env"
ENV_TEMPLATE = """\
# Secrets for cgr's systemd units (EnvironmentFile=); mode 0600, never in the unit or the
# configuration. One NAME=value per line, no quotes needed, no `export`.
# The GitHub token cgr uses for every GitHub call (github.token in the file wins):
CGR_GITHUB_TOKEN=
# The agent's credentials, if Claude Code is not logged in for the service account:
#ANTHROPIC_API_KEY=
"""


def write_env_template(path: Path) -> Path | None:
    """Create ``path`` (mode 0600 from the start, never wider) with the template; an
    existing file is left alone (it holds secrets). Returns the path when written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        raise InitError(f"cannot write {path}: {exc.strerror}", path=str(path)) from None
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(ENV_TEMPLATE)
    os.chmod(path, 0o600)  # O_CREAT's mode passes through the umask; say it exactly
    return path


def next_steps(result: InitResult) -> str:
    """What to do after ``cgr init``, with the exact commands for this file."""
    cfg = str(result.path)
    if result.system:
        env_file = result.path.parent / "cgr.env"
        first_step = (
            f"  1. Put the GitHub token in {env_file} (mode 0600, read by the systemd units):\n"
            f"       CGR_GITHUB_TOKEN=ghp_...\n"
            f"     (`cgr systemd --install` creates the service account cgr, home "
            f"{SYSTEM_DATA}, through /etc/sysusers.d/cgr.conf)\n"
        )
        systemd = (
            f"  4. Install the systemd units: sudo cgr systemd --install --config {cfg}\n"
            "     then either  systemctl enable --now cgr-tick.timer cgr-reaper.timer\n"
            "     or           systemctl enable --now cgr-daemon.service   (not both)\n"
        )
    else:
        env_file = result.path.parent / ENV_FILE_NAME
        first_step = (
            "  1. Give cgr a GitHub token: export CGR_GITHUB_TOKEN=ghp_...\n"
            f"     (and put it in {env_file}, mode 0600, for the systemd units)\n"
        )
        systemd = (
            f"  4. Run it in the background: cgr systemd --user --install --config {cfg}\n"
            "     then either  systemctl --user enable --now cgr-tick.timer cgr-reaper.timer\n"
            "     or           systemctl --user enable --now cgr-daemon.service   (not both)\n"
        )
    repos = (
        ""
        if result.repositories
        else "     (no repositories yet: add them to `repositories` in the file)\n"
    )
    return (
        f"Wrote {cfg}\n"
        f"{repos}"
        "Next steps:\n"
        f"{first_step}"
        f"  2. Check the file:          cgr config check --config {cfg}\n"
        f"  3. Check the whole setup:   cgr doctor --config {cfg}   (--fix creates labels)\n"
        f"{systemd}"
    )
