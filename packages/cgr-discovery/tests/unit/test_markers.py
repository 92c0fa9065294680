from __future__ import annotations

import pytest

from cgr_discovery import find_status_run_id, splice_owned_section, status_marker

B, E = "<!-- cgr:begin -->", "<!-- cgr:end -->"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, f"{B}\nnew\n{E}"),
        ("", f"{B}\nnew\n{E}"),
        ("  \n", f"{B}\nnew\n{E}"),
        ("Human text", f"Human text\n\n{B}\nnew\n{E}"),
        ("Human text\n\n", f"Human text\n\n{B}\nnew\n{E}"),
        (f"top\n{B}\nold\n{E}\nbottom  \n", f"top\n{B}\nnew\n{E}\nbottom  \n"),
        (f"{B}old{E}", f"{B}\nnew\n{E}"),
        (f"a {B}\nold\n{E} b {B}\nsecond\n{E}", f"a {B}\nnew\n{E} b {B}\nsecond\n{E}"),
        (f"person deleted the end {B}\nold", f"person deleted the end {B}\nold\n\n{B}\nnew\n{E}"),
        (f"end before begin {E} {B}", f"end before begin {E} {B}\n\n{B}\nnew\n{E}"),
        ("ünïcode ✓ text", f"ünïcode ✓ text\n\n{B}\nnew\n{E}"),
    ],
)
def test_splice(body: str | None, expected: str) -> None:
    assert splice_owned_section(body, "new") == expected


def test_splice_is_idempotent_and_keeps_edits_outside() -> None:
    once = splice_owned_section("Intro by a person", "v1")
    edited = "Edited intro\n" + once.split("\n", 1)[1] + "\nFooter by the agent"
    twice = splice_owned_section(edited, "v2")
    assert twice.startswith("Edited intro\n")
    assert twice.endswith("\nFooter by the agent")
    assert "v1" not in twice
    assert "v2" in twice
    assert splice_owned_section(twice, "v2") == twice


def test_section_may_not_contain_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        splice_owned_section("x", f"evil {E}")


def test_status_marker_roundtrip() -> None:
    marker = status_marker("run-42")
    assert marker == "<!-- cgr:run=run-42 -->"
    assert find_status_run_id(f"{marker}\nWorking…") == "run-42"
    assert find_status_run_id("no marker") is None
    assert find_status_run_id(None) is None


@pytest.mark.parametrize("bad", ["", "a b", "x-->", "a" * 129])
def test_status_marker_rejects_unsafe_ids(bad: str) -> None:
    with pytest.raises(ValueError, match="run id"):
        status_marker(bad)
