"""The HTTP side: a threading server, request parsing, auth, rate limits, ETags, faults.

Routes (``_routes.py``) are plain functions ``(App, Request) -> Reply``; everything
GitHub does around them (authentication, primary rate limit, conditional requests,
pagination links, fault injection, the request log) happens here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from cgr_discovery.testing import _git
from cgr_discovery.testing._faults import (
    PRIMARY_DOCS,
    SECONDARY_DOCS,
    SECONDARY_RATE_LIMIT_MESSAGE,
    Fault,
    Faults,
    RateLimits,
    RequestRecord,
)
from cgr_discovery.testing._model import Model
from cgr_discovery.testing._render import DOCS, Renderer

JSON_TYPE = "application/json; charset=utf-8"
# Smart-HTTP paths, with or without ".git" after the repository name (GitHub takes both).
_GIT_PATH = re.compile(
    r"^/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?"
    r"(?P<rest>/(?:info/refs|git-upload-pack|git-receive-pack))$"
)
# Pushes over 1 MiB arrive chunked; a cap keeps a runaway client from filling memory.
_MAX_BODY = 512 * 1024 * 1024


class HTTPError(Exception):
    """Raised by a route to answer with GitHub's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        documentation_url: str = DOCS,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.payload: dict[str, Any] = {"message": message}
        if errors is not None:
            self.payload["errors"] = errors
        self.payload["documentation_url"] = documentation_url
        self.payload["status"] = str(status)


def not_found() -> HTTPError:
    return HTTPError(404, "Not Found")


def validation_failed(*errors: dict[str, Any]) -> HTTPError:
    # GitHub leaves out a `value` it has not got rather than sending null.
    cleaned = [{k: v for k, v in error.items() if v is not None} for error in errors]
    return HTTPError(422, "Validation Failed", errors=cleaned)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    login: str = ""

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise HTTPError(400, "Problems parsing JSON") from None

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise HTTPError(422, "Invalid request.\n\nThe request body must be a JSON object.")
        return data


@dataclass
class Reply:
    status: int
    data: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[["App", Request], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    resource: str | None
    # "token": a user's or an installation's token; "jwt": a GitHub App's JWT.
    auth: str = "token"


@dataclass(kw_only=True)
class AppRecord:
    """A GitHub App known to the simulator: its id, slug and the public key of its JWTs."""

    id: int
    slug: str
    public_key: Any = field(repr=False)

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"


@dataclass(kw_only=True)
class Installation:
    id: int
    app_id: int
    account: str
    repos: list[str]
    # What the installation grants (None: everything cgr needs, APP_PERMISSIONS).
    permissions: dict[str, str] | None = None


class App:
    """Everything a request handler thread needs; one per simulator."""

    def __init__(
        self,
        *,
        model: Model,
        git_root: Path,
        tokens: dict[str, str],
        routes: list[Route],
    ) -> None:
        self.model = model
        self.git_root = git_root
        self.tokens = tokens
        self.routes = routes
        self.faults = Faults()
        self.rate_limits = RateLimits()
        self.renderer = Renderer(model, "http://127.0.0.1")
        self.log: list[RequestRecord] = []
        self.log_lock = threading.Lock()
        self.crashes: list[str] = []
        self._request_ids = 0
        self.apps: dict[int, AppRecord] = {}
        self.installations: dict[int, Installation] = {}
        # Installation tokens: which installation each one was minted for, and when it
        # expires (epoch seconds, the simulator's clock); an expired one is refused (401).
        self.installation_tokens: dict[str, int] = {}
        self.token_expiry: dict[str, float] = {}
        self.installation_token_seconds = 3600.0

    def authenticate_jwt(self, headers: dict[str, str]) -> int | None:
        """The id of the GitHub App whose RS256 JWT signs the request, or None.

        Checked like GitHub: signed with the app's key, ``iss`` the app id, not expired,
        issued at most 10 minutes before it expires (clock: the simulator's).
        """
        import jwt  # PyJWT with cryptography: cgr-discovery's own dependency

        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            return None
        try:
            claims = jwt.decode(token.strip(), options={"verify_signature": False})
            app = self.apps.get(int(str(claims.get("iss"))))
            if app is None:
                return None
            claims = jwt.decode(
                token.strip(),
                app.public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False},
            )
        except (jwt.PyJWTError, TypeError, ValueError):
            return None
        now = self.model.now()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int) or not isinstance(iat, int):
            return None
        if exp < now or iat > now + 60 or exp - iat > 660:
            return None
        return app.id

    def set_base_url(self, url: str) -> None:
        self.renderer.api = self.renderer.web = url

    # -- the pieces of one request ---------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        with self.log_lock:
            self.log.append(record)

    def authenticate(self, headers: dict[str, str]) -> str | None:
        """The login a request's token belongs to, or None."""
        value = headers.get("authorization", "")
        scheme, _, credential = value.strip().partition(" ")
        scheme = scheme.lower()
        token: str | None = None
        if scheme in ("token", "bearer"):
            token = credential.strip()
        elif scheme == "basic":
            # git sends Basic with any user name and the token as password; the REST API
            # accepts the same.
            try:
                decoded = base64.b64decode(credential.strip(), validate=True).decode()
            except ValueError:
                return None
            token = decoded.partition(":")[2]
        if not token:
            return None
        expiry = self.token_expiry.get(token)
        if expiry is not None and self.model.clock() >= expiry:
            return None  # GitHub answers 401 Bad credentials to an expired token
        return self.tokens.get(token)

    def installation_of(self, headers: dict[str, str]) -> Installation | None:
        """The installation whose token a request carries, or None."""
        value = headers.get("authorization", "").strip()
        scheme, _, credential = value.partition(" ")
        token = credential.strip()
        if scheme.lower() == "basic":
            try:
                token = base64.b64decode(token, validate=True).decode().partition(":")[2]
            except ValueError:
                return None
        ident = self.installation_tokens.get(token)
        return None if ident is None else self.installations.get(ident)

    def link_header(self, req: Request, page: int, last: int) -> str:
        links = []

        def url(number: int) -> str:
            query = {k: v[0] for k, v in req.query.items()}
            query["page"] = str(number)
            return f"<{self.renderer.api}{req.path}?{urlencode(query)}>"

        if page > 1:
            links.append(f'{url(page - 1)}; rel="prev"')
        if page < last:
            links.append(f'{url(page + 1)}; rel="next"')
            links.append(f'{url(last)}; rel="last"')
        if page > 1:
            links.append(f'{url(1)}; rel="first"')
        return ", ".join(links)

    def paginate(self, req: Request, items: list[Any]) -> Reply:
        """Slice ``items`` by ``per_page`` (default 30, max 100) and ``page``, with Link."""
        per_page = _int_arg(req, "per_page", 30)
        per_page = min(max(per_page, 1), 100)
        page = max(_int_arg(req, "page", 1), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        reply = Reply(200, chunk)
        link = self.link_header(req, page, last)
        if link:
            reply.headers.append(("Link", link))
        return reply

    def next_request_id(self) -> str:
        with self.log_lock:
            self._request_ids += 1
            return f"C0DE:{self._request_ids:04X}:{self._request_ids:06X}:{self._request_ids:07X}"


def _int_arg(req: Request, name: str, default: int) -> int:
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPError(
            422, f"Invalid request.\n\nFor '{name}', {raw!r} is not an integer."
        ) from None


def _fault_reply(fault: Fault) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers: list[tuple[str, str]] = []
    if fault.retry_after is not None:
        headers.append(("retry-after", str(fault.retry_after)))
    if fault.status == 502:
        # GitHub's front end answers 502 with an HTML page, not JSON: clients must cope.
        body = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
        return 502, body, [("Content-Type", "text/html"), *headers]
    if fault.status in (403, 429):
        payload = {"message": SECONDARY_RATE_LIMIT_MESSAGE, "documentation_url": SECONDARY_DOCS}
    elif fault.status == 503:
        payload = {"message": "Service Unavailable", "documentation_url": DOCS}
    else:
        payload = {"message": "Server Error", "documentation_url": DOCS}
    body = json.dumps(payload).encode()
    return fault.status, body, [("Content-Type", JSON_TYPE), *headers]


def _etag(body: bytes) -> str:
    return 'W/"' + hashlib.sha256(body).hexdigest()[:40] + '"'


def _etag_matches(if_none_match: str, etag: str) -> bool:
    def strip(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    return any(strip(tag) == strip(etag) or tag.strip() == "*" for tag in if_none_match.split(","))


class _Server(ThreadingHTTPServer):
    """A threading server that can shut down every open keep-alive connection.

    Handler threads are daemon threads so a forgotten simulator never keeps the
    interpreter alive, but ``close()`` still shuts their sockets down and joins them so a
    test ends with no thread or socket left (pytest turns a ResourceWarning into an error).
    """

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a client polling dozens of repositories
    # at once would see refused connections and 1 s connect retries, unlike GitHub.
    request_queue_size = 128

    def __init__(self, app: App, port: int) -> None:
        self.app = app
        self._conns: dict[threading.Thread, socket.socket] = {}
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"github-simulator-{client_address[1]}",
            daemon=True,
        )
        with self._conns_lock:
            self._conns[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its keep-alive connection (a process exiting, a reset) is
        normal traffic, not a server error: no traceback on stderr. Anything else is."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self, timeout: float = 10.0) -> None:
        with self._conns_lock:
            conns = list(self._conns.items())
        for _, sock in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)
        for thread, _ in conns:
            thread.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body of a small answer
    # waits for the client's delayed ACK (40 ms per request on Linux).
    disable_nagle_algorithm = True
    server_version = "GitHub.com"
    sys_version = ""
    server: _Server
    # Set per request by a "drop_after" fault (one handler object serves one connection,
    # one request at a time).
    _drop_reply = False

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header follows the simulator's clock (advance_clock), so a client that
        # reads GitHub's time from it agrees with x-ratelimit-reset and the timestamps.
        return super().date_time_string(
            self.server.app.model.now() if timestamp is None else timestamp
        )

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the simulator's request log replaces the stderr access log."""

    def do_GET(self) -> None:
        self._dispatch_safely()

    def do_POST(self) -> None:
        self._dispatch_safely()

    def do_PATCH(self) -> None:
        self._dispatch_safely()

    def do_PUT(self) -> None:
        self._dispatch_safely()

    def do_DELETE(self) -> None:
        self._dispatch_safely()

    def _dispatch_safely(self) -> None:
        try:
            self._dispatch()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to answer
        except Exception:
            # A simulator bug outside a route (git bridge, body parsing): remember it for
            # close() and answer 500 rather than leaving the client hanging.
            self.server.app.crashes.append(f"{self.command} {self.path}:\n{traceback.format_exc()}")
            self.close_connection = True
            with contextlib.suppress(OSError):
                body = json.dumps({"message": "Server Error", "documentation_url": DOCS})
                self._send(500, body.encode(), [("Content-Type", JSON_TYPE)])

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # BaseHTTPRequestHandler leaves chunked decoding to us; git uses it for
            # pushes larger than http.postBuffer (1 MiB).
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                try:
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    raise HTTPError(400, "Malformed chunked request body") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > _MAX_BODY:
                    raise HTTPError(413, "Request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)  # the CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise HTTPError(413, "Request body too large")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        # Callers record the request in the log *before* sending, so a test that has its
        # response can rely on the log entry being there.
        if self._drop_reply:
            # The request was applied; its answer is lost. No status line at all: the
            # client sees the connection close, exactly as with a drop before applying.
            self._drop_reply = False
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304 and self.command != "HEAD":
            self.wfile.write(body)

    def _dispatch(self) -> None:
        app = self.server.app
        split = urlsplit(self.path)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        headers = {name.lower(): value for name, value in self.headers.items()}
        conditional = "if-none-match" in headers
        flat_query = {k: v[0] for k, v in query.items()}

        inst = app.installation_of(headers)

        def record(status: int | None, counted: bool, resource: str | None, **kw: Any) -> None:
            kw.setdefault("installation", inst.id if inst is not None else None)
            if self._drop_reply:
                kw = {**kw, "fault": "drop_after", "applied_status": status}
                status = None
            app.record(
                RequestRecord(
                    method=self.command,
                    path=unquote(path),
                    query=flat_query,
                    status=status,
                    conditional=conditional,
                    counted=counted,
                    resource=resource,
                    **kw,
                )
            )

        try:
            body = self._read_body()
        except HTTPError as exc:
            self.close_connection = True
            record(exc.status, False, None)
            self._send(exc.status, json.dumps(exc.payload).encode(), [("Content-Type", JSON_TYPE)])
            return

        delay, fault = app.faults.take(self.command, path)
        if delay:
            app.faults.closing.wait(delay)
        # Apply the request as usual; _send then drops the connection instead of answering.
        self._drop_reply = fault is not None and fault.kind == "drop_after"
        if fault is not None and fault.kind == "drop":
            # No status line at all: the client sees the connection close mid-request.
            record(None, False, None, fault="drop")
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None and fault.kind == "error":
            status, payload, extra = _fault_reply(fault)
            record(status, False, None, fault="error")
            self._send(status, payload, [*extra, *self._common_headers(app, "core")])
            return

        git = _GIT_PATH.match(path)
        if git is not None:
            self._git(app, git, query=split.query, headers=headers, body=body, record=record)
            return
        self._api(app, path, query=query, headers=headers, body=body, record=record)

    def _common_headers(self, app: App, resource: str | None) -> list[tuple[str, str]]:
        headers = [
            ("X-GitHub-Media-Type", "github.v3; format=json"),
            ("X-GitHub-Api-Version-Selected", "2022-11-28"),
            ("X-GitHub-Request-Id", app.next_request_id()),
        ]
        if resource is not None:
            limits = app.rate_limits.snapshot(resource, app.model.now())
            headers += [
                ("x-ratelimit-limit", str(limits["limit"])),
                ("x-ratelimit-remaining", str(limits["remaining"])),
                ("x-ratelimit-reset", str(limits["reset"])),
                ("x-ratelimit-used", str(limits["used"])),
                ("x-ratelimit-resource", resource),
            ]
        return headers

    def _api(
        self,
        app: App,
        path: str,
        *,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        record: Callable[..., None],
    ) -> None:
        route, params = self._route(app, path)
        resource = route.resource if route is not None else "core"
        header_resource = resource or "core"
        if route is not None and route.auth == "jwt":
            app_id = app.authenticate_jwt(headers)
            login = None if app_id is None else f"app/{app_id}"
            if login is None:
                exc = HTTPError(401, "A JSON web token could not be decoded")
                record(401, False, None)
                self._send(401, json.dumps(exc.payload).encode(), [("Content-Type", JSON_TYPE)])
                return
        else:
            login = app.authenticate(headers)
        if login is not None and self._refused_outside_installation(app, headers, params, record):
            return
        if login is None:
            sent = headers.get("authorization", "").strip()
            exc = HTTPError(401, "Bad credentials" if sent else "Requires authentication")
            record(401, False, resource)
            self._send(
                401,
                json.dumps(exc.payload).encode(),
                [("Content-Type", JSON_TYPE), *self._common_headers(app, header_resource)],
            )
            return
        now = app.model.now()
        if resource is not None and app.rate_limits.snapshot(resource, now)["remaining"] == 0:
            exc = HTTPError(
                403,
                "API rate limit exceeded for user ID "
                f"{app.model.user(login).id}. If you reach out to GitHub Support for help, "
                "please include the request ID "
                f"{app.next_request_id()} and timestamp {now}.",
                documentation_url=PRIMARY_DOCS,
            )
            record(403, False, resource)
            self._send(
                403,
                json.dumps(exc.payload).encode(),
                [("Content-Type", JSON_TYPE), *self._common_headers(app, resource)],
            )
            return
        req = Request(
            method=self.command,
            path=path,
            query=query,
            headers=headers,
            body=body,
            params=params,
            login=login,
        )
        try:
            with app.model.lock:
                reply = route.handler(app, req) if route is not None else _no_route()
            payload = json.dumps(reply.data).encode() if reply.data is not None else b""
        except HTTPError as exc:
            reply = Reply(exc.status, exc.payload)
            payload = json.dumps(exc.payload).encode()
        except Exception:  # a simulator bug: answer 500 and make close() raise it
            app.crashes.append(f"{self.command} {path}:\n{traceback.format_exc()}")
            reply = Reply(500, {"message": "Server Error", "documentation_url": DOCS})
            payload = json.dumps(reply.data).encode()
        status = reply.status
        extra = list(reply.headers)
        if self.command == "GET" and status == 200:
            etag = _etag(payload)
            extra.append(("ETag", etag))
            if conditional_match(headers, etag):
                # A 304 costs nothing on GitHub: that is the whole point of ETags.
                record(304, False, resource)
                self._send(304, b"", [*extra, *self._common_headers(app, header_resource)])
                return
        counted = resource is not None and app.rate_limits.consume(resource, now)
        extra += [("Content-Type", JSON_TYPE)] if payload else []
        extra.append(("Cache-Control", "private, max-age=60, s-maxage=60"))
        extra.append(("Vary", "Accept, Authorization, Cookie, X-GitHub-OTP"))
        record(status, counted, resource)
        self._send(status, payload, [*extra, *self._common_headers(app, header_resource)])

    def _refused_outside_installation(
        self, app: App, headers: dict[str, str], params: dict[str, str], record: Callable[..., None]
    ) -> bool:
        """Answer (and return True) when an installation token is used on a repository
        outside its installation and GitHub would refuse it."""
        inst = app.installation_of(headers)
        if inst is None or "owner" not in params or "repo" not in params:
            return False
        refusal = _outside_installation(app, inst, params, self.command)
        if refusal is None:
            return False
        record(refusal.status, False, None)
        self._send(refusal.status, json.dumps(refusal.payload).encode(),
                   [("Content-Type", JSON_TYPE)])  # fmt: skip
        return True

    def _route(self, app: App, path: str) -> tuple[Route | None, dict[str, str]]:
        # A known path with an unsupported method is a 404 too: GitHub never sends 405.
        for route in app.routes:
            match = route.pattern.fullmatch(path)
            if match is not None and route.method == self.command:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
        return None, {}

    def _git(
        self,
        app: App,
        match: re.Match[str],
        *,
        query: str,
        headers: dict[str, str],
        body: bytes,
        record: Callable[..., None],
    ) -> None:
        login = app.authenticate(headers)
        if login is None:
            # git retries with credentials only after a 401 carrying this challenge.
            record(401, False, None)
            self._send(
                401,
                b"Invalid username or token.\n",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Basic realm="GitHub"')],
            )
            return
        owner, name = match["owner"], match["repo"]
        inst = app.installation_of(headers)
        with app.model.lock:
            repo = app.model.find_repo(owner, name)
            role = app.model.role(repo, login) if repo is not None else None
            git_dir = repo.git_dir if repo is not None else None
            if repo is not None and inst is not None and not _installed_on(inst, repo.full_name):
                # An installation token reaches only its installation's repositories.
                role = None
        if repo is None or git_dir is None or (repo.private and role is None):
            record(404, False, None)
            self._send(404, b"Repository not found.\n", [("Content-Type", "text/plain")])
            return
        pushing = match["rest"].endswith("/git-receive-pack") or "git-receive-pack" in query
        if pushing and role not in ("admin", "maintain", "write"):
            message = f"Permission to {repo.full_name}.git denied to {login}.\n".encode()
            record(403, False, None)
            self._send(403, message, [("Content-Type", "text/plain")])
            return
        before = _git.heads(git_dir) if pushing and self.command == "POST" else None
        result = _git.http_backend(
            app.git_root,
            method=self.command,
            path_info=f"/{git_dir.parent.name}/{git_dir.name}{match['rest']}",
            query=query,
            content_type=headers.get("content-type"),
            body=body,
            remote_user=login,
            git_protocol=headers.get("git-protocol"),
            content_encoding=headers.get("content-encoding"),
        )
        if before is not None and result.status == 200:
            after = _git.heads(git_dir)
            with app.model.lock:
                _after_push(app.model, owner, name, before, after)
        record(result.status, False, None)
        self._send(result.status, result.body, result.headers)


def _installed_on(inst: Installation, full_name: str) -> bool:
    return full_name.lower() in {r.lower() for r in inst.repos}


def _outside_installation(
    app: App, inst: Installation, params: dict[str, str], method: str
) -> HTTPError | None:
    """GitHub's answer to an installation token used on a repository outside its
    installation: a private one does not exist for it; a public one may be read only."""
    with app.model.lock:
        repo = app.model.find_repo(params["owner"], params["repo"])
        if repo is None or _installed_on(inst, repo.full_name):
            return None
        if repo.private:
            return not_found()
    return None if method == "GET" else HTTPError(403, "Resource not accessible by integration")


def _no_route() -> Reply:
    return Reply(404, not_found().payload)


def conditional_match(headers: dict[str, str], etag: str) -> bool:
    value = headers.get("if-none-match")
    return value is not None and _etag_matches(value, etag)


def _after_push(
    model: Model, owner: str, name: str, before: dict[str, str], after: dict[str, str]
) -> None:
    """A push moves branches: bump ``pushed_at`` and the open PRs whose head moved."""
    repo = model.find_repo(owner, name)
    if repo is None or before == after:
        return
    now = model.now()
    repo.pushed_at = now
    moved = {branch for branch in after if before.get(branch) != after[branch]}
    for issue in repo.issues.values():
        if issue.pull is not None and issue.state == "open" and issue.pull.head_ref in moved:
            issue.pull.head_sha = after[issue.pull.head_ref]
            issue.updated_at = now


def start_server(app: App, port: int = 0) -> tuple[_Server, threading.Thread]:
    server = _Server(app, port)
    host, port = server.server_address[:2]
    app.set_base_url(f"http://{host!s}:{port}")
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="github-simulator",
        daemon=True,
    )
    thread.start()
    return server, thread


def stop_server(server: _Server, thread: threading.Thread) -> None:
    server.app.faults.closing.set()
    server.shutdown()
    server.close_connections()
    server.server_close()
    thread.join()
