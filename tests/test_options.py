"""Every option of the pipeline and of ``ask`` takes effect or is refused with one clear
InputError (issue 22): the test walks ``PipelineOptions`` and ``MemoRAG.ask``'s keywords, so
an option added without a check here fails it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from test_unit_pipeline import DOC_A, Q_A

from memorag import MemoRAG
from memorag.answering import PASSAGE_CHARS, Excerpts, JudgedPassages, LeadAndPassages, passage_in_context
from memorag.collection import Collection
from memorag.config import DEFAULT_JUDGE_STATES_MB, PipelineOptions
from memorag.errors import InputError
from memorag.index.faiss_index import FaissIndex
from memorag.plans import register_plan
from memorag.retrieval import Retriever
from memorag.testing import HashEmbedder, ScriptedLLM

pytestmark = pytest.mark.unit

SEEN: list = []  # the PlanParams each call of the spy plan got


def _spy(ctx, question, clues, k, params):
    SEEN.append(params)
    return ctx.retriever.search([question], k, lexical=params.lexical)


register_plan("test-spy", _spy, clues=("spans",),
              options=("question_weight", "clue_weight", "follow_hops", "lexical", "rerank_depth"))


def _pipe(**options) -> MemoRAG:
    pipe = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64), ScriptedLLM(),
                              **options)
    pipe.memorize(DOC_A, progress=False)
    return pipe


def _user(pipe: MemoRAG, **ask) -> str:
    return pipe.ask(Q_A, **ask).messages[-1]["content"]


def _reaches_the_plan(name: str, value) -> None:
    SEEN.clear()
    _pipe(query_plan="test-spy", **{name: value}).ask(Q_A)
    assert getattr(SEEN[-1], name) == value
    with pytest.raises(InputError, match=f"does not read {name}"):
        _pipe(query_plan="question", **{name: value})  # a plan that would ignore it refuses it


def check_ret_hit() -> None:
    assert len(_pipe(ret_hit=5).ask(Q_A).evidence) == 5


def check_hybrid() -> None:
    SEEN.clear()
    _pipe(query_plan="test-spy", hybrid=False).ask(Q_A)
    assert SEEN[-1].lexical is False


def check_overlap_indexing() -> None:
    assert _pipe(overlap_indexing=True).stats["overlap_indexing"] is True


def check_query_plan() -> None:
    SEEN.clear()
    _pipe(query_plan="test-spy").ask(Q_A)
    assert SEEN


def check_evidence() -> None:
    pipe = _pipe(evidence="excerpts")
    assert isinstance(pipe.answering().evidence, Excerpts)
    assert len(_user(pipe)) < len(_user(_pipe()))  # excerpts of the chunks, not the chunks
    judged = _pipe(evidence="passages", query_plan="likelihood")
    assert isinstance(judged.answering().evidence, JudgedPassages)
    ans = judged.ask(Q_A)
    user = ans.messages[-1]["content"]
    # each chunk as its judged paragraph widened to PASSAGE_CHARS characters (these chunks are shorter: whole)
    assert ans.evidence and all(h.passage and passage_in_context(h.text, h.passage, PASSAGE_CHARS) in user for h in ans.evidence)
    # what the answer reports as read is what the generator got, hit by hit
    assert ans.read == [passage_in_context(h.text, h.passage, PASSAGE_CHARS) for h in ans.evidence]
    assert [e["read"] for e in ans.to_json()["evidence"]] == ans.read
    whole = _pipe().ask(Q_A)
    assert whole.read == [h.text for h in whole.evidence]
    led = _pipe(evidence="lead", query_plan="likelihood")
    assert isinstance(led.answering().evidence, LeadAndPassages)
    ans = led.ask(Q_A)
    best = max(ans.evidence, key=lambda h: h.score)
    assert ans.read == [h.text if h is best else passage_in_context(h.text, h.passage or "", PASSAGE_CHARS) for h in ans.evidence]
    check_evidence_width()


def check_cite() -> None:
    assert _user(_pipe(cite=True)).startswith("Evidence, numbered:\n[1] ")


def check_evidence_width() -> None:
    wide = _pipe(evidence="lead:2000", query_plan="likelihood").ask(Q_A)
    assert isinstance(_pipe(evidence="passages:250").answering().evidence, JudgedPassages)
    assert _pipe(evidence="passages:250").answering().evidence.min_chars == 250
    best = max(wide.evidence, key=lambda h: h.score)
    assert wide.read == [h.text if h is best else passage_in_context(h.text, h.passage or "", 2000)
                         for h in wide.evidence]
    for bad, says in (("chunks:400", "takes no width"), ("lead:0", "whole number"), ("lead:wide", "whole number"),
                      ("leads", "must be one of")):
        with pytest.raises(InputError, match=says):
            _pipe(evidence=bad)


def check_evidence_order() -> None:
    """Document order reads the chunks as the text runs; rank order best first."""
    by_doc = _pipe().ask(Q_A)
    by_rank = _pipe(evidence_order="rank").ask(Q_A)
    doc_ids, rank_ids = [h.chunk_id for h in by_doc.evidence], [h.chunk_id for h in by_rank.evidence]
    assert doc_ids == sorted(doc_ids) and sorted(rank_ids) == doc_ids and rank_ids != doc_ids
    assert [h.score for h in by_rank.evidence] == sorted((h.score for h in by_rank.evidence), reverse=True)
    assert _user(_pipe(evidence_order="rank")).startswith("Evidence:\n" + by_rank.evidence[0].text)
    assert _user(_pipe()).startswith("Evidence:\n" + by_doc.evidence[0].text)
    with pytest.raises(InputError, match="evidence_order must be one of document, rank"):
        _pipe(evidence_order="best")


def check_plan_params() -> None:
    SEEN.clear()
    _pipe(query_plan="test-spy", plan_params={"rerank_depth": 7, "question_weight": 3}).ask(Q_A)
    assert SEEN[-1].rerank_depth == 7 and SEEN[-1].question_weight == 3.0
    with pytest.raises(InputError, match="rerank_depth is not read by plan 'question'"):
        _pipe(query_plan="question", plan_params={"rerank_depth": 7})
    with pytest.raises(InputError, match="unknown plan parameter 'depth'"):
        _pipe(query_plan="test-spy", plan_params={"depth": 7})
    with pytest.raises(InputError, match="rerank_depth must be a whole number"):
        _pipe(query_plan="test-spy", plan_params={"rerank_depth": "7"})
    with pytest.raises(InputError, match="language follows the document"):
        _pipe(query_plan="test-spy", plan_params={"language": "zh"})
    with pytest.raises(InputError, match="given both as an option and in plan_params"):
        _pipe(query_plan="test-spy", question_weight=3.0, plan_params={"question_weight": 2.0})


def check_judge_states_mb() -> None:
    """What the budget does is in tests/test_judge_states.py (a judge that keeps states)."""
    assert _pipe(judge_states_mb=3).judge_states_mb == 3 and _pipe().judge_states_mb == DEFAULT_JUDGE_STATES_MB
    for bad in (-1, True, 1.5):
        with pytest.raises(InputError, match="judge_states_mb must be a whole number"):
            _pipe(judge_states_mb=bad)


OPTION_CHECKS = {
    "ret_hit": check_ret_hit,
    "question_weight": lambda: _reaches_the_plan("question_weight", 3.0),
    "clue_weight": lambda: _reaches_the_plan("clue_weight", 0.5),
    "follow_hops": lambda: _reaches_the_plan("follow_hops", 2),
    "hybrid": check_hybrid,
    "overlap_indexing": check_overlap_indexing,
    "query_plan": check_query_plan,
    "evidence": check_evidence,
    "cite": check_cite,
    "evidence_order": check_evidence_order,
    "plan_params": check_plan_params,
    "judge_states_mb": check_judge_states_mb,
}


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(PipelineOptions)])
def test_every_pipeline_option_takes_effect_or_is_refused(name):
    assert name in OPTION_CHECKS, f"option {name!r} has no check in tests/test_options.py"
    OPTION_CHECKS[name]()


def check_task_type() -> None:
    pipe = _pipe()
    assert pipe.ask(Q_A, task_type="rag").clues is None
    assert pipe.ask(Q_A, task_type="qa").clues.spans == []  # surrogate questions only
    assert pipe.ask(None, task_type="summarize").clues.spans  # the memory's key points
    with pytest.raises(InputError, match="task_type"):
        pipe.ask(Q_A, task_type="chat")


def check_use_memory_answer() -> None:
    pipe = _pipe()
    assert pipe.ask(Q_A, use_memory_answer=True).clues.answer
    assert not pipe.ask(Q_A).clues.answer
    for task in ("qa", "rag", "summarize"):
        with pytest.raises(InputError, match="use_memory_answer"):
            pipe.ask(Q_A, task_type=task, use_memory_answer=True)
    with pytest.raises(InputError, match="use_memory_answer needs"):  # a plan that reads no draft answer
        _pipe(query_plan="likelihood").ask(Q_A, use_memory_answer=True)


def check_prompt_template() -> None:
    assert _user(_pipe(), prompt_template="Q={question} {{json}}").startswith(f"Q={Q_A} {{{{json}}}}")


def check_top_k() -> None:
    assert len(_pipe().ask(Q_A, top_k=4).evidence) == 4


def check_max_new_tokens() -> None:
    assert len(_pipe().ask(Q_A, max_new_tokens=2).answer.split()) == 2


def check_on_token() -> None:
    pieces: list[str] = []
    ans = _pipe().ask(Q_A, on_token=pieces.append)
    assert "".join(pieces).strip() == ans.answer


def check_on_evidence() -> None:
    got = []
    ans = _pipe().ask(Q_A, on_evidence=lambda clues, hits: got.append((clues, hits)))
    assert got == [(ans.clues, ans.evidence)]


ASK_CHECKS = {
    "task_type": check_task_type, "use_memory_answer": check_use_memory_answer,
    "prompt_template": check_prompt_template, "top_k": check_top_k, "max_new_tokens": check_max_new_tokens,
    "on_token": check_on_token, "on_evidence": check_on_evidence,
}


@pytest.mark.parametrize("name", [p for p in inspect.signature(MemoRAG.ask).parameters if p not in ("self", "query")])
def test_every_ask_option_takes_effect_or_is_refused(name):
    assert name in ASK_CHECKS, f"ask option {name!r} has no check in tests/test_options.py"
    ASK_CHECKS[name]()


def test_beacon_ratio_compresses_or_is_refused_without_compression():
    pipe = MemoRAG(ScriptedLLM(), HashEmbedder(), beacon_ratio=4.0, retrieval_chunk_size=64)
    assert pipe.memorize(DOC_A[:2000], progress=False)["compression"]["input_tokens"] > 0
    with pytest.raises(InputError, match="beacon_ratio"):
        MemoRAG(ScriptedLLM(), HashEmbedder(), beacon_ratio=4.0, compression="none")


def test_plans_that_do_not_say_their_clue_kinds_are_refused():
    def unsaid(ctx, question, clues, k, params):
        return []

    with pytest.raises(InputError, match="which clue kinds it reads"):
        register_plan("test-unsaid", unsaid)
    register_plan("test-spy-again", _spy)  # a registered plan under a new name keeps what it said
    _pipe(query_plan="test-spy-again", clue_weight=0.5)
    with pytest.raises(InputError, match="which clue kinds"):
        _pipe(query_plan="memorag.plans:names_in")


def test_collection_refuses_options_its_view_cannot_use(tmp_path):
    pipe = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64), ScriptedLLM())
    coll = Collection(tmp_path / "store", pipe)
    coll.add_text("harbour", DOC_A)
    with pytest.raises(InputError, match="use_memory=False"):
        coll.ask(Q_A, use_memory=False, task_type="qa")
    with pytest.raises(InputError, match="summarize"):
        coll.ask(Q_A, task_type="summarize")
    with pytest.raises(InputError, match="use_memory_answer"):
        coll.ask(Q_A, use_memory=False, use_memory_answer=True)
    assert coll.ask(Q_A, use_memory_answer=True).clues["harbour"].answer  # takes effect in a store too


def test_the_auto_judge_beside_the_default_generator_is_the_packaged_judge():
    """"auto" beside the packaged default generator: query likelihood by the trained 0.5B
    judge, yes/no by the generator's twin; beside any other generator, its twin."""
    from memorag.answering import PackagedJudge, TwinJudge, generator_judge
    from memorag.models.registry import DEFAULT_GENERATOR

    judge = generator_judge(ScriptedLLM(spec=DEFAULT_GENERATOR))
    assert isinstance(judge, PackagedJudge)
    assert judge.yes_probability([{"role": "user", "content": "Is this relevant? yes"}]) == \
        judge.model.yes_probability([{"role": "user", "content": "Is this relevant? yes"}])
    other = generator_judge(ScriptedLLM())
    assert type(other) is TwinJudge
    assert generator_judge(object()) is None


def test_a_twin_judge_lists_only_the_models_it_has_made():
    """What the latency bench resets between modes: asking for the list loads nothing."""
    from memorag.answering import TwinJudge

    twin = TwinJudge(ScriptedLLM())
    assert twin.loaded_models() == []
    twin.yes_probability([{"role": "user", "content": "Is this relevant? yes"}])
    assert twin.loaded_models() == [twin.model]


def test_a_judge_given_by_spec_is_loaded_and_checked():
    from memorag.answering import TwinJudge

    pipe = MemoRAG(ScriptedLLM(), HashEmbedder(), judge="scriptedspecs:llm", retrieval_chunk_size=64)
    assert isinstance(pipe.judge, ScriptedLLM) and pipe.judge.spec == "scriptedspecs:llm"
    assert isinstance(MemoRAG(ScriptedLLM(), HashEmbedder()).judge, TwinJudge)  # "auto": the generator's twin
    with pytest.raises(InputError, match="Judge"):
        MemoRAG(ScriptedLLM(), HashEmbedder(), judge="scriptedspecs:embedder")  # loads, but cannot judge
