"""The full pipeline against a real OpenAI-compatible server on 127.0.0.1:
llama-cpp-python's own ``llama_cpp.server`` serving the default model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from memorag import MemoRAG
from memorag.llm.openai_api import Agent
from memorag.models.registry import resolve_gguf
from memorag.testing.contracts import LLM_PREFIX_CHECKS, check_id

pytestmark = pytest.mark.e2e

DOC = (
    "The Varrow Island lighthouse was built in 1868 from grey granite quarried at Penmore. "
    "Its first keeper, Edda Quill, kept it from 1871 to 1903 and logged every passing ship in a green ledger. "
    "In 1904 the lamp was replaced by a Fresnel lens made in Paris. "
    "The island's only school was founded by the keeper's brother, Tobias Quill, in 1880. "
    "Fishing boats from Penmore still land their catch at the island's north harbour on Tuesdays. "
) * 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_gguf("default")), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--n_threads", str(os.cpu_count() or 2), "--model_alias", "qwen"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("llama_cpp.server exited during start-up")
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama_cpp.server did not start within 120 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_streaming_from_server(server_url):
    agent = Agent("qwen", "openai", {"base_url": server_url})
    pieces = list(agent.stream_chat([{"role": "user", "content": "Count from 1 to 5."}], max_new_tokens=20))
    assert len(pieces) > 1  # really streamed, not one blob
    assert "3" in "".join(pieces)


def test_generator_on_server(server_url, default_llm, embedder):
    # The session's memory model and embedder: only the generator is on the server.
    pipe = MemoRAG(default_llm, embedder, customized_gen_model=Agent("qwen", "openai", {"base_url": server_url}))
    pipe.memorize(DOC, progress=False)
    ans = pipe.ask("Who was the first keeper of the Varrow Island lighthouse?", max_new_tokens=24)
    assert "Edda" in ans.answer, ans.answer
    assert ans.clues is not None and ans.evidence


def test_memory_and_generator_on_server(server_url, tmp_path):
    pipe = MemoRAG(mem_model_name_or_path=f"openai:qwen@{server_url}", ret_hit=2)
    # One HTTP client serves both; the generator's twin has no prefix of its own.
    assert pipe.generator is not pipe.memory.llm and pipe.generator._client is pipe.memory.llm._client
    pipe.memorize(DOC, save_dir=tmp_path / "state", progress=False)
    streamed: list[str] = []
    ans = pipe.ask("Who founded the island's school?", max_new_tokens=24, on_token=streamed.append)
    assert "Tobias" in ans.answer, ans.answer
    assert "".join(streamed).strip() == ans.answer
    # The saved memory is the prefix text (JSON), never server state; it reloads and works.
    assert (tmp_path / "state" / "memory" / "prefix.json").is_file()
    again = MemoRAG.from_saved(tmp_path / "state")
    assert again.memory.recall("Who founded the school?")


@pytest.mark.parametrize("check", LLM_PREFIX_CHECKS, ids=check_id)
def test_openai_backend_passes_the_llm_prefix_contract(check, server_url, tmp_path):
    check(Agent("qwen", "openai", {"base_url": server_url}, context_window=4096), tmp_path)
