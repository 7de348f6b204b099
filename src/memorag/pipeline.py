"""The MemoRAG pipeline.

    memorize = chunk + index + build memory      (once per document, saved to a dir)
    ask      = clues + retrieve + generate       (per question, no re-reading)
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from memorag.chunking import check_chunk_tokens
from memorag.errors import InputError, NotMemorizedError, StateError
from memorag.llm.base import ChatMessage, Generator, StageProgressFn
from memorag.memory import Clues, Memory, check_same_model
from memorag.models.registry import (
    DEFAULT_GENERATOR,
    DEFAULT_GENERATOR_CTX,
    is_default,
    load_embedder,
    load_llm,
    make_index_factory,
)
from memorag.plans import PlanContext, PlanParams, get_plan, ground_clues, run_plan
from memorag.prompts import prompts_for
from memorag.retrieval import Hit, Retriever
from memorag.store import dir_size, read_manifest, write_save_dir
from memorag.text import check_text

TASK_TYPES = ("memorag", "qa", "rag", "summarize")
# Question + clue lines sharing one weight (docs/evaluation.md, 40 HotpotQA questions:
# 0.725 recall@5). "grounded" (only clues found in the document, as direct hits) scored
# 0.750 but broke the demo's own question with a true, unhelpful clue; the judging plans
# ("rerank", "memorag") scored 0.51-0.73. Any of them: MemoRAG(query_plan=...).
DEFAULT_PLAN = "clues"


@dataclass
class Answer:
    answer: str
    question: str
    task_type: str
    clues: Clues | None = None
    evidence: list[Hit] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"question": self.question, "task_type": self.task_type, "answer": self.answer,
                "clues": self.clues.to_json() if self.clues else None,
                "evidence": [{"chunk_id": h.chunk_id, "score": round(h.score, 5), "text": h.text}
                             for h in self.evidence],
                "timings": self.timings}


def _fill(template: str, **values: str) -> str:
    # str.format would choke on braces inside user templates; replace only our names.
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


class MemoRAG:
    """Memory-augmented RAG over one long document.

    The constructor keeps the original research code's argument names. ``beacon_ratio`` is
    passed to the memory (compression for documents beyond the model's window).
    """

    def __init__(self, mem_model_name_or_path: str | None = "default",
                 ret_model_name_or_path: str | None = "default",
                 gen_model_name_or_path: str | None = None, customized_gen_model: Generator | None = None,
                 ret_hit: int = 3, retrieval_chunk_size: int = 512, cache_dir: str | None = None,
                 access_token: str | None = None, beacon_ratio: float | None = None,
                 load_in_4bit: bool = False, enable_flash_attn: bool | None = None, *,
                 index: str = "faiss", n_ctx: int | None = None, question_weight: float = 2.0, clue_weight: float = 1.0,
                 hybrid: bool = True, compression: str = "extractive", overlap_indexing: bool = False,
                 query_plan: str = DEFAULT_PLAN) -> None:
        check_chunk_tokens(retrieval_chunk_size)  # before any model is loaded
        self.memory = Memory(mem_model_name_or_path, cache_dir, access_token, beacon_ratio, load_in_4bit,
                             enable_flash_attn, n_ctx=n_ctx, compression=compression)
        self.embedder = load_embedder(ret_model_name_or_path, cache_dir=cache_dir, access_token=access_token)
        self.index_spec = index
        self.retriever = Retriever(self.embedder, make_index_factory(index), chunk_tokens=retrieval_chunk_size)
        if customized_gen_model is not None:
            self.generator: Generator = as_generator(customized_gen_model)
        elif gen_model_name_or_path:
            self.generator = load_llm(gen_model_name_or_path, cache_dir=cache_dir, access_token=access_token)
        elif is_default(mem_model_name_or_path):
            # The default memory model reads; a larger packaged model answers (registry.DEFAULT_GENERATOR).
            self.generator = load_llm(DEFAULT_GENERATOR, n_ctx=DEFAULT_GENERATOR_CTX)
        else:  # the original API: no generator given = the memory model answers too
            twin = getattr(self.memory.llm, "twin", None)
            self.generator = twin() if twin else self.memory.llm
        self.ret_hit = ret_hit
        get_plan(query_plan)  # an unknown plan is refused here, not at the first question
        self.query_plan = query_plan
        self.question_weight = question_weight
        self.clue_weight = clue_weight
        self.hybrid = hybrid
        # Embed chunks in a thread while the memory model reads (both run native code that
        # releases the GIL). Off by default: on 2 local cores it saved 3% (docs/benchmarks.md);
        # it pays off when the memory model runs on a server or a GPU.
        self.overlap_indexing = overlap_indexing
        self.stats: dict = {}

    # ------------------------------------------------------------ memorize
    def memorize(self, context: str, save_dir: str | Path | None = None, print_stats: bool = False,
                 *, progress: bool | StageProgressFn = True) -> dict:
        """Chunk and index ``context``, build the memory over it, and optionally save all three.

        ``progress``: True draws tqdm bars; a callable gets ``(stage, done, total)`` instead
        (stages ``index``, ``compress``, ``memory``; see :data:`memorag.llm.base.StageProgressFn`).
        """
        check_text(context)
        t0 = time.perf_counter()
        if self.overlap_indexing:
            retr, index_seconds, mem = self._memorize_overlapped(context, progress)
        else:
            retr, index_seconds = self._build_index(context, progress)
            mem = self.memory.memorize(context, progress=progress)
        self.stats = {"chars": len(context), **mem, "chunks": retr["chunks"], "passages": retr["passages"],
                      "index_seconds": round(index_seconds, 3), "overlap_indexing": self.overlap_indexing}
        if save_dir is not None:
            self.save(save_dir)
        self.stats["total_seconds"] = round(time.perf_counter() - t0, 3)
        if print_stats:
            print(format_stats(self.stats), file=sys.stderr)
        return self.stats

    def _build_index(self, context: str, progress: bool | StageProgressFn,
                     stop: threading.Event | None = None) -> tuple[dict, float]:
        t = time.perf_counter()
        bar = _bar("index: embedding", "passage") if progress and not callable(progress) else None

        def update(done: int, total: int) -> None:
            if stop is not None and stop.is_set():  # the memory pass failed: stop embedding
                raise InterruptedError("indexing stopped")
            if bar:
                bar(done, total)
            elif callable(progress):
                progress("index", done, total)

        try:
            retr = self.retriever.build(context, progress=update)
        finally:
            if bar:
                bar.close()
        return retr, time.perf_counter() - t

    def _memorize_overlapped(self, context: str, progress: bool | StageProgressFn) -> tuple[dict, float, dict]:
        from concurrent.futures import ThreadPoolExecutor

        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="memorag-index") as pool:
            future = pool.submit(self._build_index, context, progress, stop)
            try:
                mem = self.memory.memorize(context, progress=progress)
            except BaseException:
                stop.set()  # e.g. Ctrl-C: do not wait for the whole embedding pass
                raise
            retr, index_seconds = future.result()
        return retr, index_seconds, mem

    def save(self, save_dir: str | Path) -> dict:
        if not self.memory.memorized:
            raise NotMemorizedError("Nothing to save: memorize a document first.")
        t = time.perf_counter()

        def fill(tmp: Path) -> dict:
            memory_info = self.memory.save(tmp / "memory")
            retrieval_info = self.retriever.save(tmp / "retrieval")
            return {"models": {"memory": self.memory.llm.describe(), "embedder": self.embedder.describe()},
                    "index": self.index_spec, "language": self.memory.language,
                    "context_sha256": self.memory.context_sha256,
                    "memory_tokens": memory_info["state"].get("n_tokens"),
                    "chunks": retrieval_info["n_chunks"], "retrieval": retrieval_info}

        manifest = write_save_dir(save_dir, fill)
        self.stats["save_seconds"] = round(time.perf_counter() - t, 3)
        self.stats["disk_bytes"] = dir_size(Path(save_dir))
        return manifest

    def load(self, save_dir: str | Path, print_stats: bool = False) -> dict:
        """Restore memory, chunks and index from a save dir written by :meth:`memorize`.

        ``print_stats`` (as in the original API) prints the load stats to stderr.
        """
        t = time.perf_counter()
        manifest = read_manifest(save_dir)
        d = Path(save_dir)
        check_same_model(manifest["models"]["embedder"], self.embedder.describe(), what="embedding model")
        self.memory.load(d / "memory")
        self.retriever.load(d / "retrieval", manifest["retrieval"])
        self.stats = {"load_seconds": round(time.perf_counter() - t, 4), "chunks": manifest["chunks"],
                      "memory_tokens": manifest["memory_tokens"], "disk_bytes": dir_size(d)}
        if print_stats:
            print(format_stats(self.stats), file=sys.stderr)
        return manifest

    @property
    def mem_model(self) -> Memory:
        """The original API's name for :attr:`memory` (``pipe.mem_model.recall(query)``)."""
        return self.memory

    @classmethod
    def from_saved(cls, save_dir: str | Path, **kwargs) -> MemoRAG:
        """Build a pipeline with the models a save dir was made with, then load it."""
        manifest = read_manifest(save_dir, verify=False)
        models = manifest.get("models", {})
        kwargs.setdefault("mem_model_name_or_path", models.get("memory", {}).get("spec", "default"))
        kwargs.setdefault("ret_model_name_or_path", models.get("embedder", {}).get("spec", "default"))
        kwargs.setdefault("retrieval_chunk_size", manifest.get("retrieval", {}).get("chunk_tokens", 512))
        kwargs.setdefault("index", manifest.get("index", "faiss"))
        pipe = cls(**kwargs)
        pipe.load(save_dir)
        return pipe

    # ----------------------------------------------------------------- ask
    def ask(self, query: str | None, *, task_type: str = "memorag", max_new_tokens: int = 256,
            prompt_template: str | None = None, use_memory_answer: bool = False, top_k: int | None = None,
            on_token: Callable[[str], None] | None = None,
            on_evidence: Callable[[Clues | None, list[Hit]], None] | None = None) -> Answer:
        """Answer ``query``. ``on_token`` gets each piece of the answer as it is generated;
        ``on_evidence`` gets the clues and evidence once retrieval is done, before generation
        starts (the HTTP service and the demo show them while the answer streams)."""
        if task_type not in TASK_TYPES:
            raise InputError(f"task_type must be one of {', '.join(TASK_TYPES)}; got {task_type!r}.")
        if not self.memory.memorized:
            raise NotMemorizedError("No document is memorized: call memorize(context) or load(save_dir) first.")
        if task_type != "summarize":
            query = check_text(query, what="query")
        k = top_k or self.ret_hit
        p = prompts_for(self.memory.language or "en")
        t0 = time.perf_counter()
        clues = None
        if task_type == "summarize":
            points = self.memory.key_points()
            clues = Clues(question="", spans=points)
            hits = self.retriever.search(points or ["summary"], k, lexical=self.hybrid)
        elif task_type == "rag":  # plain RAG baseline: the question alone
            hits = self.retrieve(query, None, k)
        else:
            # memorag: recalled spans + surrogate questions (+ draft answer); qa: surrogate questions only.
            if task_type == "memorag":
                clues = self.memory.clues(query, use_answer=use_memory_answer)
            else:
                clues = Clues(question=query, questions=self.memory.surrogate_questions(query))
            hits = self.retrieve(query, clues, k)
            clues.grounded = [g.sentence.text if g.grounded else ""
                              for g in ground_clues(self.retriever, query, clues, self.plan_params())]
        t1 = time.perf_counter()
        if on_evidence:
            on_evidence(clues, hits)
        evidence = "\n\n".join(h.text for h in hits)
        if prompt_template:
            user = _fill(prompt_template, context=evidence, evidence=evidence, input=query or "", question=query or "")
        elif task_type == "summarize":
            user = _fill(p.gen_summary, evidence=evidence, points="\n".join(clues.spans if clues else []))
        else:
            user = _fill(p.gen_memorag, evidence=evidence, question=query)
        messages: list[ChatMessage] = [{"role": "system", "content": p.gen_system}, {"role": "user", "content": user}]
        pieces = []
        for piece in self.generator.stream_chat(messages, max_new_tokens=max_new_tokens):
            pieces.append(piece)
            if on_token:
                on_token(piece)
        t2 = time.perf_counter()
        return Answer("".join(pieces).strip(), query or "", task_type, clues, hits,
                      {"clues_and_retrieval": round(t1 - t0, 3), "generation": round(t2 - t1, 3)})

    def retrieve(self, query: str, clues: Clues | None, k: int) -> list[Hit]:
        """Evidence for ``query`` by the pipeline's query plan (``query_plan``, see memorag.plans).

        With the default plan the question always stays in the fusion, and the clue lines
        share one total weight (``clue_weight``) however many there are: small memory models
        invent facts, so bad clues can add candidates but cannot outvote the question's own
        hits. Without clues (task ``rag``) the question alone is searched.
        """
        plan = self.query_plan if clues is not None else "question"
        return run_plan(plan, self.plan_context(), query, clues, k, self.plan_params())

    def plan_params(self) -> PlanParams:
        return PlanParams(question_weight=self.question_weight, clue_weight=self.clue_weight, lexical=self.hybrid,
                          language=self.memory.language or "en")

    def plan_context(self) -> PlanContext:
        # Judging plans (rerank, memorag) use the generator's own context when it is a local
        # llama.cpp model; with other generators they fall back to their first-round ranking.
        judge = self.generator if hasattr(self.generator, "yes_probability") else None
        return PlanContext(self.retriever, judge)

    def _retrieve(self, retrieval_query: list[str] | str) -> list[str]:
        """Original-API compatibility: the texts of the top ``ret_hit`` evidence chunks for
        one query or a list of queries (e.g. clue lines), best first.

        The queries are searched as :meth:`ask` searches (dense, plus BM25 when ``hybrid``),
        with equal weights, and fused into one ranking. Use :meth:`retrieve` for the
        :class:`Hit` objects with chunk ids and scores.
        """
        if not self.retriever.chunks:
            raise NotMemorizedError("No document is indexed: call memorize(context) or load(save_dir) first.")
        queries = [retrieval_query] if isinstance(retrieval_query, str) else list(retrieval_query)
        hits = self.retriever.search(queries, self.ret_hit, lexical=self.hybrid)
        return [h.text for h in hits]

    def __call__(self, context: str | None = None, query: str | None = None, task_type: str = "memorag",
                 prompt_template: str | None = None, max_new_tokens: int = 256, reset_each_call: bool = False,
                 use_memory_answer: bool = False) -> str:
        """Original-API entry point: memorize ``context`` if it is new, then answer ``query``."""
        if context is not None:
            check_text(context)
            sha = hashlib.sha256(context.encode("utf-8")).hexdigest()
            if reset_each_call or sha != self.memory.context_sha256:
                self.memorize(context, progress=False)
        elif not self.memory.memorized:
            raise NotMemorizedError("Give context=... or load(save_dir) before asking.")
        return self.ask(query, task_type=task_type, max_new_tokens=max_new_tokens,
                        prompt_template=prompt_template, use_memory_answer=use_memory_answer).answer


class _PromptGenerator:
    """Adapts an object with only ``generate(prompt) -> str`` (the original API's custom
    generators) to the chat/stream interface by flattening the messages into one prompt."""

    def __init__(self, model) -> None:
        self.model = model

    def chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        prompt = "\n\n".join(m["content"] for m in messages)
        try:
            return str(self.model.generate(prompt, max_new_tokens=max_new_tokens))
        except TypeError:  # generate(prompt) without keyword arguments
            return str(self.model.generate(prompt))

    def stream_chat(self, messages: list[ChatMessage], **kwargs):
        yield self.chat(messages, **kwargs)


def as_generator(model) -> Generator:
    if hasattr(model, "stream_chat") and hasattr(model, "chat"):
        return model
    if hasattr(model, "generate"):
        return _PromptGenerator(model)
    raise InputError("customized_gen_model needs chat()/stream_chat() or generate(prompt) methods.")


def _bar(desc: str, unit: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=0, desc=desc, unit=unit, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    update.close = bar.close  # type: ignore[attr-defined]
    return update


def format_stats(stats: dict) -> str:
    rows = [
        ("characters", stats.get("chars")), ("memory tokens", stats.get("memory_tokens")),
        ("chunks", stats.get("chunks")), ("passages embedded", stats.get("passages")),
        ("index seconds", stats.get("index_seconds")), ("memory seconds", stats.get("memory_seconds")),
        ("memory tokens/s", stats.get("memory_tokens_per_second")), ("save seconds", stats.get("save_seconds")),
        ("load seconds", stats.get("load_seconds")),
        ("size on disk (MB)", round(stats["disk_bytes"] / 1e6, 1) if stats.get("disk_bytes") else None),
        ("total seconds", stats.get("total_seconds")),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows if value is not None)


__all__ = ["MemoRAG", "Answer", "StateError"]
