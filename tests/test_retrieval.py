import numpy as np
import pytest

from memorag.chunking import Chunker
from memorag.errors import StateError
from memorag.index.faiss_index import FaissIndex
from memorag.retrieval import Retriever, weighted_rrf


def test_weighted_rrf_prefers_agreement_and_weights():
    fused = weighted_rrf([[1, 2, 3], [2, 1], [3]], weights=[2.0, 1.0, 1.0])
    assert [doc for doc, _ in fused][:2] == [1, 2]
    # A document seen by only a low-weight query ranks below one the question ranks first.
    assert dict(fused)[1] > dict(fused)[3]


def test_chunker_respects_token_budget_and_sentences(embedder, sample_text):
    tok = embedder.tokenizer()
    chunks = Chunker(tok, chunk_tokens=128).split(sample_text)
    assert len(chunks) > 10
    for c in chunks:
        assert len(tok.encode(c.text, add_special_tokens=False).ids) <= 128
        assert sample_text[c.start : c.start + len(c.text)] == c.text  # offsets point into the document
    # Chunks end on sentence or paragraph boundaries, not mid-word.
    assert sum(c.text.rstrip()[-1] in ".!?\"'" for c in chunks) >= 0.8 * len(chunks)


def test_chunker_chinese(embedder):
    text = "第一章。" + "宾利先生租下了尼日斐花园，他每年有四五千镑的收入。" * 60
    chunks = Chunker(embedder.tokenizer(), chunk_tokens=64).split(text)
    assert len(chunks) > 5
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


def test_retriever_finds_fact_and_round_trips(embedder, sample_text, tmp_path):
    fact = "The housekeeper at Netherfield keeps the silver key in a blue porcelain jar."
    doc = sample_text[:6000] + "\n\n" + fact + "\n\n" + sample_text[6000:]
    r = Retriever(embedder, FaissIndex, chunk_tokens=512)
    stats = r.build(doc)
    assert stats["passages"] >= stats["chunks"] > 3  # 512-token chunks need >1 passage for MiniLM (256)
    hits = r.search(["Where is the silver key kept?"], k=2)
    assert fact in hits[0].text

    r.save(tmp_path)
    info = r.save(tmp_path)
    r2 = Retriever(embedder, FaissIndex, chunk_tokens=512)
    r2.load(tmp_path, info)
    assert [h.chunk_id for h in r2.search(["Where is the silver key kept?"], k=3)] == [
        h.chunk_id for h in r.search(["Where is the silver key kept?"], k=3)
    ]
    assert fact in r2.bm25_search("silver key porcelain jar", k=1)[0].text

    (tmp_path / "vectors.npy").write_bytes(b"garbage")
    with pytest.raises(StateError):
        Retriever(embedder, FaissIndex).load(tmp_path, info)


def test_search_before_build_is_a_clear_error(embedder):
    with pytest.raises(StateError, match="memorize or load"):
        Retriever(embedder, FaissIndex).search(["q"], k=3)


def test_faiss_index_vectors_are_plain_npy(tmp_path):
    idx = FaissIndex()
    v = np.eye(4, dtype=np.float32)
    idx.add(v)
    info = idx.save(tmp_path)
    assert np.load(tmp_path / info["file"], allow_pickle=False).shape == (4, 4)
    scores, ids = idx.search(v[:1], 2)
    assert ids[0][0] == 0 and scores[0][0] == pytest.approx(1.0)


def test_hybrid_search_adds_bm25_rankings(embedder, sample_text):
    code = "Parcel XQ-7734 was left with the porter."
    doc = sample_text[:9000] + "\n\n" + code + "\n\n" + sample_text[9000:]
    r = Retriever(embedder, FaissIndex, chunk_tokens=256)
    r.build(doc)
    target = next(i for i, c in enumerate(r.chunks) if code in c.text)
    assert r.bm25_search("XQ-7734", k=1)[0].chunk_id == target
    hybrid = r.search(["XQ-7734"], k=1, lexical=True)
    assert hybrid[0].chunk_id == target
    # The fused score counts both rankings: higher than the dense-only score of the same chunk.
    dense = {h.chunk_id: h.score for h in r.search(["XQ-7734"], k=len(r.chunks))}
    assert hybrid[0].score > dense.get(target, 0.0)


def test_many_wrong_clue_lines_cannot_outvote_the_question(embedder, sample_text):
    from memorag.memory import Clues
    from memorag.plans import PlanParams, run_plan

    fact = "The housekeeper at Netherfield keeps the silver key in a blue porcelain jar."
    doc = sample_text[:6000] + "\n\n" + fact + "\n\n" + sample_text[6000:]
    r = Retriever(embedder, FaissIndex, chunk_tokens=128)
    r.build(doc)
    question = "Where is the silver key kept?"
    # Six invented clues, all about another part of the book (a small memory model's failure mode).
    wrong = [f"Mr. Bennet teases his wife about her nerves, version {i}." for i in range(6)]
    clues = Clues(question, spans=wrong[:3], questions=wrong[3:])
    hits = run_plan("clues", r, question, clues, 3, PlanParams(question_weight=2.0, clue_weight=1.0, lexical=True))
    assert any(fact in h.text for h in hits)
    # With one full weight per clue line (the first fusion), the wrong clues push it out.
    per_line = r.search([question, *clues.lines()], 3, weights=[2.0] + [1.0] * 6, lexical=True)
    assert not any(fact in h.text for h in per_line)
