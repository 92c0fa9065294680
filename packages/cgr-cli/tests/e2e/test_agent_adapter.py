"""cgr's agent adapter against the installed Claude Code release (each pinned one in turn).

cgr asks the CLI for its release and builds the command line for it (``run/_agent_cli``):
the permission mode under the release's own name, ``--permission-prompts none`` where the
flag exists. Here the real CLI must answer ``--version`` as cgr expects and take cgr's
command line, whichever of the two mode names the configuration uses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from claude_cli import Claude
from model_server import ModelServer
from scenarios import reply, tool, turn, write

from cgr_cli import agent_argv, parse_config
from cgr_cli.run._agent_cli import AgentCli, ClaudeVersion, Support, detect_agent_cli


def test_cgr_reads_the_release_and_finds_it_in_the_tested_range(
    claude: Claude, claude_version: str
) -> None:
    cli = detect_agent_cli([str(claude.binary)], claude.env())

    assert cli == AgentCli(ClaudeVersion.of(claude_version), f"{claude_version} (Claude Code)")
    assert cli.support is Support.TESTED


@pytest.mark.parametrize("mode", ["default", "manual"])
def test_the_real_cli_takes_cgrs_command_line_for_its_release(
    claude: Claude, model_server: ModelServer, git_repo: Path, mode: str
) -> None:
    # Asking mode, Read allowed: a write and a web fetch would need someone to approve
    # them, and in a headless run nobody does; both are refused, the run goes on.
    config = parse_config(
        {"agent": {"command": str(claude.binary), "permission_mode": mode,
                   "allowed_tools": ["Read"], "max_turns": 5}}
    ).agent  # fmt: skip
    cli = detect_agent_cli(config.argv, claude.env())
    argv = agent_argv(config, cli=cli)
    model_server.scenario = [
        turn(tool("WebFetch", {"url": "http://127.0.0.1:9/", "prompt": "Read it."})),
        turn(write("hello.txt", "hello\n")),
        reply("Both were refused."),
    ]

    out = claude.run("Fetch, then write.", cwd=git_repo, argv=argv)

    assert out.returncode == 0, out
    # Both releases call the asking mode "default" in their init line, whatever its flag.
    assert out.init["permissionMode"] == "default"
    assert argv[argv.index("--permission-mode") + 1] == (
        "manual" if claude.since("2.1.200") else "default"
    )
    result = out.result
    assert result is not None
    assert [d["tool_name"] for d in result["permission_denials"]] == ["WebFetch", "Write"]
    assert not (git_repo / "hello.txt").exists()
    refusals = [r["content"] for r in out.tool_results()]
    if cli.has("--permission-prompts"):
        # `--permission-prompts none` in effect: the refusal says nobody can approve.
        assert "--permission-prompts" in argv
        assert all("no approval surface" in text for text in refusals), refusals
    else:
        assert "--permission-prompts" not in argv
        assert all("requested permissions" in text for text in refusals), refusals


def test_the_releases_help_lists_what_cgr_thinks_it_has(claude: Claude) -> None:
    # cgr's table of first releases (found by bisecting --help) agrees with this release.
    done = subprocess.run(
        [str(claude.binary), "--help"], env=claude.env(), capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    cli = detect_agent_cli([str(claude.binary)], claude.env())
    # "--permission-mode <mode> ... (choices: "acceptEdits", "auto", ...)"
    modes = done.stdout[done.stdout.index("--permission-mode") :].split(")", 1)[0]
    assert ('"manual"' in modes) is (cli.permission_mode("default") == "manual")
    assert ('"default"' in modes) is (cli.permission_mode("manual") == "default")
    for flag in ("--restricted", "--permission-prompts"):
        assert (f"  {flag} " in done.stdout) is cli.has(flag), flag


@pytest.mark.parametrize("mode", ["default", "manual"])
def test_which_mode_names_the_release_itself_takes(
    claude: Claude, model_server: ModelServer, git_repo: Path, mode: str
) -> None:
    # What the translation protects against: 2.1.197 refuses "manual"; 2.1.332 still
    # takes "default", though its --help lists only "manual".
    model_server.scenario = [reply("Done.")]

    argv = [str(claude.binary), "-p", "--output-format", "stream-json", "--verbose"]

    out = claude.run("Hello.", cwd=git_repo, argv=[*argv, "--permission-mode", mode])

    if mode == "manual" and not claude.since("2.1.200"):
        assert out.returncode == 1, out
        assert "argument 'manual' is invalid" in out.stderr
        assert model_server.requests == []
    else:
        assert out.returncode == 0, out
        assert out.init["permissionMode"] == "default"
