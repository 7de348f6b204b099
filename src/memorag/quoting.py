"""Quote-constrained decoding: every line the memory writes is a verbatim piece of the document.

The recall task asks the memory to quote the sentences that bear on a question. A small
model asked to quote drifts: it starts a real sentence and finishes it with words of its
own, or writes a plausible sentence that is nowhere in the document, and such a clue
points retrieval at nothing. Decoding under a constraint removes the drift without taking
the choice away from the model: at each step the model's own best tokens are tried in
order, and the first one that keeps the current line a substring of the document is
taken. The model still decides *which* passage to quote (its first tokens pick among every
place in the document that starts that way, and each further token narrows them); it
can no longer invent the rest. A line may end only once it holds a few words, so the
clue is long enough to locate its passage.

This is the idea of decoding into an index of the corpus (as generative retrieval with
an FM-index does), done here with a plain substring test over the document's bytes:
documents the memory holds are at most a few hundred kilobytes, and only the model's
top candidates are tested at each step.

Once a line names one place in the document, every further word of its sentence is the
document's, so decoding it a token at a time (each step attending over the whole memory)
only spends time. With ``COMPLETE_UNIQUE`` the backend asks :meth:`QuoteConstraint.completion`
before each step: the rest of that sentence (and a line break) is read into the model in one
batched evaluation instead, so the model has read its whole quote, as if it had written it,
before it picks the next one.

Without it the backend still spends fewer steps on a quote without changing a word of it:
:meth:`QuoteConstraint.draft` proposes the document's own continuation of the current line
(to the end of its sentence), the backend reads the proposal in one batch and keeps the
longest start of it that the model, step by step under the constraint, would have written
itself (``DRAFT_FROM_DOCUMENT``; speculative decoding with the document as the draft, the
idea of prompt-lookup decoding). The output is greedy constrained decoding's, token for
token, up to floating-point rounding between a batch and single steps.

The constraint works on bytes, so a token that carries half of a multi-byte character
(common for Chinese) is tested like any other.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable

import numpy as np

QUOTE_MIN_WORDS = 4  # shortest quote kept: fewer words rarely locate one passage
QUOTE_MIN_LINES = 1
"""The reply may not end before this many quotes (the end token is refused until then; a
reply the model cannot continue still ends). 1: the model ends when it likes.
bench/clue_study.py ``--quote-min-lines`` measures other values."""
QUOTE_DISTINCT = True
"""True takes each finished quote's sentence out of the text later quotes may come from, so the
reply's next quote is the model's best *other* sentence instead of a restart of the same one
(which ends the reply: memorag.memory.restarts_kept). bench/clue_study.py ``--quote-distinct``
measures it."""
QUOTE_VIABLE_ONLY = True
"""True refuses a token whose line cannot grow into a quote long enough to keep
(:meth:`QuoteConstraint._viable`); False only asks that the line stand in the source, as
before (bench/clue_study.py ``--quote-greedy`` measures the earlier decoding)."""
QUOTE_LOOKAHEAD = 8
"""At a line's start, how many of the model's best allowed first tokens are each read one
token further (:meth:`QuoteConstraint.choose_looking_ahead`); the line starts with the one
whose first tokens the model rates highest together (``QUOTE_LOOKAHEAD_DEPTH`` of them). 0 or
1: greedy. bench/clue_study.py ``--quote-lookahead`` measures it."""
QUOTE_LOOKAHEAD_DEPTH = 2
"""How many tokens each look-ahead candidate is read to: its first token and then the
constraint's (greedy) choices after it; a candidate that runs into a dead end within them is
never taken. bench/clue_study.py ``--quote-depth`` measures it."""
QUOTE_FOLLOW_DOCUMENT = True
"""True: when none of the model's ``top_n`` best tokens continues a line too short to keep,
the line goes on as the document does (the model's best-scored of the document's own next
tokens at the places the line stands) instead of the reply ending with no quote there. The
model wrote "David O" for "David O. Russell" and wanted ".", but the document says "David
Owen Russell". bench/clue_study.py ``--quote-follow`` measures it."""
QUOTE_SENTENCE_END = False
"""True: a line closes (a line break or the reply's end) only where the source's sentence ends
(or its line does), so every quote runs to a sentence's end; False: anywhere once it is
``QUOTE_MIN_WORDS`` long. Quoting from a whole document, the model often closed a line after
four words ("Rolling Stone is a"), a piece no sentence search grounds. bench/clue_study.py
``--quote-sentence-end`` measures it."""
QUOTE_CONTRAST = 0.0
"""At a line's start (with the look-ahead), each candidate's run is scored by its
log-probability for the question minus this weight times its log-probability for no
question (the same recall task with an empty question, when the backend can read one): a
sentence the memory would quote whatever is asked (an attractor of the document) loses its
edge, a sentence the question itself calls for keeps it (pointwise mutual information, the
idea of contrastive and context-aware decoding). 0: off. bench/clue_study.py
``--quote-contrast`` measures it."""
QUOTE_CONTRAST_LINES = 0
"""How many of a reply's quotes start under the contrast (the first N; 0: every one). A later
quote's contrast re-reads the reply so far after both tasks, which costs most of it."""
COMPLETE_UNIQUE = False
"""True finishes a quote from the document as soon as it names one place there
(:meth:`QuoteConstraint.completion`). bench/bench_clue_stop.py ``--lever complete`` compares
the two; docs/evaluation.md, "The memory finishes its quotes from the document", has the
quality runs."""
COMPLETION_MAX_BYTES = 600  # a sentence running longer is left for the model to finish
DRAFT_FROM_DOCUMENT = True
"""True lets the backend verify :meth:`QuoteConstraint.draft` in one batch instead of decoding
a quote's every token in its own step (the same tokens; bench/bench_query_latency.py's clue
seconds, tests/test_quoting.py for the same clues both ways)."""
DRAFT_MAX_TOKENS = 64  # a proposal longer than this is verified in more than one batch

# A sentence ends at . ! ? (and any closing quotes) before white space, at a line break, or
# at a CJK full stop, exclamation or question mark.
_SENTENCE_END = re.compile(rb"[.!?][\"')\xe2\x80\x9d\xe2\x80\x99]*(?=\s)|\n|\xe3\x80\x82|\xef\xbc\x81|\xef\xbc\x9f")
_STOP_MARK = re.compile(rb"[.!?][\"')\xe2\x80\x9d\xe2\x80\x99]*$")
_CJK_STOP = re.compile(rb"(?:\xe3\x80\x82|\xef\xbc\x81|\xef\xbc\x9f)$")
ABBREVIATIONS = r"Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Gen|Col|Capt|Lt|Mt|No|vs|etc|[A-Z]"
"""Words whose full stop ends no sentence (a regex alternation; memorag.memory uses it too)."""
_ABBREVIATION = re.compile(rb"(?:^|[^A-Za-z])(?:" + ABBREVIATIONS.encode() + rb")\.$")

_WORD_BYTE = re.compile(rb"[A-Za-z0-9]")  # a byte inside a Latin word (CJK text has no word starts to keep)
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


def enough_words(line: bytes, min_words: int) -> bool:
    """Whether ``line`` is long enough to stand as a quote (CJK text: two characters a word)."""
    text = line.decode("utf-8", errors="ignore").strip()
    if not text:
        return False
    if _CJK.search(text):
        return len(text) >= 2 * min_words
    return len(text.split()) >= min_words


def document_text(prefix_text: str) -> str:
    """The memorized prefix's text from its document on: the memory prompt before the document
    (``memory_intro`` of memorag.prompts, and the system message before it) is cut off, so no
    quote is taken from the memory's own instructions ("Questions about it come afterwards").
    A prefix without a known intro is kept whole."""
    from memorag.prompts import PROMPTS

    for prompts in PROMPTS.values():
        at = prefix_text.find(prompts.memory_intro)
        if at >= 0:
            return prefix_text[at + len(prompts.memory_intro):]
    return prefix_text


def quotable_text(source: str, avoid: Iterable[str] = ()) -> str:
    """``source`` with every piece of ``avoid`` cut out (each replaced by a line break, so no
    quote can run through it): the text a quote may still be taken from."""
    for piece in sorted({a.strip() for a in avoid if a.strip()}, key=len, reverse=True):
        source = source.replace(piece, "\n")
    return source


def _ends_sentence(source: bytes, end: int) -> bool:
    """Whether a sentence ends right before byte ``end`` of ``source``."""
    tail = source[max(0, end - 8):end]
    if _CJK_STOP.search(tail):
        return True
    if not _STOP_MARK.search(tail) or end < len(source) and not source[end:end + 1].isspace():
        return False
    return not (tail.endswith(b".") and _ABBREVIATION.search(tail))


def sentence_rest(source: bytes, end: int, limit: int = COMPLETION_MAX_BYTES) -> bytes:
    """The bytes of ``source`` from ``end`` to the end of the sentence ``end`` lies in (a
    full stop after an abbreviation such as "Mr." is no end); empty when the sentence ends
    at ``end`` already or runs on past ``limit`` bytes."""
    if _ends_sentence(source, end):
        return b""
    window = source[end:end + limit]
    if end + limit >= len(source):
        window += b"\n"  # the document's end ends its last sentence
    for m in _SENTENCE_END.finditer(window):
        mark = m.group()
        if mark == b"\n":
            return window[:m.start()]
        if mark[:1] == b"." and _ABBREVIATION.search(source[max(0, end + m.start() - 6):end + m.start() + 1]):
            continue
        return window[:m.end()]
    return b""


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - np.max(x)
    return shifted - np.log(np.sum(np.exp(shifted)))


def question_start(task_ids: list[int], null_ids: list[int]) -> int:
    """Where a task's question begins: the tokens it shares with the same task for no question
    (``null_ids``), short of the last token of either (which is always read, for its logits)."""
    shared = next((i for i, (a, b) in enumerate(zip(task_ids, null_ids)) if a != b), min(len(task_ids), len(null_ids)))
    return min(shared, len(task_ids) - 1, len(null_ids) - 1)


class QuoteConstraint:
    """Chooses each next token so that every line stays a verbatim substring of ``source``.

    ``piece(token_id)`` gives a token's bytes (empty for control tokens); ``is_end`` tells
    the tokens that end generation and ``end_id`` is one of them; ``newline_id`` is the
    token used to close a line when no candidate the model ranks highly continues it.
    ``top_n`` bounds how many of the model's best tokens are tested per step.
    """

    def __init__(self, source: str, piece: Callable[[int], bytes], *, is_end: Callable[[int], bool], end_id: int,
                 newline_id: int, min_words: int = QUOTE_MIN_WORDS, top_n: int = 64,
                 min_lines: int | None = None, distinct: bool | None = None,
                 tokenize: Callable[[str], list[int]] | None = None) -> None:
        if top_n < 1:
            raise ValueError("top_n must be at least 1")
        self.source = source.encode("utf-8")
        self._piece = piece
        self.is_end = is_end
        self.end_id = end_id
        self.newline_id = newline_id
        self.min_words = min_words
        self.min_lines = QUOTE_MIN_LINES if min_lines is None else min_lines
        self.top_n = top_n
        self.distinct = QUOTE_DISTINCT if distinct is None else distinct
        self._tokenize = tokenize  # for the document's own next tokens (QUOTE_FOLLOW_DOCUMENT)
        self.line = b""  # the current line so far (leading whitespace dropped)
        self.lines = 0  # lines closed so far
        self.forced = 0  # steps where none of the model's top_n tokens could continue
        self.complete = COMPLETE_UNIQUE
        self._finished: list[tuple[int, int]] = []  # (start, end) in source of each finished quote
        self._written: list[bytes] = []  # the lines closed so far

    # ------------------------------------------------------------------ state
    def advance(self, token: int) -> None:
        """Account for ``token`` having been generated."""
        if self.is_end(token):
            return
        data = self._piece(token)
        while b"\n" in data:
            head, data = data.split(b"\n", 1)
            if (self.line + head).strip():
                self.lines += 1
                self._written.append((self.line + head).strip())
                if self.distinct:
                    self._retire(self._written[-1])
            self.line = b""
        self.line = (self.line + data).lstrip()

    def _retire(self, quote: bytes) -> None:
        """Blank ``quote`` and the rest of its sentence wherever they stand in the source
        (same length, so byte offsets stay valid): no later quote can start in them or run
        through them."""
        at = self._occurrence(quote)
        while at >= 0:
            end = at + len(quote)
            end += len(sentence_rest(self.source, end))
            self.source = self.source[:at] + b"\n" * (end - at) + self.source[end:]
            at = self._occurrence(quote, end)

    # ------------------------------------------------------------------ tests
    def in_source(self, text: bytes) -> bool:
        """Whether ``text`` stands in the source starting at a word's start (a quote cut from
        the middle of a word, "he was" out of "She was", reads as a misquote)."""
        return self._occurrence(text) >= 0

    def _occurrence(self, text: bytes, start: int = 0) -> int:
        """Where ``text`` first stands in the source from ``start`` on, beginning at a word's
        start when it begins with a letter or digit; -1 when nowhere."""
        # bytes.find and a look at the byte before, the rule a regex look-behind would apply
        # (no regex compiled for every line)
        source = self.source
        at = source.find(text, start)
        if not _WORD_BYTE.match(text):
            return at
        while at > 0 and source[at - 1] in _WORD_BYTES:
            at = source.find(text, at + 1)
        return at

    def allows(self, token: int) -> bool:
        """Whether generating ``token`` now keeps the output a sequence of quotes."""
        if self.is_end(token):
            if not self.line.strip():
                return self.lines > 0 and self.lines >= self.min_lines
            return self._can_close(self.line) and self.lines + 1 >= self.min_lines
        data = self._piece(token)
        if not data:
            return False  # a control token that is not an end: never part of a quote
        if b"\n" in data:
            head, rest = data.split(b"\n", 1)
            if rest.strip():
                return False  # a token spanning two lines: rare, and the next line is unchecked
            return self._can_close(self.line + head)
        grown = (self.line + data).lstrip()
        if self.lines < self.min_lines and self._repeats(grown):
            return False  # owed another quote: not the start of one already written
        return bool(grown) and (self._viable(grown) if QUOTE_VIABLE_ONLY else self.in_source(grown))

    def _viable(self, line: bytes) -> bool:
        """Whether ``line`` stands in the source at a word's start somewhere it can still grow
        into a quote that may close (``min_words`` before the source's line break). Without
        this test greedy choice walks into dead ends: "The" grows into a three-word title
        line, nothing continues it and it is too short to keep, so the reply ends with no
        quote at all."""
        at = self._occurrence(line)
        while at >= 0:
            stop = self.source.find(b"\n", at)
            if enough_words(self.source[at:stop if stop >= 0 else len(self.source)], self.min_words):
                return True
            at = self._occurrence(line, at + 1)
        return False

    def _repeats(self, line: bytes) -> bool:
        """Whether ``line`` (three words at least) begins a quote this reply already wrote."""
        return len(line.split()) >= 3 and any(w.startswith(line) for w in self._written)

    def _can_close(self, line: bytes) -> bool:
        line = line.strip()
        if not (line and enough_words(line, self.min_words)):
            return False
        return self._ends_a_sentence(line) if QUOTE_SENTENCE_END else self.in_source(line)

    def _ends_a_sentence(self, line: bytes) -> bool:
        """Whether ``line`` stands in the source somewhere a sentence (or a line) ends right after it."""
        at = self._occurrence(line)
        while at >= 0:
            end = at + len(line)
            if end >= len(self.source) or self.source[end:end + 1] == b"\n" or _ends_sentence(self.source, end):
                return True
            at = self._occurrence(line, at + 1)
        return False

    # ---------------------------------------------------------------- choice
    def completion(self) -> bytes:
        """With :attr:`complete` (``COMPLETE_UNIQUE``): once the current line is long enough
        and occurs once in the source, the rest of its sentence there and a line break, which
        the backend reads into the model (and passes to :meth:`advance`) instead of decoding it;
        empty otherwise, or when the sentence ends with the line already."""
        line = self.line
        if not self.complete or not line.strip() or not enough_words(line, self.min_words):
            return b""
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return b""  # the line ends inside a character: its rest is not text on its own
        at = self._occurrence(line)
        if at < 0 or self._occurrence(line, at + 1) >= 0:
            return b""
        if any(start <= at < end for start, end in self._finished):
            # The model is quoting a sentence it has already written: left to decode, so the
            # memory's restart stop (memorag.memory.restarts_kept) ends the reply a word later
            # instead of a whole sentence being read in again.
            return b""
        rest = sentence_rest(self.source, at + len(line))
        if not rest:
            return b""
        self._finished.append((at, at + len(line) + len(rest)))
        # The source stays whole: the model has read the finished sentence as if it had
        # written it, so what it does next (a new quote, or starting this one again, which
        # memorag.memory's restart stop ends) is what it would have done without completion.
        return rest + b"\n"

    def draft(self, tokenize: Callable[[str], list[int]], limit: int) -> list[int]:
        """A proposal for the next tokens, for the backend to verify (``DRAFT_FROM_DOCUMENT``):
        the rest of the sentence the current line stands in (at its first place in the
        source) and a line break, tokenized, at most ``limit`` tokens; empty when no line is
        begun (which passage to quote is the model's choice) or the line ends its sentence.
        Nothing is advanced: the backend keeps only what :meth:`choose` takes anyway."""
        line = self.line
        if not line.strip() or limit < 2:
            return []
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return []  # the line ends inside a character: its rest does not tokenize on its own
        at = self._occurrence(line)
        if at < 0:
            return []
        rest = sentence_rest(self.source, at + len(line))
        if not rest:
            return []
        return tokenize(rest.decode("utf-8", errors="ignore") + "\n")[: min(limit, DRAFT_MAX_TOKENS)]

    @property
    def completed(self) -> int:
        """Quotes finished from the document so far (:meth:`completion`)."""
        return len(self._finished)

    def next_tokens(self, scores: Callable[[], np.ndarray], tokenize: Callable[[str], list[int]],
                    limit: int, peek: Callable[[list[int]], np.ndarray] | None = None,
                    contrast: Callable[[list[list[int]]], list[float]] | None = None) -> list[int]:
        """The tokens a backend feeds the model next, already passed to :meth:`advance`: the
        rest of a finished quote (:meth:`completion`, tokenized, at most ``limit`` tokens), or
        else the one token :meth:`choose` takes from ``scores()`` (the logits after what
        was fed last; read further at a line's start when the backend can ``peek``,
        :meth:`choose_looking_ahead`, with ``contrast`` when given); empty when that token
        ends the reply."""
        rest = self.completion()
        new = tokenize(rest.decode("utf-8", errors="ignore"))[:limit] if rest else []
        if not new:
            token = (self.choose(scores()) if peek is None else
                     self.choose_looking_ahead(scores(), peek, QUOTE_LOOKAHEAD, contrast=contrast))
            if self.is_end(token):
                return []
            new = [token]
        for token in new:
            self.advance(token)
        return new

    def _ranked(self, scores: np.ndarray) -> list[int]:
        """The model's ``top_n`` best tokens, best first (ties in token order)."""
        n = min(self.top_n, scores.shape[0])
        top = np.argpartition(-scores, n - 1)[:n]
        return [int(t) for t in top[np.argsort(-scores[top], kind="stable")]]

    def choose(self, scores: np.ndarray) -> int:
        """The model's best-scored token that keeps the constraint (see the module doc)."""
        for token in self._ranked(scores):
            if self.allows(token):
                return token
        self.forced += 1
        # Nothing the model wants continues a quote: close the line if it can stand, else go
        # on as the document does, else close it anyway when it is long enough, else end (a
        # fragment too short to search is dropped downstream).
        if self._can_close(self.line):
            return self.newline_id
        if self.line.strip() and QUOTE_FOLLOW_DOCUMENT:
            token = self._document_next(scores)
            if token is not None:
                return token
        if self.line.strip() and enough_words(self.line, self.min_words):
            return self.newline_id
        return self.end_id

    def _document_next(self, scores: np.ndarray, places: int = 16) -> int | None:
        """The model's best-scored token among the document's own next tokens after the
        current line (the first token of the text that follows it at each place it stands,
        until ``places`` distinct tokens are found), if one keeps the constraint; None without
        a tokenizer. Only reached when the model's own top tokens all failed, so the scan of
        the places (a tokenization of 48 bytes each) is off the common path."""
        if self._tokenize is None:
            return None
        line, seen = self.line, set()
        at = self._occurrence(line)
        while at >= 0 and len(seen) < places:
            rest = self.source[at + len(line): at + len(line) + 48].decode("utf-8", errors="ignore")
            if rest.strip():
                ids = self._tokenize(rest)
                if ids:
                    seen.add(ids[0])
            at = self._occurrence(line, at + 1)
        allowed = [t for t in seen if not self.is_end(t) and self.allows(t)]
        return max(allowed, key=lambda t: float(scores[t])) if allowed else None

    def choose_looking_ahead(self, scores: np.ndarray, peek: Callable[[list[int]], np.ndarray], width: int,
                             depth: int | None = None,
                             contrast: Callable[[list[list[int]]], list[float]] | None = None) -> int:
        """:meth:`choose`, except at a line's start: there the ``width`` best allowed first
        tokens are each read on (``peek(tokens)`` gives the logits after ``tokens`` and leaves
        the model as it was), each followed by the constraint's own choices up to ``depth``
        tokens (``QUOTE_LOOKAHEAD_DEPTH``), and the first token whose run the model rates
        likeliest is taken; a first token whose run meets a dead end (no allowed next token,
        or the end) is never taken. With ``contrast`` (the log-probability of each run for no
        question, from the backend) and ``QUOTE_CONTRAST`` > 0, a run's score is its
        log-probability minus ``QUOTE_CONTRAST`` times that.

        Why: which passage a quote comes from is settled by its first tokens, and the single
        likeliest first token is often a word that starts many sentences ("The"), after which
        the constraint can only follow whichever of those sentences the model half wants."""
        depth = QUOTE_LOOKAHEAD_DEPTH if depth is None else depth
        scores = np.array(scores, dtype=np.float64)  # ``peek`` may overwrite the backend's buffer
        token = self.choose(scores)
        if width < 2 or depth < 2 or self.line.strip() or self.is_end(token) or token == self.newline_id:
            return token
        first = log_softmax(scores)
        candidates = [t for t in self._ranked(scores) if not self.is_end(t) and self.allows(t)][:width]
        runs = [(cand, self._run_score(cand, first[cand], peek, depth)) for cand in candidates]
        runs = [(cand, run) for cand, run in runs if run is not None]
        if not runs:
            return token
        totals = [score for _, (score, _) in runs]
        if contrast is not None and QUOTE_CONTRAST > 0 and (QUOTE_CONTRAST_LINES <= 0 or self.lines < QUOTE_CONTRAST_LINES):
            null = contrast([tokens for _, (_, tokens) in runs])
            totals = [t - QUOTE_CONTRAST * n for t, n in zip(totals, null)]
        return runs[int(np.argmax(totals))][0]

    def _run_score(self, cand: int, score: float, peek: Callable[[list[int]], np.ndarray],
                   depth: int) -> tuple[float, list[int]] | None:
        """The log-probability of ``cand`` (``score``) and the constraint's choices after it,
        ``depth`` tokens in all (fewer when the line closes first), with those tokens; None at
        a dead end (the constraint can only end the reply there)."""
        child = copy.copy(self)
        child._written = list(self._written)  # the child's lines are its own
        child.advance(cand)
        run = [cand]
        while len(run) < depth:
            after = np.array(peek(run), dtype=np.float64)
            nxt = child.choose(after)
            if child.is_end(nxt):
                return None
            score += float(log_softmax(after)[nxt])
            run.append(nxt)
            if nxt == child.newline_id or len(run) == depth:
                break
            child.advance(nxt)
        return score, run

    def mask(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` with every token but :meth:`choose`'s set to minus infinity, so any
        sampler after it (greedy or not) takes that token."""
        token = self.choose(scores)
        out = np.full_like(scores, -np.inf)
        out[token] = 0.0
        return out
