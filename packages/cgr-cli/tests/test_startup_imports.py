"""What `cgr` imports before it does anything: only what the command and configuration need.

Start-up time is measured by bench/bench_startup.py, never asserted here; these tests pin
the cause of a slow start instead: heavy packages imported for features nobody configured.
Each runs the real entry point (``python -m cgr_cli``, the same ``run()`` as the ``cgr``
script) in a fresh interpreter and reads its ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runworld import REPO, Env

# Heavy packages each tied to one feature: the dashboard (textual, rich), the daemon's
# /metrics (prometheus_client), GitHub App auth (jwt, cryptography), YAML configuration
# files (yaml); trio is not used by cgr at all.
HEAVY = ("textual", "rich", "prometheus_client", "jwt", "cryptography", "trio", "yaml")

# Loaded as a site customisation in the child: when the run opens its store (its first
# store lookup follows at once), write the names of the loaded modules and exit.
_SITE = """
import os, sys

def _hook(event, args):
    if event == "sqlite3.connect":
        loaded = sorted(n for n, m in list(sys.modules.items()) if m is not None)
        with open(os.environ["CGR_TEST_MODULES"], "w") as f:
            f.write("\\n".join(loaded))
        os._exit(0)

sys.addaudithook(_hook)
"""


def _loaded_by(args: list[str], tmp: Path, *, at_store: bool = False) -> set[str]:
    out = tmp / "modules.txt"
    env = dict(os.environ, CGR_TEST_MODULES=str(out))
    if at_store:
        site = tmp / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(_SITE)
        env["PYTHONPATH"] = str(site)
        code = "import runpy; runpy.run_module('cgr_cli', run_name='__main__')"
    else:
        # Whatever way the command ends (SystemExit for --version and --help), list the
        # modules loaded by then.
        code = (
            "import os, runpy, sys\n"
            "try:\n    runpy.run_module('cgr_cli', run_name='__main__')\n"
            "finally:\n"
            "    loaded = sorted(n for n, m in list(sys.modules.items()) if m is not None)\n"
            "    open(os.environ['CGR_TEST_MODULES'], 'w').write('\\n'.join(loaded))\n"
        )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=60,
        check=False,
    )
    assert out.exists(), f"the child wrote no module list: {done.stdout}{done.stderr}"
    # One name a line, not JSON: the harness must not load json itself.
    return set(out.read_text().split())


def _heavy(modules: set[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def test_version_and_help_load_no_feature_package(tmp_path: Path) -> None:
    for args in (["--version"], ["--help"]):
        modules = _loaded_by(args, tmp_path)
        assert "cgr_cli._main" in modules  # the command really ran
        assert _heavy(modules) == [], args
        # Neither the run machinery nor the leaves: only argparse and cgr's parser.
        for name in ("cgr_discovery", "cgr_store", "cgr_exec", "httpx", "msgspec", "anyio",
                     "pathlib", "json", "typing"):  # fmt: skip
            assert name not in modules, (args, name)


def _config(tmp: Path, suffix: str = "toml") -> Path:
    github = {"api_url": "http://127.0.0.1:9", "token": "ghp_" + "0" * 36, "bot_login": "bot"}
    paths = {"workspace_root": str(tmp / "ws"), "database": str(tmp / "cgr.sqlite3")}
    agent = {"command": [sys.executable, "-c", "pass"]}
    path = tmp / f"config.{suffix}"
    if suffix == "toml":
        lines = ['repositories = ["acme/widgets"]']
        for name, section in (("github", github), ("paths", paths), ("agent", agent)):
            lines += [f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in section.items())]
        path.write_text("\n".join(lines) + "\n")
    else:  # JSON is YAML
        path.write_text(json.dumps({"repositories": ["acme/widgets"], "github": github,
                                    "paths": paths, "agent": agent}))  # fmt: skip
    return path


def test_run_start_loads_no_feature_package(tmp_path: Path) -> None:
    """`cgr run --run-id R` (what the daemon starts) up to its first store lookup."""
    config = _config(tmp_path)
    args = ["run", "--config", str(config), "--repo", "acme/widgets", "--number", "1",
            "--run-id", "r-1"]  # fmt: skip
    modules = _loaded_by(args, tmp_path, at_store=True)
    assert "cgr_cli.run._pick_up" in modules
    assert "sqlite3" in modules
    assert _heavy(modules) == []
    # The queued run is picked up before the pipeline, the GitHub client, the executors
    # or an event loop are even imported.
    for name in ("cgr_cli.run._pipeline", "cgr_discovery", "httpx", "anyio", "asyncio",
                 "cgr_exec._daemon", "cgr_exec._fork"):  # fmt: skip
        assert name not in modules, name


def test_a_yaml_configuration_loads_yaml(tmp_path: Path) -> None:
    """The check above can fail: a configured feature's package does show up."""
    config = _config(tmp_path, "yaml")
    args = ["run", "--config", str(config), "--repo", "acme/widgets", "--number", "1",
            "--run-id", "r-1"]  # fmt: skip
    modules = _loaded_by(args, tmp_path, at_store=True)
    assert _heavy(modules) == ["yaml"]


# In the child: what a standby loads before its run comes, then the run itself; the
# modules the run imported on top.
_STANDBY_RUN = """
import json, os, sys
sys.modules.setdefault("trio", None)  # as cgr_cli.__main__ does
from cgr_cli._main import command_parser, main
from cgr_cli.commands._standby import preload
preload(command_parser)  # as __main__ does before a standby waits
before = {n for n, m in sys.modules.items() if m is not None}
code = main(sys.argv[1:])
after = {n for n, m in sys.modules.items() if m is not None}
with open(os.environ["CGR_TEST_MODULES"], "w") as f:
    json.dump({"code": code, "new": sorted(after - before)}, f)
"""


def test_a_run_handed_to_a_standby_imports_nothing_more(env: Env, tmp_path: Path) -> None:
    """A standby's imports are done before its run comes (commands/_standby.py); whatever
    the run imports after that is start-up paid by the run, on every run. The whole run
    (claim, clone, agent, push, pull request) imports nothing."""
    number = env.sim.create_issue(REPO, "Standby", "", author="alice", labels=["ready"])
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _STANDBY_RUN, "run", "--config", str(env.config_path),
         "--repo", REPO, "--number", str(number)],
        capture_output=True, text=True, env=dict(os.environ, CGR_TEST_MODULES=str(out)),
        check=False,
    )  # fmt: skip
    assert out.exists(), done.stderr
    result = json.loads(out.read_text())
    assert result["code"] == 0, done.stderr
    assert result["new"] == [], " ".join(result["new"])


# Loaded in the standby (and so in every copy its fork server makes): an exit handler that
# leaves a mark when the interpreter tears itself down normally.
_TEARDOWN_SITE = """
import atexit, os

atexit.register(lambda: open(os.environ["CGR_TEST_TEARDOWN"], "a").write(f"{os.getpid()}\\n"))
"""


def test_a_standby_run_flushes_what_it_printed_and_skips_the_teardown(
    env: Env, tmp_path: Path
) -> None:
    """A run handed to a standby (forked by the daemon's fork server) ends without the
    interpreter's teardown, ~50 ms of CPU per run (``__main__._leave``): no exit handler
    runs. What it printed is flushed first: its one-line summary is in its log."""
    import anyio

    from cgr_exec import ExitStatus, SubprocessExecutor

    number = env.sim.create_issue(REPO, "Standby exit", "", author="alice", labels=["ready"])
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_TEARDOWN_SITE)
    marker = tmp_path / "teardown"
    child_env = dict(os.environ, PYTHONPATH=str(site), CGR_TEST_TEARDOWN=str(marker))
    log = tmp_path / "run.log"

    async def hand_over() -> ExitStatus:
        async with SubprocessExecutor(limit=1) as executor:
            executor.keep_warm([sys.executable, "-m", "cgr_cli"], env=child_env, fork_server=True)
            args = ["run", "--config", str(env.config_path), "--repo", REPO]
            args += ["--number", str(number)]
            handle = await executor.start_warm(args, log_path=log)
            assert executor.standby_starts == 1
            return (await handle.wait()).status

    assert anyio.run(hand_over) == ExitStatus(code=0), log.read_text()
    assert f"{REPO}#{number}: pr_opened " in log.read_text()
    assert not marker.exists(), marker.read_text()
    # The positive control: the same handler does run when a `cgr` process ends normally.
    done = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "--version"], env=child_env, capture_output=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0
    assert len(marker.read_text().split()) == 1
