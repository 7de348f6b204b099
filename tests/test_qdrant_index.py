"""The Qdrant index backend on qdrant-client's embedded engine (in memory and on disk)."""

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from memorag.errors import BackendError, StateError  # noqa: E402
from memorag.index.faiss_index import FaissIndex  # noqa: E402
from memorag.index.qdrant_index import QdrantIndex  # noqa: E402
from memorag.models.registry import make_index_factory  # noqa: E402
from memorag.retrieval import Retriever  # noqa: E402


def _unit(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_qdrant_matches_faiss_exact_search():
    vectors, queries = _unit(300), _unit(5, seed=1)
    q, f = QdrantIndex(), FaissIndex()
    q.add(vectors[:200])
    q.add(vectors[200:])  # ids continue across batches
    f.add(vectors)
    qs, qi = q.search(queries, 7)
    fs, fi = f.search(queries, 7)
    assert len(q) == 300
    assert (qi == fi).all()
    assert np.allclose(qs, fs, atol=1e-4)


def test_save_load_rebuilds_in_memory_and_reuses_on_disk(tmp_path):
    vectors = _unit(50)
    saved = QdrantIndex()
    saved.add(vectors)
    info = saved.save(tmp_path)
    # A fresh in-memory engine has no collection: it is rebuilt from vectors.npy.
    fresh = QdrantIndex()
    fresh.load(tmp_path, info)
    assert (fresh.search(vectors[:3], 1)[1][:, 0] == [0, 1, 2]).all()

    store = tmp_path / "qdrant"
    on_disk = QdrantIndex(str(store))
    on_disk.add(vectors)
    info = on_disk.save(tmp_path)
    again = QdrantIndex(str(store))
    again.load(tmp_path, info)
    assert again.collection == on_disk.collection
    assert again._client.count(again.collection, exact=True).count == 50  # reused, not duplicated
    assert (again.search(vectors[10:12], 1)[1][:, 0] == [10, 11]).all()

    (tmp_path / "vectors.npy").write_bytes(b"not numpy")
    with pytest.raises(StateError, match="corrupt"):
        QdrantIndex().load(tmp_path, info)


def test_unreachable_server_is_a_clear_error():
    index = QdrantIndex("http://127.0.0.1:9")
    with pytest.raises(BackendError, match="Qdrant"):
        index.add(_unit(3))


def test_retriever_on_qdrant_spec(embedder, sample_text, tmp_path):
    r = Retriever(embedder, make_index_factory(f"qdrant:{tmp_path / 'db'}"), chunk_tokens=256)
    r.build(sample_text)
    info = r.save(tmp_path / "save")
    question = "Who has taken Netherfield Park?"
    first = [h.chunk_id for h in r.search([question], k=3, lexical=False)]
    # The same save dir also loads into the default faiss index: saved state stays portable.
    portable = Retriever(embedder, make_index_factory("faiss"), chunk_tokens=256)
    portable.load(tmp_path / "save", info)
    assert [h.chunk_id for h in portable.search([question], k=3, lexical=False)] == first
    assert any("Bingley" in h.text for h in portable.search([question], k=3, lexical=False))
