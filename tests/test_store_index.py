"""The store-wide routing index on Qdrant (memorag.index.store_index) on Qdrant's embedded
engine and the fakes of memorag.testing: routing equals the in-RAM routing, writes keep the
index in step, points lost or stale behind the store's back are re-synced from the store's
saved vectors, and the setting is recorded in the store and refused when it disagrees."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("qdrant_client")

from qdrant_client import models  # noqa: E402
from test_collection import FACTS, FILLER, QUESTIONS, doc, make_pipe, write_sources  # noqa: E402

from memorag.collection import Collection  # noqa: E402
from memorag.docstore import DocStore  # noqa: E402
from memorag.errors import BackendError, ConflictError, InputError, NotMemorizedError, StateError  # noqa: E402
from memorag.index.store_index import DocumentVectors, parse_spec, read_document_vectors  # noqa: E402
from memorag.testing import HashEmbedder  # noqa: E402

pytestmark = pytest.mark.integration  # Qdrant's embedded engine


def qdrant_spec(tmp_path) -> str:
    return f"qdrant:{tmp_path / 'qdrant'}"


def in_qdrant(coll: Collection, name: str) -> dict[str, int]:
    """Points of document ``name`` in the routing collection, per version."""
    index = coll.routing_index.index
    points, _ = index._client.scroll(index.collection, limit=10_000, with_payload=True, scroll_filter=models.Filter(
        must=[models.FieldCondition(key="document", match=models.MatchValue(value=name))]))
    counts: dict[str, int] = {}
    for p in points:
        counts[p.payload["version"]] = counts.get(p.payload["version"], 0) + 1
    return counts


def passages(coll: Collection, name: str) -> int:
    return len(read_document_vectors(coll.store, name).vectors)


def varied(title: str, fact: str) -> str:
    """A document like the collection tests' (filler with a fact in the middle) whose
    sentences each carry a word of their own and a different number of others, so no two chunks tie for a
    question (faiss orders exact ties inside one document its own way; routing over Qdrant
    breaks them by passage number)."""
    paras = [f"{title}."]
    for i in range(10):
        paras.append(" ".join(f"{title.lower()}{i}{n} {s} " + " ".join(["more"] * (i + n)) for n, s in enumerate(FILLER)))
        if i == 5:
            paras.append(fact)
    return "\n\n".join(paras)


@pytest.mark.parametrize("hybrid", [False, True], ids=["dense", "hybrid"])
def test_routing_on_qdrant_equals_routing_in_ram(tmp_path, hybrid):
    ram = Collection(tmp_path / "ram", make_pipe(hybrid=hybrid))
    for name, fact in FACTS.items():
        ram.add_text(name, varied(name.split(".")[0].title(), fact))
    ram.add_text("orchard.txt", varied("Orchard", "The gardener Ilse Marrow grafted pears onto the old quince."))
    shutil.copytree(tmp_path / "ram", tmp_path / "qd")  # the same documents, saved vectors and all
    qd = Collection(tmp_path / "qd", make_pipe(hybrid=hybrid), routing_index=qdrant_spec(tmp_path))

    questions = [*QUESTIONS.values(), "Who grafted pears onto the quince?", "When did the committee meet on a grey morning?"]
    for question in questions:
        for rule in ("best", "top3-sum"):
            for top in (1, 2, 4):
                want = ram.route(question, top, rule=rule)
                got = qd.route(question, top, rule=rule)
                assert [n for n, _ in got] == [n for n, _ in want], (question, rule, top)
                if rule == "best":  # the deeper top3-sum search meets exact ties faiss orders its own way
                    assert [s for _, s in got] == pytest.approx([s for _, s in want]), (question, rule, top)
    assert qd._routing is None  # the documents were never joined in RAM
    assert qd.routing_index.index.total() == sum(passages(qd, n) for n in qd.names())
    if hybrid:  # BM25 ran over the candidates' chunks (here: every document) and changed the scores
        dense = Collection(tmp_path / "ram", make_pipe(hybrid=False))
        assert any(dense.route(q, 4) != ram.route(q, 4) for q in questions)
    else:  # dense routing reads no document's chunks at all: one query to Qdrant
        assert qd._retrieval == {}


class BlindEmbedder(HashEmbedder):
    """Hash vectors, except that passages holding ``MARK`` point where no query ever does:
    a document the dense search cannot find, only its words can."""

    MARK = "zyxquor"

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        vectors = super().embed(texts, is_query=is_query)
        if is_query:
            vectors[:, -1] = 0.0
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        for row, text in zip(vectors, texts):
            if self.MARK in text:
                row[:] = 0.0
                row[-1] = 1.0
        return vectors


def test_bm25_on_qdrant_runs_over_the_dense_candidates_only(tmp_path):
    """The documented limit: with a routing index BM25 scores only the documents the dense
    search found, so a document matched by its words alone is not routed to (in RAM, BM25
    over the whole store ranks it first), and its chunks are never read."""
    pipe = make_pipe(embedder=BlindEmbedder())
    coll = Collection(tmp_path / "store", pipe, routing_index=qdrant_spec(tmp_path))
    for i in range(5):  # enough chunks that the dense candidates stop short of the whole store
        coll.add_text(f"minutes-{i}.txt", doc(f"Minutes {i}", f"The committee adjourned in spring {i}."))
    coll.add_text("needle.txt", f"The archivist filed the {BlindEmbedder.MARK} ledger in the vault.")
    question = f"Where did the committee file the {BlindEmbedder.MARK} ledger?"

    routed = coll.route(question, 1)
    assert routed and "needle.txt" not in dict(coll.route(question, 3))
    assert "needle.txt" not in coll._retrieval  # BM25 never read it
    assert {n for n, _ in routed} <= {f"minutes-{i}.txt" for i in range(5)}
    in_ram = Collection(tmp_path / "copy", make_pipe(embedder=BlindEmbedder()))
    shutil.copytree(tmp_path / "store" / "needle.txt", tmp_path / "copy" / "needle.txt")
    for i in range(5):
        shutil.copytree(tmp_path / "store" / f"minutes-{i}.txt", tmp_path / "copy" / f"minutes-{i}.txt")
    joined = in_ram._all_documents()
    top = in_ram._retriever(joined).bm25_search(question, 1)[0]
    assert joined.locate(top.chunk_id)[0] == "needle.txt"


def test_writes_keep_qdrant_in_step_and_the_store_wins_over_it(tmp_path):
    spec = qdrant_spec(tmp_path)
    coll = Collection(tmp_path / "store", make_pipe(), routing_index=spec, route_top=1)
    coll.add([write_sources(tmp_path / "src")])
    versions = dict(coll._versions())
    for name in FACTS:  # one version of each document, every passage of it
        assert in_qdrant(coll, name) == {versions[name]: passages(coll, name)}

    # Replaced: only the new version's points remain.
    coll.add_text("bakery.md", doc("Bakery", "The baker Anselm Rook hid the brass ledger in the oven."), replace=True)
    new = coll.store.info("bakery.md")["version"]
    assert new != versions["bakery.md"] and in_qdrant(coll, "bakery.md") == {new: passages(coll, "bakery.md")}
    # Appended: the longer document's points, under its new version.
    coll.append("harbour.txt", "The keeper's daughter Mara Quill rang the fog bell at midnight.")
    appended = coll.store.info("harbour.txt")["version"]
    assert in_qdrant(coll, "harbour.txt") == {appended: passages(coll, "harbour.txt")}
    assert coll.route("Who rang the fog bell at midnight?", 1)[0][0] == "harbour.txt"
    # Removed: deleted by filter.
    coll.delete("observatory.txt")
    assert in_qdrant(coll, "observatory.txt") == {}
    syncs = coll.routing_index.syncs

    # Behind the store's back: a document's points are deleted, stale ones of another are added.
    index = coll.routing_index.index
    index._client.delete(index.collection, wait=True, points_selector=models.FilterSelector(filter=models.Filter(
        must=[models.FieldCondition(key="document", match=models.MatchValue(value="bakery.md"))])))
    stale = read_document_vectors(coll.store, "harbour.txt")
    index.put(DocumentVectors("ghost.txt", "gone-version", "", stale.vectors[:2], stale.passage_chunk[:2]))
    assert coll.route(QUESTIONS["bakery.md"], 1)[0][0] == "bakery.md"  # re-synced before routing
    assert coll.routing_index.syncs == syncs + 1
    assert in_qdrant(coll, "bakery.md") == {new: passages(coll, "bakery.md")} and in_qdrant(coll, "ghost.txt") == {}
    coll.route(QUESTIONS["bakery.md"], 1)
    assert coll.routing_index.syncs == syncs + 1  # in step now: no further sync

    # Another writer that knows nothing of Qdrant (as `memorag add --ray` commits): followed on the next question.
    other = Collection(tmp_path / "other", make_pipe())
    other.add_text("observatory.txt", doc("Observatory", FACTS["observatory.txt"]))
    shutil.copytree(tmp_path / "other" / "observatory.txt", tmp_path / "store" / "observatory.txt")
    assert coll.route(QUESTIONS["observatory.txt"], 1)[0][0] == "observatory.txt"
    coll.store.delete("harbour.txt")
    assert "harbour.txt" not in dict(coll.route(QUESTIONS["harbour.txt"], 3))
    assert in_qdrant(coll, "harbour.txt") == {}

    # A new object (another process) follows the store's setting and routes the same way.
    again = Collection(tmp_path / "store", make_pipe())
    assert again.routing_index is not None and again.routing_index.spec == parse_spec(spec)
    for name in ("bakery.md", "observatory.txt"):
        assert again.route(QUESTIONS[name], 1) == coll.route(QUESTIONS[name], 1)


def test_the_setting_is_recorded_in_the_store_and_refused_when_it_disagrees(tmp_path, monkeypatch):
    spec = qdrant_spec(tmp_path)
    assert Collection(tmp_path / "plain", make_pipe()).routing_index is None  # the default: in RAM
    assert DocStore(tmp_path / "plain").settings() == {}
    assert Collection(tmp_path / "plain", make_pipe(), routing_index="ram").routing_index is None

    coll = Collection(tmp_path / "store", make_pipe(), routing_index=spec)
    recorded = json.loads((tmp_path / "store" / ".settings.json").read_text())["routing_index"]
    assert recorded["spec"] == spec and recorded["collection"].startswith("memorag-store-")
    assert coll.names() == []  # the settings file is not a document
    with pytest.raises(NotMemorizedError):
        coll.route("anything?")
    monkeypatch.chdir(tmp_path)  # the same directory spelled relatively is the same index
    assert Collection(tmp_path / "store", make_pipe(), routing_index="qdrant:qdrant").routing_index.spec == spec
    for other in ("ram", f"qdrant:{tmp_path / 'elsewhere'}", "qdrant:http://127.0.0.1:6333"):
        with pytest.raises(ConflictError, match="routes with"):
            Collection(tmp_path / "store", make_pipe(), routing_index=other)

    for bad in ("qdrant", "qdrant:", "faiss", "", "qdrant:ftp://127.0.0.1", "qdrant:http://", "qdrant:http://h:0",
                "qdrant:http://127.0.0.1:6333/collections", "qdrant:http://127.0.0.1:99999"):
        with pytest.raises(InputError, match="routing index|Qdrant URL"):
            Collection(tmp_path / "bad", make_pipe(), routing_index=bad)
    assert not (tmp_path / "bad").exists()
    # An unreachable server is one clear error, and nothing is recorded.
    with pytest.raises(BackendError, match="Qdrant at http://127.0.0.1:9"):
        Collection(tmp_path / "down", make_pipe(), routing_index="qdrant:http://127.0.0.1:9")
    assert DocStore(tmp_path / "down").settings() == {}
    (tmp_path / "down" / ".settings.json").write_text("{not json")
    with pytest.raises(StateError, match="settings.json"):
        Collection(tmp_path / "down", make_pipe())


def test_a_failed_index_update_keeps_the_document_and_is_repaired_on_the_next_question(tmp_path):
    coll = Collection(tmp_path / "store", make_pipe(), routing_index=qdrant_spec(tmp_path), route_top=1)
    coll.add_text("harbour.txt", doc("Harbour", FACTS["harbour.txt"]))
    index = coll.routing_index.index
    real_put = index.put

    def down(_doc):
        raise BackendError("Qdrant at test failed to store vectors: connection refused")

    index.put = down
    with pytest.raises(BackendError, match="'bakery.md' is stored, but the routing index could not follow"):
        coll.add_text("bakery.md", doc("Bakery", FACTS["bakery.md"]))
    assert coll.names() == ["bakery.md", "harbour.txt"]  # the store kept it
    index.put = real_put
    assert coll.route(QUESTIONS["bakery.md"], 1)[0][0] == "bakery.md"
    assert in_qdrant(coll, "bakery.md") == {coll.store.info("bakery.md")["version"]: passages(coll, "bakery.md")}



def test_cli_records_the_routing_index_and_every_command_follows_it(tmp_path):
    from scriptedspecs import write_sources as write_cli_sources
    from test_collection_cli import FAKES, error_line, ok, run_cli

    src = write_cli_sources(tmp_path / "src")
    store, spec = tmp_path / "S", qdrant_spec(tmp_path)
    added = json.loads(ok(run_cli("add", src, "--store", store, "--routing-index", spec, "--json", *FAKES,
                                  cwd=tmp_path)).stdout)
    assert sorted(added["added"]) == ["bakery.md", "harbour.txt"]
    assert DocStore(store).settings()["routing_index"]["spec"] == spec
    q = "Where did Anselm Rook hide the brass ledger?"
    ans = json.loads(ok(run_cli("ask", "--store", store, q, "--json", cwd=tmp_path)).stdout)
    assert ans["documents"][0]["name"] == "bakery.md" and "flour barrels" in ans["answer"]
    ok(run_cli("rm", "bakery.md", "--store", store, cwd=tmp_path))
    ans = json.loads(ok(run_cli("ask", "--store", store, q, "--json", "--routing-index", spec, cwd=tmp_path)).stdout)
    assert [d["name"] for d in ans["documents"]] == ["harbour.txt"]
    assert "routes with" in error_line(run_cli("ask", "--store", store, q, "--routing-index", "ram", cwd=tmp_path))
    assert "Invalid routing index" in error_line(run_cli("add", src, "--store", tmp_path / "T", "--routing-index",
                                                         "qdrant", *FAKES, cwd=tmp_path))
    assert "applies to a store" in error_line(run_cli("ask", tmp_path, q, "--routing-index", spec, cwd=tmp_path))
