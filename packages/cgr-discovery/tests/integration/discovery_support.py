"""Constants shared by the integration tests (a plain module: tests/ is not a package)."""

from __future__ import annotations

from collections.abc import Callable

from cgr_discovery import GitHubClient, RetryPolicy

REPO = "acme/widgets"
BOT = "cgr-bot"

# Real waits would make fault tests take minutes: every wait is scaled down a thousandfold
# (a 60 s secondary-limit wait takes 60 ms) but still goes through the same code path.
FAST = RetryPolicy(scale=0.001, backoff_base=1.0, attempts=4)

ClientFactory = Callable[..., GitHubClient]


class Scripted:
    """A loopback HTTP server that answers from a script, for answers the simulator does
    not produce (a secondary limit without ``retry-after``, malformed payloads, redirects).

    ``routes`` maps a path (query ignored) to a list of ``(status, headers, body)``
    answers, used in order; the last one repeats.
    """

    def __init__(self, routes: dict[str, list[tuple[int, dict[str, str], bytes]]]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.routes = routes
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def answer(self) -> None:
                path = self.path.split("?", 1)[0]
                server.hits.append(f"{self.command} {path}")
                script = server.routes.get(path) or [(404, {}, b'{"message": "Not Found"}')]
                status, headers, body = script.pop(0) if len(script) > 1 else script[0]
                self.send_response(status)
                headers = {"content-type": "application/json; charset=utf-8", **headers}
                for name, value in headers.items():
                    self.send_header(name, value.replace("{url}", server.url))
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
