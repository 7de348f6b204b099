"""The demo answers right: ten questions with known answers about the bundled sample,
asked through the default pipeline exactly as `memorag demo` builds it (issue 9): the
0.5B memory model and the 1.5B generator. The pipeline is the session's
(tests/conftest.py, ``default_pipeline``), shared with tests/test_e2e_default.py: its
document is the sample with one invented paragraph in the middle (tests/sampledoc.py),
which none of the ten questions is about. The questions take 1.5 to 2.5 minutes on 2 cores,
the memorize about 1.5 more when no other test has done it; kept in the default suite because
it is the first thing a user sees.

Each answer is checked for the words any correct answer must hold (the answer key is the
book, not a model's earlier output). At least 9 of the 10 must be right, and the demo's own
question always.
"""

from __future__ import annotations

import re

import pytest

from memorag.cli import SAMPLE_QUESTION

pytestmark = pytest.mark.e2e

# (question, list of alternatives; each alternative is a list of regexes that must all match)
QUESTIONS = [
    # how rich: the book says both "a young man of large fortune" and "four or five thousand a year"
    (SAMPLE_QUESTION, [[r"bingley", r"(four|five|4|5)[ ,]*(or (five|5) )?(thousand|000)"],
                       [r"bingley", r"large fortune"]]),
    ("How much a year is Mr. Darcy said to have?", [[r"ten thousand|10,?000"]]),
    ("In which county is Mr. Darcy's large estate?", [[r"derbyshire"]]),
    ("What colour was the coat Mr. Bingley wore when the ladies saw him from the window?", [[r"blue"]]),
    ("What colour was the horse Mr. Bingley rode?", [[r"black"]]),
    ("Who told Mrs. Bennet that Netherfield Park was let?", [[r"\blong\b"]]),
    ("By which feast day is the new tenant to take possession of Netherfield?", [[r"michaelmas"]]),
    ("What is the name of Mr. Bingley's brother-in-law?", [[r"hurst"]]),
    ("How long did Mr. Bingley sit with Mr. Bennet in his library when he returned the visit?",
     [[r"ten minutes|10 minutes"]]),
    ("What was Elizabeth trimming when her father said he hoped Mr. Bingley would like it?", [[r"\bhat\b"]]),
]


def correct(answer: str, alternatives: list[list[str]]) -> bool:
    a = answer.lower()
    return any(all(re.search(p, a) for p in alt) for alt in alternatives)


@pytest.fixture
def demo_pipe(default_pipeline):
    return default_pipeline.pipe  # MemoRAG(), the demo's own construction: every default


def test_answer_key_rejects_wrong_answers():
    # The demo's old wrong answer must not pass the key.
    old = "The new tenant of Netherfield Park is Mrs. Long, and she is rich with fortune from the north of England."
    assert not correct(old, QUESTIONS[0][1])
    assert correct("Mr. Bingley, with four or five thousand a year.", QUESTIONS[0][1])
    assert not correct("Mr. Darcy, a man of large fortune.", QUESTIONS[0][1])


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_demo_answers_at_least_nine_of_ten_and_its_clues_quote_the_book(demo_pipe, fact_document):
    """The answers, and the clues the demo shows beside them: the default memory (the base
    with its shipped recall adapter, decoding its spans as quotes: memorag.quoting) quotes
    the memorized book word for word in every span, case and white space folded. Whether the
    quotes are the right ones is measured on held-out data (docs/evaluation.md), not here."""
    results = []
    spans: list[tuple[str, str, bool]] = []
    book = _norm(fact_document)
    for question, key in QUESTIONS:
        ans = demo_pipe.ask(question, max_new_tokens=64)
        results.append((question, ans.answer, correct(ans.answer, key)))
        spans += [(question, s, _norm(s) in book) for s in (ans.clues.spans if ans.clues else [])]
        # the second hop's quotes (memory_bridge), which the demo shows too
        spans += [(question, s, _norm(s) in book) for s in ans.bridge[1:]]
    report = "\n".join(f"{'OK ' if ok else 'BAD'} {q} -> {a}" for q, a, ok in results)
    assert results[0][2], "the demo's own question must be answered right:\n" + report
    assert sum(ok for _, _, ok in results) >= 9, report
    clue_report = "\n".join(f"{'in book' if ok else 'INVENTED'}: {q} -> {s}" for q, s, ok in spans)
    assert len(spans) >= len(QUESTIONS), "the memory should recall spans for most questions:\n" + clue_report
    assert all(ok for _, _, ok in spans), clue_report
    assert any(q == SAMPLE_QUESTION for q, _, _ in spans), clue_report
