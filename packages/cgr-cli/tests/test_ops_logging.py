"""``--log-format``: JSON lines with the run id on every line; text with colours only on
a terminal."""

from __future__ import annotations

import json
import logging
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgr_cli import main
from cgr_cli.ops._logging import (
    JsonFormatter,
    RunIdFilter,
    TextFormatter,
    bind_run_id,
    configure_logging,
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), logging.getLogger("cgr").level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    logging.getLogger("cgr").setLevel(level)


def _lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_json_lines_carry_the_run_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    log = logging.getLogger("cgr.daemon")
    log.info("no run here")
    with bind_run_id("r-20261128-120000-000-abcdef"):
        log.warning("claimed %s#%d", "acme/widgets", 12, extra={"phase": "claim"})
    log.info("explicit", extra={"run_id": "r-explicit"})
    logging.getLogger("cgr.run.r-from-name").info("from the logger's name")
    try:
        int("boom")
    except ValueError:
        log.exception("failed")
    lines = _lines(capsys.readouterr().err)
    assert [line["run_id"] for line in lines] == [
        None, "r-20261128-120000-000-abcdef", "r-explicit", "r-from-name", None]  # fmt: skip
    second = lines[1]
    assert set(second) == {"time", "level", "logger", "message", "run_id", "extra"}
    assert second["level"] == "WARNING"
    assert second["logger"] == "cgr.daemon"
    assert second["message"] == "claimed acme/widgets#12"
    assert second["extra"] == {"phase": "claim"}
    assert str(second["time"]).endswith("Z")
    assert "ValueError: invalid literal" in lines[4]["extra"]["exception"]  # type: ignore[index]


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_global_option_and_the_environment_choose_json(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('repositories = ["acme/widgets"]\n')
    argv = ["config", "check", "--config", str(config)]
    if how == "option":
        monkeypatch.delenv("CGR_LOG_FORMAT", raising=False)
        argv = ["--log-format", "json", *argv]
    else:
        monkeypatch.setenv("CGR_LOG_FORMAT", "json")
    assert main(argv) == 0
    with bind_run_id("r-2"):
        logging.getLogger("cgr.tick").info("forked")
    (line,) = _lines(capsys.readouterr().err)
    assert line["run_id"] == "r-2"
    assert line["message"] == "forked"


def test_text_is_the_default_and_has_no_colours_off_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CGR_LOG_FORMAT", raising=False)
    configure_logging()
    with bind_run_id("r-1"):
        logging.getLogger("cgr.daemon").warning("hello")
    err = capsys.readouterr().err
    assert " WARNING cgr.daemon [r-1] hello" in err
    assert "\x1b[" not in err


def test_colours_on_a_terminal() -> None:
    """stderr a real pseudo-terminal: the level is coloured."""
    code = (
        "import logging\n"
        "from cgr_cli.ops._logging import configure_logging\n"
        "configure_logging('text')\n"
        "logging.getLogger('cgr.x').error('on a tty')\n"
    )
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    try:
        child = subprocess.run([sys.executable, "-c", code], stderr=follower, env=env,
                               timeout=60, check=True)  # fmt: skip
        os.close(follower)
        follower = -1
        out = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert child.returncode == 0
    assert "\x1b[31mERROR\x1b[0m cgr.x on a tty" in out


def test_formatters_directly() -> None:
    record = logging.LogRecord("cgr.run.r-9", logging.INFO, __file__, 1, "m %s", ("x",), None)
    RunIdFilter().filter(record)
    assert (
        json.loads(JsonFormatter(redact=lambda s: s.replace("x", "*")).format(record))["message"]
        == "m *"
    )
    text = TextFormatter(lambda: True).format(record)
    assert "\x1b[36mINFO\x1b[0m cgr.run.r-9 m x" in text  # the name already says the run
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")  # type: ignore[arg-type]
