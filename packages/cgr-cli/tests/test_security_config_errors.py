"""A broken configuration file never shows the token in cgr's error message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("yaml")

TOKEN_A = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
TOKEN_B = "Zq9" + "x7Wv5Ut3Sr1Qp0On2Ml4Kj6Ih8Gf0Ed2Cb4Az"  # a token of no known shape


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("unterminated.yaml", f'github:\n  token: "{TOKEN_A}\n  repos: [\n'),
        ("colon.yaml", f"github:\n  token: {TOKEN_B}: x\n"),
        ("indent.yaml", f"github:\n  token: {TOKEN_B}\n bad: 1\n"),
        ("bad.toml", f'[github]\ntoken = "{TOKEN_B}" x\n'),
    ],
)
def test_config_check_error_shows_no_part_of_the_token(
    tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "cgr_cli", "config", "check", "--config", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    shown = done.stdout + done.stderr
    assert done.returncode != 0
    assert "configuration error" in shown
    assert "(at line" in shown  # still says where the problem is
    for token in (TOKEN_A, TOKEN_B):
        # Not even a piece: PyYAML's excerpt shows 30-odd characters of the line.
        for start in range(len(token) - 8):
            assert token[start : start + 8] not in shown, shown
