"""``cgr config check``: validate a configuration file and print the effective settings;
with ``--repo``, those of one repository (the host's, tightened by its ``cgr.toml``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cgr_cli.config._model import Config


def check(args: argparse.Namespace) -> int:
    from cgr_cli._errors import ConfigError
    from cgr_cli.config._load import load_config, render_config

    try:
        config, path = load_config(args.config)
    except ConfigError as exc:
        print(f"cgr: configuration error: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "repo", None):
        return _check_repo(config, path, args.repo)
    source = str(path) if path else "no file found; built-in defaults"
    print(f"# effective configuration (from {source}); secrets are shown as ***")
    print(render_config(config), end="")
    return 0


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
