"""Fixtures for the GitHub simulator's own tests.

``api`` is an httpx client whose every response is validated against GitHub's official
OpenAPI description (npm package ``@octokit/openapi``, located through the environment
variable ``CGR_GITHUB_OPENAPI``, which ``nox -s test-discovery`` sets). Without that
variable these tests fail with instructions; they never skip.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

from cgr_discovery.testing import GitHubSimulator

REPO = "acme/widgets"
OPENAPI_ENV = "CGR_GITHUB_OPENAPI"


def _allow_null_in_nullable_enums(node: Any) -> None:
    """The spec marks ~70 enums ``nullable: true`` without listing null (e.g. an issue's
    ``state_reason``); OpenAPI 3.0 validators then reject the null GitHub really sends."""
    if isinstance(node, dict):
        enum = node.get("enum")
        if node.get("nullable") is True and isinstance(enum, list) and None not in enum:
            enum.append(None)
        for value in node.values():
            _allow_null_in_nullable_enums(value)
    elif isinstance(node, list):
        for value in node:
            _allow_null_in_nullable_enums(value)


@dataclass
class Spec:
    document: dict[str, Any]
    openapi: OpenAPI
    templates: list[tuple[str, re.Pattern[str]]]
    checked: set[tuple[str, str, int]] = field(default_factory=set)

    def template(self, path: str) -> str | None:
        """The spec's path template a concrete path belongs to (literal paths win)."""
        matches = [t for t, pattern in self.templates if pattern.fullmatch(path)]
        matches.sort(key=lambda t: t.count("{"))
        return matches[0] if matches else None

    def check_schema(self, data: Any, schema: str) -> None:
        """Validate ``data`` against ``#/components/schemas/<schema>``."""
        root = {"$ref": f"#/components/schemas/{schema}", "components": self.document["components"]}
        errors = [f"{list(e.path)}: {e.message}" for e in OAS30Validator(root).iter_errors(data)]
        assert not errors, f"{schema}: {errors[:5]}"

    def check_response(self, response: httpx.Response) -> None:
        """Validate a real response against the operation and status it belongs to."""
        response.read()
        # The raw path: a label name with an encoded "/" is still one path segment.
        path = urlsplit(str(response.request.url)).path
        template = self.template(path)
        assert template is not None, f"{path} is not in GitHub's API"
        method = response.request.method
        self.checked.add((method, template, response.status_code))
        if response.status_code == 304:
            assert response.content == b""
            return
        try:
            self.openapi.validate_response(_Request(response.request), _Response(response))
        except Exception as exc:
            cause = exc.__cause__
            details = [
                f"{list(e.path)}: {e.message[-300:]}" for e in getattr(cause, "schema_errors", [])
            ]
            pytest.fail(
                f"{method} {path} -> {response.status_code} does not "
                f"conform to GitHub's OpenAPI description: {type(exc).__name__} "
                f"{type(cause).__name__} {details[:5] or str(exc)[:500]}"
            )


class _Request:
    """openapi-core's request protocol over an httpx request."""

    def __init__(self, request: httpx.Request) -> None:
        url = urlsplit(str(request.url))
        # The spec's server is api.github.com; only the path and method matter here.
        self.host_url = "https://api.github.com"
        self.path = url.path
        self.method = request.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qs(url.query)),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "application/json")


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.data = response.content
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(dict(response.headers))


@pytest.fixture(scope="session")
def spec() -> Spec:
    location = os.environ.get(OPENAPI_ENV)
    if not location:
        pytest.fail(
            f"{OPENAPI_ENV} is not set: the simulator's conformance tests need GitHub's "
            "OpenAPI description (npm package @octokit/openapi, "
            "generated/api.github.com.json). Run them with `nox -s test-discovery`, which "
            f"installs it and sets {OPENAPI_ENV}."
        )
    path = Path(location)
    if not path.is_file():
        pytest.fail(f"{OPENAPI_ENV}={location} does not exist; run `nox -s test-discovery`")
    document = json.loads(path.read_text())
    _allow_null_in_nullable_enums(document)
    # Whole-spec validation of a 13 MB document takes minutes and proves nothing here.
    openapi = OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))
    templates = [
        (template, re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))))
        for template in document["paths"]
    ]
    return Spec(document=document, openapi=openapi, templates=templates)


@pytest.fixture
def gh(tmp_path: Path) -> Iterator[GitHubSimulator]:
    with GitHubSimulator(tmp_path / "github") as sim:
        sim.create_repo(REPO, labels=("ready",))
        yield sim


def _client(gh: GitHubSimulator, hooks: list[Callable[[httpx.Response], None]]) -> httpx.Client:
    headers = {"Authorization": f"token {gh.token}", "Accept": "application/vnd.github+json"}
    return httpx.Client(
        base_url=gh.url, headers=headers, timeout=30, event_hooks={"response": hooks}
    )


@pytest.fixture
def api(gh: GitHubSimulator, spec: Spec) -> Iterator[httpx.Client]:
    """A client for the simulator; every response is checked against the OpenAPI spec."""
    with _client(gh, [spec.check_response]) as client:
        yield client


@pytest.fixture
def raw_api(gh: GitHubSimulator) -> Iterator[httpx.Client]:
    """A client without the conformance hook, for answers outside the spec (faults)."""
    with _client(gh, []) as client:
        yield client
