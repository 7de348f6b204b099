"""The embedder protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    spec: str

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Longest input (in the embedder's own tokens) the model reads; longer is truncated."""
        ...

    def tokenizer(self):  # -> tokenizers.Tokenizer
        """A Hugging Face ``tokenizers.Tokenizer`` that counts this model's tokens (for chunking)."""
        ...

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        """Return L2-normalised float32 vectors, one row per text."""
        ...

    def describe(self) -> dict: ...
