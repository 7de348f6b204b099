"""The judge's reading of every passage, done at memorize time and saved with the document
(memorag.judge_states)."""

import json

import pytest

from memorag.errors import StateError
from memorag.judge_states import JudgeStates, passage_reader
from memorag.plans import PlanParams, judge_passage_prompts, likelihood_prompt, paragraphs

QUESTION = "Who rents Netherfield Park?"
PASSAGES = ["Mr. Bingley, a rich young man from the north of England, rents Netherfield Park and comes "
            "down with four servants to take possession before Michaelmas.",
            "Elizabeth Bennet is the second daughter of Mr. Bennet, a gentleman of Longbourn in "
            "Hertfordshire, and the favourite of her father.",
            "The assembly at Meryton was crowded; Mr. Darcy danced only once with Mrs. Hurst and once "
            "with Miss Bingley, and declined being introduced to any other lady."]


@pytest.mark.unit
def test_states_round_trip_through_a_dir(tmp_path):
    layout = {"file": "judge.gguf", "n_ctx": 2048}
    states = JudgeStates.build(layout, [([1, 2, 3], b"abc"), ([4, 5], b"de"), ([6], b"")])
    assert len(states) == 3 and states.bytes == 5
    info = states.save(tmp_path / "judge")
    assert info == {"passages": 3, "bytes": 5, "layout": layout}
    again = JudgeStates.read(tmp_path / "judge")
    assert again.layout == layout
    assert again.get([1, 2, 3]) == b"abc" and again.get([4, 5]) == b"de" and again.get([6]) == b""
    assert again.get([1, 2]) is None and again.get([4, 5, 6]) is None  # only whole, exact prompts
    assert again.hits == 3


@pytest.mark.unit
def test_unreadable_states_are_refused_with_a_clear_error(tmp_path):
    d = tmp_path / "judge"
    JudgeStates.build({"n_ctx": 1}, [([1], b"abc")]).save(d)
    index = json.loads((d / "states.json").read_text())
    (d / "states.json").write_text(json.dumps({**index, "format": 99}))
    with pytest.raises(StateError, match="format 99"):
        JudgeStates.read(d)
    (d / "states.json").write_text(json.dumps({**index, "entries": [["k", 2, 5, 1]]}))  # past the end
    with pytest.raises(StateError, match="outside"):
        JudgeStates.read(d)
    (d / "states.json").write_text("{not json")
    with pytest.raises(StateError, match="Memorize the document again"):
        JudgeStates.read(d)


@pytest.mark.unit
def test_passage_prompts_are_every_paragraph_the_judge_can_pick_once():
    p = PlanParams(likelihood_chars=120)
    chunks = ["\n\n".join(PASSAGES[:2]), "\n\n".join(PASSAGES[1:])]  # overlapping chunks
    prompts = judge_passage_prompts(chunks, p)
    want = {json.dumps(likelihood_prompt(t, "en")) for c in chunks for t in paragraphs(c, 120)}
    assert {json.dumps(m) for m in prompts} == want
    assert len(prompts) == len(want)  # a paragraph two chunks share is read once
    zh = judge_passage_prompts(["段落一的文字足够长，可以算作一个段落，没有问题，确实如此，真的很长很长。"], PlanParams(language="zh"))
    assert zh[0][0]["content"].startswith("段落：")


@pytest.mark.unit
def test_a_judge_that_cannot_keep_states_reads_nothing_in_advance():
    assert passage_reader(None) is None
    assert passage_reader(object()) is None


def _means(scores):
    return [sum(s) / len(s) for s in scores]


def test_judge_restores_passages_read_in_advance(default_llm):
    prompts = [likelihood_prompt(t, "en") for t in PASSAGES]
    reader = default_llm.twin(n_ctx=2048)
    states = reader.read_passages(prompts, max_bytes=1 << 30)
    assert states is not None and len(states) == len(PASSAGES)
    plain = default_llm.twin(n_ctx=2048)
    plain.prompt_cache.max_bytes = 0
    want = plain.continuation_logprobs_many(prompts, QUESTION)
    judge = default_llm.twin(n_ctx=2048)
    judge.prompt_cache.max_bytes = 0  # only the states can spare it the reading
    assert judge.use_judge_states(states)
    got = judge.continuation_logprobs_many(prompts, QUESTION)
    assert states.hits == len(PASSAGES)
    assert [len(s) for s in got] == [len(s) for s in want]
    for a, b in zip(_means(got), _means(want)):
        assert abs(a - b) < 0.05  # the same reading, up to float rounding of another batch shape
    assert max(range(3), key=lambda i: _means(got)[i]) == max(range(3), key=lambda i: _means(want)[i]) == 0
    # one at a time restores them too
    one = judge.continuation_logprobs(prompts[1], QUESTION)
    assert states.hits == len(PASSAGES) + 1 and abs(_means([one])[0] - _means(want)[1]) < 0.05
    # states that would not fit the budget are not kept at all
    assert reader.read_passages(prompts, max_bytes=100_000) is None
    # another window is another layout: not used
    other = default_llm.twin(n_ctx=1024)
    assert not other.use_judge_states(states) and other.judge_states is None


class StatefulJudge:
    """A judge that keeps passage states the way the llama.cpp backend does, on the scripted
    model's scores: what the pipeline does with states, without loading a model."""

    def __init__(self):
        from memorag.testing import ScriptedLLM

        self.scorer = ScriptedLLM()
        self.read: list = []
        self.states = None
        self.handed = 0

    def continuation_logprobs(self, messages, continuation):
        return self.scorer.continuation_logprobs(messages, continuation)

    def yes_probability(self, messages):
        return self.scorer.yes_probability(messages)

    def read_passages(self, prompts, *, max_bytes, progress=None):
        self.read = list(prompts)
        if 10 * len(prompts) > max_bytes:
            return None
        if progress is not None:
            progress(len(prompts), len(prompts))
        return JudgeStates.build({"judge": "stateful"}, [([i, 7], b"s" * 10) for i in range(len(prompts))])

    def use_judge_states(self, states):
        self.states, self.handed = states, self.handed + 1
        return True


def _pipe(judge, **kw):
    from memorag import MemoRAG
    from memorag.index.faiss_index import FaissIndex
    from memorag.retrieval import Retriever
    from memorag.testing import HashEmbedder, ScriptedLLM

    return MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex, chunk_tokens=48), judge=judge, **kw)


DOC = "\n\n".join(PASSAGES * 4)


@pytest.mark.unit
def test_memorize_reads_every_passage_saves_the_states_and_load_hands_them_back(tmp_path):
    judge = StatefulJudge()
    pipe = _pipe(judge)
    stats = pipe.memorize(DOC, save_dir=tmp_path / "doc", progress=False)
    want = judge_passage_prompts([c.text for c in pipe.retriever.chunks], pipe.plan_params())
    assert judge.read == want and stats["judge_states"] == len(want) == len(set(PASSAGES))
    assert judge.states is pipe.document.judge_states
    manifest = json.loads((tmp_path / "doc" / "manifest.json").read_text())
    assert manifest["judge_states"]["passages"] == len(want)
    assert (tmp_path / "doc" / "judge" / "states.bin").stat().st_size == 10 * len(want)
    other = StatefulJudge()
    loaded = _pipe(other)
    loaded.load(tmp_path / "doc")
    assert other.states is not None and len(other.states) == len(want) and other.states.get([0, 7]) == b"s" * 10
    # the next document has none (a plan that never judges by likelihood reads nothing): the old ones go
    plain = _pipe(other, query_plan="question")
    handed = other.handed
    plain.memorize(DOC, progress=False)
    assert other.read == [] and other.states is None and other.handed == handed + 1
    assert plain.document.judge_states is None


@pytest.mark.unit
def test_states_over_the_budget_or_turned_off_are_not_kept(tmp_path):
    judge = StatefulJudge()
    small = _pipe(judge, judge_states_mb=0)
    small.memorize(DOC, save_dir=tmp_path / "off", progress=False)
    assert judge.read == [] and small.document.judge_states is None
    assert not (tmp_path / "off" / "judge").exists()
    from memorag.errors import InputError

    with pytest.raises(InputError, match="judge_states_mb"):
        _pipe(judge, judge_states_mb=-1)
    import memorag.judge_states as js

    big = StatefulJudge()
    big.read_passages = lambda prompts, *, max_bytes, progress=None: None  # over the budget
    over = _pipe(big)
    stats = over.memorize(DOC, progress=False)
    assert stats["judge_states"].startswith("not kept") and over.document.judge_states is None
    assert over.judge_states_mb == js.DEFAULT_BUDGET_MB
