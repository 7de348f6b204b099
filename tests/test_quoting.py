"""Quote-constrained decoding (memorag.quoting) on a small byte vocabulary: no model."""

import numpy as np
import pytest

from memorag.memory import Memory, distinct_lines
from memorag.quoting import QuoteConstraint, enough_words
from memorag.testing import ScriptedLLM

pytestmark = pytest.mark.unit

SOURCE = "The cat sat on the mat. A dog ran to the park. 猫在垫子上坐着。"
PIECES = [b"The", b" cat", b" sat", b" on", b" the", b" mat", b".", b"\n", b" dog", b" ran", b" to", b" park",
          b"A", b" flew", b"", "猫在".encode(), "垫子".encode()[:4], "垫子".encode()[4:], "上坐着".encode(), b" A"]
END = 14  # the empty piece: a control token that ends generation
NEWLINE = 7


def constraint(**kw) -> QuoteConstraint:
    return QuoteConstraint(SOURCE, lambda t: PIECES[t], is_end=lambda t: t == END, end_id=END, newline_id=NEWLINE,
                           **kw)


def scores_for(*ranked: int) -> np.ndarray:
    """Scores ranking ``ranked`` first, in that order; every other token lower."""
    s = np.full(len(PIECES), -10.0, dtype=np.float32)
    for i, tok in enumerate(ranked):
        s[tok] = 10.0 - i
    return s


def test_the_models_best_token_that_keeps_a_quote_wins():
    c = constraint()
    for tok in (0, 1):  # "The cat"
        c.advance(tok)
    # The model prefers " flew" and " dog" ("The cat flew", "The cat dog" are nowhere); " sat" is next best.
    assert c.choose(scores_for(13, 8, 2)) == 2
    masked = c.mask(scores_for(13, 8, 2))
    assert int(np.argmax(masked)) == 2 and np.isinf(masked).sum() == len(PIECES) - 1


def test_a_line_closes_only_once_it_holds_enough_words(monkeypatch):
    monkeypatch.setattr("memorag.quoting.QUOTE_SENTENCE_END", False)  # anywhere, once long enough
    c = constraint(min_words=4)
    for tok in (0, 1, 2):  # "The cat sat": three words
        c.advance(tok)
    assert not c.allows(NEWLINE) and not c.allows(END)
    c.advance(3)  # "The cat sat on"
    assert c.allows(NEWLINE) and c.allows(END)
    c.advance(NEWLINE)
    assert c.lines == 1 and c.line == b""
    assert c.allows(END)  # nothing open, one quote out: the reply may end
    assert not c.allows(NEWLINE)  # an empty line is never a quote


def test_a_new_line_may_start_anywhere_in_the_source_but_nowhere_else():
    c = constraint()
    assert c.allows(12) and c.allows(0)  # "A", "The"
    assert c.allows(8)  # " dog": leading space dropped, "dog" is in the source
    assert not c.allows(13)  # " flew" is not


def test_a_line_closes_only_where_its_sentence_ends_in_the_source(monkeypatch):
    """QUOTE_SENTENCE_END (off by default): "The cat sat on" is long enough but stops
    mid-sentence, so neither a line break nor the end may close it; "The cat sat on the mat."
    may. When nothing the model wants continues it, the line goes on as the document does."""
    monkeypatch.setattr("memorag.quoting.QUOTE_SENTENCE_END", True)
    c = constraint(min_words=4)
    for tok in (0, 1, 2, 3):  # "The cat sat on"
        c.advance(tok)
    assert not c.allows(NEWLINE) and not c.allows(END)
    pieces = {"The": 0, " cat": 1, " sat": 2, " on": 3, " the": 4, " mat": 5, ".": 6}

    def tokenize(text: str) -> list[int]:  # the fake vocabulary's longest pieces first
        out, rest = [], text
        while rest:
            piece = next((p for p in sorted(pieces, key=len, reverse=True) if rest.startswith(p)), None)
            if piece is None:
                break
            out.append(pieces[piece])
            rest = rest[len(piece):]
        return out

    follows = QuoteConstraint(SOURCE, lambda t: PIECES[t], is_end=lambda t: t == END, end_id=END,
                              newline_id=NEWLINE, min_words=4, top_n=1, tokenize=tokenize)
    for tok in (0, 1, 2, 3):
        follows.advance(tok)
    assert follows.choose(scores_for(13)) == 4  # " flew" is nowhere: " the", as the document goes on
    for tok in (4, 5, 6):  # " the mat."
        c.advance(tok)
    assert c.allows(NEWLINE) and c.allows(END)


def test_multibyte_characters_split_over_tokens_are_followed_byte_by_byte(monkeypatch):
    monkeypatch.setattr("memorag.quoting.QUOTE_SENTENCE_END", False)  # the line stops before "。"
    c = constraint(min_words=2)
    c.advance(15)  # 猫在
    assert c.allows(16)  # the first bytes of 垫
    c.advance(16)
    assert c.allows(17)
    c.advance(17)
    assert c.allows(18) and not c.allows(1)
    c.advance(18)
    assert enough_words(c.line, 2) and c.allows(NEWLINE)


def test_when_nothing_the_model_wants_fits_the_line_closes_or_the_reply_ends():
    c = constraint(top_n=2)
    assert c.choose(scores_for(13, 19)) == 19  # " flew" is nowhere; " A" starts a quote (as "A")
    c2 = constraint(top_n=1)
    assert c2.choose(scores_for(13)) == END and c2.forced == 1  # an empty line cannot stand: end
    c3 = constraint(top_n=1, min_words=4)
    for tok in (0, 1, 2, 3):
        c3.advance(tok)
    assert c3.choose(scores_for(13)) == NEWLINE  # a full quote is closed instead


@pytest.mark.parametrize("seed", range(20))
def test_greedy_decoding_under_random_scores_writes_only_quotes(seed):
    """Whatever the model scores, every closed line is in the source and long enough."""
    rng = np.random.default_rng(seed)
    c = constraint(min_words=3, top_n=len(PIECES))
    out = b""
    for _ in range(60):
        tok = c.choose(rng.normal(size=len(PIECES)).astype(np.float32))
        if tok == END:
            break
        out += PIECES[tok]
        c.advance(tok)
    lines = [line.strip() for line in out.split(b"\n")]
    closed = lines[:-1]  # the last is the open line, or empty after a closing line break
    for line in closed:
        assert line in SOURCE.encode() and enough_words(line, 3)
    assert lines[-1] in SOURCE.encode()  # the open line too


class QuotingLLM(ScriptedLLM):
    """The scripted fake plus the quoting capability, recording which path recall took."""

    def __init__(self, quotes: str) -> None:
        super().__init__([])
        self.quotes = quotes
        self.calls: list[int] = []

    def continue_quotes(self, user_suffix, *, max_new_tokens=128, min_words=4):
        self.calls.append(min_words)
        yield from self.quotes.splitlines(keepends=True)


def test_memory_recall_uses_quotes_when_the_model_can_and_drops_cut_fragments():
    llm = QuotingLLM("The cat sat on the mat.\nA dog ran\n")
    memory = Memory(llm=llm)
    memory.memorize(SOURCE)
    assert memory.recall_spans("Where did the cat sit?") == ["The cat sat on the mat."]  # "A dog ran": 3 words
    assert llm.calls == [4]
    free = Memory(llm=QuotingLLM("unused"), quote_recall=False)
    free.memorize(SOURCE)
    free.recall_spans("Where did the cat sit?")
    assert free.llm.calls == []


def test_quote_recall_must_be_a_bool():
    from memorag.errors import InputError

    with pytest.raises(InputError, match="quote_recall"):
        Memory(llm=ScriptedLLM([]), quote_recall="yes")


def test_distinct_lines_min_words_applies_to_quotes():
    assert distinct_lines(iter(["one two three four\n", "five six\n"]), max_lines=4, min_words=4) == [
        "one two three four"]


def test_quotable_text_cuts_the_avoided_pieces_so_no_quote_can_hold_them():
    from memorag.quoting import quotable_text

    text = quotable_text(SOURCE, ["A dog ran to the park.", "  ", "nowhere in it"])
    assert "dog" not in text and "The cat sat on the mat." in text and "猫在垫子上坐着。" in text
    c = QuoteConstraint(text, lambda t: PIECES[t], is_end=lambda t: t == END, end_id=END, newline_id=NEWLINE)
    c.advance(12)  # "A": the only place it started ("A dog ...") is cut out
    assert c.choose(scores_for(8)) != 8  # " dog" can no longer follow


class AvoidingQuotingLLM(QuotingLLM):
    def __init__(self, quotes: str) -> None:
        super().__init__(quotes)
        self.avoided: list[list[str]] = []

    def continue_quotes(self, user_suffix, *, max_new_tokens=128, min_words=4, avoid=()):
        self.avoided.append(list(avoid))
        yield from super().continue_quotes(user_suffix, max_new_tokens=max_new_tokens, min_words=min_words)


def test_memory_passes_what_to_avoid_only_when_there_is_something():
    llm = AvoidingQuotingLLM("The cat sat on the mat.\n")
    memory = Memory(llm=llm)
    memory.memorize(SOURCE)
    memory.clues("Where did the cat sit?", kinds=("spans",), avoid=["A dog ran to the park."])
    assert llm.avoided == [["A dog ran to the park."]]
    # A Quoting model written before ``avoid`` existed is never handed it.
    plain = QuotingLLM("The cat sat on the mat.\n")
    old = Memory(llm=plain)
    old.memorize(SOURCE)
    assert old.recall_spans("Where did the cat sit?", avoid=[]) == ["The cat sat on the mat."]
    # Free (unquoted) recall cannot avoid anything: refused, not ignored.
    from memorag.errors import InputError

    free = Memory(llm=QuotingLLM("unused"), quote_recall=False)
    free.memorize(SOURCE)
    with pytest.raises(InputError, match="avoid_found needs quoted recall"):
        free.recall_spans("Where did the cat sit?", avoid=["A dog ran to the park."])


class ContrastQuotingLLM(QuotingLLM):
    def __init__(self, quotes: str) -> None:
        super().__init__(quotes)
        self.nulls: list[str | None] = []
        self.sources: list[str | None] = []

    def continue_quotes(self, user_suffix, *, max_new_tokens=128, min_words=4, avoid=(), null_suffix=None,
                        source=None):
        self.nulls.append(null_suffix)
        self.sources.append(source)
        yield from super().continue_quotes(user_suffix, max_new_tokens=max_new_tokens, min_words=min_words)


def test_memory_hands_the_null_task_to_a_backend_that_takes_it():
    """The recall task with an empty question goes with the question's task (the same
    instruction, so only the question differs: where the question begins, and the contrast's
    null task); a Quoting model written before null_suffix existed is not handed it and still
    quotes."""
    from memorag.prompts import prompts_for

    llm = ContrastQuotingLLM("The cat sat on the mat.\n")
    memory = Memory(llm=llm)
    memory.memorize(SOURCE)
    assert memory.recall_spans("Where did the cat sit?") == ["The cat sat on the mat."]
    template = prompts_for(memory.language or "en").recall
    assert llm.nulls == [template.format(question="")]
    assert template.format(question="Where did the cat sit?").startswith(llm.nulls[0])
    old = Memory(llm=QuotingLLM("The cat sat on the mat.\n"))
    old.memorize(SOURCE)
    assert old.recall_spans("Where did the cat sit?") == ["The cat sat on the mat."]


def test_memory_quotes_from_the_text_it_is_given_or_refuses():
    """recall_spans(source=...): the backend quotes from that text (the whole document where
    the memory read an extract); a backend that cannot, or free recall, refuses it."""
    from memorag.errors import InputError

    llm = ContrastQuotingLLM("The cat sat on the mat.\n")
    memory = Memory(llm=llm)
    memory.memorize(SOURCE)
    memory.recall_spans("Where did the cat sit?")
    memory.recall_spans("Where did the cat sit?", source=SOURCE + " More text.")
    assert llm.sources == [None, SOURCE + " More text."]
    old = Memory(llm=QuotingLLM("The cat sat on the mat.\n"))
    old.memorize(SOURCE)
    with pytest.raises(InputError, match="cannot quote from another text"):
        old.recall_spans("Where did the cat sit?", source=SOURCE)
    free = Memory(llm=ContrastQuotingLLM("unused"), quote_recall=False)
    free.memorize(SOURCE)
    with pytest.raises(InputError, match="needs quoted recall"):
        free.recall_spans("Where did the cat sit?", source=SOURCE)


# ------------------------------------------------------------ completing a unique quote
def test_sentence_rest_runs_to_the_sentence_end_past_abbreviations():
    from memorag.quoting import sentence_rest

    src = b'He saw Mr. Bingley ride by. Then "he left." And 5.3 more.\nNext line. \xe7\x8c\xab\xe5\x9c\xa8\xe3\x80\x82\xe7\x8b\x97'
    assert sentence_rest(src, len(b"He saw")) == b" Mr. Bingley ride by."  # "Mr." ends no sentence
    assert sentence_rest(src, src.index(b" \"he")) == b' "he left."'  # closing quote kept
    assert sentence_rest(src, src.index(b" 5.3")) == b" 5.3 more."  # a decimal point ends nothing
    assert sentence_rest(b"A heading with no stop\nbody.", 1) == b" heading with no stop"  # a line break does
    assert sentence_rest(src, src.index(b"\xe5\x9c\xa8")) == "在。".encode()  # a CJK full stop
    assert sentence_rest(src, len(src) - 3) == b""  # "。" ended the sentence before
    assert sentence_rest("猫。狗跑".encode(), len("猫。狗".encode())) == "跑".encode()  # the document's end ends it
    assert sentence_rest(src, src.index(b" Then")) == b""  # the sentence ended already ("by.")
    assert sentence_rest(src, src.index(b" Bingley")) == b" Bingley ride by."  # "Mr." ended nothing
    assert sentence_rest(src, 0, limit=10) == b""  # runs on past the limit: left to the model


def _feed(c: QuoteConstraint, rest: bytes) -> None:
    """What a backend does with a completion: every token of it passes through advance()."""
    by_bytes = {p: t for t, p in enumerate(PIECES) if p}
    data = rest
    while data:
        piece = max((p for p in by_bytes if data.startswith(p)), key=len)
        c.advance(by_bytes[piece])
        data = data[len(piece):]


def test_a_quote_that_names_one_place_is_finished_from_the_document():
    c = constraint(min_words=4, distinct=False)  # a finished quote stays quotable here
    c.complete = True
    for tok in (0, 1, 2):  # "The cat sat": three words, not enough to stand yet
        assert c.completion() == b""
        c.advance(tok)
    assert c.completion() == b""  # three words
    c.advance(3)  # "The cat sat on": four words, one place in the document
    assert c.completion() == b" the mat.\n"  # the rest of its sentence and the line's end
    assert c.completed == 1
    _feed(c, b" the mat.\n")
    assert c.line == b"" and c.lines == 1  # the backend read it in: the line is closed
    # the model has read the whole sentence as if it had written it: what it quotes next is
    # its choice, as without completion
    assert c.allows(0) and c.allows(12)  # "The ..." and "A dog ran ..." can start a line
    assert c.completion() == b""  # an empty line completes nothing
    for tok in (0, 1, 2, 3):  # the model starts the same quote again
        c.advance(tok)
    assert c.completion() == b""  # left to decode (the memory's restart stop ends it)
    assert c.completed == 1


def test_a_quote_with_two_places_is_not_finished_until_it_has_one():
    src = "the mat was red. the mat was blue."
    pieces = [b"the", b" mat", b" was", b" red", b".", b"\n", b"", b" blue"]
    c = QuoteConstraint(src, lambda t: pieces[t], is_end=lambda t: t == 6, end_id=6, newline_id=5, min_words=3)
    c.complete = True
    for tok in (0, 1, 2):  # "the mat was": three words, two places
        assert c.choose(scores_for(tok)) == tok
        c.advance(tok)
    assert c.completion() == b""
    assert c.choose(scores_for(7)) == 7  # " blue": one place now, and the model picked it
    c.advance(7)
    assert c.completion() == b".\n"


def test_a_line_ending_inside_a_character_is_not_completed():
    c = constraint(min_words=1)
    c.complete = True
    c.advance(15)  # "猫在"
    c.advance(16)  # the first bytes of "垫子": the line ends inside a character
    assert c.completion() == b""
    c.advance(17)
    assert c.completion() == "上坐着。\n".encode()


def test_completion_off_leaves_every_word_to_the_model():
    c = constraint(min_words=4)
    c.complete = False
    for tok in (0, 1, 2, 3, 4, 5, 6):
        assert c.choose(scores_for(tok)) == tok
        c.advance(tok)
        assert c.completion() == b""
    assert c.completed == 0


def test_a_quote_starts_at_a_word_start_not_inside_a_word():
    pieces = [b"She", b" was", b"he", b" a", b" woman", b"\n", b"", b"He", b" left"]
    c = QuoteConstraint("She was a woman. He left.", lambda t: pieces[t], is_end=lambda t: t == 6, end_id=6,
                        newline_id=5, min_words=2)
    assert not c.allows(2)  # "he" stands in the text only inside "She"
    assert c.allows(0) and c.allows(7)  # "She", and "He" at a word start
    assert c.choose(scores_for(2, 0)) == 0  # the model's first choice is a misquote: its next one is taken
    # punctuation or a space may start a quote anywhere; CJK text has no word starts to keep
    assert c.in_source(b" was a") and c.in_source(b". He")
    cjk = QuoteConstraint("猫在垫子上坐着。", lambda t: b"", is_end=lambda t: False, end_id=0, newline_id=1)
    assert cjk.in_source("在垫子".encode())


def tokenize(text: str) -> list[int]:
    """``text`` as the longest PIECES, left to right (the toy vocabulary's tokenizer)."""
    by_bytes = {p: t for t, p in enumerate(PIECES) if p}
    data, out = text.encode(), []
    while data:
        piece = max((p for p in by_bytes if data.startswith(p)), key=len)
        out.append(by_bytes[piece])
        data = data[len(piece):]
    return out


def test_next_tokens_feeds_a_finished_quote_or_the_chosen_token_and_stops_at_the_end():
    c = constraint(min_words=4)
    c.complete = True
    asked: list[int] = []

    def scores(tok: int):
        return lambda: asked.append(tok) or scores_for(tok)

    for tok in (0, 1, 2, 3):  # "The cat sat on", decoded
        assert c.next_tokens(scores(tok), tokenize, 50) == [tok]
    fed = c.next_tokens(scores(9), tokenize, 50)  # one place now: the rest is fed, not decoded
    assert fed == tokenize(" the mat.\n") and asked == [0, 1, 2, 3]
    assert c.line == b"" and c.lines == 1 and c.completed == 1
    assert c.next_tokens(scores(END), tokenize, 50) == []  # the model ends the reply
    c2 = constraint(min_words=4)
    c2.complete = True
    for tok in (0, 1, 2, 3):
        c2.next_tokens(scores(tok), tokenize, 50)
    assert c2.next_tokens(scores(9), tokenize, 2) == tokenize(" the mat.\n")[:2]  # at most the limit


def test_a_draft_is_the_rest_of_the_begun_quotes_sentence_and_advances_nothing():
    c = constraint(min_words=4)
    assert c.draft(tokenize, 50) == []  # which passage to quote is the model's choice
    c.advance(0)  # "The"
    c.advance(1)  # " cat"
    assert c.draft(tokenize, 50) == tokenize(" sat on the mat.\n")
    assert c.line == b"The cat"  # nothing advanced: the backend keeps what the model takes anyway
    assert c.draft(tokenize, 3) == tokenize(" sat on the")  # bounded by the reply's budget
    assert c.draft(tokenize, 1) == []  # one token is no batch
    for tok in (2, 3, 4, 5, 6):
        c.advance(tok)
    assert c.draft(tokenize, 50) == []  # the line ends its sentence: the model decides what follows
    cjk = constraint(min_words=1)
    cjk.advance(15)
    cjk.advance(16)  # the line ends inside a character
    assert cjk.draft(tokenize, 50) == []


def test_min_lines_refuses_the_end_until_owed_quotes_are_written_and_not_by_repeating_one(monkeypatch):
    """``min_lines`` (memorag.quoting.QUOTE_MIN_LINES, 1 by default): the reply may not end
    before that many quotes, and an owed quote may not begin a quote already written."""
    monkeypatch.setattr("memorag.quoting.QUOTE_SENTENCE_END", False)  # four-word quotes close
    c = constraint(min_words=4, min_lines=2)
    for tok in (0, 1, 2, 3):  # "The cat sat on"
        c.advance(tok)
    assert c.allows(NEWLINE) and not c.allows(END)  # one quote closed would not be enough
    c.advance(NEWLINE)
    assert not c.allows(END)
    for tok in (0, 1):  # "The cat" again: two words, not yet a repeat
        c.advance(tok)
    assert not c.allows(2)  # "The cat sat" would begin the quote already written
    # With nothing else the model wants, the line is still closed or the reply ended: never stuck.
    assert c.choose(scores_for(2)) in (NEWLINE, END)
    d = constraint(min_words=4, min_lines=2)
    for tok in (0, 1, 2, 3, NEWLINE, 12, 8, 9, 10):  # "The cat sat on" / "A dog ran to"
        d.advance(tok)
    assert d.allows(END)  # the second quote can close: two written
    assert constraint(min_words=4).min_lines == 1  # the default: the model ends when it likes


def test_a_finished_quote_cannot_be_quoted_again_with_distinct():
    """QUOTE_DISTINCT: the quote's sentence leaves the quotable text, so the next line starts
    elsewhere instead of restarting it; without it the restart is allowed."""
    for distinct in (True, False):
        c = constraint(min_words=4, distinct=distinct)
        for tok in (0, 1, 2, 3, 4, 5, 6, NEWLINE):  # "The cat sat on the mat.\n"
            c.advance(tok)
        assert c.lines == 1
        assert c.allows(0) is not distinct  # "The ..." again
        assert c.allows(12)  # "A dog ran ..." is still there
    c = constraint(min_words=4)
    for tok in (0, 1, 2, 3, NEWLINE):  # a quote closed mid-sentence: the rest of it goes too
        c.advance(tok)
    assert not c.allows(3) and not c.allows(5)  # " on", " mat": only in the retired sentence
    assert c.source.count(b"A dog ran to the park.") == 1 and len(c.source) == len(SOURCE.encode())


def test_a_line_start_that_cannot_grow_into_a_quote_is_refused(monkeypatch):
    """A start whose every place runs into a line break before min_words words is a dead end
    (the reply would end with no quote): refused, so the model's next choice is tried."""
    src = "Short title\nThe cat sat on the mat."
    pieces = [b"Short", b" title", b"The", b" cat", b"\n", b""]
    c = QuoteConstraint(src, lambda t: pieces[t], is_end=lambda t: t == 5, end_id=5, newline_id=4, min_words=4)
    assert not c.allows(0)  # "Short title" is two words before its line ends
    assert c.choose(np.array([5.0, 0.0, 4.0, 0.0, 0.0, -9.0])) == 2  # "The" instead
    monkeypatch.setattr("memorag.quoting.QUOTE_VIABLE_ONLY", False)
    assert c.allows(0)  # the earlier decoding: standing in the source was enough


def test_looking_ahead_picks_the_start_whose_next_token_the_model_wants():
    """QUOTE_LOOKAHEAD: at a line start, the likeliest *pair* of first tokens wins over the
    likeliest first token; inside a line, or with width < 2, the choice is greedy."""
    c = constraint(min_words=4)
    first = scores_for(0, 12)  # the model prefers "The" a little over "A"
    after = {0: scores_for(13, 8), 12: scores_for(8)}  # after "The": " flew"/" dog" (nowhere); after "A": " dog"
    peeked: list[int] = []

    def peek(toks: list[int]) -> np.ndarray:
        assert len(toks) == 1  # depth 2: the first token alone is read on
        tok = toks[0]
        peeked.append(tok)
        s = after.get(tok, scores_for()).copy()
        s[:] -= 5.0 * (tok == 0)  # "The" is followed by nothing the model wants much
        return s

    assert c.choose(first) == 0  # greedy: "The"
    assert c.choose_looking_ahead(first, peek, 1) == 0 and not peeked
    assert c.choose_looking_ahead(first, peek, 8) == 12  # "A dog": the likelier pair
    assert {0, 12} <= set(peeked) and len(peeked) <= 8  # at most ``width`` first tokens are read
    assert 13 not in peeked and END not in peeked  # never one the constraint refuses, nor the end
    c.advance(0)
    peeked.clear()
    assert c.choose_looking_ahead(scores_for(1, 2), peek, 8) == 1 and not peeked  # inside a line: greedy


CAT_BIRD = [b"The", b" cat", b" sat", b" on", b"A", b" bird", b" flew", b" over", b"\n", b"", b" mat", b" it"]


def _cat_and_bird():
    """A constraint over two sentences in the tokens of CAT_BIRD (9 ends, 8 is the line break),
    and ``logits(t1=10.0, ...)``: scores of -10 but for the tokens named."""
    src = "The cat sat on the mat.\nA bird flew over it.\n"
    c = QuoteConstraint(src, lambda t: CAT_BIRD[t], is_end=lambda t: t == 9, end_id=9, newline_id=8, min_words=4)

    def logits(**high: float) -> np.ndarray:
        s = np.full(len(CAT_BIRD), -10.0)
        for tok, v in high.items():
            s[int(tok[1:])] = v
        return s

    return c, logits


def test_a_deeper_look_ahead_reads_each_start_on_and_weighs_the_whole_run():
    """QUOTE_LOOKAHEAD_DEPTH: each candidate first token is read on along the constraint's own
    choices, and the run the model rates likeliest wins; at depth 2 the pair decides."""
    c, logits = _cat_and_bird()

    after = {(0,): logits(t1=10.0),  # "The" -> " cat", certain
             (0, 1): np.zeros(len(CAT_BIRD)),  # "The cat" -> anything: " sat" is one of twelve
             (4,): logits(t5=10.0, t1=10.0),  # "A" -> " bird" or " cat" ("A cat" is nowhere)
             (4, 5): logits(t6=10.0)}  # "A bird" -> " flew", certain
    runs: list[tuple[int, ...]] = []

    def peek(toks: list[int]) -> np.ndarray:
        runs.append(tuple(toks))
        return after[tuple(toks)]

    first = logits(t0=10.0, t4=9.5)
    # width 2: the two best allowed starts, "The" and "A"
    assert c.choose_looking_ahead(first, peek, 2, depth=2) == 0  # "The cat" is the likelier pair
    runs.clear()
    assert c.choose_looking_ahead(first, peek, 2, depth=3) == 4  # "A bird flew" beats "The cat sat"
    assert set(runs) == {(0,), (0, 1), (4,), (4, 5)}  # each start read on, one token at a time
    runs.clear()
    assert c.choose_looking_ahead(first, peek, 2, depth=1) == 0 and not runs  # depth 1: greedy


def test_the_contrast_weighs_each_start_against_no_question(monkeypatch):
    """QUOTE_CONTRAST: a run the memory rates high for no question too (an attractor) loses
    to one the question itself calls for; each candidate's whole run is what the backend's
    contrast scores, and the weight 0 or no contrast leaves the look-ahead's choice."""
    import memorag.quoting as quoting

    c, logits = _cat_and_bird()

    after = {(0,): logits(t1=10.0), (4,): logits(t5=10.0)}  # "The" -> " cat", "A" -> " bird"
    first = logits(t0=10.0, t4=9.0)  # for the question, "The cat" is likelier than "A bird"
    asked: list[list[list[int]]] = []

    def contrast(runs: list[list[int]]) -> list[float]:
        asked.append(runs)
        # for no question the memory quotes "The cat" all the same, "A bird" hardly
        return [-0.1 if run[0] == 0 else -6.0 for run in runs]

    monkeypatch.setattr(quoting, "QUOTE_CONTRAST", 0.0)
    assert c.choose_looking_ahead(first, lambda t: after[tuple(t)], 2, depth=2, contrast=contrast) == 0
    assert not asked  # off: the backend is not asked
    monkeypatch.setattr(quoting, "QUOTE_CONTRAST", 0.5)
    assert c.choose_looking_ahead(first, lambda t: after[tuple(t)], 2, depth=2) == 0  # no contrast given
    assert c.choose_looking_ahead(first, lambda t: after[tuple(t)], 2, depth=2, contrast=contrast) == 4
    assert sorted(map(tuple, asked[0])) == [(0, 1), (4, 5)]  # each start with its look-ahead token
    c.advance(0)
    asked.clear()
    assert c.choose_looking_ahead(logits(t1=5.0), lambda t: after[tuple(t)], 2, contrast=contrast) == 1
    assert not asked  # inside a line: no contrast, greedy


def test_a_short_line_no_top_token_continues_goes_on_as_the_document_does(monkeypatch):
    """QUOTE_FOLLOW_DOCUMENT: the model wrote "David O" and wants "." (the question's "David O.
    Russell"), but the document says "David Owen Russell": the line goes on with the document's
    own next token instead of the reply ending with no quote."""
    pieces = [b"David", b" O", b"wen", b" Russell", b".", b"\n", b"", b" is", b" a", b" director"]

    def tokenize(text: str) -> list[int]:  # longest piece first, as a BPE would split this text
        out, rest = [], text.encode()
        while rest:
            tok = max((t for t, p in enumerate(pieces) if p and rest.startswith(p)), key=lambda t: len(pieces[t]),
                      default=None)
            if tok is None:
                break
            out.append(tok)
            rest = rest[len(pieces[tok]):]
        return out

    def make(**kw) -> QuoteConstraint:
        c = QuoteConstraint("David Owen Russell is a director.", lambda t: pieces[t], is_end=lambda t: t == 6,
                            end_id=6, newline_id=5, min_words=4, top_n=2, **kw)
        c.advance(0)
        c.advance(1)
        return c

    wants_a_stop = np.array([0.0, 0.0, -5.0, 8.0, 9.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # ".", then " Russell"
    c = make(tokenize=tokenize)
    assert c.choose(wants_a_stop) == 2 and c.forced == 1  # "wen": the document's next token
    c.advance(2)
    assert c.choose(wants_a_stop) == 3  # and on: " Russell"
    assert make().choose(wants_a_stop) == 6  # no tokenizer: the reply ends, as before
    monkeypatch.setattr("memorag.quoting.QUOTE_FOLLOW_DOCUMENT", False)
    assert make(tokenize=tokenize).choose(wants_a_stop) == 6


def test_quotes_come_from_the_document_not_the_memory_prompt_around_it():
    """The memorized prefix holds the memory prompt before the document; a quote taken from it
    ("Questions about it come afterwards") would point retrieval at nothing."""
    from memorag.prompts import PROMPTS
    from memorag.quoting import document_text

    for prompts in PROMPTS.values():
        prefix = prompts.memory_system + "\n" + prompts.memory_intro + "The cat sat on the mat."
        assert document_text(prefix) == "The cat sat on the mat."
    assert document_text("No prompt here.") == "No prompt here."  # an unknown layout is kept whole


# ------------------------------------------- quoting from the whole document an extract came from
LONG = " ".join(f"Paragraph {i} tells that the cat number {i} sat on mat {i}." for i in range(60))


def test_a_memory_that_read_an_extract_quotes_from_the_whole_document_unless_told_otherwise():
    """The model reads an extract of a long document; by default its quotes are drawn from
    the whole document (the state keeps it), with quote_from="memory" from the extract."""
    from memorag.errors import InputError

    llm = ContrastQuotingLLM("Paragraph 59 tells that the cat number 59 sat on mat 59.\n")
    memory = Memory(llm=llm, beacon_ratio=4)
    memory.memorize(LONG)
    assert memory.state is not None and memory.state.compression is not None
    assert memory.state.document == LONG
    memory.recall_spans("Where did cat 59 sit?")
    assert llm.sources == [LONG]
    memory.quote_from = "memory"
    memory.recall_spans("Where did cat 59 sit?")
    assert llm.sources == [LONG, None]
    whole = Memory(llm=ContrastQuotingLLM("The cat sat on the mat.\n"))  # read whole: nothing else to quote from
    whole.memorize(SOURCE)
    whole.recall_spans("Where did the cat sit?")
    assert whole.state is not None and whole.state.document is None and whole.llm.sources == [None]
    with pytest.raises(InputError, match="quote_from"):
        Memory(llm=ScriptedLLM([]), quote_from="extract")


def test_the_document_is_saved_with_the_memory_and_checked_when_read(tmp_path):
    import json

    from memorag.errors import StateError
    from memorag.memory import MEMORY_DOCUMENT, MEMORY_JSON

    llm = ContrastQuotingLLM("Paragraph 3 tells that the cat number 3 sat on mat 3.\n")
    memory = Memory(llm=llm, beacon_ratio=4)
    memory.memorize(LONG)
    memory.save(tmp_path / "m", directory=True)
    assert (tmp_path / "m" / MEMORY_DOCUMENT).read_text(encoding="utf-8") == LONG
    again = Memory(llm=ContrastQuotingLLM("Paragraph 3 tells that the cat number 3 sat on mat 3.\n"), beacon_ratio=4)
    again.load(tmp_path / "m")
    again.recall_spans("Where did cat 3 sit?")
    assert again.llm.sources == [LONG]
    memory.save(tmp_path / "m.bin")  # one file holds it too
    in_file = Memory(llm=ContrastQuotingLLM("unused"), beacon_ratio=4)
    in_file.load(tmp_path / "m.bin")
    assert in_file.state is not None and in_file.state.document == LONG
    # changed after saving: refused, and the memory keeps what it held
    (tmp_path / "m" / MEMORY_DOCUMENT).write_text(LONG.replace("mat 3.", "mat 4."), encoding="utf-8")
    with pytest.raises(StateError, match="does not match its checksum"):
        again.load(tmp_path / "m")
    assert again.state is not None and again.state.document == LONG
    (tmp_path / "m" / MEMORY_DOCUMENT).unlink()
    with pytest.raises(StateError, match="lacks its document"):
        again.load(tmp_path / "m")
    # a memory saved before memorag kept the document: quotes come from what it read
    info = json.loads((tmp_path / "m" / MEMORY_JSON).read_text(encoding="utf-8"))
    del info["document"]
    (tmp_path / "m" / MEMORY_JSON).write_text(json.dumps(info), encoding="utf-8")
    again.load(tmp_path / "m")
    assert again.state is not None and again.state.document is None


def test_ask_and_a_collection_quote_from_the_whole_document_after_a_reload(tmp_path):
    """The front-ends run Memory.recall_spans with the memory's own choice: a document read
    as an extract, saved and loaded again (MemoRAG.load, a Collection's activate), is
    quoted from as a whole."""
    from memorag import MemoRAG
    from memorag.collection import Collection
    from memorag.index.faiss_index import FaissIndex
    from memorag.retrieval import Retriever
    from memorag.testing import HashEmbedder

    def pipe() -> MemoRAG:
        quotes = ContrastQuotingLLM("Paragraph 59 tells that the cat number 59 sat on mat 59.\n")
        return MemoRAG.from_parts(Memory(llm=quotes, beacon_ratio=4), Retriever(HashEmbedder(), FaissIndex,
                                                                                 chunk_tokens=64),
                                  ScriptedLLM([("", "On mat 59.")] * 4), query_plan="recall", judge=None)

    first = pipe()
    first.memorize(LONG, save_dir=tmp_path / "doc")
    again = pipe()
    again.load(tmp_path / "doc")
    answer = again.ask("Where did cat 59 sit?")
    assert again.memory.llm.sources == [LONG]
    assert answer.clues is not None and answer.clues.spans == ["Paragraph 59 tells that the cat number 59 sat on mat 59."]
    store = Collection(tmp_path / "store", pipe())
    store.add_text("cats", LONG)
    reopened = Collection(tmp_path / "store", pipe())
    reopened.ask_document("cats", "Where did cat 59 sit?")
    assert reopened.pipe.memory.llm.sources == [LONG]


def test_a_quote_stands_in_the_source_only_at_a_words_start():
    """QuoteConstraint._occurrence (bytes.find plus a look at the byte before) agrees with the
    rule it replaces, a regex look-behind: no letter or digit right before a quote that
    starts with one."""
    import random
    import re

    source = "She was here. he was there; 4he was not. The cat sat, the cat ran. 猫在垫子上。 A dog was."
    c = QuoteConstraint(source, lambda t: PIECES[t], is_end=lambda t: t == END, end_id=END, newline_id=NEWLINE)
    data = source.encode()
    rng = random.Random(3)
    probes = [data[i:j] for i, j in (sorted(rng.sample(range(len(data) + 1), 2)) for _ in range(300))]
    for probe in [*probes, b"he was", b"the cat", b"cat", b"zz"]:
        for start in (0, 7, 40):
            if re.match(rb"[A-Za-z0-9]", probe):
                m = re.compile(rb"(?<![A-Za-z0-9])" + re.escape(probe)).search(data, start)
                expected = m.start() if m else -1
            else:
                expected = data.find(probe, start)
            assert c._occurrence(probe, start) == expected, (probe, start)
    assert c._occurrence(b"he was") == data.index(b"he was there")  # not inside "She was" or "4he was"
