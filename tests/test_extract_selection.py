"""Which sentences the extractive memory keeps (memorag.longmem.extractive_memory's options),
with a word-count tokenizer: the selection logic, not the model."""

from __future__ import annotations

import pytest

from memorag.longmem import _split, extract_sentences, extractive_memory

pytestmark = pytest.mark.unit


class WordCounter:
    """Counts words as tokens: all extractive_memory asks of a model."""

    def count_tokens(self, text: str) -> int:
        return len(text.split())


FILLER = "The river runs to the sea. The hills are quiet today. Birds sing at dawn.\n"
CHAIN = ["VAR QXJRT = 48213.", "VAR MWLOP = VAR QXJRT.", "VAR ZKVNE = VAR MWLOP."]


def _haystack() -> str:
    body = []
    for i in range(120):
        body.append(FILLER)
        if i in (10, 60, 110):
            body.append(CHAIN[(10, 60, 110).index(i)] + "\n")
    return "".join(body)


def test_repeated_filler_is_kept_once_and_leaves_room_for_what_is_rare():
    text = _haystack()
    budget = WordCounter().count_tokens(text) // 4
    plain, _ = extractive_memory(WordCounter(), text, budget, "en", dedup=False)
    deduped, stats = extractive_memory(WordCounter(), text, budget, "en")  # the default
    lines = [line for line in deduped.splitlines() if not line.startswith("[Part ")]
    assert len(lines) == len(set(lines))  # no sentence twice
    assert all(line in deduped for line in CHAIN)  # the whole chain is in the memory
    assert stats.memory_tokens < budget // 4  # and the memory is small: repeats were all it lacked
    plain_lines = plain.splitlines()
    assert len(plain_lines) - len(set(plain_lines)) > 10  # without it, repeated filler fills the budget


def test_a_lead_bonus_prefers_the_sentence_that_opens_a_paragraph():
    paras = [f"Alder{i} Brook is a village in the county of Ruthland, founded by monks in {1100 + i}. "
             f"Its mill burned twice, in {1500 + i} and {1600 + i}, and the Turnell Wharmby family rebuilt it."
             for i in range(40)]
    text = "\n\n".join(paras)
    opening = [p.split(". ")[0] + "." for p in paras]
    budget = WordCounter().count_tokens(text) // 2 - 40
    base, _ = extractive_memory(WordCounter(), text, budget, "en", lead_bonus=0.0)
    lead, _ = extractive_memory(WordCounter(), text, budget, "en")  # the default bonus
    assert sum(s in lead for s in opening) > sum(s in base for s in opening)
    assert sum(s in lead for s in opening) >= 0.9 * len(opening)


def test_paragraph_starts_follow_line_breaks():
    text = "Title\nFirst one. Second one.\n\nNext para starts. And goes on."
    sents = extract_sentences(text)
    assert sents == ["Title\nFirst one.", "Second one.", "Next para starts.", "And goes on."]
    assert [start for _, start in _split(text)] == [True, False, True, False]
