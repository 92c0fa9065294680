"""A repository's own settings (``.github/cgr.toml`` or ``.cgr.toml``) and their merge with
the host configuration.

The file lives in the repository the runner works on, so it is written by that
repository's maintainers, not by whoever runs cgr. It may therefore say how to work in the
repository — guidance for the agent, set-up and check commands — and make the host's limits
*tighter*, never looser::

    key                        merge (repository value r, host value h)
    agent.max_turns            min(r, h)
    agent.max_cost_usd         min(r, h)
    agent.model                r only when the host leaves it unset (or r == h)
    agent.allowed_tools        r within h (h empty: any tool, so r as given)
    labels.blocked             h + r (more labels that stop a run)
    branching.prefix           r only inside h's namespace: h itself or "h/…"
    commands.setup_seconds     min(r, h)
    commands.check_seconds     min(r, h)
    commands.fix_attempts      min(r, h)
    commands.output_bytes      min(r, h)
    commands.feedback_chars    min(r, h)
    commands.on_failure        "no_pr" is stricter than "draft"

A value that would loosen a limit is not applied: the host's value stays and a note says
so (in the status comment, ``cgr config check --repo`` and ``cgr doctor``). Keys the host
alone decides (``labels.ready``, the agent's command, tokens …) are refused with a message
that says why. Only the default branch's file counts: the caller reads it from there, so a
pull request's branch cannot change its own rules.

The file is validated by the same typed loader as the host configuration
(``convert_checked``), so an error names the key, the value and what was expected.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from cgr_cli._errors import ConfigError
from cgr_cli.config._load import convert_checked
from cgr_cli.config._model import (
    AgentConfig,
    BranchingConfig,
    CommandsConfig,
    Config,
    LabelsConfig,
    NonEmpty,
    OnCheckFailure,
    PositiveFloat,
    PositiveInt,
)

# Looked up in this order on the default branch; both present is an error (which one
# counts would be a guess).
REPO_FILE_PATHS = (".github/cgr.toml", ".cgr.toml")
MAX_FILE_BYTES = 64 * 1024
MAX_INSTRUCTIONS_CHARS = 20_000


class _RepoSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Like the host's sections: frozen, typos are errors, fields keyword-only. Every
    value defaults to "not set" (None), so the host's value applies."""


Command = NonEmpty | list[NonEmpty]


class RepoAgent(_RepoSection, frozen=True):
    model: NonEmpty | None = None
    max_turns: PositiveInt | None = None
    max_cost_usd: PositiveFloat | None = None
    allowed_tools: list[NonEmpty] | None = None


class RepoLabels(_RepoSection, frozen=True):
    blocked: list[NonEmpty] = msgspec.field(default_factory=list)


class RepoBranching(_RepoSection, frozen=True):
    prefix: NonEmpty | None = None


class RepoCommands(_RepoSection, frozen=True):
    setup_seconds: PositiveFloat | None = None
    check_seconds: PositiveFloat | None = None
    fix_attempts: Annotated[int, msgspec.Meta(ge=0)] | None = None
    on_failure: OnCheckFailure | None = None
    output_bytes: PositiveInt | None = None
    feedback_chars: Annotated[int, msgspec.Meta(ge=200)] | None = None


class RepoFile(_RepoSection, frozen=True):
    """The whole file. ``setup``/``check`` entries are a shell command line (run with
    ``/bin/sh -c``) or an argv list."""

    instructions: NonEmpty | None = None
    instructions_file: NonEmpty | None = None
    setup: list[Command] = msgspec.field(default_factory=list)
    check: list[Command] = msgspec.field(default_factory=list)
    agent: RepoAgent = msgspec.field(default_factory=RepoAgent)
    labels: RepoLabels = msgspec.field(default_factory=RepoLabels)
    branching: RepoBranching = msgspec.field(default_factory=RepoBranching)
    commands: RepoCommands = msgspec.field(default_factory=RepoCommands)


# Keys a repository file may not set, and why (checked before the typed conversion so the
# message says more than "unknown key").
_HOST_ONLY = {
    "repositories": "the host chooses which repositories cgr watches",
    "github": "the GitHub connection and token are the host's",
    "paths": "where cgr keeps its files is the host's choice",
    "polling": "scheduling is the host's choice",
    "timeouts": "run and agent time limits are the host's (commands.* time limits can "
    "be lowered here)",
    "trigger": "who may trigger runs is the host's choice",
    "priorities": "scheduling is the host's choice",
    "cleanup": "the host's disk is the host's choice",
    "git_identity": "cgr's commit identity is the host's",
    "agent.command": "the program cgr runs is the host's choice",
    "agent.permission_mode": "the agent's permissions are the host's",
    "agent.extra_args": "the agent's command line is the host's",
    "agent.env_passthrough": "what reaches the agent's environment is the host's",
    "agent.watchdog_patterns": "the watchdog is the host's",
    "agent.input_usd_per_mtok": "prices are the host's",
    "agent.output_usd_per_mtok": "prices are the host's",
    "labels.ready": "discovery looks for the same labels in every repository",
    "labels.in_progress": "discovery and the reaper use the same labels everywhere",
    "labels.needs_human": "discovery and the reaper use the same labels everywhere",
    "labels.done": "the host decides the labels cgr writes",
    "branching.base": "pull requests target the default branch or what the host says",
}


@dataclass(frozen=True, slots=True)
class RepoSettings:
    """The settings one run uses: the host's, tightened by the repository's file.

    ``origins`` maps each dotted key the repository changed to its file; ``notes`` are the
    repository's values that were *not* applied (they would have loosened a host limit).
    """

    config: Config
    file: RepoFile
    source: str | None = None  # e.g. ".github/cgr.toml@1a2b3c4" (None: no file)
    instructions: str = ""
    instructions_source: str | None = None
    setup: list[list[str]] = field(default_factory=list)
    check: list[list[str]] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def host_only(cls, config: Config) -> RepoSettings:
        return cls(config=config, file=RepoFile())


def parse_repo_file(text: bytes | str, *, source: str) -> RepoFile:
    """Validate the file's text (TOML) into a ``RepoFile`` or raise ``ConfigError`` naming
    the key (``source`` is the path shown, e.g. ``.github/cgr.toml``)."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            f"the file is {len(raw)} bytes; at most {MAX_FILE_BYTES} are read", source=source
        )
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None
    _refuse_host_keys(data, source)
    repo = convert_checked(data, RepoFile, source=source)
    if repo.instructions is not None and repo.instructions_file is not None:
        raise ConfigError(
            "instructions and instructions_file are both set; keep one (text here, or a "
            "path to a file in the repository)",
            key="instructions_file",
            source=source,
        )
    if repo.instructions is not None and len(repo.instructions) > MAX_INSTRUCTIONS_CHARS:
        raise ConfigError(
            f"instructions is {len(repo.instructions)} characters; at most "
            f"{MAX_INSTRUCTIONS_CHARS} (put long guidance in a file: instructions_file)",
            key="instructions",
            source=source,
        )
    if repo.instructions_file is not None:
        check_repo_path(repo.instructions_file, key="instructions_file", source=source)
    return repo


def check_repo_path(path: str, *, key: str, source: str) -> None:
    """A path inside the repository: relative, no ``..``, no NUL."""
    parts = path.split("/")
    if path.startswith("/") or ".." in parts or "\0" in path or not path.strip("/"):
        raise ConfigError(
            f"{key} = {path!r}: expected a path relative to the repository's root "
            "(like 'docs/agents.md')",
            key=key,
            source=source,
        )


def _refuse_host_keys(data: dict[str, Any], source: str) -> None:
    for name, value in data.items():
        keys = [name]
        if isinstance(value, dict):
            keys += [f"{name}.{sub}" for sub in value]
        for key in keys:
            why = _HOST_ONLY.get(key)
            if why is not None:
                raise ConfigError(
                    f"{key} cannot be set in a repository's file: {why}; remove it here "
                    "(the host configuration sets it)",
                    key=key,
                    source=source,
                )


def command_argv(command: str | list[str]) -> list[str]:
    """A ``setup``/``check`` entry as argv: a string is a shell command line."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def command_text(argv: list[str]) -> str:
    """How a command is shown to people (the shell line, or the argv joined)."""
    if len(argv) == 3 and argv[:2] == ["/bin/sh", "-c"]:
        return argv[2]
    import shlex

    return shlex.join(argv)


@dataclass(slots=True)
class _Merge:
    """Collects, while merging, where applied values came from and what was refused."""

    source: str
    origins: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lower(self, key: str, mine: Any, theirs: Any) -> Any:
        """``mine`` when it is at most ``theirs`` (a number the repository may only lower)."""
        if mine is None:
            return theirs
        if mine > theirs:
            self.notes.append(
                f"{key} = {mine:g} in {self.source} is above the host's limit of {theirs:g}; "
                f"the host's {theirs:g} applies (a repository can only lower it)"
            )
            return theirs
        self.origins[key] = self.source
        return mine

    def agent(self, a: AgentConfig, ra: RepoAgent) -> AgentConfig:
        model = a.model
        if ra.model is not None:
            if a.model is None or ra.model == a.model:
                model = ra.model
                self.origins["agent.model"] = self.source
            else:
                self.notes.append(
                    f"agent.model = {ra.model!r} in {self.source} differs from the host's "
                    f"{a.model!r}; the host's model applies (the host pins it)"
                )
        return msgspec.structs.replace(
            a,
            max_turns=self.lower("agent.max_turns", ra.max_turns, a.max_turns),
            max_cost_usd=self.lower("agent.max_cost_usd", ra.max_cost_usd, a.max_cost_usd),
            model=model,
            allowed_tools=self.tools(a.allowed_tools, ra.allowed_tools),
        )

    def tools(self, host: list[str], mine: list[str] | None) -> list[str]:
        # An empty host list means "any tool": the repository's list narrows it.
        if not mine:
            return list(host)
        if not host:
            self.origins["agent.allowed_tools"] = self.source
            return list(mine)
        kept = [t for t in mine if t in host]
        dropped = [t for t in mine if t not in host]
        if dropped:
            self.notes.append(
                f"agent.allowed_tools in {self.source} names {', '.join(map(repr, dropped))}, "
                "which the host does not allow; "
                + ("those are left out" if kept else "the host's list applies")
            )
        if not kept:
            # Never an empty list: to the CLI that would mean every tool.
            return list(host)
        self.origins["agent.allowed_tools"] = self.source
        return kept

    def labels(self, labels: LabelsConfig, mine: RepoLabels) -> LabelsConfig:
        extra = [name for name in mine.blocked if name not in labels.blocked]
        if not extra:
            return labels
        self.origins["labels.blocked"] = f"host + {self.source}"
        return msgspec.structs.replace(labels, blocked=[*labels.blocked, *extra])

    def branching(self, branching: BranchingConfig, mine: RepoBranching) -> BranchingConfig:
        if mine.prefix is None:
            return branching
        host_prefix, prefix = branching.prefix.strip("/"), mine.prefix.strip("/")
        # Inside the host's namespace only: cgr (and branch protection rules) recognise
        # its branches by the host's prefix.
        if prefix == host_prefix or prefix.startswith(host_prefix + "/"):
            self.origins["branching.prefix"] = self.source
            return msgspec.structs.replace(branching, prefix=prefix)
        self.notes.append(
            f"branching.prefix = {mine.prefix!r} in {self.source} is outside the host's "
            f"{host_prefix!r}; the host's applies (use {host_prefix!r} or '{host_prefix}/…')"
        )
        return branching

    def commands(self, c: CommandsConfig, rc: RepoCommands) -> CommandsConfig:
        on_failure = c.on_failure
        if rc.on_failure is not None:
            # "no_pr" is the stricter: no pull request at all rather than a draft.
            if rc.on_failure in {c.on_failure, "no_pr"}:
                on_failure = rc.on_failure
                self.origins["commands.on_failure"] = self.source
            else:
                self.notes.append(
                    f"commands.on_failure = {rc.on_failure!r} in {self.source} is looser "
                    f"than the host's {c.on_failure!r}; the host's applies"
                )
        return msgspec.structs.replace(
            c,
            setup_seconds=self.lower("commands.setup_seconds", rc.setup_seconds, c.setup_seconds),
            check_seconds=self.lower("commands.check_seconds", rc.check_seconds, c.check_seconds),
            fix_attempts=self.lower("commands.fix_attempts", rc.fix_attempts, c.fix_attempts),
            output_bytes=self.lower("commands.output_bytes", rc.output_bytes, c.output_bytes),
            feedback_chars=self.lower(
                "commands.feedback_chars", rc.feedback_chars, c.feedback_chars
            ),
            on_failure=on_failure,
        )


def merge(
    host: Config,
    repo: RepoFile,
    *,
    source: str,
    instructions: str = "",
    instructions_source: str | None = None,
) -> RepoSettings:
    """The host configuration with ``repo``'s tightenings applied (see the module doc)."""
    m = _Merge(source)
    config = msgspec.structs.replace(
        host,
        agent=m.agent(host.agent, repo.agent),
        labels=m.labels(host.labels, repo.labels),
        branching=m.branching(host.branching, repo.branching),
        commands=m.commands(host.commands, repo.commands),
    )
    for key, value in (("setup", repo.setup), ("check", repo.check)):
        if value:
            m.origins[key] = source
    if instructions:
        m.origins["instructions"] = instructions_source or source
    return RepoSettings(
        config=config,
        file=repo,
        source=source,
        instructions=instructions,
        instructions_source=instructions_source,
        setup=[command_argv(cmd) for cmd in repo.setup],
        check=[command_argv(cmd) for cmd in repo.check],
        origins=m.origins,
        notes=m.notes,
    )
