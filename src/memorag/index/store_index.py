"""A store-wide routing index: every document's passage vectors in one place, searched at once.

By default a :class:`memorag.collection.Collection` routes a question by joining every
document's chunks and vectors in RAM. With a routing index (``routing_index="qdrant:URL"``
or ``"qdrant:DIR"``; docs/collections.md) the dense part of routing is one query to one
Qdrant collection that holds every document's passage vectors, each point carrying its
document's name, store version, text sha256, chunk id and passage number.

The store stays the source of truth. The index is a copy of the vectors each document's
save dir already holds (``state/retrieval/vectors.npy`` and the passage-to-chunk map in
``chunks.json``), and :class:`StoreRouting` keeps the copy in step:

* a collection's own writes update it at once (a document's points are upserted under
  ids derived from its name, version and passage, then its other versions' points are
  deleted by a payload filter; a removed document's points are deleted by filter);
* before each routing search the store's ``(name, version)`` list and the index's point
  count are compared with what the index was last known to hold; on any difference (a
  document added by another process or by ``memorag add --ray``, points lost on the
  server, a server wiped) the whole index is re-synced from the store's saved vectors.

Which routing index a store uses is recorded in the store (``ROUTING_SETTING`` in
``.settings.json``, :meth:`memorag.docstore.DocStore.settings`), so every process that opens
it routes the same way; asking for another one is a :class:`ConflictError`.

The lexical (BM25) half of hybrid routing cannot be one query to a vector collection, so
with a routing index it runs over the chunks of the *candidate* documents only: those the
dense search found (:func:`route_hits`). A document no dense hit reaches is therefore not
found by its words alone, and BM25's term statistics are those of the candidates. When
every document is a candidate (a small store) the result equals the in-RAM routing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from memorag.docstore import DocStore
from memorag.errors import BackendError, ConflictError, InputError, StateError
from memorag.index.base import load_vectors
from memorag.retrieval import CHUNKS_FILE, weighted_rrf
from memorag.store import load_consistent

ROUTING_SETTING = "routing_index"
IN_RAM = "ram"
ROUTING_SPECS = "ram (every document's chunks joined in RAM, the default) or qdrant:URL_OR_DIR"


# ----------------------------------------------------------------------------- what is indexed
@dataclass(frozen=True)
class DocumentVectors:
    """One stored document's passage vectors as its save dir holds them."""

    name: str
    version: str
    sha256: str
    vectors: np.ndarray  # (passages, dimension), L2-normalised
    passage_chunk: np.ndarray  # chunk id of each passage


@dataclass(frozen=True)
class PassageHit:
    document: str
    version: str
    chunk: int
    passage: int
    score: float


@runtime_checkable
class StoreIndex(Protocol):
    """One index over every document's passages (implemented by
    :class:`memorag.index.qdrant_store_index.QdrantStoreIndex`)."""

    spec: str

    def put(self, doc: DocumentVectors) -> None:
        """Hold ``doc``'s passages (idempotent) and no other version of that document."""
        ...

    def remove(self, name: str) -> None:
        """Drop every passage of document ``name``."""
        ...

    def keep_only(self, versions: Sequence[str]) -> None:
        """Drop every passage whose version is not one of ``versions``."""
        ...

    def counts(self, versions: Sequence[str]) -> dict[str, int]:
        """Passages held per version, for ``versions``."""
        ...

    def total(self) -> int:
        """Passages held in all."""
        ...

    def search(self, query: np.ndarray, limit: int) -> list[PassageHit]:
        """The ``limit`` passages nearest ``query`` (cosine), best first."""
        ...


# ----------------------------------------------------------------------------- choosing one
def parse_spec(spec: str) -> str:
    """``spec`` in its canonical form (what is recorded in the store), or :class:`InputError`.

    ``ram``; ``qdrant:http(s)://HOST[:PORT]``; ``qdrant:DIR`` (Qdrant's embedded engine,
    made absolute so every process finds the same directory); ``qdrant::memory:`` (an
    in-process engine, re-synced from the store by every process: for tests).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"Invalid routing index {spec!r}; use {ROUTING_SPECS}.")
    spec = spec.strip()
    if spec == IN_RAM:
        return spec
    kind, sep, location = spec.partition(":")
    if kind != "qdrant" or not sep or not location:
        raise InputError(f"Invalid routing index {spec!r}; use {ROUTING_SPECS}.")
    if location == ":memory:":
        return spec
    if "://" in location:
        from urllib.parse import urlsplit

        parts = urlsplit(location)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok \
                or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InputError(f"Invalid Qdrant URL {location!r} in routing index {spec!r}: give "
                             "http(s)://HOST[:PORT], e.g. qdrant:http://127.0.0.1:6333.")
        return f"qdrant:{parts.scheme}://{parts.netloc}"
    return f"qdrant:{Path(location).expanduser().resolve()}"


def open_store_index(spec: str, collection: str, *, check: bool) -> StoreIndex:
    """The index a canonical ``spec`` names (``check``: reach it now, for a clear error at once)."""
    from memorag.index.qdrant_store_index import QdrantStoreIndex

    index = QdrantStoreIndex(spec.partition(":")[2], collection)
    if check:
        index.check()
    return index


def store_routing(store: DocStore, requested: str | None) -> StoreRouting | None:
    """The routing index of ``store``: None for routing in RAM.

    ``requested`` None follows what the store records (in RAM if nothing). A requested
    index is recorded in a store that records none (after checking it can be reached, so
    a bad URL is never recorded); one that differs from the recorded one is refused.
    """
    wanted = parse_spec(requested) if requested is not None else None
    recorded = store.settings().get(ROUTING_SETTING)
    if recorded is None and wanted not in (None, IN_RAM):
        import uuid

        setting = {"spec": wanted, "collection": f"memorag-store-{uuid.uuid4().hex[:12]}"}
        open_store_index(wanted, setting["collection"], check=True)
        recorded = store.record_setting(ROUTING_SETTING, setting)  # another process may have been first
    if recorded is None:
        return None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("spec"), str) \
            or not isinstance(recorded.get("collection"), str):
        raise StateError(f"The store {store.root} records an unreadable routing index ({recorded!r}) in its "
                         ".settings.json.")
    if wanted is not None and wanted != recorded["spec"]:
        raise ConflictError(f"The store {store.root} routes with {recorded['spec']!r}; it was asked to use "
                            f"{wanted!r}. Every process must route a store the same way: open it without a "
                            "routing index (it follows the store), or use another store.")
    return StoreRouting(store, open_store_index(recorded["spec"], recorded["collection"], check=False))


# ----------------------------------------------------------------------------- keeping it in step
def read_document_vectors(store: DocStore, name: str, version: str | None = None) -> DocumentVectors:
    """``name``'s passage vectors and their chunk ids, read from its save dir in the store."""
    info = store.info(name)
    if version is not None and info.get("version") != version:
        raise StateError(f"Document {name!r} changed while its vectors were being read; try again.")

    def read(d: Path, manifest: dict) -> DocumentVectors:
        try:
            retrieval = manifest["retrieval"]
            index_info = retrieval["index"]
            payload = json.loads((d / "retrieval" / retrieval.get("chunks_file", CHUNKS_FILE)).read_text("utf-8"))
            owner = np.asarray(payload["passage_owner"], dtype=np.int64)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"The chunks of {name!r} in {store.root} are missing or corrupt: {exc}") from None
        vectors = load_vectors(d / "retrieval", index_info)
        if len(vectors) != len(owner):
            raise StateError(f"The vectors and chunks of {name!r} disagree (corrupt save dir?).")
        return DocumentVectors(name, info["version"], str(info.get("sha256") or ""), vectors, owner)

    with store.reading():
        return load_consistent(store.state_dir(name), read)


class StoreRouting:
    """A store and its routing index, kept in step (see the module docstring)."""

    def __init__(self, store: DocStore, index: StoreIndex) -> None:
        self.store = store
        self.index = index
        self.syncs = 0  # full re-syncs done (tests count them)
        self._held: dict[str, tuple[str, int]] | None = None  # name -> (version, passages) the index holds
        self._passages: dict[str, int] = {}  # version -> passages in its save dir (a version never changes)

    @property
    def spec(self) -> str:
        return self.index.spec

    def _expected(self, name: str, version: str) -> int:
        if version not in self._passages:
            self._passages[version] = int(self._read_manifest_passages(name))
        return self._passages[version]

    def _read_manifest_passages(self, name: str) -> int:
        from memorag.store import read_manifest

        with self.store.reading():
            manifest = read_manifest(self.store.state_dir(name), verify=False)
        try:
            return int(manifest["retrieval"]["n_passages"])
        except (KeyError, TypeError, ValueError):
            raise StateError(f"The manifest of {name!r} in {self.store.root} lacks its passage count.") from None

    def put(self, name: str) -> None:
        """Copy ``name``'s vectors from the store into the index (after the store committed it)."""
        with self._after_commit(name, "stored"):
            doc = read_document_vectors(self.store, name)
            self.index.put(doc)
            self._passages[doc.version] = len(doc.vectors)
            if self._held is not None:
                self._held[name] = (doc.version, len(doc.vectors))

    def remove(self, name: str) -> None:
        """Drop ``name`` from the index (after the store deleted it)."""
        with self._after_commit(name, "deleted from the store"):
            self.index.remove(name)
            if self._held is not None:
                self._held.pop(name, None)

    @contextlib.contextmanager
    def _after_commit(self, name: str, done: str) -> Iterator[None]:
        try:
            yield
        except BackendError as exc:
            self._held = None  # unknown now: the next routing search re-syncs
            raise BackendError(f"{name!r} is {done}, but the routing index could not follow: {exc} It is "
                               "re-synced from the store the next time a question is routed.") from None

    def ensure(self, versions: Sequence[tuple[str, str]]) -> None:
        """Make the index hold exactly ``versions`` (the store's list), re-syncing if it may not."""
        if self._held is not None and dict(versions) == {n: v for n, (v, _) in self._held.items()} \
                and self.index.total() == sum(c for _, c in self._held.values()):
            return
        self.sync(versions)

    def sync(self, versions: Sequence[tuple[str, str]] | None = None) -> dict[str, list[str]]:
        """Re-sync the whole index from the store: points of versions the store no longer
        has are deleted, and every document whose points are missing or incomplete is
        copied again from its saved vectors. Returns the names re-copied."""
        if versions is None:
            versions = [(e["name"], e["version"]) for e in self.store.list()]
        self.syncs += 1
        current = [v for _, v in versions]
        self.index.keep_only(current)
        held = self.index.counts(current)
        copied: list[str] = []
        for name, version in versions:
            if held.get(version, 0) != self._expected(name, version):
                self.put_version(name, version)
                copied.append(name)
        self._held = {name: (version, self._expected(name, version)) for name, version in versions}
        return {"copied": copied}

    def put_version(self, name: str, version: str) -> None:
        doc = read_document_vectors(self.store, name, version)
        self.index.remove(name)  # partial or stale points of this name go first
        self.index.put(doc)
        self._passages[version] = len(doc.vectors)


def route_hits(routing: StoreRouting, versions: Sequence[tuple[str, str]], question: str, k: int, *,
               embedder: Any, lexical: bool, chunks_of: Callable[[str, str], Any]) -> list[tuple[str, float]]:
    """(document, fused score) of the top ``k`` chunks for ``question``, best first: what
    ``Retriever.search([question], k, lexical=lexical)`` gives over every document joined,
    with the dense ranking from one query to the store index.

    ``versions`` is the store's (name, version) list in store order; hits of other versions
    (written since it was read) are ignored. ``chunks_of(name, version)`` gives a document's
    retrieval state, read only for the candidates' BM25 when ``lexical``.
    """
    routing.ensure(versions)
    order = {name: i for i, (name, _) in enumerate(versions)}
    live = dict(versions)
    depth = max(k * 4, 20)  # as Retriever.search ranks each query
    query = np.asarray(embedder.embed([question], is_query=True), dtype=np.float32)[0]
    hits = [h for h in routing.index.search(query, depth * 4) if live.get(h.document) == h.version]
    # Scores at the joined index's float32 precision, and its order among equal ones: documents in
    # store order (its parts), within a document the later passage first (faiss's flat index
    # returns exact ties that way).
    hits.sort(key=lambda h: (-np.float32(h.score), order[h.document], -h.passage))
    dense: list[tuple[str, int]] = []
    for h in hits:
        key = (h.document, h.chunk)
        if key not in dense:
            dense.append(key)
    dense = dense[:depth]
    rankings = [dense]
    if lexical and dense:
        from memorag.collection import join_states
        from memorag.retrieval import Retriever

        candidates = sorted({name for name, _ in dense}, key=order.__getitem__)
        joined = join_states([(n, chunks_of(n, live[n])) for n in candidates])
        bm25 = Retriever(embedder, lambda: joined.state.index)
        bm25.state = joined.state
        rankings.append([joined.locate(h.chunk_id) for h in bm25.bm25_search(question, depth)])
    # Ids for the fusion: positions in the store-ordered join, so ties break as in RAM.
    keys = sorted({key for r in rankings for key in r}, key=lambda nc: (order[nc[0]], nc[1]))
    ids = {key: i for i, key in enumerate(keys)}
    fused = weighted_rrf([[ids[key] for key in r] for r in rankings], [1.0] * len(rankings))
    return [(keys[i][0], score) for i, score in fused[:k]]
