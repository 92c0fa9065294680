"""cgr's process logs: text for people (default) or one JSON object per line for machines.

Every record carries ``run_id``: set explicitly (``log.info(..., extra={"run_id": r})``),
else taken from :data:`current_run_id` (a context variable, so concurrent tasks and
threads started from a bound context each see their own run), else from a logger named
``cgr.run.<run-id>`` (the pipeline's per-run logger), else ``None``.

JSON lines have the keys ``time`` (UTC, ISO 8601 with milliseconds), ``level``,
``logger``, ``message``, ``run_id`` and ``extra`` (every attribute given through
``extra=``, plus ``exception`` with the traceback when there is one).

The handler writes to whatever ``sys.stderr`` is at the moment of each record, so a
process that swaps its streams (tests, a daemonised child re-opening its log) never
writes to a closed file. Colours are used only when that stream is a terminal and
``NO_COLOR`` is not set.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

current_run_id: ContextVar[str | None] = ContextVar("cgr_run_id", default=None)

_RUN_LOGGER_PREFIX = "cgr.run."
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None)).keys()
) | {"message", "asctime", "run_id", "taskName"}
_COLOURS = {
    logging.DEBUG: "\x1b[2m",
    logging.INFO: "\x1b[36m",
    logging.WARNING: "\x1b[33m",
    logging.ERROR: "\x1b[31m",
    logging.CRITICAL: "\x1b[1;31m",
}


@contextmanager
def bind_run_id(run_id: str | None) -> Iterator[None]:
    """Within this block (and tasks or threads started from its context), log lines
    carry ``run_id``."""
    token = current_run_id.set(run_id)
    try:
        yield
    finally:
        current_run_id.reset(token)


class RunIdFilter(logging.Filter):
    """Gives every record a ``run_id`` attribute (see the module docstring for where from)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None:
            run_id = current_run_id.get()
            if run_id is None and record.name.startswith(_RUN_LOGGER_PREFIX):
                run_id = record.name[len(_RUN_LOGGER_PREFIX) :] or None
            record.run_id = run_id
        return True


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``redact`` (if given) is applied to the whole line."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        extra = _extra(record)
        if record.exc_info:
            extra["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            extra["exception"] = record.exc_text
        if record.stack_info:
            extra["stack"] = self.formatStack(record.stack_info)
        moment = datetime.fromtimestamp(record.created, UTC)
        line = json.dumps(
            {
                "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname,
                "logger": record.name,
                "message": record.getMessage(),
                "run_id": getattr(record, "run_id", None),
                "extra": extra,
            },
            default=str,
            ensure_ascii=False,
        )
        return self._redact(line) if self._redact else line


# syslog(3) priorities, which journald reads from a "<N>" line prefix (sd-daemon(3)).
_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
               logging.CRITICAL: 2}  # fmt: skip


def journal_priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between the standard ones round up
    to the more severe)."""
    for level, priority in sorted(_PRIORITIES.items()):
        if levelno <= level:
            return priority
    return 2


def stderr_is_journal() -> bool:
    """True when stderr is the stream systemd connected to journald: ``$JOURNAL_STREAM``
    (``device:inode``) names it. Checked against stderr itself, so a child whose stderr
    was redirected elsewhere (a run's log file) is not fooled by the inherited variable."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class JournalPrefix(logging.Formatter):
    """Wraps a formatter for journald: ``<N>`` priority in front of each line (each line
    of a traceback too, else journald logs it at the default priority)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self._inner.format(record).split("\n"))


class TextFormatter(logging.Formatter):
    """``2026-11-28 12:00:00,123 INFO cgr.daemon [r-…] message``; level in colour on a tty.

    ``timestamps=False`` (under journald, which stamps every line itself) leaves the time
    out."""

    def __init__(
        self,
        colour: Callable[[], bool],
        redact: Callable[[str], str] | None = None,
        *,
        timestamps: bool = True,
    ):
        when = "%(asctime)s " if timestamps else ""
        super().__init__(f"{when}%(levelname)s %(name)s%(run)s %(message)s")
        self._colour = colour
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        run_id = getattr(record, "run_id", None)
        # Loggers named after the run already say it; do not repeat it.
        shown = run_id and not record.name.endswith(str(run_id))
        record.__dict__["run"] = f" [{run_id}]" if shown else ""
        levelname = record.levelname
        if self._colour():
            record.levelname = f"{_COLOURS.get(record.levelno, '')}{levelname}\x1b[0m"
        try:
            text = super().format(record)
        finally:
            record.levelname = levelname
            record.__dict__.pop("run", None)
        return self._redact(text) if self._redact else text


class _CurrentStderr(logging.StreamHandler[TextIO]):
    """A StreamHandler on ``sys.stderr`` as it is now, not as it was at set-up."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def _stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


def configure_logging(
    log_format: LogFormat = "text",
    *,
    level: int = logging.INFO,
    redact: Callable[[str], str] | None = None,
) -> logging.Handler:
    """Send cgr's logs (the ``cgr`` logger tree at ``level``) to stderr in ``log_format``.

    Idempotent: a handler installed by an earlier call is replaced. Other libraries keep
    the root logger's level (WARNING), so httpx's per-request INFO lines stay out.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}: {log_format!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_cgr_handler", False)]:
        root.removeHandler(old)
    handler = _CurrentStderr()
    handler._cgr_handler = True  # type: ignore[attr-defined]
    handler.addFilter(RunIdFilter())
    journal = stderr_is_journal()
    formatter: logging.Formatter = (
        JsonFormatter(redact)
        if log_format == "json"
        else TextFormatter(_stderr_is_terminal, redact, timestamps=not journal)
    )
    handler.setFormatter(JournalPrefix(formatter) if journal else formatter)
    root.addHandler(handler)
    logging.getLogger("cgr").setLevel(level)
    return handler


def default_log_format() -> LogFormat:
    """``$CGR_LOG_FORMAT`` if it names a format (handy in systemd units), else text."""
    value = os.environ.get("CGR_LOG_FORMAT", "").strip().lower()
    return "json" if value == "json" else "text"
