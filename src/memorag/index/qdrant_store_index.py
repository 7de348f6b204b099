"""The store-wide routing index on Qdrant: one collection, one point per passage of every document.

Point ids are UUIDs derived from (document, version, passage), so copying a document
again is an idempotent upsert. Each point's payload names its ``document``, store
``version``, text ``sha256``, ``chunk`` and ``passage``; ``document`` and ``version`` are
keyword-indexed (deletes by filter and per-version counts). Locations are those of
:mod:`memorag.index.qdrant_index` (``:memory:``, a directory, an http(s) URL with
``QDRANT_API_KEY`` from the environment), whose client cache this module shares.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np

from memorag.errors import BackendError
from memorag.index.qdrant_index import UPLOAD_BATCH, QdrantClient, models, open_client
from memorag.index.store_index import DocumentVectors, PassageHit

_POINT_IDS = uuid.UUID("5b0c5d2e-6f55-4d0c-9a57-6d656d6f7261")  # namespace of this index's point ids
PAYLOAD = ("document", "version", "chunk", "passage")


def point_id(name: str, version: str, passage: int) -> str:
    return str(uuid.uuid5(_POINT_IDS, f"{name}\0{version}\0{passage}"))


class QdrantStoreIndex:
    def __init__(self, location: str, collection: str) -> None:
        self.location = location
        self.spec = f"qdrant:{location}"
        self.collection = collection
        self._opened: QdrantClient | None = None
        self._exists: bool | None = None

    @property
    def _client(self) -> QdrantClient:
        # Opened on first use: listing or deleting in a store that routes on Qdrant needs no
        # connection until the index is touched (and the embedded engine locks its directory).
        if self._opened is None:
            try:
                self._opened = open_client(self.location)
            except Exception as exc:  # qdrant raises several types for a bad path or URL
                raise BackendError(f"Cannot open Qdrant at {self.location}: {exc}") from None
        return self._opened

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # connection refused, timeouts, HTTP errors: one clear message
            raise BackendError(f"Qdrant at {self.location} failed to {what} (collection {self.collection}): "
                               f"{exc}") from None

    def check(self) -> None:
        """Reach the server (or open the directory) now."""
        self._call("answer", self._client.get_collections)

    def _ready(self, dimension: int | None) -> bool:
        """Whether the collection exists; with ``dimension``, create it if it does not."""
        if not self._exists:
            self._exists = self._call("look up the collection", self._client.collection_exists, self.collection)
        if not self._exists and dimension is not None:
            self._call("create the collection", self._client.create_collection, self.collection,
                       vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE))
            # The embedded engine has no payload indexes (it filters by scanning) and warns if asked.
            for key in ("document", "version") if self.location.startswith(("http://", "https://")) else ():
                self._call("index the payload", self._client.create_payload_index, self.collection, key,
                           field_schema=models.PayloadSchemaType.KEYWORD)
            self._exists = True
        return bool(self._exists)

    def _delete(self, flt: models.Filter) -> None:
        if self._ready(None):
            self._call("delete points", self._client.delete, self.collection,
                       points_selector=models.FilterSelector(filter=flt), wait=True)

    @staticmethod
    def _is(key: str, value: str) -> models.FieldCondition:
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    def put(self, doc: DocumentVectors) -> None:
        vectors = np.ascontiguousarray(doc.vectors, dtype=np.float32)
        if len(vectors):
            self._ready(vectors.shape[1])
        for start in range(0, len(vectors), UPLOAD_BATCH):
            batch = range(start, min(start + UPLOAD_BATCH, len(vectors)))
            points = models.Batch(
                ids=[point_id(doc.name, doc.version, p) for p in batch],
                vectors=vectors[batch.start:batch.stop].tolist(),
                payloads=[{"document": doc.name, "version": doc.version, "sha256": doc.sha256,
                           "chunk": int(doc.passage_chunk[p]), "passage": p} for p in batch])
            self._call("store vectors", self._client.upsert, self.collection, points=points, wait=True)
        # Then, not before: the document is never missing from the index while it is replaced.
        self._delete(models.Filter(must=[self._is("document", doc.name)],
                                   must_not=[self._is("version", doc.version)]))

    def remove(self, name: str) -> None:
        self._delete(models.Filter(must=[self._is("document", name)]))

    def keep_only(self, versions: Sequence[str]) -> None:
        self._delete(models.Filter(must_not=[models.FieldCondition(
            key="version", match=models.MatchAny(any=list(versions)))]))

    def counts(self, versions: Sequence[str]) -> dict[str, int]:
        if not versions or not self._ready(None):
            return {}
        response = self._call("count points", self._client.facet, self.collection, key="version",
                              facet_filter=models.Filter(must=[models.FieldCondition(
                                  key="version", match=models.MatchAny(any=list(versions)))]),
                              limit=len(versions), exact=True)
        return {str(hit.value): int(hit.count) for hit in response.hits}

    def total(self) -> int:
        self._exists = None  # looked up afresh: a server may have lost the collection
        if not self._ready(None):
            return 0
        return int(self._call("count points", self._client.count, self.collection, exact=True).count)

    def search(self, query: np.ndarray, limit: int) -> list[PassageHit]:
        if limit < 1 or not self._ready(None):
            return []
        response = self._call("search", self._client.query_points, self.collection,
                              query=np.asarray(query, dtype=np.float32).tolist(), limit=limit,
                              with_payload=list(PAYLOAD))
        return [PassageHit(str(p.payload["document"]), str(p.payload["version"]), int(p.payload["chunk"]),
                           int(p.payload["passage"]), float(p.score)) for p in response.points]
