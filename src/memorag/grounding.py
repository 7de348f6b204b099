"""Ground the memory's clues in the document's own sentences.

A small memory model "recalls" two kinds of lines: real quotes (often paraphrased a
little) and invented facts that name the wrong person or place. Searched as they are,
invented lines pull in wrong chunks; that is why clues used to lose to question-only
retrieval (docs/evaluation.md). Here every clue line is matched against the document's
sentences. A line counts as *grounded* when the words it adds to the question (its novel
content words) are mostly found in one real sentence; that sentence, not the model's
wording, then enters retrieval, and its chunk is a direct hit. Lines whose novel words
the document does not hold are dropped: an invented clue costs nothing.

Language: English words (lower-cased, stop words removed) or, for Chinese, jieba words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SENT_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])[\"'\u201d\u300d)]*\s+|(?<=[\u3002\uff01\uff1f])|\n+")
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f0-9]+(?:['\u2019][A-Za-z]+)?")
_STOP = frozenset(["a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "is", "was", "were", "are", "be", "been", "being", "it", "its", "this", "that", "these", "those", "he", "she", "they", "them", "his", "her", "their", "him", "we", "you", "i", "me", "my", "our", "your", "who", "whom", "whose", "which", "what", "when", "where", "why", "how", "not", "no", "do", "does", "did", "done", "have", "has", "had", "having", "there", "here", "than", "then", "so", "such", "can", "could", "would", "should", "will", "shall", "may", "might", "must", "also", "into", "about", "over", "after", "before", "up", "down", "out", "off", "very", "more", "most", "any", "all", "some", "each", "other", "one", "two", "said", "says", "say", "mr", "mrs", "miss", "ms", "document", "question", "answer", "quote", "quotes", "text", "passage"])


@dataclass(frozen=True)
class Sentence:
    chunk_id: int
    text: str
    start: int  # character offset in the document


def split_sentences(text: str, min_chars: int = 12) -> list[tuple[int, str]]:
    """(offset within ``text``, sentence) pairs; very short fragments are merged forward."""
    out: list[tuple[int, str]] = []
    pos = 0
    pending_start, pending = None, ""
    for m in _SENT_END.finditer(text):
        piece = text[pos:m.start()]
        if pending_start is None:
            pending_start = pos + (len(piece) - len(piece.lstrip()))
        pending += piece if not pending else " " + piece.strip()
        pos = m.end()
        if len(pending.strip()) >= min_chars:
            out.append((pending_start, pending.strip()))
            pending_start, pending = None, ""
    tail = text[pos:]
    if tail.strip():
        if pending_start is None:
            pending_start = pos + (len(tail) - len(tail.lstrip()))
        pending += tail if not pending else " " + tail.strip()
    if pending.strip():
        out.append((pending_start or 0, pending.strip()))
    return out


def content_words(text: str, language: str = "en") -> list[str]:
    """Words that carry meaning: lower-cased, no stop words (jieba words for Chinese)."""
    if language == "zh":
        import jieba

        return [w for w in jieba.lcut(text.lower()) if len(w.strip()) > 1 or re.match(r"[\u4e00-\u9fff]", w)]
    return [w for w in (m.group().lower() for m in _WORD.finditer(text)) if w not in _STOP and len(w) > 1]


@dataclass
class GroundedClue:
    clue: str
    sentence: Sentence | None  # the real sentence the clue points at, or None (invented)
    coverage: float  # share of the clue's novel words found in that sentence
    novel_words: int

    @property
    def grounded(self) -> bool:
        return self.sentence is not None


class SentenceIndex:
    """The document's sentences with BM25 over them, to find the sentence a clue quotes."""

    def __init__(self, chunks: list, language: str = "en") -> None:
        import bm25s

        self.language = language
        self.sentences: list[Sentence] = []
        for cid, chunk in enumerate(chunks):
            for off, s in split_sentences(chunk.text):
                self.sentences.append(Sentence(cid, s, chunk.start + off))
        self._words = [set(content_words(s.text, language)) for s in self.sentences]
        self._by_chunk: dict[int, list[int]] = {}
        for sid, s in enumerate(self.sentences):
            self._by_chunk.setdefault(s.chunk_id, []).append(sid)
        df: dict[str, int] = {}
        for words in self._words:
            for w in words:
                df[w] = df.get(w, 0) + 1
        n = max(1, len(self._words))
        self._idf = {w: math.log(1 + n / c) for w, c in df.items()}
        self._bm25 = bm25s.BM25()
        corpus = [sorted(w) or ["_"] for w in self._words]
        self._bm25.index(corpus, show_progress=False)

    def idf_overlap(self, words: set[str], text: str) -> float:
        """Summed IDF (over the document's sentences) of ``words`` that ``text`` contains."""
        return sum(self._idf.get(w, 0.0) for w in words & set(content_words(text, self.language)))

    def window(self, chunk_id: int, question: str, max_chars: int = 400) -> str:
        """The part of a chunk that best matches ``question``: its best sentence (by the IDF
        of the question words it holds) with the sentences around it, up to ``max_chars``.
        A judge reads this instead of the whole chunk: ~100 tokens instead of ~500."""
        best = self.best_sentence(chunk_id, question)
        if best is None:
            return ""
        sids = self._by_chunk[chunk_id]
        i = sids.index(best)
        lo, hi = i, i + 1
        text = self.sentences[best].text[:max_chars]
        while True:  # grow one sentence at a time, the one before first (often a title or a name)
            grown = False
            for j in (lo - 1, hi):
                if 0 <= j < len(sids) and (j < lo or j >= hi):
                    cand = self.sentences[sids[j]].text
                    if len(text) + len(cand) + 1 <= max_chars:
                        text = f"{cand} {text}" if j < lo else f"{text} {cand}"
                        lo, hi = min(lo, j), max(hi, j + 1)
                        grown = True
            if not grown:
                return text

    def best_sentence(self, chunk_id: int, question: str) -> int | None:
        """The id of the chunk's sentence holding the most (IDF-weighted) question words."""
        sids = self._by_chunk.get(chunk_id, [])
        if not sids:
            return None
        q = set(content_words(question, self.language))
        return max(sids, key=lambda sid: (self.sentence_overlap(sid, q), -sid))

    def sentence_overlap(self, sid: int, words: set[str]) -> float:
        """:meth:`idf_overlap` of one indexed sentence, from its stored words (no re-tokenizing)."""
        return sum(self._idf.get(w, 0.0) for w in words & self._words[sid])

    def excerpt(self, chunk_id: int, keep: set[int], around: int = 1) -> str:
        """The chunk's sentences in ``keep`` with ``around`` sentences either side, in
        document order; a gap between kept runs is marked with an ellipsis."""
        sids = self._by_chunk.get(chunk_id, [])
        marked = {i for i, sid in enumerate(sids) if sid in keep}
        shown = sorted({j for i in marked for j in range(i - around, i + around + 1) if 0 <= j < len(sids)})
        parts: list[str] = []
        for pos, j in enumerate(shown):
            if pos and j != shown[pos - 1] + 1:
                parts.append("...")
            parts.append(self.sentences[sids[j]].text)
        return " ".join(parts)

    def sentences_of(self, chunk_id: int) -> list[int]:
        return self._by_chunk.get(chunk_id, [])

    def words_of(self, sid: int) -> set[str]:
        return self._words[sid]

    def links(self, sid: int, known: set[str], max_df: int) -> list[tuple[float, int]]:
        """Sentences that share a rare word with sentence ``sid``, best first, as
        (score, sentence id).

        A word links two sentences when fewer than ``max_df`` + 1 sentences of the document
        hold it and it is not in ``known`` (the question's words and the words already
        followed): a name or code that occurs in a handful of places ties them together,
        a common word ties everything to everything. Score: the summed IDF of the shared
        rare words."""
        if not hasattr(self, "_postings"):
            postings: dict[str, list[int]] = {}
            for i, words in enumerate(self._words):
                for w in words:
                    postings.setdefault(w, []).append(i)
            self._postings = postings
        scores: dict[int, float] = {}
        for w in self._words[sid] - known:
            hits = self._postings.get(w, [])
            if len(hits) > max_df:
                continue
            for other in hits:
                if other != sid:
                    scores[other] = scores.get(other, 0.0) + self._idf.get(w, 0.0)
        return sorted(((sc, o) for o, sc in scores.items()), key=lambda t: (-t[0], t[1]))

    def candidates(self, text: str, n: int = 8) -> list[int]:
        words = content_words(text, self.language)
        if not words or not self.sentences:
            return []
        n = min(n, len(self.sentences))
        # bm25s drops query words it has never seen; a query of only unseen words matches nothing.
        known = [w for w in words if w in self._bm25.vocab_dict]
        if not known:
            return []
        ids, scores = self._bm25.retrieve([known], k=n, show_progress=False)
        return [int(i) for i, s in zip(ids[0], scores[0]) if s > 0]

    def ground(self, clue: str, question: str, min_coverage: float = 0.6, min_novel: int = 2) -> GroundedClue:
        """Match one clue line to the sentence that holds most of the words it adds to the question.

        Coverage is measured on the clue's *novel* content words (not in the question): a
        clue that only restates the question brings nothing, and one whose new names are
        not in the document is invented. ``min_coverage`` 0.6 lets a quote survive small
        paraphrases and a dropped word while an invented bridge entity (usually 1-3 new
        words, none in the matched sentence) stays below it. A line that adds fewer than
        ``min_novel`` (2) words, such as a surrogate question that rephrases the question
        with one new word, is too thin to point at one sentence.
        """
        q_words = set(content_words(question, self.language))
        clue_words = content_words(clue, self.language)
        novel = {w for w in clue_words if w not in q_words}
        if len(novel) < min_novel:
            return GroundedClue(clue, None, 0.0, len(novel))
        best, best_cov = None, 0.0
        for sid in self.candidates(clue):
            cov = len(novel & self._words[sid]) / len(novel)
            if cov > best_cov:
                best, best_cov = sid, cov
        if best is None or best_cov < min_coverage:
            return GroundedClue(clue, None, best_cov, len(novel))
        return GroundedClue(clue, self.sentences[best], best_cov, len(novel))
