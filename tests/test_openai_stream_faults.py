"""More server faults for the OpenAI-compatible backend (tests/test_openai_faults.py has
the basics): Retry-After honoured and capped, persistent 429/503, malformed bodies, a
response cut short, and streams that are cut, stall, send garbage or never end. Each
case is retried or ends in one BackendError, and the test asserts how long it may take.
The server is real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest
from fakehttp import JSONHandler, fast_openai_retries, serving

from memorag.errors import BackendError

pytest.importorskip("openai")

from memorag.llm.openai_api import Agent  # noqa: E402

pytestmark = pytest.mark.unit


def _completion(text: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}]}).encode()


def _sse(text: str) -> bytes:
    return ("data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
            + "\n\n").encode()


class Handler(JSONHandler):
    protocol_version = "HTTP/1.1"
    hits: dict[str, int] = {}

    def log_message(self, *args):
        pass

    def handle(self):
        with contextlib.suppress(OSError):  # the client hung up first (timeout, stream it stopped reading)
            super().handle()

    def finish(self):
        with contextlib.suppress(OSError):
            super().finish()

    def do_POST(self):  # noqa: N802
        mode = self.path.strip("/").split("/")[0]
        Handler.hits[mode] = n = Handler.hits.get(mode, 0) + 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if mode == "retry_after":
            if n == 1:
                return self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "1"})
            return self._send(200, _completion("hello"))
        if mode == "rate_forever":  # asks for an hour: the client must not wait that long
            return self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "3600"})
        if mode == "unavailable":
            return self._send(503, b'{"error": {"message": "overloaded"}}')
        if mode == "badjson":
            return self._send(200, b"this is not json")
        if mode == "nochoices":
            return self._send(200, b"{}")
        if mode == "html":
            return self._send(200, b"<html><body>Proxy login</body></html>", {"Content-Type": "text/html"})
        if mode == "shortbody":  # promises 1000 bytes, sends 20, hangs up
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"id": "x", "choices')
            return self._hang_up()
        # streaming modes
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "cut_at_start":
            return self._hang_up()
        if mode == "endless":  # ignores max_tokens
            try:
                while True:
                    self._chunk(_sse("la "))
            except OSError:
                return None
        for piece in ["Hel", "lo"]:
            self._chunk(_sse(piece))
        if mode == "cut":
            return self._hang_up()
        if mode == "stall":
            time.sleep(4)
            return None
        if mode == "badsse":
            self._chunk(b"data: {not json\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        return None

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _hang_up(self) -> None:
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()



@pytest.fixture(scope="module")
def server():
    with serving(Handler) as url:
        yield url


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    fast_openai_retries(monkeypatch)


def agent(server: str, mode: str, *, timeout: float = 1.0, max_retries: int = 2) -> Agent:
    Handler.hits.pop(mode, None)
    return Agent("m", "openai", {"base_url": f"{server}/{mode}/v1", "api_key": "k"},
                 timeout=timeout, max_retries=max_retries)


MSG = [{"role": "user", "content": "hi"}]


def timed(fn):
    t = time.monotonic()
    try:
        return fn(), time.monotonic() - t
    except BackendError as exc:
        return exc, time.monotonic() - t


def test_retry_after_is_honoured(server):
    out, took = timed(lambda: agent(server, "retry_after").chat(MSG))
    assert out == "hello" and Handler.hits["retry_after"] == 2
    assert 0.9 <= took < 5  # waited the second the server asked for, not more


def test_an_hour_of_retry_after_is_not_waited(server):
    err, took = timed(lambda: agent(server, "rate_forever").chat(MSG))
    assert isinstance(err, BackendError) and "429" in str(err) and "3600 s" in str(err)
    assert took < 15  # the client waits out at most its limit (2 min in openai 3.x), never the hour


def test_persistent_503_is_one_error(server):
    err, took = timed(lambda: agent(server, "unavailable").chat(MSG))
    assert isinstance(err, BackendError) and "HTTP 503" in str(err)
    assert Handler.hits["unavailable"] == 3 and took < 15


@pytest.mark.parametrize("mode", ["badjson", "nochoices", "html"])
def test_malformed_bodies_are_one_error_not_a_traceback(server, mode):
    err, took = timed(lambda: agent(server, mode).chat(MSG))
    assert isinstance(err, BackendError) and "malformed response" in str(err), err
    assert took < 5


def test_body_cut_short_is_retried_then_one_error(server):
    err, took = timed(lambda: agent(server, "shortbody").chat(MSG))
    assert isinstance(err, BackendError) and "connection" in str(err)
    assert Handler.hits["shortbody"] == 3 and took < 15


def _stream(server: str, mode: str, pieces: list[str], **kw) -> None:
    for piece in agent(server, mode, **kw).stream_chat(MSG, max_new_tokens=kw.pop("n", 64)):
        pieces.append(piece)


@pytest.mark.parametrize("mode,expect", [("cut", "cut the answer stream after 5 characters"),
                                         ("stall", "cut the answer stream after 5 characters"),
                                         ("badsse", "malformed stream"),
                                         ("cut_at_start", "connection")])
def test_stream_faults_end_in_one_error(server, mode, expect):
    pieces: list[str] = []
    err, took = timed(lambda: _stream(server, mode, pieces))
    assert isinstance(err, BackendError) and expect in str(err), err
    assert "".join(pieces) == ("" if mode == "cut_at_start" else "Hello")
    assert took < 5  # the stall: one read timeout (1 s); nothing is retried after data arrived


def test_a_stream_that_never_ends_stops_at_max_tokens(server):
    pieces: list[str] = []
    out, took = timed(lambda: _stream(server, "endless", pieces))
    assert out is None and len(pieces) == 64 and took < 5
