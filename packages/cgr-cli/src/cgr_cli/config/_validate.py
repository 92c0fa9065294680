"""Checks on configuration values that the types alone cannot make.

msgspec checks types and simple ranges; this module checks what goes wrong later and far
from the file: a number that overflows a date (``timeouts.run_seconds = inf`` crashed the
reaper), a repository name that is a path (``../x``) or an option (``-rf/x``), a branch
name git refuses or reads as an option (``--upload-pack=sh``), an API URL that is not
HTTP. Every error names the key, the value and what is expected.

The checks walk the whole configuration tree, so a section added later is covered by the
number rules without being listed here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import msgspec

from cgr_cli._errors import ConfigError

# Upper bounds by the key's ending: far above any real use, far below what overflows a
# datetime or a timer (timedelta tops out near 1e14 days).
_DAY = 86400.0
_BOUNDS: tuple[tuple[str, float, str], ...] = (
    ("_seconds", 30 * _DAY, "30 days (2592000 seconds)"),
    ("_days", 3650.0, "3650 days"),
    ("_usd", 100_000.0, "100000 USD"),
    ("_usd_per_mtok", 100_000.0, "100000 USD"),
    ("max_concurrency", 1024, "1024"),
    ("max_concurrent_repos", 1024, "1024"),
    ("runs_ahead", 1024, "1024"),
    ("max_turns", 100_000, "100000"),
)
# Any other number: finite and below this.
_DEFAULT_BOUND = 1e9

# GitHub's rules: a login is 1-39 alphanumerics or single hyphens, not at either end; a
# repository name is 1-100 of [A-Za-z0-9._-], not "." or "..". cgr also refuses a leading
# "-" in a name, which a command line would read as an option.
LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,99}$")
# Bot accounts (``name[bot]``) are logins too.
BOT_LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}(?:\[bot\])?$")


def repository_problem(value: str) -> str | None:
    """Why ``value`` is not an ``OWNER/NAME`` GitHub accepts, or None."""
    owner, slash, name = value.partition("/")
    if not slash or "/" in name:
        return "expected a repository as 'OWNER/NAME'"
    if any(c in value for c in "*?["):
        return None  # a GitHub App's glob ("acme/*"): matched against real names later
    if not LOGIN_RE.match(owner):
        return (
            f"owner {owner!r} is not a GitHub account name (letters, digits and single "
            "hyphens, not at the start or end, at most 39)"
        )
    if name in (".", "..") or not REPO_NAME_RE.match(name):
        return (
            f"name {name!r} is not a GitHub repository name (letters, digits, '.', '_', "
            "'-', at most 100, not starting with '-', not '.' or '..')"
        )
    return None


_REF_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def ref_problem(value: str) -> str | None:  # noqa: PLR0911 - one return per rule
    """Why ``value`` is not a branch name ``git check-ref-format --branch`` accepts (or one
    git would read as an option), or None. The rules of git-check-ref-format(1)."""
    if value.startswith("-"):
        return "starts with '-', which git would read as an option"
    if value == "@" or "@{" in value:
        return "contains '@{' or is '@'"
    if _REF_BAD_CHARS.search(value):
        return "contains a space, a control character or one of ~ ^ : ? * [ \\"
    if value.startswith("/") or value.endswith("/") or "//" in value:
        return "starts or ends with '/' or contains '//'"
    if ".." in value:
        return "contains '..'"
    if value.endswith("."):
        return "ends with '.'"
    for component in value.split("/"):
        if component.startswith("."):
            return f"a component ({component!r}) starts with '.'"
        if component.endswith(".lock"):
            return f"a component ({component!r}) ends with '.lock'"
    return None


def check_values(config: Any, source: str) -> None:
    """Raise ConfigError for the first value that is out of range or unsafe."""
    for key, value in _numbers(config, ""):
        _check_number(key, value, source)
    for index, repo in enumerate(config.repositories):
        if problem := repository_problem(repo):
            _fail(f"repositories[{index}]", repo, problem, source)
    prefix = config.branching.prefix.strip("/")
    if problem := ref_problem(prefix):
        _fail("branching.prefix", config.branching.prefix, f"not a branch name: {problem}", source)
    base = config.branching.base
    if base != "default" and (problem := ref_problem(base)):
        _fail("branching.base", base, f"not a branch name: {problem}", source)
    _check_url(config.github.api_url, source)
    login = config.github.bot_login
    if login is not None and not BOT_LOGIN_RE.match(login):
        _fail("github.bot_login", login, "not a GitHub login", source)
    for section in ("allow_users", "deny_users"):
        for index, user in enumerate(getattr(config.trigger, section)):
            if not BOT_LOGIN_RE.match(user):
                _fail(f"trigger.{section}[{index}]", user, "not a GitHub login", source)
    for name in ("workspace_root", "database"):
        path = getattr(config.paths, name)
        if path.startswith("-"):
            _fail(f"paths.{name}", path, "a path may not start with '-' (write ./-…)", source)


def _numbers(node: Any, prefix: str) -> Iterator[tuple[str, float]]:
    if isinstance(node, msgspec.Struct):
        # The names alone: ``msgspec.structs.fields`` evaluates every annotation (a
        # ``compile`` each) on each call - 80 % of loading the configuration, which every
        # run does.
        for name in node.__struct_fields__:
            key = f"{prefix}.{name}" if prefix else name
            yield from _numbers(getattr(node, name), key)
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _numbers(value, f"{prefix}.{name}")
    elif isinstance(node, float | int) and not isinstance(node, bool):
        yield prefix, node


def _check_number(key: str, value: float, source: str) -> None:
    if not math.isfinite(value):
        _fail(key, value, "expected a finite number", source)
    name = key.rsplit(".", 1)[-1]
    bound, shown = next(
        ((b, s) for suffix, b, s in _BOUNDS if name.endswith(suffix)),
        (_DEFAULT_BOUND, f"{_DEFAULT_BOUND:g}"),
    )
    if value > bound:
        _fail(key, value, f"at most {shown}", source)


def _check_url(url: str, source: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail("github.api_url", url, "expected an http:// or https:// URL", source)
    if parts.username or parts.password:
        # Never echo it: the user part of a URL is where a token would be.
        raise ConfigError(
            "github.api_url: credentials in the URL are refused; put the token in "
            "github.token or $CGR_GITHUB_TOKEN",
            key="github.api_url",
            source=source,
        )


def _fail(key: str, value: object, problem: str, source: str) -> None:
    shown = (
        repr(value)
        if isinstance(value, str)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )
    raise ConfigError(f"{key} = {shown}: {problem}", key=key, source=source)
