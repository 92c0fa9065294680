"""The pieces of issue 13 on their own: the sandbox plan (a pure function of the config,
the run's paths and what the machine supports), the secret gate over ``git log -p``, the
redactor's token shapes, and run files opened without following symlinks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cgr_cli._errors import ConfigError
from cgr_cli._redact import Redactor
from cgr_cli.config._load import parse_config
from cgr_cli.config._model import Config
from cgr_cli.run._safe_fs import RedirectedError, RunFiles, redact_tree, run_dir_problems
from cgr_cli.run._sandbox import RunPaths, narrow, plan_sandbox
from cgr_cli.run._secret_gate import PATCH_ARGS, SecretGate, known_secrets
from cgr_exec import ConfinementSupport

FULL = ConfinementSupport(landlock_abi=7, can_change_user=False)
ROOT_FULL = ConfinementSupport(landlock_abi=7, can_change_user=True)
NONE = ConfinementSupport(landlock_abi=0, can_change_user=False)


def _config(tmp_path: Path, **agent: object) -> Config:
    data = {
        "paths": {"workspace_root": str(tmp_path / "ws"), "database": str(tmp_path / "db.sqlite3")},
        "agent": agent,
    }
    return parse_config(data, source="test")


def _paths(config: Config) -> RunPaths:
    root = config.workspace_root
    return RunPaths.of(config, root / "targets" / "o" / "r" / "1" / "repo", root / "r-1")


def test_plan_grants_the_checkout_home_and_tmp_and_nothing_of_cgr(tmp_path: Path) -> None:
    config = _config(tmp_path)
    home = tmp_path / "cgr-home"
    (home / ".config" / "cgr").mkdir(parents=True)
    environ = {"HOME": str(home)}
    plan = plan_sandbox(config, _paths(config), {"PATH": "/usr/bin:/bin"}, support=FULL,
                        environ=environ)  # fmt: skip
    paths = _paths(config)
    assert plan.landlock
    assert plan.confined
    assert set(plan.read_write) >= {str(paths.checkout), str(paths.home), str(paths.tmp)}
    assert paths.home == paths.checkout.with_name("home")
    assert plan.env == {"HOME": str(paths.home), "TMPDIR": str(paths.tmp)}
    assert "/usr" in plan.read_only
    # /etc is allowed, but narrowed around /etc/shadow (and /etc/cgr where it exists).
    assert "/etc" not in plan.read_only
    assert "/etc/passwd" in plan.read_only
    assert "/etc/shadow" not in plan.read_only
    granted = [Path(p) for p in (*plan.read_only, *plan.read_write)]
    for forbidden in (home / ".config" / "cgr", config.database, config.workspace_root):
        for path in granted:
            assert path != forbidden, path
            assert path not in forbidden.parents, (path, forbidden)
    assert plan.tcp_ports == (443,)


def test_narrow_replaces_a_directory_by_its_other_children(tmp_path: Path) -> None:
    (tmp_path / "a" / "secret").mkdir(parents=True)
    (tmp_path / "a" / "ok").mkdir()
    (tmp_path / "a" / "file").write_text("x")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "secret")
    got = narrow(tmp_path / "a", [tmp_path / "a" / "secret"])
    assert got == [tmp_path / "a" / "file", tmp_path / "a" / "ok"]
    assert narrow(tmp_path / "a" / "secret" / "x", [tmp_path / "a" / "secret"]) == []
    assert narrow(tmp_path / "b", [tmp_path / "a"]) == [tmp_path / "b"]


def test_narrow_follows_a_symlink_to_a_directory_holding_a_forbidden_path_elsewhere(
    tmp_path: Path,
) -> None:
    """A child reached by a symlink is narrowed against every forbidden path, not only
    those inside its parent: its target can be anywhere."""
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a / "secret", a / "deep" / "secret2", a / "deep" / "x", b / "secret3", b / "fine"):
        d.mkdir(parents=True)
    (a / "to-b").symlink_to(b)
    (a / "deep" / "up").symlink_to(a)  # a loop back up: ends at a's depth limit or its rules
    forbidden = [a / "secret", a / "deep" / "secret2", b / "secret3"]
    got = narrow(a, forbidden)
    assert b / "fine" in got
    for path in got:
        for f in forbidden:
            assert path != f, path
            assert f not in path.parents, (path, f)
            assert path not in f.parents, (path, f)
    assert a / "deep" / "x" in got
    assert b not in got


def test_the_agents_installation_and_ports(tmp_path: Path) -> None:
    prefix = tmp_path / "venv"
    (prefix / "bin").mkdir(parents=True)
    agent = prefix / "bin" / "claude"
    agent.write_text("#!/bin/sh\n")
    config = _config(tmp_path, command=str(agent), sandbox={"read_only": [str(tmp_path / "x")]})
    env = {"PATH": "/usr/bin", "ANTHROPIC_BASE_URL": "http://127.0.0.1:8123",
           "HTTPS_PROXY": "http://proxy:3128"}  # fmt: skip
    plan = plan_sandbox(config, _paths(config), env, support=FULL, environ={"HOME": "/nowhere"})
    assert str(prefix / "bin") in plan.read_only
    assert str(prefix) in plan.read_only  # the prefix above bin/
    assert str(tmp_path / "x") in plan.read_only
    assert plan.tcp_ports == (443, 8123, 3128)
    fixed = _config(tmp_path, sandbox={"tcp_ports": [8443]})
    assert plan_sandbox(fixed, _paths(fixed), env, support=FULL).tcp_ports == (8443,)


def test_no_confinement_is_refused_naming_the_setting(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with pytest.raises(ConfigError, match=r'agent.sandbox.mode = "landlock": Landlock is not'):
        plan_sandbox(config, _paths(config), {}, support=NONE)
    user = _config(tmp_path, sandbox={"mode": "user"})
    with pytest.raises(ConfigError, match=r"needs cgr to run as root"):
        plan_sandbox(user, _paths(user), {}, support=FULL)
    old = ConfinementSupport(landlock_abi=3, can_change_user=False)
    with pytest.raises(ConfigError, match=r"cannot restrict TCP ports"):
        plan_sandbox(config, _paths(config), {}, support=old)
    off = _config(tmp_path, sandbox={"mode": "off"})
    plan = plan_sandbox(off, _paths(off), {}, support=NONE)
    assert not plan.confined
    assert plan.confinement() is None


def test_root_with_bypass_and_no_confinement_is_always_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, permission_mode="bypassPermissions", sandbox={"mode": "off"})
    with pytest.raises(ConfigError, match=r"never run"):
        plan_sandbox(config, _paths(config), {}, support=ROOT_FULL)
    # As root with Landlock (and optionally another user) it is planned.
    both = _config(tmp_path, permission_mode="bypassPermissions",
                   sandbox={"mode": "landlock+user", "user": "nobody"})  # fmt: skip
    plan = plan_sandbox(both, _paths(both), {}, support=ROOT_FULL)
    spec = plan.confinement()
    assert spec is not None
    assert spec.landlock
    assert spec.user == "nobody"


@pytest.mark.parametrize(
    ("toml_key", "value", "fragment"),
    [
        ("read_only", ["relative/dir"], "agent.sandbox.read_only[0]"),
        ("mode", "chroot", "agent.sandbox.mode"),
        ("tcp_ports", [0], "agent.sandbox.tcp_ports"),
    ],
)
def test_sandbox_config_errors_name_the_key(toml_key: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_config({"agent": {"sandbox": {toml_key: value}}}, source="test")


def test_a_run_that_cannot_be_confined_is_refused_before_the_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cgr_cli import main

    monkeypatch.setattr("cgr_exec.probe_confinement", lambda: NONE)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[paths]\nworkspace_root = "{tmp_path / "ws"}"\ndatabase = "{tmp_path / "db"}"\n'
        '[github]\ntoken = "ghp_' + "x" * 36 + '"\napi_url = "http://127.0.0.1:9"\n'
        # An agent command that exists, so the sandbox is what refuses the run.
        f"[agent]\ncommand = [{json.dumps(sys.executable)}]\n"
    )
    # A configuration that cannot run is a failure (1) in the exit-code table.
    assert main(["run", "--config", str(config), "--repo", "a/b", "--number", "1"]) == 1
    err = capsys.readouterr().err
    assert 'agent.sandbox.mode = "landlock"' in err
    assert '"off"' in err
    # Refused before any run row (the preflight may have created the empty store).
    if (tmp_path / "db").exists():
        from cgr_store import SQLiteStore

        with SQLiteStore(tmp_path / "db") as store:
            assert store.recent_runs() == []


# -- the secret gate -----------------------------------------------------------------------


def _repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "a.txt").write_text("one\ntwo\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    base = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    return repo, base


def _commit(repo: Path, message: str) -> None:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "add", "--all"], check=True)
    subprocess.run([*git, "commit", "-qm", message], check=True)


def _patch(repo: Path, base: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *PATCH_ARGS, f"{base}..HEAD"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def test_gate_names_file_line_and_commit_never_the_value(tmp_path: Path) -> None:
    repo, base = _repo(tmp_path)
    secret = "s3cr3t-db-password-value"
    (repo / "a.txt").write_text(f"one\ntwo\npassword={secret}\n")
    _commit(repo, "change a")
    (repo / "b.bin").write_bytes(b"\x00\x01binary " + secret.encode() + b"\x00")
    (repo / "key.pem").write_text(
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"
    )
    _commit(repo, "more\n\nAKIAABCDEFGHIJKLMNOP in the body")
    gate = SecretGate({"$DB_PASSWORD": secret})
    findings = [str(f) for f in gate.scan_patch(_patch(repo, base))]
    assert "a.txt:3: $DB_PASSWORD" in findings
    assert "b.bin:1: $DB_PASSWORD" in findings  # binary files are scanned as text
    assert "key.pem:1: a private key" in findings
    assert any(f.startswith("the message of commit ") and "AWS" in f for f in findings)
    assert not any(secret in f for f in findings)


def test_gate_passes_a_clean_patch(tmp_path: Path) -> None:
    repo, base = _repo(tmp_path)
    (repo / "a.txt").write_text("one\ntwo\nthree: a key-value store, a token bucket\n")
    _commit(repo, "ordinary words: secret, token, password")
    assert SecretGate({"the GitHub token": "ghp_" + "z" * 36}).scan_patch(_patch(repo, base)) == []


def test_known_secrets_from_config_token_and_agent_env(tmp_path: Path) -> None:
    config = _config(tmp_path, secret_env=["DATABASE_URL"])
    found = known_secrets(
        config,
        token="ghp_" + "t" * 36,
        agent_env={"ANTHROPIC_API_KEY": "sk-ant-xyz-123456", "MY_PASSWORD": "hunter22!",
                   "DATABASE_URL": "postgres://u:p@h/db", "LANG": "C.UTF-8", "SHORT_KEY": "abc"},
        environ={"GH_TOKEN": "gho_" + "g" * 36},
    )  # fmt: skip
    assert set(found) == {"the GitHub token", "$ANTHROPIC_API_KEY", "$MY_PASSWORD",
                          "$DATABASE_URL", "$GH_TOKEN"}  # fmt: skip


def test_redactor_knows_the_token_shapes() -> None:
    redact = Redactor()
    for text in ("sk-ant-api03-abcdefghijklmnopqrstu", "AKIAABCDEFGHIJKLMNOP",
                 "ghr_" + "a" * 36, "github_pat_" + "b" * 40,
                 "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----"):  # fmt: skip
        assert redact(f"x {text} y") == "x [REDACTED] y", text


# Every secret issue 13 lists, one by one: in a commit it blocks the push (a finding at its
# file and line, never the value), in text bound for GitHub it is redacted.
_BODY = ["MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun",
         "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK",
         "LxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW/VDL5AaWTg0nLVkjRo"]  # fmt: skip


def _pem(label: str, body: str) -> str:
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"


_FAKE_KEY = _pem("RSA PRIVATE KEY", "\n".join(_BODY)) + "\n"
SHAPED = {
    "ghp_": ("a GitHub token", "ghp_" + "A1b2C3d4" * 4 + "x9Z8"),
    "gho_": ("a GitHub token", "gho_" + "Q" * 36),
    "ghu_": ("a GitHub token", "ghu_" + "u1" * 18),
    "ghs_": ("a GitHub token", "ghs_" + "s2" * 18),
    "ghr_": ("a GitHub token", "ghr_" + "r3" * 18),
    "github_pat_": ("a GitHub token", "github_pat_11ABCDEFG0" + "x" * 60),
    "sk-ant-": ("an Anthropic API key", "sk-ant-api03-" + "k" * 40),
    "AKIA": ("an AWS access key id", "AKIA" + "Z" * 16),
    "ASIA": ("an AWS access key id", "ASIA" + "Y" * 16),
    "PEM RSA": ("a private key", _FAKE_KEY),
    "PEM EC": ("a private key", _pem("EC PRIVATE KEY", "MHcCAQEE")),
    "PEM OpenSSH": ("a private key", _pem("OPENSSH PRIVATE KEY", "b3Bl")),
    "PEM PKCS8 encrypted": ("a private key", _pem("ENCRYPTED PRIVATE KEY", "MIIF")),
    "PGP": ("a private key", _pem("PGP PRIVATE KEY BLOCK", "\nlQdG")),
}  # fmt: skip


@pytest.mark.parametrize("label", list(SHAPED))
def test_each_token_shape_blocks_the_push_and_is_redacted(tmp_path: Path, label: str) -> None:
    what, value = SHAPED[label]
    repo, base = _repo(tmp_path)
    (repo / "leak.txt").write_text(f"first line\nsecret: {value}\n")
    _commit(repo, "a change")
    findings = [str(f) for f in SecretGate({}).scan_patch(_patch(repo, base))]
    assert findings == [f"leak.txt:2: {what}"]
    # In a commit message too.
    repo2, base2 = _repo(tmp_path / "two")
    (repo2 / "ok.txt").write_text("fine\n")
    _commit(repo2, f"subject\n\n{value}")
    (finding,) = SecretGate({}).scan_patch(_patch(repo2, base2))
    assert finding.where.startswith("the message of commit ")
    assert finding.what == what
    # Text bound for GitHub (comments, PR bodies) is redacted: no piece of it is left.
    text = Redactor()(f"the agent said: {value.strip()} (end)")
    assert text == "the agent said: [REDACTED] (end)"


def _known_config(tmp_path: Path) -> Config:
    pem = tmp_path / "app.pem"
    pem.write_text(_FAKE_KEY)
    return parse_config(
        {"paths": {"workspace_root": str(tmp_path / "ws"), "database": str(tmp_path / "db")},
         "github": {"app_id": 1, "private_key_file": str(pem), "installation_id": 2},
         "webhook": {"listen": "127.0.0.1:0", "secret": "whsec-hook-value-0123"},
         "agent": {"secret_env": ["DATABASE_URL"]}},
        source="test",
    )  # fmt: skip


KNOWN = {
    # name the finding carries: the value, as the agent would commit it
    "the GitHub token": "plain-token-value-0123456789",
    "$ANTHROPIC_API_KEY": "not-shaped-key-0123456789",
    "$NPM_TOKEN": "npm-token-value-0123456789",
    "$SIGNING_SECRET": "signing-secret-value-0123",
    "$DB_PASSWORD": "db-password-value-0123",
    "$DATABASE_URL": "postgres://u:pw@db.internal/app",
    "a secret of the configuration (1)": "whsec-hook-value-0123",
    "the GitHub App's private key": _FAKE_KEY.strip(),
    "the GitHub App's private key (line 3)": _BODY[1],
}


@pytest.mark.parametrize("name", list(KNOWN))
def test_each_known_secret_blocks_the_push_and_is_redacted(tmp_path: Path, name: str) -> None:
    config = _known_config(tmp_path)
    agent_env = {"ANTHROPIC_API_KEY": KNOWN["$ANTHROPIC_API_KEY"], "NPM_TOKEN": KNOWN["$NPM_TOKEN"],
                 "SIGNING_SECRET": KNOWN["$SIGNING_SECRET"], "DB_PASSWORD": KNOWN["$DB_PASSWORD"],
                 "DATABASE_URL": KNOWN["$DATABASE_URL"], "LANG": "C.UTF-8"}  # fmt: skip
    secrets = known_secrets(config, token=KNOWN["the GitHub token"], agent_env=agent_env,
                            environ={})  # fmt: skip
    assert secrets[name] == KNOWN[name]
    value = KNOWN[name]
    repo, base = _repo(tmp_path)
    (repo / "leak.txt").write_text(f"x = {value!r}\n" if "\n" not in value else value)
    _commit(repo, "a change")
    findings = SecretGate(secrets).scan_patch(_patch(repo, base))
    assert findings
    assert findings[0].where == "leak.txt:1"
    assert any(f.what == name for f in findings) or name.startswith("the GitHub App")
    assert not any(value in str(f) for f in findings)
    # The run's redactor (built as the pipeline builds it) removes it from outgoing text.
    redact = Redactor([KNOWN["the GitHub token"], *secrets.values()])
    assert value not in redact(f"said {value} here")


def test_a_pem_block_spread_over_hunks_and_files_is_caught(tmp_path: Path) -> None:
    repo, base = _repo(tmp_path)
    # An existing file: the key goes in around unchanged lines, so the diff shows it in
    # three hunks with context between.
    lines = [f"unchanged line {i}" for i in range(40)]
    (repo / "notes.txt").write_text("\n".join(lines) + "\n")
    _commit(repo, "notes")
    base = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    pieces = _FAKE_KEY.strip().splitlines()
    lines.insert(30, pieces[-1])  # the END line
    lines.insert(15, pieces[2])
    lines.insert(1, "\n".join(pieces[:2]))  # BEGIN and the first body line
    (repo / "notes.txt").write_text("\n".join(lines) + "\n")
    # The same key split over two files: the head in one, the tail (no BEGIN) in another,
    # and a line of the App's key alone in a third.
    (repo / "part1.txt").write_text("\n".join(pieces[:2]) + "\n")
    (repo / "part2.txt").write_text("\n".join(pieces[2:]) + "\n")
    (repo / "middle.txt").write_text(_BODY[1] + "\n")
    _commit(repo, "more")
    patch = _patch(repo, base)
    assert patch.count("\n@@ ") >= 3 + 3  # notes.txt really is in three hunks
    gate = SecretGate({"the GitHub App's private key (line 3)": _BODY[1]})
    findings = [str(f) for f in gate.scan_patch(patch)]
    assert "notes.txt:2: a private key" in findings
    assert "part1.txt:1: a private key" in findings
    assert "part2.txt:3: a private key" in findings  # the END line, no BEGIN in that file
    assert "middle.txt:1: the GitHub App's private key (line 3)" in findings
    # Redaction of a tail alone removes its END line (its body is not a recognisable shape
    # unless it is a known key's: then it goes too).
    tail = "\n".join(pieces[2:])
    assert "PRIVATE KEY" not in Redactor()(tail)
    assert _BODY[1] not in Redactor([_BODY[1]])(tail)


# -- files under the run directory --------------------------------------------------------


def test_run_files_never_follow_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    (root / "r-1" / "logs").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "r-1" / "artifacts").symlink_to(outside)
    files = RunFiles(root)
    with pytest.raises(RedirectedError, match="r-1/artifacts is a symlink"):
        files.write(root / "r-1" / "artifacts" / "summary.json", "{}")
    (outside / "target.txt").write_text("precious\n")
    (root / "r-1" / "logs" / "run.log").symlink_to(outside / "target.txt")
    with pytest.raises(RedirectedError):
        files.write(root / "r-1" / "logs" / "run.log", "overwritten")
    assert list(outside.iterdir()) == [outside / "target.txt"]
    assert (outside / "target.txt").read_text() == "precious\n"
    assert run_dir_problems(root / "r-1") == ["artifacts/ was replaced by a symlink"]
    files.write(root / "r-1" / "logs" / "ok.txt", "fine")
    assert (root / "r-1" / "logs" / "ok.txt").read_text() == "fine"
    assert oct((root / "r-1" / "logs" / "ok.txt").stat().st_mode & 0o777) == "0o600"


def test_redact_tree_rewrites_files_and_leaves_symlinks_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".claude" / "projects" / "x").mkdir(parents=True)
    transcript = home / ".claude" / "projects" / "x" / "s.jsonl"
    transcript.write_text('{"text": "key sk-ant-api03-abcdefghijklmnopqrstu"}\n')
    victim = tmp_path / "victim.txt"
    victim.write_text("sk-ant-api03-abcdefghijklmnopqrstu stays: not the agent's file\n")
    (home / "link.txt").symlink_to(victim)
    assert redact_tree(home, Redactor().bytes) == 1
    assert "sk-ant" not in transcript.read_text()
    assert "sk-ant" in victim.read_text()
    assert os.path.islink(home / "link.txt")


@pytest.mark.parametrize("secret", ["sk-ant-api03-abcdefghijklmnopqrstu", "tiny-sec"])
def test_rewrite_in_pieces_redacts_everywhere_and_keeps_the_rest(
    tmp_path: Path, secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cgr_cli.run._safe_fs as safe_fs

    # Many pieces; every line (< 150 bytes) fits in one (a read plus the rest of its line).
    monkeypatch.setattr(safe_fs, "PIECE_BYTES", 100)
    lines = [f"line {n} {'x' * (n % 90)} {secret if n % 7 == 0 else ''}\n" for n in range(400)]
    root = tmp_path / "ws"
    (root / "r" / "logs").mkdir(parents=True)
    path = root / "r" / "logs" / "agent.jsonl"
    path.write_text("".join(lines))
    redact = Redactor([secret])
    assert RunFiles(root).rewrite(path, redact.bytes)
    assert path.read_text() == "".join(lines).replace(secret, "[REDACTED]")
