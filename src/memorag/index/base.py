"""The vector index protocol: inner-product search over L2-normalised vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from memorag.errors import StateError

VECTORS_FILE = "vectors.npy"


@runtime_checkable
class VectorIndex(Protocol):
    spec: str

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, ids)``, each of shape ``(len(queries), k)``, best first.

        Scores are float32 inner products, ids int64 positions in insertion order. With
        fewer than ``k`` vectors the rows are padded to ``k`` with id -1 and score -inf
        (``memorag.testing.contracts.VECTOR_INDEX_CHECKS`` checks all of this).
        """
        ...

    def save(self, directory: Path) -> dict: ...

    def load(self, directory: Path, info: dict) -> None: ...


def load_vectors(directory: Path, info: dict) -> np.ndarray:
    """The saved ``.npy`` vectors of an index (never pickle), checked against the manifest."""
    path = Path(directory) / info.get("file", VECTORS_FILE)
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # EOFError: an empty file
        raise StateError(f"Index vectors {path} are missing or corrupt: {exc}") from None
    if vectors.ndim != 2 or len(vectors) != int(info.get("count", -1)):
        raise StateError(f"Index vectors {path} do not match the manifest (corrupt save dir?).")
    return np.ascontiguousarray(vectors, dtype=np.float32)
