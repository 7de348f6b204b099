"""Many documents in one store: one memory per document, routed questions, cited answers.

A :class:`Collection` is a :class:`memorag.docstore.DocStore` (the directory the HTTP
service uses: one subdirectory per document, built in ``.staging`` and renamed into place)
driven by one :class:`memorag.MemoRAG` pipeline. Every document keeps its own save dir
(memory state, chunks, vectors); the collection adds:

* ``add``/``update`` from files, folders and globs (:mod:`memorag.extract` turns txt, md,
  html and pdf into text). The sha256 of the extracted text is kept in the document's
  entry; a document whose text is unchanged is skipped: nothing is embedded or read.
* ``ask``: the question is routed to the documents whose chunks match it best (one hybrid
  dense + BM25 search over every document's chunks, a document scoring as its best chunk;
  the top ``route_top`` are kept), each selected memory gives its clues, the pipeline's
  query plan retrieves over the selected documents' chunks together, and the generator
  answers from numbered evidence. Every piece of evidence is a :class:`Citation`: document,
  chunk id and character offsets ``[start, end)`` into the document's stored text.
* a bounded cache of loaded memories (:class:`MemoryCache`): a memory's KV state is
  ~12 KB per token for the default memory model, so only the memories a question is
  routed to are loaded, and at most ``max_memories`` documents / ``max_memory_bytes`` of
  them are kept in RAM (least recently used first out).

The chunks and vectors of every document are held in RAM for routing (a few bytes per
character of text, not per token of KV state), unless the store routes with a store-wide
index (``routing_index="qdrant:URL_OR_DIR"``, :mod:`memorag.index.store_index`): then the
dense part of routing is one query to it, and only the candidate documents' chunks are read.
"""

from __future__ import annotations

import bisect
import dataclasses
import glob
import hashlib
import json
import shutil
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memorag.answering import AnswerResult, Citation, NoGenerator, View, answer_question, citations_for, marks_in
from memorag.config import DEFAULT_JUDGE_STATES_MB
from memorag.docstore import NAME_MAX_BYTES, STATE, DocStore, check_name
from memorag.errors import ConflictError, InputError, NotMemorizedError, StateError
from memorag.extract import extract_text, is_supported
from memorag.index.store_index import parse_spec, route_hits, store_routing
from memorag.llm.base import ExtendablePrefix
from memorag.memory import Clues, MemoryState, check_same_model
from memorag.retrieval import RetrievalState, Retriever
from memorag.store import load_consistent, read_manifest
from memorag.text import check_text

DEFAULT_ROUTE_TOP = 2
DEFAULT_MAX_MEMORIES = 4
# How a document's chunks' hits make its routing score (Collection.route):
#   "best"     its best chunk's fused (dense + BM25) score;
#   "top3-sum" the sum of its best three chunks' fused scores, from a deeper search.
ROUTING_RULES = ("best", "top3-sum")
DEFAULT_ROUTING = "best"

# Names made from file names stay as short as they always were, so re-adding a file finds its document.
DOCUMENT_NAME_CHARS = 64


# ----------------------------------------------------------------------------- results
@dataclass
class CollectionAnswer:
    answer: str
    question: str
    documents: list[tuple[str, float]]  # routed documents with their routing scores, best first
    citations: list[Citation]  # every piece of evidence the generator saw, numbered from 1
    marks: list[int] = field(default_factory=list)  # evidence numbers the answer cites ([n]), in order
    clues: dict[str, Clues] = field(default_factory=dict)  # per routed document
    timings: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)  # the exact messages sent to the generator
    evidence: list = field(default_factory=list)  # the hits, chunk ids over the routed documents joined
    bridge: list[str] = field(default_factory=list)  # the memory's second hop: asked, then quoted (AnswerResult.bridge)

    @property
    def cited(self) -> list[Citation]:
        """The citations the answer marks (empty if the generator wrote no marks)."""
        by_n = {c.n: c for c in self.citations}
        return [by_n[n] for n in self.marks]

    def to_json(self) -> dict:
        return {"question": self.question, "answer": self.answer, "marks": self.marks,
                "documents": [{"name": n, "score": round(s, 5)} for n, s in self.documents],
                "citations": [c.to_json() for c in self.citations],
                "clues": {n: c.to_json() for n, c in self.clues.items()}, "timings": self.timings,
                **({"bridge": {"asked": self.bridge[0], "quotes": self.bridge[1:]}} if self.bridge else {})}


@dataclass
class AddResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # same text as stored: nothing embedded or read
    skipped: list[str] = field(default_factory=list)  # files of an unknown type found in folders or globs
    stats: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "skipped": self.skipped, "stats": self.stats}


# ----------------------------------------------------------------------------- sources
def document_name(path: Path) -> str:
    """A store name for a file: its file name (NFC), each run of characters other than letters,
    marks, digits (of any script) and ``. _ -`` replaced by ``-``, shortened to
    ``DOCUMENT_NAME_CHARS`` characters and the store's byte limit (the extension kept)."""
    name = _name_chars(path.name).lstrip("._-")
    if len(name) > DOCUMENT_NAME_CHARS or len(name.encode("utf-8")) > NAME_MAX_BYTES:
        suffix = _name_chars(path.suffix)[:16]
        stem = name[: DOCUMENT_NAME_CHARS - len(suffix)]
        while len((stem + suffix).encode("utf-8")) > NAME_MAX_BYTES:
            stem = stem[:-1]
        name = stem.rstrip("._-") + suffix
    if not name:
        raise InputError(f"Cannot make a document name from {path.name!r}; rename the file.")
    return check_name(name)


def _name_chars(text: str) -> str:
    out: list[str] = []
    after_other = False
    for ch in unicodedata.normalize("NFC", text):
        other = unicodedata.category(ch)[0] not in "LMN" and ch not in "._-"
        if not (other and after_other):  # a run of other characters becomes one '-'
            out.append("-" if other else ch)
        after_other = other
    return "".join(out)


def gather(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Files to add from ``paths`` (files, folders searched recursively, glob patterns).

    Returns ``(files, skipped)``: a file named directly must be of a supported type (else
    :class:`InputError`); files of other types found inside folders or by globs are skipped
    and reported. Hidden files and folders (leading ``.``) inside folders are ignored.
    """
    files: list[Path] = []
    skipped: list[Path] = []

    def walk(folder: Path) -> None:
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).parts
            if any(part.startswith(".") for part in rel) or not p.is_file():
                continue
            (files if is_supported(p) else skipped).append(p)

    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            walk(p)
        elif p.exists():
            if not is_supported(p):
                extract_text(p)  # raises the unsupported-type InputError
            files.append(p)
        elif glob.has_magic(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            if not matches:
                raise InputError(f"No file matches {raw!r}.")
            for m in matches:
                if m.is_dir():
                    walk(m)
                elif m.is_file():
                    (files if is_supported(m) else skipped).append(m)
        else:
            raise InputError(f"File not found: {p}")
    unique: dict[Path, None] = dict.fromkeys(f.resolve() for f in files)
    return list(unique), skipped


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stored_sha256(store: DocStore, name: str) -> str:
    """The sha256 of document ``name``'s stored text (recorded in its entry, else hashed)."""
    sha = store.info(name).get("sha256")
    # Entries written by early versions of the service have no sha256: hash the stored text instead.
    return sha if isinstance(sha, str) else text_sha256(store.text(name))


# ----------------------------------------------------------------------------- joined retrieval
class JoinedIndex:
    """Several documents' vector indexes searched as one (read-only).

    Passage ids are positions in the concatenation of the parts, so a joined
    :class:`RetrievalState` (chunks and passage owners concatenated the same way) works with
    the unchanged :class:`Retriever` and query plans. Scores are inner products of
    normalised vectors from one embedder, so they compare across documents; faiss and Qdrant
    indexes join alike.
    """

    spec = "joined"

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])[:-1].tolist()

    def __len__(self) -> int:
        return int(sum(len(p) for p in self.parts))

    def add(self, vectors: np.ndarray) -> None:
        raise StateError("A joined index is read-only: add to the document's own index.")

    def save(self, directory: Path) -> dict:
        raise StateError("A joined index is not saved: each document's index is.")

    def load(self, directory: Path, info: dict) -> None:
        raise StateError("A joined index is not loaded: load each document's index.")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(queries)
        all_scores = [np.full((n, k), -np.inf, np.float32)]  # the padding the protocol asks for
        all_ids = [-np.ones((n, k), np.int64)]
        for offset, part in zip(self.offsets, self.parts):
            if not len(part):
                continue
            scores, ids = part.search(queries, min(k, len(part)))
            all_scores.append(np.asarray(scores, np.float32))
            all_ids.append(np.where(ids >= 0, ids + offset, -1).astype(np.int64))
        scores = np.concatenate(all_scores, axis=1)
        ids = np.concatenate(all_ids, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


@dataclass(frozen=True)
class Joined:
    """The chunks of several documents as one retrieval state, and where each document starts."""

    names: list[str]
    state: RetrievalState
    chunk_offsets: list[int]

    def locate(self, chunk_id: int) -> tuple[str, int]:
        """(document name, chunk id within it) of a joined chunk id."""
        i = bisect.bisect_right(self.chunk_offsets, chunk_id) - 1
        return self.names[i], chunk_id - self.chunk_offsets[i]


def join_states(named: list[tuple[str, RetrievalState]]) -> Joined:
    chunks: list = []
    owners: list[np.ndarray] = []
    offsets: list[int] = []
    for _, st in named:
        offsets.append(len(chunks))
        owners.append(np.asarray(st.passage_owner, np.int64) + len(chunks))
        chunks.extend(st.chunks)
    languages = [st.language for _, st in named]
    language = max(set(languages), key=languages.count) if languages else "en"
    state = RetrievalState(chunks, np.concatenate(owners) if owners else np.zeros(0, np.int64),
                           JoinedIndex([st.index for _, st in named]), language)
    return Joined([n for n, _ in named], state, offsets)


# ----------------------------------------------------------------------------- memory cache
def snapshot_bytes(snapshot: object) -> int:
    """RAM a memory snapshot takes: llama.cpp's state size, or the size of a message prefix's text."""
    size = getattr(snapshot, "size", None)
    if isinstance(size, int):
        return size
    if isinstance(snapshot, bytes | bytearray | memoryview):
        return len(snapshot)
    return len(json.dumps(snapshot, default=str, ensure_ascii=False).encode("utf-8"))


@dataclass
class LoadedMemory:
    version: str
    state: MemoryState
    snapshot: object  # the memory model's prefix state (llm.snapshot_prefix())
    nbytes: int


class MemoryCache:
    """Least-recently-used cache of loaded memories, capped in documents and in bytes.

    The newest entry is always kept, even if it alone exceeds ``max_bytes`` (a question
    needs it); everything older is evicted until both caps hold.
    """

    def __init__(self, max_documents: int = DEFAULT_MAX_MEMORIES, max_bytes: int | None = None) -> None:
        if max_documents < 1:
            raise InputError(f"max_memories must be at least 1; got {max_documents!r}.")
        if max_bytes is not None and max_bytes < 1:
            raise InputError(f"max_memory_bytes must be positive or None; got {max_bytes!r}.")
        self.max_documents = max_documents
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, LoadedMemory] = OrderedDict()
        self.loads = 0  # memories read from disk
        self.hits = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    @property
    def names(self) -> list[str]:
        """Cached documents, least recently used first."""
        return list(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def get(self, name: str, version: str) -> LoadedMemory | None:
        entry = self._entries.get(name)
        if entry is None or entry.version != version:
            return None
        self._entries.move_to_end(name)
        self.hits += 1
        return entry

    def put(self, name: str, entry: LoadedMemory) -> None:
        self._entries.pop(name, None)
        self._entries[name] = entry
        self.loads += 1
        while len(self._entries) > 1 and (len(self._entries) > self.max_documents
                                          or (self.max_bytes is not None and self.nbytes > self.max_bytes)):
            self._entries.popitem(last=False)
            self.evictions += 1

    def discard(self, name: str) -> None:
        self._entries.pop(name, None)

    def clear(self) -> None:
        self._entries.clear()


# ----------------------------------------------------------------------------- the collection
def files_by_name(paths: Iterable[str | Path]) -> tuple[dict[str, Path], list[Path]]:
    """The supported files of ``paths`` under the document names they would get, and the
    files skipped as unsupported; two files that would share a name are one clear error."""
    files, skipped = gather(paths)
    if not files:
        raise InputError("No supported files to add (memorag reads .txt, .md, .html, .pdf).")
    by_name: dict[str, Path] = {}
    for f in files:
        name = document_name(f)
        if name in by_name:
            raise InputError(f"{by_name[name]} and {f} would both be stored as {name!r}; add them "
                             "separately from differently named files.")
        by_name[name] = f
    return by_name, skipped


def check_no_judge_states(pipeline_kwargs: Mapping[str, Any]) -> None:
    """A store's documents keep no judge states (memorag.judge_states): a question here moves
    between documents, so the states of each would be read at memorize time for nothing. A
    ``judge_states_mb`` set away from its default is refused rather than dropped."""
    if pipeline_kwargs.get("judge_states_mb", DEFAULT_JUDGE_STATES_MB) != DEFAULT_JUDGE_STATES_MB:
        raise InputError("judge_states_mb applies to a single document's pipeline (MemoRAG), not to a store.")


class Collection:
    """A store of memorized documents and the pipeline that builds and questions them.

    ``pipe`` is a ready :class:`memorag.MemoRAG` (e.g. ``MemoRAG.from_parts`` with the
    fakes of :mod:`memorag.testing`); without one, a pipeline is made on first use with the
    models the store's documents were memorized with (or the defaults for an empty store),
    ``pipeline_kwargs`` overriding them; with ``build_only`` that pipeline gets no
    generator (no answer model is loaded just to add documents). The collection drives the
    pipeline's memory and retriever: after :meth:`ask` the pipeline holds one of the routed
    documents (the last one whose memory was made current). One thread at a time (llama.cpp contexts are not thread-safe); processes
    sharing the store are serialized by its lock. ``routing_index`` (``"qdrant:URL_OR_DIR"``,
    or ``"ram"``; default: what the store records, else ``"ram"``) is recorded in the store
    on first use and refused when it differs from the recorded one
    (:func:`memorag.index.store_index.store_routing`).
    """

    def __init__(self, root: str | Path, pipe: Any = None, *, route_top: int = DEFAULT_ROUTE_TOP,
                 max_memories: int = DEFAULT_MAX_MEMORIES, max_memory_bytes: int | None = None,
                 build_only: bool = False, routing: str = DEFAULT_ROUTING, routing_index: str | None = None,
                 **pipeline_kwargs: Any) -> None:
        if route_top < 1:
            raise InputError(f"route_top must be at least 1; got {route_top!r}.")
        self.routing = _check_routing(routing)
        if routing_index is not None:
            parse_spec(routing_index)  # a bad spec makes no store directory
        check_no_judge_states(pipeline_kwargs)
        self.store = DocStore(root)
        self.routing_index = store_routing(self.store, routing_index)  # None: every document joined in RAM
        if pipe is not None:
            pipe.judge_states_mb = 0  # see check_no_judge_states
        self._pipe = pipe
        self._pipeline_kwargs = pipeline_kwargs
        self.build_only = build_only
        self.route_top = route_top
        self.memories = MemoryCache(max_memories, max_memory_bytes)
        self._retrieval: dict[str, tuple[str, RetrievalState]] = {}  # name -> (version, state)
        self._routing: tuple[tuple, Joined] | None = None  # (versions key, joined state of all documents)
        self._current: tuple[str, str] | None = None  # (name, version) whose prefix the memory model holds

    # ---------------------------------------------------------------- pipeline
    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            from memorag.pipeline import MemoRAG, saved_pipeline_kwargs

            kwargs = dict(self._pipeline_kwargs)
            docs = self.store.list()
            if docs:  # the models the documents were made with (as MemoRAG.from_saved does)
                manifest = read_manifest(self.store.state_dir(docs[0]["name"]), verify=False)
                kwargs = saved_pipeline_kwargs(manifest, kwargs)
            if self.build_only:
                kwargs.setdefault("customized_gen_model", NoGenerator())
            kwargs["judge_states_mb"] = 0  # see check_no_judge_states
            self._pipe = MemoRAG(**kwargs)
        return self._pipe

    # ---------------------------------------------------------------- listing
    def list(self) -> list[dict]:
        """The store's entries (name, chars, created, sha256, source, stats), by name."""
        return self.store.list()

    def names(self) -> list[str]:
        return [e["name"] for e in self.store.list()]

    def text(self, name: str) -> str:
        """The stored text of ``name``: what citations' offsets index into."""
        return self.store.text(name)

    # ---------------------------------------------------------------- writing
    def add(self, paths: Iterable[str | Path], *, replace: bool = False,
            on_document: Callable[[str, str], None] | None = None, progress: Any = False) -> AddResult:
        """Memorize the files in ``paths`` (files, folders, globs), one document each.

        Every file is read and checked, and every name checked against the store, before
        anything is memorized. A name already in the store with the same text is left as it
        is (``unchanged``); with other text it is a :class:`ConflictError` unless
        ``replace`` (what :meth:`update` does). Each document is committed on its own as
        soon as it is built, so an error or Ctrl-C midway keeps the documents before it.
        ``on_document(name, status)`` is called as each one is done.
        """
        by_name, skipped = files_by_name(paths)
        plan: list[tuple[str, Path, str, bool]] = []
        result = AddResult(skipped=[str(s) for s in skipped])
        for name, f in by_name.items():
            text = extract_text(f)
            exists = self.store.exists(name)
            if exists and stored_sha256(self.store, name) == text_sha256(text):
                result.unchanged.append(name)
                continue
            if exists and not replace:
                raise ConflictError(f"A different document named {name!r} is already in the store; use "
                                    "update (`memorag add --update`) to replace it.")
            plan.append((name, f, text, exists))
        for name in result.unchanged:
            if on_document:
                on_document(name, "unchanged")
        for name, f, text, exists in plan:
            result.stats[name] = self.add_text(name, text, source=str(f), replace=exists, progress=progress)
            (result.updated if exists else result.added).append(name)
            if on_document:
                on_document(name, "updated" if exists else "added")
        return result

    def update(self, paths: Iterable[str | Path], **kwargs: Any) -> AddResult:
        """:meth:`add` with ``replace=True``: changed documents are memorized again, unchanged
        ones skipped (nothing embedded or read), new ones added."""
        return self.add(paths, replace=True, **kwargs)

    def add_text(self, name: str, text: str, *, source: str | None = None, replace: bool = False,
                 progress: Any = False) -> dict:
        """Memorize ``text`` as document ``name`` (its own save dir); returns the memorize stats."""
        name = check_name(name)
        check_text(text, what="text")
        if self.store.exists(name) and not replace:
            raise ConflictError(f"A document named {name!r} is already in the store.")
        pipe = self.pipe
        staging = self.store.new_staging(uuid.uuid4().hex[:16])
        try:
            self._current = None  # the memory model reads the new document into its context
            stats = pipe.memorize(text, save_dir=staging / STATE, progress=progress)
            self.store.commit(staging, name, text, stats, replace=replace,
                              extra={"sha256": text_sha256(text), "source": source})
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._forget(name)
        if self.routing_index is not None:
            self.routing_index.put(name)
        return stats

    def append(self, name: str, text: str, *, progress: Any = False) -> dict:
        """Append ``text`` to document ``name`` without reading the document again.

        The memory continues from the document's saved state: the memory model evaluates
        only the new tokens (``prefill_tokens`` in the returned stats), and only the new
        part is chunked and embedded (``passages``); its chunks' offsets continue after the
        old text. The stored text becomes ``old + separator + text`` (a blank line unless
        one side already has a line break there). A memory that was compressed, a result
        that would not fit the memory's window, or a backend that cannot extend a state is
        memorized again as a whole instead (``mode: "rebuilt"`` and the reason). A failure
        leaves the stored document as it was.
        """
        text = check_text(text, what="text")
        info = self.store.info(name)
        old = self.store.text(name)
        added = (text if old.endswith("\n") or text.startswith("\n") else "\n\n" + text)
        full = old + added
        pipe = self.pipe
        memory = pipe.memory
        extendable = isinstance(memory.llm, ExtendablePrefix)
        state = self.activate(name, info["version"])
        reason = None
        if not extendable:
            reason = "this memory backend cannot extend a saved state"
        elif state.compression:
            reason = "the document's memory is compressed"
        elif memory.needs_compression(full):
            reason = "the longer document needs compression to fit the memory's window"
        if reason is not None:
            stats = self.add_text(name, full, source=info.get("source"), replace=True, progress=progress)
            stats["append"] = {"mode": "rebuilt", "reason": reason, "appended_chars": len(added)}
            return stats
        t0 = time.perf_counter()
        staging = self.store.new_staging(uuid.uuid4().hex[:16])
        try:
            with memory.guard():  # any failure puts the old document's prefix back
                n_new = memory.llm.extend_prefix(added)
                memory_state = MemoryState(state.language, text_sha256(full), len(full), memory.llm.prefix_tokens,
                                           None)
                t1 = time.perf_counter()
                retrieval, n_chunks, n_passages = self._extended_retrieval(name, added, len(old))
                from memorag.pipeline import DocumentState

                _, save_stats = pipe.write_document(DocumentState(retrieval, memory_state), staging / STATE)
                stats = {"chars": len(full), "memory_tokens": memory_state.prefix_tokens,
                         "chunks": len(retrieval.chunks), "passages": len(retrieval.passage_owner),
                         "append": {"mode": "appended", "appended_chars": len(added), "prefill_tokens": n_new,
                                    "chunks": n_chunks, "passages": n_passages,
                                    "memory_seconds": round(t1 - t0, 3),
                                    "index_seconds": round(time.perf_counter() - t1, 3)},
                         **save_stats, "total_seconds": round(time.perf_counter() - t0, 3)}
                self.store.commit(staging, name, full, stats, replace=True,
                                  extra={"sha256": text_sha256(full), "source": info.get("source")})
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._forget(name)
        if self.routing_index is not None:
            self.routing_index.put(name)
        return stats

    def _extended_retrieval(self, name: str, added: str, offset: int) -> tuple[RetrievalState, int, int]:
        """``name``'s chunks and vectors (read afresh from disk) plus those of ``added``, which
        starts at character ``offset`` of the document. Returns (state, new chunks, new passages)."""
        from memorag.chunking import Chunk, Chunker

        pipe = self.pipe
        retriever = pipe.retriever

        def read(d: Path, manifest: dict) -> RetrievalState:
            check_same_model(manifest["models"]["embedder"], pipe.embedder.describe(), what="embedding model")
            return retriever.read(d / "retrieval", manifest["retrieval"], language=manifest.get("language"))

        with self.store.reading():
            base = load_consistent(self.store.state_dir(name), read)
        chunker = Chunker(pipe.embedder.tokenizer(), chunk_tokens=retriever.chunk_tokens)
        new_chunks = [Chunk(c.text, c.start + offset) for c in chunker.split(added)]
        texts, owner = retriever.passages(new_chunks)
        for start in range(0, len(texts), retriever.batch_size):
            base.index.add(pipe.embedder.embed(texts[start : start + retriever.batch_size]))
        owners = np.concatenate([base.passage_owner, np.asarray(owner, np.int64) + len(base.chunks)])
        return RetrievalState(base.chunks + new_chunks, owners, base.index, base.language), len(new_chunks), len(texts)

    def delete(self, name: str) -> None:
        """Remove ``name`` from the store (its memory, chunks and vectors)."""
        name = check_name(name)
        self.store.delete(name)
        self._forget(name)
        if self.routing_index is not None:
            self.routing_index.remove(name)

    def _forget(self, name: str) -> None:
        self.memories.discard(name)
        self._retrieval.pop(name, None)
        self._routing = None
        if self._current is not None and self._current[0] == name:
            self._current = None

    # ---------------------------------------------------------------- loading
    def _versions(self) -> list[tuple[str, str]]:
        return [(e["name"], e["version"]) for e in self.store.list()]

    def retrieval_state(self, name: str, version: str | None = None) -> RetrievalState:
        """The chunks and vectors of ``name`` (cached until the document changes)."""
        version = version or self.store.info(name)["version"]
        cached = self._retrieval.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        pipe = self.pipe

        def read(d: Path, manifest: dict) -> RetrievalState:
            return pipe.read_retrieval(d, manifest)

        with self.store.reading():
            state = load_consistent(self.store.state_dir(name), read)
        self._retrieval[name] = (version, state)
        return state

    def activate(self, name: str, version: str) -> MemoryState:
        """Make ``name``'s memory the memory model's prefix (from the cache, else from disk)."""
        memory = self.pipe.memory
        llm = memory.llm
        entry = self.memories.get(name, version)
        if entry is None:
            snapshot_fn = getattr(llm, "snapshot_prefix", None)

            def read(d: Path, manifest: dict) -> tuple[MemoryState, object]:
                with memory.guard():  # a failed read puts the previous prefix back
                    state, _ = memory.read(d / "memory")
                    return state, snapshot_fn() if snapshot_fn is not None else None

            with self.store.reading():
                state, snapshot = load_consistent(self.store.state_dir(name), read)
            if snapshot is not None:  # backends without snapshots re-read from disk each time
                self.memories.put(name, LoadedMemory(version, state, snapshot, snapshot_bytes(snapshot)))
        else:
            state = entry.state
            if self._current != (name, version):
                llm.restore_prefix(entry.snapshot)
        memory.state = state
        self._current = (name, version)
        return state

    # ---------------------------------------------------------------- asking
    def _retriever(self, joined: Joined) -> Retriever:
        base = self.pipe.retriever
        r = Retriever(base.embedder, base.index_factory, chunk_tokens=base.chunk_tokens)
        r.state = joined.state
        return r

    def _stored_versions(self) -> list[tuple[str, str]]:
        versions = self._versions()
        if not versions:
            raise NotMemorizedError(f"The store {self.store.root} has no documents: add some first "
                                    "(`memorag add FILES --store DIR`).")
        return versions

    def _all_documents(self) -> Joined:
        versions = self._stored_versions()
        key = tuple(versions)
        if self._routing is None or self._routing[0] != key:
            live = {n for n, _ in versions}
            for gone in [n for n in self._retrieval if n not in live]:
                self._retrieval.pop(gone)
            joined = join_states([(n, self.retrieval_state(n, v)) for n, v in versions])
            self._routing = (key, joined)
        return self._routing[1]

    def route(self, question: str, top: int | None = None, *, rule: str | None = None) -> list[tuple[str, float]]:
        """The ``top`` documents for ``question``, best first, with their scores.

        One hybrid search (dense + BM25, fused by weighted RRF as in retrieval) over the
        chunks of every document. BM25 statistics are taken over the whole store, so term
        rarity is comparable across documents. ``rule`` (default: the collection's
        ``routing``) turns a document's chunk hits into its score: ``"best"``, its best
        chunk; ``"top3-sum"``, the sum of its best three. With a store-wide routing index
        the dense search is one query to it and BM25 runs over the candidate documents it
        found (:func:`memorag.index.store_index.route_hits`).
        """
        question = check_text(question, what="question")
        top = top or self.route_top
        rule = _check_routing(rule or self.routing)
        depth = max(20, 4 * top) if rule == "best" else max(60, 12 * top)
        if self.routing_index is not None:
            ranked = route_hits(self.routing_index, self._stored_versions(), question, depth, embedder=self.pipe.embedder,
                                lexical=self.pipe.hybrid, chunks_of=self.retrieval_state)
        else:
            joined = self._all_documents()
            hits = self._retriever(joined).search([question], depth, lexical=self.pipe.hybrid)
            ranked = [(joined.locate(h.chunk_id)[0], h.score) for h in hits]
        per_doc: dict[str, list[float]] = {}
        for name, score in ranked:  # best first
            per_doc.setdefault(name, []).append(score)
        take = 1 if rule == "best" else 3
        scored = [(name, float(sum(scores[:take]))) for name, scores in per_doc.items()]
        scored.sort(key=lambda ns: -ns[1])  # stable: ties keep the order of the best chunk
        return scored[:top]

    def view(self, routed: list[tuple[str, float]], *, use_memory: bool = True) -> tuple[View, RoutedMemory | None]:
        """The routed documents as the answering core's view: their chunks joined, and (with
        ``use_memory``) a clue source that asks each one's memory (memorag.answering)."""
        versions = dict(self._versions())
        joined = join_states([(n, self.retrieval_state(n, versions[n])) for n, _ in routed])
        memory = RoutedMemory(self, routed, versions) if use_memory else None
        language = joined.state.language
        return View(self._retriever(joined), memory, language, tuple(joined.names),
                    tuple(joined.chunk_offsets)), memory

    def ask(self, question: str, *, route_top: int | None = None, top_k: int | None = None,
            max_new_tokens: int = 256, use_memory: bool = True, task_type: str = "memorag",
            use_memory_answer: bool = False, cite: bool | None = None,
            on_token: Callable[[str], None] | None = None,
            on_evidence: Callable[[dict[str, Clues], list[Citation]], None] | None = None) -> CollectionAnswer:
        """Answer ``question`` from the documents it is routed to, with numbered citations.

        The answer is made by the answering core (memorag.answering.answer_question) with the
        pipeline's parts, over the routed documents' chunks joined. ``use_memory=False`` (or
        ``task_type="rag"``) skips the memories (no clues): plain hybrid retrieval over the
        routed documents. ``cite`` overrides the pipeline's ``cite`` (numbered evidence and
        ``[n]`` marks in the answer). ``on_evidence(clues per document, citations)`` runs
        before generation starts.
        """
        question = check_text(question, what="question")
        pipe = self.pipe
        if not use_memory:
            if task_type not in ("memorag", "rag"):
                raise InputError(f"use_memory=False asks without the memories; task_type {task_type!r} needs them.")
            task_type = "rag"
        if task_type == "summarize":
            raise InputError("A store is not summarized as a whole: summarize one document (`memorag ask "
                             "--summarize` on its save dir).")
        t0 = time.perf_counter()
        routed = self.route(question, route_top)
        t1 = time.perf_counter()
        view, memory = self.view(routed, use_memory=task_type != "rag")
        parts = pipe.answering()
        if cite is not None:
            parts = dataclasses.replace(parts, prompt=dataclasses.replace(parts.prompt, cite=cite))

        def evidence(clues: Clues | None, hits: list) -> None:
            if on_evidence:
                on_evidence(memory.per_document if memory is not None else {}, citations_for(view, hits))

        result = answer_question(view, question, parts, task_type=task_type, top_k=top_k,
                                 use_memory_answer=use_memory_answer, max_new_tokens=max_new_tokens,
                                 on_token=on_token, on_evidence=evidence)
        self._hold_last(memory)
        clues = memory.per_document if memory is not None else {}
        if result.clues is not None:  # each document's clue lines with the sentences they were grounded in
            grounded = dict(zip(result.clues.lines(), result.clues.grounded))
            for c in clues.values():
                c.grounded = [grounded.get(line, "") for line in c.lines()]
        return CollectionAnswer(result.answer, question, routed, result.citations, result.marks, clues,
                                {"routing": round(t1 - t0, 3), **result.timings}, result.messages, result.evidence,
                                result.bridge)


    def ask_document(self, name: str, question: str | None, *, task_type: str = "memorag", top_k: int | None = None,
                     max_new_tokens: int = 256, use_memory_answer: bool = False,
                     on_token: Callable[[str], None] | None = None,
                     on_evidence: Callable[[Clues | None, list[Citation]], None] | None = None) -> AnswerResult:
        """Answer ``question`` from document ``name`` alone (no routing), as ``MemoRAG.ask``
        does after loading it; its memory comes from the cache. Task ``summarize`` takes no
        question. ``on_evidence(clues, citations)`` runs before generation starts."""
        if task_type != "summarize":
            question = check_text(question, what="question")
        self.store.info(name)  # NotFoundError for an unknown name
        view, memory = self.view([(name, 1.0)], use_memory=task_type != "rag")

        def evidence(clues: Clues | None, hits: list) -> None:
            if on_evidence:
                on_evidence(clues, citations_for(view, hits))

        result = answer_question(view, question, self.pipe.answering(), task_type=task_type, top_k=top_k,
                                 use_memory_answer=use_memory_answer, max_new_tokens=max_new_tokens,
                                 on_token=on_token, on_evidence=evidence)
        self._hold_last(memory)
        return result

    def _hold_last(self, memory: RoutedMemory | None) -> None:
        # The pipeline's memory holds the last document made current: give its retriever the
        # same document, so the pipeline stays one consistent document.
        if memory is not None and memory.activated:
            last = memory.activated[-1]
            self.pipe.retriever.state = self.retrieval_state(last, memory.versions[last])


class RoutedMemory:
    """The memories of a question's routed documents as one clue source: each writes its
    clues (cached memories first), merged in routing order."""

    def __init__(self, collection: Collection, routed: list[tuple[str, float]], versions: dict[str, str]) -> None:
        self.collection = collection
        self.routed = [name for name, _ in routed]
        self.versions = versions
        self.per_document: dict[str, Clues] = {}
        self.activated: list[str] = []  # in the order their memories were made current

    @property
    def can_quote(self) -> bool:
        return self.collection.pipe.memory.can_quote

    def clues(self, query: str, *, use_answer: bool = False,
              kinds: tuple[str, ...] = ("spans", "questions", "answer"), avoid: Sequence[str] = ()) -> Clues:
        # Cached memories first: loading a missing one evicts the least recently used entry,
        # which could otherwise be another memory this same question needs next (read from
        # disk twice in one question; counted in tests/test_collection.py).
        cache = self.collection.memories
        order = sorted(self.routed, key=lambda n: n not in cache)  # stable: routed order within
        got = {}
        for name in order:
            self.collection.activate(name, self.versions[name])
            self.activated.append(name)
            got[name] = self.collection.pipe.memory.clues(query, use_answer=use_answer, kinds=kinds, avoid=avoid)
        if not self.per_document:  # the question's clues; a later ask (the second hop) is not them
            self.per_document = {name: got[name] for name in self.routed}  # in routing order
        each = [got[name] for name in self.routed]  # merged in routing order
        return Clues(question=query, spans=[s for c in each for s in c.spans],
                     questions=[q for c in each for q in c.questions],
                     answer=next((c.answer for c in each if c.answer), ""),
                     seconds=sum(c.seconds for c in each))

    def key_points(self) -> list[str]:
        if len(self.routed) != 1:
            raise InputError("A store is not summarized as a whole: summarize one document.")
        name = self.routed[0]
        self.collection.activate(name, self.versions[name])
        self.activated.append(name)
        return self.collection.pipe.memory.key_points()


def _check_routing(rule: str) -> str:
    if rule not in ROUTING_RULES:
        raise InputError(f"Unknown routing rule {rule!r}; choose one of {', '.join(ROUTING_RULES)}.")
    return rule


__all__ = ["AddResult", "Citation", "Collection", "CollectionAnswer", "JoinedIndex", "MemoryCache", "RoutedMemory",
           "document_name", "gather", "join_states", "marks_in", "stored_sha256", "text_sha256"]
