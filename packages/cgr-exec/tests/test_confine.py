"""Confinement: every rule shown *denying* with a real child, next to a control that is allowed.

Children are real ``python -c`` (or ``sh``) processes started through ``supervise`` or
``SubprocessExecutor``; each prints, as JSON, what its attempts returned ("ok" or the
errno name), so a test can tell "denied by Landlock" (EACCES/EPERM) from "not there".
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from cgr_exec import (
    Confinement,
    ConfinementError,
    SubprocessExecutor,
    SupervisionResult,
    cgroup_root,
    landlock_supported,
    prepare_confinement,
    probe_confinement,
    supervise,
)
from conftest import gone, wait_until

PY = sys.executable
ABI = landlock_supported()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="the kernel has no Landlock")
needs_abi4 = pytest.mark.skipif(ABI < 4, reason="TCP rules need Landlock ABI 4")
needs_abi6 = pytest.mark.skipif(ABI < 6, reason="scopes need Landlock ABI 6")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing user needs root")

# What a Python child needs to start: its installation (a venv and the interpreter it was
# made from), the system libraries, and /proc (so the environ tests show the *ptrace*
# rule denying, not a missing path rule). /tmp - where the tests' files are - is absent.
PYTHON_READ_ONLY = tuple(
    sorted(
        {sys.base_prefix, sys.base_exec_prefix, *(p for p in sys.path if p and os.path.exists(p))}
        | {f"{sys.prefix}/bin", f"{sys.prefix}/pyvenv.cfg"}
        | {"/usr", "/lib", "/lib64", "/etc", "/proc"}
    )
)
# Not sys.prefix as a whole: nox puts the tests' temporary directory inside the venv.
assert not any(
    os.path.realpath(tempfile.gettempdir()).startswith(p + "/") for p in PYTHON_READ_ONLY
)

HEADER = """
import errno, json, os, socket, sys
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def write(path):
    with open(path, "w") as f:
        f.write("written")
def read(path):
    with open(path) as f:
        f.read()
def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
"""


def probe(
    tmp_path: Path, confinement: Confinement | None, attempts: dict[str, str]
) -> dict[str, str]:
    """Run a Python child that makes each attempt and reports how it ended."""
    body = "results = {}\n" + "".join(
        f"results[{name!r}] = attempt(lambda: {expr})\n" for name, expr in attempts.items()
    )
    code = HEADER + body + "print(json.dumps(results))"
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)

    async def main() -> SupervisionResult:
        return await supervise(
            [PY, "-c", code],
            stdout_path=tmp_path / "probe.out",
            stderr_path=tmp_path / "probe.err",
            cwd=work,
            confinement=confinement,
            timeout=60,
        )

    result = anyio.run(main)
    assert result.exit_code == 0, (tmp_path / "probe.err").read_text()
    output: dict[str, str] = json.loads((tmp_path / "probe.out").read_text())
    return output


def confined(tmp_path: Path, **kwargs: object) -> Confinement:
    return Confinement(
        read_only=PYTHON_READ_ONLY,
        read_write=[str(tmp_path / "work")],
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def listeners() -> Iterator[tuple[int, int]]:
    """Two TCP listeners on 127.0.0.1 (ports chosen by the kernel)."""
    socks = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        socks.append(sock)
    yield socks[0].getsockname()[1], socks[1].getsockname()[1]
    for sock in socks:
        sock.close()


@pytest.fixture
def sibling() -> Iterator[subprocess.Popen[bytes]]:
    """An unconfined process outside the child's domain, with a secret in its environment."""
    proc = subprocess.Popen(["sleep", "60"], env={**os.environ, "SIBLING_SECRET": "s3cr3t-value"})
    yield proc
    proc.kill()
    proc.wait()


# -- the spec and the probe -----------------------------------------------------------------


def test_probe_reports_the_kernel_abi() -> None:
    support = probe_confinement()
    assert support.landlock_abi == ABI
    assert support.can_change_user == (os.geteuid() == 0)
    assert support.network == (ABI >= 4)
    assert support.scopes == (ABI >= 6)
    root = cgroup_root()
    assert support.cgroup_v2 == (None if root is None else str(root))
    assert support.job_cgroups == (os.geteuid() == 0 and root is not None)
    lines = support.lines()
    assert len(lines) == 3
    assert (f"ABI {ABI}" in lines[0]) if ABI else ("not available" in lines[0])
    assert lines[2].startswith("job cgroups: yes" if support.job_cgroups else "job cgroups: no")


def test_spec_is_frozen_and_normalised() -> None:
    spec = Confinement(read_only=["/usr"], tcp_connect_ports=[443])
    assert spec.read_only == ("/usr",)
    assert spec.tcp_connect_ports == (443,)
    with pytest.raises(AttributeError):
        spec.read_only = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="not an absolute path"):
        Confinement(read_write=["relative/dir"])
    with pytest.raises(ValueError, match="not a TCP port"):
        Confinement(tcp_connect_ports=[70000])
    with pytest.raises(TypeError, match="list of paths"):
        Confinement(read_only="/usr")  # type: ignore[arg-type]


@needs_landlock
def test_requirements_the_kernel_cannot_meet_refuse_before_starting(tmp_path: Path) -> None:
    ports = Confinement(read_only=["/usr"], tcp_connect_ports=[443])
    with pytest.raises(ConfinementError, match="ABI 3 cannot restrict TCP ports"):
        prepare_confinement(ports, abi=3)
    with pytest.raises(ConfinementError, match="Landlock is not available"):
        prepare_confinement(ports, abi=0)
    degraded = prepare_confinement(Confinement(tcp_connect_ports=[443], require=False), abi=3)
    try:
        assert "TCP" not in degraded.describe()
        assert "landlock ABI 3" in degraded.describe()
    finally:
        degraded.close()
    with pytest.raises(ConfinementError, match="does not exist") as err:
        prepare_confinement(Confinement(read_write=[str(tmp_path / "nope")]))
    assert err.value.path == str(tmp_path / "nope")


@needs_landlock
def test_describe_says_what_is_in_force(tmp_path: Path) -> None:
    prepared = prepare_confinement(
        Confinement(read_only=["/usr", str(tmp_path / "missing")], tcp_connect_ports=[443, 80])
    )
    try:
        text = prepared.describe()
    finally:
        prepared.close()
    assert f"landlock ABI {ABI}: read-only 1 paths, read-write 0 paths" in text
    assert prepared.skipped_paths == (str(tmp_path / "missing"),)
    if ABI >= 4:
        assert "TCP connect only to 443, 80" in text
    if ABI >= 6:
        assert "signals and abstract unix sockets scoped" in text


# -- filesystem -----------------------------------------------------------------------------


@needs_landlock
def test_write_outside_read_write_is_denied_inside_is_allowed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    attempts = {
        "inside": f"write({str(work / 'made.txt')!r})",
        "inside_mkdir": f"os.mkdir({str(work / 'sub')!r})",
        "outside": f"write({str(outside / 'x.txt')!r})",
        "outside_mkdir": f"os.mkdir({str(outside / 'sub')!r})",
        "read_only_tree": f"write({sys.prefix + '/bin/cgr-probe.txt'!r})",
    }
    assert probe(tmp_path, confined(tmp_path), attempts) == {
        "inside": "ok",
        "inside_mkdir": "ok",
        "outside": "EACCES",
        "outside_mkdir": "EACCES",
        "read_only_tree": "EACCES",
    }
    assert (work / "made.txt").read_text() == "written"
    assert not (outside / "x.txt").exists()
    assert not (outside / "sub").exists()


@needs_landlock
def test_read_of_an_unlisted_path_is_denied(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('token = "ghp_secret"\n')
    attempts = {"config": f"read({str(config)!r})", "listing": f"os.listdir({str(tmp_path)!r})"}
    assert probe(tmp_path, None, attempts) == {"config": "ok", "listing": "ok"}  # control
    assert probe(tmp_path, confined(tmp_path), attempts) == {
        "config": "EACCES",
        "listing": "EACCES",
    }


@needs_landlock
def test_execute_outside_the_rules_is_denied(tmp_path: Path) -> None:
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\necho ran\n")
    tool.chmod(0o755)
    attempts = {
        "exec": f"__import__('subprocess').run([{str(tool)!r}], check=True, capture_output=True)"
    }
    assert probe(tmp_path, None, attempts) == {"exec": "ok"}
    assert probe(tmp_path, confined(tmp_path), attempts) == {"exec": "EACCES"}


@needs_landlock
def test_devices_are_paths_too(tmp_path: Path) -> None:
    attempts = {"devnull": "write('/dev/null')"}
    assert probe(tmp_path, confined(tmp_path), attempts) == {"devnull": "EACCES"}
    spec = Confinement(read_only=PYTHON_READ_ONLY, read_write=[str(tmp_path / "work"), "/dev/null"])
    assert probe(tmp_path, spec, attempts) == {"devnull": "ok"}


@needs_landlock
def test_a_program_outside_the_rules_is_named(tmp_path: Path) -> None:
    spec = Confinement(read_only=["/lib", "/etc"], read_write=[str(tmp_path)])

    async def main() -> None:
        await supervise(
            ["/usr/bin/true"],
            stdout_path=tmp_path / "out",
            stderr_path=tmp_path / "err",
            confinement=spec,
        )

    with pytest.raises(ConfinementError, match="cannot execute '/usr/bin/true' under") as err:
        anyio.run(main)
    assert (err.value.step, err.value.errno) == ("execve", errno.EACCES)


SYSTEM = ["/usr", "/lib", "/lib64", "/etc", "/proc", "/dev/urandom"]


@needs_landlock
def test_git_works_with_the_documented_minimum(tmp_path: Path) -> None:
    # What the README lists for a typical command: the system read-only (with /proc and
    # /dev/urandom), the work directory and /dev/null read-write. git needs /dev/urandom
    # for its temporary object files.
    work = tmp_path / "work"
    work.mkdir()
    script = (
        "git init -q repo && cd repo && echo hi > f && git add f && "
        "git -c user.name=a -c user.email=a@example.com commit -q -m x && git log --oneline | wc -l"
    )

    def git(read_only: list[str]) -> tuple[int, str]:
        async def main() -> SupervisionResult:
            return await supervise(
                ["/bin/sh", "-c", script],
                stdout_path=tmp_path / "out",
                stderr_path=tmp_path / "err",
                cwd=work,
                env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
                confinement=Confinement(read_only=read_only, read_write=[str(work), "/dev/null"]),
            )

        result = anyio.run(main)
        return result.exit_code or 0, (tmp_path / "out").read_text() + (
            tmp_path / "err"
        ).read_text()

    assert git(SYSTEM) == (0, "1\n")
    shutil.rmtree(work / "repo")
    code, out = git([p for p in SYSTEM if p != "/dev/urandom"])
    assert code != 0
    assert "unable to get random bytes" in out


@needs_landlock
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_needs_proc_to_see_the_machine(tmp_path: Path) -> None:
    code = "console.log(require('os').cpus().length > 0)"
    node = os.path.realpath(str(shutil.which("node")))
    system = [*SYSTEM, os.path.dirname(os.path.dirname(node))]

    def run(read_only: list[str]) -> str:
        async def main() -> None:
            await supervise(
                [node, "-e", code],
                stdout_path=tmp_path / "out",
                stderr_path=tmp_path / "err",
                confinement=Confinement(read_only=read_only, read_write=["/dev/null"]),
            )

        anyio.run(main)
        return (tmp_path / "out").read_text().strip()

    assert run(system) == "true"
    assert run([p for p in system if p != "/proc"]) == "false"  # Node sees no CPU at all


# -- network --------------------------------------------------------------------------------


@needs_abi4
def test_tcp_connect_only_to_allowed_ports(tmp_path: Path, listeners: tuple[int, int]) -> None:
    allowed, other = listeners
    attempts = {"allowed": f"connect({allowed})", "other": f"connect({other})"}
    assert probe(tmp_path, None, attempts) == {"allowed": "ok", "other": "ok"}  # control
    spec = confined(tmp_path, tcp_connect_ports=[allowed])
    assert probe(tmp_path, spec, attempts) == {"allowed": "ok", "other": "EACCES"}
    # None leaves the network alone:
    assert probe(tmp_path, confined(tmp_path), attempts) == {"allowed": "ok", "other": "ok"}


@needs_abi4
def test_tcp_bind_restricted_when_asked(tmp_path: Path) -> None:
    attempts = {"bind": "socket.socket().bind(('127.0.0.1', 0))"}
    assert probe(tmp_path, confined(tmp_path), attempts) == {"bind": "ok"}
    assert probe(tmp_path, confined(tmp_path, tcp_bind_ports=[]), attempts) == {"bind": "EACCES"}


# -- processes outside the domain -----------------------------------------------------------


@needs_landlock
def test_confined_child_cannot_read_environ_of_processes_outside_its_domain(
    tmp_path: Path, sibling: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The secret is in *our* environment (the unconfined parent) and in a sibling's.
    monkeypatch.setenv("PARENT_SECRET", "parent-s3cr3t")
    parent, other = os.getpid(), sibling.pid
    attempts = {
        "self": "read('/proc/self/environ')",
        "parent": f"read('/proc/{parent}/environ')",
        "sibling": f"read('/proc/{other}/environ')",
        "parent_cmdline": f"read('/proc/{parent}/cmdline')",
    }
    # Control: unconfined, the same child reads both (as root, or as the same user).
    assert probe(tmp_path, None, attempts) == dict.fromkeys(attempts, "ok")
    # As root both the dropped capabilities (the kernel's capability check: no reading a
    # process that holds capabilities we lack) and Landlock deny it; the next test shows
    # Landlock alone doing it.
    # Confined with /proc readable: its own environ still, the others not. cmdline needs
    # no ptrace access, so it shows /proc itself is readable: the ptrace rule denies.
    assert probe(tmp_path, confined(tmp_path), attempts) == {
        "self": "ok",
        "parent": "EACCES",
        "sibling": "EACCES",
        "parent_cmdline": "ok",
    }


@needs_root
@needs_landlock
def test_root_keeping_capabilities_gets_past_landlock_for_environ(tmp_path: Path) -> None:
    # The limit the README states (Linux 6.18, ABI 7): why drop_capabilities defaults to
    # True. If a kernel closes this, this test fails and the README limit can go.
    parent = os.getpid()
    attempts = {
        "environ": f"read('/proc/{parent}/environ')",
        "cwd": f"os.readlink('/proc/{parent}/cwd')",
    }
    spec = confined(tmp_path, drop_capabilities=False)
    assert probe(tmp_path, spec, attempts) == {"environ": "ok", "cwd": "EACCES"}


@needs_root
@needs_landlock
def test_landlock_alone_denies_environ_between_processes_of_one_user(tmp_path: Path) -> None:
    # Child and target both run as nobody: no capabilities anywhere, same uid, so only
    # Landlock can make the difference between the two runs.
    target = subprocess.Popen(
        ["sleep", "60"], env={"NOBODY_SECRET": "n0body-s3cr3t"}, user=65534, group=65534,
        extra_groups=[],
    )  # fmt: skip
    try:
        wait_until(lambda: b"sleep" in Path(f"/proc/{target.pid}/cmdline").read_bytes())
        script = f"tr '\\0' '\\n' < /proc/{target.pid}/environ || echo denied"
        code, out = run_sh(tmp_path, script, Confinement(landlock=False, user=65534))
        assert (code, out.split()) == (0, ["NOBODY_SECRET=n0body-s3cr3t"])  # control
        system = ["/usr", "/lib", "/lib64", "/etc", "/proc"]
        code, out = run_sh(tmp_path, script, Confinement(read_only=system, user=65534))
        assert code == 0, out
        assert "NOBODY_SECRET" not in out
        assert "Permission denied" in out
    finally:
        target.kill()
        target.wait()


@needs_abi6
def test_confined_child_cannot_signal_outside_its_domain(
    tmp_path: Path, sibling: subprocess.Popen[bytes]
) -> None:
    attempts = {"kill_sibling": f"os.kill({sibling.pid}, {int(signal.SIGTERM)})"}
    assert probe(tmp_path, confined(tmp_path), attempts) == {"kill_sibling": "EPERM"}
    assert sibling.poll() is None
    # Control: with scopes off (and unconfined) the same signal lands.
    assert probe(tmp_path, confined(tmp_path, scopes=False), attempts) == {"kill_sibling": "ok"}
    wait_until(lambda: sibling.poll() is not None)


@needs_abi6
def test_child_can_still_signal_its_own_children(tmp_path: Path) -> None:
    spawn = "__import__('subprocess').Popen(['sleep', '30'])"
    attempts = {"own_child": f"(lambda p: (p.terminate(), p.wait()))({spawn})"}
    assert probe(tmp_path, confined(tmp_path), attempts) == {"own_child": "ok"}


# -- user mode ------------------------------------------------------------------------------


def run_sh(tmp_path: Path, script: str, confinement: Confinement) -> tuple[int, str]:
    async def main() -> SupervisionResult:
        return await supervise(
            ["/bin/sh", "-c", script],
            stdout_path=tmp_path / "sh.out",
            stderr_path=tmp_path / "sh.err",
            cwd="/",
            confinement=confinement,
            timeout=30,
        )

    result = anyio.run(main)
    return result.returncode, (tmp_path / "sh.out").read_text() + (tmp_path / "sh.err").read_text()


@needs_root
def test_root_child_keeps_no_capabilities(tmp_path: Path) -> None:
    spec = Confinement(landlock=False)
    status = {"status": "print(open('/proc/self/status').read(), file=sys.stderr)"}
    assert probe(tmp_path, spec, status) == {"status": "ok"}
    fields = dict(
        line.split(":\t")
        for line in (tmp_path / "probe.err").read_text().splitlines()
        if ":\t" in line
    )
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[name], 16) == 0, name
    assert fields["NoNewPrivs"].strip() == "0"  # no Landlock asked: only the capabilities


@needs_root
def test_user_mode_drops_to_an_unprivileged_uid_without_extra_groups(tmp_path: Path) -> None:
    code, out = run_sh(tmp_path, "id -u; id -g; id -G", Confinement(landlock=False, user=65534))
    assert code == 0, out
    assert out.split() == ["65534", "65534", "65534"]  # no group 0 left from root
    spec = Confinement(landlock=False, user="nobody", group="nogroup")
    assert prepare_confinement(spec).describe() == "user uid 65534 gid 65534, no extra groups"


@needs_root
@needs_landlock
def test_user_and_landlock_combine(tmp_path: Path) -> None:
    # A world-readable file in a world-traversable directory (pytest's tmp_path is 0700),
    # so as nobody only Landlock can be what denies it.
    shared = Path(tempfile.mkdtemp(prefix="cgr-exec-test-"))
    try:
        shared.chmod(0o755)
        secret = shared / "secret"
        secret.write_text("readable")
        secret.chmod(0o644)
        script = f"id -u; cat {secret} || echo denied"
        code, out = run_sh(tmp_path, script, Confinement(landlock=False, user=65534))
        assert (code, out.split()) == (0, ["65534", "readable"])  # control
        spec = Confinement(read_only=["/usr", "/lib", "/lib64", "/etc"], user=65534)
        code, out = run_sh(tmp_path, script, spec)
        assert code == 0, out
        assert out.split()[0] == "65534"
        assert "Permission denied" in out
        assert "denied" in out.split()
    finally:
        shutil.rmtree(shared)


def test_unknown_user_is_named() -> None:
    with pytest.raises(ConfinementError, match="no user named 'no-such-user-cgr'"):
        prepare_confinement(Confinement(landlock=False, user="no-such-user-cgr"))


# -- failure in the child: the command never runs -------------------------------------------

NESTED = """
import anyio, sys
from cgr_exec import Confinement, ConfinementError, supervise
from cgr_exec import _landlock

# Landlock allows 16 nested domains; fill them, so the child's restrict_self fails (E2BIG).
# Each handles only "make a block device", so this process can still do everything else.
import ctypes, os
for _ in range(16):
    attr = _landlock._RulesetAttr(handled_access_fs=_landlock.FS_MAKE_BLOCK)
    fd = _landlock._syscall(444, ctypes.byref(attr), ctypes.c_size_t(8), ctypes.c_uint32(0))
    assert _landlock.ChildRestrictor(fd)() is None
    os.close(fd)

async def main():
    await supervise(["/bin/sh", "-c", "echo ran > " + sys.argv[2]],
                    stdout_path=sys.argv[1] + "/out", stderr_path=sys.argv[1] + "/err",
                    confinement=Confinement(read_only=["/"], read_write=[sys.argv[1]]))
try:
    anyio.run(main)
except ConfinementError as exc:
    print("refused:", exc.step, exc.errno, exc)
"""


@needs_landlock
def test_failure_in_the_child_refuses_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    done = subprocess.run(
        [PY, "-c", NESTED, str(tmp_path), str(marker)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"refused: landlock_restrict_self {errno.E2BIG} ")
    assert "the command was not run" in done.stdout
    assert not marker.exists()


# -- the daemon strategy --------------------------------------------------------------------


@needs_landlock
@pytest.mark.anyio
async def test_subprocess_executor_applies_confinement(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    outside = tmp_path / "outside.txt"
    code = textwrap.dedent(
        f"""
        try:
            open({str(outside)!r}, "w")
        except PermissionError:
            print("denied")
        """
    )
    async with SubprocessExecutor(limit=1) as executor:
        handle = await executor.start(
            [PY, "-c", code], log_path=tmp_path / "log", confinement=confined(tmp_path)
        )
        ended = await handle.wait()
    assert ended.status.code == 0
    assert (tmp_path / "log").read_text().strip() == "denied"
    assert not outside.exists()
    assert gone(handle.pid)
