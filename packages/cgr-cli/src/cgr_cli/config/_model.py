"""The typed configuration: one tree of msgspec Structs with a default for every field.

A configuration may be as small as ``repositories = ["owner/name"]``; everything else has a
default chosen for a single self-hosted runner. Reading files and turning msgspec errors into
messages that name the key lives in ``_config_load``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec


class Secret:
    """A string that never shows itself in ``repr``, ``str``, logs or the printed config.

    ``reveal()`` is the one way to get the value, so every use of a secret is greppable.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every section.

    frozen: a loaded configuration is shared by the whole run and must not drift;
    forbid_unknown_fields: a typo (``max_turn``) is an error with a suggestion, never ignored;
    kw_only: fields can be added in any order with defaults without breaking callers.
    """


RepoName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")]
# A repository or, with a GitHub App, a glob over the installation's ("acme/*"); the string
# ``repositories = "installation"`` is read as ["*/*"] (config/_load.py).
RepoPattern = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.*?\[\]-]+/[A-Za-z0-9_.*?\[\]-]+$")]


def is_pattern(repo: str) -> bool:
    """True for a glob (``acme/*``), False for a repository name."""
    return any(c in repo for c in "*?[")


PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class LabelsConfig(_Section, frozen=True):
    ready: NonEmpty = "ready"
    in_progress: NonEmpty = "in-progress"
    blocked: list[str] = msgspec.field(default_factory=lambda: ["blocked"])
    needs_human: NonEmpty = "needs-human"
    done: str | None = None


class BranchingConfig(_Section, frozen=True):
    prefix: NonEmpty = "cgr"
    # "default" means the repository's default branch as GitHub reports it.
    base: NonEmpty = "default"


class PollingConfig(_Section, frozen=True):
    interval_seconds: PositiveFloat = 60.0
    # Agents at once on this host (their set-up and check commands included).
    max_concurrency: PositiveInt = 3
    # Runs that may be getting ready (claim, checkout) or publishing beside those agents,
    # so an agent slot is taken again the moment one is given back; None: as many as
    # max_concurrency; 0: a run holds its slot from its claim to its report.
    runs_ahead: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # Repositories a discovery pass reads at once (three conditional requests each; the
    # GitHub client's 64 connections bound what is really in flight).
    max_concurrent_repos: PositiveInt = 32
    # A ready issue whose runs keep failing before the claim (GitHub failing for it) waits
    # base * 2**(failures - 1) seconds, at most max, before a pass tries it again.
    retry_backoff_seconds: PositiveFloat = 60.0
    retry_backoff_max_seconds: PositiveFloat = 3600.0
    # On PostgreSQL (a fleet of hosts): runs active at once across every host; None means
    # only each host's run slots (run_slots) limit them.
    fleet_max_concurrency: PositiveInt | None = None
    # `cgr daemon` on SQLite reads its whole database file this often (the check opening
    # does) and stops on damage; 0: only when it starts.
    database_check_seconds: Annotated[float, msgspec.Meta(ge=0)] = 3600.0

    @property
    def run_slots(self) -> int:
        """Runs this host takes at once: its agents and the runs ahead of them."""
        ahead = self.max_concurrency if self.runs_ahead is None else self.runs_ahead
        return self.max_concurrency + ahead


class TimeoutsConfig(_Section, frozen=True):
    agent_seconds: PositiveFloat = 3600.0
    run_seconds: PositiveFloat = 5400.0
    # The agent is ended when it prints nothing for this long (the idle watchdog).
    agent_idle_seconds: PositiveFloat = 900.0
    # SIGTERM first, then SIGKILL after this many seconds.
    watchdog_grace_seconds: PositiveFloat = 10.0
    # The reaper calls a run dead when its heartbeat is older than this.
    stale_heartbeat_seconds: PositiveFloat = 300.0
    heartbeat_seconds: PositiveFloat = 30.0
    git_seconds: PositiveFloat = 120.0
    clone_seconds: PositiveFloat = 900.0


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "cgr"


def _default_workspace_root() -> str:
    return str(_data_home() / "workspaces")


def _default_database() -> str:
    return str(_data_home() / "cgr.sqlite3")


class PathsConfig(_Section, frozen=True):
    workspace_root: NonEmpty = msgspec.field(default_factory=_default_workspace_root)
    # A file path (SQLite, one host) or a postgresql:// URI (a fleet of hosts);
    # $CGR_DATABASE_URL, when set, wins over this key.
    database: NonEmpty = msgspec.field(default_factory=_default_database)


class FleetConfig(_Section, frozen=True):
    # This host's name in the fleet's lease table; None means the machine's hostname.
    # Two daemons sharing one database need different ids.
    host_id: str | None = None
    # A host that has not renewed its lease for this long is lost: any live host's
    # reaper ends (or requeues) its runs. Renewed every polling interval, so keep it
    # a few intervals long.
    lease_seconds: PositiveFloat = 180.0


# "manual" is Claude Code's name since 2.1.200 for what older releases call "default";
# either is accepted and cgr passes the installed release's own name (run/_agent_cli.py).
PermissionMode = Literal["default", "manual", "acceptEdits", "plan", "bypassPermissions", "dontAsk"]
SandboxMode = Literal["landlock", "user", "landlock+user", "off"]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class SandboxConfig(_Section, frozen=True):
    """How the agent is confined (``run/_sandbox.py`` turns this into a cgr-exec spec).

    ``landlock``: the kernel lets the agent read the system and its installation, write
    only its checkout, its own home and a private temp dir, and connect only to
    ``tcp_ports``. ``user``: it runs as the unprivileged account ``user`` (cgr must be
    root). ``landlock+user``: both. ``off``: nothing (must be chosen explicitly).
    """

    mode: SandboxMode = "landlock"
    user: NonEmpty = "cgr-agent"
    # None: 443, the port of ANTHROPIC_BASE_URL and of an HTTPS proxy, when set.
    tcp_ports: list[Port] | None = None
    # Extra absolute paths (e.g. a toolchain outside the system directories).
    read_only: list[str] = msgspec.field(default_factory=list)
    read_write: list[str] = msgspec.field(default_factory=list)
    # The agent's HOME. None: one per target next to its checkout (so --resume finds the
    # CLI's transcript) - never the home of the account cgr runs as.
    home: str | None = None


class AgentConfig(_Section, frozen=True):
    command: str | list[str] = "claude"
    model: str | None = None
    max_turns: PositiveInt = 40
    max_cost_usd: PositiveFloat = 5.0
    permission_mode: PermissionMode | None = "acceptEdits"
    allowed_tools: list[str] = msgspec.field(default_factory=list)
    extra_args: list[str] = msgspec.field(default_factory=list)
    # Names of extra environment variables handed to the agent (beyond the built-in
    # allow-list). GitHub tokens are refused here: cgr does every GitHub write itself.
    env_passthrough: list[str] = msgspec.field(default_factory=list)
    # Regular expressions over the agent's output; a match ends the agent (e.g. a loop
    # printing the same error forever).
    watchdog_patterns: list[str] = msgspec.field(default_factory=list)
    # Prices used to estimate the running cost from `usage` while the agent works (the
    # final figure always comes from the CLI's own `total_cost_usd`).
    input_usd_per_mtok: Annotated[float, msgspec.Meta(ge=0)] = 3.0
    output_usd_per_mtok: Annotated[float, msgspec.Meta(ge=0)] = 15.0
    # Past this much stdout the stream is still parsed but no longer stored.
    max_output_mb: PositiveFloat = 64.0
    # Names of variables handed to the agent whose values are secrets (beyond names that
    # look secret: *KEY*, *TOKEN*, *SECRET*, *PASSWORD*): redacted and blocked outbound.
    secret_env: list[str] = msgspec.field(default_factory=list)
    sandbox: SandboxConfig = msgspec.field(default_factory=SandboxConfig)

    @property
    def argv(self) -> list[str]:
        return [self.command] if isinstance(self.command, str) else list(self.command)


class GitHubConfig(_Section, frozen=True):
    api_url: NonEmpty = "https://api.github.com"
    # Falls back to $CGR_GITHUB_TOKEN when not set here.
    token: Secret | None = None
    # The runner's own account; None means "ask GitHub who the token belongs to" (for an
    # App: `<slug>[bot]`, the slug asked from GET /app).
    bot_login: str | None = None
    # A GitHub App instead of a token: its id, its private key (.pem), and optionally one
    # installation to keep to (else every installation of the App, on every account).
    app_id: Annotated[int, msgspec.Meta(ge=1)] | None = None
    private_key_file: str | None = None
    installation_id: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Progress edits of the status comment are at least this far apart (GitHub limits
    # content creation); the final edit always goes through.
    status_update_seconds: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # How long one GitHub write (a label, a comment, the PR) keeps retrying on 5xx, dropped
    # connections and timeouts; past it a claim goes back to the queue and a final report
    # waits in the outbox for a later pass.
    write_retry_seconds: Annotated[float, msgspec.Meta(ge=0)] = 120.0

    @property
    def app_mode(self) -> bool:
        return self.app_id is not None

    def private_key(self) -> Secret:
        """The App's private key, read from ``private_key_file`` (OSError when unreadable)."""
        return Secret(Path(self.private_key_file or "").expanduser().read_text(encoding="utf-8"))

    def resolved_token(self) -> Secret | None:
        if self.token:
            return self.token
        from_env = os.environ.get("CGR_GITHUB_TOKEN")
        return Secret(from_env) if from_env else None


class WebhookConfig(_Section, frozen=True):
    """``cgr daemon`` receiving GitHub webhooks (schedule/_webhooks.py); off unless
    ``listen`` is set. Polling stays on as reconciliation: every ``reconcile_seconds``
    while deliveries arrive as they should, every ``polling.interval_seconds`` after a
    reconcile pass found work no delivery announced."""

    # HOST:PORT to listen on (":PORT" for every interface); None: no webhook server.
    listen: str | None = None
    # The hook's secret (HMAC-SHA256 of each body), or a file holding it (read at start).
    secret: Secret | None = None
    secret_file: str | None = None
    reconcile_seconds: PositiveFloat = 900.0
    # A delivery over this many bytes is refused with 413 (GitHub caps payloads at 25 MB;
    # the events cgr reads are a few KB, an issue body at most 64 K characters).
    max_body_bytes: PositiveInt = 1_048_576

    def resolved_secret(self) -> Secret | None:
        """The secret from ``secret``, else from ``secret_file`` (stripped of one trailing
        newline); None when neither is set."""
        if self.secret:
            return self.secret
        if self.secret_file:
            text = Path(self.secret_file).expanduser().read_text(encoding="utf-8")
            return Secret(text.removesuffix("\n").removesuffix("\r")) if text.strip() else None
        return None


class TriggerConfig(_Section, frozen=True):
    allow_users: list[str] = msgspec.field(default_factory=list)
    deny_users: list[str] = msgspec.field(default_factory=list)
    require_write_access: bool = True


class PrioritiesConfig(_Section, frozen=True):
    mentions_first: bool = True
    order: Literal["oldest", "newest"] = "oldest"


class CleanupConfig(_Section, frozen=True):
    policy: Literal["delete", "keep", "archive"] = "delete"
    retention_days: Annotated[float, msgspec.Meta(ge=0)] = 7.0


class GitIdentityConfig(_Section, frozen=True):
    name: NonEmpty = "cgr"
    email: NonEmpty = "cgr@users.noreply.github.com"


OnCheckFailure = Literal["draft", "no_pr"]


class CommandsConfig(_Section, frozen=True):
    """The repositories' own ``setup`` and ``check`` commands (from their ``cgr.toml``).

    Each value is the host's limit: a repository file may lower it, never raise it
    (``config/_repo.py``).
    """

    setup_seconds: PositiveFloat = 900.0
    check_seconds: PositiveFloat = 900.0
    # How many more times the agent is run when a check fails (0: never).
    fix_attempts: Annotated[int, msgspec.Meta(ge=0, le=10)] = 1
    # A pull request whose checks still fail is opened as a draft, or not at all.
    on_failure: OnCheckFailure = "draft"
    # Output kept per command (stdout and stderr together); past it the command is ended.
    output_bytes: PositiveInt = 8 * 1024 * 1024
    # How much of a failing check's output (its end) the agent is shown.
    feedback_chars: Annotated[int, msgspec.Meta(ge=200)] = 6000


class Config(_Section, frozen=True):
    repositories: list[RepoPattern] = msgspec.field(default_factory=list)
    labels: LabelsConfig = msgspec.field(default_factory=LabelsConfig)
    branching: BranchingConfig = msgspec.field(default_factory=BranchingConfig)
    polling: PollingConfig = msgspec.field(default_factory=PollingConfig)
    timeouts: TimeoutsConfig = msgspec.field(default_factory=TimeoutsConfig)
    paths: PathsConfig = msgspec.field(default_factory=PathsConfig)
    agent: AgentConfig = msgspec.field(default_factory=AgentConfig)
    github: GitHubConfig = msgspec.field(default_factory=GitHubConfig)
    trigger: TriggerConfig = msgspec.field(default_factory=TriggerConfig)
    priorities: PrioritiesConfig = msgspec.field(default_factory=PrioritiesConfig)
    cleanup: CleanupConfig = msgspec.field(default_factory=CleanupConfig)
    git_identity: GitIdentityConfig = msgspec.field(default_factory=GitIdentityConfig)
    commands: CommandsConfig = msgspec.field(default_factory=CommandsConfig)
    webhook: WebhookConfig = msgspec.field(default_factory=WebhookConfig)
    fleet: FleetConfig = msgspec.field(default_factory=FleetConfig)

    @property
    def workspace_root(self) -> Path:
        return Path(self.paths.workspace_root).expanduser()

    @property
    def database_url(self) -> str | None:
        """The PostgreSQL URI the store lives at ($CGR_DATABASE_URL first), else None."""
        for candidate in (os.environ.get("CGR_DATABASE_URL"), self.paths.database):
            if candidate and candidate.startswith(("postgresql://", "postgres://")):
                return candidate
        return None

    @property
    def database(self) -> Path:
        """The SQLite file (meaningless when ``database_url`` is set)."""
        return Path(self.paths.database).expanduser()

    @property
    def host_id(self) -> str:
        import socket

        return self.fleet.host_id or socket.gethostname()
