"""The generator's store of answered prompts: a new question's prompt starts from the stored
KV state that shares the longest prefix with it, and answers exactly as if read afresh."""

import pytest

from memorag.llm.llamacpp import PromptStateCache

SYSTEM = "Answer from the evidence only."
CHUNKS = [
    "Mr. Bingley, a rich young man from the north of England, rents Netherfield Park and comes down "
    "with four servants to take possession before Michaelmas. He is said to have four or five thousand a year.",
    "Elizabeth Bennet is the second daughter of Mr. Bennet, a gentleman of Longbourn in Hertfordshire, "
    "and the favourite of her father, who calls her quicker than her sisters.",
    "Mr. Darcy is a tall man with a fine figure and noble mien; the report is in general circulation "
    "within five minutes after his entrance that he has ten thousand a year and an estate in Derbyshire.",
    "Sir William Lucas had been formerly in trade in Meryton, where he had made a tolerable fortune, and "
    "risen to the honour of knighthood by an address to the king during his mayoralty.",
]


def _messages(chunks: list[int], question: str) -> list[dict]:
    evidence = "\n\n".join(CHUNKS[i] for i in chunks)
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Evidence:\n{evidence}\n\nQuestion: {question}\nAnswer in a few words:"}]


@pytest.mark.unit
def test_longest_prefix_finds_the_state_sharing_most_tokens():
    cache = PromptStateCache(max_bytes=100)
    assert cache.longest_prefix([1, 2, 3]) is None
    cache.put([1, 2, 9, 9], b"a")
    cache.put([1, 2, 3, 4, 5], b"b")
    cache.put([7, 8], b"c")
    assert cache.longest_prefix([1, 2, 3, 6]) == (3, [1, 2, 3, 4, 5], b"b")
    assert cache.longest_prefix([1, 2, 9]) == (3, [1, 2, 9, 9], b"a")  # the whole request is in it
    assert cache.longest_prefix([5]) is None


@pytest.mark.unit
def test_a_longer_state_replaces_the_states_it_extends():
    cache = PromptStateCache(max_bytes=100)
    cache.put([1, 2], b"aa")
    cache.put([1, 2, 3], b"bbb")
    cache.put([1, 4], b"c")
    cache.drop_prefixes_of([1, 2, 3, 4])
    assert len(cache) == 1 and cache.bytes == 1 and cache.longest_prefix([1, 4]) == (2, [1, 4], b"c")


def test_answers_from_a_restored_state_equal_answers_read_afresh(default_llm):
    gen = default_llm.twin(n_ctx=2048)
    fresh = default_llm.twin(n_ctx=2048)
    fresh.answer_cache.max_bytes = 0  # reads every prompt afresh
    asks = [([0, 1], "Who rents Netherfield Park?"),
            ([2, 3], "Where is Mr. Darcy's estate?"),  # the KV cache moves away from chunk 0
            ([0, 2], "How much a year does Mr. Bingley have?"),  # starts from the first state (chunk 0)
            ([0, 1], "Who is the favourite of Mr. Bennet?")]  # starts from the first state (chunks 0 and 1)
    for n, (chunks, question) in enumerate(asks):
        got = gen.chat(_messages(chunks, question), max_new_tokens=12)
        want = fresh.chat(_messages(chunks, question), max_new_tokens=12)
        assert got == want, (n, got, want)
    # asks 3 and 4 started from a stored state; 1 had none, 2 shared only the system prompt
    assert (gen.answer_cache.hits, gen.answer_cache.misses) == (2, 2)
    assert len(fresh.answer_cache) == 0
    # a state is replaced by the longer one that extends it: never two states of one prompt
    keys = list(gen.answer_cache._items)
    assert not any(a != b and b[: len(a)] == a for a in keys for b in keys)
