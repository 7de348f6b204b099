"""The judge's prompt cache: KV states of scored passages, restored instead of re-read."""

import numpy as np
import pytest

from memorag.llm.llamacpp import PromptStateCache, token_logprob

QUESTION = "Who rents Netherfield Park?"
PASSAGES = ["Mr. Bingley, a rich young man from the north of England, rents Netherfield Park and comes "
            "down with four servants to take possession before Michaelmas.",
            "Elizabeth Bennet is the second daughter of Mr. Bennet, a gentleman of Longbourn in "
            "Hertfordshire, and the favourite of her father."]


def _messages(passage: str) -> list[dict]:
    return [{"role": "user", "content": f"Passage: {passage}\n\nWrite a question that this passage answers."}]


@pytest.mark.unit
def test_cache_keeps_states_by_token_ids_and_evicts_least_recently_used():
    cache = PromptStateCache(max_bytes=10)
    cache.put([1, 2], b"aaaa")
    cache.put([3], b"bbbb")
    assert cache.get([1, 2]) == b"aaaa"  # now the most recently used
    cache.put([4], b"cccc")  # 12 bytes would not fit: [3] (least recently used) goes
    assert cache.get([3]) is None
    assert cache.get([1, 2]) == b"aaaa" and cache.get([4]) == b"cccc"
    assert cache.bytes == 8 and len(cache) == 2
    assert (cache.hits, cache.misses) == (3, 1)


@pytest.mark.unit
def test_token_logprob_is_the_log_softmax_of_the_row():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(151_936) * 8).astype(np.float32)
    logits[7] = 40.0  # a peaked row: the max subtraction must keep exp in range
    scratch = np.empty_like(logits)
    before = logits.copy()
    wide = logits.astype(np.float64)
    expected = wide - wide.max() - np.log(np.exp(wide - wide.max()).sum())
    for token in (7, 0, 151_935):
        assert token_logprob(logits, token, scratch) == pytest.approx(expected[token], abs=1e-4)
    assert np.array_equal(logits, before)  # llama.cpp's logits buffer is read, never written


@pytest.mark.unit
def test_cache_never_holds_more_than_its_budget():
    cache = PromptStateCache(max_bytes=5)
    cache.put([1], b"toolarge")  # larger than the whole budget: not kept
    assert len(cache) == 0 and cache.bytes == 0
    cache.put([1], b"abc")
    cache.put([1], b"abcd")  # replacing a key counts its bytes once
    assert cache.bytes == 4 and len(cache) == 1
    cache.clear()
    assert cache.bytes == 0 and cache.get([1]) is None
    off = PromptStateCache(max_bytes=0)
    off.put([1], b"a")
    assert len(off) == 0


def test_restored_passage_state_scores_exactly_as_when_first_read(default_llm):
    judge = default_llm.twin(n_ctx=2048)
    first = [judge.continuation_logprobs(_messages(p), QUESTION) for p in PASSAGES]
    assert len(judge.prompt_cache) == 2 and judge.prompt_cache.misses == 2
    # The KV cache now holds the second passage: the first is restored from the prompt cache.
    again = judge.continuation_logprobs(_messages(PASSAGES[0]), QUESTION)
    assert judge.prompt_cache.hits == 1
    assert again == first[0]
    # Another question about a cached passage reads only the question's tokens anew, and
    # scores as a judge with no cache does, to float tolerance.
    other = "Who is the second daughter of Mr. Bennet?"
    judge.continuation_logprobs(_messages(PASSAGES[0]), QUESTION)  # KV cache away from passage 1
    cached = judge.continuation_logprobs(_messages(PASSAGES[1]), other)
    assert judge.prompt_cache.hits == 2
    plain = default_llm.twin(n_ctx=2048)
    plain.prompt_cache.max_bytes = 0
    uncached = plain.continuation_logprobs(_messages(PASSAGES[1]), other)
    assert len(plain.prompt_cache) == 0
    assert len(cached) == len(uncached)
    assert max(abs(a - b) for a, b in zip(cached, uncached)) < 0.2
    # The passage that answers the question stays the likelier one, cached or not.
    assert sum(first[0]) / len(first[0]) > sum(first[1]) / len(first[1])


def test_batched_scoring_reads_heads_with_or_without_the_cache_and_leaves_one_sequence(default_llm):
    """continuation_logprobs_many (the plans' path) scores as one at a time does, whether the
    passages come from the prompt cache or are read fresh, and leaves only sequence 0 in the
    KV cache, so a one-at-a-time call afterwards is unchanged."""
    from memorag.llm.llamacpp import JUDGE_SEQUENCES

    alone = [default_llm.twin(n_ctx=2048).continuation_logprobs(_messages(p), QUESTION) for p in PASSAGES]
    for cache_bytes in (0, 1 << 28):
        judge = default_llm.twin(n_ctx=2048)
        judge.prompt_cache.max_bytes = cache_bytes
        for _ in range(2):  # read, then (with the cache) restored
            many = judge.continuation_logprobs_many([_messages(p) for p in PASSAGES], QUESTION)
            assert [len(x) for x in many] == [len(x) for x in alone]
            assert max(abs(a - b) for x, y in zip(many, alone) for a, b in zip(x, y)) < 0.25
        assert judge._n_seq == JUDGE_SEQUENCES
        assert len(judge.prompt_cache) == (2 if cache_bytes else 0)
        lib, memory = judge._llama_cpp, judge._llm._ctx.memory
        assert all(lib.llama_memory_seq_pos_max(memory, s) == -1 for s in range(1, JUDGE_SEQUENCES))
        after = judge.continuation_logprobs(_messages(PASSAGES[0]), QUESTION)
        assert max(abs(a - b) for a, b in zip(after, alone[0])) < 0.25
