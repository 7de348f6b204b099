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
``memorag``        the pipeline's own retrieval (its ``query_plan``)
``memorag+answer`` as memorag, plus the memory's draft answer as a clue
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memorag.memory import Clues
from memorag.pipeline import MemoRAG
from memorag.plans import CLUE_KINDS, plan_clue_kinds, run_plan
from memorag.prompts import fill, prompts_for

METHODS = ("full", "dense", "bm25", "hybrid", "hyde", "rerank", "likelihood", "clues", "grounded", "memorag", "memorag+answer")


@dataclass
class MethodResult:
    evidence: list[str] = field(default_factory=list)
    prediction: str = ""
    clues: list[str] = field(default_factory=list)
    query: str = ""


class MethodRunner:
    """Runs methods on one memorized haystack; clues are computed once per question."""

    def __init__(self, pipe: MemoRAG, top_k: int, max_new_tokens: int = 48) -> None:
        self.pipe = pipe
        self.k = top_k
        self.max_new_tokens = max_new_tokens
        self._clues: dict[str, Clues] = {}

    def _prompts(self):
        return prompts_for(self.pipe.memory.language or "en")

    def clues(self, question: str, kinds: tuple[str, ...] = CLUE_KINDS) -> Clues:
        key = f"{question}\x00{','.join(kinds)}"
        if key not in self._clues:
            self._clues[key] = self.pipe.memory.clues(question, use_answer=True, kinds=kinds)
        return self._clues[key]

    def retrieve(self, method: str, question: str, document: str) -> MethodResult:
        r = self.pipe.retriever
        if method == "full":
            return MethodResult()
        if method == "dense":
            hits = r.search([question], self.k)
        elif method == "bm25":
            hits = r.bm25_search(question, self.k)
        elif method == "hybrid":
            hits = r.search([question], self.k, lexical=True)
        elif method == "hyde":
            passage = self.pipe.generator.chat(
                [{"role": "user", "content": fill(self._prompts().hyde, question=question)}], max_new_tokens=96)
            return MethodResult([h.text for h in r.search([passage], self.k)], query=passage)
        elif method in ("rerank", "likelihood"):
            hits = run_plan(method, self.pipe.plan_context(), question, None, self.k, self.pipe.plan_params())
        elif method in ("clues", "grounded", "memorag", "memorag+answer"):
            plan = self.pipe.query_plan if method.startswith("memorag") else method
            # the memory generates only the clue kinds the plan reads, as the pipeline does
            full = self.clues(question, plan_clue_kinds(plan) if method.startswith("memorag") else CLUE_KINDS)
            clues = Clues(question, full.spans, full.questions, full.answer if method == "memorag+answer" else "")
            hits = run_plan(plan, self.pipe.plan_context(), question, clues, self.k, self.pipe.plan_params())
            return MethodResult([h.text for h in hits], clues=clues.lines())
        else:
            raise ValueError(method)
        return MethodResult([h.text for h in hits])

    def answer(self, method: str, question: str, document: str, result: MethodResult) -> str:
        p = self._prompts()
        gen = self.pipe.generator
        if method == "full":
            window = getattr(gen, "context_window", 8192)
            budget_chars = max(1000, (window - self.max_new_tokens - 200) * 3)  # ~3+ chars per token
            text = document
            if len(text) > budget_chars:  # keep both ends: LongBench's middle truncation
                half = budget_chars // 2
                text = text[:half] + "\n...\n" + text[-half:]
            user = fill(p.gen_full, context=text, question=question)
        else:
            user = fill(p.gen_qa, evidence="\n\n".join(result.evidence), question=question)
        messages = [{"role": "system", "content": p.gen_system}, {"role": "user", "content": user}]
        return gen.chat(messages, max_new_tokens=self.max_new_tokens).strip()
