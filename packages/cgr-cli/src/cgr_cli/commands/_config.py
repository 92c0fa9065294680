"""``cgr config check``: validate a configuration file and print the effective settings;
with ``--repo``, those of one repository (the host's, tightened by its ``cgr.toml``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cgr_cli.config._model import Config


def check(args: argparse.Namespace) -> int:
    """Print the effective configuration; exit 1 when it cannot run anything: the file is
    invalid, there is no file, or it names no repository."""
    from cgr_cli.config._load import default_config_paths, load_config, render_config

    # A ConfigError goes up to `_main`'s boundary (one line, exit 1 or 3).
    config, path = load_config(args.config)
    if getattr(args, "repo", None):
        return _check_repo(config, path, args.repo)
    source = str(path) if path else "no file found; built-in defaults"
    print(f"# effective configuration (from {source}); secrets are shown as ***")
    print(_token_source(render_config(config), from_file=bool(config.github.token)), end="")
    if path is None:
        searched = ", ".join(str(p) for p in default_config_paths())
        print(
            f"cgr config check: no configuration file (looked at $CGR_CONFIG, {searched}); "
            "write one with `cgr init OWNER/NAME`",
            file=sys.stderr,
        )
        return 1
    if not config.repositories:
        print(
            f"cgr config check: {path} names no repository, so cgr has nothing to watch; "
            'add repositories = ["OWNER/NAME"]',
            file=sys.stderr,
        )
        return 1
    return 0


def _token_source(rendered: str, *, from_file: bool) -> str:
    """Say where the GitHub token comes from, next to the masked value."""
    env = "CGR_GITHUB_TOKEN"
    lines = []
    for rendered_line in rendered.splitlines():
        line = rendered_line
        if line.startswith("token = ") and from_file:
            line += "  # from the configuration file"
            if os.environ.get(env):
                line += f" (${env} is set too, and ignored)"
        elif line == "# token is not set":
            line = (
                f'token = "***"  # from ${env}'
                if os.environ.get(env)
                else f"# token is not set: set github.token here or ${env}"
            )
        lines.append(line)
    return "\n".join(lines) + "\n"


def _check_repo(config: Config, path: Path | None, repo: str) -> int:
    from cgr_cli._errors import ConfigError, GitError
    from cgr_cli._redact import Redactor
    from cgr_cli.config._load import read_config_file, render_config, set_keys
    from cgr_cli.config._repo import command_text
    from cgr_cli.run._repo_file import fetch_for

    token = config.github.resolved_token()
    redact = Redactor([token.reveal()] if token else [])
    try:
        settings = fetch_for(config, repo)
    except ConfigError as exc:
        print(
            f"cgr: {repo}: the repository's settings file is invalid: {redact(str(exc))}; "
            "fix it on the default branch",
            file=sys.stderr,
        )
        return 1
    except GitError as exc:
        code = "timed out" if exc.returncode is None else f"exit code {exc.returncode}"
        print(
            f"cgr: {repo}: could not read its default branch (git {exc.command}: {code}): "
            f"{redact(exc.output.strip()[-300:])}",
            file=sys.stderr,
        )
        return 1
    host_keys = set_keys(read_config_file(path)) if path else set()
    host = str(path) if path else "built-in default"

    def origin(key: str) -> str:
        if key in settings.origins:
            return settings.origins[key]
        return host if key in host_keys else "default"

    file = settings.source or "no .github/cgr.toml or .cgr.toml"
    print(
        f"# effective settings for runs in {repo}: the host's ({host}) tightened by the "
        f"repository's file ({file}, default branch)"
    )
    print("# after each value: where it comes from; secrets are shown as ***")
    if repo.lower() not in {r.lower() for r in config.repositories}:
        print(f"# note: {repo} is not in `repositories`: cgr does not watch it")
    print(render_config(settings.config, origin=origin), end="")
    print("\n# the repository's own")
    if settings.instructions:
        lines = len(settings.instructions.splitlines())
        print(f"# instructions: {lines} line(s), from {settings.instructions_source}")
    for name, commands in (("setup", settings.setup), ("check", settings.check)):
        for argv in commands:
            print(f"# {name}: {command_text(argv)}")
    if not (settings.instructions or settings.setup or settings.check):
        print("# (no instructions, set-up or check commands)")
    for note in settings.notes:
        print(f"# not applied: {note}")
    return 0
