"""Token-aware, sentence-respecting chunking.

semantic-text-splitter does the splitting (it prefers paragraph, then sentence, then word
boundaries, with Unicode sentence rules that also cover Chinese punctuation). We count
tokens with the embedder's own tokenizer so that a chunk's size is what the embedder sees.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from memorag.errors import InputError

MIN_CHUNK_TOKENS = 16


def check_chunk_tokens(chunk_tokens: int) -> int:
    """Refuse a chunk size too small to hold a sentence (``retrieval_chunk_size``, ``--chunk-tokens``)."""
    try:
        n = operator.index(chunk_tokens)
    except TypeError:
        n = None
    if n is None or isinstance(chunk_tokens, bool) or n < MIN_CHUNK_TOKENS:
        raise InputError(f"The chunk size (retrieval_chunk_size / --chunk-tokens) must be a whole number of at "
                         f"least {MIN_CHUNK_TOKENS} tokens; got {chunk_tokens!r}. The default is 512.")
    return n


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offset in the document

    def to_json(self) -> dict:
        return {"text": self.text, "start": self.start}


class Chunker:
    def __init__(self, tokenizer, chunk_tokens: int = 512, overlap_tokens: int = 0) -> None:
        from semantic_text_splitter import TextSplitter

        check_chunk_tokens(chunk_tokens)
        self.chunk_tokens = chunk_tokens
        # A range capacity lets a chunk close at a paragraph end once it is 60% full
        # instead of cutting mid-paragraph to reach the maximum.
        low = max(8, int(chunk_tokens * 0.6))
        self._splitter = TextSplitter.from_huggingface_tokenizer(
            tokenizer, (low, chunk_tokens), overlap=overlap_tokens
        )

    def split(self, text: str) -> list[Chunk]:
        return [Chunk(text=t, start=int(i)) for i, t in self._splitter.chunk_indices(text) if t.strip()]
