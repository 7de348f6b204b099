"""Query plans: how a question and the memory's clues become one ranked list of chunks.

One registry, used by ``MemoRAG.ask``, ``memorag eval`` and ``bench/`` studies, so a plan
is written once. A plan is a function ``(context, question, clues, k, params)`` returning
the ranked hits (see below):

  question   the question alone, dense + BM25 fused (plain hybrid RAG)
  clues      question + every clue line as its own query, the lines sharing one weight
             (the pipeline's plan up to 0.2; kept for comparison)
  grounded   question + only the clues the document really holds: each clue
             line is matched to a real sentence (memorag.grounding) and that sentence's
             chunk is a direct hit (with ``sentence_weight`` > 0 the sentence is also
             searched); invented lines are dropped, so the memory cannot make retrieval
             worse than ``question`` except by pointing at a real but unhelpful sentence.
  feedback   no memory: the question's own top chunks supply their best sentence as a
             second-round query (pseudo-relevance feedback). The control for
             ``grounded``: it shows what a second round gains without a memory.
  rerank     question-only hybrid, then a judge LLM reads the best-matching window of
             each of the top ``rerank_depth`` chunks and says whether it helps answer
             the question (P(yes), one forward pass each, no decoding); candidates are
             reordered by that, fused with the first-round ranking.
  memorag    grounded clues + rerank: the judge also sees the sentences the memory
             pointed at (the bridge facts of a multi-hop question), and those
             sentences' chunks enter the candidate list.
  likelihood question-only hybrid, then every candidate chunk is judged by its best
             paragraph's *query likelihood*: how probable a small LLM finds the question
             after reading that paragraph (mean log-probability of the question's
             tokens). Scores compare passages with each other, so a judge that says
             "yes" to everything cannot flatten the ranking (the flaw of ``rerank``).
  recall     ``likelihood`` over the question's candidates plus the chunks the memory's
             grounded clues point at: the memory proposes, the judge disposes, so an
             invented or unhelpful clue cannot push out a better chunk. With
             ``memory_bridge`` the memory is asked once more, told the judge's best
             sentence and kept away from its chunk: the chunk it then quotes (the second
             hop of a two-hop question) follows the judge's first.

A plan returns what it found: a :class:`PlanResult` (the hits, and notes such as the
sentences a link walk went through), or just the list of hits. :func:`execute_plan` gives
the :class:`PlanResult` of any plan, :func:`run_plan` its hits.

Register your own with :func:`register_plan`, saying which clue kinds and which pipeline options
it reads (the pipeline refuses a weight the chosen plan would ignore).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace

from memorag.errors import InputError
from memorag.llm.base import ChatMessage, Judge, score_continuations
from memorag.retrieval import Hit, Retriever, weighted_rrf


@dataclass(frozen=True)
class PlanParams:
    question_weight: float = 2.0
    clue_weight: float = 1.0  # shared by all clue lines (plan "clues")
    # shared by the grounded sentences searched as queries (plan "grounded"). 0 = only their
    # chunks count, as direct hits: 0.750 / 0.575 recall@5 / all_gold@5 against 0.688 / 0.450
    # with weight 1 on 40 HotpotQA questions (docs/evaluation.md): a searched sentence pulls
    # in its neighbours.
    sentence_weight: float = 0.0
    direct_weight: float = 1.0  # shared by the chunks grounded clues point at
    lexical: bool = True
    rrf_k: int | None = None  # None: memorag.retrieval.RRF_K
    min_coverage: float = 0.6
    feedback_chunks: int = 2
    language: str = "en"
    rerank_depth: int = 12  # candidates the judge reads (question-only hybrid recall@12 ~0.95 on HotpotQA)
    rerank_weight: float = 2.0  # the judge's ranking vs the first-round ranking (weight 1)
    window_chars: int = 400
    likelihood_depth: int = 10  # candidate chunks for plan "likelihood"
    likelihood_passages: int = 10  # paragraphs the judge reads per question (its cost): one per candidate
    likelihood_chars: int = 700  # a paragraph longer than this is cut into windows this long
    # the judge's ranking vs the first-round ranking (weight 1): 2 and 100 (judge alone) were
    # 0.812 / 0.825 recall@5 on the 40 tuning questions, 0.850 / 0.838 on 40 held out; 2 keeps
    # the first round in the fusion, so one misjudged paragraph cannot sink a strong hit.
    likelihood_weight: float = 2.0
    # Following links (plans "likelihood" and "recall"): from the best question-matching
    # sentence of the top ``follow_window`` chunks (``follow_anchors`` of them), up to
    # ``follow_hops`` new chunks along rare shared words (a word in at most
    # ``follow_max_df`` sentences); the chunks reached follow their anchor. 0 hops = off.
    # Measured (bench/rerank_study.py, 1.5B judge, recall@5 / all_gold@5): tuning 40
    # (0-19, 200-219 seed 0) 0.812 / 0.625 without, 0.875 / 0.750 with 2 hops over words in
    # <= 5 sentences (<= 3: 0.838, <= 8: 0.838, 4 hops: 0.750, 2 anchors: 0.812); held out
    # 40 (400-419 s1, 600-619 s2) 0.850 / 0.700 -> 0.863 / 0.725. Going on past 2 hops
    # through one-to-one words only (for long chains) cost 0.06 on the tuning 40.
    # Off by default: on the bundled demo the walk put a chunk about the Lucases second in
    # the evidence of "Who is the new tenant of Netherfield Park, and how rich is he?" and the
    # 1.5B generator answered wrongly; adding only chunks the judge had not placed
    # (follow_new_only) avoids that but lost the gain (80 HotpotQA: 0.838 at k=5, 0.713 at
    # k=3 against 0.831 / 0.731 without the walk). Turn on with MemoRAG(follow_hops=2).
    follow_hops: int = 0
    follow_max_df: int = 5
    follow_anchors: int = 1
    follow_window: int = 3
    follow_new_only: bool = False
    # Plan "recall": the chunks holding sentences the memory quoted (clue coverage of at
    # least ``quote_coverage``: the words are the document's, not a paraphrase) vote in the
    # final fusion with this weight, beside the first round (1) and the judge
    # (``likelihood_weight``). 0: quotes only join the judge's candidates. Plan
    # "recall+quotes" sets 1.
    quote_weight: float = 0.0
    quote_coverage: float = 0.9
    # Plan "recall": the memory may not quote from the question's own top ``avoid_found``
    # chunks (question-only hybrid; 0 = anywhere; quoted recall only). Those chunks are found
    # without a memory, so a quote of one adds nothing. Measured no gain, hence 0
    # (docs/evaluation.md, "Telling the memory what the question already finds").
    avoid_found: int = 0
    # Plan "recall": after the judge, ask the memory again with the best sentence of the
    # judge's top chunk (kept away from that chunk); the first chunk outside the top k
    # holding a sentence it quotes (coverage >= ``quote_coverage``) that the fact links to
    # (a rare shared word, ``follow_max_df``) takes second place (see memory_bridge).
    # Why: a two-hop question names its first passage, never its second; the judge scores
    # the second low (it does not mention the question's names), while the memory, told
    # the first fact, can quote the next. On by default since it was measured on 80
    # held-out questions against the same judge without the memory and against the same
    # move made without it (docs/evaluation.md, "The memory's second hop").
    memory_bridge: bool = True


@dataclass(frozen=True)
class PlanContext:
    """What a plan may use: the view's retriever and, for judging plans, a
    :class:`~memorag.llm.base.Judge` (``continuation_logprobs`` for ``likelihood``/``recall``,
    ``yes_probability`` for ``rerank``/``memorag``; None keeps the first-round ranking)."""

    retriever: Retriever
    judge: Judge | None = None
    # the view's memory (memorag.answering.ClueSource), for a plan that asks it again after
    # a first ranking (``memory_bridge``); None: no memory
    memory: object | None = None


@dataclass
class PlanResult:
    """What a plan found: the ranked hits and the notes it made on the way."""

    hits: list[Hit]
    # the sentences a link walk went through, anchor first (empty when no walk happened),
    # as SentenceIndex ids and as text; evidence renderers and prompts may show them
    linked_ids: list[int] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    judged: bool = False  # a judge reordered the candidates
    # what the memory quoted when asked again after the judge (``memory_bridge``): the
    # question sent, then its quotes; empty when it was not asked
    bridge: list[str] = field(default_factory=list)
    bridge_chunk: int | None = None  # the chunk those quotes put second (None: none moved)


class CluesLike:  # the attributes plans read (memorag.memory.Clues has them)
    spans: list[str]
    questions: list[str]
    answer: str

    def lines(self) -> list[str]: ...


PlanFn = Callable[[PlanContext, str, "CluesLike | None", int, PlanParams], "PlanResult | list[Hit]"]
_PLANS: dict[str, PlanFn] = {}
CLUE_KINDS = ("spans", "questions", "answer")
# The pipeline options a plan may read (MemoRAG's own arguments of the same names): a
# pipeline refuses one set away from its default under a plan that ignores it.
PLAN_OPTIONS = ("question_weight", "clue_weight", "follow_hops")
# Every PlanParams field but ``language``, which always follows the document's language: a
# plan is registered with those it reads, and an override of one it ignores is refused.
PLAN_PARAMS = tuple(f.name for f in fields(PlanParams) if f.name != "language")
_PLAN_CLUES: dict[str, tuple[str, ...]] = {}
_PLAN_OPTIONS: dict[str, tuple[str, ...]] = {}


def register_plan(name: str, fn: PlanFn, clues: tuple[str, ...] | None = None,
                  options: tuple[str, ...] = ()) -> None:
    """Make ``fn`` available as plan ``name`` (overrides allowed).

    ``clues`` (required): the kinds of clue lines the plan reads, of ``CLUE_KINDS`` (``()``
    for none); the pipeline asks the memory for those only, since each kind is a
    generation on the memory. ``options``: the :class:`PlanParams` fields the plan reads (of
    ``PLAN_PARAMS``); a pipeline option of ``PLAN_OPTIONS`` or an override
    (:func:`check_plan_params`) the plan does not read is refused. A function given by path
    (``query_plan="pkg.mod:fn"``) says both as attributes: ``fn.clue_kinds = ("spans",)``,
    ``fn.plan_options = (...)``."""
    if clues is None:
        # said as attributes, or else a plan registered already, now under another name
        known = next((n for n, f in _PLANS.items() if f is fn), None)
        clues = getattr(fn, "clue_kinds", None if known is None else _PLAN_CLUES[known])
        options = options or tuple(getattr(fn, "plan_options", () if known is None else _PLAN_OPTIONS[known]))
    if clues is None:
        raise InputError(f"Plan {name!r} does not say which clue kinds it reads: register it with "
                         f"register_plan(name, fn, clues=(...)) or set fn.clue_kinds = (...), choosing from "
                         f"{', '.join(CLUE_KINDS)} (() for none); the memory writes only those.")
    if isinstance(clues, str):
        clues = (clues,)
    bad = [c for c in clues if c not in CLUE_KINDS]
    if bad:
        raise InputError(f"Unknown clue kind(s) {', '.join(bad)}: choose from {', '.join(CLUE_KINDS)}.")
    bad = [w for w in options if w not in PLAN_PARAMS]
    if bad:
        raise InputError(f"Unknown plan option(s) {', '.join(bad)}: choose from {', '.join(PLAN_PARAMS)}.")
    _PLANS[name] = fn
    _PLAN_CLUES[name] = tuple(clues)
    _PLAN_OPTIONS[name] = tuple(dict.fromkeys(options))


def plan_clue_kinds(name: str) -> tuple[str, ...]:
    """The clue kinds plan ``name`` reads."""
    get_plan(name)
    return _PLAN_CLUES[name]


def plan_options(name: str) -> tuple[str, ...]:
    """The :class:`PlanParams` fields plan ``name`` reads (``PLAN_OPTIONS`` among them are
    pipeline options)."""
    get_plan(name)
    return _PLAN_OPTIONS[name]


_PARAM_TYPES = {f.name: f.type for f in fields(PlanParams)}  # annotations as strings (postponed)
# Shares, not weights: a coverage above 1 can never be reached.
_AT_MOST_ONE = ("min_coverage", "quote_coverage")
# Counts of things a plan reads (candidates, paragraphs, characters...): 0 would read nothing.
_AT_LEAST_ONE = ("rrf_k", "feedback_chunks", "rerank_depth", "window_chars", "likelihood_depth",
                 "likelihood_passages", "likelihood_chars", "follow_max_df", "follow_anchors", "follow_window")


def check_plan_params(plans: str | Iterable[str], overrides: Mapping[str, object]) -> dict[str, object]:
    """``overrides`` of :class:`PlanParams` fields checked for plan ``plans`` (a name, or the
    plans of one run: each override must be read by at least one of them); the checked
    values (an int where a float is expected becomes a float), or one InputError naming
    every bad entry.

    Why refuse rather than ignore: an override a plan never reads would leave a results
    file claiming a setting that changed nothing."""
    names = [plans] if isinstance(plans, str) else list(dict.fromkeys(plans))
    read = {o for n in names for o in plan_options(n)}
    out: dict[str, object] = {}
    problems: list[str] = []
    for key, value in overrides.items():
        if key == "language":
            problems.append("language follows the document and cannot be set")
        elif key not in _PARAM_TYPES:
            problems.append(f"unknown plan parameter {key!r} (choose from {', '.join(PLAN_PARAMS)})")
        elif key not in read:
            readers = ", ".join(n for n in plan_names() if key in plan_options(n))
            where = f"plan {' or '.join(repr(n) for n in names)}" if names else "any plan chosen"
            problems.append(f"{key} is not read by {where} (it is by {readers or 'no plan'})")
        else:
            problem = _param_problem(key, value)
            if problem:
                problems.append(problem)
            else:
                out[key] = float(value) if _PARAM_TYPES[key] == "float" else value  # type: ignore[arg-type]
    if problems:
        raise InputError("Bad plan parameter(s): " + "; ".join(problems) + ".")
    return out


def _param_problem(key: str, value: object) -> str | None:
    kind = _PARAM_TYPES[key]
    if kind == "bool":
        return None if isinstance(value, bool) else f"{key} must be true or false; got {value!r}"
    if value is None and kind == "int | None":
        return None
    whole = kind in ("int", "int | None")
    if isinstance(value, bool) or not isinstance(value, int if whole else int | float) \
            or not math.isfinite(value):
        return f"{key} must be a {'whole number' if whole else 'number'}; got {value!r}"
    low = 1 if key in _AT_LEAST_ONE else 0
    if value < low or (key in _AT_MOST_ONE and value > 1):
        return f"{key} must be {'between 0 and 1' if key in _AT_MOST_ONE else f'>= {low}'}; got {value!r}"
    return None


def parse_plan_params(items: Iterable[str]) -> dict[str, object]:
    """``NAME=VALUE`` strings (the command line's ``--param``) as typed values by the
    :class:`PlanParams` field's type (``true``/``false``, whole numbers, numbers, ``none``
    for ``rrf_k``); the values' ranges are checked by :func:`check_plan_params`."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise InputError(f"--param takes NAME=VALUE (e.g. rerank_depth=20); got {item!r}.")
        if key in out:
            raise InputError(f"--param {key} is given twice.")
        kind = _PARAM_TYPES.get(key)
        if kind is None or key == "language":
            out[key] = text  # check_plan_params names the problem
        elif kind == "bool":
            lowered = text.lower()
            out[key] = {"true": True, "false": False}.get(lowered, text)
        elif kind == "int | None" and text.lower() == "none":
            out[key] = None
        else:
            try:
                out[key] = int(text) if kind.startswith("int") else float(text)
            except ValueError:
                out[key] = text  # the wrong type: check_plan_params says what it must be
    return out


def get_plan(name: str) -> PlanFn:
    try:
        return _PLANS[name]
    except KeyError:
        raise InputError(f"Unknown query plan {name!r}: choose one of {', '.join(sorted(_PLANS))}.") from None


def plan_names() -> list[str]:
    return sorted(_PLANS)


def execute_plan(name: str, ctx: PlanContext | Retriever, question: str, clues: CluesLike | None, k: int,
                 params: PlanParams | None = None) -> PlanResult:
    """Plan ``name``'s :class:`PlanResult` for ``question`` (a plan returning bare hits gets no notes)."""
    if isinstance(ctx, Retriever):
        ctx = PlanContext(ctx)
    found = get_plan(name)(ctx, question, clues, k, params or PlanParams())
    return found if isinstance(found, PlanResult) else PlanResult(list(found))


def run_plan(name: str, ctx: PlanContext | Retriever, question: str, clues: CluesLike | None, k: int,
             params: PlanParams | None = None) -> list[Hit]:
    """The hits of plan ``name`` (see :func:`execute_plan` for its notes too)."""
    return execute_plan(name, ctx, question, clues, k, params).hits


FOUND_BY_QUESTION = "question"
FOUND_BY_MEMORY = "memory"
FOUND_BY_LINKS = "links"
FOUND_BY = (FOUND_BY_QUESTION, FOUND_BY_MEMORY, FOUND_BY_LINKS)  # the values of Hit.found_by


def found_by_words(found_by: Iterable[str]) -> str:
    """How an evidence chunk became a candidate, in words for a reader ("" when the plan
    did not say): the memory is credited alone only for a chunk the question did not find."""
    sources = list(dict.fromkeys(found_by))
    if set(sources) == {FOUND_BY_MEMORY}:
        return "found by the memory only"
    if set(sources) == {FOUND_BY_QUESTION, FOUND_BY_MEMORY}:
        return "found by the question; the memory pointed at it too"
    names = {FOUND_BY_QUESTION: "the question", FOUND_BY_LINKS: "following links", FOUND_BY_MEMORY: "the memory"}
    return "found by " + ", ".join(names.get(s, s) for s in sources) if sources else ""


def found_by_question(hits: list[Hit]) -> list[Hit]:
    """``hits`` (the question's own search) marked as found by the question."""
    for h in hits:
        h.found_by = (FOUND_BY_QUESTION,)
    return hits


def _add_found_by(hits: list[Hit], r: Retriever, chunk_ids: list[int], source: str) -> None:
    """Mark the chunks ``chunk_ids`` as found by ``source``: a candidate already in ``hits``
    gets the source added, any other joins ``hits`` at the end (score 0)."""
    by_id = {h.chunk_id: h for h in hits}
    for cid in dict.fromkeys(chunk_ids):
        if cid in by_id:
            if source not in by_id[cid].found_by:
                by_id[cid].found_by = (*by_id[cid].found_by, source)
        else:
            by_id[cid] = Hit(cid, 0.0, r.chunks[cid].text, found_by=(source,))
            hits.append(by_id[cid])


# ------------------------------------------------------------------ plans
def _question(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> list[Hit]:
    return found_by_question(ctx.retriever.search([question], k, lexical=p.lexical, rrf_k=p.rrf_k))


def _clues(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> list[Hit]:
    r = ctx.retriever
    lines = clues.lines() if clues else []
    weights = [p.question_weight] + [p.clue_weight / max(1, len(lines))] * len(lines)
    return r.search([question, *lines], k, weights=weights, lexical=p.lexical, rrf_k=p.rrf_k)


def ground_clues(r: Retriever, question: str, clues, p: PlanParams) -> list:
    """Every clue line matched to a document sentence (see memorag.grounding)."""
    if not clues:
        return []
    index = r.sentence_index(p.language)
    return [index.ground(line, question, min_coverage=p.min_coverage) for line in clues.lines()]


def grounded_sentences(r: Retriever, question: str, clues, p: PlanParams) -> list:
    """The distinct document sentences the clues point at, best-covered first."""
    grounded = [g for g in ground_clues(r, question, clues, p) if g.grounded]
    sentences, seen = [], set()
    for g in sorted(grounded, key=lambda g: -g.coverage):
        if g.sentence.text not in seen:
            seen.add(g.sentence.text)
            sentences.append(g.sentence)
    return sentences


def _grounded(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> list[Hit]:
    r = ctx.retriever
    sentences = grounded_sentences(r, question, clues, p)
    if not sentences:  # nothing the memory said is in the document: question-only retrieval
        return _question(ctx, question, clues, k, p)
    direct: list[int] = []
    for s in sentences:
        if s.chunk_id not in direct:
            direct.append(s.chunk_id)
    queries = [question] + [s.text for s in sentences]
    weights = [p.question_weight] + [p.sentence_weight / len(sentences)] * len(sentences)
    return r.search(queries, k, weights=weights, lexical=p.lexical, rrf_k=p.rrf_k,
                    extra_rankings=[(direct, p.direct_weight)])


def _feedback(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> list[Hit]:
    r = ctx.retriever
    first = r.search([question], max(k, p.feedback_chunks), lexical=p.lexical, rrf_k=p.rrf_k)
    index = r.sentence_index(p.language)
    top = {h.chunk_id for h in first[: p.feedback_chunks]}
    best = [sid for sid in index.candidates(question, n=50) if index.sentences[sid].chunk_id in top]
    picked: list[str] = []
    for cid in [h.chunk_id for h in first[: p.feedback_chunks]]:
        for sid in best:
            if index.sentences[sid].chunk_id == cid:
                picked.append(index.sentences[sid].text)
                break
    if not picked:
        return first[:k]
    queries = [question, *picked]
    weights = [p.question_weight] + [p.clue_weight / len(picked)] * len(picked)
    return r.search(queries, k, weights=weights, lexical=p.lexical, rrf_k=p.rrf_k)


JUDGE_SYSTEM = {
    "en": "You decide whether a passage helps answer a question. Reply yes or no.",
    "zh": "你判断一段文字是否有助于回答问题。只回答“是”或“否”。",
}
JUDGE_USER = {
    "en": "{notes}Question: {question}\n\nPassage: {passage}\n\nDoes the passage help answer the question? Yes or no?",
    "zh": "{notes}问题：{question}\n\n段落：{passage}\n\n这段文字有助于回答这个问题吗？是或否？",
}
NOTES = {"en": "Facts from the document:\n{facts}\n\n", "zh": "文档中的事实：\n{facts}\n\n"}


def judge_rerank(ctx: PlanContext, question: str, first: list[Hit], k: int, p: PlanParams,
                 notes: list[str] | None = None) -> list[Hit]:
    """Reorder ``first`` (best first) by a judge's P(yes), fused with the original order."""
    if ctx.judge is None or not first:
        return first[:k]
    r = ctx.retriever
    index = r.sentence_index(p.language)
    lang = p.language if p.language in JUDGE_USER else "en"
    note_text = NOTES[lang].format(facts="\n".join(notes)) if notes else ""
    scored = []
    for h in first:
        window = index.window(h.chunk_id, question, p.window_chars) or h.text[: p.window_chars]
        messages = [{"role": "system", "content": JUDGE_SYSTEM[lang]},
                    {"role": "user", "content": JUDGE_USER[lang].format(notes=note_text, question=question,
                                                                        passage=window)}]
        scored.append((ctx.judge.yes_probability(messages), h))
    judged = [h.chunk_id for _, h in sorted(scored, key=lambda t: -t[0])]
    return _fuse_judged(first, judged, p.rerank_weight, k, p)


def _fuse_judged(first: list[Hit], judged: list[int], weight: float, k: int, p: PlanParams,
                 quoted: list[int] | None = None) -> list[Hit]:
    """The first-round order (weight 1), a judge's order (``weight``) and, when given, the
    chunks the memory quoted (``p.quote_weight``), fused by RRF."""
    rankings, weights = [[h.chunk_id for h in first], judged], [1.0, weight]
    if quoted and p.quote_weight > 0:
        rankings.append(quoted)
        weights.append(p.quote_weight)
    fused = weighted_rrf(rankings, weights, p.rrf_k)
    by_id = {h.chunk_id: h for h in first}
    return [Hit(cid, score, by_id[cid].text, found_by=by_id[cid].found_by) for cid, score in fused[:k]]


def _rerank(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> PlanResult:
    first = ctx.retriever.search([question], p.rerank_depth, lexical=p.lexical, rrf_k=p.rrf_k)
    return PlanResult(judge_rerank(ctx, question, first, k, p), judged=ctx.judge is not None)


def _memorag(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> PlanResult:
    sentences = grounded_sentences(ctx.retriever, question, clues, p)
    first = _grounded(ctx, question, clues, p.rerank_depth, p)
    return PlanResult(judge_rerank(ctx, question, first, k, p, notes=[s.text for s in sentences[:3]]),
                      judged=ctx.judge is not None)


LIKELIHOOD_USER = {
    "en": "Passage: {passage}\n\nWrite a question that this passage answers.",
    "zh": "段落：{passage}\n\n写一个这段文字能回答的问题。",
}


def likelihood_prompt(passage: str, language: str) -> list[ChatMessage]:
    """The judge's prompt for ``passage``: the question is scored as its reply."""
    lang = language if language in LIKELIHOOD_USER else "en"
    return [{"role": "user", "content": LIKELIHOOD_USER[lang].format(passage=passage)}]


def judge_passage_prompts(chunk_texts: Iterable[str], p: PlanParams) -> list[list[ChatMessage]]:
    """The judge's prompt of every paragraph :func:`likelihood_scores` may pick from these
    chunks, each once: what :meth:`memorag.pipeline.MemoRAG.memorize` reads in advance
    (memorag.judge_states). A memory clue's quote is judged by its paragraph
    (:func:`paragraph_of`), one of these."""
    seen: dict[str, None] = {}
    for text in chunk_texts:
        for para in paragraphs(text, p.likelihood_chars):
            seen.setdefault(para, None)
    return [likelihood_prompt(t, p.language) for t in seen]


def paragraphs(text: str, max_chars: int) -> list[str]:
    """A chunk's paragraphs (blank-line separated), each cut into windows of ``max_chars``.

    The judge reads paragraphs, not whole chunks: a 512-token chunk holds several topics,
    and a chunk whose best paragraph answers the question should not be diluted by the
    rest (nor cost the judge 500 tokens)."""
    out: list[str] = []
    for para in (p.strip() for p in text.split("\n\n")):
        cut_any = False
        while len(para) > max_chars:
            cut = para.rfind(" ", max_chars // 2, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(para[:cut].strip())
            para, cut_any = para[cut:].strip(), True
        # a stray heading or fragment is not a passage (the tail of a cut paragraph is)
        if para and (len(para) >= 40 or cut_any or not out):
            out.append(para)
    return out or [text[:max_chars]]


def paragraph_of(chunk_text: str, sentence: str, max_chars: int) -> str:
    """The paragraph of ``chunk_text`` (as :func:`paragraphs` cuts it) that holds ``sentence``,
    or the one holding most of its start; ``sentence`` itself when none does.

    Why the paragraph: the judge scores a memory's quote on the same footing as every other
    candidate, a paragraph (a bare sentence scored against paragraphs ranked by its length, not its
    content), and every paragraph's state was read at memorize (memorag.judge_states), so a
    quote costs the judge no reading."""
    paras = paragraphs(chunk_text, max_chars)
    for para in paras:
        if sentence in para:
            return para
    head = sentence[: max(20, len(sentence) // 2)]
    for para in paras:
        if head in para:
            return para
    return sentence[:max_chars]


def likelihood_scores(ctx: PlanContext, question: str, candidates: list[Hit], p: PlanParams,
                      extra: dict[int, list[str]] | None = None) -> dict[int, tuple[float, str]]:
    """Each candidate chunk's best query-likelihood score over the paragraphs the budget
    allows, with the paragraph that scored it.

    Every chunk gets its paragraph that shares the most (IDF-weighted) words with the
    question; the rest of ``likelihood_passages`` goes to the next-best paragraphs of any
    candidate. ``extra`` adds passages that must be read (the paragraphs a memory clue
    pointed at, :func:`paragraph_of`) to their chunks.
    """
    from memorag.grounding import content_words

    index = ctx.retriever.sentence_index(p.language)
    q_words = set(content_words(question, p.language))

    per_chunk: list[tuple[int, list[tuple[float, str]]]] = []  # (chunk, [(overlap, paragraph)] best first)
    for h in candidates:
        scored = [(index.idf_overlap(q_words, t), t) for t in paragraphs(h.text, p.likelihood_chars)]
        per_chunk.append((h.chunk_id, sorted(scored, key=lambda st: -st[0])))
    chosen: list[tuple[int, str]] = [(cid, paras[0][1]) for cid, paras in per_chunk]
    for cid, texts in (extra or {}).items():
        chosen += [(cid, t[: p.likelihood_chars]) for t in texts]
    rest = sorted(((o, -i, cid, t) for i, (cid, paras) in enumerate(per_chunk) for o, t in paras[1:]),
                  reverse=True)
    for _, _, cid, t in rest[: max(0, p.likelihood_passages - len(chosen))]:
        chosen.append((cid, t))
    judged = list(dict.fromkeys(chosen))  # each (chunk, paragraph) once, in order
    assert ctx.judge is not None
    scored = score_continuations(ctx.judge, [likelihood_prompt(text, p.language) for _, text in judged], question)
    best: dict[int, tuple[float, str]] = {}
    for (cid, text), lp in zip(judged, scored):
        score = sum(lp) / len(lp) if lp else float("-inf")
        if cid not in best or score > best[cid][0]:
            best[cid] = (score, text)
    return best


def likelihood_rerank(ctx: PlanContext, question: str, first: list[Hit], k: int, p: PlanParams,
                      extra: dict[int, list[str]] | None = None, quoted: list[int] | None = None) -> list[Hit]:
    """Reorder ``first`` (best first) by query likelihood, fused with the original order
    (and with the memory's quoted chunks, see :attr:`PlanParams.quote_weight`)."""
    if ctx.judge is None or not first:
        return first[:k]
    best = likelihood_scores(ctx, question, first, p, extra)
    judged = sorted((h.chunk_id for h in first), key=lambda c: -best.get(c, (float("-inf"), ""))[0])
    fused = _fuse_judged(first, judged, p.likelihood_weight, k, p, quoted)
    for h in fused:
        h.passage = best[h.chunk_id][1] if h.chunk_id in best else None
    return fused


def follow_links(ctx: PlanContext, question: str, ranked: list[Hit], k: int, p: PlanParams) -> PlanResult:
    """``ranked`` led by its anchor sentences' chunks, each followed by the chunks reachable
    from it by rare-word links (see SentenceIndex.links); the result notes the sentences
    walked through (``linked``), anchor first.

    Why: a question names the start of a chain (the value of a variable, the film of a
    two-hop question), never its next link; the next link is found through a word the
    found sentence adds. Anchors are the sentences of the top ``follow_window`` chunks that
    hold the most (IDF-weighted) question words: the top chunk as a whole may match the
    question best while its best sentence is filler. Each step follows the best link of
    the sentence reached last, so a chain is walked, not a neighbourhood flooded."""
    # The walk leaves the judge at least one place of its own besides the anchor: at k=3
    # (the pipeline's default) two hops filled the whole evidence and recall@3 on 80 HotpotQA
    # questions fell to 0.637 (no walk 0.731, one hop 0.756); at k=5 two hops were best.
    hops = min(p.follow_hops, k - 2)
    if hops <= 0 or not ranked:
        return PlanResult(ranked[:k])
    from memorag.grounding import content_words

    r = ctx.retriever
    index = r.sentence_index(p.language)
    q_words = set(content_words(question, p.language))
    by_id = {h.chunk_id: h for h in ranked}
    scored = []
    for rank, h in enumerate(ranked[: p.follow_window]):
        for sid in index.sentences_of(h.chunk_id):
            overlap = index.sentence_overlap(sid, q_words)
            if overlap > 0:  # ties go to the better-ranked chunk: the judge's order stands
                scored.append((-overlap, rank, sid))
    order: list[int] = []
    linked: list[int] = []
    for _, _, anchor in sorted(scored)[: p.follow_anchors]:
        sid: int = anchor
        if index.sentences[sid].chunk_id not in order:
            order.append(index.sentences[sid].chunk_id)
        linked.append(sid)
        known, visited, reached = set(q_words), {sid}, 0
        # A step inside a chunk already taken (a name's paragraph repeats it) is free; only
        # a step that reaches a new chunk counts as a hop. The step cap ends a walk that
        # keeps circling inside the taken chunks.
        for _ in range(3 * hops):
            nxt = [o for _, o in index.links(sid, known, p.follow_max_df) if o not in visited]
            if not nxt:
                break
            known |= index.words_of(sid)  # go forward, not back along the word just followed
            sid = nxt[0]
            visited.add(sid)
            linked.append(sid)
            if p.follow_new_only and index.sentences[sid].chunk_id in by_id:
                continue  # the judge has already placed this chunk: its verdict stands
            if index.sentences[sid].chunk_id not in order:
                order.append(index.sentences[sid].chunk_id)
                reached += 1
                if reached >= hops:
                    break
    out = [by_id.get(cid) or Hit(cid, 0.0, r.chunks[cid].text, found_by=(FOUND_BY_LINKS,)) for cid in order]
    out += [h for h in ranked if h.chunk_id not in order]
    return PlanResult(out[:k], linked, [index.sentences[sid].text for sid in linked])


def excerpt_evidence(retriever: Retriever, question: str, hits: list[Hit], best: int = 2, around: int = 1,
                     language: str = "en", min_share: float = 0.5, linked_ids: list[int] = ()) -> list[str]:
    """Each hit cut to what bears on ``question``: its ``best`` sentences by (IDF-weighted)
    question words, if they hold at least ``min_share`` of the best such score among all
    hits, and the sentences a link walk went through in it (``linked_ids``, from the plan's
    :class:`PlanResult`), each with ``around`` sentences either side. A hit with no such
    sentence keeps its text.

    Why: a chain that the walk found is a handful of sentences spread over chunks of filler;
    given whole chunks, the 1.5B generator named only the chain's first link. The share
    keeps out sentences that match only a common question word (every line of every chain
    holds "VAR")."""
    index = retriever.sentence_index(language)
    from memorag.grounding import content_words

    q_words = set(content_words(question, language))
    walked = set(linked_ids)
    scored = {h.chunk_id: sorted(((index.sentence_overlap(sid, q_words), sid) for sid in index.sentences_of(h.chunk_id)),
                                 key=lambda t: (-t[0], t[1])) for h in hits}
    top = max((sc[0][0] for sc in scored.values() if sc), default=0.0)
    out: list[str] = []
    for h in hits:
        sids = scored[h.chunk_id]
        keep = {sid for sc, sid in sids[:best] if sc > 0 and sc >= min_share * top}
        keep |= walked & {sid for _, sid in sids}
        out.append(index.excerpt(h.chunk_id, keep, around) if keep else h.text)
    return out


def _judged(found: PlanResult, ctx: PlanContext) -> PlanResult:
    found.judged = ctx.judge is not None
    return found


def _likelihood(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> PlanResult:
    first = found_by_question(ctx.retriever.search([question], p.likelihood_depth, lexical=p.lexical, rrf_k=p.rrf_k))
    ranked = likelihood_rerank(ctx, question, first, p.likelihood_depth, p)
    return _judged(follow_links(ctx, question, ranked, k, p), ctx)


def _recall(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> PlanResult:
    r = ctx.retriever
    first = found_by_question(r.search([question], p.likelihood_depth, lexical=p.lexical, rrf_k=p.rrf_k))
    extra: dict[int, list[str]] = {}
    for s in grounded_sentences(r, question, clues, p)[:3]:
        extra.setdefault(s.chunk_id, []).append(paragraph_of(r.chunks[s.chunk_id].text, s.text, p.likelihood_chars))
    quoted: list[int] = []
    if p.quote_weight > 0:  # only what the memory quoted, in the order it said it
        for g in ground_clues(r, question, clues, p):
            if g.grounded and g.coverage >= p.quote_coverage and g.sentence.chunk_id not in quoted:
                quoted.append(g.sentence.chunk_id)
    # the memory's chunks join the candidates after the question's own (their first-round
    # place), and every quote is a candidate
    _add_found_by(first, r, [*extra, *quoted], FOUND_BY_MEMORY)
    ranked = likelihood_rerank(ctx, question, first, len(first), p, extra, quoted)
    bridge: list[str] = []
    moved: int | None = None
    if p.memory_bridge and ctx.memory is not None and ranked:
        before = ranked
        ranked, bridge = memory_bridge(ctx, question, ranked, k, p)
        moved = ranked[1].chunk_id if ranked is not before else None
    found = _judged(follow_links(ctx, question, ranked, k, p), ctx)
    found.bridge, found.bridge_chunk = bridge, moved
    return found


BRIDGE_QUERY = {
    "en": "{question}\nThe document says: {fact}",
    "zh": "{question}\n文档中写道：{fact}",
}


def memory_bridge(ctx: PlanContext, question: str, ranked: list[Hit], k: int,
                  p: PlanParams) -> tuple[list[Hit], list[str]]:
    """``ranked`` with the memory's second hop in second place, and what was asked and quoted.

    The memory is asked to quote for the question and the best (question-matching)
    sentence of the top chunk, and kept away from that chunk. A quote counts only if it is
    a sentence that sentence links to (a rare word they share that the question lacks,
    :meth:`~memorag.grounding.SentenceIndex.links`, ``follow_max_df``): the fact names the
    next entity, the memory says which of the sentences naming it is the one. The first such
    quote's chunk outside the top ``k`` moves to second place; none: no change. A fact with
    no links asks nothing. A memory that cannot quote is asked without the keep-away (its
    lines are grounded the same way, so an invented one moves nothing).

    Why both: the memory's quotes alone moved a chunk for most questions, mostly unrelated
    ones (4 better, 4 worse on 80 held-out questions), and the links alone as often helped
    as hurt; a quote that is also a link moved rarely and never hurt on the runs measured
    (docs/evaluation.md, "The memory's second hop")."""
    from memorag.grounding import content_words
    from memorag.longmem import extract_sentences

    r = ctx.retriever
    index = r.sentence_index(p.language)
    anchor = ranked[0]
    best = index.best_sentence(anchor.chunk_id, question)
    if best is None:
        return ranked, []
    links = index.links(best, set(content_words(question, p.language)), p.follow_max_df)
    linked = {index.sentences[o].start for _, o in links}
    if not linked:
        return ranked, []
    query = BRIDGE_QUERY.get(p.language, BRIDGE_QUERY["en"]).format(question=question,
                                                                     fact=index.sentences[best].text)
    memory = ctx.memory
    avoid = extract_sentences(anchor.text) if getattr(memory, "can_quote", False) else []
    spans = memory.clues(query, kinds=("spans",), **({"avoid": avoid} if avoid else {})).spans
    top = {h.chunk_id for h in ranked[:k]}
    for span in spans:
        g = index.ground(span, question, min_coverage=p.min_coverage)
        if not (g.grounded and g.coverage >= p.quote_coverage) or g.sentence.chunk_id in top \
                or g.sentence.start not in linked:
            continue
        cid = g.sentence.chunk_id
        hit = next((h for h in ranked if h.chunk_id == cid), None)
        if hit is None:
            hit = Hit(cid, 0.0, r.chunks[cid].text, found_by=(FOUND_BY_MEMORY,))
        elif FOUND_BY_MEMORY not in hit.found_by:
            hit.found_by = (*hit.found_by, FOUND_BY_MEMORY)
        return [anchor, hit, *[h for h in ranked[1:] if h.chunk_id != cid]], [query, *spans]
    return ranked, [query, *spans]


def _recall_quotes(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> PlanResult:
    return _recall(ctx, question, clues, k, replace(p, quote_weight=1.0))


# A name: capitalized words (joined by a few lowercase particles), or a year. Chinese text
# has no capitals; there the plans fall back to the question alone.
_NAME = re.compile(r"(?:[A-Z][\w'’.&-]*|\d{4})(?:\s+(?:(?:of|the|de|del|da|van|von|and|&)\s+)*[A-Z][\w'’.&-]*)*")
_NOT_NAMES = {"who", "what", "which", "when", "where", "why", "how", "is", "are", "was", "were", "the", "a", "an",
              "in", "on", "of", "do", "does", "did", "has", "have", "had", "can", "could", "for", "from", "and",
              "or", "both", "this", "that", "these", "those", "it", "its", "he", "she", "they", "his", "her"}


def names_in(text: str) -> list[str]:
    """Distinct names in ``text`` (capitalized spans), in order; question words are not names."""
    out: list[str] = []
    for m in _NAME.finditer(text):
        words = m.group().split()
        while words and words[0].lower() in _NOT_NAMES:  # "Who", "The" at a sentence start
            words = words[1:]
        name = " ".join(words).strip(" .,'’")
        parts = [part.strip() for part in re.split(r"\s+(?:and|&)\s+", name)]
        # "Scott Derrickson and Ed Wood" are two names; "Kiss and Tell" is one title
        for part in parts if len(parts) > 1 and all(len(x.split()) > 1 for x in parts) else [name]:
            if len(part) > 1 and part not in out and part.lower() not in _NOT_NAMES:
                out.append(part)
    return out


def _entities(ctx: PlanContext, question: str, clues, k: int, p: PlanParams) -> list[Hit]:
    """Question + each name the question holds searched on its own (sharing ``clue_weight``).

    A comparison question ("Who is older, Annie Morton or Terry Richardson?") needs each
    entity's own paragraph, but the whole question ranks chunks that mention both names in
    passing above them; a name searched alone ranks the chunk about it first."""
    names = names_in(question)
    if not names:
        return _question(ctx, question, clues, k, p)
    weights = [p.question_weight] + [p.clue_weight / len(names)] * len(names)
    return ctx.retriever.search([question, *names], k, weights=weights, lexical=p.lexical, rrf_k=p.rrf_k)


# What each plan reads of its PlanParams, following the functions it calls.
_SEARCH = ("lexical", "rrf_k")
_GROUNDING = ("min_coverage",)
_GROUNDED = (*_SEARCH, *_GROUNDING, "question_weight", "sentence_weight", "direct_weight")
_JUDGE_YES = (*_SEARCH, "rerank_depth", "rerank_weight", "window_chars")
_FOLLOW = ("follow_hops", "follow_max_df", "follow_anchors", "follow_window", "follow_new_only")
_LIKELIHOOD = (*_SEARCH, "likelihood_depth", "likelihood_passages", "likelihood_chars", "likelihood_weight", *_FOLLOW)
_RECALL = (*_LIKELIHOOD, *_GROUNDING, "quote_coverage", "avoid_found", "memory_bridge")  # follow_max_df: in _FOLLOW

# Plans that read no clues take none: a memory generation nobody reads costs seconds.
register_plan("entities", _entities, clues=(), options=(*_SEARCH, "question_weight", "clue_weight"))
register_plan("likelihood", _likelihood, clues=(), options=_LIKELIHOOD)
# Only recalled spans (and the draft answer when asked for): over the stored clues of 40
# HotpotQA questions, 5 of 63 surrogate questions grounded in a sentence and none in a gold
# one, against 26 of 93 spans and answers (5 gold); each kind costs a memory generation.
register_plan("recall", _recall, clues=("spans", "answer"), options=(*_RECALL, "quote_weight"))
register_plan("recall+quotes", _recall_quotes, clues=("spans", "answer"), options=_RECALL)  # quote_weight is 1
register_plan("question", _question, clues=(), options=_SEARCH)
register_plan("rerank", _rerank, clues=(), options=_JUDGE_YES)
register_plan("memorag", _memorag, clues=CLUE_KINDS, options=(*_GROUNDED, *_JUDGE_YES))
register_plan("clues", _clues, clues=CLUE_KINDS, options=(*_SEARCH, "question_weight", "clue_weight"))
register_plan("grounded", _grounded, clues=CLUE_KINDS, options=_GROUNDED)
register_plan("feedback", _feedback, clues=(), options=(*_SEARCH, "question_weight", "clue_weight", "feedback_chunks"))
