"""A run's agent holds one of the host's agent slots (run/_agent_gate.py): real `cgr run`
processes, the slots held by this test process through cgr-exec's SlotGate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runworld import REPO, Env, sigterm_run, start_run


@contextmanager
def host_agents_busy(env: Env, agents: int) -> Iterator[list[Any]]:
    """Every one of the host's ``agents`` slots taken by this process (as other runs'
    agents would hold them); released on leaving, or earlier by the test."""
    from cgr_exec import SlotGate

    gate = SlotGate(env.workspace / ".agent-slots", agents)
    held = [gate.try_acquire() for _ in range(agents)]
    assert all(h is not None for h in held)
    try:
        yield held
    finally:
        for h in held:
            h.release()


@contextmanager
def run_process(env: Env, number: int, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """``cgr run`` on ``number`` (``extra``: more arguments) as a real process (output
    kept), killed if a test step failed before it ended."""
    process = start_run(env, number, *extra, capture=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _queued_run(env: Env, number: int) -> str:
    """A queued run on ``number``, as a scheduler writes it before starting its process."""
    from cgr_store import Run, RunKind, new_run_id

    with env.store() as store:
        return store.create_run(Run(id=new_run_id(), repo=REPO, target=number,
                                    kind=RunKind.ISSUE)).id  # fmt: skip


def _run_log(env: Env) -> str:
    logs = sorted(env.workspace.glob("r-*/logs/run.log"))
    return "".join(p.read_text(errors="replace") for p in logs)


def _summary(env: Env) -> dict[str, Any]:
    (path,) = env.workspace.glob("r-*/artifacts/summary.json")
    return json.loads(path.read_text())


def _status_comment(env: Env, number: int) -> str:
    (body,) = [c.body for c in env.sim.comments(REPO, number) if "<!-- cgr:run=" in c.body]
    return body


def _wait(what: str, condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_run_waits_for_an_agent_slot_and_its_time_limit_stops_meanwhile(env: Env) -> None:
    """The host's one agent slot is taken: the run claims, checks out, says on GitHub that
    it waits, and starts no agent; it waits longer than its whole time limit (2 s) and is
    not ended for it; once the slot is free its agent starts and the PR is opened."""
    env.write_config(
        polling={"max_concurrency": 1},
        timeouts={"run_seconds": 2.0},
        github={"status_update_seconds": 0.0},
    )
    number = env.sim.create_issue(REPO, "Wait your turn", "", author="alice", labels=["ready"])
    with host_agents_busy(env, 1) as (held,):
        with run_process(env, number) as process:
            _wait("the run to wait", lambda: "waiting for an agent slot" in _run_log(env))
            _wait(
                "the status comment to say so",
                lambda: "waiting for an agent slot" in _status_comment(env, number),
            )
            assert "in-progress" in env.sim.issue(REPO, number).labels  # claimed, checked out
            # Past the run's whole time limit, and past the reaper's (the limit and twice
            # the grace, 4 s, from the run's start): neither ends it.
            time.sleep(5.0)
            reaped = subprocess.run(
                [sys.executable, "-m", "cgr_cli", "reap", "--config", str(env.config_path)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert reaped.returncode == 0, reaped.stderr
            assert process.poll() is None, process.communicate()
            assert env.calls() == [], "the agent started while every slot was taken"
            with env.store() as store:
                (run,) = store.active_runs()
            # Claimed, not running: its start (the reaper's clock) is when it gets its slot.
            assert (run.status.value, run.started_at) == ("claimed", None)
            held.release()
            released = datetime.now(UTC)
            _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    summary = _summary(env)
    assert summary["outcome"] == "pr_opened"
    assert summary["timings"]["agent_wait"] >= 5.0
    with env.store() as store:
        run, events = store.run_with_events(summary["run_id"])
    # `running` (and its started_at) came with the slot, after the wait.
    assert run.started_at is not None
    assert run.started_at >= released - timedelta(seconds=1)
    started = [e.detail for e in events
               if e.from_status is not None and e.from_status.value == "claimed"
               and e.to_status.value == "running"]  # fmt: skip
    assert started == ["agent slot taken"]


@pytest.mark.slow
def test_a_run_waiting_for_an_agent_slot_ends_cancelled_on_sigterm(env: Env) -> None:
    env.write_config(polling={"max_concurrency": 2})
    number = env.sim.create_issue(REPO, "Never mind", "", author="alice", labels=["ready"])
    with host_agents_busy(env, 2):
        code, _out, err = sigterm_run(
            env,
            number,
            started=lambda: "waiting for an agent slot" in _run_log(env),
            what="the wait for a slot",
            timeout=30,
            settle=0.3,
        )
    assert code == 1, err
    summary = _summary(env)
    assert summary["outcome"] == "cancelled"
    assert "SIGTERM" in summary["error"]
    assert env.calls() == []
    assert "cancelled" in _status_comment(env, number)
    assert "in-progress" not in env.sim.issue(REPO, number).labels


@pytest.mark.slow
def test_a_run_holds_no_agent_slot_while_it_publishes(env: Env) -> None:
    """The slot is given back when the agent is done, before publishing: while the run's
    pull request is being opened (slow here: 3 s of latency on that one request), the
    host's only agent slot is free for the next run's agent."""
    from cgr_exec import SlotGate

    env.write_config(polling={"max_concurrency": 1})
    number = env.sim.create_issue(REPO, "Publish slowly", "", author="alice", labels=["ready"])
    gate = SlotGate(env.workspace / ".agent-slots", 1)
    slow_pr = env.sim.faults.latency(3.0, method="POST", path=r"/pulls$", count=1)
    with run_process(env, number) as process:
        _wait("the pull request to be asked for", lambda: slow_pr.hits == 1, timeout=60)
        slot = gate.try_acquire()
        assert slot is not None, "the run kept its agent slot while publishing"
        slot.release()
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert _summary(env)["outcome"] == "pr_opened"


def test_a_broken_agent_slot_directory_fails_the_run_visibly_and_names_it(env: Env) -> None:
    """A regular file where the gate's FIFO belongs (left by hand, or by a hostile
    unconfined agent): the run fails before its agent, saying which directory to remove."""
    slots = env.workspace / ".agent-slots"
    slots.mkdir(parents=True)
    (slots / "wake").write_text("not a FIFO")
    number = env.run_new_issue("Broken slots")
    summary = _summary(env)
    assert summary["outcome"] == "failed"
    assert f"the host's agent slots in {slots} cannot be used" not in summary["error"]
    assert "agent slots in <workspace>/.agent-slots cannot be used" in summary["error"]
    assert "remove that directory" in summary["error"]
    assert env.calls() == []
    assert "remove that directory" in _status_comment(env, number)


@pytest.mark.slow
def test_a_slot_handed_on_at_once_writes_nothing_about_waiting_to_github(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that waits only a moment (the slot is given back 0.2 s after it started
    waiting) logs the wait but writes no "waiting" line to its status comment: a GitHub
    write, and a line flickering past, saved on every hand-over. In this process, with the
    status texts the run sends recorded (and sent)."""
    import threading

    from cgr_discovery import RunGitHub

    sent: list[str] = []
    real = RunGitHub.update_status

    async def recording(self: RunGitHub, repo: str, number: int, run_id: str, text: str,
                        **kwargs: Any) -> bool:  # fmt: skip
        sent.append(text)
        return await real(self, repo, number, run_id, text, **kwargs)

    monkeypatch.setattr(RunGitHub, "update_status", recording)
    env.write_config(polling={"max_concurrency": 1}, github={"status_update_seconds": 0.0})
    number = env.sim.create_issue(REPO, "Quick turn", "", author="alice", labels=["ready"])
    with host_agents_busy(env, 1) as (held,):

        def hand_on() -> None:
            _wait("the run to wait", lambda: "waiting for an agent slot" in _run_log(env))
            time.sleep(0.2)
            held.release()

        helper = threading.Thread(target=hand_on)
        helper.start()
        try:
            assert env.run(number) == 0
        finally:
            helper.join(timeout=60)
    assert "agent slot 0 taken after" in _run_log(env)
    assert sent, "the run wrote its status comment"
    assert not any("waiting for an agent slot" in text for text in sent), sent


@pytest.mark.slow
def test_a_scheduler_started_run_handed_back_by_sigusr1_returns_to_the_queue(env: Env) -> None:
    """A `cgr run --run-id` (as a scheduler starts it) asked to hand its run back (SIGUSR1)
    before its agent began - here 0.1 s after its start, before its pipeline listens for
    signals itself, with every agent slot taken - does not die of the signal (its default): the
    run goes back to the queue, with no process, marked released, and no agent started."""
    env.write_config(polling={"max_concurrency": 1})
    number = env.sim.create_issue(REPO, "Not now", "", author="alice", labels=["ready"])
    run_id = _queued_run(env, number)
    with host_agents_busy(env, 1), run_process(env, number, "--run-id", run_id) as process:
        # After the interpreter's start (its early handler is in place by then), long
        # before the pipeline listens itself (without the early handler the signal's
        # default action ends the process: tried at 0.03-0.12 s).
        time.sleep(0.1)
        process.send_signal(signal.SIGUSR1)
        _out, err = process.communicate(timeout=60)
    assert process.returncode != -signal.SIGUSR1, err
    with env.store() as store:
        again, events = store.run_with_events(run_id)
    assert again.status.value == "queued"
    assert again.pid is None
    assert any(e.detail.startswith("released: ") for e in events), [e.detail for e in events]
    assert env.calls() == []


def _held_agents(run_pid: int) -> list[int]:
    """The run's children that are a held agent: ``/bin/sh`` waiting to exec it."""
    from cgr_exec import read_stat

    held = []
    for name in os.listdir("/proc"):
        stat = read_stat(int(name)) if name.isdigit() else None
        if stat is None or stat.ppid != run_pid:
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == b"/bin/sh" and any(b"fake_claude" in a for a in argv):
            held.append(stat.pid)
    return held


@pytest.mark.skipif(
    os.path.basename(os.path.realpath("/bin/sh")) != "dash",
    reason="cgr-exec holds a start only where /bin/sh is dash",
)
def test_the_agent_is_made_ready_while_the_run_waits_and_started_by_its_slot(env: Env) -> None:
    """While the run waits for an agent slot its agent is already made (forked, confined,
    in the run's job): a shell waiting to exec it, the agent itself not started. The
    slot's release starts it in that same process, with the prompt on its stdin; a run
    ended while waiting leaves no such shell behind."""
    from cgr_exec import read_stat

    env.write_config(polling={"max_concurrency": 1})
    number = env.sim.create_issue(REPO, "Ready when you are", "", author="alice",
                                  labels=["ready"])  # fmt: skip
    with host_agents_busy(env, 1) as (slot,), run_process(env, number) as process:
        _wait("the run to wait", lambda: "waiting for an agent slot" in _run_log(env))
        _wait("the agent to be made ready", lambda: len(_held_agents(process.pid)) == 1)
        (held,) = _held_agents(process.pid)
        time.sleep(0.5)
        assert env.calls() == [], "the agent started while every slot was taken"
        slot.release()
        _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    (call,) = env.calls()
    assert call["pid"] == held  # the same process, its program exec'd on release
    assert "Ready when you are" in call["stdin"]
    assert _summary(env)["outcome"] == "pr_opened"
    # Ended while waiting: the shell that held its agent ends with it.
    second = env.sim.create_issue(REPO, "Never mind", "", author="alice", labels=["ready"])
    with host_agents_busy(env, 1), run_process(env, second) as process:
        _wait("the second run to hold its agent", lambda: len(_held_agents(process.pid)) == 1)
        (held,) = _held_agents(process.pid)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 1
    stat = read_stat(held)
    assert stat is None or stat.state in ("Z", "X")
    assert len(env.calls()) == 1


def test_status_counts_the_agents_at_work_apart_from_the_runs(env: Env) -> None:
    """One agent slot, one run ahead: one run's agent works (its slot taken), the other
    run waits `claimed`; `cgr status` says 2 runs and 1 of 1 agents at work, in text
    and JSON."""
    env.write_config(polling={"max_concurrency": 1, "runs_ahead": 1})
    env.scenario("hang")
    first = env.sim.create_issue(REPO, "Busy", "", author="alice", labels=["ready"])
    second = env.sim.create_issue(REPO, "Next", "", author="alice", labels=["ready"])
    with run_process(env, first) as working:
        _wait("the first agent to start", lambda: len(env.calls()) == 1)
        with run_process(env, second) as waiting:
            _wait("the second run to wait", lambda: "waiting for an agent slot" in _run_log(env))
            status = [sys.executable, "-m", "cgr_cli", "status", "--config", str(env.config_path)]
            text = subprocess.run(status, capture_output=True, text=True, timeout=60,
                                  check=True).stdout  # fmt: skip
            data = json.loads(subprocess.run([*status, "--json"], capture_output=True,
                                             text=True, timeout=60, check=True).stdout)  # fmt: skip
            for process in (waiting, working):
                process.send_signal(signal.SIGTERM)
                process.communicate(timeout=60)
    assert "slots       2/2 runs, 0 free; 1/1 agents at work" in text, text
    assert data["slots"] == {"limit": 2, "used": 2, "free": 0, "agents": 1, "agents_at_work": 1}
    assert sorted(r["status"] for r in data["active"]) == ["claimed", "running"]


def test_a_run_killed_while_waiting_for_its_slot_goes_back_to_the_queue(env: Env) -> None:
    """A run ahead SIGKILLed (a reboot, the OOM killer) while it waits for an agent slot
    had started nothing: `cgr reap` puts it back in the queue - not failed, its claim on
    GitHub standing, nothing public saying "failed" - and the same run finishes later."""
    env.write_config(polling={"max_concurrency": 1})
    number = env.sim.create_issue(REPO, "Patience", "", author="alice", labels=["ready"])
    reap = [sys.executable, "-m", "cgr_cli", "reap", "--json", "--config", str(env.config_path)]
    with host_agents_busy(env, 1), run_process(env, number) as process:
        _wait("the run to wait", lambda: "waiting for an agent slot" in _run_log(env))
        process.kill()
        process.communicate(timeout=60)
        report = json.loads(subprocess.run(reap, capture_output=True, text=True, timeout=60,
                                           check=True).stdout)  # fmt: skip
    with env.store() as store:
        (run,) = store.recent_runs()
        events = store.events(run.id)
    assert report["requeued"] == [run.id]
    assert report["gone"] == []
    assert (run.status.value, run.pid) == ("queued", None)
    assert any("before its agent started" in e.detail for e in events), [e.detail for e in events]
    labels = set(env.sim.issue(REPO, number).labels)
    assert "in-progress" in labels
    assert "needs-human" not in labels
    assert not any("failed" in c.body for c in env.sim.comments(REPO, number))
    assert env.calls() == []
    assert env.run(number, "--run-id", run.id) == 0
    with env.store() as store:
        assert store.get_run(run.id).status.value == "succeeded"
    assert len(env.calls()) == 1


def test_a_schedulers_run_waiting_for_its_slot_is_handed_back_on_sigterm(env: Env) -> None:
    """A reboot SIGTERMs every process: a scheduler's run (`--run-id`) waiting for its
    agent slot had spent nothing, so it goes back to the queue (released: no backoff, no
    report) instead of ending cancelled; `cgr cancel` of such a run still cancels it (its
    request is in the run's history before the signal)."""
    env.write_config(polling={"max_concurrency": 1})
    number = env.sim.create_issue(REPO, "Reboot", "", author="alice", labels=["ready"])
    other = env.sim.create_issue(REPO, "Not needed", "", author="alice", labels=["ready"])
    first, second = _queued_run(env, number), _queued_run(env, other)
    with host_agents_busy(env, 1):
        with run_process(env, number, "--run-id", first) as process:
            _wait("the run to wait", lambda: "waiting for an agent slot" in _run_log(env))
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=60)
        with env.store() as store:
            again, events = store.run_with_events(first)
        assert (again.status.value, again.pid) == ("queued", None), err
        assert any(e.detail.startswith("released: cgr received SIGTERM") for e in events)
        assert not any("cancelled" in c.body for c in env.sim.comments(REPO, number))
        # The same kind of run, cancelled by a person while it waits: cancelled.
        with run_process(env, other, "--run-id", second) as process:
            _wait("the second run to wait",
                  lambda: _run_log(env).count("waiting for an agent slot") >= 2)  # fmt: skip
            cancel = subprocess.run(
                [sys.executable, "-m", "cgr_cli", "cancel", second, "--reason", "not needed",
                 "--config", str(env.config_path)],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert cancel.returncode == 0, cancel.stderr
            process.communicate(timeout=60)
    with env.store() as store:
        cancelled, events = store.run_with_events(second)
    assert cancelled.status.value == "cancelled"
    # Cancelled by its own process, never back in the queue meanwhile (where a scheduler
    # could have taken it up again before the cancel ended it).
    assert not any(e.detail.startswith("released") for e in events), [e.detail for e in events]
    assert any("not needed" in c.body for c in env.sim.comments(REPO, other))
    assert env.calls() == []
