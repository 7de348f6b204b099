"""Token-aware, sentence-respecting chunking.

semantic-text-splitter does the splitting (it prefers paragraph, then sentence, then word
boundaries, with Unicode sentence rules that also cover Chinese punctuation). We count
tokens with the embedder's own tokenizer so that a chunk's size is what the embedder sees.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offset in the document

    def to_json(self) -> dict:
        return {"text": self.text, "start": self.start}


class Chunker:
    def __init__(self, tokenizer, chunk_tokens: int = 512, overlap_tokens: int = 0) -> None:
        from semantic_text_splitter import TextSplitter

        if chunk_tokens < 16:
            raise ValueError("chunk_tokens must be at least 16")
        self.chunk_tokens = chunk_tokens
        # A range capacity lets a chunk close at a paragraph end once it is 60% full
        # instead of cutting mid-paragraph to reach the maximum.
        low = max(8, int(chunk_tokens * 0.6))
        self._splitter = TextSplitter.from_huggingface_tokenizer(
            tokenizer, (low, chunk_tokens), overlap=overlap_tokens
        )

    def split(self, text: str) -> list[Chunk]:
        return [Chunk(text=t, start=int(i)) for i, t in self._splitter.chunk_indices(text) if t.strip()]
