"""The vector index protocol: inner-product search over L2-normalised vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VectorIndex(Protocol):
    spec: str

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, ids)``, each of shape ``(len(queries), k)``; missing ids are -1."""
        ...

    def save(self, directory: Path) -> dict: ...

    def load(self, directory: Path, info: dict) -> None: ...
