from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import cgr_exec


def test_all_names_are_exported() -> None:
    exported = {name for name in dir(cgr_exec) if not name.startswith("_")}
    assert set(cgr_exec.__all__) == exported - {"annotations"}
    for name in cgr_exec.__all__:
        assert getattr(cgr_exec, name) is not None


NO_TRIO = """
import sys

class NoTrio:
    def find_spec(self, name, path=None, target=None):
        if name == "trio" or name.startswith("trio."):
            raise ImportError("trio must not be imported at runtime")

sys.meta_path.insert(0, NoTrio())
import anyio
import cgr_exec

async def main():
    result = await cgr_exec.supervise(
        [sys.executable, "-c", "print('ok')"],
        stdout_path=sys.argv[1] + "/out", stderr_path=sys.argv[1] + "/err",
    )
    assert result.exit_code == 0
    async with cgr_exec.SubprocessExecutor() as executor:
        await (await executor.start(["true"], log_path=sys.argv[1] + "/log")).wait()

anyio.run(main)
assert "trio" not in sys.modules
print("no trio")
"""


def test_runtime_never_imports_trio(tmp_path: Path) -> None:
    # trio is only a test dependency (the suite runs on both backends); the package
    # itself must work, on asyncio, where trio cannot be imported at all.
    done = subprocess.run(
        [sys.executable, "-c", NO_TRIO, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no trio"


def test_trio_is_not_a_runtime_dependency() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())
    runtime = [
        re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0] for r in project["project"]["dependencies"]
    ]
    assert runtime == ["anyio"]
    assert any(r.startswith("trio") for r in project["dependency-groups"]["test"])
