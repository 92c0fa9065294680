"""Finding ``@login`` mentions in Markdown, and the control commands that follow them.

Pure functions: no I/O, table-tested. Text inside fenced code blocks, inline code spans and
quoted lines is ignored, because that is where people paste logs or quote an earlier
comment ("> @bot do X") without meaning to trigger a new run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Command = Literal["cancel", "retry"]
COMMANDS: Final[frozenset[str]] = frozenset({"cancel", "retry"})

# A fence opens with at least three backticks or tildes, indented by at most three spaces
# (CommonMark). The closing fence uses the same character and at least as many of them.
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})")
_QUOTE = re.compile(r"^ {0,3}>")
# An inline code span: a run of backticks, then anything up to the same run.
_INLINE_CODE = re.compile(r"(?P<ticks>`+)(?!`).*?(?<!`)(?P=ticks)(?!`)", re.DOTALL)
_FIRST_WORD = re.compile(r"[\s:,]*(?P<word>[A-Za-z]+)\b")


@dataclass(frozen=True, slots=True)
class Mention:
    """One mention of the login: where it is in the visible text and what follows it.

    ``command`` is ``"cancel"`` or ``"retry"`` when that is the first word after the
    mention, else ``None``. ``text`` is the visible text after the mention on its line.
    """

    offset: int
    command: Command | None
    text: str


def visible_text(markdown: str) -> str:
    """The text with fenced code, inline code and quoted lines blanked out.

    Blanked parts are replaced by spaces (newlines kept) so offsets and word boundaries in
    the result still line up with the original.
    """
    lines = markdown.splitlines(keepends=True)
    out: list[str] = []
    fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group("fence")
                out.append(_blank(line))
            elif _QUOTE.match(line):
                out.append(_blank(line))
            else:
                out.append(line)
        else:
            if (
                match
                and match.group("fence")[0] == fence[0]
                and len(match.group("fence")) >= len(fence)
            ):
                fence = None
            out.append(_blank(line))
    text = "".join(out)
    return _INLINE_CODE.sub(lambda m: _blank(m.group(0)), text)


def _blank(text: str) -> str:
    return "".join(c if c in "\r\n" else " " for c in text)


def _login_pattern(login: str) -> re.Pattern[str]:
    # A GitHub App's account is "name[bot]", but people mention it as "@name".
    name = login.removeprefix("@").removesuffix("[bot]")
    if not name:
        raise ValueError("login must not be empty")
    # Not preceded by a word character, "@", "/" or "." (e-mail addresses, URLs,
    # "@@bot"); not followed by a character that could continue a login ("@botx",
    # "@bot-x", "@bot_x").
    return re.compile(rf"(?<![\w@/.+-])@{re.escape(name)}(?![\w-])", re.IGNORECASE)


def find_mentions(text: str, login: str) -> list[Mention]:
    """Every mention of ``@login`` in ``text`` outside code and quotes, in order.

    Matching is case-insensitive on word boundaries: ``@bot``, ``@bot,``, ``(@bot)`` match;
    ``@botx``, ``mail@bot.com`` and ``@bot-x`` do not.
    """
    visible = visible_text(text)
    mentions: list[Mention] = []
    for match in _login_pattern(login).finditer(visible):
        end = visible.find("\n", match.end())
        rest = visible[match.end() : end if end != -1 else len(visible)]
        word = _FIRST_WORD.match(rest)
        command: Command | None = None
        if word and word.group("word").lower() in COMMANDS:
            command = "cancel" if word.group("word").lower() == "cancel" else "retry"
        mentions.append(Mention(offset=match.start(), command=command, text=rest.strip()))
    return mentions
