"""The Agent against a misbehaving local HTTP server: retried where it should be, one clear
error where not, never a hang. The server is real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import pytest
from fakehttp import JSONHandler, fast_openai_retries, serving

from memorag.errors import BackendError
from memorag.llm.openai_api import Agent, agent_from_spec

pytestmark = pytest.mark.unit  # no model: runs in `pytest -m unit`


def completion(text: str) -> bytes:
    return json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


class Handler(JSONHandler):
    hits: dict[str, int] = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):  # noqa: N802 (http.server's naming)
        mode = self.path.strip("/").split("/")[0]
        Handler.hits[mode] = Handler.hits.get(mode, 0) + 1
        n = Handler.hits[mode]
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        if mode == "rate" and n <= 2:  # 429 twice, then success
            self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0"})
        elif (mode == "flaky" and n == 1) or mode == "broken":  # flaky: one 500; broken: always
            self._send(500, b'{"error": {"message": "boom"}}')
        elif mode == "hang":
            time.sleep(3)
            self._send(200, completion("too late"))
        elif mode == "close":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
        elif mode == "unauth":
            self._send(401, b'{"error": {"message": "bad key"}}')
        elif mode == "bad":
            self._send(400, b'{"error": {"message": "max_tokens too large"}}')
        else:
            self._send(200, completion("hello"))



@pytest.fixture(scope="module")
def server():
    with serving(Handler) as url:
        yield url


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    fast_openai_retries(monkeypatch)


def agent(server: str, mode: str, **kw) -> Agent:
    return Agent("m", "openai", {"base_url": f"{server}/{mode}/v1", "api_key": "k"},
                 timeout=kw.pop("timeout", 5.0), max_retries=kw.pop("max_retries", 3), **kw)


def test_ok_and_original_generate(server):
    assert agent(server, "ok").generate("hi") == "hello"


def test_429_with_retry_after_is_retried(server):
    Handler.hits.pop("rate", None)
    assert agent(server, "rate").chat([{"role": "user", "content": "hi"}]) == "hello"
    assert Handler.hits["rate"] == 3


def test_500_is_retried_then_succeeds(server):
    Handler.hits.pop("flaky", None)
    assert agent(server, "flaky").generate("hi") == "hello"
    assert Handler.hits["flaky"] == 2


def test_persistent_500_gives_one_clear_error(server):
    Handler.hits.pop("broken", None)
    with pytest.raises(BackendError, match="HTTP 500 after all retries"):
        agent(server, "broken", max_retries=2).generate("hi")
    assert Handler.hits["broken"] == 3


@pytest.mark.parametrize("mode,message", [("unauth", "401"), ("bad", "400")])
def test_client_errors_are_not_retried(server, mode, message):
    Handler.hits.pop(mode, None)
    with pytest.raises(BackendError, match=message):
        agent(server, mode).generate("hi")
    assert Handler.hits[mode] == 1


def test_hang_times_out_without_hanging(server):
    t = time.monotonic()
    with pytest.raises(BackendError, match="timeout"):
        agent(server, "hang", timeout=0.5, max_retries=1).generate("hi")
    assert time.monotonic() - t < 10


def test_closed_connection_is_retried_then_reported(server):
    Handler.hits.pop("close", None)
    with pytest.raises(BackendError, match="connection"):
        agent(server, "close", max_retries=2).generate("hi")
    assert Handler.hits["close"] == 3


def test_unreachable_server_is_one_clear_error():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BackendError, match="Is the server running"):
        Agent("m", "openai", {"base_url": f"http://127.0.0.1:{port}/v1"}, max_retries=1, timeout=2).generate("hi")


def test_spec_strings(monkeypatch):
    a = agent_from_spec("openai:qwen@http://127.0.0.1:9/v1")
    assert (a.model, a.base_url, a.source) == ("qwen", "http://127.0.0.1:9/v1", "openai")
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    with pytest.raises(BackendError, match="DEEPSEEK_API_KEY"):
        agent_from_spec("deepseek:deepseek-chat")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test")
    d = agent_from_spec("deepseek:deepseek-chat")
    assert d.base_url.startswith("https://api.deepseek.com") and d.model == "deepseek-chat"
    with pytest.raises(BackendError, match="no model"):
        agent_from_spec("openai:@http://x/v1")
    with pytest.raises(BackendError, match="Unknown source"):
        Agent("m", "nope", {})
    with pytest.raises(BackendError, match="endpoint"):
        Agent("m", "azure", {"api_key": "k"})
