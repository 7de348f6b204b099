"""``memorag mcp``: a Model Context Protocol server (stdio) over one document store.

An agent client (Claude Desktop, an IDE, any MCP client) gets four tools over the store that
``memorag add`` / ``memorag ask --store`` use:

* ``ask``: a question answered from the documents it is routed to, with numbered
  citations (document, chunk id, character offsets ``[start, end)`` into the stored text);
  the same JSON as ``memorag ask --store DIR --json``;
* ``add_documents``: .txt / .md / .html / .pdf files, folders or globs, one document each
  (unchanged files are skipped; ``update`` memorizes changed ones again);
* ``list_documents`` and ``remove_document``.

Nothing is loaded when the server starts: the store is opened at the first tool call and
the models at the first call that needs them (``add_documents``, ``ask``), so a client lists
the tools at once. Every error a user can cause (a missing store, an unknown document, an
unreadable file, a model that cannot be found) comes back as a tool error with memorag's
one-line message; the server keeps running. Tools run one at a time (one set of models).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field

from memorag.errors import InputError, MemoRAGError

SERVER_NAME = "memorag"
INSTRUCTIONS = (
    "memorag answers questions about long documents kept in a store: each document was read once by a memory "
    "model. Use ask for questions (the answer cites evidence by number; each citation names the document and the "
    "character offsets of the passage), add_documents to add files, list_documents to see what is stored, "
    "remove_document to delete one."
)

_Tool = TypeVar("_Tool", bound=Callable[..., Any])
# In the tools' input schemas for clients to read; checked by StoreTools, whose message is one line
# (a schema-level check would answer with pydantic's multi-line report).
_AT_LEAST_1 = {"minimum": 1}


class StoreTools:
    """What the MCP tools do, over the store at ``root`` (usable without MCP, e.g. in tests).

    ``collection_kwargs`` go to :class:`memorag.collection.Collection` (pipeline options
    such as ``mem_model_name_or_path``, ``ret_model_name_or_path``, ``gen_model_name_or_path``,
    ``retrieval_chunk_size``): they are used for a new store; an existing store's documents
    keep the models they were made with (as ``memorag add`` / ``ask --store`` do).
    """

    def __init__(self, root: str | Path, **collection_kwargs: Any) -> None:
        self.root = Path(root).expanduser()
        self._collection_kwargs = collection_kwargs
        self._collection: Any = None
        self._lock = threading.Lock()  # a Collection serves one thread at a time

    def _open(self, *, create: bool = False) -> Any:
        if self._collection is None:
            if not create and not (self.root / ".staging").is_dir():
                what = "does not exist" if not self.root.exists() else "is not a memorag store"
                raise InputError(f"The store {self.root} {what}; add documents to it first (add_documents).")
            from memorag.collection import Collection

            self._collection = Collection(self.root, **self._collection_kwargs)
        return self._collection

    def ask(self, question: str, top_k: int | None = None, route_top: int | None = None,
            max_new_tokens: int = 256) -> dict:
        for option, value in (("top_k", top_k), ("route_top", route_top), ("max_new_tokens", max_new_tokens)):
            if value is not None and value < 1:
                raise InputError(f"{option} must be at least 1; got {value}.")
        with self._lock:
            answer = self._open().ask(question, top_k=top_k, route_top=route_top, max_new_tokens=max_new_tokens,
                                      cite=True)  # numbered evidence, [n] marks, as `memorag ask --store`
        return answer.to_json()

    def add_documents(self, paths: list[str], update: bool = False) -> dict:
        from memorag.collection import gather

        if not paths:
            raise InputError("Give at least one file, folder or glob pattern to add.")
        with self._lock:
            gather(paths)  # a missing file or an unknown type fails before the store is made
            collection = self._open(create=True)
            result = collection.add(paths, replace=update)
            return {**result.to_json(), "documents": len(collection.names())}

    def list_documents(self) -> dict:
        with self._lock:
            collection = self._open()
            entries = collection.list()
            return {"store": str(collection.store.root),
                    "documents": [{k: e.get(k) for k in ("name", "chars", "created", "sha256", "source")}
                                  for e in entries]}

    def remove_document(self, name: str) -> dict:
        with self._lock:
            collection = self._open()
            collection.delete(name)
            return {"removed": name, "documents": len(collection.names())}


def _as_tool_error(fn: _Tool, tool_error: type[Exception]) -> _Tool:
    """``fn`` with the errors a user can cause turned into ``tool_error`` (one line, no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MemoRAGError as exc:
            raise tool_error(str(exc)) from None
        except OSError as exc:  # a file that exists but cannot be read (permissions, a vanished mount)
            where = f"{exc.filename}: " if exc.filename else ""
            raise tool_error(f"{where}{exc.strerror or exc}") from None

    return wrapper  # type: ignore[return-value]


def _mcp() -> tuple[type, type[Exception]]:
    """The SDK's high-level server class and its tool error, in mcp 2 (MCPServer) or mcp 1 (FastMCP)."""
    try:
        from mcp.server.mcpserver import MCPServer
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:
        try:
            from mcp.server.fastmcp import FastMCP as MCPServer
            from mcp.server.fastmcp.exceptions import ToolError
        except ImportError:
            raise InputError("`memorag mcp` needs the MCP SDK: pip install 'memorag[mcp]'.") from None
    return MCPServer, ToolError


def build_server(tools: StoreTools) -> Any:
    """An MCP server whose tools call ``tools``; ``.run("stdio")`` serves it."""
    server_class, tool_error = _mcp()
    server = server_class(SERVER_NAME, instructions=INSTRUCTIONS)

    def tool(fn: _Tool) -> _Tool:
        server.tool(name=fn.__name__, description=fn.__doc__)(_as_tool_error(fn, tool_error))
        return fn

    @tool
    def ask(
        question: Annotated[str, Field(description="The question, in the documents' language.")],
        top_k: Annotated[int | None, Field(description="Pieces of evidence to retrieve (default: the pipeline's).",
                                           json_schema_extra=_AT_LEAST_1)] = None,
        route_top: Annotated[int | None, Field(description="Documents the question is routed to (default 2).",
                                               json_schema_extra=_AT_LEAST_1)] = None,
        max_new_tokens: Annotated[int, Field(description="Longest answer, in tokens.",
                                             json_schema_extra=_AT_LEAST_1)] = 256,
    ) -> dict:
        """Answer a question from the store's documents. Returns the answer, the numbers of the evidence it cites
        (marks), the documents the question was routed to, and every citation: n (the [n] in the answer),
        document, chunk_id, start and end (character offsets into the document's stored text), text, score."""
        return tools.ask(question, top_k=top_k, route_top=route_top, max_new_tokens=max_new_tokens)

    @tool
    def add_documents(
        paths: Annotated[list[str], Field(description="Files (.txt, .md, .html, .pdf), folders (searched "
                                                      "recursively) or glob patterns; absolute paths, or "
                                                      "relative to the server's working directory.")],
        update: Annotated[bool, Field(description="Memorize documents whose text changed again (without it a "
                                                  "changed document is an error).")] = False,
    ) -> dict:
        """Add documents to the store (made if missing): each file is read once by the memory model and named
        after its file name. Returns the names added, updated, unchanged (same text: skipped) and the files
        skipped (other types found in folders), with the number of documents in the store."""
        return tools.add_documents(paths, update=update)

    @tool
    def list_documents() -> dict:
        """List the store's documents: name, characters, when added, sha256 of the text, source file."""
        return tools.list_documents()

    @tool
    def remove_document(
        name: Annotated[str, Field(description="The document's name, as list_documents shows it.")],
    ) -> dict:
        """Remove a document (its memory, chunks, vectors and stored text) from the store."""
        return tools.remove_document(name)

    return server


def serve(root: str | Path, **collection_kwargs: Any) -> None:
    """Serve the store at ``root`` over stdio until the client closes the connection."""
    build_server(StoreTools(root, **collection_kwargs)).run("stdio")


__all__ = ["StoreTools", "build_server", "serve"]
