"""Chunk, embed, index and search one document.

Chunks are what the generator reads (default ~512 tokens). The embedder may read fewer
tokens than that (all-MiniLM-L6-v2 truncates at 256), so each chunk is embedded as one or
more *passages* that fit the embedder, and a chunk scores as its best passage: retrieval
sees every word while the evidence handed to the generator keeps its context.

Several queries (the question, the memory's clues, surrogate questions) are searched in
one batch and fused with weighted reciprocal-rank fusion.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memorag.checkpoint import CheckpointRun, embed_in_batches
from memorag.chunking import Chunk, Chunker, check_chunk_tokens
from memorag.embed.base import Embedder
from memorag.errors import StateError
from memorag.index.base import VectorIndex
from memorag.text import detect_language

CHUNKS_FILE = "chunks.json"
# Reciprocal-rank-fusion constant. 60 is the usual value, set for rankings 1000 deep; ours
# are ~20 deep, where k=60 makes rank 1 worth only 1.3x rank 20 and fusion a vote count.
# k=20 was as good or better for every query plan on 40 HotpotQA questions (the fusion study: bench/README.md).
RRF_K = 20


@dataclass
class Hit:
    chunk_id: int
    score: float
    text: str
    # the part of the chunk a query-likelihood judge read and scored best (one paragraph,
    # see memorag.plans.likelihood_scores); None when no judge read the chunk
    passage: str | None = None
    # how the chunk became a candidate, as the plan knows it (memorag.plans.FOUND_BY):
    # "question" (the question's own search), "memory" (a memory clue pointed at it),
    # "links" (a link walk reached it); empty when the plan does not tell them apart.
    # Why: a judge reorders what it is given, so the evidence a memory brought is told
    # from the evidence the question found, answer by answer (docs/evaluation.md).
    found_by: tuple[str, ...] = ()


def weighted_rrf(rankings: list[list[int]], weights: list[float], k: int | None = None) -> list[tuple[int, float]]:
    """Fuse ranked id lists: ``score(id) = sum_i w_i / (k + rank_i(id))``, best first."""
    k = RRF_K if k is None else k
    scores: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        for rank, doc in enumerate(ranking):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank + 1)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


@dataclass(frozen=True, eq=False)
class RetrievalState:
    """One document's retrieval side: chunks, which chunk each embedded passage belongs to,
    the vector index over the passages, and the document's language (which picks the
    BM25 tokenizer). Built whole by :meth:`Retriever.prepare` / :meth:`Retriever.read`
    and swapped in by assignment, so a failed build never leaves a mix of two documents.
    BM25 and the sentence index are built on first use and cached here, with the document."""

    chunks: list[Chunk]
    passage_owner: np.ndarray
    index: VectorIndex
    language: str = "en"
    cache: dict = field(default_factory=dict, repr=False)


class Retriever:
    def __init__(self, embedder: Embedder, index_factory: Callable[[], VectorIndex],
                 chunk_tokens: int = 512, batch_size: int = 32) -> None:
        self.embedder = embedder
        self.index_factory = index_factory
        self.chunk_tokens = check_chunk_tokens(chunk_tokens)
        self.batch_size = batch_size
        self.state: RetrievalState | None = None

    # The current document's parts (empty before a build or load).
    @property
    def chunks(self) -> list[Chunk]:
        return self.state.chunks if self.state else []

    @property
    def passage_owner(self) -> np.ndarray:
        return self.state.passage_owner if self.state else np.zeros(0, dtype=np.int64)

    @property
    def index(self) -> VectorIndex | None:
        return self.state.index if self.state else None

    # ----------------------------------------------------------------- build
    def passages(self, chunks: list[Chunk]) -> tuple[list[str], list[int]]:
        """The texts the embedder reads for ``chunks`` (a chunk longer than the embedder's input
        is cut into several) and, for each, the index of its chunk."""
        fit = max(16, self.embedder.max_tokens - 2)  # room for [CLS]/[SEP]
        if fit >= self.chunk_tokens:
            return [c.text for c in chunks], list(range(len(chunks)))
        sub = Chunker(self.embedder.tokenizer(), chunk_tokens=fit)
        texts, owner = [], []
        for i, c in enumerate(chunks):
            for piece in sub.split(c.text) or [Chunk(c.text, 0)]:
                texts.append(piece.text)
                owner.append(i)
        return texts, owner

    def prepare(self, text: str, progress: Callable[[int, int], None] | None = None,
                language: str | None = None, checkpoints: CheckpointRun | None = None) -> RetrievalState:
        """Chunk, embed and index ``text`` into a new state, leaving the current one alone.

        With ``checkpoints`` each embedded batch is checkpointed and batches a killed
        earlier run finished are taken from its checkpoint (memorag.checkpoint)."""
        chunker = Chunker(self.embedder.tokenizer(), chunk_tokens=self.chunk_tokens)
        chunks = chunker.split(text)
        texts, owner = self.passages(chunks)
        index = self.index_factory()
        checkpoint = checkpoints.embeddings(texts, self.batch_size, document=text, chunk_tokens=self.chunk_tokens,
                                            embedder=self.embedder.describe(), dimension=self.embedder.dimension
                                            ) if checkpoints is not None else None
        for done, vectors in embed_in_batches(self.embedder.embed, texts, self.batch_size, checkpoint):
            index.add(vectors)
            if progress:
                progress(done, len(texts))
        return RetrievalState(chunks, np.asarray(owner, dtype=np.int64), index, language or detect_language(text))

    def build(self, text: str, progress: Callable[[int, int], None] | None = None,
              language: str | None = None) -> dict:
        """:meth:`prepare` ``text`` and make it the current document (only once complete)."""
        self.state = self.prepare(text, progress, language)
        return self.stats(self.state)

    @staticmethod
    def stats(state: RetrievalState) -> dict:
        return {"chunks": len(state.chunks), "passages": len(state.passage_owner)}

    # ---------------------------------------------------------------- search
    def _check(self) -> RetrievalState:
        if self.state is None or not self.state.chunks:
            raise StateError("The retriever has no index: memorize or load a document first.")
        return self.state

    def rank_chunks(self, queries: list[str], depth: int) -> list[list[int]]:
        """Dense search: for each query, chunk ids best first (a chunk scores as its best passage)."""
        state = self._check()
        qv = self.embedder.embed(queries, is_query=True)
        n_pass = min(len(state.passage_owner), max(depth * 4, depth))
        _, ids = state.index.search(qv, n_pass)
        out = []
        for row in ids:
            seen: list[int] = []
            for pid in row:
                if pid < 0:
                    continue
                cid = int(state.passage_owner[pid])
                if cid not in seen:
                    seen.append(cid)
            out.append(seen[:depth])
        return out

    def search(self, queries: list[str], k: int, weights: list[float] | None = None,
               lexical: bool = False, lexical_weight: float = 1.0,
               extra_rankings: list[tuple[list[int], float]] | None = None,
               rrf_k: int | None = None) -> list[Hit]:
        """Search every query, fuse with weighted RRF, return the top ``k`` distinct chunks.

        With ``lexical`` each query is also run through BM25, its ranking weighted by
        ``lexical_weight`` times the query's weight (hybrid retrieval). MiniLM-sized embedders miss rare names and numbers that BM25 matches
        exactly, and memory clues are mostly useful for the names they bring.
        ``extra_rankings`` are (chunk ids best first, weight) pairs fused alongside, e.g.
        the chunks that hold sentences a grounded clue quotes.
        """
        pairs = [(q, w) for q, w in zip(queries, weights or [1.0] * len(queries)) if q.strip() and w > 0]
        if not pairs:
            return []
        depth = max(k * 4, 20)
        rankings = self.rank_chunks([q for q, _ in pairs], depth=depth)
        ws = [w for _, w in pairs]
        if lexical:
            rankings += [[h.chunk_id for h in self.bm25_search(q, depth)] for q, _ in pairs]
            ws += [w * lexical_weight for w in ws]
        for ranking, w in extra_rankings or []:
            rankings.append(ranking)
            ws.append(w)
        fused = weighted_rrf(rankings, ws, rrf_k)
        chunks = self._check().chunks
        return [Hit(cid, score, chunks[cid].text) for cid, score in fused[:k]]

    def bm25_search(self, query: str, k: int) -> list[Hit]:
        """Lexical baseline over the same chunks (bm25s; jieba words for Chinese documents).

        The tokenizer follows the document's language (known since it was memorized), so
        a query and the chunks it is matched against are always cut into words the same way.
        """
        state = self._check()
        import bm25s

        tok = _bm25_tokenizer(state.language)
        model = state.cache.get("bm25")
        if model is None:
            model = bm25s.BM25()
            model.index(tok([c.text for c in state.chunks]), show_progress=False)
            state.cache["bm25"] = model
        n = min(k, len(state.chunks))
        docs, scores = model.retrieve(tok([query]), k=n, show_progress=False)
        return [Hit(int(d), float(s), state.chunks[int(d)].text) for d, s in zip(docs[0], scores[0])]

    # ----------------------------------------------------------- persistence
    def save(self, directory: Path, state: RetrievalState | None = None) -> dict:
        """Write ``state`` (default: the current document) into ``directory``."""
        state = state or self._check()
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"chunks": [c.to_json() for c in state.chunks], "passage_owner": state.passage_owner.tolist()}
        (directory / CHUNKS_FILE).write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        info = {"chunks_file": CHUNKS_FILE, "chunk_tokens": self.chunk_tokens,
                "n_chunks": len(state.chunks), "n_passages": len(state.passage_owner)}
        info["index"] = state.index.save(directory)
        return info

    def read(self, directory: Path, info: dict, language: str | None = None) -> RetrievalState:
        """A state saved by :meth:`save`, checked against ``info``; the current one is left alone."""
        path = directory / info.get("chunks_file", CHUNKS_FILE)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            chunks = [Chunk(text=c["text"], start=int(c["start"])) for c in payload["chunks"]]
            owner = np.asarray(payload["passage_owner"], dtype=np.int64)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"Chunk file {path} is missing or corrupt: {exc}") from None
        if len(chunks) != info.get("n_chunks") or len(owner) != info.get("n_passages"):
            raise StateError(f"Chunk file {path} does not match the manifest (corrupt save dir?).")
        index = self.index_factory()
        index.load(directory, info["index"])
        if len(index) != len(owner):
            raise StateError("The saved index and chunk list disagree (corrupt save dir?).")
        if language is None:  # save dirs record it in the manifest; older callers may not pass it
            language = detect_language(" ".join(c.text for c in chunks[:50]))
        return RetrievalState(chunks, owner, index, language)

    def load(self, directory: Path, info: dict, language: str | None = None) -> None:
        self.state = self.read(directory, info, language)
        self.chunk_tokens = int(info.get("chunk_tokens", self.chunk_tokens))

    def sentence_index(self, language: str | None = None):
        """The document's sentences, indexed for grounding clues (built on first use, ~ms per 1K sentences)."""
        state = self._check()
        from memorag.grounding import SentenceIndex

        language = language or state.language
        index = state.cache.get("sentences")
        if index is None or index.language != language:
            index = state.cache["sentences"] = SentenceIndex(state.chunks, language)
        return index


def _bm25_tokenizer(language: str) -> Callable[[list[str]], list[list[str]]]:
    if language == "zh":
        import jieba

        return lambda texts: [[w for w in jieba.lcut(t) if w.strip()] for t in texts]
    import bm25s

    return lambda texts: bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)
