"""The answering core: one question over one *view* becomes one answer, the same way for
every front-end (``MemoRAG.ask``, ``Collection.ask``, the HTTP service and the demo through
``Engine``, and ``memorag eval``'s memory methods).

    answer_question(view, question, parts)
        = find_evidence  clues from the view's memory (only the kinds the plan reads)
                         + the retrieval plan over the view's chunks (judged by parts.plan.judge)
                         + the clues grounded in the document's sentences
        + answer_messages  the evidence renderer (whole chunks or excerpts) + the answer prompt
        + generate         the generator streams the answer

The components are small and typed:

* :class:`View`: what is asked, a retriever over one document's chunks or several routed
  documents' chunks joined, and the :class:`ClueSource` (a :class:`~memorag.memory.Memory`,
  or the routed documents' memories) that writes clues;
* :class:`RetrievalPlan`: a registered query plan (memorag.plans), its parameters and its
  :class:`~memorag.llm.base.Judge`;
* an :class:`EvidenceRenderer` (:class:`WholeChunks`, :class:`Excerpts`): what the
  generator reads of each hit;
* :class:`AnswerPrompt`: the messages sent to the generator.

:class:`Answering` bundles a generator with those; the result, :class:`AnswerResult`, holds
the answer, the clues, the evidence hits with citations, the exact messages sent to the
generator and the timings.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from memorag.config import DEFAULT_PLAN, EVIDENCE_ORDERS, PASSAGE_CHARS, Evidence, TaskType, choice, parse_evidence
from memorag.errors import InputError, StateError
from memorag.llm.base import ChatMessage, Generator, Judge, score_continuations
from memorag.memory import Clues
from memorag.plans import (
    CLUE_KINDS,
    PlanContext,
    PlanParams,
    PlanResult,
    excerpt_evidence,
    execute_plan,
    ground_clues,
    plan_clue_kinds,
)
from memorag.prompts import fill, prompts_for
from memorag.retrieval import Hit, Retriever

# The judge reads one passage and the question at a time: a small window is enough.
JUDGE_CTX = 2048
_MARK = re.compile(r"\[(\d{1,3})\]")


# ----------------------------------------------------------------------------- components
@runtime_checkable
class ClueSource(Protocol):
    """What writes clues for a question: a :class:`~memorag.memory.Memory`, or the memories
    of a routed set of documents."""

    def clues(self, query: str, *, use_answer: bool = False,
              kinds: tuple[str, ...] = CLUE_KINDS, avoid: Sequence[str] = ()) -> Clues: ...

    def key_points(self) -> list[str]: ...


@dataclass(frozen=True)
class View:
    """What a question is answered over: a retriever holding the chunks (one document's, or
    several documents' joined, chunk ids then run over all of them in order), the memory
    that writes clues (None: no memory), the language of prompts and word matching, and
    for named documents their names and the chunk id each one starts at."""

    retriever: Retriever
    memory: ClueSource | None = None
    language: str = "en"
    documents: tuple[str, ...] = ()
    chunk_offsets: tuple[int, ...] = (0,)

    def locate(self, chunk_id: int) -> tuple[str | None, int]:
        """(document name or None, chunk id within that document) of a view chunk id."""
        if not self.documents:
            return None, chunk_id
        i = max(j for j, start in enumerate(self.chunk_offsets) if start <= chunk_id)
        return self.documents[i], chunk_id - self.chunk_offsets[i]


class TwinJudge:
    """The generator's own weights as the judge, in a context of their own made on first
    use (``generator.twin(n_ctx)``; a generator without ``twin`` judges in its own).

    Why a twin: judging in the generator's context would overwrite its KV cache, which holds
    the memory's document when the generator is the memory and otherwise the prompt prefix
    the next answer reuses. Measured on the bundled sample (bench/bench_query_latency.py):
    generating after judging in the shared context took about twice as long per answer.
    """

    def __init__(self, generator: Any, n_ctx: int = JUDGE_CTX) -> None:
        self.generator = generator
        self.n_ctx = n_ctx
        self._model: Judge | None = None
        self._states: Any = None  # the document's JudgeStates, handed on to the scoring model

    @property
    def model(self) -> Judge:
        """The model that scores (made on first use)."""
        if self._model is None:
            twin = getattr(self.generator, "twin", None)
            self._model = self._with_states(twin(n_ctx=self.n_ctx) if twin is not None else self.generator)
        return self._model

    @property
    def likelihood_model(self) -> Judge:
        """The model that scores query likelihood (:func:`memorag.judge_states.passage_reader`)."""
        return self.model

    def use_judge_states(self, states: Any) -> None:
        """Have the query-likelihood model restore passages from ``states``
        (:class:`memorag.judge_states.JudgeStates`; None: stop), now if it is loaded, else
        when it is. A model that cannot, or whose layout differs, reads passages as before."""
        self._states = states
        for model in self.loaded_models():
            self._with_states(model)

    def _with_states(self, model: Any) -> Any:
        use = getattr(model, "use_judge_states", None)
        if use is not None:
            use(self._states)
        return model

    def continuation_logprobs(self, messages: list[ChatMessage], continuation: str) -> list[float]:
        return self.model.continuation_logprobs(messages, continuation)

    def continuation_logprobs_many(self, prompts: Sequence[list[ChatMessage]], continuation: str) -> list[list[float]]:
        return score_continuations(self.model, prompts, continuation)

    def yes_probability(self, messages: list[ChatMessage]) -> float:
        return self.model.yes_probability(messages)

    def loaded_models(self) -> list[Judge]:
        """The scoring models made so far (asking makes none): what a benchmark resets."""
        return [self._model] if self._model is not None else []


class PackagedJudge(TwinJudge):
    """The judge beside the packaged default generator: query likelihood (plans
    ``likelihood``, ``recall``) by the packaged trained judge
    (:data:`~memorag.models.registry.DEFAULT_JUDGE`, loaded on first use), which ranked
    held-out HotpotQA evidence as well as the generator itself at a fraction of its cost
    (docs/evaluation.md, "A trained 0.5B judge"); yes/no relevance (plan ``rerank``) by the
    generator's twin, since the adapter was not trained for it."""

    def __init__(self, generator: Any, n_ctx: int = JUDGE_CTX) -> None:
        super().__init__(generator, n_ctx)
        self._likelihood: Judge | None = None

    @property
    def likelihood_model(self) -> Judge:
        if self._likelihood is None:
            from memorag.models.registry import DEFAULT_JUDGE
            from memorag.pipeline import load_judge

            self._likelihood = self._with_states(load_judge(DEFAULT_JUDGE, n_ctx=self.n_ctx))
        return self._likelihood

    def continuation_logprobs(self, messages: list[ChatMessage], continuation: str) -> list[float]:
        return self.likelihood_model.continuation_logprobs(messages, continuation)

    def continuation_logprobs_many(self, prompts: Sequence[list[ChatMessage]], continuation: str) -> list[list[float]]:
        return score_continuations(self.likelihood_model, prompts, continuation)

    def loaded_models(self) -> list[Judge]:
        return super().loaded_models() + ([self._likelihood] if self._likelihood is not None else [])


def generator_judge(generator: object) -> Judge | None:
    """The default judge: beside the packaged default generator the packaged trained judge
    (:class:`PackagedJudge`); else the generator's twin when the generator can judge, else
    None (judging plans then keep their first-round ranking)."""
    if not isinstance(generator, Judge):
        return None
    from memorag.models.registry import DEFAULT_GENERATOR, shipped_judge_adapter

    if getattr(generator, "spec", None) == DEFAULT_GENERATOR and shipped_judge_adapter() is not None:
        return PackagedJudge(generator)
    return TwinJudge(generator)


def check_judge(judge: object) -> Judge:
    """``judge`` if it implements :class:`~memorag.llm.base.Judge`, else an InputError."""
    if not isinstance(judge, Judge):
        raise InputError(f"judge must have continuation_logprobs(messages, text) and yes_probability(messages) "
                         f"(memorag.llm.base.Judge), e.g. a local llama.cpp model; got {type(judge).__name__}.")
    return judge


@dataclass(frozen=True)
class RetrievalPlan:
    """A registered query plan (memorag.plans), its parameters and its judge (None: no judging)."""

    name: str = DEFAULT_PLAN
    params: PlanParams = field(default_factory=PlanParams)
    judge: Judge | None = None

    def clue_kinds(self) -> tuple[str, ...]:
        return plan_clue_kinds(self.name)

    def find(self, view: View, question: str, clues: Clues | None, k: int) -> PlanResult:
        params = replace(self.params, language=view.language)
        return execute_plan(self.name, PlanContext(view.retriever, self.judge, view.memory), question, clues, k, params)


class EvidenceRenderer(Protocol):
    """What the generator reads of each hit (one text per hit, in order)."""

    def render(self, view: View, question: str, found: PlanResult) -> list[str]: ...


class WholeChunks:
    """Each hit's whole chunk."""

    def render(self, view: View, question: str, found: PlanResult) -> list[str]:
        return [h.text for h in found.hits]


@dataclass(frozen=True)
class Excerpts:
    """Each hit cut to the sentences that bear on the question and those a link walk went
    through, with ``around`` neighbours (memorag.plans.excerpt_evidence)."""

    best: int = 2
    around: int = 1
    min_share: float = 0.5

    def render(self, view: View, question: str, found: PlanResult) -> list[str]:
        return excerpt_evidence(view.retriever, question, found.hits, best=self.best, around=self.around,
                                language=view.language, min_share=self.min_share, linked_ids=found.linked_ids)


@dataclass(frozen=True)
class JudgedPassages:
    """Each hit cut to the paragraph its query-likelihood judge scored best
    (:attr:`~memorag.retrieval.Hit.passage`), widened by the chunk's neighbouring
    paragraphs until it holds ``min_chars``; a hit no judge read keeps its whole chunk.

    Why: a chunk holds several paragraphs and usually only one bears on the question; the
    judge has already found which. The generator then reads a fraction of the tokens (its
    prefill is most of a question's time on a CPU) and less of what does not bear on the
    question. The widening keeps a short paragraph (a line of dialogue) with the lines
    that say who is speaking."""

    min_chars: int = PASSAGE_CHARS

    def render(self, view: View, question: str, found: PlanResult) -> list[str]:
        return [passage_in_context(h.text, h.passage, self.min_chars) if h.passage else h.text for h in found.hits]


@dataclass(frozen=True)
class LeadAndPassages:
    """The plan's best hit (its highest score) as its whole chunk; every other hit cut to
    its judged paragraph as :class:`JudgedPassages` cuts it. Without a judge every hit
    keeps its whole chunk.

    Why: the generator's prefill of the evidence is most of a question's time on a CPU,
    and the hits after the first usually add one paragraph each (the second hop, a
    detail); the best hit stays whole, so the context around what the question asks for
    (who is speaking, the sum after the name) is still read. Measured against whole chunks
    in docs/benchmarks.md ("The generator reads the best chunk whole")."""

    min_chars: int = PASSAGE_CHARS

    def render(self, view: View, question: str, found: PlanResult) -> list[str]:
        hits = found.hits
        if not hits:
            return []
        lead = max(range(len(hits)), key=lambda i: hits[i].score)  # of equal scores, the first read
        cut = JudgedPassages(self.min_chars).render(view, question, found)
        return [h.text if i == lead else piece for i, (h, piece) in enumerate(zip(hits, cut))]


def passage_in_context(chunk: str, passage: str, min_chars: int) -> str:
    """``passage`` (a piece of ``chunk``) widened to whole paragraphs (blank-line separated)
    and then by the paragraphs after and before it, nearest first, while it is shorter than
    ``min_chars``. A passage not found in ``chunk`` is returned as it is."""
    start = chunk.find(passage)
    if start < 0:
        return passage
    end = start + len(passage)
    blocks, pos = [], 0
    for m in re.finditer(r"\n\s*\n", chunk):
        blocks.append((pos, m.start()))
        pos = m.end()
    blocks.append((pos, len(chunk)))
    lo = next(i for i, (_, e) in enumerate(blocks) if e > start)  # the blocks the passage overlaps
    hi = max(lo, *(i for i, (b, _) in enumerate(blocks) if b < end))
    while blocks[hi][1] - blocks[lo][0] < min_chars and (lo > 0 or hi < len(blocks) - 1):
        if hi < len(blocks) - 1:
            hi += 1  # what follows first: a paragraph usually introduces what comes after it
        if blocks[hi][1] - blocks[lo][0] < min_chars and lo > 0:
            lo -= 1
    return chunk[blocks[lo][0]:blocks[hi][1]].strip()


def evidence_renderer(spec: str) -> EvidenceRenderer:
    """The renderer of an ``evidence`` option: ``chunks``, ``excerpts``, ``passages`` or
    ``lead``; ``passages:N`` and ``lead:N`` widen each judged paragraph to N characters
    (:func:`memorag.config.parse_evidence`)."""
    kind, width = parse_evidence(spec)
    if kind == Evidence.EXCERPTS.value:
        return Excerpts()
    if kind == Evidence.LEAD.value:
        return LeadAndPassages(width or PASSAGE_CHARS)
    return JudgedPassages(width or PASSAGE_CHARS) if kind == Evidence.PASSAGES.value else WholeChunks()


@dataclass(frozen=True)
class AnswerPrompt:
    """The messages sent to the generator. ``cite``: number the evidence (``[1] ...``; with
    several documents also named) and ask for the numbers used, so marks in the answer map
    to citations; otherwise the evidence pieces are separated by blank lines. ``order``:
    the evidence in ``document`` order (as the text runs) or ``rank`` order (best first).

    Why document order is the default: two questions about one document then often get
    prompts that begin alike (same first chunks), and a model server's prefix cache, or
    the local generator's store of answered prompts, skips reading that part again; a
    chunk cut from running text also reads more naturally after the one before it
    (measured in docs/benchmarks.md, "Evidence in document order")."""

    cite: bool = False
    order: str = "document"

    def __post_init__(self) -> None:
        if self.order not in EVIDENCE_ORDERS:
            raise InputError(f"evidence order must be one of {', '.join(EVIDENCE_ORDERS)}; got {self.order!r}.")

    def reading_order(self, found: Found) -> Found:
        """``found`` with its hits in the order the generator reads them (``order``)."""
        if self.order == "rank" or len(found.hits) < 2:
            return found
        hits = sorted(found.hits, key=lambda h: h.chunk_id)  # chunk ids run in text order, document by document
        return replace(found, plan=replace(found.plan, hits=hits))

    def evidence_text(self, view: View, pieces: list[str], hits: list[Hit]) -> str:
        if not self.cite:
            return "\n\n".join(pieces)
        named = len(view.documents) > 1
        lines = []
        for n, (text, h) in enumerate(zip(pieces, hits), start=1):
            doc = view.locate(h.chunk_id)[0] if named else None
            lines.append(f"[{n}] " + (f"({doc}) " if doc else "") + text)
        return "\n\n".join(lines)

    def messages(self, view: View, task_type: str, question: str | None, pieces: list[str], hits: list[Hit], *,
                 points: Sequence[str] = (), template: str | None = None) -> list[ChatMessage]:
        p = prompts_for(view.language)
        evidence = self.evidence_text(view, pieces, hits)
        if template:
            user = fill(template, context=evidence, evidence=evidence, input=question or "", question=question or "")
        elif task_type == TaskType.SUMMARIZE.value:
            user = fill(p.gen_summary, evidence=evidence, points="\n".join(points))
        else:
            user = fill(p.gen_cited if self.cite else p.gen_memorag, evidence=evidence, question=question or "")
        return [{"role": "system", "content": p.gen_system}, {"role": "user", "content": user}]


class NoGenerator:
    """A generator that refuses: for pipelines that only build memories (no answer model is
    loaded just to add documents)."""

    def chat(self, messages: list[ChatMessage], **kwargs: Any) -> str:
        raise StateError("This pipeline only builds memories; it does not answer questions.")

    def stream_chat(self, messages: list[ChatMessage], **kwargs: Any) -> Iterator[str]:
        raise StateError("This pipeline only builds memories; it does not answer questions.")


@dataclass(frozen=True)
class Answering:
    """The parts that answer: a generator, a retrieval plan (with its judge), an evidence
    renderer, an answer prompt, and ``top_k`` evidence chunks per question."""

    generator: Generator
    plan: RetrievalPlan = field(default_factory=RetrievalPlan)
    evidence: EvidenceRenderer = field(default_factory=WholeChunks)
    prompt: AnswerPrompt = field(default_factory=AnswerPrompt)
    top_k: int = 3


# ----------------------------------------------------------------------------- results
@dataclass
class Citation:
    """One numbered piece of evidence: ``text == document_text[start:end]`` (``document`` is
    None for a pipeline's one unnamed document)."""

    n: int  # the evidence's number, [n] in a citing prompt
    document: str | None
    chunk_id: int  # the chunk's id within its document
    start: int
    end: int
    text: str
    score: float
    found_by: tuple[str, ...] = ()  # how the chunk became a candidate (memorag.retrieval.Hit.found_by)

    def to_json(self) -> dict:
        return {"n": self.n, "document": self.document, "chunk_id": self.chunk_id, "start": self.start,
                "end": self.end, "score": round(self.score, 5), "text": self.text, "found_by": list(self.found_by)}


@dataclass
class Found:
    """What :func:`find_evidence` found: the clues (None without a memory) and the plan's result."""

    question: str
    task_type: str
    clues: Clues | None
    plan: PlanResult
    timings: dict = field(default_factory=dict)

    @property
    def hits(self) -> list[Hit]:
        return self.plan.hits


@dataclass
class AnswerResult:
    """One answered question: the answer, the clues, the evidence hits (``evidence``, in the
    order the generator read them: :attr:`AnswerPrompt.order`) and their citations, what the
    generator read of each hit (``read``: the whole chunk, or its excerpt or judged passage
    under those evidence renderings), the exact
    ``messages`` sent to the generator, the evidence numbers the answer cites (``marks``),
    what the plan noted (``linked`` sentences, ``judged``, the memory's second hop
    ``bridge``: the question it was asked after the judge, then its quotes) and the timings
    in seconds."""

    answer: str
    question: str
    task_type: str
    clues: Clues | None = None
    evidence: list[Hit] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    citations: list[Citation] = field(default_factory=list)
    messages: list[ChatMessage] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    judged: bool = False
    read: list[str] = field(default_factory=list)
    bridge: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        read = self.read if len(self.read) == len(self.evidence) else [h.text for h in self.evidence]
        return {"question": self.question, "task_type": self.task_type, "answer": self.answer,
                "clues": self.clues.to_json() if self.clues else None,
                "evidence": [{"chunk_id": h.chunk_id, "score": round(h.score, 5), "text": h.text, "read": piece,
                              "found_by": list(h.found_by)}
                             for h, piece in zip(self.evidence, read)],
                "marks": self.marks, "judged": self.judged, "timings": self.timings,
                **({"bridge": {"asked": self.bridge[0], "quotes": self.bridge[1:]}} if self.bridge else {})}


def marks_in(answer: str, n_citations: int) -> list[int]:
    """Evidence numbers ``[n]`` the answer uses, first-use order, only those that exist."""
    out: list[int] = []
    for m in _MARK.finditer(answer):
        n = int(m.group(1))
        if 1 <= n <= n_citations and n not in out:
            out.append(n)
    return out


def citations_for(view: View, hits: list[Hit]) -> list[Citation]:
    """The hits as numbered citations with their documents' character offsets."""
    chunks = view.retriever.chunks
    out = []
    for n, h in enumerate(hits, start=1):
        document, local = view.locate(h.chunk_id)
        start = chunks[h.chunk_id].start
        out.append(Citation(n, document, local, start, start + len(h.text), h.text, float(h.score), h.found_by))
    return out


# ----------------------------------------------------------------------------- the core
def check_request(plan: RetrievalPlan, task_type: str, *, use_memory_answer: bool = False) -> str:
    """``task_type`` checked, and options that would do nothing under it refused."""
    task_type = choice(TaskType, task_type, "task_type")
    if use_memory_answer:
        if task_type != TaskType.MEMORAG.value:
            raise InputError(f"use_memory_answer applies to task_type 'memorag' only (the draft answer is a "
                             f"clue of that task); task_type {task_type!r} would ignore it.")
        if "answer" not in plan.clue_kinds():
            raise InputError(f"use_memory_answer needs a query plan that reads the memory's draft answer; plan "
                             f"{plan.name!r} reads {', '.join(plan.clue_kinds()) or 'no clues'}.")
    return task_type


def find_evidence(view: View, question: str | None, parts: Answering, *, task_type: str = "memorag",
                  top_k: int | None = None, use_memory_answer: bool = False) -> Found:
    """The clues and the plan's evidence for ``question`` over ``view`` (no generation).

    ``memorag``: the memory writes the clue kinds the plan reads, then the plan ranks the
    chunks; ``qa``: surrogate questions only; ``rag``: the question alone (plan
    ``question``, no memory); ``summarize``: the memory's key points are the queries.
    """
    plan = parts.plan
    task_type = check_request(plan, task_type, use_memory_answer=use_memory_answer)
    k = top_k or parts.top_k
    t0 = time.perf_counter()
    clues: Clues | None = None
    memory = view.memory
    if task_type == TaskType.SUMMARIZE.value:
        if memory is None:
            raise InputError("task_type 'summarize' needs a memory of the document.")
        points = memory.key_points()
        clues = Clues(question="", spans=points)
        t1 = time.perf_counter()
        hits = view.retriever.search(points or ["summary"], k, lexical=plan.params.lexical)
        found = PlanResult(hits)
        return Found("", task_type, clues, found, _timings(t0, t1, time.perf_counter()))
    question = question or ""
    if task_type == TaskType.RAG.value:
        t1 = time.perf_counter()
        found = RetrievalPlan("question", plan.params).find(view, question, None, k)
        return Found(question, task_type, None, found, _timings(t0, t1, time.perf_counter()))
    kinds = ("questions",) if task_type == TaskType.QA.value else plan.clue_kinds()
    if kinds and memory is None:
        raise InputError(f"Plan {plan.name!r} reads the memory's clues, but this view has no memory.")
    avoid = found_sentences(view, question, plan.params) if "spans" in kinds else []
    # ``avoid`` only when there is something to avoid: a clue source written before it existed still works
    clues = memory.clues(question, use_answer=use_memory_answer, kinds=kinds, **({"avoid": avoid} if avoid else {})) \
        if kinds and memory is not None else Clues(question=question)  # the plan reads no clues: no memory generation
    t1 = time.perf_counter()
    found = plan.find(view, question, clues, k)
    clues.grounded = [g.sentence.text if g.grounded else ""
                      for g in ground_clues(view.retriever, question, clues, replace(plan.params,
                                                                                     language=view.language))]
    return Found(question, task_type, clues, found, _timings(t0, t1, time.perf_counter()))


def found_sentences(view: View, question: str, params: PlanParams) -> list[str]:
    """The sentences of the question's own top ``params.avoid_found`` chunks (question-only
    hybrid), which the memory's quotes are to avoid: retrieval finds those without a memory,
    so a quote is worth something only when it points elsewhere (none when 0).

    Cut as the memory's extract cuts sentences, so that each one the extract kept is found
    verbatim in the memory's text (the retriever's own sentence splitter joins and splits
    differently, and a quarter of the found chunks' text stayed quotable with it)."""
    if params.avoid_found <= 0 or not question:
        return []
    from memorag.longmem import extract_sentences

    hits = view.retriever.search([question], params.avoid_found, lexical=params.lexical, rrf_k=params.rrf_k)
    return [s for h in hits for s in extract_sentences(h.text)]


def _timings(t0: float, t1: float, t2: float) -> dict:
    return {"clues": round(t1 - t0, 3), "retrieval": round(t2 - t1, 3), "clues_and_retrieval": round(t2 - t0, 3)}


def answer_messages(view: View, found: Found, parts: Answering, *, prompt_template: str | None = None,
                    pieces: list[str] | None = None) -> list[ChatMessage]:
    """The messages the generator gets for ``found``: its evidence in the prompt's reading
    order, rendered (or ``pieces``, already rendered from ``found`` in that order), then the
    prompt."""
    found = parts.prompt.reading_order(found)
    if pieces is None:
        pieces = parts.evidence.render(view, found.question, found.plan)
    points = found.clues.spans if found.task_type == TaskType.SUMMARIZE.value and found.clues else []
    return parts.prompt.messages(view, found.task_type, found.question, pieces, found.hits, points=points,
                                 template=prompt_template)


def generate(generator: Generator, messages: list[ChatMessage], *, max_new_tokens: int = 256,
             on_token: Callable[[str], None] | None = None) -> str:
    """The generator's answer to ``messages``, streamed piece by piece to ``on_token``."""
    pieces = []
    for piece in generator.stream_chat(messages, max_new_tokens=max_new_tokens):
        pieces.append(piece)
        if on_token:
            on_token(piece)
    return "".join(pieces).strip()


def answer_question(view: View, question: str | None, parts: Answering, *, task_type: str = "memorag",
                    top_k: int | None = None, use_memory_answer: bool = False, max_new_tokens: int = 256,
                    prompt_template: str | None = None, on_token: Callable[[str], None] | None = None,
                    on_evidence: Callable[[Clues | None, list[Hit]], None] | None = None) -> AnswerResult:
    """Answer ``question`` over ``view``: :func:`find_evidence`, :func:`answer_messages`,
    :func:`generate`. ``on_evidence(clues, hits)`` runs once the evidence is found, before
    generation starts; ``on_token`` gets each piece of the answer."""
    found = find_evidence(view, question, parts, task_type=task_type, top_k=top_k,
                          use_memory_answer=use_memory_answer)
    found = parts.prompt.reading_order(found)  # evidence, pieces and citations all in the order read
    if on_evidence:
        on_evidence(found.clues, found.hits)
    pieces = parts.evidence.render(view, found.question, found.plan)
    messages = answer_messages(view, found, parts, prompt_template=prompt_template, pieces=pieces)
    t = time.perf_counter()
    answer = generate(parts.generator, messages, max_new_tokens=max_new_tokens, on_token=on_token)
    citations = citations_for(view, found.hits)
    timings = {**found.timings, "generation": round(time.perf_counter() - t, 3)}
    return AnswerResult(answer, found.question, found.task_type, found.clues, found.hits, timings, citations,
                        messages, marks_in(answer, len(citations)) if parts.prompt.cite else [],
                        found.plan.linked, found.plan.judged, pieces, found.plan.bridge)


__all__ = ["AnswerPrompt", "AnswerResult", "Answering", "Citation", "ClueSource", "EvidenceRenderer", "Excerpts",
           "Found", "LeadAndPassages", "NoGenerator", "RetrievalPlan", "TwinJudge", "View", "WholeChunks", "answer_messages",
           "answer_question", "check_judge", "check_request", "citations_for", "evidence_renderer",
           "find_evidence", "generate", "generator_judge", "marks_in", "PackagedJudge"]
