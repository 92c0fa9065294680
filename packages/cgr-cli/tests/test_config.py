from __future__ import annotations

from pathlib import Path

import pytest

from cgr_cli import Config, ConfigError, ConfigNotFoundError, Secret, load_config, main
from cgr_cli.config._load import parse_config, render_config

# (file text, key path named in the error, fragments the message must contain)
TOML_ERRORS = [
    ("agent.max_turn = 3", "agent.max_turn", ["= 3", "did you mean 'agent.max_turns'"]),
    ("[agnt]\nmodel = 'x'", "agnt", ["did you mean 'agent'"]),
    ("[agent]\nmax_turns = 'many'", "agent.max_turns", ['"many"', "Expected `int`"]),
    ("[agent]\nmax_turns = 0", "agent.max_turns", ["= 0", ">= 1"]),
    ("[agent]\nmax_cost_usd = -1.0", "agent.max_cost_usd", ["-1.0", "> 0"]),
    ("repositories = ['ok/repo', 'not-a-repo']", "repositories[1]", ["OWNER/NAME"]),
    ("repositories = 'a/b'", "repositories", ['"a/b"', "Expected `array`"]),
    ("[cleanup]\npolicy = 'nuke'", "cleanup.policy", ["'delete', 'keep', 'archive'"]),
    ("[agent]\npermission_mode = 'yolo'", "agent.permission_mode", ["'bypassPermissions'"]),
    ("[labels]\nblocked = [1]", "labels.blocked[0]", ["= 1", "Expected `str`"]),
    ("[github]\ntoken = 5", "github.token", ["***", "Expected `str`"]),
    (
        "[agent]\nenv_passthrough = ['PATH', 'GH_TOKEN']",
        "agent.env_passthrough[1]",
        ["GitHub token is never passed"],
    ),
    ("[agent]\nenv_passthrough = ['github_token']", "agent.env_passthrough[0]", ["never"]),
    ("[agent]\nwatchdog_patterns = ['(']", "agent.watchdog_patterns[0]", ["regular expression"]),
    ("[polling]\nbogus = 1", "polling.bogus", ["expected one of: interval_seconds"]),
    ("[timeouts]\nagent_seconds = 'soon'", "timeouts.agent_seconds", ["Expected `float`"]),
    ("[git_identity]\nname = ''", "git_identity.name", ["length >= 1"]),
    ("[github]\ntokn = 'ghp_" + "s" * 36 + "'", "github.tokn", ["[REDACTED]", "did you mean"]),
    ("[github]\napi_url = 'ghp_" + "s" * 36 + "'\nbogus = 1", "github.bogus", ["= 1"]),
]


@pytest.mark.parametrize(("text", "key", "fragments"), TOML_ERRORS)
def test_errors_name_key_value_and_expectation(
    tmp_path: Path, text: str, key: str, fragments: list[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key
    message = str(caught.value)
    assert "ssssssss" not in message
    assert message.startswith(str(path))
    assert key in message
    for fragment in fragments:
        assert fragment in message


def test_a_list_of_repositories_is_a_whole_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("repositories = ['octo/hello']\n")
    config, found = load_config(path)
    assert found == path
    assert config.repositories == ["octo/hello"]
    assert config.labels.ready == "ready"
    assert config.agent.argv == ["claude"]
    assert config.cleanup.policy == "delete"


def test_empty_sections_are_allowed_in_toml_and_yaml(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[labels]\n[agent]\n")
    assert load_config(toml)[0] == Config()
    yaml = tmp_path / "c.yaml"
    yaml.write_text("repositories: [a/b]\nlabels:\nagent:\n  max_turns: 7\n")
    config = load_config(yaml)[0]
    assert config.agent.max_turns == 7
    assert config.labels == Config().labels


def test_yaml_errors_use_the_same_key_paths(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("agent:\n  modle: opus\n")
    with pytest.raises(ConfigError, match=r"did you mean 'agent.model'"):
        load_config(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_invalid_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("repositories = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigNotFoundError) as caught:
        load_config(tmp_path / "missing.toml")
    assert caught.value.path.endswith("missing.toml")


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CGR_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    # Nothing anywhere (and /etc/cgr does not exist on a test machine): built-in defaults.
    if not Path("/etc/cgr/config.toml").exists():
        assert load_config()[1] is None
    user = tmp_path / "xdg" / "cgr" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("repositories = ['from/xdg']\n")
    assert load_config()[0].repositories == ["from/xdg"]
    env_file = tmp_path / "env.toml"
    env_file.write_text("repositories = ['from/env']\n")
    monkeypatch.setenv("CGR_CONFIG", str(env_file))
    assert load_config()[0].repositories == ["from/env"]
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("repositories = ['from/flag']\n")
    assert load_config(explicit)[0].repositories == ["from/flag"]
    monkeypatch.setenv("CGR_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigNotFoundError):
        load_config()


def test_token_is_a_secret_everywhere() -> None:
    config = parse_config({"github": {"token": "ghp_" + "a" * 36}})
    assert isinstance(config.github.token, Secret)
    assert config.github.token.reveal() == "ghp_" + "a" * 36
    for shown in (repr(config), str(config.github), render_config(config)):
        assert "ghp_" not in shown


def test_token_falls_back_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CGR_GITHUB_TOKEN", "from-env-token")
    token = Config().github.resolved_token()
    assert token is not None
    assert token.reveal() == "from-env-token"


def test_rendered_config_is_valid_toml_that_loads_back(tmp_path: Path) -> None:
    import tomllib

    config = parse_config(
        {"repositories": ["a/b"], "agent": {"command": ["python3", "x.py"], "model": "opus"}}
    )
    data = tomllib.loads(render_config(config))
    assert parse_config(data) == config


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text("repositories = ['a/b']\n[github]\ntoken = 'ghp_" + "z" * 36 + "'\n")
    assert main(["config", "check", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert 'repositories = ["a/b"]' in out
    assert 'token = "***"' in out
    assert "zzzz" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent]\nmax_turns = 'x'\n")
    assert main(["config", "check", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "agent.max_turns" in err
    # A --config that names no file: 3, "not found" (the README's exit code table).
    assert main(["config", "check", "--config", str(tmp_path / "nope.toml")]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_repositories_read_at_once_reach_discovery() -> None:
    from cgr_cli.schedule._github import discovery_config

    assert discovery_config(parse_config({}), "bot").max_concurrent_repos == 32
    tuned = parse_config({"polling": {"max_concurrent_repos": 5}})
    assert discovery_config(tuned, "bot").max_concurrent_repos == 5
    with pytest.raises(ConfigError, match="max_concurrent_repos"):
        parse_config({"polling": {"max_concurrent_repos": 0}})
