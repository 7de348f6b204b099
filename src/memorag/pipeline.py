"""The MemoRAG pipeline.

    memorize = chunk + index + build memory      (once per document, saved to a dir)
    ask      = clues + retrieve + generate       (per question, no re-reading; memorag.answering)
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from memorag.answering import (
    Answering,
    AnswerPrompt,
    AnswerResult,
    RetrievalPlan,
    TwinJudge,
    View,
    answer_question,
    check_judge,
    evidence_renderer,
    generator_judge,
)
from memorag.checkpoint import CheckpointRun, Checkpoints
from memorag.chunking import check_chunk_tokens
from memorag.compat import OriginalAPI, as_generator, refuse_with_object
from memorag.config import DEFAULT_EVIDENCE, DEFAULT_PLAN, Compression, PipelineOptions, TaskType, choice
from memorag.embed.base import Embedder
from memorag.errors import InputError, NotMemorizedError, StateError
from memorag.index.base import VectorIndex
from memorag.judge_states import DEFAULT_BUDGET_MB, JudgeStates, passage_reader
from memorag.llm.base import LLM, Generator, Judge, StageProgressFn
from memorag.memory import Clues, Memory, MemoryState, check_same_model
from memorag.models.registry import (
    ADAPTER_MARK,
    DEFAULT_GENERATOR,
    DEFAULT_GENERATOR_CTX,
    DEFAULT_JUDGE,
    is_default,
    load_embedder,
    load_llm,
    make_index_factory,
    resolve_gguf,
    share_hub_options,
)
from memorag.plans import PlanContext, PlanParams, judge_passage_prompts, plan_options
from memorag.progress import for_stage, progress_bar
from memorag.retrieval import Hit, RetrievalState, Retriever
from memorag.store import check_writable, dir_size, load_consistent, read_manifest, write_save_dir, writer_lock
from memorag.text import check_text

TASK_TYPES = tuple(t.value for t in TaskType)
PARALLEL_LOAD = True
"""Load the embedder in a thread beside the LLMs (see ``MemoRAG.__init__``); False loads one
model after the other, as bench/bench_startup.py compares."""


Answer = AnswerResult  # what MemoRAG.ask returns (memorag.answering)
JudgeSetting = Judge | str | None


@dataclass(frozen=True)
class DocumentState:
    """Everything one memorized document is: chunks + index (``retrieval``), the memory
    model's prefix description (``memory``) and, once saved or loaded, the save dir's
    ``manifest``. memorize and load build a new one aside and install it only when it is
    complete, so a failure midway leaves the previous document fully usable."""

    retrieval: RetrievalState
    memory: MemoryState
    manifest: dict | None = None
    # the judge's reading of every passage (memorag.judge_states), when memorize made one
    judge_states: JudgeStates | None = None


def check_retrieval_entries(d: Path, manifest: dict) -> None:
    """A clear StateError when a manifest lacks what loading its retrieval state needs."""
    try:
        manifest["models"]["embedder"], manifest["retrieval"]
    except (KeyError, TypeError):
        raise StateError(f"{d}/manifest.json lacks the models or retrieval entries.") from None


class MemoRAG(OriginalAPI):
    """Memory-augmented RAG over one long document.

    The constructor keeps the original research code's argument names and turns spec
    strings into parts; any of the models may also be given as an object (an ``LLM`` or
    :class:`Memory` for the memory, an ``Embedder`` for retrieval, a factory for ``index``).
    The original API's other calls (``pipe(context, query)``, ``pipe._retrieve``,
    ``pipe.mem_model``) come from :class:`memorag.compat.OriginalAPI`.
    :meth:`from_parts` takes ready-made parts only. ``beacon_ratio`` is passed to the memory
    (compression for documents beyond the model's window). ``judge`` scores evidence for the
    judging query plans: ``"auto"`` (beside the packaged generator the packaged trained judge,
    else the generator's twin when the generator can judge; :func:`memorag.answering.generator_judge`),
    a model spec (``"default"``: the packaged trained judge, ``judge-0.5b``), a
    :class:`~memorag.llm.base.Judge`, or None (no judging). ``cite`` numbers the evidence in
    the answer prompt and asks for the numbers used (:attr:`Answer.marks`). ``evidence_order``:
    the generator reads the evidence in ``"document"`` order (as the text runs; the default)
    or ``"rank"`` order (best first). ``judge_states_mb``: memorize has the judge read every
    passage in advance and keeps its KV states with the document when they fit in this many
    MiB (:mod:`memorag.judge_states`; 0: never). ``quote_recall``
    decodes the memory's recalled spans as verbatim quotes of the document when its backend
    can (:mod:`memorag.quoting`); False lets the memory write them freely. ``quote_from``:
    where those quotes come from when the memory read an extract of a long document,
    ``"document"`` (the whole document, kept with the memory) or ``"memory"`` (the extract
    it read). ``plan_params``
    sets fields of the query plan's :class:`~memorag.plans.PlanParams` (e.g.
    ``{"likelihood_passages": 16}``); a name the plan does not read, or a value of the wrong
    type, is refused (:func:`memorag.plans.check_plan_params`).
    """

    def __init__(self, mem_model_name_or_path: str | LLM | Memory | None = "default",
                 ret_model_name_or_path: str | Embedder | None = "default",
                 gen_model_name_or_path: str | None = None, customized_gen_model: Generator | None = None,
                 ret_hit: int = 3, retrieval_chunk_size: int = 512, cache_dir: str | None = None,
                 access_token: str | None = None, beacon_ratio: float | None = None,
                 load_in_4bit: bool = False, enable_flash_attn: bool | None = None, *,
                 index: str | Callable[[], VectorIndex] = "faiss", n_ctx: int | None = None,
                 question_weight: float = 2.0, clue_weight: float = 1.0,
                 hybrid: bool = True, compression: str = "extractive", overlap_indexing: bool = False,
                 query_plan: str = DEFAULT_PLAN, follow_hops: int = 0, evidence: str = DEFAULT_EVIDENCE,
                 cite: bool = False, judge: JudgeSetting = "auto", quote_recall: bool = True,
                 quote_from: str = "document", plan_params: Mapping[str, object] | None = None, evidence_order: str = "document",
                 judge_states_mb: int = DEFAULT_BUDGET_MB) -> None:
        check_chunk_tokens(retrieval_chunk_size)  # before any model is loaded
        options = PipelineOptions(ret_hit, question_weight, clue_weight, hybrid, overlap_indexing, query_plan,
                                  follow_hops, evidence, cite, plan_params, evidence_order, judge_states_mb)
        compression = choice(Compression, compression, "compression")
        if beacon_ratio is not None and compression == Compression.NONE.value:
            raise InputError("beacon_ratio sets how far a long document is compressed; with compression='none' "
                             "nothing is compressed. Drop one of them.")
        mem, ret = mem_model_name_or_path, ret_model_name_or_path
        # cache_dir and access_token are shared by the models: each model whose loader takes
        # them gets them, and they are refused, before anything loads, when none does.
        hub = share_hub_options(pipeline_models(mem, ret, gen_model_name_or_path, customized_gen_model, judge),
                                cache_dir=cache_dir, access_token=access_token)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="memorag-embedder") as pool:
            # Why: importing the embedder's libraries (torch, transformers) is seconds of
            # Python, while loading a GGUF model is seconds in C with the GIL released; side by
            # side they overlap (bench/bench_startup.py). Errors still surface here, in order.
            loads_embedder = ret is None or isinstance(ret, str)
            embedder_job = pool.submit(load_embedder, ret, **hub["embedder"]) \
                if loads_embedder and PARALLEL_LOAD else None
            if isinstance(mem, Memory):
                refuse_with_object("the memory", n_ctx=n_ctx, beacon_ratio=beacon_ratio, load_in_4bit=load_in_4bit,
                                   enable_flash_attn=enable_flash_attn, compression=compression,
                                   quote_recall=None if quote_recall is True else quote_recall,
                                   quote_from=quote_from)
                memory = mem
            elif mem is None or isinstance(mem, str):
                memory = Memory(mem, beacon_ratio=beacon_ratio, load_in_4bit=load_in_4bit,
                                enable_flash_attn=enable_flash_attn, n_ctx=n_ctx, compression=compression,
                                quote_recall=quote_recall, quote_from=quote_from, **hub["memory"])
            else:  # an LLM object
                refuse_with_object("the memory LLM", n_ctx=n_ctx, load_in_4bit=load_in_4bit,
                                   enable_flash_attn=enable_flash_attn)
                memory = Memory(llm=mem, beacon_ratio=beacon_ratio, compression=compression, quote_recall=quote_recall,
                                quote_from=quote_from)
            factory = make_index_factory(index) if isinstance(index, str) else index
            if customized_gen_model is not None:
                generator: Generator = as_generator(customized_gen_model)
            elif gen_model_name_or_path:
                generator = load_llm(gen_model_name_or_path, **hub["generator"])
            elif (mem is None or isinstance(mem, str)) and is_default(mem):
                # The default memory model reads; a larger packaged model answers (registry.DEFAULT_GENERATOR).
                generator = load_llm(DEFAULT_GENERATOR, n_ctx=DEFAULT_GENERATOR_CTX)
            else:
                generator = None  # from_parts: the memory model answers too
            if isinstance(judge, str) and judge != "auto":
                judge = load_judge(judge, **hub["judge"])
            embedder = embedder_job.result() if embedder_job is not None else \
                load_embedder(ret, **hub["embedder"]) if loads_embedder else ret
        self._setup(memory, Retriever(embedder, factory, chunk_tokens=retrieval_chunk_size), generator, options,
                    judge)
        self.index_spec = index if isinstance(index, str) else getattr(index, "spec", None)

    @classmethod
    def from_parts(cls, memory: Memory | LLM, retriever: Retriever, generator: Generator | None = None, *,
                   ret_hit: int = 3, question_weight: float = 2.0, clue_weight: float = 1.0, hybrid: bool = True,
                   overlap_indexing: bool = False, query_plan: str = DEFAULT_PLAN, follow_hops: int = 0,
                   evidence: str = DEFAULT_EVIDENCE, cite: bool = False, judge: Judge | None | str = "auto",
                   plan_params: Mapping[str, object] | None = None, evidence_order: str = "document",
                   judge_states_mb: int = DEFAULT_BUDGET_MB) -> MemoRAG:
        """A pipeline from ready-made parts; nothing is loaded.

        ``memory`` is a :class:`Memory` or an LLM (wrapped in ``Memory(llm=...)``);
        ``generator`` defaults to ``memory.llm.twin()`` (its own context on the same
        weights, so answering never evicts the document). ``judge`` (a
        :class:`~memorag.llm.base.Judge`, None for no judging, or ``"auto"``: see
        :func:`memorag.answering.generator_judge`) scores evidence for the judging
        query plans. E.g. with the fakes of :mod:`memorag.testing`::

            MemoRAG.from_parts(ScriptedLLM(), Retriever(HashEmbedder(), FaissIndex))
        """
        options = PipelineOptions(ret_hit, question_weight, clue_weight, hybrid, overlap_indexing, query_plan,
                                  follow_hops, evidence, cite, plan_params, evidence_order, judge_states_mb)
        if isinstance(judge, str) and judge != "auto":
            raise InputError("from_parts loads nothing: give the judge as an object (or 'auto' or None).")
        pipe = cls.__new__(cls)
        pipe._setup(memory if isinstance(memory, Memory) else Memory(llm=memory), retriever, generator, options,
                    judge)
        pipe.index_spec = getattr(retriever.index_factory, "spec", None)
        return pipe

    def _setup(self, memory: Memory, retriever: Retriever, generator: Generator | None,
               options: PipelineOptions, judge: Judge | None | str = "auto") -> None:
        self.memory = memory
        self.retriever = retriever
        self.embedder = retriever.embedder
        if generator is None:  # the original API: no generator given = the memory model answers too
            twin = getattr(memory.llm, "twin", None)
            generator = twin() if twin else memory.llm
        self.generator = as_generator(generator)
        self.ret_hit = options.ret_hit
        self.query_plan = options.query_plan
        self.question_weight = options.question_weight
        self.clue_weight = options.clue_weight
        self.hybrid = options.hybrid
        self.follow_hops = options.follow_hops
        self.plan_overrides = options.plan_overrides()  # PlanParams fields set by plan_params
        self.evidence = options.evidence
        self.cite = options.cite
        self.evidence_order = options.evidence_order
        # "auto": answering.generator_judge(generator) (made on first use, and again if the
        # generator is replaced); else the given Judge, or None for no judging.
        self._judge: Judge | None | str = judge if judge is None or judge == "auto" else check_judge(judge)
        self._auto_judge: tuple[object, Judge | None] | None = None  # (generator, its judge)
        # Embed chunks in a thread while the memory model reads (both run native code that
        # releases the GIL). Off by default: on 2 local cores it saved 3% (docs/benchmarks.md);
        # it pays off when the memory model runs on a server or a GPU.
        self.overlap_indexing = options.overlap_indexing
        self._manifest: dict | None = None
        # MiB the judge's states of one document may take (memorag.judge_states); 0: none kept
        self.judge_states_mb = options.judge_states_mb
        self._judge_states: JudgeStates | None = None
        self.stats: dict = {}

    # ------------------------------------------------------------ document
    @property
    def document(self) -> DocumentState | None:
        """The memorized document as one value (None before memorize or load)."""
        if self.memory.state is None or self.retriever.state is None:
            return None
        return DocumentState(self.retriever.state, self.memory.state, self._manifest, self._judge_states)

    def read_retrieval(self, d: Path, manifest: dict) -> RetrievalState:
        """The chunks and vectors of the save dir ``d`` (whose ``manifest`` is verified),
        refused if they were embedded by another model than this pipeline's."""
        check_retrieval_entries(d, manifest)
        check_same_model(manifest["models"]["embedder"], self.embedder.describe(), what="embedding model")
        return self.retriever.read(d / "retrieval", manifest["retrieval"], language=manifest.get("language"))

    def _install(self, doc: DocumentState) -> None:
        # Plain assignments, nothing that can fail: the parts switch to the new document together.
        self.retriever.state, self.memory.state, self._manifest = doc.retrieval, doc.memory, doc.manifest
        self._judge_states = doc.judge_states
        self._hand_states(self.judge)  # None too: the last document's states go

    # ------------------------------------------------------------ memorize
    def memorize(self, context: str, save_dir: str | Path | None = None, print_stats: bool = False,
                 *, progress: bool | StageProgressFn = True, resume: bool | Checkpoints = True) -> dict:
        """Chunk and index ``context``, build the memory over it, and optionally save all three.

        The new document replaces the current one only when all of this has succeeded: an
        error or Ctrl-C anywhere (embedding, reading, saving) leaves the previous document
        as it was, memory prefix included. With ``save_dir`` the dir's writer lock is taken
        first and held until it is saved: a second process writing the same dir gets
        :class:`~memorag.errors.LockedError` at once, not after its own hour of work
        (memorag.store.writer_lock).

        ``progress``: True draws tqdm bars; a callable gets ``(stage, done, total)`` instead
        (stages ``index``, ``compress``, ``memory``; see :data:`memorag.llm.base.StageProgressFn`).

        ``resume`` (default True): checkpoint the embedding batches and, for llama.cpp, the
        memory's KV state every 2,048 tokens, and resume from the checkpoints a killed run
        of the same document left (under ``~/.cache/memorag/checkpoints``); they are
        deleted once this memorize (and its save) has succeeded. A
        :class:`~memorag.checkpoint.Checkpoints` sets their place and interval; False
        neither reads nor writes them. What was resumed is in the stats (``resumed``).
        """
        check_text(context)
        if save_dir is not None:
            with writer_lock(save_dir) as target:
                check_writable(target)  # a dir we would refuse to replace: say so before the work
                return self._memorize(context, save_dir, print_stats, progress, resume)
        return self._memorize(context, None, print_stats, progress, resume)

    def _memorize(self, context: str, save_dir: str | Path | None, print_stats: bool,
                  progress: bool | StageProgressFn, resume: bool | Checkpoints = True) -> dict:
        t0 = time.perf_counter()
        language = self.memory.language_for(context)
        checkpoints = _checkpoint_run(resume, progress)
        stats: dict = {}
        with self.memory.guard():
            if self.overlap_indexing:
                retrieval, index_seconds, (memory, mem) = self._memorize_overlapped(context, language, progress,
                                                                                    checkpoints)
            else:
                retrieval, index_seconds = self._build_index(context, language, progress, checkpoints=checkpoints)
                memory, mem = self.memory.prepare(context, progress=progress, language=language,
                                                  checkpoints=checkpoints)
            states, states_stats = self._read_passages(retrieval, progress)
            doc = DocumentState(retrieval, memory, judge_states=states)
            stats = {**states_stats, "chars": len(context), **mem, **Retriever.stats(retrieval),
                     "index_seconds": round(index_seconds, 3), "overlap_indexing": self.overlap_indexing,
                     **(checkpoints.stats() if checkpoints else {})}
            if save_dir is not None:
                doc, save_stats = self.write_document(doc, save_dir)
                stats.update(save_stats)
        self._install(doc)
        if checkpoints is not None:
            checkpoints.discard()  # the work is installed (and saved): nothing left to resume
        self.stats = stats
        self.stats["total_seconds"] = round(time.perf_counter() - t0, 3)
        if print_stats:
            print(format_stats(self.stats), file=sys.stderr)
        return self.stats

    def _read_passages(self, retrieval: RetrievalState, progress: bool | StageProgressFn
                       ) -> tuple[JudgeStates | None, dict]:
        """The judge's reading of every passage it may score (memorag.judge_states), when the
        plan judges by query likelihood, the judge can keep states and they fit
        ``judge_states_mb``; with the stats saying what was done."""
        if self.judge_states_mb <= 0 or "likelihood_chars" not in plan_options(self.query_plan):
            return None, {}
        reader = passage_reader(self.judge)
        if reader is None:
            return None, {}
        t = time.perf_counter()
        params = replace(self.plan_params(), language=retrieval.language)
        prompts = judge_passage_prompts((c.text for c in retrieval.chunks), params)
        with progress_bar("judge: reading passages", "passage", for_stage(progress, "judge")) as bar:
            states = reader.read_passages(prompts, max_bytes=self.judge_states_mb * 1024 * 1024, progress=bar)
        seconds = round(time.perf_counter() - t, 3)
        if states is None:
            return None, {"judge_states": f"not kept: over judge_states_mb={self.judge_states_mb}",
                          "judge_states_seconds": seconds}
        return states, {"judge_states": len(states), "judge_states_bytes": states.bytes,
                        "judge_states_seconds": seconds}

    def _build_index(self, context: str, language: str, progress: bool | StageProgressFn,
                     stop: threading.Event | None = None, checkpoints: CheckpointRun | None = None
                     ) -> tuple[RetrievalState, float]:
        t = time.perf_counter()
        with progress_bar("index: embedding", "passage", for_stage(progress, "index")) as bar:
            def update(done: int, total: int) -> None:
                if stop is not None and stop.is_set():  # the memory pass failed: stop embedding
                    raise InterruptedError("indexing stopped")
                if bar:
                    bar(done, total)

            state = self.retriever.prepare(context, progress=update, language=language, checkpoints=checkpoints)
        return state, time.perf_counter() - t

    def _memorize_overlapped(self, context: str, language: str, progress: bool | StageProgressFn,
                             checkpoints: CheckpointRun | None = None
                             ) -> tuple[RetrievalState, float, tuple[MemoryState, dict]]:
        from concurrent.futures import ThreadPoolExecutor

        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="memorag-index") as pool:
            future = pool.submit(self._build_index, context, language, progress, stop, checkpoints)
            try:
                mem = self.memory.prepare(context, progress=progress, language=language, checkpoints=checkpoints)
            except BaseException:
                stop.set()  # e.g. Ctrl-C: do not wait for the whole embedding pass
                raise
            retrieval, index_seconds = future.result()
        return retrieval, index_seconds, mem

    def save(self, save_dir: str | Path) -> dict:
        doc = self.document
        if doc is None:
            raise NotMemorizedError("Nothing to save: memorize a document first.")
        doc, save_stats = self.write_document(doc, save_dir)
        self._manifest = doc.manifest
        self.stats.update(save_stats)
        assert doc.manifest is not None
        return doc.manifest

    def write_document(self, doc: DocumentState, save_dir: str | Path) -> tuple[DocumentState, dict]:
        """Write ``doc`` (whose prefix the memory model holds now) to ``save_dir``; returns it
        with its manifest, and the save stats."""
        t = time.perf_counter()

        def fill_dir(tmp: Path) -> dict:
            memory_info = self.memory.save(tmp / "memory", doc.memory)
            retrieval_info = self.retriever.save(tmp / "retrieval", doc.retrieval)
            states = {"judge_states": doc.judge_states.save(tmp / "judge")} if doc.judge_states is not None else {}
            return {**states, "models": {"memory": self.memory.llm.describe(), "embedder": self.embedder.describe()},
                    "index": getattr(doc.retrieval.index, "spec", self.index_spec),
                    "language": doc.memory.language, "context_sha256": doc.memory.context_sha256,
                    "memory_tokens": memory_info["state"].get("n_tokens"),
                    "chunks": retrieval_info["n_chunks"], "retrieval": retrieval_info}

        manifest = write_save_dir(save_dir, fill_dir)
        stats = {"save_seconds": round(time.perf_counter() - t, 3), "disk_bytes": dir_size(Path(save_dir))}
        return replace(doc, manifest=manifest), stats

    def load(self, save_dir: str | Path, print_stats: bool = False) -> dict:
        """Restore memory, chunks and index from a save dir written by :meth:`memorize`.

        A save dir that fails to load (corrupt, other models) leaves the current document.
        ``print_stats`` (as in the original API) prints the load stats to stderr.
        """
        t = time.perf_counter()

        def read(d: Path, manifest: dict) -> DocumentState:
            check_retrieval_entries(d, manifest)
            with self.memory.guard():
                memory, _ = self.memory.read(d / "memory")
                retrieval = self.read_retrieval(d, manifest)
            states = JudgeStates.read(d / "judge") if "judge_states" in manifest else None
            return DocumentState(retrieval, memory, manifest, states)

        # Verified first, and re-read if another process swapped the dir in meanwhile; built
        # aside and installed only when complete.
        doc = load_consistent(save_dir, read)
        manifest = doc.manifest
        assert manifest is not None
        d = Path(save_dir)
        self._install(doc)
        self.retriever.chunk_tokens = int(manifest["retrieval"].get("chunk_tokens", self.retriever.chunk_tokens))
        self.stats = {"load_seconds": round(time.perf_counter() - t, 4), "chunks": manifest.get("chunks"),
                      "memory_tokens": manifest.get("memory_tokens"), "disk_bytes": dir_size(d)}
        if print_stats:
            print(format_stats(self.stats), file=sys.stderr)
        return manifest

    @classmethod
    def from_saved(cls, save_dir: str | Path, **kwargs) -> MemoRAG:
        """Build a pipeline with the models a save dir was made with, then load it."""
        # Verify before loading any model: a corrupt dir fails at once, not after a multi-GB
        # model load (load() verifies again: one more hash of the save dir's files).
        manifest = read_manifest(save_dir)
        pipe = cls(**saved_pipeline_kwargs(manifest, kwargs))
        pipe.load(save_dir)
        return pipe

    # ----------------------------------------------------------------- ask
    @property
    def judge(self) -> Judge | None:
        """What scores evidence for the judging query plans (``recall``, ``likelihood``,
        ``rerank``, ``memorag``): the ``judge`` given, or by default
        :func:`memorag.answering.generator_judge` (the packaged trained judge beside the
        packaged generator, else the generator's twin when it can judge); None keeps the
        plans' first-round ranking."""
        if self._judge != "auto":
            return self._judge  # type: ignore[return-value]
        if self._auto_judge is None or self._auto_judge[0] is not self.generator:
            self._auto_judge = (self.generator, generator_judge(self.generator))
            self._hand_states(self._auto_judge[1])
        return self._auto_judge[1]

    @judge.setter
    def judge(self, judge: Judge | None | str) -> None:
        self._judge = judge if judge is None or judge == "auto" else check_judge(judge)
        if self._judge != "auto":
            self._hand_states(self._judge)

    def _hand_states(self, judge: object) -> None:
        """Give ``judge`` the current document's judge states, or None (it ignores states it
        cannot use). Loads no model: a TwinJudge hands them on when its model loads."""
        use = getattr(judge, "use_judge_states", None)
        if use is not None:
            use(getattr(self, "_judge_states", None))

    def view(self) -> View:
        """The memorized document as the answering core's view (its chunks and its memory)."""
        return View(self.retriever, self.memory, self.memory.language or "en")

    def answering(self) -> Answering:
        """This pipeline's answering parts: generator, query plan with its judge, evidence, prompt."""
        return Answering(self.generator, RetrievalPlan(self.query_plan, self.plan_params(), self.judge),
                         evidence_renderer(self.evidence), AnswerPrompt(cite=self.cite, order=self.evidence_order),
                         self.ret_hit)

    def ask(self, query: str | None, *, task_type: str = "memorag", max_new_tokens: int = 256,
            prompt_template: str | None = None, use_memory_answer: bool = False, top_k: int | None = None,
            on_token: Callable[[str], None] | None = None,
            on_evidence: Callable[[Clues | None, list[Hit]], None] | None = None) -> Answer:
        """Answer ``query`` (memorag.answering.answer_question over :meth:`view`). ``on_token``
        gets each piece of the answer as it is generated; ``on_evidence`` gets the clues and
        evidence once retrieval is done, before generation starts (the HTTP service and the
        demo show them while the answer streams)."""
        task_type = choice(TaskType, task_type, "task_type")
        if not self.memory.memorized:
            raise NotMemorizedError("No document is memorized: call memorize(context) or load(save_dir) first.")
        if task_type != "summarize":
            query = check_text(query, what="query")
        return answer_question(self.view(), query, self.answering(), task_type=task_type, top_k=top_k,
                               use_memory_answer=use_memory_answer, max_new_tokens=max_new_tokens,
                               prompt_template=prompt_template, on_token=on_token, on_evidence=on_evidence)

    def retrieve(self, query: str, clues: Clues | None, k: int) -> list[Hit]:
        """Evidence for ``query`` by the pipeline's query plan (``query_plan``, see memorag.plans).

        With the default plan (``recall``) the question's own top chunks and the chunks the
        memory's grounded clues point at are judged together by the :attr:`judge`'s query
        likelihood, fused with the first-round order: small memory models invent facts, so a
        clue can add a candidate but not push out the question's own hits. Without clues
        (task ``rag``) the question alone is searched, unjudged.
        """
        plan = RetrievalPlan(self.query_plan if clues is not None else "question", self.plan_params(), self.judge)
        return plan.find(self.view(), query, clues, k).hits

    def plan_params(self) -> PlanParams:
        """The query plan's parameters: the pipeline's options, then its ``plan_params``."""
        params = PlanParams(question_weight=self.question_weight, clue_weight=self.clue_weight, lexical=self.hybrid,
                            language=self.memory.language or "en", follow_hops=self.follow_hops)
        return replace(params, **self.plan_overrides)

    def plan_context(self) -> PlanContext:
        """What a query plan gets from this pipeline: its retriever, its :attr:`judge` and its memory."""
        return PlanContext(self.retriever, self.judge, self.memory)


def _checkpoint_run(resume: bool | Checkpoints, progress: bool | StageProgressFn) -> CheckpointRun | None:
    """This memorize's checkpoints (None with ``resume=False``). With tqdm bars on, a resumed
    stage says so on stderr; a progress callback sees the jump in its ``done`` count."""
    if resume is False:
        return None
    if resume is True:
        config = Checkpoints()
    elif isinstance(resume, Checkpoints):
        config = resume
    else:
        raise InputError(f"resume must be True, False or a memorag.checkpoint.Checkpoints; got {resume!r}.")
    announce = None
    if progress is True:
        def announce(line: str) -> None:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stderr)
    return config.run(announce)


def saved_pipeline_kwargs(manifest: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`MemoRAG` keywords that reopen a save dir as it was made: ``kwargs`` over the
    memory and embedding models, chunk size and index its ``manifest`` records, with the saved
    memory window (:func:`saved_memory_window`) and flash-attention setting.
    :meth:`MemoRAG.from_saved` and a store's pipeline (:attr:`memorag.collection.Collection.pipe`) are built with it."""
    out = dict(kwargs)
    models = manifest.get("models", {})
    out.update(saved_memory_window(models, out))
    memory = models.get("memory", {})
    if out.get("mem_model_name_or_path", memory.get("spec")) == memory.get("spec") \
            and out.get("enable_flash_attn") is None and isinstance(memory.get("flash_attn"), bool):
        # the KV state reads back only with the attention it was saved with (saves made
        # before memorag.memory.MEMORY_FLASH_ATTN was off have it on)
        out["enable_flash_attn"] = memory["flash_attn"]
    out.setdefault("mem_model_name_or_path", memory.get("spec", "default"))
    out.setdefault("ret_model_name_or_path", models.get("embedder", {}).get("spec", "default"))
    out.setdefault("retrieval_chunk_size", manifest.get("retrieval", {}).get("chunk_tokens", 512))
    out.setdefault("index", manifest.get("index", "faiss"))
    return out


def saved_memory_window(models: dict, kwargs: dict) -> dict:
    """``{"n_ctx": W}`` when a save dir of the default memory is to be reopened as it was saved
    (no memory model or window given): its KV state fits only a window at least that large,
    and saves made before the default window (registry.DEFAULT_MEMORY_WINDOW) were made with
    a larger one. Other memory models get the window they always got."""
    from memorag.models.registry import default_window

    memory = models.get("memory", {})
    window = memory.get("n_ctx")
    if ("mem_model_name_or_path" in kwargs or kwargs.get("n_ctx") is not None or not isinstance(window, int)
            or default_window(memory.get("spec")) is None):
        return {}
    return {"n_ctx": window}


def pipeline_models(memory: object, embedder: object, generator_spec: str | None = None,
                    customized_generator: object = None, judge: object = "auto") -> dict[str, object]:
    """The models a :class:`MemoRAG` made with these arguments names, by role (``memory``,
    ``embedder``, ``generator``, ``judge``): the spec each is loaded from, or the object given
    for it, as :func:`memorag.models.registry.share_hub_options` takes them. A generator spec
    counts even when ``customized_generator`` stands in for it: a pipeline that only
    memorizes (its generator a stand-in that never loads) still names the configuration's
    generator. Roles that load nothing (the memory model's twin as generator or judge, no
    judge) are left out."""
    models: dict[str, object] = {"memory": memory, "embedder": embedder}
    if generator_spec:
        models["generator"] = generator_spec
    elif customized_generator is not None:
        models["generator"] = customized_generator
    elif (memory is None or isinstance(memory, str)) and is_default(memory):
        models["generator"] = DEFAULT_GENERATOR
    if isinstance(judge, str) and judge != "auto":
        models["judge"] = DEFAULT_JUDGE if is_default(judge) else judge
    elif judge is not None and judge != "auto":
        models["judge"] = judge
    return models


def load_judge(spec: str, *, cache_dir: str | None = None, access_token: str | None = None,
               n_ctx: int | None = None) -> Judge:
    """A judge from a model spec (``"default"``: the packaged trained judge,
    :data:`~memorag.models.registry.DEFAULT_JUDGE`); a GGUF model gets a window sized for
    judging (``n_ctx``, default ``JUDGE_CTX``). A GGUF spec with an adapter
    (``SPEC+lora=FILE``) is a trained judge: the adapter scores the question (``memorag train
    judge``)."""
    from memorag.answering import JUDGE_CTX

    spec = DEFAULT_JUDGE if is_default(spec) else spec
    window: dict[str, object] = {"n_ctx": n_ctx or JUDGE_CTX} if resolve_gguf(spec) is not None else {}
    if ADAPTER_MARK in spec:
        from memorag.llm.llamacpp import JUDGE_TASK

        window["adapter_tasks"] = (JUDGE_TASK,)
    return check_judge(load_llm(spec, cache_dir=cache_dir, access_token=access_token, **window))


def format_stats(stats: dict) -> str:
    rows = [
        ("characters", stats.get("chars")), ("memory tokens", stats.get("memory_tokens")),
        ("chunks", stats.get("chunks")), ("passages embedded", stats.get("passages")),
        ("index seconds", stats.get("index_seconds")), ("memory seconds", stats.get("memory_seconds")),
        ("memory tokens/s", stats.get("memory_tokens_per_second")),
        ("judge passages read", stats.get("judge_states")), ("judge seconds", stats.get("judge_states_seconds")),
        ("save seconds", stats.get("save_seconds")),
        ("load seconds", stats.get("load_seconds")),
        ("resumed", ", ".join(f"{stage} from {r['percent']:g}%" for stage, r in stats["resumed"].items())
         if stats.get("resumed") else None),
        ("size on disk (MB)", round(stats["disk_bytes"] / 1e6, 1) if stats.get("disk_bytes") else None),
        ("total seconds", stats.get("total_seconds")),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows if value is not None)


__all__ = ["MemoRAG", "Answer", "DocumentState", "StateError", "TwinJudge", "as_generator", "load_judge",
           "pipeline_models", "saved_pipeline_kwargs"]
