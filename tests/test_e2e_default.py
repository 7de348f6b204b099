"""Real end-to-end runs on the default models: memorize, save, reload in a fresh process, ask.

They ask the session's default pipeline (tests/conftest.py, ``default_pipeline``: the sample
with FACT in its middle, memorized once and shared with tests/test_demo_questions.py); the
memorize takes about a minute and a half on 2 cores, so these are few, but CI runs them: they
are the only proof the embedded default path works.
"""

import json
import subprocess
import sys

import pytest
from sampledoc import FACT, QUESTION

from memorag import MemoRAG
from memorag.errors import NotMemorizedError, StateError

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def document(fact_document):
    # The fact sits in the middle of ~4.5K tokens of Austen: neither first nor last chunk.
    return fact_document


@pytest.fixture
def memorized(default_pipeline):
    # MemoRAG() with the default 8K memory window; the clues were taken right after memorize.
    return default_pipeline


def test_memorize_saves_manifest_with_models_and_counts(memorized):
    pipe, save_dir, stats, _ = memorized
    manifest = json.loads((save_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["manifest_sha256"]  # format 2: self-checksummed
    assert manifest["models"]["memory"]["file"].endswith(".gguf")
    assert manifest["models"]["embedder"]["name"] == "model"  # the packaged MiniLM directory
    assert manifest["memory_tokens"] == stats["memory_tokens"] > 3000
    assert manifest["chunks"] == stats["chunks"] >= 5
    assert (save_dir / "memory" / "kv_state.bin").stat().st_size > 10_000_000


def test_judge_states_are_saved_and_restored_after_a_reload(memorized):
    pipe, save_dir, stats, _ = memorized
    manifest = json.loads((save_dir / "manifest.json").read_text())
    assert stats["judge_states"] == manifest["judge_states"]["passages"] > 10  # every paragraph, read once
    assert (save_dir / "judge" / "states.bin").stat().st_size == manifest["judge_states"]["bytes"]
    from memorag.judge_states import passage_reader

    pipe.load(save_dir)
    states = pipe.document.judge_states
    reader = passage_reader(pipe.judge)
    assert states is not None and reader.judge_states is states  # the loaded ones, handed to the judge
    reader.prompt_cache.clear()
    clues = pipe.memory.clues(QUESTION)
    reads: list[int] = []
    llm = reader._llm
    real_eval = llm.eval
    llm.eval = lambda tokens: (reads.append(len(tokens)), real_eval(tokens))[1]
    try:
        pipe.retrieve(QUESTION, clues, k=3)
    finally:
        del llm.eval
    # the judge restored its candidates' paragraphs instead of reading them; it reads only
    # what memorize could not foresee: the (up to 3) sentences the memory's clues point at
    assert states.hits >= 5 and len(reads) <= 3, (states.hits, reads)


def test_reload_in_fresh_process_answers_with_the_fact(memorized):
    _, save_dir, _, clues = memorized
    proc = subprocess.run(
        [sys.executable, "-m", "memorag.cli", "ask", str(save_dir), QUESTION, "--json", "--max-new-tokens", "48"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert any(FACT in e["text"] for e in out["evidence"])  # retrieval found the fact
    assert "jar" in out["answer"].lower() or "mantelpiece" in out["answer"].lower(), out["answer"]
    assert out["clues"]["spans"] or out["clues"]["questions"]
    # Greedy clues after a reload in another process are exactly those right after memorize.
    assert out["clues"]["spans"] == clues.spans
    # the default plan has the memory generate only the clue kinds it reads
    from memorag.config import DEFAULT_PLAN
    from memorag.plans import plan_clue_kinds

    assert out["clues"]["questions"] == (clues.questions if "questions" in plan_clue_kinds(DEFAULT_PLAN) else [])


def test_load_restores_identical_clues_in_process(memorized):
    pipe, save_dir, _, clues = memorized
    pipe.load(save_dir)
    again = pipe.memory.clues(QUESTION)
    assert (again.spans, again.questions) == (clues.spans, clues.questions)


def test_original_api_call_and_errors(memorized, document):
    pipe, save_dir, _, _ = memorized
    answer = pipe(context=document, query=QUESTION, max_new_tokens=40)  # same context: no re-memorize
    assert isinstance(answer, str) and answer
    from memorag.memory import Memory

    fresh = MemoRAG.from_parts(Memory(llm=pipe.memory.llm), pipe.retriever, pipe.generator)
    with pytest.raises(NotMemorizedError):
        fresh.ask(QUESTION)
    with pytest.raises(NotMemorizedError):
        fresh(query=QUESTION)
    with pytest.raises(StateError):
        fresh.load(save_dir / "memory")  # not a save dir


def test_summarize_lists_key_points_and_retrieves_for_them(memorized):
    pipe, _, _, _ = memorized
    ans = pipe.ask(None, task_type="summarize", max_new_tokens=60)
    assert ans.clues is not None and ans.clues.spans  # the memory's key points
    assert len(ans.evidence) == pipe.ret_hit
    assert ans.answer


ZH_DOC = (
    "青石镇位于山谷南端，镇上有一座建于清朝的古桥，名叫望月桥。"
    "镇长林秋生每年秋天都会在桥边举办灯会，吸引附近村庄的人前来观看。"
    "镇上的药铺由周婉清经营，她的父亲曾是县城里有名的郎中。"
    "去年冬天，一场大雪压垮了镇东的粮仓，镇民们花了三个月才把它重建起来。"
    "重建后的粮仓可以存放两千石粮食，钥匙由老会计王德顺保管。"
) * 3


def test_chinese_document_uses_chinese_prompts(default_llm):
    from memorag.memory import Memory

    mem = Memory(llm=default_llm)
    mem.memorize(ZH_DOC)
    assert mem.language == "zh"
    answer = mem.answer("粮仓的钥匙由谁保管？")
    assert "王德顺" in answer, answer
    assert mem.clues("粮仓的钥匙由谁保管？").lines()
