"""The pipeline's options as one validated value, and the enumerations of fixed choices.

Spec strings (which model, which index) are turned into objects by
:mod:`memorag.models.registry`; everything else a :class:`~memorag.pipeline.MemoRAG`
takes is checked here, once, when the pipeline is made, so a bad value is an
:class:`~memorag.errors.InputError` then rather than a surprise at the first question.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from memorag.errors import InputError


class Compression(str, Enum):
    """How a document longer than the memory model's window becomes a memory (memorag.longmem)."""

    EXTRACTIVE = "extractive"
    GIST = "gist"
    NONE = "none"  # refuse documents that do not fit


class TaskType(str, Enum):
    """What :meth:`MemoRAG.ask` does with the memory."""

    MEMORAG = "memorag"  # recalled spans + surrogate questions
    QA = "qa"  # surrogate questions only
    RAG = "rag"  # the question alone (plain RAG)
    SUMMARIZE = "summarize"  # the memory's key points


class Evidence(str, Enum):
    """What the generator reads of each evidence chunk."""

    CHUNKS = "chunks"  # the whole chunk
    EXCERPTS = "excerpts"  # plans.excerpt_evidence: the sentences that bear on the question, with neighbours


def choice(enum: type[Enum], value: object, what: str) -> str:
    """``value`` as one of ``enum``'s values, or an InputError listing them."""
    try:
        return enum(value).value
    except ValueError:
        raise InputError(f"{what} must be one of {', '.join(e.value for e in enum)}; got {value!r}.") from None


# The question's top 10 chunks plus the chunks the memory's grounded clues point at, judged
# by the generator's query likelihood (plan "recall"). On 80 HotpotQA questions (three
# seeds, docs/evaluation.md) the judge lifted recall@5 from 0.744 (question-only hybrid) to
# 0.831; "clues" (question + clue lines, the default up to 0.3) scored 0.725 against 0.750
# on the first 40. A generator that cannot score (an OpenAI-compatible server) leaves the
# first-round ranking as it is. Any plan: MemoRAG(query_plan=...).
DEFAULT_PLAN = "recall"


@dataclass(frozen=True)
class PipelineOptions:
    """What :class:`~memorag.pipeline.MemoRAG` does with its parts (all checked on creation)."""

    ret_hit: int = 3  # evidence chunks per question
    question_weight: float = 2.0
    clue_weight: float = 1.0
    hybrid: bool = True  # BM25 next to dense search
    overlap_indexing: bool = False
    query_plan: str = DEFAULT_PLAN  # a registered plan, or package.module:function
    follow_hops: int = 0  # PlanParams.follow_hops: the link walk, off by default (see there)
    evidence: str = "chunks"  # what the generator reads: whole "chunks" or "excerpts" of them
    cite: bool = False  # number the evidence in the answer prompt and ask for [n] marks
    # PlanParams fields set for the plan (memorag.plans.check_plan_params): any parameter the
    # chosen plan reads, e.g. {"likelihood_passages": 16}; checked and typed on creation.
    plan_params: Mapping[str, object] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ret_hit, bool) or not isinstance(self.ret_hit, int) or self.ret_hit < 1:
            raise InputError(f"ret_hit (evidence chunks per question) must be a whole number >= 1; got {self.ret_hit!r}.")
        for name in ("question_weight", "clue_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a number >= 0; got {value!r}.")
        if self.question_weight == 0:
            raise InputError("question_weight must be > 0: the question itself always takes part in retrieval.")
        for name in ("hybrid", "overlap_indexing", "cite"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False; got {getattr(self, name)!r}.")
        if isinstance(self.follow_hops, bool) or not isinstance(self.follow_hops, int) or self.follow_hops < 0:
            raise InputError(f"follow_hops must be a whole number >= 0; got {self.follow_hops!r}.")
        choice(Evidence, self.evidence, "evidence")
        from memorag.models.registry import resolve_plan
        from memorag.plans import PLAN_OPTIONS, check_plan_params, plan_options

        resolve_plan(self.query_plan)
        # An option the chosen plan never reads would be dropped silently: say so instead.
        defaults = PipelineOptions.__dataclass_fields__
        ignored = [name for name in PLAN_OPTIONS
                   if getattr(self, name) != defaults[name].default and name not in plan_options(self.query_plan)]
        if ignored:
            readers = ", ".join(sorted(n for n in _plan_names() if set(ignored) <= set(plan_options(n))))
            raise InputError(f"Query plan {self.query_plan!r} does not read {' or '.join(ignored)}; drop "
                             f"{'them' if len(ignored) > 1 else 'it'} or choose a plan that does ({readers}).")
        if self.plan_params is not None:
            if not isinstance(self.plan_params, Mapping):
                raise InputError(f"plan_params must be a dict of PlanParams fields; got {self.plan_params!r}.")
            # one setting, one place: MemoRAG(question_weight=3, plan_params={"question_weight": 2}) is refused
            twice = [name for name in (*PLAN_OPTIONS, "lexical") if name in self.plan_params
                     and getattr(self, _OPTION_OF.get(name, name)) != defaults[_OPTION_OF.get(name, name)].default]
            if twice:
                raise InputError(f"{', '.join(twice)} given both as an option and in plan_params: give "
                                 f"{'each' if len(twice) > 1 else 'it'} once.")
            object.__setattr__(self, "plan_params", check_plan_params(self.query_plan, self.plan_params))

    def plan_overrides(self) -> dict[str, object]:
        """The checked :attr:`plan_params` (empty when none are set)."""
        return dict(self.plan_params or {})


# The PlanParams field a pipeline option sets, where their names differ.
_OPTION_OF = {"lexical": "hybrid"}


def _plan_names() -> list[str]:
    from memorag.plans import plan_names

    return plan_names()
