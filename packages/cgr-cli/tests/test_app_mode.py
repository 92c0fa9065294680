"""GitHub App mode in the configuration, `cgr init` and `cgr doctor`; the webhook intake's
verdicts on single deliveries (a real store, real signatures, no daemon)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from cgr_cli import ConfigError, main, parse_config
from cgr_discovery.testing import app_key_pems
from webhookworld import SECRET, signature


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("app") / "app.pem"
    path.write_text(app_key_pems()[0])
    return path


def _app(pem: Path, **extra: Any) -> dict[str, Any]:
    return {"app_id": 1234, "private_key_file": str(pem), **extra}


def test_app_configuration_and_its_errors(pem: Path, tmp_path: Path) -> None:
    config = parse_config({"repositories": "installation", "github": _app(pem, installation_id=42)})
    assert config.repositories == ["*/*"]
    assert config.github.app_mode
    assert "PRIVATE KEY" in config.github.private_key().reveal()
    globbed = parse_config({"repositories": ["acme/*", "solo/one"], "github": _app(pem)})
    assert globbed.repositories == ["acme/*", "solo/one"]
    # No installation id: every installation of the App, on every account.
    everywhere = parse_config({"repositories": "installation", "github": _app(pem)})
    assert everywhere.github.installation_id is None
    cases: list[tuple[dict[str, Any], str]] = [
        ({"repositories": ["acme/*"]}, r"repositories\[0\] = 'acme/\*': a pattern needs a GitHub"),
        ({"github": {**_app(pem), "token": "ghp_x"}}, "token and github.app_id are both set"),
        ({"github": {"app_id": 1}}, "needs github.private_key_file"),
        ({"github": _app(tmp_path / "missing.pem")}, "cannot read it"),
        ({"github": {"installation_id": 3}}, "set github.app_id too"),
    ]
    (tmp_path / "not.pem").write_text("hello")
    cases.append(({"github": _app(tmp_path / "not.pem")}, "is not a PEM private key"))
    for data, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_config(data)


def test_patterns_match_the_installation_case_insensitively() -> None:
    from cgr_cli.run._github_auth import match_repositories

    available = ["Acme/Widgets", "acme/gears", "other/thing"]
    assert match_repositories(["acme/*", "solo/one"], available) == [
        "Acme/Widgets",
        "acme/gears",
        "solo/one",
    ]
    assert match_repositories(["*/*"], available) == available
    assert match_repositories(["acme/w*", "ACME/widgets"], available) == ["Acme/Widgets"]
    assert match_repositories(["nobody/*"], available) == []


def test_init_writes_an_app_configuration_that_loads(pem: Path, tmp_path: Path) -> None:
    from cgr_cli import load_config

    target = tmp_path / "cgr" / "config.toml"
    code = main(["init", "--config", str(target), "--app-id", "1234",
                 "--private-key-file", str(pem), "--installation-id", "42"])  # fmt: skip
    assert code == 0
    config, _ = load_config(target)
    assert config.github.app_mode
    assert config.github.installation_id == 42
    assert config.repositories == ["*/*"]
    text = target.read_text()
    assert 'repositories = "installation"' in text
    assert "Contents: read and write; Metadata: read" in text.replace("\n# ", " ")
    assert main(["init", "--config", str(tmp_path / "b.toml"), "--app-id", "1"]) == 1
    # Without an installation id: every installation of the App, on every account.
    every = tmp_path / "every.toml"
    assert main(["init", "--config", str(every), "--app-id", "1234",
                 "--private-key-file", str(pem)]) == 0  # fmt: skip
    config, _ = load_config(every)
    assert config.github.app_mode
    assert config.github.installation_id is None
    assert config.repositories == ["*/*"]
    assert "# installation_id = 12345678          # default: every installation of the App" in (
        every.read_text()
    )


def test_doctor_says_what_to_fix_when_the_key_does_not_sign(tmp_path: Path) -> None:
    from cgr_cli.ops._doctor import Check, DoctorOptions, _app_checks, missing_app_permissions

    fake = tmp_path / "fake.pem"
    fake.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    config = parse_config({"repositories": ["acme/widgets"], "github": _app(fake)})
    checks: list[Check] = []
    anyio.run(_app_checks, config, DoctorOptions(), checks.append)
    app, repos = checks
    assert app.status == "fail"
    assert "private key is invalid" in app.detail
    assert app.fix is not None
    assert "Private keys" in app.fix
    assert repos.status == "skip"
    full = {"issues": "write", "pull_requests": "write", "contents": "write", "metadata": "read"}
    assert missing_app_permissions(full) == []
    assert missing_app_permissions({**full, "contents": "read", "issues": "admin"}) == [
        "contents: write"
    ]
    assert missing_app_permissions({}) == [
        "issues: write", "pull_requests: write", "contents: write", "metadata: read",
    ]  # fmt: skip


def _delivery(event: str, payload: dict[str, Any], delivery: str) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature(body),
    }
    return headers, body


def test_intake_follows_patterns_and_hints_only_work(tmp_path: Path) -> None:
    from cgr_cli.config._model import Secret
    from cgr_cli.schedule._webhooks import WebhookIntake
    from cgr_store import SQLiteStore

    config = parse_config(
        {
            "repositories": ["acme/widgets"],
            "paths": {"database": str(tmp_path / "db.sqlite3")},
            "webhook": {"listen": "127.0.0.1:0", "secret": SECRET},
        }
    )
    woken: list[int] = []
    with SQLiteStore(tmp_path / "db.sqlite3") as store:
        intake = WebhookIntake(config=config, store=store, bot="cgr-bot", secret=Secret(SECRET),
                               wake=lambda: woken.append(1))  # fmt: skip
        intake._patterns = ["acme/g*"]  # as an App's `acme/g*` would be
        label = {"action": "labeled", "label": {"name": "ready"}, "issue": {"number": 1}}
        for repo, expected in (("ACME/widgets", "accepted"), ("acme/gears", "accepted"),
                               ("other/thing", "ignored")):  # fmt: skip
            payload = {**label, "repository": {"full_name": repo}}
            assert intake.receive(*_delivery("issues", payload, f"d-{repo}")) == (
                202, f"{expected}\n",
            )  # fmt: skip
        assert intake.hinted == {"acme/widgets", "acme/gears"}
        assert len(woken) == 2
        comment = {"id": 7, "body": "@cgr-bot use a dict here", "user": {"login": "alice"},
                   "author_association": "OWNER", "created_at": "2026-01-01T00:00:00Z",
                   "pull_request_url": "https://x.test/repos/acme/widgets/pulls/3"}  # fmt: skip
        review = {"action": "created", "comment": comment,
                  "repository": {"full_name": "other/thing"}}  # fmt: skip
        assert intake.receive(*_delivery("pull_request_review_comment", review, "r-0"))[1] == (
            "ignored\n"  # not followed
        )
        review["repository"] = {"full_name": "acme/widgets"}
        assert intake.receive(*_delivery("pull_request_review_comment", review, "r-1"))[1] == (
            "accepted\n"
        )
        assert len(woken) == 3
        # Another label, a comment without the mention, a closed issue: nothing to re-read.
        other = {**label, "label": {"name": "bug"}, "repository": {"full_name": "acme/widgets"}}
        comment = {"action": "created", "comment": {"body": "thanks @cgr-botx"},
                   "issue": {"number": 1}, "repository": {"full_name": "acme/widgets"}}  # fmt: skip
        closed = {"action": "closed", "issue": {"number": 1},
                  "repository": {"full_name": "acme/widgets"}}  # fmt: skip
        for n, (event, payload) in enumerate(
            (("issues", other), ("issue_comment", comment), ("issues", closed))
        ):
            assert intake.receive(*_delivery(event, payload, f"x-{n}"))[1] == "ignored\n"
        # The same delivery id again: a duplicate, whatever it carries.
        again = intake.receive(*_delivery("issues", {**label, "repository": {
            "full_name": "acme/widgets"}}, "d-ACME/widgets"))  # fmt: skip
        assert again == (202, "duplicate delivery: already handled\n")
        # An App's repositories changed: the next pass is a full one.
        assert not intake._reconcile_now
        payload = {"action": "added", "repositories_added": [{"full_name": "acme/new"}]}
        assert intake.receive(*_delivery("installation_repositories", payload, "i-1"))[0] == 202
        assert intake.reconcile_due()
        # Unsigned and malformed deliveries.
        headers, body = _delivery("issues", label, "u-1")
        del headers["X-Hub-Signature-256"]
        assert intake.receive(headers, body)[0] == 401
        headers, _ = _delivery("issues", label, "m-1")
        headers["X-Hub-Signature-256"] = signature(b"{not json")
        assert intake.receive(headers, b"{not json")[0] == 400
        # Signed, but a review comment without the fields GitHub always sends: 400.
        odd = {"action": "created", "comment": {"body": "@cgr-bot hi"},
               "repository": {"full_name": "acme/widgets"}}  # fmt: skip
        assert intake.receive(*_delivery("pull_request_review_comment", odd, "o-1"))[0] == 400
        assert len(woken) == 4


def test_the_app_key_and_the_webhook_secret_are_known_secrets(pem: Path, tmp_path: Path) -> None:
    from cgr_cli import Redactor
    from cgr_cli.run._secret_gate import SecretGate, known_secrets

    hook = tmp_path / "hook.secret"
    hook.write_text("hook-secret-value\n")
    config = parse_config(
        {
            "repositories": ["acme/widgets"],
            "github": _app(pem),
            "webhook": {"listen": "127.0.0.1:0", "secret_file": str(hook)},
        }
    )
    secrets = known_secrets(config, token="ghs_" + "x" * 36, agent_env={}, environ={})
    key = pem.read_text()
    assert secrets["the webhook secret"] == "hook-secret-value"
    assert secrets["the GitHub App's private key"] == key.strip()
    body_line = key.splitlines()[3]
    gate = SecretGate(secrets)
    assert gate.kinds(f"x {body_line} y") == ["the GitHub App's private key (line 4)"]
    assert gate.kinds("echo hook-secret-value") == ["the webhook secret"]
    redact = Redactor(secrets.values())
    assert redact(f"leaked {body_line} and hook-secret-value") == (
        "leaked [REDACTED] and [REDACTED]"
    )
