"""Qdrant backend: the index lives in a Qdrant collection (embedded or on a server).

Spec strings (see :func:`memorag.models.registry.make_index_factory`):

- ``qdrant`` — qdrant-client's embedded in-process engine, in memory;
- ``qdrant:/some/dir`` — the embedded engine persisted in a local directory;
- ``qdrant:http://host:6333`` — a Qdrant server (``QDRANT_API_KEY`` is read from the environment).

The save dir still holds the vectors as a plain ``.npy`` (never pickle), so a memorized
document stays portable: on load the saved collection (its name is unique per index) is
reused when it still holds as many points as were saved, and rebuilt from the ``.npy``
otherwise (new machine, server wiped, in-memory engine).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import uuid
from pathlib import Path

import numpy as np

from memorag.errors import BackendError
from memorag.index.base import VECTORS_FILE, load_vectors

try:
    from qdrant_client import QdrantClient, models
except ImportError as exc:  # pragma: no cover - the registry turns this into a clear message
    raise ImportError("qdrant-client is not installed: pip install 'memorag[qdrant]'") from exc

UPLOAD_BATCH = 256


_LOCAL_CLIENTS: dict[str, QdrantClient] = {}


def _close_local_clients() -> None:
    # Close embedded clients while the interpreter is still whole: qdrant-client's own
    # __del__ runs during shutdown and prints an ImportError traceback.
    for client in _LOCAL_CLIENTS.values():
        with contextlib.suppress(Exception):  # best effort at exit
            client.close()
    _LOCAL_CLIENTS.clear()


atexit.register(_close_local_clients)


def open_client(location: str | None) -> QdrantClient:
    """A Qdrant client for ``location``: in memory, a server URL, or an embedded directory (shared per process)."""
    if not location or location == ":memory:":
        return QdrantClient(location=":memory:")
    if location.startswith(("http://", "https://")):
        return QdrantClient(url=location, api_key=os.environ.get("QDRANT_API_KEY"), timeout=30,
                            check_compatibility=False)
    # The embedded engine locks its directory: one client per directory per process.
    path = str(Path(location).expanduser().resolve())
    if path not in _LOCAL_CLIENTS:
        Path(path).mkdir(parents=True, exist_ok=True)
        _LOCAL_CLIENTS[path] = QdrantClient(path=path)
    return _LOCAL_CLIENTS[path]


class QdrantIndex:
    """Cosine search over normalised vectors; point ids are passage numbers."""

    def __init__(self, location: str | None = None, collection: str | None = None) -> None:
        self.location = location
        self.spec = f"qdrant:{location}" if location else "qdrant"
        try:
            self._client = open_client(location)
        except Exception as exc:  # qdrant raises several types for a bad path or URL
            raise BackendError(f"Cannot open Qdrant at {location or ':memory:'}: {exc}") from None
        self.collection = collection or f"memorag-{uuid.uuid4().hex[:12]}"
        self._vectors = np.zeros((0, 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._vectors)

    def _ensure_collection(self, dim: int) -> None:
        try:
            if not self._client.collection_exists(self.collection):
                self._client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
        except Exception as exc:
            raise BackendError(f"Qdrant at {self.location or ':memory:'} refused the collection: {exc}") from None

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError("vectors must be a 2-D array")
        self._ensure_collection(vectors.shape[1])
        start = len(self._vectors)
        try:
            for offset in range(0, len(vectors), UPLOAD_BATCH):
                batch = vectors[offset : offset + UPLOAD_BATCH]
                self._client.upsert(self.collection, wait=True, points=models.Batch(
                    ids=list(range(start + offset, start + offset + len(batch))), vectors=batch.tolist()))
        except Exception as exc:
            raise BackendError(f"Uploading vectors to Qdrant failed: {exc}") from None
        self._vectors = np.concatenate([self._vectors, vectors]) if len(self._vectors) else vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = -np.ones((len(queries), k), np.int64)
        if not len(self):
            return scores, ids
        requests = [models.QueryRequest(query=q.tolist(), limit=k) for q in queries]
        try:
            responses = self._client.query_batch_points(self.collection, requests=requests)
        except Exception as exc:
            raise BackendError(f"Qdrant search failed: {exc}") from None
        for row, response in enumerate(responses):
            for col, point in enumerate(response.points[:k]):
                scores[row, col] = point.score
                ids[row, col] = int(point.id)
        return scores, ids

    def save(self, directory: Path) -> dict:
        np.save(Path(directory) / VECTORS_FILE, self._vectors, allow_pickle=False)
        return {"backend": "qdrant", "location": self.location, "collection": self.collection,
                "file": VECTORS_FILE, "count": len(self)}

    def load(self, directory: Path, info: dict) -> None:
        vectors = load_vectors(directory, info)
        self.collection = info.get("collection") or self.collection
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        try:
            exists = self._client.collection_exists(self.collection)
            count = self._client.count(self.collection, exact=True).count if exists else -1
        except Exception as exc:
            raise BackendError(f"Cannot reach Qdrant at {self.location or ':memory:'}: {exc}") from None
        if count == len(vectors):
            return  # the collection survived (persistent path or server): nothing to upload
        if exists:
            self._client.delete_collection(self.collection)
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self.add(vectors)
