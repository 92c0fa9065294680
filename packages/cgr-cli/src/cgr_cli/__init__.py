"""cgr: a self-hosted runner that turns GitHub work into pull requests."""

from __future__ import annotations

from importlib.metadata import version as _version

from cgr_cli._agent import AgentResult, StreamState, Verdict, agent_argv, agent_env, judge
from cgr_cli._config import Config, Secret
from cgr_cli._config_load import load_config, parse_config, render_config
from cgr_cli._control import ControlError
from cgr_cli._demo import DemoError, run_demo
from cgr_cli._doctor import Check as DoctorCheck
from cgr_cli._doctor import CheckStatus, DoctorOptions, DoctorReport, run_doctor
from cgr_cli._errors import (
    CgrError,
    ConfigError,
    ConfigNotFoundError,
    GitError,
    RebaseConflictError,
    RunNotFoundError,
)
from cgr_cli._init import BadRepositoryError, ConfigExistsError, InitError
from cgr_cli._logging import bind_run_id, configure_logging
from cgr_cli._main import main
from cgr_cli._pipeline import RunRequest, execute_run
from cgr_cli._prompt import PromptInput, ReviewComment, ThreadComment, build_prompt
from cgr_cli._redact import Redactor
from cgr_cli._report import Outcome, RunSummary
from cgr_cli._scheduler import DaemonRunningError, SchedulerBusyError
from cgr_cli._systemd import SystemdError, render_units
from cgr_cli._workspace import CheckoutBusyError

__version__ = _version("cgr-cli")

__all__ = [
    "AgentResult",
    "BadRepositoryError",
    "CgrError",
    "CheckStatus",
    "CheckoutBusyError",
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
