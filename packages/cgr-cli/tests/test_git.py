"""cgr's git layer against real git: local bare repositories and a server that hangs."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cgr_cli import GitError
from cgr_cli.run._git import Git, Identity, git_env

ID = Identity("Test", "test@example.invalid")


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository with one commit on main."""
    bare = tmp_path / "remote.git"
    _git("init", "-q", "--bare", "-b", "main", str(bare))
    _push_a_commit(bare, tmp_path / "seed", "a.txt")
    return bare


def _push_a_commit(remote: Path, clone: Path, name: str) -> str:
    """Clone ``remote`` into ``clone``, commit the file ``name`` and push it to main; the
    commit's sha."""
    _git("clone", "-q", str(remote), str(clone))
    (clone / name).write_text(f"{name}\n")
    _git("add", name, cwd=clone)
    _git("commit", "-qm", f"add {name}", cwd=clone)
    _git("push", "-q", "origin", "HEAD:main", cwd=clone)
    return _git("rev-parse", "HEAD", cwd=clone)


def _mirror_and_clone(tmp_path: Path, remote: Path) -> tuple[Git, str, Path, Path]:
    """A mirror of ``remote`` and a work copy cloned from it, as a run makes them: the
    git layer, the remote's URL, the mirror, the work copy."""
    git = Git(token=None, timeout=30, network_timeout=30)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    git.ensure_mirror(url, mirror)
    work = tmp_path / "work"
    git.clone(url, work, mirror=mirror, identity=ID)
    return git, url, mirror, work


def test_token_only_in_the_environment_of_network_commands() -> None:
    with_token = git_env("tkn-123456", {"PATH": "/bin", "GIT_DIR": "/x", "GIT_CONFIG_COUNT": "5"})
    assert with_token["GIT_CONFIG_COUNT"] == "1"
    assert with_token["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert with_token["GIT_CONFIG_VALUE_0"] == "Authorization: Bearer tkn-123456"
    assert with_token["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert with_token["GIT_TERMINAL_PROMPT"] == "0"
    assert "GIT_DIR" not in with_token
    plain = git_env(None, {"PATH": "/bin", "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_VALUE_0": "x"})
    assert not [k for k in plain if k.startswith("GIT_CONFIG_")]


def test_mirror_clone_publish_and_lease(tmp_path: Path, remote: Path) -> None:
    git = Git(token=None, timeout=30, network_timeout=30)
    url = f"file://{remote}"
    mirror = tmp_path / "mirrors" / "r.git"
    git.ensure_mirror(url, mirror)
    git.ensure_mirror(url, mirror)  # the second time: a fetch
    work = tmp_path / "work"
    git.clone(url, work, mirror=mirror, identity=ID)
    assert _git("remote", "get-url", "origin", cwd=work) == url
    assert git.default_branch(work) == "main"
    git.checkout_new(work, "cgr/1-x", "origin/main")
    (work / "b.txt").write_text("b\n")
    assert git.commit_all(work, "add b") is True
    assert git.commit_all(work, "nothing") is False
    head = git.head(work)
    pushed = git.publish(work, url, "cgr/1-x", commit=head, workdir=tmp_path / "pub.git",
                         mirror=mirror)  # fmt: skip
    assert pushed == head
    assert not (tmp_path / "pub.git").exists()
    # Someone else moves the branch: a leased push with the old sha is refused, never forced.
    other = tmp_path / "other"
    _git("clone", "-q", "-b", "cgr/1-x", str(remote), str(other))
    (other / "c.txt").write_text("c\n")
    _git("add", "c.txt", cwd=other)
    _git("commit", "-qm", "theirs", cwd=other)
    _git("push", "-q", "origin", "HEAD:cgr/1-x", cwd=other)
    (work / "d.txt").write_text("d\n")
    git.commit_all(work, "mine")
    mine = git.head(work)
    with pytest.raises(GitError) as caught:
        git.publish(work, url, "cgr/1-x", commit=mine, workdir=tmp_path / "pub.git",
                    mirror=mirror, lease=head)  # fmt: skip
    assert caught.value.command == "push"
    # And without a lease, a non-fast-forward push is refused too.
    with pytest.raises(GitError):
        git.publish(work, url, "cgr/1-x", commit=mine, workdir=tmp_path / "pub.git",
                    mirror=mirror)  # fmt: skip
    assert _git("log", "-1", "--format=%s", "cgr/1-x", cwd=remote) == "theirs"


def test_rebase_conflict_names_the_files_and_leaves_a_clean_tree(
    tmp_path: Path, remote: Path
) -> None:
    from cgr_cli import RebaseConflictError

    seed = tmp_path / "seed2"
    _git("clone", "-q", str(remote), str(seed))
    _git("checkout", "-qb", "feature", cwd=seed)
    (seed / "a.txt").write_text("feature\n")
    _git("commit", "-qam", "feature", cwd=seed)
    _git("push", "-q", "origin", "feature", cwd=seed)
    _git("checkout", "-q", "main", cwd=seed)
    (seed / "a.txt").write_text("main\n")
    _git("commit", "-qam", "main moves", cwd=seed)
    _git("push", "-q", "origin", "main", cwd=seed)
    git = Git(token=None)
    work = tmp_path / "w"
    git.clone(f"file://{remote}", work, mirror=None, identity=ID)
    git.checkout_new(work, "feature", "origin/feature")
    with pytest.raises(RebaseConflictError) as caught:
        git.rebase(work, "origin/main")
    assert caught.value.files == ["a.txt"]
    assert "a.txt" in str(caught.value)
    assert _git("status", "--porcelain", cwd=work) == ""
    assert not (work / ".git" / "rebase-merge").exists()


@pytest.fixture
def hanging_server() -> Iterator[int]:
    """Accepts connections and never answers (a stuck GitHub)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_network_commands_time_out(tmp_path: Path, hanging_server: int) -> None:
    from cgr_cli.run._git_retry import GitRetryPolicy

    # A timeout is transient: tried twice here (5 times by default), then given up.
    git = Git(token="secret-token-value", timeout=30, network_timeout=1.0,
              retry=GitRetryPolicy(attempts=2, base=0.01))  # fmt: skip
    started = time.monotonic()
    with pytest.raises(GitError) as caught:
        git.ensure_mirror(f"http://127.0.0.1:{hanging_server}/o/r.git", tmp_path / "m.git")
    assert time.monotonic() - started < 10
    assert caught.value.returncode is None
    assert "timed out" in str(caught.value)
    assert "secret-token-value" not in str(caught.value)
    assert not (tmp_path / "m.git").exists()  # a killed clone never looks like a mirror


def test_runs_started_together_fetch_the_mirror_once(tmp_path: Path, remote: Path) -> None:
    """A fetch that began after a run began gives that run the remote's state as of its
    start: a run that waited for it (the mirror's lock) fetches nothing more; a run that
    began after it, or a stamp of another boot, or a failed fetch, fetch again."""
    lines: list[str] = []
    git = Git(token=None, timeout=30, network_timeout=30, log=lines.append)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    git.ensure_mirror(url, mirror)  # created
    waiting = time.monotonic()  # a second run begins, and waits while the first fetches
    first = time.monotonic()
    git.ensure_mirror(url, mirror, needed_since=first)
    fetches = sum(line.startswith("$ git fetch") for line in lines)
    assert fetches == 1
    git.ensure_mirror(url, mirror, needed_since=waiting)
    assert sum(line.startswith("$ git fetch") for line in lines) == fetches
    assert lines[-1] == "mirror: fetched by another run since this one began; not again"
    # A push, then a run that begins after the last fetch: it fetches and sees the push.
    pushed = _push_a_commit(remote, tmp_path / "another-clone", "c.txt")
    git.ensure_mirror(url, mirror, needed_since=time.monotonic())
    assert _git("rev-parse", "main", cwd=mirror) == pushed
    fetches += 1
    assert sum(line.startswith("$ git fetch") for line in lines) == fetches
    # The monotonic clock restarts at boot: a stamp of another boot proves nothing.
    stamp = tmp_path / "m.git.fetched"
    boot, began = stamp.read_text().split()
    stamp.write_text(f"another-boot-{boot} {began}\n")
    git.ensure_mirror(url, mirror, needed_since=waiting)
    fetches += 1
    assert sum(line.startswith("$ git fetch") for line in lines) == fetches
    # A fetch that fails records nothing: the next run fetches.
    recorded = stamp.read_text()
    with pytest.raises(GitError):
        git.ensure_mirror(f"file://{tmp_path}/missing.git", mirror, needed_since=time.monotonic())
    assert stamp.read_text() == recorded
    stamp.write_text("garbage")
    git.ensure_mirror(url, mirror, needed_since=waiting)
    assert sum(line.startswith("$ git fetch") for line in lines) == fetches + 2


def _loose_objects_in_17(count: int) -> list[bytes]:
    """Contents whose blobs land in ``objects/17/``: the directory git samples to decide
    whether a repository has "too many" loose objects (``gc --auto``)."""
    found, n = [], 0
    while len(found) < count:
        content = f"object {n}\n".encode()
        blob = hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False)
        if blob.hexdigest().startswith("17"):
            found.append(content)
        n += 1
    return found


def test_cgrs_commit_starts_no_automatic_maintenance(tmp_path: Path, remote: Path) -> None:
    """A commit would start `git maintenance run --auto`, and with enough loose objects a
    gc (detached by default: a process outliving the run in its checkout). cgr's commit
    in the agent's checkout turns that off; the same commit by plain git packs them."""
    git = Git(token=None, timeout=30, network_timeout=30)
    work = tmp_path / "work"
    git.clone(f"file://{remote}", work, mirror=None, identity=ID)
    for key, value in (("gc.auto", "1"), ("gc.autoDetach", "false")):
        _git("config", key, value, cwd=work)
    # Three files whose blobs are loose objects in 17/, committed (reachable: gc packs
    # them) without maintenance, so they are still loose when the test begins.
    for n, content in enumerate(_loose_objects_in_17(3)):
        (work / f"loose{n}.txt").write_bytes(content)
    _git("add", ".", cwd=work)
    _git("-c", "maintenance.auto=false", "-c", "gc.auto=0", "commit", "-qm", "loose", cwd=work)
    loose = work / ".git" / "objects" / "17"
    assert len(list(loose.iterdir())) == 3
    (work / "b.txt").write_text("b\n")
    assert git.commit_all(work, "by cgr") is True
    assert len(list(loose.iterdir())) == 3  # nothing was packed
    # The control: git's own commit, with its automatic maintenance, packs them.
    (work / "c.txt").write_text("c\n")
    _git("add", "c.txt", cwd=work)
    _git("commit", "-qm", "by git", cwd=work)
    assert not loose.exists() or not list(loose.iterdir())


def test_mirror_fetch_prunes_and_remote_refs_read_the_clone(tmp_path: Path, remote: Path) -> None:
    """The mirror is fetched by URL and refspec (no `remote set-url` first): new branches
    arrive, deleted ones go; `remote_refs` reads origin's default branch and heads."""
    git = Git(token=None, timeout=30, network_timeout=30)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    _git("branch", "gone", "main", cwd=remote)
    git.ensure_mirror(url, mirror)
    _git("branch", "-D", "gone", cwd=remote)
    _git("branch", "new", "main", cwd=remote)
    git.ensure_mirror(url, mirror)
    assert _git("for-each-ref", "--format=%(refname)", cwd=mirror).split() == [
        "refs/heads/main",
        "refs/heads/new",
    ]
    work = tmp_path / "work"
    git.clone(url, work, mirror=mirror, identity=ID)
    refs = git.remote_refs(work)
    main = _git("rev-parse", "main", cwd=remote)
    assert refs.default == "main"
    assert refs.heads == {"main": main, "new": main}
    # The identity came with the clone (`clone -c`), the origin is the real URL.
    assert _git("config", "--local", "user.email", cwd=work) == ID.email
    assert _git("remote", "get-url", "origin", cwd=work) == url


def test_the_local_clone_from_the_mirror_sends_nothing_to_the_server(tmp_path: Path) -> None:
    """Only the mirror fetch talks to GitHub's git server; the work copy is a local clone of
    the mirror (objects hard-linked), whatever the network's latency."""
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(tmp_path / "sim") as sim:
        sim.create_repo("o/r")
        sim.commit("o/r", "main", {f"f{i}.txt": f"{i}\n" for i in range(20)}, message="files")
        git = Git(token=sim.token, timeout=30, network_timeout=30)
        url = sim.git_url("o", "r")
        mirror = tmp_path / "m.git"
        git.ensure_mirror(url, mirror)
        git.ensure_mirror(url, mirror)
        fetched = [r.path for r in sim.requests if r.path.startswith("/o/r")]
        assert fetched  # the mirror did use the server
        sim.faults.latency(0.5)  # a slow network: nothing below may wait for it
        sim.clear_requests()
        work = tmp_path / "work"
        git.clone(url, work, mirror=mirror, identity=ID)
        git.checkout_new(work, "cgr/1-x", "origin/main")
        assert sim.requests == []
    packs = list((work / ".git" / "objects" / "pack").glob("*.pack"))
    assert packs
    assert all(p.stat().st_nlink >= 2 for p in packs)  # shared with the mirror, not copied
    assert _git("remote", "get-url", "origin", cwd=work) == url


def test_a_clone_from_the_mirror_waits_for_a_fetch_into_it(tmp_path: Path, remote: Path) -> None:
    """A local clone walks the mirror's object directories file by file; a fetch into it
    renames its temporary object files meanwhile and the clone died of it ("failed to copy
    file to '.../tmp_obj_...'", one run in a few hundred when runs of one repository start
    together). Clones hold the mirror's lock shared: one waits while a fetch holds it, two
    clones do not wait for each other."""
    import fcntl

    git = Git(token=None, timeout=30, network_timeout=30)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    git.ensure_mirror(url, mirror)
    lock_path = tmp_path / "m.git.lock"

    def clone_in_thread(dest: Path) -> threading.Thread:
        thread = threading.Thread(
            target=git.clone, args=(url, dest), kwargs={"mirror": mirror, "identity": ID}
        )
        thread.start()
        return thread

    with open(lock_path, "a") as fetch:  # as ensure_mirror holds it while it fetches
        fcntl.flock(fetch, fcntl.LOCK_EX)
        waiting = clone_in_thread(tmp_path / "w1")
        waiting.join(1.0)
        assert waiting.is_alive()  # the clone waits for the fetch
        assert not (tmp_path / "w1").exists()
    waiting.join(30)
    assert not waiting.is_alive()
    assert _git("remote", "get-url", "origin", cwd=tmp_path / "w1") == url
    with open(lock_path, "a") as other_clone:
        fcntl.flock(other_clone, fcntl.LOCK_SH)
        alongside = clone_in_thread(tmp_path / "w2")
        alongside.join(30)
        assert not alongside.is_alive()  # shared: no wait for another clone
    assert (tmp_path / "w2" / "a.txt").is_file()


def test_publish_pushes_the_commit_it_is_given_not_a_moved_head(
    tmp_path: Path, remote: Path
) -> None:
    """The secret gate reads the new commits up to a sha; a process the agent left behind
    could move HEAD after that. The push takes the gated commit by its sha, never HEAD."""
    git, url, mirror, work = _mirror_and_clone(tmp_path, remote)
    git.checkout_new(work, "cgr/2-x", "origin/main")
    (work / "gated.txt").write_text("read by the gate\n")
    git.commit_all(work, "gated")
    gated = git.head(work)
    (work / "late.txt").write_text("committed after the gate\n")
    git.commit_all(work, "late")
    assert git.head(work) != gated
    pushed = git.publish(work, url, "cgr/2-x", commit=gated, workdir=tmp_path / "pub.git",
                         mirror=mirror)  # fmt: skip
    assert pushed == gated
    assert _git("rev-parse", "cgr/2-x", cwd=remote) == gated
    assert _git("log", "-1", "--format=%s", "cgr/2-x", cwd=remote) == "gated"


def test_a_mirror_fetch_is_one_round_trip_when_nothing_changed_two_when_something_did(
    tmp_path: Path,
) -> None:
    """The mirror fetch is on the way to every agent's start. Protocol v2's extra round
    trip (ls-refs) is latency on it: with v0 the ref advertisement alone tells an
    up-to-date mirror it has all."""
    from cgr_discovery.testing import GitHubSimulator

    with GitHubSimulator(tmp_path / "sim") as sim:
        sim.create_repo("o/r")
        git = Git(token=sim.token, timeout=30, network_timeout=30)
        url = sim.git_url("o", "r")
        mirror = tmp_path / "m.git"
        git.ensure_mirror(url, mirror)
        sim.clear_requests()
        git.ensure_mirror(url, mirror)
        assert [(r.method, r.path) for r in sim.requests] == [("GET", "/o/r.git/info/refs")]
        pushed = sim.commit("o/r", "main", {"new.txt": "new\n"}, message="new")
        sim.clear_requests()
        git.ensure_mirror(url, mirror)
        assert [(r.method, r.path) for r in sim.requests] == [
            ("GET", "/o/r.git/info/refs"),
            ("POST", "/o/r.git/git-upload-pack"),
        ]
    assert _git("rev-parse", "main", cwd=mirror) == pushed


def test_the_mirror_holds_the_branches_not_pull_request_refs_or_tags(
    tmp_path: Path, remote: Path
) -> None:
    """GitHub serves refs/pull/N/head and refs/pull/N/merge for every pull request (forks'
    commits included) and rewrites the merge refs whenever a base moves: a mirror of every
    ref would fetch all that, and each run's local clone would copy it. Branches only."""
    git = Git(token=None, timeout=30, network_timeout=30)
    url = f"file://{remote}"

    def pull_ref(n: int, name: str) -> str:
        """A commit only refs/pull/<n>/head reaches (as a fork's pull request's)."""
        clone = tmp_path / f"fork{n}"
        _git("clone", "-q", str(remote), str(clone))
        (clone / name).write_text(name)
        _git("add", name, cwd=clone)
        _git("commit", "-qm", name, cwd=clone)
        _git("push", "-q", "origin", f"HEAD:refs/pull/{n}/head", cwd=clone)
        return _git("rev-parse", "HEAD", cwd=clone)

    first = pull_ref(1, "one.txt")
    _git("tag", "v1", "main", cwd=remote)
    mirror = tmp_path / "m.git"
    git.ensure_mirror(url, mirror)
    second = pull_ref(2, "two.txt")
    git.ensure_mirror(url, mirror)  # the fetch, after the clone
    refs = _git("for-each-ref", "--format=%(refname)", cwd=mirror).split()
    assert refs == ["refs/heads/main"]
    for sha in (first, second):
        missing = subprocess.run(["git", "cat-file", "-e", sha], cwd=mirror, check=False)
        assert missing.returncode != 0, sha
    assert _git("rev-parse", "HEAD", cwd=mirror) == _git("rev-parse", "main", cwd=remote)


def _is_gc(trace: Path) -> bool:
    """Whether the git process that wrote ``trace`` (a GIT_TRACE2_EVENT file) is a gc."""
    start = next(e for e in map(json.loads, trace.read_text().splitlines())
                 if e["event"] == "start")  # fmt: skip
    return "gc" in start["argv"][1:4]


def test_the_mirrors_automatic_maintenance_ends_before_its_fetch_returns(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch may start `gc --auto`; detached (git's default) it would repack and delete
    the mirror's object files after the fetch, outside the mirror's lock, while a run's
    local clone copies them. The mirror's gc runs in the foreground: it is over (the
    packs rolled into one) when ensure_mirror returns."""
    git = Git(token=None, timeout=30, network_timeout=30)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    git.ensure_mirror(url, mirror)
    # More than one pack is "too many": the fetch's own pack (fetch.unpackLimit=1) makes two.
    _git("config", "gc.autoPackLimit", "1", cwd=mirror)
    # A push whose three blobs the fetch brings as loose objects in 17/ (reachable: a gc
    # packs them).
    pusher = tmp_path / "pusher"
    _git("clone", "-q", str(remote), str(pusher))
    for n, content in enumerate(_loose_objects_in_17(3)):
        (pusher / f"loose{n}.txt").write_bytes(content)
    _git("add", ".", cwd=pusher)
    _git("commit", "-qm", "loose", cwd=pusher)
    _git("push", "-q", "origin", "HEAD:main", cwd=pusher)
    lines: list[str] = []
    traces = tmp_path / "trace2"
    traces.mkdir()
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(traces))  # one file per git process
    Git(token=None, timeout=30, network_timeout=30, log=lines.append).ensure_mirror(url, mirror)
    returned = datetime.now(UTC)
    assert any(line.startswith("$ git fetch") for line in lines)
    assert not (mirror / "gc.pid").exists()
    assert _object_files(mirror) == (0, 1)  # rolled into one pack already
    time.sleep(1.0)  # a detached gc would still be working, or just done
    ended = [
        datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
        for path in traces.iterdir()
        for event in map(json.loads, path.read_text().splitlines())
        if event["event"] == "exit" and _is_gc(path)
    ]
    assert ended, "no gc ran: the test's premise failed"
    assert max(ended) <= returned
    assert _git("cat-file", "-t", "main:loose0.txt", cwd=mirror) == "blob"


def _object_files(repo: Path) -> tuple[int, int]:
    """(loose objects, packs) of a repository."""
    objects = repo / "objects"
    loose = sum(1 for d in objects.glob("??") for _ in d.iterdir())
    return loose, len(list((objects / "pack").glob("*.pack")))


def test_the_mirror_keeps_what_each_fetch_brings_packed(tmp_path: Path, remote: Path) -> None:
    """A fetch that brings a few objects (another run's pushed branch) adds them as one pack,
    not as loose files that every later local clone copies one by one; past four packs the
    small ones are rolled together, loose objects an older mirror holds with them."""
    git = Git(token=None, timeout=30, network_timeout=30)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    git.ensure_mirror(url, mirror)
    # A mirror as an older cgr left it: loose objects from its fetches.
    _push_a_commit(remote, tmp_path / "old", "old.txt")
    _git("-c", "fetch.unpackLimit=100", "fetch", "-q", url, "+refs/heads/*:refs/heads/*",
         cwd=mirror)  # fmt: skip
    loose_before, _ = _object_files(mirror)
    assert loose_before >= 3
    for i in range(8):
        pushed = _push_a_commit(remote, tmp_path / f"c{i}", f"f{i}.txt")
        git.ensure_mirror(url, mirror)
        assert _git("rev-parse", "main", cwd=mirror) == pushed
        loose, packs = _object_files(mirror)
        assert packs <= 5, (i, packs)
    assert loose == 0
    # Everything is still there: a clone from the mirror has every commit.
    clone = tmp_path / "work"
    git.clone(url, clone, mirror=mirror, identity=Identity("t", "t@t"), hardlinks=False)
    assert _git("rev-list", "--count", "origin/main", cwd=clone) == "10"
    assert _git("fsck", "--no-progress", cwd=mirror) == ""


def _git_refs(git_dir: Path, prefix: str) -> tuple[dict[str, str], dict[str, str]]:
    """What git says of the refs under ``prefix`` (as run/_ref_files.read_refs answers)."""
    out = _git("for-each-ref", "--format=%(objectname) %(refname) %(symref)", prefix,
               cwd=git_dir)  # fmt: skip
    values: dict[str, str] = {}
    symbolic: dict[str, str] = {}
    for line in out.splitlines():
        sha, ref, *symref = line.split(" ")
        name = ref.removeprefix(prefix)
        if symref and symref[0]:
            symbolic[name] = symref[0]
        else:
            values[name] = sha
    return values, symbolic


def test_ref_files_read_what_git_reads(tmp_path: Path, remote: Path) -> None:
    """The mirror's HEAD and a clone's remote branches read from their files answer what
    git answers: packed (a fresh clone), loose over packed (after fetches), a branch
    name with slashes, everything packed again (`pack-refs`), a symbolic chain."""
    from cgr_cli.run._ref_files import read_refs, resolve

    git = Git(token=None, timeout=30, network_timeout=30)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    _git("branch", "cgr/7-a-b", "main", cwd=remote)
    git.ensure_mirror(url, mirror)
    work = tmp_path / "work"
    git.clone(url, work, mirror=mirror, identity=ID)
    origin = "refs/remotes/origin/"
    assert read_refs(work / ".git", origin) == _git_refs(work / ".git", origin)
    assert resolve(mirror) == _git("rev-parse", "HEAD", cwd=mirror)
    # New commits fetched: loose refs now stand over the packed ones.
    pushed = _push_a_commit(remote, tmp_path / "seed2", "b.txt")
    git.ensure_mirror(url, mirror)
    _git("fetch", "-q", "origin", cwd=work)
    assert (work / ".git/packed-refs").is_file()
    assert (work / ".git/refs/remotes/origin/main").is_file()
    assert read_refs(work / ".git", origin) == _git_refs(work / ".git", origin)
    assert read_refs(work / ".git", origin)[0]["main"] == pushed  # type: ignore[index]
    assert resolve(mirror) == pushed == _git("rev-parse", "HEAD", cwd=mirror)
    _git("pack-refs", "--all", cwd=mirror)
    assert not (mirror / "refs/heads/main").exists()
    assert resolve(mirror) == pushed
    # A symbolic ref to a symbolic ref.
    _git("symbolic-ref", "refs/heads/alias", "refs/heads/main", cwd=mirror)
    _git("symbolic-ref", "HEAD", "refs/heads/alias", cwd=mirror)
    assert resolve(mirror) == pushed == _git("rev-parse", "HEAD", cwd=mirror)


def test_ref_files_leave_to_git_what_they_do_not_know(tmp_path: Path, remote: Path) -> None:
    """A reftable repository, an unknown line, an unborn HEAD: no answer from the files
    (None), and cgr asks git as before - its answers unchanged."""
    from cgr_cli.run._ref_files import read_refs, resolve

    git, _url, mirror, work = _mirror_and_clone(tmp_path, remote)
    origin = "refs/remotes/origin/"
    expected = git.remote_refs(work)
    (work / ".git/reftable").mkdir()  # (git itself, with files storage, ignores it)
    assert read_refs(work / ".git", origin) is None
    assert resolve(work / ".git") is None
    assert git.remote_refs(work) == expected
    (work / ".git/reftable").rmdir()
    packed = work / ".git/packed-refs"
    packed.write_text(packed.read_text() + "not-a-sha refs/remotes/origin/odd\n")
    assert read_refs(work / ".git", origin) is None
    (mirror / "HEAD").write_text("ref: refs/heads/unborn\n")
    assert resolve(mirror) is None
    (mirror / "HEAD").write_text("ref: ../../outside\n")
    assert resolve(mirror) is None


def test_origin_is_pointed_at_the_real_url_with_or_without_git(tmp_path: Path) -> None:
    """After a clone from the mirror, origin is the real URL: written into the clone's
    config by cgr (no process) when the file is as git writes it, else by `git remote
    set-url` (a mirror path git would quote); git reads the same either way."""
    from cgr_cli.run._git import _point_origin_at

    url = "https://github.example/acme/widgets.git"
    for name in ("plain", "with space"):
        remote = tmp_path / name / "remote.git"
        _git("init", "-q", "--bare", "-b", "main", str(remote))
        _push_a_commit(remote, tmp_path / name / "seed", "a.txt")
        git = Git(token=None, timeout=30, network_timeout=30)
        mirror = tmp_path / name / "m.git"
        git.ensure_mirror(f"file://{remote}", mirror)
        work = tmp_path / name / "work"
        git.clone(url, work, mirror=mirror, identity=ID)
        assert _git("remote", "get-url", "origin", cwd=work) == url
        assert _git("config", "--get-all", "remote.origin.url", cwd=work) == url
        assert _git("config", "--local", "user.email", cwd=work) == ID.email
    # The shortcut itself: done for the plain path, refused (nothing written) otherwise.
    plain, spaced = tmp_path / "plain", tmp_path / "with space"
    _git("remote", "set-url", "origin", str(plain / "m.git"), cwd=plain / "work")
    assert _point_origin_at(plain / "work", plain / "m.git", url)
    assert _git("remote", "get-url", "origin", cwd=plain / "work") == url
    _git("remote", "set-url", "origin", str(spaced / "m.git"), cwd=spaced / "work")
    before = (spaced / "work/.git/config").read_text()
    assert not _point_origin_at(spaced / "work", spaced / "m.git", url)
    assert (spaced / "work/.git/config").read_text() == before
    assert not _point_origin_at(plain / "work", plain / "m.git", url)  # already pointed
    assert not _point_origin_at(plain / "work", plain / "m.git", url + "\n[core]")


def _mirror_with_issue_branches(tmp_path: Path, remote: Path) -> tuple[Git, list[str], str, Path]:
    """A mirror of ``remote`` with an issue's branch (``cgr/12-old``) and another issue's
    whose number begins the same (``cgr/120-other``): the git layer, its log lines, the
    remote's URL, the mirror."""
    lines: list[str] = []
    git = Git(token=None, timeout=30, network_timeout=30, log=lines.append)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    _git("branch", "cgr/12-old", "main", cwd=remote)
    _git("branch", "cgr/120-other", "main", cwd=remote)
    assert git.ensure_mirror(url, mirror) is None  # created: every branch
    return git, lines, url, mirror


def test_a_mirror_fetch_of_named_branches_alone(tmp_path: Path, remote: Path) -> None:
    """``only``: those branches (a name, a ``prefix*`` pattern) are fetched and pruned,
    no other; such a fetch serves no other run (only a fetch of every branch is
    recorded); a branch the remote no longer has falls back to fetching every branch;
    a name a refspec could read otherwise is never put in one."""
    from cgr_cli.run._git import covers, narrow_refspecs

    git, lines, url, mirror = _mirror_with_issue_branches(tmp_path, remote)
    pushed = _push_a_commit(remote, tmp_path / "seed2", "b.txt")
    _git("branch", "-D", "cgr/12-old", cwd=remote)
    _git("branch", "cgr/12-new", "main", cwd=remote)
    _git("branch", "-D", "cgr/120-other", cwd=remote)
    _git("branch", "elsewhere", "main", cwd=remote)
    before = time.monotonic()
    fresh = git.ensure_mirror(url, mirror, needed_since=before, only=["main", "cgr/12-*"])
    assert fresh == ("main", "cgr/12-*")
    heads = _git("for-each-ref", "--format=%(refname:short)", "refs/heads/", cwd=mirror).split()
    # main moved, cgr/12-* pruned and added; cgr/120-other (gone) and elsewhere untouched.
    assert sorted(heads) == ["cgr/12-new", "cgr/120-other", "main"]
    assert _git("rev-parse", "main", cwd=mirror) == pushed
    assert covers(fresh, "cgr/12-new")
    assert covers(fresh, "main")
    assert not covers(fresh, "cgr/120-other")
    assert not covers(fresh, "elsewhere")
    # It served no one else: a run that began before it still fetches every branch.
    assert git.ensure_mirror(url, mirror, needed_since=before) is None
    assert "elsewhere" in _git("for-each-ref", "--format=%(refname:short)", cwd=mirror).split()
    # A default branch the remote lost (renamed): every branch instead.
    count = sum(line.startswith("$ git fetch") for line in lines)
    assert git.ensure_mirror(url, mirror, only=["trunk", "cgr/12-*"]) is None
    assert sum(line.startswith("$ git fetch") for line in lines) == count + 2
    assert any("fetching trunk, cgr/12-* alone failed" in line for line in lines)
    # ...at once: a missing ref is final, whatever git prints after it.
    from cgr_cli.run._git_retry import is_transient

    missing = "fatal: couldn't find remote ref refs/heads/trunk\nfatal: the remote end hung up"
    assert not is_transient(GitError("fetch", 128, missing))
    assert is_transient(GitError("fetch", 128, "fatal: the remote end hung up unexpectedly"))
    assert not any("retrying" in line or "transient" in line for line in lines)
    # The last fetch of every branch is more than an hour old: every branch again, so
    # that branches deleted on GitHub leave the mirror (here: `elsewhere`).
    _git("branch", "-D", "elsewhere", cwd=remote)
    stamp = tmp_path / "m.git.fetched"
    boot, _ = stamp.read_text().split()
    stamp.write_text(f"{boot} {time.monotonic_ns() - int(3601 * 1e9)}\n")
    assert git.ensure_mirror(url, mirror, only=["main", "cgr/12-*"]) is None
    assert "elsewhere" not in _git("for-each-ref", "--format=%(refname:short)", cwd=mirror)
    assert git.ensure_mirror(url, mirror, only=["main", "cgr/12-*"]) == ("main", "cgr/12-*")
    # Names a refspec or refname could read otherwise: every branch.
    assert narrow_refspecs(["main", "cgr/12-*"]) == [
        "+refs/heads/main:refs/heads/main", "+refs/heads/cgr/12-*:refs/heads/cgr/12-*"
    ]  # fmt: skip
    for odd in ("a..b", "x:y", "+x", "-x", "a b", "x.lock", "a//b", "^x", "a*b", "", "x/"):
        assert narrow_refspecs(["main", odd]) is None, odd
    assert narrow_refspecs([]) is None


def test_a_mirror_whose_named_branches_are_as_on_the_remote_is_not_fetched(
    tmp_path: Path, remote: Path
) -> None:
    """``remote_heads`` (what GitHub's API says the named branches point at): when the
    mirror's branches under those names are exactly those - the same commits, none more
    (a branch deleted on the remote), none fewer (one created) - no git process runs;
    otherwise they are fetched as without it."""
    from cgr_cli.run._git import mirror_holds

    git, lines, url, mirror = _mirror_with_issue_branches(tmp_path, remote)
    _git("pack-refs", "--all", cwd=mirror)  # read from packed-refs as from loose refs
    main = _git("rev-parse", "main", cwd=remote)
    only = ["main", "cgr/12-*"]
    same = {"main": main, "cgr/12-old": main, "elsewhere": "0" * 40}  # others: ignored
    assert mirror_holds(mirror, only, same)
    fetches = sum(line.startswith("$ git") for line in lines)
    assert git.ensure_mirror(url, mirror, only=only, remote_heads=same) == tuple(only)
    assert sum(line.startswith("$ git") for line in lines) == fetches  # no git at all
    assert lines[-1] == "mirror: main, cgr/12-* as on the remote; nothing to fetch"
    # Each difference is a fetch: a moved branch, a deleted one, a new one.
    pushed = _push_a_commit(remote, tmp_path / "seed2", "b.txt")
    for remote_heads in (
        {"main": pushed, "cgr/12-old": main},
        {"main": main},
        {"main": main, "cgr/12-old": main, "cgr/12-new": main},
    ):
        assert not mirror_holds(mirror, only, remote_heads), remote_heads
    moved = {"main": pushed, "cgr/12-old": main}
    assert git.ensure_mirror(url, mirror, only=only, remote_heads=moved) == tuple(only)
    assert [line.split()[2] for line in lines[fetches:] if line.startswith("$ git")] == ["fetch"]
    assert _git("rev-parse", "main", cwd=mirror) == pushed
    assert git.ensure_mirror(url, mirror, only=only, remote_heads=moved) == tuple(only)
    assert lines[-1] == "mirror: main, cgr/12-* as on the remote; nothing to fetch"
    # Only what git can tell: a symbolic ref among the named branches is never "the same".
    (mirror / "refs" / "heads" / "cgr").mkdir(parents=True, exist_ok=True)
    (mirror / "refs" / "heads" / "cgr" / "12-link").write_text("ref: refs/heads/main\n")
    assert not mirror_holds(mirror, only, {"main": pushed, "cgr/12-link": pushed})


def test_a_mirrors_garbage_is_collected_once_a_day_after_a_fetch_of_every_branch(
    tmp_path: Path, remote: Path
) -> None:
    """A branch deleted on GitHub leaves the mirror with the next fetch of every branch,
    but its objects stayed for ever (a repack keeps what it rolls together) and every
    run's clone copied them. After such a fetch, once a day at most and once the packs
    grew by a quarter since the last collection, ``git gc --prune=now`` drops them; the
    mirror's branches and its clones are as before."""
    from cgr_cli.run._git import MIRROR_GC_SECONDS

    lines: list[str] = []
    git = Git(token=None, timeout=30, network_timeout=30, log=lines.append)
    url = f"file://{remote}"
    mirror = tmp_path / "m.git"
    assert git.ensure_mirror(url, mirror) is None  # created: nothing due for a day
    stamp = tmp_path / "m.git.gc"
    size_at_creation = int(stamp.read_text())
    assert size_at_creation > 0
    work = tmp_path / "feature"
    _git("clone", "-q", str(remote), str(work))
    (work / "only-here.txt").write_text(os.urandom(4096).hex())  # grows the packs
    _git("add", "only-here.txt", cwd=work)
    _git("commit", "-qm", "feature", cwd=work)
    _git("push", "-q", "origin", "HEAD:refs/heads/feature", cwd=work)
    blob = _git("rev-parse", "HEAD:only-here.txt", cwd=work)
    assert git.ensure_mirror(url, mirror) is None  # the feature branch comes in
    _git("branch", "-D", "feature", cwd=remote)
    assert git.ensure_mirror(url, mirror) is None
    assert "feature" not in _git("for-each-ref", "--format=%(refname:short)", cwd=mirror)
    assert _git("cat-file", "-t", blob, cwd=mirror) == "blob"  # still there: not a day yet

    def collections() -> int:
        return sum(line.startswith("mirror: garbage collected in") for line in lines)

    assert collections() == 0
    day_ago = time.time() - MIRROR_GC_SECONDS - 1
    os.utime(stamp, (day_ago, day_ago))
    # A fetch of named branches alone is not followed by a collection.
    assert git.ensure_mirror(url, mirror, only=["main"]) == ("main",)
    assert collections() == 0
    assert git.ensure_mirror(url, mirror) is None
    assert collections() == 1
    gone = subprocess.run(["git", "cat-file", "-e", blob], cwd=mirror, capture_output=True,
                          check=False)  # fmt: skip
    assert gone.returncode != 0
    assert stamp.stat().st_mtime > day_ago + 1
    main = _git("rev-parse", "main", cwd=remote)
    assert _git("rev-parse", "main", cwd=mirror) == main
    _git("fsck", "--no-progress", cwd=mirror)
    clone = tmp_path / "after"
    _git("clone", "-q", "--no-hardlinks", str(mirror), str(clone))
    assert (clone / "a.txt").is_file()
    # A day later but nothing grown: not rewritten again (a large repository that changes
    # little is not repacked every day).
    os.utime(stamp, (day_ago, day_ago))
    assert git.ensure_mirror(url, mirror) is None
    assert collections() == 1
    # A mirror from before the stamp (none), or an unreadable one: collected at its next
    # fetch of every branch.
    for broken in (None, "not a number\n"):
        if broken is None:
            stamp.unlink()
        else:
            stamp.write_text(broken)
            os.utime(stamp, (day_ago, day_ago))
        count = collections()
        assert git.ensure_mirror(url, mirror) is None
        assert collections() == count + 1
