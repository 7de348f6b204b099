"""A real HTTP server on 127.0.0.1 for tests that fake a remote API (the OpenAI-compatible one)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JSONHandler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
        """One complete response; ``headers`` may override the JSON Content-Type."""
        self.send_response(code)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free port in a daemon thread; yields the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def fast_openai_retries(monkeypatch) -> None:
    """The openai client backs off 0.5 s, 1 s, 2 s... between retries (jittered). Fault tests
    check that it retries, how often, and what error is left: 10 ms of backoff shows the
    same, and a Retry-After the server sends is still honoured as sent."""
    try:
        import openai._base_client
    except ImportError:  # no openai client: the tests that need it skip or fail on their own
        return
    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01)
