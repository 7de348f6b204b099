"""One answering core under every front-end (memorag.answering, issue 22).

One question about one document, asked through ``MemoRAG.ask``, ``Collection.ask`` on a
one-document store, the HTTP service's ask endpoint and ``memorag eval``'s ``memorag``
method, must find the same evidence chunks and send the generator the same prompt. The
generator (tests/scriptedspecs.py ``echo``) answers with the user message it was sent, so
even the HTTP answer shows what the generator read.
"""

from __future__ import annotations

import time

import pytest
from servicekit import read_sse
from test_unit_pipeline import DOC_A, Q_A

from memorag import MemoRAG
from memorag.answering import Answering, AnswerPrompt, RetrievalPlan, View, WholeChunks, answer_question
from memorag.collection import Collection
from memorag.engine import Engine
from memorag.eval.methods import MethodRunner
from memorag.index.faiss_index import FaissIndex
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

SPECS = {"mem_model_name_or_path": "scriptedspecs:llm", "ret_model_name_or_path": "scriptedspecs:embedder",
         "gen_model_name_or_path": "scriptedspecs:echo", "retrieval_chunk_size": 64}


def _pipe() -> MemoRAG:
    return MemoRAG(**SPECS)


def _memorize_through_the_service(client) -> None:
    r = client.post("/documents", json={"name": "harbour", "text": DOC_A})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while (job := client.get(f"/jobs/{job_id}").json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["state"] == "done", job


def test_ask_collection_service_and_eval_send_the_same_prompt_with_the_same_evidence(tmp_path):
    from fastapi.testclient import TestClient

    from memorag.service import Settings, create_app

    store = tmp_path / "store"
    engine = Engine(store, mem_model=SPECS["mem_model_name_or_path"], ret_model=SPECS["ret_model_name_or_path"],
                    gen_model=SPECS["gen_model_name_or_path"], retrieval_chunk_size=64)
    with TestClient(create_app(Settings(store=str(store), warm_up=False), engine)) as client:
        _memorize_through_the_service(client)
        over_http = client.post("/documents/harbour/ask", json={"question": Q_A, "max_new_tokens": 2048}).json()
        summary = client.post("/documents/harbour/summarize", json={"max_new_tokens": 2048}).json()
    engine.close(wait=True)  # the service closed it; this waits until its models are released

    pipe = _pipe()
    pipe.load(store / "harbour" / "state")
    asked = pipe.ask(Q_A, max_new_tokens=2048)
    fact = "The lighthouse keeper Edda Quill kept the silver key in a blue porcelain jar."
    assert any(fact in h.text for h in asked.evidence) and asked.judged  # the default plan, judged
    assert asked.clues.spans and any(asked.clues.grounded)  # the memory's clues took part, grounded
    ids = [h.chunk_id for h in asked.evidence]
    assert ids == sorted(ids)  # read in document order (AnswerPrompt.order)
    found_by = [h.found_by for h in asked.evidence]
    assert all(found_by) and set().union(*found_by) <= {"question", "memory", "links"}
    user = asked.messages[-1]["content"]
    assert asked.answer == user  # the echo generator: the answer is the prompt it read

    routed = Collection(store, _pipe()).ask(Q_A, max_new_tokens=2048)
    assert [c.chunk_id for c in routed.citations] == ids and {c.document for c in routed.citations} == {"harbour"}
    assert [c.found_by for c in routed.citations] == found_by  # every front-end says how each chunk was found
    assert routed.messages == asked.messages and routed.answer == asked.answer
    assert routed.clues["harbour"].lines() == asked.clues.lines()
    assert routed.clues["harbour"].grounded == asked.clues.grounded

    assert [e["chunk_id"] for e in over_http["evidence"]] == ids
    assert [tuple(e["found_by"]) for e in over_http["evidence"]] == found_by
    assert over_http["answer"] == user and over_http["clues"]["spans"] == asked.clues.spans

    summarized = pipe.ask(None, task_type="summarize", top_k=4, max_new_tokens=2048)
    assert summary["answer"] == summarized.answer and summary["clues"]["spans"] == summarized.clues.spans
    assert [e["chunk_id"] for e in summary["evidence"]] == [h.chunk_id for h in summarized.evidence]

    runner = MethodRunner(pipe, top_k=pipe.ret_hit, max_new_tokens=2048)
    evaluated = runner.retrieve("memorag", Q_A, DOC_A)
    prediction = runner.answer("memorag", Q_A, DOC_A, evaluated)
    # eval keeps the plan's ranking for its metrics; the generator read the same chunks in document order
    assert sorted(h.chunk_id for h in evaluated.found.hits) == ids and evaluated.clues == asked.clues.lines()
    assert evaluated.messages == asked.messages and prediction == asked.answer


def test_eval_baselines_answer_with_the_prompt_ask_uses():
    pipe = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64), ScriptedLLM())
    pipe.memorize(DOC_A, progress=False)
    runner = MethodRunner(pipe, top_k=3)
    asked = pipe.ask(Q_A, task_type="rag")
    hybrid = runner.retrieve("hybrid", Q_A, DOC_A)
    runner.answer("hybrid", Q_A, DOC_A, hybrid)
    # the same chunks; eval keeps the plan's ranking, ask reports them in the order read (document order)
    assert sorted(h.chunk_id for h in hybrid.found.hits) == [h.chunk_id for h in asked.evidence]
    assert hybrid.messages == asked.messages  # plain hybrid RAG is task "rag" of ask
    dense = runner.retrieve("dense", Q_A, DOC_A)
    runner.answer("dense", Q_A, DOC_A, dense)
    user = dense.messages[-1]["content"]
    first = min(dense.found.hits, key=lambda h: h.chunk_id)  # read in document order
    assert user.startswith("Evidence:\n" + first.text) and user.endswith(f"Question: {Q_A}\nAnswer in a few words:")
    # the memory's clues are made once per question and kind for all methods
    runner.retrieve("memorag", Q_A, DOC_A)
    turns = len(pipe.memory.llm.turns)
    runner.retrieve("memorag+answer", Q_A, DOC_A)
    assert len(pipe.memory.llm.turns) == turns + 1  # only the draft answer is new


def test_the_core_answers_over_a_view_of_parts_made_by_hand():
    retriever = Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64)
    retriever.build(DOC_A)
    gen = ScriptedLLM()
    parts = Answering(gen, RetrievalPlan("question"), WholeChunks(), AnswerPrompt(cite=True), top_k=2)
    result = answer_question(View(retriever), Q_A, parts)
    assert [c.n for c in result.citations] == [1, 2] and result.citations[0].document is None
    chunk = retriever.chunks[result.evidence[0].chunk_id]
    assert result.citations[0].start == chunk.start and DOC_A[chunk.start:result.citations[0].end] == chunk.text
    assert result.messages[-1]["content"].startswith("Evidence, numbered:\n[1] ")
    assert gen.turns[-1].request == result.messages[-1]["content"]  # what the generator got, exactly
    assert result.clues is not None and result.clues.lines() == []  # plan "question" reads no clues, no memory


def test_eval_takes_clues_made_another_way():
    from memorag.memory import Clues

    pipe = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64), ScriptedLLM())
    pipe.memorize(DOC_A, progress=False)
    runner = MethodRunner(pipe, top_k=3)
    given = Clues(Q_A, spans=["Fishing boats left before dawn and returned with herring and cod in year 1805."])
    runner.memory.remember(given)
    turns = len(pipe.memory.llm.turns)
    result = runner.retrieve("grounded", Q_A, DOC_A)
    assert len(pipe.memory.llm.turns) == turns and result.clues == given.spans  # no memory generation
    assert result.found.clues.grounded == given.spans  # the plan read it: grounded in its real sentence


def test_the_service_asks_across_the_store_with_numbered_citations(tmp_path):
    from fastapi.testclient import TestClient

    from memorag.service import Settings, create_app

    store = tmp_path / "store"
    engine = Engine(store, mem_model=SPECS["mem_model_name_or_path"], ret_model=SPECS["ret_model_name_or_path"],
                    gen_model="scriptedspecs:llm", retrieval_chunk_size=64)
    other = DOC_A.replace("Edda Quill", "Maren Vask").replace("silver key", "copper whistle")
    with TestClient(create_app(Settings(store=str(store), warm_up=False), engine)) as client:
        for name, text in (("harbour", DOC_A), ("fjord", other)):
            r = client.post("/documents", json={"name": name, "text": text})
            deadline = time.monotonic() + 60
            while client.get(f"/jobs/{r.json()['id']}").json()["state"] != "done":
                assert time.monotonic() < deadline
                time.sleep(0.05)
        texts = {n: client.get(f"/documents/{n}", params={"text": "true"}).json()["text"] for n in ("harbour", "fjord")}
        assert all(client.get(f"/documents/{n}").json()["sha256"] for n in texts)  # built through a collection
        question = "Where did Maren Vask keep the copper whistle?"
        answer = client.post("/ask", json={"question": question, "route_top": 2}).json()
        with client.stream("POST", "/ask", json={"question": question, "stream": True}) as r:
            events = read_sse(r)
        bad = client.post("/ask", json={"question": " "})
    engine.close(wait=True)
    assert [d["name"] for d in answer["documents"]][0] == "fjord"
    assert "copper whistle" in answer["answer"]
    for c in answer["citations"]:  # every piece of evidence sits at its offsets in its document
        assert texts[c["document"]][c["start"]:c["end"]] == c["text"]
    assert [c["n"] for c in answer["citations"]] == list(range(1, len(answer["citations"]) + 1))
    kinds = [k for k, _ in events]
    assert kinds[0] == "evidence" and kinds[-1] == "done" and "token" in kinds
    assert events[0][1]["citations"] == events[-1][1]["citations"] == answer["citations"]
    assert bad.status_code == 400 and "question" in bad.json()["error"]
