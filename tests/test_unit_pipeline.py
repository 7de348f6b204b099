"""Pipeline logic on the fakes of memorag.testing (no model loaded): memorize, ask, the
original call API, query plans, save/load, and what a failed memorize or load leaves."""

from __future__ import annotations

import threading
import time

import pytest

from memorag import MemoRAG
from memorag.answering import TwinJudge
from memorag.errors import BackendError, InputError, NotMemorizedError, StateError
from memorag.index.faiss_index import FaissIndex
from memorag.memory import Memory
from memorag.plans import plan_names
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

FILLER = [
    "The harbour wall was rebuilt after the storm of the wet spring.",
    "Fishing boats left before dawn and returned with herring and cod.",
    "Children walked along the cliff path to the village school each morning.",
    "Gulls circled the market square whenever the nets were mended.",
    "The parish council met on the first Monday of every month.",
]


def make_doc(facts: list[str], paragraphs: int = 40) -> str:
    """Filler paragraphs with ``facts`` spread through them."""
    paras = []
    for i in range(paragraphs):
        para = " ".join(f"{s[:-1]} in year {1800 + i}." for s in FILLER)
        if i % (paragraphs // len(facts)) == 0 and facts:
            para += " " + facts.pop(0)
        paras.append(para)
    return "\n\n".join(paras)


DOC_A = make_doc(["The lighthouse keeper Edda Quill kept the silver key in a blue porcelain jar.",
                  "Tobias Quill founded the island observatory with seven telescopes."])
DOC_B = make_doc(["The baker Anselm Rook hid the brass ledger under the flour barrels.",
                  "Mirela Rook painted the bakery door a bright saffron yellow."])
Q_A = "Where did Edda Quill keep the silver key?"
Q_B = "Where did Anselm Rook hide the brass ledger?"


def new_pipe(**kw) -> MemoRAG:
    return MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96), **kw)


def snapshot(pipe: MemoRAG, question: str = Q_A) -> dict:
    """Everything a user sees of the current document."""
    ans = pipe.ask(question, max_new_tokens=64)
    return {"answer": ans.answer, "evidence": [(h.chunk_id, h.text) for h in ans.evidence],
            "clues": ans.clues.lines() if ans.clues else None,
            "chunks": [c.text for c in pipe.retriever.chunks], "sha": pipe.memory.context_sha256,
            "prefix_tokens": pipe.memory.llm.prefix_tokens, "language": pipe.memory.language}


# ------------------------------------------------------------------- memorize and ask
def test_memorize_and_ask_find_the_fact_and_answer_from_evidence():
    pipe = new_pipe()
    stats = pipe.memorize(DOC_A, progress=False)
    assert stats["chunks"] == len(pipe.retriever.chunks) > 10 and stats["memory_tokens"] > 1000
    ans = pipe.ask(Q_A)
    fact = "The lighthouse keeper Edda Quill kept the silver key in a blue porcelain jar."
    assert any(fact in h.text for h in ans.evidence)
    assert fact in ans.clues.spans  # the memory recalled it from its prefix
    assert ans.answer == fact  # the generator read it from the evidence it was given
    assert len(ans.evidence) == pipe.ret_hit


def test_generator_is_the_memory_models_twin_not_the_memory_itself():
    pipe = new_pipe()
    assert isinstance(pipe.generator, ScriptedLLM) and pipe.generator is not pipe.memory.llm
    pipe.memorize(DOC_A, progress=False)
    before = pipe.memory.llm.prefix_tokens
    pipe.ask(Q_A)
    assert pipe.generator.prefix_tokens == 0 and pipe.memory.llm.prefix_tokens == before
    assert [t.kind for t in pipe.generator.turns] == ["chat"]


def test_task_types_use_the_memory_as_documented():
    pipe = new_pipe()
    pipe.memorize(DOC_A, progress=False)
    llm = pipe.memory.llm

    def tasks(task_type: str, query: str | None = Q_A) -> list[str]:
        n = len(llm.turns)
        pipe.ask(query, task_type=task_type)
        out = []
        for t in llm.turns[n:]:
            task = t.request.rsplit("</document>", 1)[-1]  # what follows the memorized document
            out.append("recall" if "Quote, word for word" in task else
                       "rewrite" if "To answer this from" in task else task.strip()[:20])
        return out

    assert tasks("rag") == []  # plain RAG: the question alone
    assert tasks("qa") == ["rewrite"]  # surrogate questions only
    # the default plan ("recall") reads recalled spans only: surrogate questions are not generated
    assert pipe.query_plan == "recall" and tasks("memorag") == ["recall"]
    pipe.query_plan = "clues"  # reads every kind of clue line
    assert tasks("memorag") == ["recall", "rewrite"]
    pipe.query_plan = "likelihood"  # reads none: the memory generates nothing
    assert tasks("memorag") == []
    pipe.query_plan = "recall"
    assert tasks("summarize", None) == ["List the key points "]
    with pytest.raises(InputError, match="task_type"):
        pipe.ask(Q_A, task_type="chat")


BUILT_IN_PLANS = ("question", "clues", "grounded", "feedback", "rerank", "memorag", "likelihood", "recall", "entities")


def test_every_built_in_plan_runs_through_ask():
    assert set(BUILT_IN_PLANS) <= set(plan_names())
    for name in BUILT_IN_PLANS:
        pipe = new_pipe(query_plan=name)
        pipe.memorize(DOC_A, progress=False)
        ans = pipe.ask(Q_A)
        assert len(ans.evidence) == pipe.ret_hit, name
        assert len({h.chunk_id for h in ans.evidence}) == pipe.ret_hit, name
    with pytest.raises(InputError, match="query plan"):
        new_pipe(query_plan="nonsense")


def test_ask_before_memorize_and_empty_questions_are_clear_errors():
    pipe = new_pipe()
    with pytest.raises(NotMemorizedError):
        pipe.ask(Q_A)
    with pytest.raises(NotMemorizedError):
        pipe(query=Q_A)
    with pytest.raises(NotMemorizedError):
        pipe.save("anywhere")
    pipe.memorize(DOC_A, progress=False)
    with pytest.raises(InputError, match="query"):
        pipe.ask("   ")


def test_original_call_memorizes_only_new_context():
    pipe = new_pipe()
    llm = pipe.memory.llm
    first = pipe(context=DOC_A, query=Q_A)
    assert llm.call_counts["prefill"] == 1
    assert pipe(context=DOC_A, query=Q_A) == first and llm.call_counts["prefill"] == 1
    pipe(context=DOC_A, query=Q_A, reset_each_call=True)
    assert llm.call_counts["prefill"] == 2
    assert "brass ledger" in pipe(context=DOC_B, query=Q_B)
    assert llm.call_counts["prefill"] == 3


def test_overlapped_indexing_gives_the_same_document_as_sequential():
    seq, ovl = new_pipe(), new_pipe(overlap_indexing=True)
    seq.memorize(DOC_A, progress=False)
    stats = ovl.memorize(DOC_A, progress=False)
    assert stats["overlap_indexing"]
    assert snapshot(ovl) == snapshot(seq)


def test_save_and_load_round_trip_into_a_fresh_pipeline(tmp_path):
    pipe = new_pipe()
    pipe.memorize(DOC_A, save_dir=tmp_path / "a", progress=False)
    manifest = pipe.document.manifest
    assert manifest["models"]["memory"]["backend"] == "scripted" and manifest["language"] == "en"
    assert manifest["index"] == "faiss" and manifest["chunks"] == len(pipe.retriever.chunks)
    fresh = new_pipe()
    assert fresh.load(tmp_path / "a")["context_sha256"] == pipe.memory.context_sha256
    assert snapshot(fresh) == snapshot(pipe)
    assert fresh.document.manifest["files"] == manifest["files"]


def test_load_refuses_a_save_dir_made_with_another_embedder(tmp_path):
    pipe = new_pipe()
    pipe.memorize(DOC_A, save_dir=tmp_path / "a", progress=False)
    other = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(dimension=128), FaissIndex))
    with pytest.raises(StateError, match="different embedding model"):
        other.load(tmp_path / "a")
    assert other.document is None


# ------------------------------------------- a failed memorize or load keeps the document
@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("where", ["embedding", "prefill", "prefill-interrupt", "save"])
def test_failed_second_memorize_leaves_the_first_document_unchanged(tmp_path, where, overlap):
    pipe = new_pipe(overlap_indexing=overlap)
    pipe.memorize(DOC_A, save_dir=tmp_path / "state", progress=False)
    before = snapshot(pipe)
    saved_files = pipe.document.manifest["files"]
    llm, embedder = pipe.memory.llm, pipe.embedder
    save_dir = tmp_path / "state"
    if where == "embedding":
        embedder.fail("embed", RuntimeError("embedding failed"), after=1)  # the 2nd batch
        expected: type[BaseException] = RuntimeError
    elif where == "prefill":
        llm.fail("prefill_batch", RuntimeError("prefill failed"), after=5)
        expected = RuntimeError
    elif where == "prefill-interrupt":
        llm.fail("prefill_batch", KeyboardInterrupt(), after=5)
        expected = KeyboardInterrupt
    else:  # saving fails: the target exists and is not a save dir
        save_dir = tmp_path / "not-a-save-dir"
        save_dir.mkdir()
        (save_dir / "precious.txt").write_text("keep me")
        expected = StateError
    with pytest.raises(expected):
        pipe.memorize(DOC_B, save_dir=save_dir, progress=False)
    if where.startswith("prefill"):
        assert llm.call_counts["prefill_batch"] > 5  # it failed midway, after discarding the old prefix
    assert snapshot(pipe) == before
    # The first document's save dir was not touched either, and still loads.
    fresh = new_pipe()
    assert fresh.load(tmp_path / "state")["files"] == saved_files
    assert snapshot(fresh) == before
    # The pipeline is not stuck: the second document memorizes on a retry.
    pipe.memorize(DOC_B, progress=False)
    assert "brass ledger" in pipe.ask(Q_B).answer


def test_failed_load_leaves_the_current_document(tmp_path):
    pipe = new_pipe()
    pipe.memorize(DOC_B, save_dir=tmp_path / "b", progress=False)
    pipe.memorize(DOC_A, progress=False)
    before = snapshot(pipe)

    # The memory part of B loads (the model's prefix switches to B), then the index backend
    # fails, as an unreachable Qdrant server would.
    class Unreachable(FaissIndex):
        def load(self, directory, info):
            assert pipe.memory.llm.prefix_tokens != before["prefix_tokens"]  # B's prefix is live
            raise BackendError("index server unreachable")

    pipe.retriever.index_factory = Unreachable
    with pytest.raises(BackendError):
        pipe.load(tmp_path / "b")
    pipe.retriever.index_factory = FaissIndex
    assert snapshot(pipe) == before
    # A corrupt save dir is refused before anything changes.
    (tmp_path / "b" / "retrieval" / "chunks.json").write_text("{}")
    with pytest.raises(StateError, match="corrupt"):
        pipe.load(tmp_path / "b")
    assert snapshot(pipe) == before


def test_failed_gist_compression_of_a_long_second_document_keeps_the_first(tmp_path, monkeypatch):
    # Gist compression prefills every window of the new document into the memory model,
    # overwriting the first document's prefix long before the final prefill.
    monkeypatch.setenv("MEMORAG_CACHE_DIR", str(tmp_path / "cache"))  # finished gists are cached there
    llm = ScriptedLLM(context_window=2048, script=[("dense summary", "Gist of this part of the document.")])
    pipe = MemoRAG.from_parts(Memory(llm=llm, compression="gist"),
                              Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96))
    pipe.memorize(DOC_A[:4000], progress=False)
    assert pipe.memory.compression_stats is None  # fits the window: no compression
    before = snapshot(pipe)
    long_b = "\n\n".join([DOC_B] * 3)
    llm.fail("continue", RuntimeError("gist failed"), after=2)  # the third window's gist
    with pytest.raises(RuntimeError, match="gist failed"):
        pipe.memorize(long_b, progress=False)
    assert llm.call_counts["prefill"] >= 3  # windows were read into the model before the failure
    assert snapshot(pipe) == before
    stats = pipe.memorize(long_b, progress=False)  # retried, the finished gists come from the cache
    assert stats["compression"]["method"] == "gist" and stats["compression"]["windows_computed"] >= 1


def test_memory_alone_keeps_its_document_when_reading_another_fails():
    mem = Memory(llm=ScriptedLLM())
    mem.memorize(DOC_A)
    spans = mem.recall_spans(Q_A)
    sha = mem.context_sha256
    mem.llm.fail("prefill", RuntimeError("boom"))
    with pytest.raises(RuntimeError):
        mem.memorize(DOC_B)
    assert mem.context_sha256 == sha and mem.recall_spans(Q_A) == spans


def test_overlapped_memorize_stops_embedding_when_the_memory_pass_fails():
    started = threading.Event()
    embedder = HashEmbedder()
    real_embed = embedder.embed

    def slow_embed(texts, **kw):
        started.set()
        time.sleep(0.005)
        return real_embed(texts, **kw)

    embedder.embed = slow_embed
    retriever = Retriever(embedder, FaissIndex, chunk_tokens=32, batch_size=1)
    pipe = MemoRAG.from_parts(ScriptedLLM(), retriever, overlap_indexing=True)

    def interrupt_once_indexing_runs() -> None:
        started.wait(30)
        raise KeyboardInterrupt

    pipe.memory.llm.fail("prefill", interrupt_once_indexing_runs)
    with pytest.raises(KeyboardInterrupt):
        pipe.memorize(DOC_A, progress=False)
    n_passages = Retriever.stats(Retriever(HashEmbedder(), FaissIndex, chunk_tokens=32).prepare(DOC_A))["passages"]
    assert n_passages > 100
    assert 1 <= embedder.call_counts["embed"] < n_passages / 2  # stopped at a batch, not run to the end
    assert pipe.document is None and pipe.memory.llm.prefix_tokens == 0


# ------------------------------------------------------------------ building from parts
def test_constructor_takes_objects_and_refuses_arguments_that_cannot_apply():
    llm, embedder = ScriptedLLM(), HashEmbedder()
    pipe = MemoRAG(llm, embedder, index=FaissIndex, retrieval_chunk_size=64)
    assert pipe.memory.llm is llm and pipe.embedder is embedder and pipe.retriever.chunk_tokens == 64
    assert isinstance(pipe.generator, ScriptedLLM) and pipe.generator is not llm
    gen = ScriptedLLM()
    assert MemoRAG(Memory(llm=llm), embedder, customized_gen_model=gen).generator is gen
    with pytest.raises(InputError, match="n_ctx"):
        MemoRAG(llm, embedder, n_ctx=4096)
    with pytest.raises(InputError, match="compression"):
        MemoRAG(Memory(llm=llm), embedder, compression="gist")


def test_from_parts_adapts_a_generate_only_generator():
    class OnlyGenerate:
        def generate(self, prompt):
            return "from generate: " + prompt.splitlines()[-2]

    pipe = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96), OnlyGenerate())
    pipe.memorize(DOC_A, progress=False)
    assert pipe.ask(Q_A).answer == f"from generate: Question: {Q_A}"


def test_a_generator_that_is_also_the_memory_judges_on_a_twin_not_on_the_document_state():
    llm = ScriptedLLM()
    pipe = MemoRAG.from_parts(llm, Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96), llm)
    pipe.memorize(DOC_A, progress=False)
    judge = pipe.judge
    assert isinstance(judge, TwinJudge) and pipe.judge is judge  # made once
    assert judge.model is not llm and judge.model.prefix_tokens == 0
    before = llm.snapshot_prefix()
    answer = pipe.ask(Q_A)
    assert answer.evidence and answer.judged and llm.snapshot_prefix() == before  # the document state is untouched
    assert judge.model.call_counts["judge"] > 0 and llm.call_counts.get("judge", 0) == 0
    separate = new_pipe()
    separate.memorize(DOC_A, progress=False)
    # a generator of its own judges on a twin too, so the judge cannot evict its prompt cache
    judge = separate.judge
    assert judge.model is not separate.generator and judge is separate.judge
    separate.generator = ScriptedLLM()  # a new generator brings its own judge
    assert separate.judge is not judge and separate.judge.generator is separate.generator

    class NoTwin:  # a scoring generator that cannot make a second context judges itself
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            if name == "twin":
                raise AttributeError(name)
            return getattr(self.inner, name)

    alone = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96),
                               NoTwin(ScriptedLLM()))
    alone.memorize(DOC_A, progress=False)
    assert alone.judge.model is alone.generator


def test_a_generator_that_cannot_judge_gets_the_judge_given_or_none():
    class Remote:  # an OpenAI-compatible generator: chat only, no scores
        def __init__(self):
            self.inner = ScriptedLLM()

        def chat(self, messages, **kwargs):
            return self.inner.chat(messages, **kwargs)

        def stream_chat(self, messages, **kwargs):
            return self.inner.stream_chat(messages, **kwargs)

    unjudged = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96), Remote())
    unjudged.memorize(DOC_A, progress=False)
    assert unjudged.judge is None and not unjudged.ask(Q_A).judged
    judge = ScriptedLLM()
    judged = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96), Remote(),
                                judge=judge)
    judged.memorize(DOC_A, progress=False)
    assert judged.judge is judge and judged.ask(Q_A).judged and judge.call_counts["judge"] > 0
    with pytest.raises(InputError, match="Judge"):
        MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96), judge=Remote())
    with pytest.raises(InputError, match="object"):
        MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96), judge="default")
    off = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=96), judge=None)
    assert off.judge is None


def test_follow_hops_and_excerpts_reach_the_generator_through_ask():
    from memorag.eval.datasets import vartrack_haystacks

    hay = vartrack_haystacks(limit=3, per_haystack=3, haystack_tokens=4000, seed=5, hops=3)[0]
    q = hay.questions[0]
    gen = ScriptedLLM()
    walked = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64), gen,
                                ret_hit=5, query_plan="likelihood", follow_hops=3, evidence="excerpts")
    walked.memorize(hay.text, progress=False)
    ans = walked.ask(q.question, max_new_tokens=8)
    request = gen.turns[-1].request
    for (line,) in q.gold:  # the walk found every link, and the excerpts carry each to the generator
        assert line in request
    shown = request.split("Question:")[0]
    assert len(shown) < sum(len(h.text) for h in ans.evidence) / 2  # excerpts, not whole chunks
    plain = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64), ScriptedLLM(),
                               ret_hit=5, query_plan="likelihood")
    plain.memorize(hay.text, progress=False)
    got = "\n".join(h.text for h in plain.ask(q.question, max_new_tokens=8).evidence)
    assert not all(line in got for (line,) in q.gold)  # without the walk the chain is not all there
    with pytest.raises(InputError, match="evidence must be one of"):
        new_pipe(evidence="sentences")
    with pytest.raises(InputError, match="follow_hops"):
        new_pipe(follow_hops=-1)
