from __future__ import annotations

import subprocess
import sys

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
    ("> quoted\n@bot lazily continues the quote", False),  # CommonMark, as GitHub renders
    ("> quoted\n\n@bot not quoted", True),
    ("`code` then @bot", True),
    ("```\nunclosed fence @bot", False),
    ("~~~\n```\n@bot\n~~~\n", False),
    # Indented code (4 spaces or a tab) is code; a lazy continuation line is not.
    ("    @bot in indented code", False),
    ("paragraph\n\n    @bot in indented code\n\nafter", False),
    ("\t@bot in tab-indented code", False),
    ("paragraph\n    @bot continues the paragraph", True),
    ("- item\n\n      @bot code inside a list item", False),
    ("- item\n\n  ```\n  @bot fenced inside a list item\n  ```", False),
    ("- @bot in a list item", True),
    # HTML comments are invisible on GitHub.
    ("<!-- @bot do it -->", False),
    ("before <!-- @bot do it --> after", False),
    ("<!--\n@bot spanning\nlines\n-->\nvisible text", False),
    ("<!-- unclosed @bot", False),
    ("<!-- hidden -->\n\n@bot visible", True),
    # Raw HTML: text between tags is visible, inside <pre>/<code>/<a> it is no mention.
    ("<details>\n@bot inside details\n</details>", True),
    ("<pre>\n@bot in pre\n</pre>", False),
    ("text <code>@bot</code> text", False),
    # Links: GitHub does not mention inside link text, URLs or autolinks.
    ("[@bot](https://example.com)", False),
    ("[see](https://example.com/@bot)", False),
    ("<https://example.com/@bot>", False),
    ("![@bot](image.png)", False),
    ("[link](https://example.com) then @bot", True),
    # Block quotes, lazy continuation and nesting included.
    ("> quoted\ncontinued @bot", False),
    ("> - @bot in a quoted list", False),
    ("> > @bot nested quote", False),
    # Rendered text elsewhere counts.
    ("# @bot in a heading", True),
    ("*@bot* emphasised", True),
    ("| a | b |\n|---|---|\n| @bot x | y |", True),
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


def test_mention_text_is_the_rendered_text() -> None:
    (mention,) = find_mentions("@bot fix `the_tests` **now** <!-- x -->", "bot")
    assert mention.text == "fix   now"  # code and the comment left out, emphasis kept
    (mention,) = find_mentions("```\n@bot no\n```\n@bot yes\nnext paragraph line", "bot")
    assert mention.text == "yes"


def test_empty_login_rejected() -> None:
    with pytest.raises(ValueError, match="login"):
        find_mentions("@x", "")


def test_parser_is_imported_on_first_use_only() -> None:
    # cgr's start-up imports cgr_discovery; the Markdown parser waits for a mention search.
    code = (
        "import sys, cgr_discovery\n"
        "assert 'markdown_it' not in sys.modules, 'imported at start-up'\n"
        "cgr_discovery.find_mentions('@bot hi', 'bot')\n"
        "assert 'markdown_it' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
