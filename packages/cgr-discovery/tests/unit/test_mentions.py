from __future__ import annotations

import pytest

from cgr_discovery import find_mentions

MATCHES = [
    ("@bot please fix", True),
    ("@BOT please fix", True),
    ("hey @Bot, fix it", True),
    ("(@bot) fix it", True),
    ("@bot", True),
    ("ping @bot.", True),
    ("ping @bot!", True),
    ("@bot: do it", True),
    ("line one\n@bot do it", True),
    ("@botx fix", False),
    ("@bot-x fix", False),
    ("@bot_x fix", False),
    ("mail@bot.com", False),
    ("see https://example.com/@bot", False),
    ("@@bot", False),
    ("bot please", False),
    ("`@bot` in code", False),
    ("``@bot with ` inside`` text", False),
    ("> @bot quoted\n", False),
    ("   > @bot indented quote", False),
    ("```\n@bot in fence\n```", False),
    ("~~~python\n@bot in tilde fence\n~~~", False),
    ("````\n```\n@bot still fenced\n````", False),
    ("```\ncode\n```\n@bot after fence", True),
    ("> quoted\n@bot not quoted", True),
    ("`code` then @bot", True),
    ("```\nunclosed fence @bot", False),
    ("~~~\n```\n@bot\n~~~\n", False),
]


@pytest.mark.parametrize(("text", "expected"), MATCHES)
def test_mention_matching(text: str, expected: bool) -> None:
    assert bool(find_mentions(text, "bot")) is expected


def test_app_login_with_bot_suffix_matches_plain_mention() -> None:
    assert find_mentions("@cgr-app do it", "cgr-app[bot]")
    assert not find_mentions("@cgr-apps do it", "cgr-app[bot]")


def test_login_is_escaped() -> None:
    assert not find_mentions("@aXb", "a.b")
    assert find_mentions("@a.b go", "a.b")


COMMANDS = [
    ("@bot cancel", "cancel"),
    ("@bot Cancel please", "cancel"),
    ("@bot retry", "retry"),
    ("@bot: retry.", "retry"),
    ("@bot, retry", "retry"),
    ("@bot please cancel", None),
    ("@bot cancellation policy?", None),
    ("@bot retrying is good", None),
    ("@bot fix the bug", None),
    ("@bot\ncancel", None),
]


@pytest.mark.parametrize(("text", "command"), COMMANDS)
def test_command_is_first_word_after_mention(text: str, command: str | None) -> None:
    mentions = find_mentions(text, "bot")
    assert mentions
    assert mentions[0].command == command


def test_mention_text_and_offsets() -> None:
    mentions = find_mentions("a @bot fix the tests\nand @bot retry", "bot")
    assert [m.offset for m in mentions] == [2, 25]
    assert mentions[0].text == "fix the tests"
    assert mentions[1].command == "retry"


def test_empty_login_rejected() -> None:
    with pytest.raises(ValueError, match="login"):
        find_mentions("@x", "")
