"""Query plans and clue grounding (memorag.plans, memorag.grounding)."""

from __future__ import annotations

import pytest

from memorag.chunking import Chunk
from memorag.errors import InputError
from memorag.grounding import SentenceIndex, split_sentences
from memorag.memory import Clues
from memorag.plans import PlanContext, get_plan, plan_names, register_plan, run_plan

DOC = [
    Chunk("Kiss and Tell is a 1945 American comedy film. It stars Shirley Temple as Corliss Archer. "
          "The film was directed by Richard Wallace.", 0),
    Chunk("Shirley Temple Black was an American actress. She later served as Chief of Protocol of the United States. "
          "She was also ambassador to Ghana.", 200),
    Chunk("The Lewiston Maineiacs were a junior ice hockey team. They played at the Androscoggin Bank Colisee. "
          "The arena seats about four thousand people.", 400),
]
Q = "What government position was held by the woman who portrayed Corliss Archer in Kiss and Tell?"


@pytest.mark.unit
def test_split_sentences_keeps_offsets():
    text = "First sentence here. Second one follows! A third? Yes, a third."
    for off, s in split_sentences(text):
        assert text[off:off + len(s)] == s


@pytest.mark.unit
def test_a_quoted_clue_is_grounded_in_its_sentence_and_an_invented_one_is_not():
    index = SentenceIndex(DOC)
    quoted = index.ground("Shirley Temple served as Chief of Protocol of the United States", Q)
    invented = index.ground("The woman who portrayed Corliss Archer was Tony Soprano's father Johnny Soprano", Q)
    restated = index.ground("the woman who portrayed Corliss Archer in Kiss and Tell", Q)
    assert quoted.grounded and quoted.sentence.chunk_id == 1
    assert DOC[1].text[quoted.sentence.start - DOC[1].start:].startswith(quoted.sentence.text)
    assert not invented.grounded  # its new names are not in the document
    assert not restated.grounded  # it adds nothing to the question


@pytest.mark.unit
def test_window_is_the_best_matching_part_of_a_chunk():
    index = SentenceIndex(DOC)
    w = index.window(1, "Which position: Chief of Protocol?", max_chars=90)
    assert "Chief of Protocol" in w and len(w) <= 90


@pytest.mark.unit
def test_unknown_plan_is_a_clear_error_and_plans_can_be_registered():
    with pytest.raises(InputError, match="Unknown query plan"):
        get_plan("nope")
    calls = []

    def mine(ctx, question, clues, k, params):
        calls.append(question)
        return []

    register_plan("test-mine", mine)
    assert "test-mine" in plan_names()
    assert run_plan("test-mine", PlanContext(retriever=None), "q", None, 3) == [] and calls == ["q"]


def test_grounded_plan_with_only_invented_clues_equals_question_only(embedder):
    from memorag.models.registry import make_index_factory
    from memorag.retrieval import Retriever

    r = Retriever(embedder, make_index_factory("faiss"), chunk_tokens=64)
    r.build("\n\n".join(c.text for c in DOC))
    invented = Clues(Q, spans=["Tony Soprano's father Johnny Soprano played her", "Breezy Point in Minnesota"])
    q_only = [h.chunk_id for h in run_plan("question", r, Q, None, 2)]
    assert [h.chunk_id for h in run_plan("grounded", r, Q, invented, 2)] == q_only
    real = Clues(Q, spans=["Shirley Temple served as Chief of Protocol of the United States"])
    top = run_plan("grounded", r, Q, real, 2)
    assert any("Chief of Protocol" in h.text for h in top)
