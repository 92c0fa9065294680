"""A repository's own ``.github/cgr.toml``: read from the default branch, tighten-only,
set-up and check commands, the check loop. Whole runs against the GitHub simulator, real
git over smart HTTP, a real SQLite store and the scripted agent (tests/fake_claude.py)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from runworld import REPO, Env, assert_no_token, sigterm_run

# The repository's check: fails until the agent wrote "fixed" into hello.txt, saying why
# on stdout and stderr.
CHECK = "sh scripts/check.sh"
CHECK_SH = """\
grep -q fixed hello.txt && exit 0
echo "FAIL: hello.txt is not fixed"
echo "see above" >&2
exit 1
"""


# Prints "broken dependency" without those words in the command line.
FAILING_SETUP = 'echo preparing; x=dependency; echo "broken $x" >&2; exit 3'


def _put_repo_file(env: Env, text: str, *, branch: str = "main", path: str = ".github/cgr.toml",
                   extra: dict[str, str] | None = None) -> None:  # fmt: skip
    env.sim.commit(REPO, branch, {path: text, **(extra or {})}, message="cgr settings",
                   author="alice")  # fmt: skip


def _run_dir(env: Env) -> Path:
    dirs = sorted(p for p in env.workspace.iterdir() if p.name.startswith("r-"))
    return dirs[-1]


def _summary(env: Env) -> dict[str, Any]:
    return json.loads((_run_dir(env) / "artifacts" / "summary.json").read_text())


def _status_comment(env: Env, number: int) -> str:
    bodies = [c.body for c in env.sim.comments(REPO, number) if "<!-- cgr:run=" in c.body]
    return bodies[-1]


def _issue(env: Env, title: str) -> int:
    return int(env.sim.create_issue(REPO, title, "Please do it.", author="alice",
                                    labels=["ready"]))  # fmt: skip


def _max_turns(call: dict[str, Any]) -> str:
    argv = call["argv"]
    return str(argv[argv.index("--max-turns") + 1])


def test_check_fails_first_and_passes_after_the_agents_second_attempt(env: Env) -> None:
    _put_repo_file(
        env,
        f"""
instructions_file = "docs/agents.md"
setup = ["mkdir -p .venv && echo installed > .venv/marker"]
check = [{json.dumps(CHECK)}]
[agent]
max_turns = 12
""",
        extra={
            "docs/agents.md": "Write greetings in lower case.\nKeep files short.\n",
            "scripts/check.sh": CHECK_SH,
        },
    )
    env.scenario("fix_on_retry")
    number = _issue(env, "Add a greeting")
    assert env.run(number) == 0
    summary = _summary(env)
    assert summary["outcome"] == "pr_opened"
    assert summary["checks_passed"] is True
    assert summary["agent_attempts"] == 2
    assert summary["repo_file"].startswith(".github/cgr.toml@")
    # Set-up once, the check twice: failed in round 1, passed in round 2.
    ran = [(c["phase"], c["attempt"], c["exit_code"]) for c in summary["commands"]]
    assert ran == [("setup", 0, 0), ("check", 1, 1), ("check", 2, 0)]
    # The figures add up both attempts (the scripted agent reports $0.0421 and 3 turns each).
    assert summary["cost_usd"] == pytest.approx(0.0842)
    assert summary["turns"] == 6

    first, second = env.calls()
    assert _max_turns(first) == "12"
    # First prompt: the maintainers' guidance in its own block, apart from the issue text;
    # the commands cgr runs are named.
    prompt = first["stdin"]
    guidance = re.search(r"<<<(MAINTAINERS-[0-9a-f]+)>>>\n(.*?)\n<<<END \1>>>", prompt, re.S)
    assert guidance is not None
    assert guidance.group(2) == "Write greetings in lower case.\nKeep files short."
    assert "docs/agents.md@" in prompt
    untrusted = re.findall(r"<<<(UNTRUSTED-[0-9a-f]+) [^>]*>>>\n(.*?)\n<<<END \1>>>", prompt, re.S)
    assert all("lower case" not in text for _, text in untrusted)
    assert prompt.index("lower case") < prompt.index("Please do it.")
    assert f"`{CHECK}`" in prompt
    # Second attempt: the same conversation, the check's output (stdout and stderr, in
    # order) inside an untrusted block.
    assert second["argv"][-2:] == ["--resume", first["session"]]
    fix = second["stdin"]
    assert "The repository's checks failed" in fix
    blocks = re.findall(r"<<<(UNTRUSTED-[0-9a-f]+) output of .*?>>>\n(.*?)\n<<<END \1>>>", fix,
                        re.S)  # fmt: skip
    assert len(blocks) == 1
    assert blocks[0][1].splitlines() == ["FAIL: hello.txt is not fixed", "see above"]

    # GitHub: a ready PR (not a draft) whose text says what ran; the same in the comment.
    (pr,) = env.sim.pull_requests(REPO)
    assert pr.pull is not None
    assert not pr.pull.draft
    for text in (pr.body or "", _status_comment(env, number)):
        assert "Repository commands" in text
        assert f"❌ check (round 1) `{CHECK}`: exit code 1" in text
        assert f"✅ check (round 2) `{CHECK}`: passed" in text
        assert "The checks passed." in text
        assert "FAIL: hello.txt" not in text  # never the raw output
    issue = env.sim.issue(REPO, number)
    assert "cgr-done" in issue.labels
    # What the set-up left (.venv) is not committed; the agent's file is, fixed.
    assert summary["changed_files"] == ["hello.txt"]
    run_dir = _run_dir(env)
    assert (run_dir / "logs" / "check-1-1.log").read_text().startswith("FAIL: hello.txt")
    assert (run_dir / "prompt.attempt-1.md").is_file()
    assert (run_dir / "logs" / "agent.attempt-1.jsonl").is_file()
    assert "FAIL: hello.txt is not fixed" in (run_dir / "logs" / "run.log").read_text()
    assert_no_token(env)


def test_checks_that_keep_failing_open_a_draft_pull_request(env: Env) -> None:
    _put_repo_file(env, f"check = [{json.dumps(CHECK)}]\n", extra={"scripts/check.sh": CHECK_SH})
    env.scenario("success")  # never writes "fixed"
    number = _issue(env, "Add a greeting")
    assert env.run(number) == 1  # a PR whose checks fail needs a person
    summary = _summary(env)
    assert summary["outcome"] == "pr_opened"
    assert summary["checks_passed"] is False
    assert summary["draft"] is True
    assert len(env.calls()) == 2  # commands.fix_attempts = 1 by default
    (pr,) = env.sim.pull_requests(REPO)
    assert pr.pull is not None
    assert pr.pull.draft
    comment = _status_comment(env, number)
    assert "Opened draft pull request" in comment
    assert "still failed after 2 agent attempts" in comment
    labels = env.sim.issue(REPO, number).labels
    assert "needs-human" in labels
    assert "cgr-done" not in labels


def test_a_check_that_hangs_is_ended_at_its_time_limit(env: Env) -> None:
    pid_file = env.agent_state / "check.pid"
    _put_repo_file(
        env,
        f"""
check = ['echo $$ > "{pid_file}"; echo started; exec sleep 60']
[commands]
check_seconds = 1.5
fix_attempts = 0
on_failure = "no_pr"
""",
    )
    number = _issue(env, "Add a greeting")
    started = time.monotonic()
    assert env.run(number) == 1
    assert time.monotonic() - started < 30
    summary = _summary(env)
    assert summary["outcome"] == "failed"
    (check,) = summary["commands"]
    assert check["timed_out"] is True
    assert check["duration_s"] < 10
    assert env.sim.pull_requests(REPO) == []
    assert set(env.sim.branches(REPO)) == {"main"}
    comment = _status_comment(env, number)
    assert "timed out after 1.5s" in comment
    assert "opens no pull request with failing checks" in comment
    assert "needs-human" in env.sim.issue(REPO, number).labels
    # The command's process is gone (its group was ended), and the agent ran once.
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert len(env.calls()) == 1
    assert "hello.txt" in (_run_dir(env) / "artifacts" / "git.diff").read_text()


def test_failing_set_up_ends_the_run_before_the_agent(env: Env) -> None:
    env_file = env.agent_state / "setup.env"
    env.agent_state.mkdir(parents=True, exist_ok=True)
    _put_repo_file(
        env,
        f"""
setup = ['env > "{env_file}"; t=ghp_; echo "leaked $t{"Z" * 36}"', '{FAILING_SETUP}',
         "echo never runs > never.txt"]
check = ["true"]
""",
    )
    number = _issue(env, "Add a greeting")
    assert env.run(number) == 1
    assert env.calls() == []  # the agent never started
    summary = _summary(env)
    assert summary["outcome"] == "failed"
    assert [c["exit_code"] for c in summary["commands"]] == [0, 3]
    comment = _status_comment(env, number)
    assert f"set-up command `{FAILING_SETUP}` failed" in comment
    assert "exit code 3" in comment
    assert "broken dependency" not in comment
    assert env.sim.pull_requests(REPO) == []
    log = (_run_dir(env) / "logs" / "setup-2.log").read_text()
    assert log.splitlines() == ["preparing", "broken dependency"]
    # The set-up ran with the agent's environment: no GitHub token under any name.
    # The commands' logs are scrubbed like the agent's: no token-shaped string is kept.
    first_log = (_run_dir(env) / "logs" / "setup-1.log").read_text()
    assert first_log.startswith("leaked ")
    assert "ghp_" + "Z" * 36 not in first_log
    seen = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert "GH_TOKEN" not in seen
    assert "GITHUB_TOKEN" not in seen
    assert env.sim.token not in env_file.read_text()
    assert seen["FAKE_CLAUDE_SCENARIO"] == "success"  # the agent's pass-through list
    assert seen["PWD"].endswith(f"targets/acme/widgets/{number}/repo")
    assert_no_token(env)


def test_a_repo_file_cannot_raise_the_hosts_limits(env: Env) -> None:
    env.write_config(agent={"model": "claude-host", "max_cost_usd": 2.0,
                            "allowed_tools": ["Read", "Edit"]})  # fmt: skip
    _put_repo_file(
        env,
        """
[agent]
model = "claude-bigger"
max_turns = 100
max_cost_usd = 1.0
allowed_tools = ["Read", "Bash"]
[branching]
prefix = "cgr/widgets"
[commands]
on_failure = "draft"
""",
    )
    number = _issue(env, "Add a greeting")
    assert env.run(number) == 0
    (call,) = env.calls()
    argv = call["argv"]
    assert _max_turns(call) == "40"  # the host's
    assert argv[argv.index("--model") + 1] == "claude-host"
    assert argv[argv.index("--allowedTools") + 1] == "Read"  # narrowed, Bash refused
    (pr,) = env.sim.pull_requests(REPO)
    assert pr.pull is not None
    assert pr.pull.head_ref.startswith(f"cgr/widgets/{number}-")  # a prefix inside cgr/
    comment = _status_comment(env, number)
    for text in (comment, pr.body or ""):
        assert "Note: agent.max_turns = 100 in .github/cgr.toml@" in text
        assert "above the host's limit of 40" in text
        assert "agent.model = 'claude-bigger'" in text
        assert "'Bash', which the host does not allow" in text
    assert "max_cost_usd" not in comment  # lowering is allowed: nothing to say
    summary = _summary(env)
    assert len(summary["repo_notes"]) == 3


def test_an_invalid_repo_file_ends_the_run_with_the_key_named(env: Env) -> None:
    _put_repo_file(env, '[agent]\nmax_turns = "many"\n')
    number = _issue(env, "Add a greeting")
    assert env.run(number) == 1
    assert env.calls() == []
    comment = _status_comment(env, number)
    assert ".github/cgr.toml" in comment
    assert 'agent.max_turns = "many"' in comment
    assert "Expected `int`" in comment
    assert "fix it on the default branch" in comment
    assert env.sim.pull_requests(REPO) == []
    issue = env.sim.issue(REPO, number)
    assert "needs-human" in issue.labels
    assert "in-progress" not in issue.labels


def test_a_pull_request_branch_cannot_change_its_own_rules(env: Env) -> None:
    _put_repo_file(
        env,
        'instructions = "MAIN-BRANCH GUIDANCE"\ncheck = ["test -f hello.txt"]\n'
        "[agent]\nmax_turns = 7\n",
    )
    # The pull request's branch carries a file of its own: other guidance, a check that
    # would fail, and a different budget. None of it may apply.
    env.sim.commit(REPO, "feature", {
        ".github/cgr.toml": 'instructions = "PR-BRANCH GUIDANCE"\ncheck = ["exit 1"]\n'
                            "[agent]\nmax_turns = 2\n",
        ".cgr.toml": "[agent]\nmax_turns = 3\n",
        "src/app.py": "print('hi')\n",
    }, message="feature", author="alice")  # fmt: skip
    number = env.sim.create_pull_request(REPO, "feature", "A feature", "", author="alice")
    comment_id = env.sim.add_comment(REPO, number, f"@{env.sim.bot_login} add a greeting",
                                     author="alice")  # fmt: skip
    assert env.run(number, "--comment-id", str(comment_id)) == 0
    (call,) = env.calls()
    assert _max_turns(call) == "7"
    assert "MAIN-BRANCH GUIDANCE" in call["stdin"]
    assert "PR-BRANCH GUIDANCE" not in call["stdin"]
    summary = _summary(env)
    assert summary["outcome"] == "pr_updated"
    assert [c["command"] for c in summary["commands"]] == ["test -f hello.txt"]
    assert summary["checks_passed"] is True


def test_repo_blocked_label_and_both_files(env: Env) -> None:
    _put_repo_file(env, '[labels]\nblocked = ["wip"]\n')
    number = int(env.sim.create_issue(REPO, "Not yet", "", author="alice",
                                      labels=["ready", "wip"]))  # fmt: skip
    assert env.run(number) == 1
    assert env.calls() == []
    comment = _status_comment(env, number)
    assert "labelled 'wip', which .github/cgr.toml@" in comment
    # Both file names on the default branch: which one counts would be a guess.
    _put_repo_file(env, "[agent]\nmax_turns = 3\n", path=".cgr.toml")
    other = _issue(env, "Another")
    assert env.run(other) == 1
    assert "both .github/cgr.toml and .cgr.toml exist" in _status_comment(env, other)


def test_config_check_repo_shows_where_each_value_comes_from(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    from cgr_cli import main

    env.write_config(agent={"max_turns": 30})
    _put_repo_file(
        env,
        'instructions = "Be brief."\nsetup = ["make deps"]\ncheck = ["make test"]\n'
        "[agent]\nmax_turns = 10\nmax_cost_usd = 99.0\n",
    )
    assert main(["config", "check", "--config", str(env.config_path), "--repo", REPO]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(re.fullmatch(r"max_turns = 10  # \.github/cgr\.toml@[0-9a-f]{7}", ln)
               for ln in lines), out  # fmt: skip
    assert f"max_cost_usd = 5.0  # {env.config_path}" in lines
    assert 'permission_mode = "acceptEdits"  # default' in lines
    assert any(ln.startswith("# instructions: 1 line(s), from .github/cgr.toml@") for ln in lines)
    assert "# setup: make deps" in lines
    assert "# check: make test" in lines
    assert any(ln.startswith("# not applied: agent.max_cost_usd = 99") for ln in lines)
    assert env.sim.token not in out

    # An invalid file: exit 1 and the key named.
    _put_repo_file(env, "[agent]\nmax_turn = 3\n")
    assert main(["config", "check", "--config", str(env.config_path), "--repo", REPO]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'agent.max_turn'" in err
    assert "did you mean 'agent.max_turns'" in err
    # instructions_file is read from the same commit: missing, or too long, is an error.
    argv = ["config", "check", "--config", str(env.config_path), "--repo", REPO]
    _put_repo_file(env, 'instructions_file = "docs/nope.md"\n')
    assert main(argv) == 1
    assert "instructions_file = 'docs/nope.md': no such file on the default branch" in (
        capsys.readouterr().err
    )
    _put_repo_file(env, 'instructions_file = "docs/long.md"\n',
                   extra={"docs/long.md": "x" * 20_001})  # fmt: skip
    assert main(argv) == 1
    assert "20001 characters; at most 20000" in capsys.readouterr().err


def test_doctor_validates_every_watched_repositorys_file(env: Env) -> None:
    from cgr_cli.config._load import load_config
    from cgr_cli.ops._doctor import CheckStatus, check_repo_file

    config, _ = load_config(env.config_path)
    check = check_repo_file(config, REPO)
    assert check.status is CheckStatus.PASS
    assert "no .github/cgr.toml" in check.detail

    _put_repo_file(env, 'check = ["make test"]\n[agent]\nmax_turns = 400\n')
    check = check_repo_file(config, REPO)
    assert check.status is CheckStatus.WARN
    assert "agent.max_turns = 400" in check.detail
    assert check.data["check"] == 1

    _put_repo_file(env, "[labels]\nready = 'go'\n")
    check = check_repo_file(config, REPO)
    assert check.status is CheckStatus.FAIL
    assert check.data["key"] == "labels.ready"
    assert "discovery looks for the same labels" in check.detail
    assert env.sim.token not in json.dumps([check.detail, check.fix, check.data])


def test_commands_get_no_token_even_through_the_agents_pass_through(env: Env) -> None:
    # Same allow-list as the agent: a name the host passes through still loses a value
    # that holds the token.
    env.monkeypatch.setenv("SNEAKY", f"x{env.sim.token}x")
    env.write_config(agent={"env_passthrough": ["FAKE_CLAUDE_SCENARIO", "FAKE_CLAUDE_STATE",
                                                "SNEAKY"]})  # fmt: skip
    out = env.agent_state / "check.env"
    _put_repo_file(env, f"check = ['env > \"{out}\"']\n")
    number = _issue(env, "Add a greeting")
    assert env.run(number) == 0
    text = out.read_text()
    assert "SNEAKY=" not in text
    assert env.sim.token not in text
    assert os.environ.get("GH_TOKEN") == env.sim.token  # cgr itself had it


def test_output_past_the_bound_is_not_kept_and_leftovers_are_ended(env: Env) -> None:
    pid_file = env.agent_state / "daemon.pid"
    env.agent_state.mkdir(parents=True, exist_ok=True)
    _put_repo_file(
        env,
        f"""
# A set-up step that leaves a daemon behind, outside its process group.
setup = ['setsid sleep 120 > /dev/null 2>&1 < /dev/null & echo $! > "{pid_file}"']
check = ["yes spam"]
[commands]
output_bytes = 20000
check_seconds = 2
fix_attempts = 0
on_failure = "no_pr"
""",
    )
    number = _issue(env, "Add a greeting")
    assert env.run(number) == 1
    setup, check = _summary(env)["commands"]
    assert setup["exit_code"] == 0
    assert check["output_limited"] is True
    assert check["timed_out"] is True
    log = _run_dir(env) / check["log"]
    assert 20_000 <= log.stat().st_size < 21_000  # the bound and cgr-exec's note line
    assert "output past commands.output_bytes was not kept" in _status_comment(env, number)
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_the_cost_ceiling_covers_every_attempt(env: Env) -> None:
    # Each attempt of the scripted agent costs $0.0421: the first fits under $0.05, the
    # second (a fix attempt may only spend what is left) takes the run over it.
    env.write_config(agent={"max_cost_usd": 0.05})
    _put_repo_file(env, f"check = [{json.dumps(CHECK)}]\n", extra={"scripts/check.sh": CHECK_SH})
    env.scenario("fix_on_retry")
    number = _issue(env, "Add a greeting")
    assert env.run(number) == 1
    assert len(env.calls()) == 2
    summary = _summary(env)
    assert summary["outcome"] == "failed"
    assert summary["cost_usd"] == pytest.approx(0.0842)
    assert "cost ceiling of $0.05" in summary["error"]
    assert env.sim.pull_requests(REPO) == []


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


def test_sigterm_during_a_check_ends_it_and_what_it_started(env: Env) -> None:
    """A real ``cgr run`` process stopped while a check hangs: the check's group and the
    daemon it started outside that group are ended, and the run reports as cancelled."""
    check_pid, daemon_pid = env.agent_state / "check.pid", env.agent_state / "daemon.pid"
    _put_repo_file(
        env,
        f"""check = ['setsid sleep 120 > /dev/null 2>&1 < /dev/null & echo $! > "{daemon_pid}"; \
echo $$ > "{check_pid}"; exec sleep 60']\n""",
    )
    number = _issue(env, "Stop me")
    code, out, err = sigterm_run(
        env, number, started=check_pid.exists, what="the check", timeout=60, settle=0.5
    )
    assert code == 1, err
    assert "cancelled" in out
    assert _summary(env)["outcome"] == "cancelled"
    assert "cancelled" in _status_comment(env, number)
    assert _gone(int(check_pid.read_text()))
    assert _gone(int(daemon_pid.read_text()))
    assert env.sim.pull_requests(REPO) == []


def _repo_with(tmp_path: Path, files: dict[str, str]) -> Path:
    """A repository whose one commit holds ``files`` (a path ending in "/" is a directory)."""
    import subprocess

    work = tmp_path / "work"
    for name, text in files.items():
        target = work / name
        if name.endswith("/"):
            (target / "inside").parent.mkdir(parents=True, exist_ok=True)
            (target / "inside").write_text(text)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(work)]
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "files"], check=True)
    return work / ".git"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({".cgr.toml/": "x"}, ".cgr.toml is a tree, not a file"),
        ({".github/cgr.toml": "#" * 70_000}, ".github/cgr.toml is 70000 bytes; at most"),
        (
            {".github/cgr.toml": 'instructions_file = "docs"\n', "docs/": "x"},
            "docs is a tree, not a file",
        ),
        (
            {".github/cgr.toml": 'instructions_file = "doc"\n', "docs/a.md": "x"},
            "instructions_file = 'doc': no such file on the default branch",
        ),
    ],
)
def test_the_repo_file_is_read_only_when_it_is_a_file_of_bounded_size(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    """One ``ls-tree`` tells which of the files exist, their kind and size: a directory, an
    oversized file and a path that only prefixes an entry are refused by name."""
    from cgr_cli._errors import ConfigError
    from cgr_cli.config._load import parse_config
    from cgr_cli.run._git import Git
    from cgr_cli.run._repo_file import read_repo_settings

    git_dir = _repo_with(tmp_path, files)
    with pytest.raises(ConfigError) as caught:
        read_repo_settings(Git(token=None), git_dir, parse_config({}))
    assert message in str(caught.value)


def test_the_repo_file_and_its_instructions_are_read_from_one_listing(tmp_path: Path) -> None:
    from cgr_cli.config._load import parse_config
    from cgr_cli.run._git import Git
    from cgr_cli.run._repo_file import read_repo_settings

    git_dir = _repo_with(tmp_path, {
        ".cgr.toml": 'instructions_file = "docs/agents.md"\n[agent]\nmax_turns = 5\n',
        "docs/agents.md": "Run the linter first.\n",
    })  # fmt: skip
    settings = read_repo_settings(Git(token=None), git_dir, parse_config({}))
    assert settings.config.agent.max_turns == 5
    assert settings.instructions == "Run the linter first."
