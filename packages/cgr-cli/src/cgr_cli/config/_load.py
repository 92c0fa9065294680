"""Finding, reading and validating the configuration file; printing the effective config.

Every error names the key path (``agent.max_turns``), the value found and what was
expected, so the user can fix the file without reading cgr's source.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from cgr_cli._errors import ConfigError, ConfigNotFoundError
from cgr_cli._redact import yaml_error_text
from cgr_cli.config._model import Config, Secret

# Never handed to the agent, whatever the configuration says: cgr does GitHub writes itself.
FORBIDDEN_PASSTHROUGH = frozenset({"GH_TOKEN", "GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN",
                                   "GITHUB_ENTERPRISE_TOKEN", "CGR_GITHUB_TOKEN"})  # fmt: skip

_T = typing.TypeVar("_T")
_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def default_config_paths() -> list[Path]:
    """The search order after ``--config`` and ``$CGR_CONFIG``."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [
        config_home / "cgr" / "config.toml",
        config_home / "cgr" / "config.yaml",
        config_home / "cgr" / "config.yml",
        Path("/etc/cgr/config.toml"),
    ]


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """``--config`` (must exist), else ``$CGR_CONFIG`` (must exist), else the first default
    path that exists, else None (the built-in defaults apply)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigNotFoundError(str(path))
        return path
    from_env = os.environ.get("CGR_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigNotFoundError(str(path))
        return path
    return next((p for p in default_config_paths() if p.is_file()), None)


def load_config(explicit: str | os.PathLike[str] | None = None) -> tuple[Config, Path | None]:
    """Find and parse the configuration; returns it with the file it came from."""
    path = find_config(explicit)
    if path is None:
        config = parse_config({}, source="(defaults)")
    else:
        config = parse_config(read_config_file(path), source=str(path))
    check_database_file(config.database)
    return config, path


# A 0-byte database younger than this is one another cgr process is creating right now
# (SQLite makes the empty file first and writes the schema a moment later): not refused.
FRESH_DATABASE_SECONDS = 30.0


def check_database_file(database: Path) -> None:
    """Refuse an existing 0-byte database file: SQLite would silently make it a new, empty
    store, hiding whatever truncated it (a full disk, a bad copy) and every run it held.
    A missing file is fine (the first run creates it), and so is one modified in the last
    ``FRESH_DATABASE_SECONDS`` (being created by a concurrent tick or daemon); other
    foreign files are refused by cgr-store when it opens them (NotADatabase)."""
    import stat
    import time

    from cgr_cli._errors import DatabaseFileError

    try:
        info = database.stat()
    except OSError:
        return  # missing or unreadable: the store says which when it opens it
    fresh = time.time() - info.st_mtime < FRESH_DATABASE_SECONDS
    if info.st_size == 0 and stat.S_ISREG(info.st_mode) and not fresh:
        raise DatabaseFileError(
            f"the database file {database} is empty (0 bytes), so it is not a cgr database; "
            "if a store should be there, restore it from a backup, else remove the file "
            "(cgr creates a new database with the first run)",
            path=str(database),
        )


def read_config_file(path: Path) -> dict[str, Any]:
    text = path.read_bytes()
    if path.suffix in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError(
                "YAML configuration needs PyYAML: pip install 'cgr-cli[yaml]' (or use TOML)",
                source=str(path),
            ) from None
        try:
            data = yaml.safe_load(text)
        except RecursionError:
            raise _too_deep(path) from None
        except yaml.YAMLError as exc:
            # Never str(exc): it quotes the line, which may hold the token.
            raise ConfigError(f"not valid YAML: {yaml_error_text(exc)}", source=str(path)) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"the top level must be a mapping, got {type(data).__name__}", source=str(path)
            )
        return data
    try:
        return tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    except RecursionError:
        raise _too_deep(path) from None


def _too_deep(path: Path) -> ConfigError:
    # tomllib and PyYAML recurse once per level: a file nested thousands deep ends in a
    # RecursionError (and a traceback thousands of lines long) rather than a parse error.
    return ConfigError(
        "nested too deeply to read (a configuration is a few levels deep); fix the file",
        source=str(path),
    )


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret:
        if not isinstance(obj, str):
            raise TypeError(f"Expected `str`, got `{type(obj).__name__}`")
        return Secret(obj)
    raise NotImplementedError(type_)  # pragma: no cover - no other custom types


def parse_config(data: Mapping[str, Any], *, source: str = "") -> Config:
    """Validate raw TOML/YAML data into a ``Config`` or raise ``ConfigError``."""
    # An empty YAML section (`labels:`) parses as None; treat it like an empty table.
    cleaned = {k: ({} if v is None and k in _SECTION_NAMES else v) for k, v in data.items()}
    if cleaned.get("repositories") == "installation":
        cleaned["repositories"] = ["*/*"]  # every repository of the App's installation
    config = convert_checked(cleaned, Config, source=source)
    _check_semantics(config, source)
    return config


def convert_checked(data: Mapping[str, Any], type_: type[_T], *, source: str = "") -> _T:
    """``msgspec.convert`` into the Struct tree ``type_``; a ``ValidationError`` becomes a
    ``ConfigError`` naming the key path, the value and what was expected (with "did you
    mean" for unknown keys). The host configuration and a repository's ``cgr.toml`` share
    it, so both say what is wrong the same way."""
    try:
        return msgspec.convert(data, type=type_, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _explain(exc, data, source, root=type_) from None


_SECTION_NAMES = frozenset(
    f.name for f in msgspec.structs.fields(Config) if f.name != "repositories"
)


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for match in re.finditer(r"\.([^.\[]+)|\[(\d+)\]", path):
        parts.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
    return parts


def _dotted(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _lookup(data: Any, parts: list[str | int]) -> Any:
    for part in parts:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _struct_at(parts: list[str | int], root: type = Config) -> type | None:
    """The Struct type that sits at a key path of ``root`` (for "did you mean")."""
    current: Any = root
    for part in parts:
        if isinstance(part, int) or not isinstance(current, type):
            return None
        fields = {f.name: f.type for f in msgspec.structs.fields(current)}
        current = fields.get(part)
    return current if isinstance(current, type) else None


def _literal_choices(parts: list[str | int], root: type = Config) -> tuple[Any, ...]:
    parent = _struct_at(parts[:-1], root)
    if parent is None or not parts or isinstance(parts[-1], int):
        return ()
    fields = {f.name: f.type for f in msgspec.structs.fields(parent)}
    annotation = fields.get(parts[-1])
    # `Literal[...] | None` arrives as a Union whose first member is the Literal.
    for member in typing.get_args(annotation) or ():
        if typing.get_origin(member) is typing.Literal:
            return typing.get_args(member)
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return ()


def _explain(
    exc: msgspec.ValidationError, data: Mapping[str, Any], source: str, *, root: type = Config
) -> ConfigError:
    message = str(exc)
    path = ""
    if match := _PATH_RE.search(message):
        path = match.group("path")
        message = message[: match.start()]
    parts = _split_path(path)
    if unknown := _UNKNOWN_RE.match(message):
        field = unknown.group("field")
        struct = _struct_at(parts, root)
        known = [f.name for f in msgspec.structs.fields(struct)] if struct else []
        key = _dotted([*parts, field])
        text = f"unknown key {key!r} = {_shown(field, _lookup(data, [*parts, field]))}"
        import difflib  # only for this message: not on every start-up

        close = difflib.get_close_matches(field, known, n=1)
        if close:
            text += f" (did you mean {_dotted([*parts, close[0]])!r}?)"
        elif known:
            text += f"; expected one of: {', '.join(known)}"
        return ConfigError(text, key=key, source=source)
    key = _dotted(parts) or "(top level)"
    value = _lookup(data, parts)
    # "not set" is the absence of the key, never a value one can write: leave it out.
    message = message.replace(" | null`", "`")
    if message.startswith("Invalid enum value"):
        choices = _literal_choices(parts, root)
        message = f"expected one of {', '.join(map(repr, choices))}" if choices else message
    elif parts[:1] == ["repositories"] and "matching regex" in message:
        message = "expected a repository as 'OWNER/NAME'"
    shown = _shown(str(parts[-1]) if parts else "", value)
    return ConfigError(f"{key} = {shown}: {message}", key=key, source=source)


_SECRET_WORDS = ("token", "secret", "password", "passwd", "key", "auth")


def _shown(name: str, value: Any) -> str:
    """A value for an error message; never one that may be a secret."""
    from cgr_cli._redact import Redactor

    if any(word in name.lower() for word in _SECRET_WORDS):
        return "***"
    return Redactor()(_short(value))


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except ValueError:  # pragma: no cover - circular data cannot come from TOML
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_semantics(config: Config, source: str) -> None:
    from cgr_cli.config._validate import check_values

    check_values(config, source)
    for index, name in enumerate(config.agent.env_passthrough):
        if name.upper() in FORBIDDEN_PASSTHROUGH:
            key = f"agent.env_passthrough[{index}]"
            raise ConfigError(
                f"{key} = {name!r}: a GitHub token is never passed to the agent "
                "(cgr makes every GitHub write itself); remove it",
                key=key,
                source=source,
            )
    for index, pattern in enumerate(config.agent.watchdog_patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            key = f"agent.watchdog_patterns[{index}]"
            raise ConfigError(
                f"{key} = {pattern!r}: expected a regular expression ({exc})",
                key=key,
                source=source,
            ) from None
    sandbox = config.agent.sandbox
    named = [(f"agent.sandbox.read_only[{i}]", v) for i, v in enumerate(sandbox.read_only)]
    named += [(f"agent.sandbox.read_write[{i}]", v) for i, v in enumerate(sandbox.read_write)]
    named += [("agent.sandbox.home", sandbox.home)] if sandbox.home is not None else []
    for key, value in named:
        if not Path(value).expanduser().is_absolute():
            raise ConfigError(
                f"{key} = {value!r}: expected an absolute path", key=key, source=source
            )
    if not config.agent.argv or not config.agent.argv[0]:
        raise ConfigError("agent.command = []: expected a program name", key="agent.command")
    p = config.polling
    if p.retry_backoff_max_seconds < p.retry_backoff_seconds:
        raise ConfigError(
            f"polling.retry_backoff_max_seconds = {p.retry_backoff_max_seconds:g}: must be at "
            f"least polling.retry_backoff_seconds ({p.retry_backoff_seconds:g}); raise it or "
            "lower retry_backoff_seconds",
            key="polling.retry_backoff_max_seconds",
            source=source,
        )
    _check_webhook(config, source)
    _check_app(config, source)
    t = config.timeouts
    if t.stale_heartbeat_seconds < 2 * t.heartbeat_seconds:
        # The reaper kills a run silent for stale_heartbeat_seconds: with less than two beat
        # periods, one late beat (a busy database, a slow disk) would kill a healthy run.
        raise ConfigError(
            f"timeouts.stale_heartbeat_seconds = {t.stale_heartbeat_seconds:g}: must be at "
            f"least twice timeouts.heartbeat_seconds ({t.heartbeat_seconds:g}), or the reaper "
            "would end healthy runs; raise it or lower heartbeat_seconds",
            key="timeouts.stale_heartbeat_seconds",
            source=source,
        )


def _check_app(config: Config, source: str) -> None:
    from cgr_cli.config._model import is_pattern

    g = config.github
    if not g.app_mode:
        for index, repo in enumerate(config.repositories):
            if is_pattern(repo):
                raise ConfigError(
                    f"repositories[{index}] = {repo!r}: a pattern needs a GitHub App "
                    "([github] app_id and private_key_file) whose installation lists the "
                    "repositories; with a token, name each repository",
                    key=f"repositories[{index}]",
                    source=source,
                )
        if g.private_key_file or g.installation_id:
            raise ConfigError(
                "github.private_key_file / installation_id are for a GitHub App: set "
                "github.app_id too, or remove them",
                key="github.app_id",
                source=source,
            )
        return
    if g.token:
        raise ConfigError(
            "github.token and github.app_id are both set: cgr runs either as a GitHub App "
            "or with a token; remove one",
            key="github.token",
            source=source,
        )
    if not g.private_key_file:
        raise ConfigError(
            f"github.app_id = {g.app_id} needs github.private_key_file (the .pem file "
            "generated on the App's settings page)",
            key="github.private_key_file",
            source=source,
        )
    try:
        key = g.private_key()
    except OSError as exc:
        raise ConfigError(
            f"github.private_key_file = {g.private_key_file!r}: cannot read it ({exc.strerror})",
            key="github.private_key_file",
            source=source,
        ) from None
    if "PRIVATE KEY" not in key.reveal():
        raise ConfigError(
            f"github.private_key_file = {g.private_key_file!r} is not a PEM private key "
            "(expected the .pem file GitHub generated for the App)",
            key="github.private_key_file",
            source=source,
        )


def _check_webhook(config: Config, source: str) -> None:
    w = config.webhook
    if w.listen is None:
        return
    _, sep, port = w.listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f'webhook.listen = {w.listen!r}: expected HOST:PORT, e.g. "127.0.0.1:8787"',
            key="webhook.listen",
            source=source,
        )
    if w.secret and w.secret_file:
        raise ConfigError(
            "webhook.secret and webhook.secret_file are both set: keep one",
            key="webhook.secret_file",
            source=source,
        )
    if not w.secret and not w.secret_file:
        # An unsigned endpoint would let anyone who can reach it make cgr call GitHub.
        raise ConfigError(
            f"webhook.listen = {w.listen!r} needs webhook.secret or webhook.secret_file "
            "(the secret set on the GitHub hook); unsigned deliveries are never accepted",
            key="webhook.secret",
            source=source,
        )
    if w.secret_file:
        try:
            secret = w.resolved_secret()
        except OSError as exc:
            raise ConfigError(
                f"webhook.secret_file = {w.secret_file!r}: cannot read it ({exc.strerror})",
                key="webhook.secret_file",
                source=source,
            ) from None
        if secret is None:
            raise ConfigError(
                f"webhook.secret_file = {w.secret_file!r} is empty",
                key="webhook.secret_file",
                source=source,
            )


# -- printing ------------------------------------------------------------------------------


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return "***"
    raise NotImplementedError(type(obj))  # pragma: no cover


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)


def render_config(config: Config, *, origin: Callable[[str], str] | None = None) -> str:
    """The effective configuration as TOML, secrets shown as ``***``; with ``origin``,
    each line ends with a comment saying where its value came from (given the dotted key)."""
    data = msgspec.to_builtins(config, enc_hook=_enc_hook)
    lines: list[str] = []
    sections: list[tuple[str, dict[str, Any]]] = []

    def line(key: str, text: str) -> str:
        return f"{text}  # {origin(key)}" if origin is not None else text

    for key, value in data.items():
        if isinstance(value, dict):
            sections.append((key, value))
        else:
            lines.append(line(key, f"{key} = {_toml_value(value)}"))
    while sections:
        name, section = sections.pop(0)
        lines.append(f"\n[{name}]")
        for key, value in section.items():
            if isinstance(value, dict):  # a sub-table (agent.sandbox), after this one
                sections.insert(0, (f"{name}.{key}", value))
            elif value is None:
                lines.append(line(f"{name}.{key}", f"# {key} is not set"))
            else:
                lines.append(line(f"{name}.{key}", f"{key} = {_toml_value(value)}"))
    return "\n".join(lines) + "\n"


def set_keys(data: Mapping[str, Any]) -> set[str]:
    """The dotted keys a raw configuration sets (``agent.max_turns``), to tell a value
    from the file from a default."""
    keys: set[str] = set()
    for key, value in data.items():
        keys.add(key)
        if isinstance(value, Mapping):
            keys.update(f"{key}.{sub}" for sub in value)
    return keys
