"""A collection on the real default models: three small documents, a question only the
second can answer is routed to it, answered and cited with offsets into its text; once it
is deleted the question no longer cites it. Then a fact appended to another document is
answered, the memory model having evaluated only the appended tokens."""

from __future__ import annotations

import pytest

from memorag import MemoRAG
from memorag.collection import Collection
from memorag.index.faiss_index import FaissIndex
from memorag.models.registry import DEFAULT_GENERATOR, DEFAULT_GENERATOR_CTX, load_llm
from memorag.retrieval import Retriever

pytestmark = pytest.mark.e2e

DOCS = {
    "garden.txt": ("The town garden was laid out in 1872 by the parish. Its gravel paths run between beds of "
                   "roses and lavender, and a stone fountain stands at the centre. Volunteers water the beds "
                   "every evening in summer, and the gates close at sunset. The garden hosts a flower show "
                   "each June, when the mayor hands out ribbons for the best roses."),
    "museum.txt": ("The city museum opened in 1901 in a former grain exchange. Its galleries hold maps, "
                   "clocks and ship models. The night guard, Ottilie Brandt, keeps the key to the vault inside "
                   "a hollowed-out copy of Moby-Dick on the shelf of the porter's lodge. The museum is closed "
                   "on Mondays, and school groups visit on Thursday mornings."),
    "railway.txt": ("The branch railway carried slate from the quarries to the harbour until 1961. Its engines "
                    "were small tank locomotives painted green. The line climbed through three tunnels and over "
                    "a viaduct of eleven arches. Today a walking trail follows the old track bed."),
}
QUESTION = "Where does Ottilie Brandt keep the key to the vault?"


@pytest.fixture(scope="module")
def generator():
    return load_llm(DEFAULT_GENERATOR, n_ctx=DEFAULT_GENERATOR_CTX)


def test_routed_cited_answer_on_the_default_models(tmp_path, default_llm, embedder, generator):
    src = tmp_path / "src"
    src.mkdir()
    for name, text in DOCS.items():
        (src / name).write_text(text, encoding="utf-8")
    pipe = MemoRAG.from_parts(default_llm, Retriever(embedder, FaissIndex), generator)
    coll = Collection(tmp_path / "store", pipe, route_top=1)  # one memory per question: kept short
    assert sorted(coll.add([src]).added) == sorted(DOCS)

    ans = coll.ask(QUESTION, max_new_tokens=48)
    assert ans.documents[0][0] == "museum.txt"
    assert "moby" in ans.answer.lower()
    museum = coll.text("museum.txt")
    cited = [c for c in ans.citations if c.document == "museum.txt"]
    assert any("Moby-Dick" in museum[c.start:c.end] for c in cited)
    assert all(coll.text(c.document)[c.start:c.end] == c.text for c in ans.citations)

    coll.delete("museum.txt")
    again = coll.ask(QUESTION, max_new_tokens=48)
    assert "museum.txt" not in dict(again.documents)
    assert {c.document for c in again.citations} <= {"garden.txt", "railway.txt"}

    appended = "In 1988 the railway's last engine, named Bramble, was moved to a museum in Cardiff."
    stats = coll.append("railway.txt", appended)
    assert stats["append"]["mode"] == "appended"
    # llama.cpp evaluated exactly the appended tokens (the separator included), nothing more
    assert stats["append"]["prefill_tokens"] == default_llm.count_tokens("\n\n" + appended)
    ans = coll.ask("What was the railway's last engine named?", max_new_tokens=32)
    assert ans.documents[0][0] == "railway.txt" and "bramble" in ans.answer.lower()
    assert any("Bramble" in c.text for c in ans.citations)


def test_one_core_on_the_default_models(tmp_path, default_llm, embedder, generator):
    """Issue 22, end to end: on a one-document store, ``Collection.ask`` and ``MemoRAG.ask`` on
    the loaded save dir find the same evidence and send the generator the same prompt."""
    src = tmp_path / "museum.txt"
    src.write_text(DOCS["museum.txt"], encoding="utf-8")
    pipe = MemoRAG.from_parts(default_llm, Retriever(embedder, FaissIndex), generator)
    coll = Collection(tmp_path / "store", pipe)
    coll.add([src])
    routed = coll.ask(QUESTION, max_new_tokens=8)
    pipe.load(tmp_path / "store" / "museum.txt" / "state")
    asked = pipe.ask(QUESTION, max_new_tokens=8)
    assert [c.chunk_id for c in routed.citations] == [h.chunk_id for h in asked.evidence]
    assert routed.messages == asked.messages
    assert "Moby-Dick" in asked.messages[-1]["content"]
