"""faiss backend: exact inner-product search (IndexFlatIP) over normalised vectors.

Vectors are saved as a plain ``.npy`` (loaded with ``allow_pickle=False``) and the flat
index is rebuilt on load: for the few thousand to few hundred thousand passages of one
document this takes milliseconds and avoids trusting a binary index file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memorag.errors import BackendError
from memorag.index.base import VECTORS_FILE, load_vectors


class FaissIndex:
    spec = "faiss"

    def __init__(self, dimension: int | None = None) -> None:
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover
            raise BackendError("faiss-cpu is not installed: `pip install faiss-cpu`.") from exc
        self._faiss = faiss
        self._index = None
        self._dim = dimension
        self._vectors = np.zeros((0, dimension or 0), dtype=np.float32)

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError("vectors must be a 2-D array")
        if self._index is None:
            self._dim = vectors.shape[1]
            self._index = self._faiss.IndexFlatIP(self._dim)
            self._vectors = np.zeros((0, self._dim), dtype=np.float32)
        self._index.add(vectors)
        self._vectors = np.concatenate([self._vectors, vectors]) if len(self._vectors) else vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self._index is None or len(self) == 0:
            return (np.full((len(queries), k), -np.inf, np.float32), -np.ones((len(queries), k), np.int64))
        # faiss pads k > n itself with id -1 (and -FLT_MAX scores: made -inf, as the protocol says).
        scores, ids = self._index.search(queries, k)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    def save(self, directory: Path) -> dict:
        np.save(Path(directory) / VECTORS_FILE, self._vectors, allow_pickle=False)
        return {"backend": "faiss", "file": VECTORS_FILE, "count": len(self), "dimension": self._dim}

    def load(self, directory: Path, info: dict) -> None:
        vectors = load_vectors(directory, info)
        self._index = None
        self.add(vectors)
