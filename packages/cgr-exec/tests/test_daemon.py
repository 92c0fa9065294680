from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import anyio
import pytest

from cgr_exec import (
    CapacityError,
    ExecutorClosedError,
    LogFileError,
    SpawnError,
    SubprocessExecutor,
    UnknownChildError,
)
from conftest import gone, our_children

pytestmark = pytest.mark.anyio
PY = sys.executable
SLEEP = [PY, "-c", "import time; time.sleep(60)"]


async def test_wait_slot_and_start_with_wait(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=1) as executor:
        first = await executor.start(
            [PY, "-c", "import time; time.sleep(0.3)"], log_path=tmp_path / "1.log", key="first"
        )
        with pytest.raises(CapacityError):
            await executor.start(["true"], log_path=tmp_path / "x.log")
        started = time.monotonic()
        second = await executor.start(
            ["true"], log_path=tmp_path / "2.log", key="second", wait=True
        )
        assert time.monotonic() - started >= 0.2  # it waited for the first to end
        assert first.exit is not None
        assert first.exit.status.success
        await second.wait()
        await executor.wait_slot()  # free now: returns at once
        assert [e.key for e in executor.reap()] == ["first", "second"]
        assert executor.finished == []


async def test_running_finished_and_durations(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=3) as executor:
        handle = await executor.start(
            [PY, "-c", "import time, sys; time.sleep(0.2); sys.exit(4)"],
            log_path=tmp_path / "a.log",
            key="a",
        )
        assert set(executor.running) == {"a"}
        assert "running" in repr(handle)
        ended = await handle.wait()
        assert ended.status.code == 4
        assert 0.2 <= ended.duration < 5
        assert executor.running == {}
        assert executor.finished == [ended]
        assert "exit code 4" in repr(handle)
        with pytest.raises(UnknownChildError):
            await executor.terminate("a")


async def test_cwd_and_env_are_used(tmp_path: Path) -> None:
    code = "import os; print(os.getcwd()); print(os.environ.get('CGR_TEST'), 'HOME' in os.environ)"
    async with SubprocessExecutor() as executor:
        handle = await executor.start(
            [PY, "-c", code], log_path=tmp_path / "e.log", cwd=tmp_path, env={"CGR_TEST": "yes"}
        )
        assert (await handle.wait()).status.success
    assert (tmp_path / "e.log").read_text().split("\n")[:2] == [str(tmp_path), "yes False"]


async def test_spawn_errors_name_the_problem(tmp_path: Path) -> None:
    async with SubprocessExecutor() as executor:
        with pytest.raises(SpawnError) as missing:
            await executor.start(["cgr-no-such-command"], log_path=tmp_path / "m.log")
        assert missing.value.command == "cgr-no-such-command"
        assert "'cgr-no-such-command'" in str(missing.value)
        assert "not found" in str(missing.value)
        with pytest.raises(SpawnError) as bad_cwd:
            await executor.start(["true"], log_path=tmp_path / "c.log", cwd=tmp_path / "nope")
        assert "working directory" in str(bad_cwd.value)
        assert executor.free_slots() == 3  # failed starts hold no slot


async def test_closed_executor_starts_nothing(tmp_path: Path) -> None:
    executor = SubprocessExecutor()
    with pytest.raises(ExecutorClosedError, match="enter the executor first"):
        await executor.start(["true"], log_path=tmp_path / "x.log")
    async with executor:
        pass
    with pytest.raises(ExecutorClosedError, match="shut down"):
        await executor.start(["true"], log_path=tmp_path / "x.log")


async def test_waiters_are_woken_by_shutdown(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=1) as executor:
        await executor.start(SLEEP, log_path=tmp_path / "s.log")
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                with pytest.raises(ExecutorClosedError):
                    await executor.wait_slot()

            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            exits = await executor.shutdown(grace=5)
        assert [e.status.signal for e in exits] == [signal.SIGTERM]


async def test_cancelled_owner_leaves_no_children(tmp_path: Path) -> None:
    with anyio.move_on_after(0.5):
        async with SubprocessExecutor(grace=1.0) as executor:
            handle = await executor.start(SLEEP, log_path=tmp_path / "c.log")
            await anyio.sleep(30)
    assert gone(handle.pid)
    assert handle.exit is not None
    assert handle.exit.status.signal == signal.SIGTERM
    assert our_children() == []


async def test_invalid_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        SubprocessExecutor(limit=0)


async def test_unusable_log_path(tmp_path: Path) -> None:
    async with SubprocessExecutor(limit=1) as executor:
        with pytest.raises(LogFileError, match="no-such-dir"):
            await executor.start(["true"], log_path=tmp_path / "no-such-dir" / "x.log")
        assert executor.free_slots() == 1
        assert our_children() == []
