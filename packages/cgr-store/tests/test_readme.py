"""The README's example really works (run as a script, twice, in a fresh directory)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = blocks[0]
    assert len([line for line in example.splitlines() if line.strip()]) <= 10
    script = tmp_path / "example.py"
    script.write_text(example)

    first = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "['None -> queued', 'queued -> claimed', 'claimed -> running', 'running -> succeeded']"
    ]
    second = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert second.returncode == 1
    assert "TriggerAlreadyProcessed" in second.stderr
