"""cgr: a self-hosted runner that turns GitHub work into pull requests.

The public API is what ``__all__`` names; every other module (all of them ``_private``) is
internal. Names are imported on first use (PEP 562 module ``__getattr__``), so ``cgr
--help`` and ``cgr run`` load only the parts of cgr they need.
"""

from __future__ import annotations

import importlib

from cgr_cli._version import __version__

# Not ``from typing import TYPE_CHECKING``: importing typing costs every ``cgr`` start
# several milliseconds, and type checkers treat a constant of this name the same way.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from cgr_cli._errors import (
        CgrError,
        ConfigError,
        ConfigNotFoundError,
        GitError,
        RebaseConflictError,
        RunNotFoundError,
    )
    from cgr_cli._main import main
    from cgr_cli._redact import Redactor
    from cgr_cli.config._init import BadRepositoryError, ConfigExistsError, InitError
    from cgr_cli.config._load import load_config, parse_config, render_config
    from cgr_cli.config._model import Config, Secret
    from cgr_cli.demo._world import DemoError, run_demo
    from cgr_cli.ops._doctor import Check as DoctorCheck
    from cgr_cli.ops._doctor import CheckStatus, DoctorOptions, DoctorReport, run_doctor
    from cgr_cli.ops._logging import bind_run_id, configure_logging
    from cgr_cli.ops._systemd import SystemdError, render_units
    from cgr_cli.run._agent import AgentResult, StreamState, Verdict, agent_argv, agent_env, judge
    from cgr_cli.run._agent_cli import AgentCli, AgentVersionError, ClaudeVersion, detect_agent_cli
    from cgr_cli.run._pipeline import RunRequest, execute_run
    from cgr_cli.run._prompt import PromptInput, ReviewComment, ThreadComment, build_prompt
    from cgr_cli.run._report import Outcome, RunSummary
    from cgr_cli.run._workspace import CheckoutBusyError
    from cgr_cli.schedule._control import ControlError
    from cgr_cli.schedule._locks import DaemonRunningError, SchedulerBusyError

# public name -> (module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    "AgentCli": ("cgr_cli.run._agent_cli", "AgentCli"),
    "AgentResult": ("cgr_cli.run._agent", "AgentResult"),
    "AgentVersionError": ("cgr_cli.run._agent_cli", "AgentVersionError"),
    "BadRepositoryError": ("cgr_cli.config._init", "BadRepositoryError"),
    "CgrError": ("cgr_cli._errors", "CgrError"),
    "ClaudeVersion": ("cgr_cli.run._agent_cli", "ClaudeVersion"),
    "CheckStatus": ("cgr_cli.ops._doctor", "CheckStatus"),
    "CheckoutBusyError": ("cgr_cli.run._workspace", "CheckoutBusyError"),
    "Config": ("cgr_cli.config._model", "Config"),
    "ConfigError": ("cgr_cli._errors", "ConfigError"),
    "ConfigExistsError": ("cgr_cli.config._init", "ConfigExistsError"),
    "ConfigNotFoundError": ("cgr_cli._errors", "ConfigNotFoundError"),
    "ControlError": ("cgr_cli.schedule._control", "ControlError"),
    "DaemonRunningError": ("cgr_cli.schedule._locks", "DaemonRunningError"),
    "DemoError": ("cgr_cli.demo._world", "DemoError"),
    "DoctorCheck": ("cgr_cli.ops._doctor", "Check"),
    "DoctorOptions": ("cgr_cli.ops._doctor", "DoctorOptions"),
    "DoctorReport": ("cgr_cli.ops._doctor", "DoctorReport"),
    "GitError": ("cgr_cli._errors", "GitError"),
    "InitError": ("cgr_cli.config._init", "InitError"),
    "Outcome": ("cgr_cli.run._report", "Outcome"),
    "PromptInput": ("cgr_cli.run._prompt", "PromptInput"),
    "RebaseConflictError": ("cgr_cli._errors", "RebaseConflictError"),
    "Redactor": ("cgr_cli._redact", "Redactor"),
    "ReviewComment": ("cgr_cli.run._prompt", "ReviewComment"),
    "RunNotFoundError": ("cgr_cli._errors", "RunNotFoundError"),
    "RunRequest": ("cgr_cli.run._pipeline", "RunRequest"),
    "RunSummary": ("cgr_cli.run._report", "RunSummary"),
    "SchedulerBusyError": ("cgr_cli.schedule._locks", "SchedulerBusyError"),
    "Secret": ("cgr_cli.config._model", "Secret"),
    "StreamState": ("cgr_cli.run._agent", "StreamState"),
    "SystemdError": ("cgr_cli.ops._systemd", "SystemdError"),
    "ThreadComment": ("cgr_cli.run._prompt", "ThreadComment"),
    "Verdict": ("cgr_cli.run._agent", "Verdict"),
    "agent_argv": ("cgr_cli.run._agent", "agent_argv"),
    "agent_env": ("cgr_cli.run._agent", "agent_env"),
    "bind_run_id": ("cgr_cli.ops._logging", "bind_run_id"),
    "build_prompt": ("cgr_cli.run._prompt", "build_prompt"),
    "configure_logging": ("cgr_cli.ops._logging", "configure_logging"),
    "detect_agent_cli": ("cgr_cli.run._agent_cli", "detect_agent_cli"),
    "execute_run": ("cgr_cli.run._pipeline", "execute_run"),
    "judge": ("cgr_cli.run._agent", "judge"),
    "load_config": ("cgr_cli.config._load", "load_config"),
    "main": ("cgr_cli._main", "main"),
    "parse_config": ("cgr_cli.config._load", "parse_config"),
    "render_config": ("cgr_cli.config._load", "render_config"),
    "render_units": ("cgr_cli.ops._systemd", "render_units"),
    "run_demo": ("cgr_cli.demo._world", "run_demo"),
    "run_doctor": ("cgr_cli.ops._doctor", "run_doctor"),
}


def __getattr__(name: str) -> object:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'cgr_cli' has no attribute {name!r}") from None
    value: object = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AgentCli",
    "AgentResult",
    "AgentVersionError",
    "BadRepositoryError",
    "CgrError",
    "CheckStatus",
    "CheckoutBusyError",
    "ClaudeVersion",
    "Config",
    "ConfigError",
    "ConfigExistsError",
    "ConfigNotFoundError",
    "ControlError",
    "DaemonRunningError",
    "DemoError",
    "DoctorCheck",
    "DoctorOptions",
    "DoctorReport",
    "GitError",
    "InitError",
    "Outcome",
    "PromptInput",
    "RebaseConflictError",
    "Redactor",
    "ReviewComment",
    "RunNotFoundError",
    "RunRequest",
    "RunSummary",
    "SchedulerBusyError",
    "Secret",
    "StreamState",
    "SystemdError",
    "ThreadComment",
    "Verdict",
    "__version__",
    "agent_argv",
    "agent_env",
    "bind_run_id",
    "build_prompt",
    "configure_logging",
    "detect_agent_cli",
    "execute_run",
    "judge",
    "load_config",
    "main",
    "parse_config",
    "render_config",
    "render_units",
    "run_demo",
    "run_doctor",
]
