"""Finding ``@login`` mentions in Markdown, and the control commands that follow them.

Pure functions: no I/O, table-tested. A mention counts only where GitHub would render it
as one, so the Markdown is parsed (markdown-it-py, a CommonMark parser, with GitHub's
tables and strikethrough) and only the rendered text of the document is searched:

- not in code: fenced or indented code blocks, inline code spans (pasted logs);
- not in block quotes ("> @bot do X" quotes an earlier comment);
- not in HTML comments (``<!-- @bot ... -->`` is invisible on GitHub) nor in raw HTML's
  tags; text between HTML tags is visible and counts, except inside ``<pre>``,
  ``<code>`` and ``<a>``;
- not in link text, link URLs, autolinks or image descriptions (GitHub does not turn
  ``@name`` inside a link into a mention).

A parser, not line rules, because the cases interact (a fence inside a list item, an
indented block after a paragraph, a comment spanning lines) and CommonMark's rules for
them are subtle; hand-made rules missed the indented code block and the HTML comment.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

Command = Literal["cancel", "retry"]
COMMANDS: Final[frozenset[str]] = frozenset({"cancel", "retry"})

_FIRST_WORD = re.compile(r"[\s:,]*(?P<word>[A-Za-z]+)\b")
# Raw HTML: comments (an unclosed one runs to the end), elements whose text is no
# mention on GitHub, then any remaining tag.
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_HTML_NO_MENTION = re.compile(r"<(pre|code|a)\b[^>]*>.*?(?:</\1\s*>|\Z)", re.DOTALL | re.I)
_HTML_TAG = re.compile(r"<[^>]*>")
_INLINE_OPEN = re.compile(r"<(?:pre|code|a)\b[^>]*(?<!/)>", re.I)
_INLINE_CLOSE = re.compile(r"</(?:pre|code|a)\s*>", re.I)


@dataclass(frozen=True, slots=True)
class Mention:
    """One mention of the login: where it is in the visible text and what follows it.

    ``offset`` is the position in :func:`visible_text` (not in the Markdown source).
    ``command`` is ``"cancel"`` or ``"retry"`` when that is the first word after the
    mention, else ``None``. ``text`` is the visible text after the mention on its line.
    """

    offset: int
    command: Command | None
    text: str


@functools.cache
def _parser() -> MarkdownIt:
    # Imported on first use: cgr's start-up should not pay for a parser it may not need.
    from markdown_it import MarkdownIt

    # "commonmark" with raw HTML recognised (so comments are found, not shown as text),
    # plus the GitHub extensions that hold ordinary text (tables, strikethrough).
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


def visible_text(markdown: str) -> str:
    """The text GitHub shows for ``markdown`` where a mention can be, one block per line.

    Code, quotes, HTML comments and tags, links and images are left out (see the module
    docstring); soft and hard line breaks are kept as newlines, and blocks are separated
    by newlines, so "the rest of the line" after a mention stays within its paragraph.
    """
    parts: list[str] = []
    quoted = 0
    for token in _parser().parse(markdown):
        if token.type == "blockquote_open":
            quoted += 1
        elif token.type == "blockquote_close":
            quoted -= 1
        elif quoted:
            continue
        elif token.type == "inline":
            parts.append(_inline_text(token.children or ()))
            parts.append("\n")
        elif token.type == "html_block":
            parts.append(_html_text(token.content))
            parts.append("\n")
        # fence and code_block tokens (and structure tokens) hold no mention.
    return "".join(parts)


def _inline_text(children: Sequence[Token]) -> str:
    out: list[str] = []
    in_link = 0  # Markdown links, and raw <a>, <code>, <pre> elements
    for child in children:
        kind = child.type
        if kind == "html_inline" and _INLINE_OPEN.fullmatch(child.content):
            in_link += 1
        elif kind == "html_inline" and _INLINE_CLOSE.fullmatch(child.content):
            in_link = max(0, in_link - 1)
        if kind == "link_open":
            in_link += 1
            out.append(" ")
        elif kind == "link_close":
            in_link -= 1
            out.append(" ")
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif in_link:
            continue
        elif kind == "text":
            out.append(child.content)
        elif kind in ("code_inline", "html_inline", "image"):
            # A space keeps the word boundary the element made ("see`x`@bot" must not
            # read as "see@bot", an address).
            out.append(" ")
    return "".join(out)


def _html_text(html: str) -> str:
    text = _HTML_COMMENT.sub(" ", html)
    text = _HTML_NO_MENTION.sub(" ", text)
    return _HTML_TAG.sub(" ", text)


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
    """Every mention of ``@login`` that GitHub would render in ``text``, in order.

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
