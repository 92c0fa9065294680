"""The README's usage example runs as written (in a real subprocess) and says what it should."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"## Usage\n\n```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no python block under ## Usage"
    script = tmp_path / "example.py"
    script.write_text(match.group(1), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("issue_mention ")
    assert lines[1].startswith("review_comment ")
    assert [line.split()[0] for line in lines[2:4]] == ["ready_issue", "ready_issue"]
    assert lines[4] == "rejected: @mallory needs write access to acme/widgets to trigger runs"
    assert lines[5].endswith("cursors to store")
