"""memorag's configuration tree (:class:`MemoragConfig`), the pipeline's options as one
validated value (:class:`PipelineOptions`), and the enumerations of fixed choices.

Spec strings (which model, which index) are turned into objects by
:mod:`memorag.models.registry`; everything else a :class:`~memorag.pipeline.MemoRAG`
takes is checked here, once, when the pipeline is made, so a bad value is an
:class:`~memorag.errors.InputError` then rather than a surprise at the first question.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, get_type_hints

from memorag.errors import InputError
from memorag.plans import PlanParams


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
    PASSAGES = "passages"  # the paragraph the judge scored best in each chunk, with neighbours up to a length
    LEAD = "lead"  # the best hit's whole chunk, the judged paragraph of each other hit


# What the generator reads by default: the judge's paragraphs cut the prefill that is most of
# a question's time, the best chunk stays whole (docs/benchmarks.md, "The generator reads the
# best chunk whole"; without a judge every hit is read whole).
DEFAULT_EVIDENCE = Evidence.LEAD.value

# What a judged passage is widened to (whole paragraphs, characters) before the generator reads
# it under ``passages`` and ``lead``: enough for a line of dialogue with the lines that say who
# speaks. Chosen by the generator's tokens and answers (docs/benchmarks.md, "Narrower passages");
# ``lead:N`` / ``passages:N`` read another width.
PASSAGE_CHARS = 400
_CUTTING = (Evidence.PASSAGES.value, Evidence.LEAD.value)


def parse_evidence(spec: object) -> tuple[str, int | None]:
    """An ``evidence`` option (``"lead"``, ``"lead:600"``, ``"chunks"``...) as (rendering,
    passage width in characters: None for a rendering that does not cut to passages), or
    an InputError saying what is wrong."""
    if not isinstance(spec, str):
        raise InputError(f"evidence must be a string such as {DEFAULT_EVIDENCE!r}; got {spec!r}.")
    name, sep, width = spec.partition(":")
    kind = choice(Evidence, name.strip(), "evidence")
    if kind not in _CUTTING:
        if sep:
            raise InputError(f"evidence {kind!r} takes no width; only {' and '.join(c + ':N' for c in _CUTTING)} do; "
                             f"got {spec!r}.")
        return kind, None
    if not sep:
        return kind, PASSAGE_CHARS
    if not width.strip().isdigit() or int(width) < 1:
        raise InputError(f"the width in evidence {spec!r} must be a whole number of characters >= 1, as in "
                         f"{kind}:{PASSAGE_CHARS}.")
    return kind, int(width)


def evidence_key(spec: object) -> str:
    """``spec`` spelled out, the width included (``"lead"`` -> ``"lead:400"``): what a results
    file records, so a run is never resumed with another width."""
    kind, width = parse_evidence(spec)
    return kind if width is None else f"{kind}:{width}"


def choice(enum: type[Enum], value: object, what: str) -> str:
    """``value`` as one of ``enum``'s values, or an InputError listing them."""
    try:
        return enum(value).value
    except ValueError:
        raise InputError(f"{what} must be one of {', '.join(e.value for e in enum)}; got {value!r}.") from None


# The question's top 10 chunks plus the chunks the memory's grounded clues point at, judged
# by the generator's query likelihood (plan "recall"): the judge is what lifts recall over
# question-only hybrid retrieval, while "clues" (question + clue lines, unjudged; the default
# up to 0.3) did not beat the question alone (docs/evaluation.md, "Does retrieval beat
# question-only retrieval?" and "Where does the gain come from"; docs/results/
# hotpotqa_likelihood_1.5b_*.json). A generator that cannot score (an OpenAI-compatible
# server) leaves the first-round ranking as it is. Any plan: MemoRAG(query_plan=...).
DEFAULT_PLAN = "recall"


# The orders the generator can read the evidence in (memorag.answering.AnswerPrompt.order).
EVIDENCE_ORDERS = ("document", "rank")
# Where quoted recall draws its quotes from when the memory read an extract of a long
# document: "document" (the whole document, the default) or "memory" (only the extract it
# read). Measured in docs/evaluation.md ("Quotes constrained to the whole document").
QUOTE_FROM = ("document", "memory")


DEFAULT_JUDGE_STATES_MB = 256
"""Disk and RAM the judge's passage states of one document may take (memorag.judge_states).
At ~12 KiB a token for the packaged 0.5B judge this covers documents of roughly 20K tokens;
a longer one is memorized without them (its questions read their passages, as before)."""


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
    evidence: str = DEFAULT_EVIDENCE  # what the generator reads: whole "chunks", "excerpts", judged "passages" or "lead"
    cite: bool = False  # number the evidence in the answer prompt and ask for [n] marks
    # PlanParams fields set for the plan (memorag.plans.check_plan_params): any parameter the
    # chosen plan reads, e.g. {"likelihood_passages": 16}; checked and typed on creation.
    plan_params: Mapping[str, object] | None = None
    evidence_order: str = "document"  # the generator reads the evidence in "document" or "rank" order
    judge_states_mb: int = DEFAULT_JUDGE_STATES_MB  # memorag.judge_states: MiB memorize may keep (0: none)

    def __post_init__(self) -> None:
        if isinstance(self.ret_hit, bool) or not isinstance(self.ret_hit, int) or self.ret_hit < 1:
            raise InputError(f"ret_hit (evidence chunks per question) must be a whole number >= 1; got {self.ret_hit!r}.")
        for name in ("question_weight", "clue_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a number >= 0; got {value!r}.")
        if self.question_weight == 0:
            raise InputError("question_weight must be > 0: the question itself always takes part in retrieval.")
        if isinstance(self.judge_states_mb, bool) or not isinstance(self.judge_states_mb, int) \
                or self.judge_states_mb < 0:
            raise InputError(f"judge_states_mb must be a whole number of MiB >= 0; got {self.judge_states_mb!r}.")
        for name in ("hybrid", "overlap_indexing", "cite"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False; got {getattr(self, name)!r}.")
        if isinstance(self.follow_hops, bool) or not isinstance(self.follow_hops, int) or self.follow_hops < 0:
            raise InputError(f"follow_hops must be a whole number >= 0; got {self.follow_hops!r}.")
        parse_evidence(self.evidence)
        if self.evidence_order not in EVIDENCE_ORDERS:
            raise InputError(f"evidence_order must be one of {', '.join(EVIDENCE_ORDERS)}; got {self.evidence_order!r}.")
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


# ============================================================================ the configuration tree
# One typed tree holds every option of memorag's front-ends (MemoRAG, Collection, the HTTP
# service, `memorag eval`): each field says in one line what it does; :func:`config_from_mapping`
# builds the tree from a mapping (a TOML or JSON file: :func:`load_config`) and refuses an
# unknown key or a bad value with one InputError naming its dotted path. The front-ends take
# their options from it through the mapping methods at the end (``pipeline_kwargs``,
# ``collection_kwargs``, ``engine_kwargs``, ``eval_kwargs``; ``service.Settings.from_config``).
# tests/test_config_tree.py walks every leaf: a field added without wiring fails it.

Check = Callable[[Any], "str | None"]  # a value's problem, or None


def setting(default: Any, doc: str, check: Check | None = None) -> Any:
    """A field of the tree with its one-line doc and an optional check of its value."""
    return field(default=default, metadata={"doc": doc, "check": check})


def _at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value is None or value >= low else f"must be >= {low:g}; got {value!r}"
    return check


def _positive(value: Any) -> str | None:
    return None if value is None or value > 0 else f"must be > 0; got {value!r}"


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"
    return check


def _check_evidence(value: Any) -> str | None:
    try:
        parse_evidence(value)
    except InputError as exc:
        return str(exc).removeprefix("evidence ").rstrip(".")
    return None


def _not_blank(value: Any) -> str | None:
    return None if value is None or value.strip() else "must not be empty"


def _chunk_tokens(value: Any) -> str | None:
    from memorag.chunking import MIN_CHUNK_TOKENS

    return _at_least(MIN_CHUNK_TOKENS)(value)


def _plan_name(value: Any) -> str | None:
    from memorag.models.registry import resolve_plan

    try:
        resolve_plan(value)
    except InputError as exc:
        return str(exc)
    return None


def _routing_index(value: Any) -> str | None:
    from memorag.index.store_index import parse_spec

    try:
        parse_spec(value) if value is not None else None
    except InputError as exc:
        return str(exc)
    return None


def _port(value: Any) -> str | None:
    return None if 0 < value < 65536 else f"must be a TCP port (1-65535); got {value!r}"


@dataclass(frozen=True)
class ModelsConfig:
    """Which models memorag loads, and how (spec strings: memorag.models.registry)."""

    memory: str | None = setting(None, "memory model spec (default, a .gguf path, SPEC+lora=ADAPTER.gguf, "
                                       "openai:MODEL@URL, hf:ID, package.module:attr); None: the store's or "
                                       "save dir's, else default", _not_blank)
    generator: str | None = setting(None, "generator spec; None: qwen2.5-1.5b beside the default memory "
                                          "model, else the memory model's twin", _not_blank)
    embedder: str | None = setting(None, "embedding model spec for retrieval; None: the store's or save dir's, "
                                         "else default (all-MiniLM-L6-v2)", _not_blank)
    judge: str = setting("auto", "what judges evidence for the judging plans: auto (the packaged trained judge "
                                 "beside the packaged generator, else the generator's twin when it can judge), "
                                 "none, or a model spec (default = judge-0.5b)", _not_blank)
    judge_states_mb: int = setting(DEFAULT_JUDGE_STATES_MB,
                                   "MiB the judge's reading of one document's passages, done when it is "
                                   "memorized and saved with it, may take (memorag.judge_states); over it "
                                   "none is kept; 0: never", _at_least(0))
    n_ctx: int | None = setting(None, "the memory model's context window in tokens (None: the backend's)",
                                _at_least(1))
    flash_attn: bool | None = setting(None, "flash attention for the memory model (llama.cpp; None: off, or a save dir's own)")
    load_in_4bit: bool = setting(False, "load the memory model in 4 bits (transformers models only)")
    cache_dir: str | None = setting(None, "where models fetched from the Hugging Face hub are kept "
                                          "(memory model, embedder, generator, judge)", _not_blank)


@dataclass(frozen=True)
class MemoryConfig:
    """How the memory model reads a document."""

    compression: str = setting("extractive", "for a document longer than the memory's window: extractive, gist, "
                                             "or none (refuse it)", _one_of(*(c.value for c in Compression)))
    beacon_ratio: float | None = setting(None, "document tokens per memory token when compressing (None: just "
                                               "fit the window)", _at_least(1))
    quote_recall: bool = setting(True, "decode the memory's recalled spans as verbatim quotes of the document "
                                       "when its backend can")
    quote_from: str = setting("document", "where quotes come from when the memory read an extract of a long "
                                          "document: document (the whole of it) or memory (the extract)",
                              _one_of(*QUOTE_FROM))


@dataclass(frozen=True)
class RetrievalConfig:
    """Chunks, their index, and how many reach the generator."""

    chunk_tokens: int | None = setting(None, "chunk size in embedder tokens; None: the store's or save dir's, "
                                             "else 512", _chunk_tokens)
    top_k: int = setting(3, "evidence chunks per question", _at_least(1))
    index: str | None = setting(None, "vector index: faiss, qdrant, qdrant:DIR, qdrant:http://HOST:6333, "
                                      "package.module:attr; None: the store's or save dir's, else faiss", _not_blank)
    hybrid: bool = setting(True, "BM25 next to dense search")
    overlap_indexing: bool = setting(False, "embed the chunks while the memory model reads the document")


def _plan_params_default() -> Any:
    from memorag.plans import PlanParams

    return PlanParams()


@dataclass(frozen=True)
class PlanConfig:
    """The query plan: how the question and the memory's clues become evidence (memorag.plans)."""

    name: str = setting(DEFAULT_PLAN, "a registered query plan, or package.module:function", _plan_name)
    # the PlanParams fields the plan reads; a field set away from its default that the plan
    # does not read is refused (memorag.plans.check_plan_params)
    params: PlanParams = field(default_factory=_plan_params_default,
                               metadata={"doc": "the plan's parameters (memorag.plans.PlanParams); only those "
                                                "the plan reads may differ from their defaults", "check": None})

    def overrides(self) -> dict[str, object]:
        """The parameters set away from their defaults (what ``MemoRAG(plan_params=...)`` takes)."""
        from memorag.plans import PlanParams

        defaults = PlanParams()
        return {f.name: getattr(self.params, f.name) for f in fields(self.params)
                if getattr(self.params, f.name) != getattr(defaults, f.name)}


@dataclass(frozen=True)
class EvidenceConfig:
    """What the generator reads, and how."""

    render: str = setting(DEFAULT_EVIDENCE, "what the generator reads of each evidence chunk: chunks (whole), "
                                    "excerpts (the sentences that bear on the question), passages (the "
                                    "paragraph the judge scored best) or lead (the best chunk whole, the "
                                    "judged paragraph of the others); passages:N and lead:N widen each "
                                    f"judged paragraph to N characters (default {PASSAGE_CHARS})",
                          _check_evidence)
    cite: bool = setting(False, "number the evidence in the answer prompt and ask for [n] marks")
    order: str = setting("document", "the order the generator reads the evidence in: document (as the text "
                                     "runs) or rank (best first)", _one_of(*EVIDENCE_ORDERS))


@dataclass(frozen=True)
class CollectionConfig:
    """A store of many documents (memorag.collection)."""

    store: str = setting("memorag_store", "the store's directory", _not_blank)
    route_top: int = setting(2, "documents a question is routed to", _at_least(1))
    routing: str = setting("best", "how a document's chunks score it for routing: best or top3-sum",
                           _one_of("best", "top3-sum"))
    routing_index: str | None = setting(None, "ram, or qdrant:URL_OR_DIR (a store-wide routing index); None: "
                                              "what the store records, else ram", _routing_index)
    max_memories: int = setting(4, "loaded memories kept in RAM (least recently used out first)", _at_least(1))
    max_memory_bytes: int | None = setting(None, "bytes of loaded memories kept in RAM (None: no cap)",
                                           _at_least(1))


@dataclass(frozen=True)
class ServiceConfig:
    """`memorag serve` (memorag.service). The bearer token is no part of it: it is a secret,
    given by MEMORAG_TOKEN or --token, never written in a configuration file."""

    host: str = setting("127.0.0.1", "address to bind (anything but loopback needs a token)", _not_blank)
    port: int = setting(8000, "TCP port", _port)
    max_body_mb: float = setting(16.0, "largest request body, in MB", _positive)
    read_only: bool = setting(False, "answer only: refuse writes and run no jobs (a replica)")
    warm_up: bool = setting(True, "load the answering models at start-up rather than at the first question")
    max_queue: int = setting(32, "questions, and memorize jobs, waiting beyond which a request is refused "
                                 "(503); 0: none may wait", _at_least(0))
    job_scan_seconds: float = setting(10.0, "seconds between two looks for jobs a dead replica left", _positive)


SECTIONS = ("models", "memory", "retrieval", "plan", "evidence", "collection", "service")


@dataclass(frozen=True)
class MemoragConfig:
    """Every option of memorag, one section per part (see :data:`SECTIONS`)."""

    models: ModelsConfig = field(default_factory=ModelsConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    collection: CollectionConfig = field(default_factory=CollectionConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def __post_init__(self) -> None:
        problems = [f"{path}: {problem}" for path, problem in _tree_problems(self)]
        if problems:
            raise InputError("Bad configuration: " + "; ".join(problems) + ".")

    # ------------------------------------------------------------- the front-ends' options
    def pipeline_kwargs(self) -> dict[str, Any]:
        """``MemoRAG(**kwargs)`` for this tree (its original constructor). Models, chunk size
        and index left None are left out, so a save dir or a store supplies its own."""
        m, r = self.models, self.retrieval
        kwargs: dict[str, Any] = {
            "mem_model_name_or_path": m.memory, "ret_model_name_or_path": m.embedder,
            "gen_model_name_or_path": m.generator, "retrieval_chunk_size": r.chunk_tokens, "index": r.index,
            "ret_hit": r.top_k, "cache_dir": m.cache_dir, "beacon_ratio": self.memory.beacon_ratio,
            "load_in_4bit": m.load_in_4bit, "enable_flash_attn": m.flash_attn, "n_ctx": m.n_ctx,
            "hybrid": r.hybrid, "compression": self.memory.compression, "overlap_indexing": r.overlap_indexing,
            "query_plan": self.plan.name, "evidence": self.evidence.render, "cite": self.evidence.cite,
            "evidence_order": self.evidence.order, "judge": None if m.judge == "none" else m.judge,
            "judge_states_mb": m.judge_states_mb,
            "quote_recall": self.memory.quote_recall, "quote_from": self.memory.quote_from,
            "plan_params": self.plan.overrides() or None,
        }
        recorded = ("mem_model_name_or_path", "ret_model_name_or_path", "gen_model_name_or_path",
                    "retrieval_chunk_size", "index")
        return {k: v for k, v in kwargs.items() if not (k in recorded and v is None)}

    def collection_kwargs(self) -> dict[str, Any]:
        """``Collection(self.collection.store, **kwargs)``: the collection's own options and
        the pipeline it makes on first use."""
        c = self.collection
        return {"route_top": c.route_top, "routing": c.routing, "routing_index": c.routing_index,
                "max_memories": c.max_memories, "max_memory_bytes": c.max_memory_bytes, **self.pipeline_kwargs()}

    def engine_kwargs(self) -> dict[str, Any]:
        """``Engine(self.collection.store, **kwargs)`` (the service's and the demo's engine)."""
        kwargs = self.pipeline_kwargs()
        c = self.collection
        engine = {"mem_model": kwargs.pop("mem_model_name_or_path", "default"),
                  "ret_model": kwargs.pop("ret_model_name_or_path", "default"),
                  "gen_model": kwargs.pop("gen_model_name_or_path", None),
                  "max_queue": self.service.max_queue, "read_only": self.service.read_only,
                  "collection": {"route_top": c.route_top, "routing": c.routing, "routing_index": c.routing_index,
                                 "max_memories": c.max_memories, "max_memory_bytes": c.max_memory_bytes}}
        return {**engine, **kwargs}

    def eval_kwargs(self) -> dict[str, Any]:
        """The keywords of ``memorag.eval.runner.run`` this tree sets. Options of the pipeline
        the eval runner does not take (it records each option it takes in the results, so a
        run is reproducible) are refused when set away from their defaults; the collection
        and service sections are no part of an eval."""
        unused = [path for path, value, default in _leaves(self) if path in _NOT_IN_EVAL and value != default]
        if unused:
            raise InputError(f"memorag eval does not use {', '.join(unused)}: drop "
                             f"{'them' if len(unused) > 1 else 'it'} from the configuration.")
        m, r = self.models, self.retrieval
        kwargs: dict[str, Any] = {
            "mem_model": m.memory or "default", "ret_model": m.embedder or "default", "gen_model": m.generator,
            "judge": None if m.judge == "auto" else m.judge, "memory_window": m.n_ctx,
            "compression": self.memory.compression, "quote_recall": self.memory.quote_recall,
            "quote_from": self.memory.quote_from, "top_k": r.top_k, "chunk_tokens": r.chunk_tokens or 512, "query_plan": self.plan.name,
            "plan_params": self.plan.overrides(), "evidence": self.evidence.render,
            "evidence_order": self.evidence.order,
        }
        return kwargs


# Pipeline options `memorag eval` does not take.
_NOT_IN_EVAL = ("models.flash_attn", "models.judge_states_mb", "models.load_in_4bit", "models.cache_dir",
                "memory.beacon_ratio", "retrieval.index", "retrieval.hybrid", "retrieval.overlap_indexing", "evidence.cite")


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, value, default) of every leaf of ``tree`` (PlanParams fields included)."""
    out: list[tuple[str, Any, Any]] = []
    for f in fields(tree):
        value = getattr(tree, f.name)
        path = f"{prefix}{f.name}"
        if is_dataclass(value):
            out.extend(_leaves(value, path + "."))
        else:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            out.append((path, value, default))
    return out


def _tree_problems(config: MemoragConfig) -> list[tuple[str, str]]:
    """Every problem of ``config`` as (dotted path, what is wrong): the fields' own checks,
    then what only a combination makes wrong."""
    problems: list[tuple[str, str]] = []
    for section_name in SECTIONS:
        section = getattr(config, section_name)
        for f in fields(section):
            check = f.metadata.get("check")
            if check is not None:
                problem = check(getattr(section, f.name))
                if problem:
                    problems.append((f"{section_name}.{f.name}", problem))
    if config.memory.beacon_ratio is not None and config.memory.compression == Compression.NONE.value:
        problems.append(("memory.beacon_ratio", "sets how far a long document is compressed, and "
                                                "memory.compression is 'none': drop one of them"))
    if not any(path == "plan.name" for path, _ in problems):
        problems.extend(_plan_param_problems(config.plan))
    return problems


def _plan_param_problems(plan: PlanConfig) -> list[tuple[str, str]]:
    from memorag.plans import check_plan_params

    problems: list[tuple[str, str]] = []
    for key, value in plan.overrides().items():
        if key == "lexical":
            problems.append(("plan.params.lexical", "is set by retrieval.hybrid"))
            continue
        try:
            check_plan_params(plan.name, {key: value})
        except InputError as exc:
            problems.append((f"plan.params.{key}", str(exc).removeprefix("Bad plan parameter(s): ").rstrip(".")))
    return problems


def config_from_mapping(data: Mapping[str, Any]) -> MemoragConfig:
    """The tree from nested mappings (``{"retrieval": {"top_k": 5}, "plan": {"params":
    {"rerank_depth": 20}}}``); a missing key keeps its default. An unknown key or a value of
    the wrong type or range is refused with one InputError naming every bad dotted path."""
    problems: list[str] = []
    built = _build(MemoragConfig, data, "", problems)
    if problems:
        raise InputError("Bad configuration: " + "; ".join(problems) + ".")
    return built


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    where = prefix.rstrip(".") or "the configuration"
    if not isinstance(data, Mapping):
        problems.append(f"{where}: must be a table of settings; got {data!r}")
        return cls()
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in known:
            problems.append(f"{path}: unknown key (choose from {', '.join(known)})")
            continue
        kind = hints[key]
        if isinstance(kind, type) and is_dataclass(kind):
            values[key] = _build(kind, value, path + ".", problems)
            continue
        typed = _typed(value, kind)
        if typed is _BAD:
            problems.append(f"{path}: must be {_type_name(kind)}; got {value!r}")
        else:
            values[key] = typed
    if problems:
        return cls()
    try:
        return cls(**values)
    except InputError as exc:  # the root's checks, already naming their dotted paths
        problems.append(str(exc).removeprefix("Bad configuration: ").rstrip("."))
        return cls()


_BAD = object()


def _typed(value: Any, kind: Any) -> Any:
    """``value`` as type ``kind`` (an int where a float is expected becomes a float), or _BAD."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None:
        return None if type(None) in options else _BAD
    for option in options:
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    return _BAD


def _type_name(kind: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             type(None): "none (null)"}
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    return " or ".join(names.get(o, getattr(o, "__name__", str(o))) for o in options)


def load_config(path: str | Path) -> MemoragConfig:
    """The tree from a TOML (``.toml``) or JSON (``.json``) file; see :func:`config_from_mapping`.
    In TOML, write None by leaving the key out (TOML has no null)."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in (".toml", ".json"):
        raise InputError(f"{p}: a configuration file is .toml or .json.")
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the configuration file {p}: {exc}") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"{p} is not valid JSON: {exc}") from None
        return config_from_mapping(data)
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # Python 3.10: the same parser as a package, if installed
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise InputError(f"{p}: reading TOML needs Python 3.11 or `pip install tomli`; or write the "
                             "configuration as JSON.") from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p} is not valid TOML: {exc}") from None
    return config_from_mapping(data)


def with_values(config: MemoragConfig, values: Mapping[str, Any]) -> MemoragConfig:
    """``config`` with the leaves named by dotted path set (``{"retrieval.top_k": 5}``):
    how the command line's flags go over a configuration file. Checked as a whole."""
    data = config_to_mapping(config)
    for path, value in values.items():
        *sections, key = path.split(".")
        node = data
        for name in sections:
            node = node.setdefault(name, {})
        node[key] = value
    return config_from_mapping(data)


def config_to_mapping(config: Any) -> dict[str, Any]:
    """The tree as nested dicts (the inverse of :func:`config_from_mapping`); plan parameters
    only where set, so the mapping reads back under any plan."""
    out: dict[str, Any] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "params" and isinstance(config, PlanConfig):
            out[f.name] = config.overrides()
        elif is_dataclass(value):
            out[f.name] = config_to_mapping(value)
        else:
            out[f.name] = value
    return out


def field_docs(cls: type = MemoragConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted path, type, default, doc) of every leaf of the tree but the plan's parameters
    (documented on :class:`memorag.plans.PlanParams`): for docs and ``--help``."""
    out: list[tuple[str, str, Any, str]] = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and is_dataclass(kind) and f.name != "params":
            out.extend(field_docs(kind, f"{prefix}{f.name}."))
        else:
            default = f.default if f.default is not MISSING else "PlanParams()"
            out.append((f"{prefix}{f.name}", _type_name(kind), default, f.metadata.get("doc", "")))
    return out
