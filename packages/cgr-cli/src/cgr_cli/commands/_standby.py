"""A `cgr run` started before its run exists: the daemon's standby (``cgr_exec`` standby).

Most of a fresh `cgr run` process's start is spent importing the run pipeline, the store,
the GitHub client and the executor. The daemon keeps one process of ``python -m cgr_cli``
started with cgr_exec's standby marker; it loads those modules here, waits, and when the
daemon has a run for it receives the run's ``cgr run …`` arguments (and its log file on
stdout and stderr) and carries on exactly as a process started with them would. Nothing
of the run - configuration, store, GitHub - is touched before the arguments arrive, so a
configuration edited in between is read fresh.
"""

from __future__ import annotations

__all__ = ["preload", "wait_for_run"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


# What every run needs, loaded while no run waits for it: the modules the run's code
# imports at its start and those it imports where it first needs them (the agent's
# supervision and confinement, the checks before the claim). A run handed to a standby
# imports nothing more (tests/test_startup_imports.py names any module missing here).
_RUN_MODULES = (
    "cgr_cli._hand_back",
    "cgr_cli.commands._run",
    "cgr_cli.config._load",
    "cgr_cli.config._store",
    "cgr_cli.config._validate",
    "cgr_cli.ops._hardening",
    "cgr_cli.ops._logging",
    "cgr_cli.run._git_guard",
    "cgr_cli.run._mirror_stamp",
    "cgr_cli.run._pipeline",
    "cgr_cli.run._preflight",
    "cgr_discovery",
    "cgr_exec",
    "cgr_exec._daemon",
    "cgr_exec._jobs",
    "cgr_exec._landlock",
    "cgr_exec._slot_gate",
    "cgr_exec._standby",
    "cgr_exec._supervise",
    "cgr_store",
    "anyio._core._signals",
    "ctypes",
    "grp",
)


def wait_for_run(prepare: Callable[[], object] | None = None) -> list[str] | None:
    """Load what a run needs (see :func:`preload`), then wait: the run's ``cgr``
    arguments, or None when the daemon went away (or ended its standby) before any run
    came."""
    preload(prepare)
    import cgr_exec

    return cgr_exec.receive_job()


def preload(prepare: Callable[[], object] | None = None) -> None:
    """Load every module a run imports, then call ``prepare`` (the entry point passes the
    building of its command line parser, a layer above this module): a run handed to this
    process then imports nothing (tests/test_startup_imports.py)."""
    import importlib

    for name in _RUN_MODULES:
        importlib.import_module(name)
    if prepare is not None:
        prepare()
    _load_lazy_parts()


def _load_lazy_parts() -> None:
    """What the first GitHub client and event loop load only when first used: httpcore
    and the TLS roots (httpx builds them with a client), anyio's asyncio backend."""
    import anyio

    import cgr_discovery

    async def build_and_close() -> None:
        # No request is made: the client is built (loading what it needs) and closed.
        await cgr_discovery.GitHubClient().aclose()

    anyio.run(build_and_close)
    _plan_decoding()


def _plan_decoding() -> None:
    """msgspec works out how to decode a Struct type the first time it meets it (every
    annotation evaluated: ~2 ms for the configuration's tree); done here for the types a
    run decodes - its configuration, the repository's settings file, its store rows and
    its summary - a run's first ``load_config`` and store read find the plan made."""
    import msgspec

    from cgr_cli.config._model import Config
    from cgr_cli.config._repo import RepoFile
    from cgr_cli.run._report import RunSummary
    from cgr_store import Run

    for type_ in (Config, RepoFile, Run, RunSummary):
        msgspec.json.Decoder(type_)
