"""Query plans and clue grounding (memorag.plans, memorag.grounding)."""

from __future__ import annotations

import pytest

from memorag.chunking import Chunk
from memorag.errors import InputError
from memorag.grounding import SentenceIndex, split_sentences
from memorag.memory import Clues
from memorag.plans import PlanContext, execute_plan, get_plan, plan_names, register_plan, run_plan

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

    with pytest.raises(InputError, match="which clue kinds it reads"):  # unsaid: refused, not guessed
        register_plan("test-unsaid", mine)
    assert "test-unsaid" not in plan_names()
    register_plan("test-mine", mine, clues=())
    assert "test-mine" in plan_names()
    assert run_plan("test-mine", PlanContext(retriever=None), "q", None, 3) == [] and calls == ["q"]
    from memorag.plans import execute_plan, plan_clue_kinds, plan_options

    found = execute_plan("test-mine", PlanContext(retriever=None), "q", None, 3)  # bare hits get empty notes
    assert found.hits == [] and found.linked == [] and not found.judged
    register_plan("test-spans", mine, clues=("spans",), options=("clue_weight",))
    assert plan_clue_kinds("test-spans") == ("spans",) and plan_options("test-spans") == ("clue_weight",)
    mine.clue_kinds = ("answer",)  # a plan given by path says it as attributes
    register_plan("test-attr", mine)
    assert plan_clue_kinds("test-attr") == ("answer",)
    with pytest.raises(InputError, match="clue kind"):
        register_plan("test-bad", mine, clues=("gossip",))
    with pytest.raises(InputError, match="plan option"):  # a PlanParams field, or refused
        register_plan("test-bad", mine, clues=(), options=("rrf_weight",))
    with pytest.raises(InputError, match="plan option"):  # language follows the document
        register_plan("test-bad", mine, clues=(), options=("language",))
    assert "test-bad" not in plan_names()


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


# ------------------------------------------------------------------ likelihood / recall plans
def _hash_retriever(text: str, chunk_tokens: int = 48):
    from memorag.index.faiss_index import FaissIndex
    from memorag.retrieval import Retriever
    from memorag.testing import HashEmbedder

    r = Retriever(HashEmbedder(), FaissIndex, chunk_tokens=chunk_tokens)
    r.build(text)
    return r


@pytest.mark.unit
def test_paragraphs_split_on_blank_lines_and_cut_long_ones_at_spaces():
    from memorag.plans import paragraphs

    text = "Title\n" + "word " * 60 + "\n\nshort\n\nSecond paragraph about a quiet harbour town."
    parts = paragraphs(text, 100)
    assert all(len(p) <= 100 for p in parts)
    assert parts[-1] == "Second paragraph about a quiet harbour town."
    assert "short" not in parts  # a stray fragment is not a passage
    assert "".join(p.replace(" ", "") for p in parts[:-1]) == ("Title\n" + "word" * 60).replace(" ", "")
    assert paragraphs("tiny", 100) == ["tiny"]  # a text that is only a fragment is still judged


@pytest.mark.unit
def test_a_quoted_sentence_is_judged_by_the_paragraph_that_holds_it():
    from memorag.plans import paragraph_of, paragraphs

    chunk = ("A short note on the mill and its wheel, kept by the parish.\n\n"
             "Hester Vane repaired the wheel. She was paid in grain.\n\n"
             "The river flooded in the spring of that year and the bridge was rebuilt.")
    assert paragraph_of(chunk, "She was paid in grain.", 700) == "Hester Vane repaired the wheel. She was paid in grain."
    assert paragraph_of(chunk, "She was paid in grain.", 700) in paragraphs(chunk, 700)  # a state memorize read
    # a sentence the splitter joined differently: the paragraph holding its start
    assert paragraph_of(chunk, "The river flooded in the spring of that year and then dried", 700).startswith("The river")
    assert paragraph_of(chunk, "Nothing of the sort is in this chunk at all.", 700) == (
        "Nothing of the sort is in this chunk at all.")
    assert paragraph_of(chunk, "x" * 900, 700) == "x" * 700  # never longer than a judged passage


@pytest.mark.unit
def test_names_in_splits_joined_person_names_but_keeps_titles():
    from memorag.plans import names_in

    assert names_in("Were Scott Derrickson and Ed Wood of the same nationality?") == ["Scott Derrickson", "Ed Wood"]
    assert names_in("Who played Corliss Archer in the film Kiss and Tell?") == ["Corliss Archer", "Kiss and Tell"]
    assert names_in("what is it?") == []


# Ten paragraphs that all share the question's common words; only one holds every word of it.
_FILLER = [f"The old mill by the river number {i} ground grain for the village every autumn." for i in range(9)]
_ANSWER = "Who repaired the old mill wheel? Hester Vane repaired the old mill wheel in the autumn."
_Q = "Who repaired the old mill wheel?"


@pytest.mark.unit
def test_likelihood_plan_puts_the_paragraph_the_judge_prefers_first_within_budget():
    from dataclasses import replace

    from memorag.plans import PlanParams
    from memorag.testing import ScriptedLLM

    r = _hash_retriever("\n\n".join(_FILLER[:6] + [_ANSWER] + _FILLER[6:]), chunk_tokens=24)
    judge = ScriptedLLM()
    p = replace(PlanParams(), likelihood_depth=len(r.chunks), likelihood_passages=len(r.chunks),
                likelihood_weight=100.0)
    ranked = run_plan("likelihood", PlanContext(r, judge), _Q, None, 3, p)
    assert "Hester Vane" in ranked[0].text
    assert ranked[0].passage == _ANSWER  # the paragraph the judge scored, kept for the evidence
    assert all(h.passage and h.passage in h.text for h in ranked)
    assert judge.call_counts["judge"] <= p.likelihood_passages  # the budget bounds the judge's cost
    # without a judge that can score, the plan is question-only retrieval
    unjudged = run_plan("likelihood", PlanContext(r, None), _Q, None, 3, p)
    assert [h.chunk_id for h in unjudged] == [h.chunk_id for h in run_plan("question", r, _Q, None, 3, p)]
    assert all(h.passage is None for h in unjudged)  # no judge read them: nothing to cut them to


@pytest.mark.unit
def test_a_judged_passage_is_widened_to_whole_paragraphs_and_its_neighbours():
    from memorag.answering import passage_in_context

    chunk = "Chapter 4\n\n“Who is he?” asked Jane.\n\n“Mr. Bingley,” said Elizabeth, “a young man of large fortune.”\n\nThe end."
    assert passage_in_context(chunk, "Mr. Bingley,” said Elizabeth", 10) == "“Mr. Bingley,” said Elizabeth, “a young man of large fortune.”"
    # short: the paragraph after it first, then the one before, until min_chars
    assert passage_in_context(chunk, "“Who is he?” asked Jane.", 60) == (
        "“Who is he?” asked Jane.\n\n“Mr. Bingley,” said Elizabeth, “a young man of large fortune.”")
    assert passage_in_context(chunk, "The end.", 40).startswith("“Mr. Bingley,”")
    assert passage_in_context(chunk, "The end.", 10_000) == chunk  # never more than the chunk
    assert passage_in_context(chunk, "not in it", 60) == "not in it"


@pytest.mark.unit
def test_lead_evidence_keeps_the_best_hit_whole_and_cuts_the_others_to_their_judged_paragraph():
    from memorag.answering import PASSAGE_CHARS, LeadAndPassages, passage_in_context
    from memorag.plans import PlanResult
    from memorag.retrieval import Hit

    def chunk(name: str) -> str:
        return "\n\n".join(f"{name} paragraph {i}: " + "filler words here " * 12 for i in range(6))

    a, b, c = chunk("Alpha"), chunk("Beta"), chunk("Gamma")
    hits = [Hit(2, 0.4, a, passage=a.split("\n\n")[3]), Hit(5, 0.9, b, passage=b.split("\n\n")[1]),
            Hit(8, 0.6, c, passage=None)]
    got = LeadAndPassages().render(None, "q", PlanResult(hits))  # type: ignore[arg-type]
    assert got[1] == b  # the best score: its whole chunk, though the judge read one paragraph of it
    assert got[0] == passage_in_context(a, hits[0].passage or "", PASSAGE_CHARS)
    assert hits[0].passage in got[0] and PASSAGE_CHARS <= len(got[0]) < len(a) / 2
    assert got[2] == c  # no judge read it: nothing to cut it to
    assert LeadAndPassages().render(None, "q", PlanResult([])) == []  # type: ignore[arg-type]
    ties = [Hit(1, 0.5, a, passage=a.split("\n\n")[0]), Hit(3, 0.5, b, passage=b.split("\n\n")[0])]
    assert LeadAndPassages().render(None, "q", PlanResult(ties))[0] == a  # type: ignore[arg-type]


@pytest.mark.unit
def test_recall_plan_lets_a_grounded_clue_bring_a_chunk_the_question_misses():
    from dataclasses import replace

    from memorag.plans import PlanParams
    from memorag.testing import ScriptedLLM

    far = "The ledger of the ferry company lists Ottilie Marsh as the keeper of the lighthouse key."
    r = _hash_retriever("\n\n".join(_FILLER + [far]), chunk_tokens=24)
    q = "Which mill ground grain for the village?"
    p = replace(PlanParams(), likelihood_depth=2, likelihood_passages=4)
    first = {h.chunk_id for h in run_plan("question", r, q, None, 2, p)}
    far_chunk = next(i for i, c in enumerate(r.chunks) if "Ottilie" in c.text)
    assert far_chunk not in first
    clues = Clues(q, spans=["Ottilie Marsh is the keeper of the lighthouse key"])
    got = {h.chunk_id for h in run_plan("recall", PlanContext(r, ScriptedLLM()), q, clues, 3, p)}
    assert far_chunk in got  # the memory proposed it; it is judged with the question's candidates
    invented = Clues(q, spans=["Bartholomew Quince owned the windmill on the moor"])
    assert far_chunk not in {h.chunk_id for h in run_plan("recall", PlanContext(r, ScriptedLLM()), q, invented, 3, p)}


@pytest.mark.unit
def test_plans_say_which_evidence_the_question_found_and_which_only_the_memory():
    """Hit.found_by: the question's own candidates are "question", a chunk only a memory
    clue brought is "memory" alone, a question candidate the memory also pointed at has
    both; the judge's reordering changes none of it, and plan likelihood never says memory."""
    from dataclasses import replace

    from memorag.plans import PlanParams
    from memorag.testing import ScriptedLLM

    far = "The ledger of the ferry company lists Ottilie Marsh as the keeper of the lighthouse key."
    r = _hash_retriever("\n\n".join(_FILLER + [far]), chunk_tokens=24)
    q = "Which mill ground grain for the village?"
    p = replace(PlanParams(), likelihood_depth=2, likelihood_passages=4)
    first = [h.chunk_id for h in run_plan("question", r, q, None, 2, p)]
    assert all(h.found_by == ("question",) for h in run_plan("question", r, q, None, 2, p))
    far_chunk = next(i for i, c in enumerate(r.chunks) if "Ottilie" in c.text)
    near_text = next(s for s in r.sentence_index("en").sentences if s.chunk_id == first[0]).text
    clues = Clues(q, spans=["Ottilie Marsh is the keeper of the lighthouse key", near_text])
    got = {h.chunk_id: h.found_by for h in run_plan("recall", PlanContext(r, ScriptedLLM()), q, clues, 3, p)}
    assert got[far_chunk] == ("memory",)
    assert got[first[0]] == ("question", "memory")
    assert all(src == ("question",) for cid, src in got.items() if cid not in (far_chunk, first[0]))
    judged = run_plan("likelihood", PlanContext(r, ScriptedLLM()), q, clues, 3, p)
    assert judged and all(h.found_by == ("question",) for h in judged)


@pytest.mark.unit
def test_links_join_sentences_through_rare_words_not_common_ones():
    index = SentenceIndex(DOC)
    first = next(i for i, s in enumerate(index.sentences) if "stars Shirley Temple" in s.text)
    linked = [index.sentences[o].text for _, o in index.links(first, set(), max_df=2)]
    assert any("Shirley Temple Black" in t for t in linked)  # "shirley", "temple": in two sentences
    # "American" is in two sentences too; with it known the film's first sentence no longer links
    film = next(i for i, s in enumerate(index.sentences) if "comedy film" in s.text)
    assert [o for _, o in index.links(film, {"american", "1945", "comedy", "film", "kiss", "tell"}, 2)] == []
    assert index.links(first, set(), max_df=0) == []  # every word is too common at df 0


@pytest.mark.unit
def test_following_links_walks_a_variable_chain_the_question_cannot_reach():
    from dataclasses import replace

    from memorag.eval.datasets import vartrack_haystacks
    from memorag.eval.metrics import recall_at_k
    from memorag.plans import PlanParams

    hay = vartrack_haystacks(limit=3, per_haystack=3, haystack_tokens=4000, seed=5, hops=3)[0]
    r = _hash_retriever(hay.text, chunk_tokens=64)
    for q in hay.questions:
        off = replace(PlanParams(), follow_hops=0)
        on = replace(PlanParams(), follow_hops=3)
        plain = [h.text for h in run_plan("likelihood", PlanContext(r, None), q.question, None, 5, off)]
        walked = [h.text for h in run_plan("likelihood", PlanContext(r, None), q.question, None, 5, on)]
        assert recall_at_k(q.gold, walked) == 1.0  # the value's line, then each copy of it
        assert recall_at_k(q.gold, plain) < 1.0  # the copies share no word with the question
        assert walked[0] == next(c.text for c in r.chunks if q.gold[0][0] in c.text)  # the anchor leads
        found = execute_plan("likelihood", PlanContext(r, None), q.question, None, 5, on)
        assert [s.rstrip(".") for s in found.linked] == [g[0] for g in q.gold]  # the walk, in order
        # a chunk only the walk reached says so (two candidates, so the walk leaves them)
        narrow = replace(on, likelihood_depth=2)
        asked = {h.chunk_id for h in run_plan("question", r, q.question, None, 2, narrow)}
        walked_to = execute_plan("likelihood", PlanContext(r, None), q.question, None, 5, narrow).hits
        assert {h.found_by for h in walked_to if h.chunk_id not in asked} == {("links",)}
        assert {h.found_by for h in walked_to if h.chunk_id in asked} == {("question",)}
        assert [h.text for h in found.hits] == walked
        # the walk stops at its budget: one hop reaches the value's line and one copy only
        one = [h.text for h in run_plan("likelihood", PlanContext(r, None), q.question, None, 5,
                                        replace(on, follow_hops=1))]
        assert recall_at_k(q.gold[:2], one) == 1.0 and recall_at_k(q.gold[2:], one[:2]) == 0.0
        # at k=3 the walk takes one hop whatever follow_hops says: one place stays the judge's
        assert len(execute_plan("likelihood", PlanContext(r, None), q.question, None, 3, on).linked) == 2


@pytest.mark.unit
def test_excerpts_keep_the_walked_chain_and_the_question_sentences_and_drop_the_filler():
    from dataclasses import replace

    from memorag.eval.datasets import vartrack_haystacks
    from memorag.plans import PlanParams, excerpt_evidence

    hay = vartrack_haystacks(limit=3, per_haystack=3, haystack_tokens=4000, seed=5, hops=3)[0]
    r = _hash_retriever(hay.text, chunk_tokens=64)
    q = hay.questions[0]
    found = execute_plan("likelihood", PlanContext(r, None), q.question, None, 5, replace(PlanParams(), follow_hops=3))
    hits = found.hits
    short = excerpt_evidence(r, q.question, hits, around=0, linked_ids=found.linked_ids)
    assert len(short) == len(hits)
    for (line,) in q.gold:  # every link of the chain survives, in the excerpt of its chunk
        assert any(line in e for e in short)
    assert sum(map(len, short)) < sum(len(h.text) for h in hits) / 2  # the filler around it goes
    # around=1 adds each kept sentence's neighbours, in document order, gaps marked
    index = r.sentence_index("en")
    sids = index.sentences_of(hits[0].chunk_id)
    middle = sids[len(sids) // 2]
    text = index.excerpt(hits[0].chunk_id, {middle}, around=1)
    assert text == " ".join(index.sentences[s].text for s in sids[len(sids) // 2 - 1: len(sids) // 2 + 2])
    assert index.excerpt(hits[0].chunk_id, {sids[0], sids[-1]}, around=0).count("...") == (len(sids) > 2)


def test_query_likelihood_on_the_default_model_is_consistent_and_prefers_the_right_passage():
    """Real llama.cpp scoring: the prefix cache gives the same numbers as a fresh run, and
    the passage that answers the question makes it more likely than an unrelated one."""
    from memorag.models.registry import load_llm

    llm = load_llm("default", n_ctx=1024)
    ask = "Write a question that this passage answers."
    right = [{"role": "user", "content": f"Passage: {DOC[0].text}\n\n{ask}"}]
    wrong = [{"role": "user", "content": "Passage: Carbonara is a pasta dish from Rome made with egg, "
                                          f"hard cheese, cured pork and black pepper.\n\n{ask}"}]
    question = "Who played Corliss Archer in the film Kiss and Tell?"
    a = llm.continuation_logprobs(right, question)
    b = llm.continuation_logprobs(wrong, question)
    again = llm.continuation_logprobs(right, question)
    assert len(a) == len(b) == llm.count_tokens(question)
    # Re-scoring reuses the cached shared prefix, so the rest is computed in differently sized
    # batches; llama.cpp's quantized matmuls are not batch-invariant (measured: up to 0.17 per
    # token, 0 for the same split). The mean, which ranks passages, moves far less than the
    # gap between passages asserted below.
    assert again == pytest.approx(a, abs=0.3)
    assert abs(sum(again) / len(again) - sum(a) / len(a)) < 0.05
    assert all(x <= 0 for x in a + b)
    assert sum(a) / len(a) > sum(b) / len(b) + 0.5


@pytest.mark.unit
def test_recall_quotes_lets_a_verbatim_quote_vote_and_a_paraphrase_not():
    """Plan ``recall+quotes``: a chunk the memory quoted word for word gets its own vote in the
    final fusion (a bridge paragraph shares no word with the question, so neither the first
    round nor the judge ranks it); a paraphrase only joins the judge's candidates, as in
    plain ``recall``."""
    from dataclasses import replace

    from memorag.plans import PlanParams
    from memorag.testing import ScriptedLLM

    far = "The ledger of the ferry company lists Ottilie Marsh as the keeper of the lighthouse key."
    r = _hash_retriever("\n\n".join(_FILLER + [far]), chunk_tokens=24)
    q = "Which mill ground grain for the village?"
    p = replace(PlanParams(), likelihood_depth=4, likelihood_passages=6)
    far_chunk = next(i for i, c in enumerate(r.chunks) if "Ottilie" in c.text)
    quote = Clues(q, spans=[far])
    plain = [h.chunk_id for h in run_plan("recall", PlanContext(r, ScriptedLLM()), q, quote, 2, p)]
    voted = [h.chunk_id for h in run_plan("recall+quotes", PlanContext(r, ScriptedLLM()), q, quote, 2, p)]
    assert far_chunk not in plain
    assert far_chunk in voted
    many = Clues(q, spans=[far, *_FILLER[:4]])  # more quotes than the judge reads as extra passages
    assert far_chunk in [h.chunk_id for h in run_plan("recall+quotes", PlanContext(r, ScriptedLLM()), q, many, 5, p)]
    paraphrase = Clues(q, spans=["Ottilie Marsh keeps the key of the lighthouse for the ferry company, per the ledger"])
    para = [h.chunk_id for h in run_plan("recall+quotes", PlanContext(r, ScriptedLLM()), q, paraphrase, 2, p)]
    assert para == plain


@pytest.mark.unit
def test_avoid_found_tells_the_memory_the_sentences_of_the_questions_own_top_chunks():
    """``avoid_found=N``: the memory is asked to quote away from the question's own top N
    chunks (question-only hybrid), which retrieval finds without it; 0 asks nothing."""
    from dataclasses import replace

    from memorag.answering import Answering, RetrievalPlan, View, find_evidence
    from memorag.plans import PlanParams

    r = _hash_retriever("\n\n".join([_ANSWER, *_FILLER]), chunk_tokens=24)

    class Recorder:  # a clue source recording what it was told to avoid
        def __init__(self) -> None:
            self.avoided: list[list[str]] = []

        def clues(self, query, *, use_answer=False, kinds=(), avoid=()):
            self.avoided.append(list(avoid))
            return Clues(query)

        def key_points(self):
            return []

    memory = Recorder()
    view = View(r, memory)
    from memorag.longmem import extract_sentences

    top = r.search([_Q], 2, lexical=True)
    expected = [s for h in top for s in extract_sentences(h.text)]
    for n, want in ((2, expected), (0, [])):
        plan = RetrievalPlan("recall", replace(PlanParams(), avoid_found=n), None)
        find_evidence(view, _Q, Answering(generator=None, plan=plan, top_k=2))
        assert memory.avoided[-1] == want
    assert any("Hester Vane" in s for s in expected)  # the question's best chunk is among them


@pytest.mark.unit
def test_memory_bridge_asks_the_memory_again_with_the_judges_best_sentence_and_puts_its_quote_second():
    """``memory_bridge``: after the judge, the memory is asked once more with the question and
    the best sentence of the top chunk, kept away from that chunk; the chunk it then quotes
    word for word (a second hop no question word reaches), if the fact links to it through a
    rare word, takes second place. An invented line, or a real one the fact does not link
    to, moves nothing, and with the option off the memory is not asked again."""
    from dataclasses import replace

    from memorag.answering import Answering, RetrievalPlan, View, find_evidence
    from memorag.longmem import extract_sentences
    from memorag.plans import BRIDGE_QUERY, PlanParams
    from memorag.testing import ScriptedLLM

    far = "The ledger of the ferry company lists Hester Vane as the keeper of the lighthouse key."
    unlinked = "The ledger of the ferry company lists Ottilie Marsh as the keeper of the lighthouse key."
    answer = "Hester Vane repaired the old mill wheel in the autumn."  # the fact: names Hester Vane
    r = _hash_retriever("\n\n".join([answer, *_FILLER, far, unlinked]), chunk_tokens=24)
    far_chunk = next(i for i, c in enumerate(r.chunks) if far in c.text)
    assert unlinked not in r.chunks[far_chunk].text

    class Memory:  # a quoting clue source: its second answer is the scripted line
        can_quote = True

        def __init__(self, second: str) -> None:
            self.second = second
            self.asked: list[tuple[str, list[str]]] = []

        def clues(self, query, *, use_answer=False, kinds=(), avoid=()):
            self.asked.append((query, list(avoid)))
            return Clues(query, spans=[self.second] if "The document says:" in query else [])

        def key_points(self):
            return []

    def run(memory: Memory, bridge: bool):
        p = replace(PlanParams(), likelihood_depth=4, likelihood_passages=6, memory_bridge=bridge)
        plan = RetrievalPlan("recall", p, ScriptedLLM())
        return find_evidence(View(r, memory), _Q, Answering(generator=None, plan=plan, top_k=3))

    plain = run(Memory(far), False)
    assert far_chunk not in [h.chunk_id for h in plain.hits] and plain.plan.bridge == []
    memory = Memory(far)
    got = run(memory, True)
    ids = [h.chunk_id for h in got.hits]
    assert ids[0] == plain.hits[0].chunk_id and ids[1] == far_chunk
    assert ids[2:] == [h.chunk_id for h in plain.hits][1:2]  # the rest keep their order, one place down
    assert got.hits[1].found_by == ("memory",)
    query, avoid = memory.asked[-1]
    anchor = plain.hits[0]
    best = r.sentence_index("en").best_sentence(anchor.chunk_id, _Q)
    assert query == BRIDGE_QUERY["en"].format(question=_Q, fact=r.sentence_index("en").sentences[best].text)
    assert avoid == extract_sentences(anchor.text)  # kept away from the chunk it was told about
    assert got.plan.bridge == [query, far] and got.plan.bridge_chunk == far_chunk
    from memorag.answering import answer_question

    answered = answer_question(View(r, Memory(far)), _Q, Answering(
        generator=ScriptedLLM(), plan=RetrievalPlan("recall", replace(PlanParams(), likelihood_depth=4,
                                                                      likelihood_passages=6, memory_bridge=True),
                                                    ScriptedLLM()), top_k=3))
    assert answered.bridge == [query, far]  # what ask returns and prints: asked, then quoted
    assert answered.to_json()["bridge"] == {"asked": query, "quotes": [far]}
    invented = run(Memory("Bartholomew Quince owned the windmill on the moor"), True)
    assert [h.chunk_id for h in invented.hits] == [h.chunk_id for h in plain.hits]
    not_a_link = run(Memory(unlinked), True)  # real, but shares no rare word with the fact
    assert [h.chunk_id for h in not_a_link.hits] == [h.chunk_id for h in plain.hits]
    assert invented.plan.bridge_chunk is None and invented.plan.bridge[1:] == ["Bartholomew Quince owned the windmill on the moor"]
    unquoting = Memory(far)
    unquoting.can_quote = False  # a memory that cannot quote is asked without the keep-away
    assert [h.chunk_id for h in run(unquoting, True).hits] == ids and unquoting.asked[-1][1] == []
    # a top sentence of question words only links nowhere: the memory is not asked again
    r = _hash_retriever("\n\n".join([_ANSWER, *_FILLER, far]), chunk_tokens=24)
    silent = Memory(far)
    assert run(silent, True).plan.bridge == [] and not any("The document says:" in a for a, _ in silent.asked)
