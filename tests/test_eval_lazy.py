"""``memorag eval`` reads a haystack into the memory model only when some method asks the
memory for clues (issue 24): question-only methods and replayed clues (``--clues-from``)
search the chunks and index alone. On the scripted fakes: the memory model's counters show
whether it read anything, and the rows are those of a run that read every haystack."""

from __future__ import annotations

import hashlib
import json

import pytest
import scriptedspecs

from memorag.eval.methods import memory_clue_kinds, methods_read_memory
from memorag.eval.runner import run
from memorag.testing import ScriptedLLM

pytestmark = pytest.mark.unit

FAKES = {"mem_model": "scriptedspecs:windowed_llm", "gen_model": "scriptedspecs:llm", "ret_model": "scriptedspecs:embedder"}
QUESTION_ONLY = ["dense", "bm25", "hybrid", "rerank", "likelihood"]


@pytest.fixture
def memories(monkeypatch) -> list[ScriptedLLM]:
    """Every memory model the runs below load (``--mem-model scriptedspecs:windowed_llm``)."""
    made: list[ScriptedLLM] = []
    make = scriptedspecs.windowed_llm

    def counted(n_ctx: int = 8192) -> ScriptedLLM:
        made.append(make(n_ctx))
        return made[-1]

    monkeypatch.setattr(scriptedspecs, "windowed_llm", counted)
    return made


def _reads(made: list[ScriptedLLM]) -> dict[str, int]:
    """How often the memory models read a document (prefill) or were asked a task on it."""
    return {kind: sum(m.call_counts.get(kind, 0) for m in made) for kind in ("prefill", "continue")}


def _kw(tmp_path, state: str = "state", **more) -> dict:
    return dict(limit=4, haystack_tokens=600, questions_per_haystack=2, seed=1, top_k=2, retrieval_only=True,
                state_dir=tmp_path / state, progress=False, chunk_tokens=64, **FAKES, **more)


def _rows(result: dict) -> list[dict]:
    """The rows without their timings (which differ from run to run)."""
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in result["questions"]),
                  key=lambda r: (r["id"], r["method"]))


def test_the_declared_clue_kinds_decide_which_methods_read_the_memory():
    assert not methods_read_memory(["full", "dense", "bm25", "hyde", *QUESTION_ONLY], "recall")
    assert memory_clue_kinds("memorag", "recall") == ("spans",)  # the draft answer only for memorag+answer
    assert memory_clue_kinds("memorag+answer", "recall") == ("spans", "answer")
    assert memory_clue_kinds("grounded", "recall") == ("spans", "questions")
    # memorag under a plan that reads no clues asks the memory for nothing
    assert not methods_read_memory(["memorag", "memorag+answer"], "likelihood")
    assert methods_read_memory(["hybrid", "memorag"], "recall")


def test_question_only_methods_never_read_the_memory(tmp_path, memories):
    lazy = run("vartrack", QUESTION_ONLY, output=tmp_path / "lazy.json", **_kw(tmp_path))
    assert _reads(memories) == {"prefill": 0, "continue": 0}
    assert lazy["config"]["memory_read"] is False and lazy["memorize_seconds"] == []
    assert len(lazy["index_seconds"]) == 2  # two haystacks, each chunked and indexed once
    assert json.loads((tmp_path / "lazy.json").read_text())["config"]["memory_read"] is False
    assert all("-index-" in d.name for d in (tmp_path / "state").iterdir())  # no memorized haystack saved

    eager = run("vartrack", QUESTION_ONLY, output=tmp_path / "eager.json", read_memory=True,
                **_kw(tmp_path, "eager-state"))
    assert _reads(memories)["prefill"] == 2 and eager["config"]["memory_read"] is True
    assert "index_seconds" not in eager
    assert _rows(lazy) == _rows(eager) and len(_rows(lazy)) == 4 * len(QUESTION_ONLY)

    # the index cache, and a memorized haystack's chunks, are read back, not rebuilt: same rows
    cached = run("vartrack", QUESTION_ONLY, output=tmp_path / "cached.json", **_kw(tmp_path))
    from_memorized = run("vartrack", QUESTION_ONLY, output=tmp_path / "memorized.json", **_kw(tmp_path, "eager-state"))
    assert cached["index_seconds"] == [] and from_memorized["index_seconds"] == []
    assert _rows(cached) == _rows(lazy) == _rows(from_memorized)
    assert _reads(memories)["prefill"] == 2  # only the eager run read anything


def test_answers_are_the_same_without_the_memory_pass(tmp_path, memories):
    """Generation too (hyde, full, and the answer prompt's language): nothing the
    generator is sent depends on whether the memory read the haystack."""
    methods = ["full", "hyde", "hybrid", "likelihood", "memorag"]
    kw = {**_kw(tmp_path), "retrieval_only": False, "query_plan": "likelihood"}  # memorag reads no clues
    lazy = run("vartrack", methods, output=tmp_path / "lazy.json", **kw)
    assert _reads(memories) == {"prefill": 0, "continue": 0} and lazy["config"]["memory_read"] is False
    eager = run("vartrack", methods, output=tmp_path / "eager.json", read_memory=True,
                **{**kw, "state_dir": tmp_path / "eager-state"})
    assert _reads(memories)["prefill"] == 2
    assert _rows(lazy) == _rows(eager) and all(r["prediction"] for r in lazy["questions"])


def test_a_memory_method_reads_the_memory(tmp_path, memories):
    result = run("vartrack", ["hybrid", "memorag"], output=tmp_path / "r.json", **_kw(tmp_path))
    assert result["config"]["memory_read"] is True and len(result["memorize_seconds"]) == 2
    reads = _reads(memories)
    assert reads["prefill"] == 2 and reads["continue"] > 0  # read once per haystack, then asked for clues
    assert "index_seconds" not in result
    assert any(d.name.count("-index-") == 0 for d in (tmp_path / "state").iterdir())
    # its hybrid rows are those of a run that never read the memory
    lazy = run("vartrack", ["hybrid"], output=tmp_path / "lazy.json", **_kw(tmp_path, "lazy-state"))
    assert _rows(lazy) == [r for r in _rows(result) if r["method"] == "hybrid"]


def test_replayed_clues_never_read_the_memory(tmp_path, memories):
    made = run("vartrack", ["memorag+answer"], output=tmp_path / "made.json", **_kw(tmp_path, "made-state"))
    before = _reads(memories)
    assert before["prefill"] == 2 and made["config"]["memory_read"] is True
    methods = ["grounded", "clues", "memorag", "memorag+answer", "hybrid"]
    lazy = run("vartrack", methods, output=tmp_path / "lazy.json", clues_from=tmp_path / "made.json",
               **_kw(tmp_path))
    assert _reads(memories) == before  # neither read nor asked
    assert lazy["config"]["memory_read"] is False and len(lazy["index_seconds"]) == 2
    stored = {r["id"]: r["clues"] for r in made["questions"]}
    for r in lazy["questions"]:  # every memory method's clues are the stored lines
        assert r["clues"] == (stored[r["id"]] if r["method"] != "hybrid" else []), r
    eager = run("vartrack", methods, output=tmp_path / "eager.json", clues_from=tmp_path / "made.json",
                read_memory=True, **_kw(tmp_path, "eager-state"))
    assert _reads(memories)["prefill"] == before["prefill"] + 2 and _reads(memories)["continue"] == before["continue"]
    assert eager["config"]["memory_read"] is True
    assert _rows(lazy) == _rows(eager)
    # the memory's second hop is a question no stored clue answers: off in a replay, and said so
    assert lazy["config"]["plan_params"] == {"memory_bridge": False}
    from memorag.eval.datasets import DatasetError

    with pytest.raises(DatasetError, match="memory_bridge"):
        run("vartrack", ["memorag"], output=tmp_path / "asked.json", clues_from=tmp_path / "made.json",
            plan_params={"memory_bridge": True}, **_kw(tmp_path))


def test_rows_resume_whether_or_not_the_memory_was_read(tmp_path, memories):
    """``memory_read`` is recorded but is not part of the resume key: a partial rows file
    (also one written before the field existed) resumes as before."""
    out = tmp_path / "results.json"
    partial = out.with_suffix(".partial.jsonl")
    kw = _kw(tmp_path)
    first = run("vartrack", ["hybrid", "memorag"], output=out, max_haystacks=1, **kw)
    assert first["config"]["memory_read"] is True and len(partial.read_text().splitlines()) == 4
    # the rows carry the key runs wrote before memory_read was recorded, so older rows files resume
    old_config = {k: v for k, v in first["config"].items() if k not in ("methods", "memory_read")}
    keys = {hashlib.sha256(json.dumps(old_config, sort_keys=True, default=str).encode()).hexdigest()[:16]}
    assert {json.loads(line)["config_key"] for line in partial.read_text().splitlines()} == keys
    lazy = run("vartrack", ["hybrid"], output=out, **kw)
    assert lazy["config"]["memory_read"] is False and lazy["methods"]["hybrid"]["n"] == 4
    assert len(partial.read_text().splitlines()) == 6  # the first haystack's hybrid rows were reused
    assert {json.loads(line)["config_key"] for line in partial.read_text().splitlines()} == keys
    assert len(lazy["index_seconds"]) == 1  # only the second haystack was indexed
    again = run("vartrack", ["hybrid", "memorag"], output=out, **kw)
    assert len(again["questions"]) == 8 and len(partial.read_text().splitlines()) == 8


def test_a_haystack_indexed_alone_keeps_its_language():
    """Prompts and word matching follow the document's language: with no memory state, the
    chunks say it, as the memory would have."""
    from memorag import MemoRAG
    from memorag.eval.methods import MethodRunner
    from memorag.index.faiss_index import FaissIndex
    from memorag.retrieval import Retriever
    from memorag.testing import HashEmbedder

    text = "这是一个关于港口的长篇文档。守门人把银钥匙放在蓝色的瓷罐里。" * 20
    pipe = MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=64), ScriptedLLM())
    pipe.memorize(text, progress=False)
    memorized = MethodRunner(pipe, top_k=2).view().language
    pipe.memory.state = None
    pipe.retriever.state = pipe.retriever.prepare(text, language=pipe.memory.language_for(text))
    assert memorized == "zh" and MethodRunner(pipe, top_k=2).view().language == "zh"


def test_each_row_names_its_evidence_chunks(tmp_path, memories):
    """The chunk ids a method gave the generator, best first (bench/answer_diff.py compares
    methods by them): as many as top_k, real chunks, the same between a run and its replay."""
    result = run("vartrack", ["hybrid", "likelihood"], output=tmp_path / "ids.json", **_kw(tmp_path))
    ids = [r["evidence_ids"] for r in result["questions"]]
    assert ids and all(len(i) == 2 and len(set(i)) == 2 and all(isinstance(c, int) and c >= 0 for c in i) for i in ids)
    again = run("vartrack", ["hybrid", "likelihood"], output=tmp_path / "ids2.json", **_kw(tmp_path))
    assert [r["evidence_ids"] for r in again["questions"]] == ids


def test_a_run_records_the_decoding_switches_it_ran_with(tmp_path, memories, monkeypatch):
    import memorag.quoting as quoting

    monkeypatch.setattr(quoting, "COMPLETE_UNIQUE", True)
    result = run("vartrack", QUESTION_ONLY, output=tmp_path / "r.json", **_kw(tmp_path))
    assert result["decoding"]["quoting.COMPLETE_UNIQUE"] is True
    assert set(result["decoding"]) == {"quoting.COMPLETE_UNIQUE", "memory.STOP_ON_RESTART", "llamacpp.JUDGE_SEQUENCES"}
    assert json.loads((tmp_path / "r.json").read_text())["decoding"] == result["decoding"]
