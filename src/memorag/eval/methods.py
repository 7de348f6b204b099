"""Evaluated methods. All share one generator and one evidence budget (k chunks).

``full``           the generator reads as much of the document as fits its window
``dense``          the question alone, dense search
``bm25``           the question alone, BM25
``hybrid``         the question alone, dense + BM25 fused (memorag's retrieval without memory)
``hyde``           the generator writes a hypothetical answer passage; it is the dense query
``rerank``         ``hybrid``, then the judge reorders the top candidates (no memory):
                   the control that shows what the memory adds to judging
``likelihood``     ``hybrid``, then the judge scores the top candidates' paragraphs by query
                   likelihood (no memory): the control for plan ``recall``
``clues``          question + every clue line as a query (the pipeline's plan up to 0.2)
``grounded``       question + only the clues grounded in real sentences (no judge)
``memorag``        exactly ``MemoRAG.ask`` (its query plan, judge, evidence and prompt)
``memorag+answer`` as memorag, plus the memory's draft answer as a clue (``use_memory_answer``)

Every method but ``full`` is the answering core (memorag.answering) with another plan or
retrieval: the same evidence renderer, answer prompt and generator as ``ask``, so a method's
score differs from ``memorag``'s only by how the evidence was found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from memorag.answering import Answering, Found, RetrievalPlan, View, answer_messages, find_evidence, generate
from memorag.llm.base import ChatMessage
from memorag.memory import Clues, Memory
from memorag.pipeline import MemoRAG
from memorag.plans import CLUE_KINDS, PlanResult, plan_clue_kinds
from memorag.prompts import fill, prompts_for

METHODS = ("full", "dense", "bm25", "hybrid", "hyde", "rerank", "likelihood", "clues", "grounded", "memorag", "memorag+answer")
# Methods that are a query plan of the answering core: (plan, whether the memory writes clues).
# None as the plan: the pipeline's own query_plan. The other methods never read the memory.
PLAN_METHODS: dict[str, tuple[str | None, bool]] = {
    "hybrid": ("question", False), "rerank": ("rerank", False), "likelihood": ("likelihood", False),
    "clues": ("clues", True), "grounded": ("grounded", True), "memorag": (None, True), "memorag+answer": (None, True),
}


def method_plans(methods: list[str], pipeline_plan: str) -> list[str]:
    """The query plans ``methods`` run (``pipeline_plan`` for ``memorag`` and ``memorag+answer``)."""
    return list(dict.fromkeys(PLAN_METHODS[m][0] or pipeline_plan for m in methods if m in PLAN_METHODS))


def memory_clue_kinds(method: str, pipeline_plan: str) -> tuple[str, ...]:
    """The clue kinds ``method`` asks the memory for (``()``: it never reads the memory), from
    its plan's declared clue kinds (memorag.plans.register_plan). The draft answer is asked
    for only by ``memorag+answer`` (:meth:`CachedClues.clues` skips it otherwise)."""
    plan, with_memory = PLAN_METHODS.get(method, (None, False))
    if not with_memory:
        return ()
    return tuple(k for k in plan_clue_kinds(plan or pipeline_plan) if k != "answer" or method == "memorag+answer")


def methods_read_memory(methods: list[str], pipeline_plan: str) -> bool:
    """Whether any of ``methods`` asks the memory for clues, and so needs the haystack read
    into the memory model (otherwise the chunks and the index are all they search)."""
    return any(memory_clue_kinds(m, pipeline_plan) for m in methods)


@dataclass
class MethodResult:
    evidence: list[str] = field(default_factory=list)  # the evidence chunks' texts, best first
    prediction: str = ""
    clues: list[str] = field(default_factory=list)
    query: str = ""
    found: Found | None = None  # the core's evidence (None for "full")
    messages: list[ChatMessage] = field(default_factory=list)  # what the generator was sent (after answer())


class CachedClues:
    """A memory's clues cached per question and clue kind: the methods of one question
    read the same clues, and each kind is a generation on the memory."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self._cache: dict[tuple[str, str, tuple[str, ...]], Clues] = {}

    @property
    def can_quote(self) -> bool:
        return self.memory.can_quote

    def clues(self, query: str, *, use_answer: bool = False, kinds: tuple[str, ...] = CLUE_KINDS,
              avoid: Sequence[str] = ()) -> Clues:
        out = Clues(question=query)
        for kind in kinds:
            if kind == "answer" and not use_answer:
                continue
            # spans quoted away from other text are other spans; the other kinds ignore avoid
            key = (query, kind, tuple(avoid) if kind == "spans" else ())
            if key not in self._cache:
                self._cache[key] = self.memory.clues(query, use_answer=kind == "answer", kinds=(kind,), avoid=avoid)
            got = self._cache[key]
            out.spans, out.questions = out.spans or got.spans, out.questions or got.questions
            out.answer = out.answer or got.answer
            out.seconds += got.seconds
        return out

    def remember(self, clues: Clues) -> None:
        """Take ``clues`` as the memory's clues of ``clues.question``, every kind (an empty
        kind stays empty): a study can give the methods clues made another way."""
        for kind in CLUE_KINDS:
            self._cache[(clues.question, kind, ())] = clues

    def key_points(self) -> list[str]:
        return self.memory.key_points()


class MethodRunner:
    """Runs methods on one memorized haystack; clues are computed once per question.

    ``plan_params``: :class:`~memorag.plans.PlanParams` fields set for every method's plan,
    over the pipeline's own (checked against the methods' plans by the eval runner with
    :func:`memorag.plans.check_plan_params`; a plan that does not read one is unchanged by it)."""

    def __init__(self, pipe: MemoRAG, top_k: int, max_new_tokens: int = 48,
                 plan_params: Mapping[str, object] | None = None) -> None:
        self.pipe = pipe
        self.k = top_k
        self.max_new_tokens = max_new_tokens
        self.memory = CachedClues(pipe.memory)
        self.plan_params = dict(plan_params or {})

    def view(self, with_memory: bool = True) -> View:
        # The language is the chunks' (the same as the memory's when both were built): a
        # haystack indexed without the memory pass has no memory state to say it.
        state = self.pipe.retriever.state
        language = state.language if state is not None else self.pipe.view().language
        return replace(self.pipe.view(), memory=self.memory if with_memory else None, language=language)

    def parts(self, method: str) -> Answering:
        """The pipeline's answering parts, with the method's plan."""
        parts = self.pipe.answering()
        plan, _ = PLAN_METHODS.get(method, (None, False))
        params = replace(parts.plan.params, **self.plan_params)
        parts = replace(parts, plan=RetrievalPlan(plan or parts.plan.name, params, parts.plan.judge))
        return replace(parts, top_k=self.k)

    def retrieve(self, method: str, question: str, document: str) -> MethodResult:
        r = self.pipe.retriever
        if method == "full":
            return MethodResult()
        query = ""
        if method in PLAN_METHODS:
            found = find_evidence(self.view(PLAN_METHODS[method][1]), question, self.parts(method),
                                  use_memory_answer=method == "memorag+answer")
        elif method in ("dense", "bm25", "hyde"):
            if method == "hyde":
                query = self.pipe.generator.chat(
                    [{"role": "user", "content": fill(prompts_for(self.view().language).hyde, question=question)}],
                    max_new_tokens=96)
                hits = r.search([query], self.k)
            else:
                hits = r.search([question], self.k) if method == "dense" else r.bm25_search(question, self.k)
            found = Found(question, "memorag", None, PlanResult(hits))
        else:
            raise ValueError(method)
        return MethodResult([h.text for h in found.hits], clues=found.clues.lines() if found.clues else [],
                            query=query, found=found)

    def answer(self, method: str, question: str, document: str, result: MethodResult) -> str:
        gen = self.pipe.generator
        if result.found is not None:
            messages = answer_messages(self.view(), result.found, self.parts(method))
        else:  # "full"
            p = prompts_for(self.view().language)
            window = getattr(gen, "context_window", 8192)
            budget_chars = max(1000, (window - self.max_new_tokens - 200) * 3)  # ~3+ chars per token
            text = document
            if len(text) > budget_chars:  # keep both ends: LongBench's middle truncation
                half = budget_chars // 2
                text = text[:half] + "\n...\n" + text[-half:]
            messages = [{"role": "system", "content": p.gen_system},
                        {"role": "user", "content": fill(p.gen_full, context=text, question=question)}]
        result.messages = messages
        return generate(gen, messages, max_new_tokens=self.max_new_tokens)
