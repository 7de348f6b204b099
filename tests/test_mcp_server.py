"""`memorag mcp` as a real subprocess, driven over stdio by the official MCP client library.

The server runs on the fakes of memorag.testing, named by spec strings (tests/scriptedspecs.py,
``--mem-model scriptedspecs:llm``), as a user names any model: no real model is loaded."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from scriptedspecs import write_sources  # noqa: E402

pytestmark = pytest.mark.integration  # `memorag mcp` subprocesses

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
FAKES = ["--mem-model", "scriptedspecs:llm", "--ret-model", "scriptedspecs:embedder", "--chunk-tokens", "32"]
TOOLS = {"ask", "add_documents", "list_documents", "remove_document"}


def server(store: Path, *options: str, cwd: Path) -> StdioServerParameters:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    env.pop("MEMORAG_STORE", None)
    return StdioServerParameters(command=sys.executable, args=["-m", "memorag.cli", "mcp", "--store", str(store),
                                                               *options], env=env, cwd=str(cwd))


def with_session(params: StdioServerParameters, body: Callable[[Any], Awaitable[None]], errlog: Path) -> None:
    async def main() -> None:
        with open(errlog, "w") as err, anyio.fail_after(120):
            async with stdio_client(params, errlog=err) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                await body(session)

    anyio.run(main)


class Calls:
    """Tool calls that return (is_error, payload): the structured result, or the error's text."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def __call__(self, tool: str, /, **arguments: Any) -> tuple[bool, Any]:
        result = await self.session.call_tool(tool, arguments)
        is_error = bool(getattr(result, "is_error", getattr(result, "isError", False)))
        text = "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
        if is_error:
            return True, text
        structured = getattr(result, "structured_content", getattr(result, "structuredContent", None))
        return False, structured if structured is not None else json.loads(text)

    async def ok(self, tool: str, /, **arguments: Any) -> Any:
        is_error, payload = await self(tool, **arguments)
        assert not is_error, payload
        return payload

    async def error(self, tool: str, /, **arguments: Any) -> str:
        is_error, payload = await self(tool, **arguments)
        assert is_error, payload
        assert "\n" not in payload.strip() and "Traceback" not in payload, payload
        return payload


def test_tools_add_list_ask_remove_over_stdio(tmp_path):
    src = write_sources(tmp_path / "src")
    (tmp_path / "binary.txt").write_bytes(b"\x00\x01\x02 not text")
    store = tmp_path / "S"
    question = "Where did Anselm Rook hide the brass ledger?"

    async def body(session: Any) -> None:
        call = Calls(session)
        listed = await session.list_tools()
        assert {t.name for t in listed.tools} == TOOLS
        ask_tool = next(t for t in listed.tools if t.name == "ask")
        schema = getattr(ask_tool, "input_schema", None) or ask_tool.inputSchema
        assert schema["required"] == ["question"] and "top_k" in schema["properties"]

        added = await call.ok("add_documents", paths=[str(src)])
        assert sorted(added["added"]) == ["bakery.md", "harbour.txt"] and added["documents"] == 2
        assert added["skipped"] == [str(src / "notes.xyz")]
        again = await call.ok("add_documents", paths=[str(src / "bakery.md")])
        assert again["unchanged"] == ["bakery.md"] and again["added"] == []

        names = [d["name"] for d in (await call.ok("list_documents"))["documents"]]
        assert names == ["bakery.md", "harbour.txt"]

        ans = await call.ok("ask", question=question)
        assert ans["documents"][0]["name"] == "bakery.md" and "flour barrels" in ans["answer"]
        text = (store / "bakery.md" / "document.txt").read_text()
        cite = next(c for c in ans["citations"] if c["document"] == "bakery.md")
        assert "flour barrels" in text[cite["start"]:cite["end"]] == cite["text"]
        assert [c["n"] for c in ans["citations"]] == list(range(1, len(ans["citations"]) + 1))
        assert set(ans["marks"]) <= {c["n"] for c in ans["citations"]}
        one = await call.ok("ask", question=question, top_k=1, route_top=1)
        assert len(one["citations"]) == 1 and [d["name"] for d in one["documents"]] == ["bakery.md"]

        # Bad input: one clear message each, and the server goes on serving.
        assert "No memorized document named 'nope'" in await call.error("remove_document", name="nope")
        assert "Invalid document name" in await call.error("remove_document", name="../bakery.md")
        assert "File not found" in await call.error("add_documents", paths=[str(tmp_path / "missing.txt")])
        assert "binary" in await call.error("add_documents", paths=[str(tmp_path / "binary.txt")])
        assert "unsupported file type" in await call.error("add_documents", paths=[str(src / "notes.xyz")])
        assert "question" in await call.error("ask", question="   ")
        assert "top_k must be at least 1" in await call.error("ask", question=question, top_k=0)

        removed = await call.ok("remove_document", name="harbour.txt")
        assert removed == {"removed": "harbour.txt", "documents": 1}
        assert [d["name"] for d in (await call.ok("list_documents"))["documents"]] == ["bakery.md"]
        after = await call.ok("ask", question="Where is the silver key?")
        assert {c["document"] for c in after["citations"]} == {"bakery.md"}

    with_session(server(store, *FAKES, cwd=tmp_path), body, tmp_path / "server.err")
    assert not (store / "harbour.txt").exists()


def test_server_lists_tools_before_any_model_or_store_exists(tmp_path):
    """Nothing loads at start: a memory model that does not exist and a missing store only show up
    as tool errors when a tool needs them; the missing store is not created by reading it."""
    (tmp_path / "a.txt").write_text("Some text to add.")
    store = tmp_path / "S"

    async def body(session: Any) -> None:
        call = Calls(session)
        assert {t.name for t in (await session.list_tools()).tools} == TOOLS
        assert "does not exist" in await call.error("list_documents")
        assert "does not exist" in await call.error("ask", question="Who?")
        assert "does not exist" in await call.error("remove_document", name="a.txt")
        assert not store.exists()
        assert "GGUF file not found" in await call.error("add_documents", paths=[str(tmp_path / "a.txt")])
        assert (await call.ok("list_documents"))["documents"] == []  # the failed add stored nothing

    options = ["--mem-model", str(tmp_path / "missing.gguf"), "--ret-model", "scriptedspecs:embedder"]
    with_session(server(store, *options, cwd=tmp_path), body, tmp_path / "server.err")


def test_a_chinese_file_name_through_the_mcp_tools(tmp_path):
    doc = tmp_path / "\u62a5\u544a.txt"  # 报告.txt
    doc.write_text("The treasurer Mira Vell locked the annual accounts in the green cabinet.")
    store = tmp_path / "S"

    async def body(session: Any) -> None:
        call = Calls(session)
        assert (await call.ok("add_documents", paths=[str(doc)]))["added"] == ["\u62a5\u544a.txt"]
        ans = await call.ok("ask", question="Where did Mira Vell lock the annual accounts?")
        assert ans["citations"][0]["document"] == "\u62a5\u544a.txt" and "green cabinet" in ans["answer"]
        await call.ok("remove_document", name="\u62a5\u544a.txt")
        assert (await call.ok("list_documents"))["documents"] == []

    with_session(server(store, *FAKES, cwd=tmp_path), body, tmp_path / "server.err")


def test_mcp_ask_sends_the_generator_the_prompt_ask_sends(tmp_path):
    """Issue 22's one core, through the MCP front-end: on a one-document store the ``ask`` tool
    finds the evidence ``MemoRAG.ask`` finds and sends the generator the same prompt (the echo
    generator answers with the prompt it read). MCP answers with numbered citations, so the
    pipeline is asked with ``cite=True`` too."""
    from test_unit_pipeline import DOC_A, Q_A

    from memorag import MemoRAG
    from memorag.collection import Collection

    specs = {"mem_model_name_or_path": "scriptedspecs:llm", "ret_model_name_or_path": "scriptedspecs:embedder",
             "gen_model_name_or_path": "scriptedspecs:echo", "retrieval_chunk_size": 64}
    store = tmp_path / "S"
    (tmp_path / "harbour.txt").write_text(DOC_A, encoding="utf-8")
    Collection(store, MemoRAG(**specs)).add([tmp_path / "harbour.txt"])
    pipe = MemoRAG(**specs, cite=True)
    pipe.load(store / "harbour.txt" / "state")
    asked = pipe.ask(Q_A, max_new_tokens=2048)
    found: dict = {}

    async def body(session: Any) -> None:
        found.update(await Calls(session).ok("ask", question=Q_A, max_new_tokens=2048))

    options = ["--mem-model", "scriptedspecs:llm", "--ret-model", "scriptedspecs:embedder",
               "--gen-model", "scriptedspecs:echo", "--chunk-tokens", "64"]
    with_session(server(store, *options, cwd=tmp_path), body, tmp_path / "server.err")
    assert [c["chunk_id"] for c in found["citations"]] == [h.chunk_id for h in asked.evidence]
    assert found["answer"] == asked.messages[-1]["content"] == asked.answer
