"""Serving many memorized documents with one set of models (the HTTP service and the demo).

An :class:`Engine` is the job and worker wrapper around two :class:`~memorag.collection.Collection`
objects over one store (the same store `memorag add/ask --store` use):

* the *answering* collection (memory model, embedder, generator) serves every question and
  summary through the answering core (``Collection.ask_document``). Its memory context holds
  one document's state at a time; memories of recently asked documents are kept in its
  cache (``Collection.memories``), so switching documents restores a snapshot instead of
  reading a state file.
* the *building* collection (its own memory-model context and embedder, no generator)
  runs memorize jobs (``Collection.add_text``: the entry records the text's sha256 as the
  CLI's do), so a long build never holds up questions about other documents.

Why one worker thread per collection: a llama.cpp context is not thread-safe. Every call
mutates its KV cache, its token list and its sampler, and the memory context must keep the
loaded document's prefix between the tasks of one question. Two threads in one context
would corrupt each other's answers (or crash in native code). So each collection has a
single worker thread fed by a FIFO queue: requests are served one at a time in arrival
order, and callers wait on a :class:`~concurrent.futures.Future`. On a CPU-only machine
nothing is lost: one llama.cpp call already uses every core.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from memorag.answering import Citation, NoGenerator
from memorag.collection import Collection, document_name, stored_sha256, text_sha256
from memorag.docstore import DocStore, check_name
from memorag.errors import BusyError, ConflictError, InputError, MemoRAGError, NotFoundError
from memorag.extract import extract_uploaded, file_base_name
from memorag.memory import Clues
from memorag.pipeline import TASK_TYPES, MemoRAG
from memorag.text import check_text

log = logging.getLogger("memorag.engine")

# Share of a build's time per stage, for one progress fraction (measured on the bundled
# sample: embedding is ~10% of a build, reading into the memory the rest; a long
# document first spends about as long compressing as reading).
_WEIGHTS = {"index": 0.10, "memory": 0.85}
_WEIGHTS_COMPRESSED = {"index": 0.10, "compress": 0.40, "memory": 0.45}


class Cancelled(Exception):
    """The caller went away (e.g. an HTTP client disconnected): stop generating."""


class _SerialWorker:
    """One daemon thread running submitted calls in order (a FIFO queue of Futures).

    Daemon, so that stopping the service does not wait for a minutes-long build: the
    store is consistent at any kill point (see memorag.docstore).
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def pending(self) -> int:
        return self._queue.qsize()

    def stop(self) -> None:
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller through the Future
                future.set_exception(exc)


JOB_KINDS = ("memorize", "append")
# A store is not summarized as a whole (Collection.ask): summarize one document.
STORE_TASK_TYPES = tuple(t for t in TASK_TYPES if t != "summarize")


@dataclass
class Job:
    """A memorize job (a whole document, or text appended to one) and its progress."""

    id: str
    name: str
    chars: int  # of the text to memorize, or to append
    replace: bool = False
    kind: str = "memorize"  # one of JOB_KINDS
    source: str | None = None  # the uploaded file's name
    state: str = "queued"  # queued -> running -> done | failed
    stage: str = "queued"  # queued, loading, index, compress, memory, saving, done
    done: int = 0
    total: int = 0
    fraction: float = 0.0
    error: str | None = None
    stats: dict | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    _parts: dict = field(default_factory=dict, repr=False)

    def report(self, stage: str, done: int, total: int) -> None:
        self.stage, self.done, self.total = stage, done, total
        self._parts[stage] = done / total if total else 1.0
        weights = _WEIGHTS_COMPRESSED if "compress" in self._parts else _WEIGHTS
        self.fraction = round(min(0.99, sum(w * self._parts.get(s, 0.0) for s, w in weights.items())), 4)

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "kind": self.kind, "source": self.source,
                "state": self.state, "stage": self.stage,
                "done": self.done, "total": self.total, "fraction": self.fraction, "error": self.error,
                "chars": self.chars, "replace": self.replace, "stats": self.stats,
                "created": self.created, "started": self.started, "finished": self.finished}


def evidence_json(citations: list[Citation]) -> list[dict]:
    """Evidence chunks with their place in the document (character offsets), for highlighting."""
    return [{"chunk_id": c.chunk_id, "score": round(float(c.score), 5), "text": c.text, "start": c.start,
             "end": c.end} for c in citations]


class Engine:
    """Memorize, ask and summarize the documents of one store with one set of models.

    ``pipeline_kwargs`` go to :class:`memorag.MemoRAG` for both pipelines (e.g.
    ``query_plan``); models load on first use (:meth:`warm_up` loads the answering one early).
    """

    def __init__(self, store: DocStore | str, *, mem_model: str = "default", ret_model: str = "default",
                 gen_model: str | None = None, max_queue: int = 32, **pipeline_kwargs: Any) -> None:
        self.store = store if isinstance(store, DocStore) else DocStore(store)
        self.mem_model = mem_model
        self.ret_model = ret_model
        self.gen_model = gen_model
        self.max_queue = max_queue
        self.pipeline_kwargs = pipeline_kwargs
        self._ask_worker = _SerialWorker("memorag-answer")
        self._build_worker = _SerialWorker("memorag-build")
        self._answerer: Collection | None = None  # answers (ask worker thread only)
        self._builder: Collection | None = None  # memorizes (build thread only)
        self._jobs: dict[str, Job] = {}
        self._building_names: dict[str, str] = {}  # name -> job id (queued or running)
        self._lock = threading.Lock()  # guards _jobs and _building_names (request threads + build thread)
        self.ready = threading.Event()

    # --------------------------------------------------------------- models
    def _answering(self) -> Collection:
        if self._answerer is None:
            pipe = MemoRAG(self.mem_model, self.ret_model, gen_model_name_or_path=self.gen_model,
                           **self.pipeline_kwargs)
            self._answerer = Collection(self.store.root, pipe)
            self.ready.set()
        return self._answerer

    def warm_up(self) -> Future:
        """Load the answering models now (in the worker), instead of at the first question."""
        return self._ask_worker.submit(self._answering)

    def _building_collection(self) -> Collection:
        if self._builder is None:
            # it never answers: no generator, and no judge loaded for it
            pipe = MemoRAG(self.mem_model, self.ret_model, customized_gen_model=NoGenerator(),
                           **{**self.pipeline_kwargs, "judge": None})
            self._builder = Collection(self.store.root, pipe)
        return self._builder

    # ------------------------------------------------------------- memorize
    def memorize(self, name: str, text: str, *, replace: bool = False, source: str | None = None) -> Job:
        """Queue a memorize job; returns at once. Poll :meth:`job` for progress."""
        name = check_name(name)
        check_text(text, what="text")
        return self._queue(name, text, replace=replace, source=source)

    def upload(self, filename: str, data: bytes, *, name: str | None = None,
               replace: bool = False) -> tuple[str, Job | None]:
        """Queue a memorize job for an uploaded file (txt, md, html, pdf; the text extracted
        as ``memorag add`` extracts it). The document is named ``name``, else as ``memorag add``
        names the file. Returns the name and the job, or no job (nothing queued) when the
        store already holds the same text under that name (``memorag add`` leaves such a
        document unchanged too). Every refusal (type, empty or unreadable file, name clash)
        is raised before anything is queued.
        """
        text = extract_uploaded(data, filename)  # refuses an unsupported type first, then an empty file
        base = file_base_name(filename)
        name = check_name(name) if name is not None else document_name(PurePosixPath(base))
        self._check_not_building(name)
        if self.store.exists(name):
            if stored_sha256(self.store, name) == text_sha256(text):
                return name, None
            if not replace:
                raise ConflictError(f"A different document named {name!r} is already in the store; send "
                                    "replace=true to memorize the new one in its place.")
        return name, self._queue(name, text, replace=replace, source=base)

    def append(self, name: str, text: str) -> Job:
        """Queue a job appending ``text`` to document ``name`` (``Collection.append``: the
        memory reads only the new text when it can). A failed job leaves the document as it was."""
        name = check_name(name)
        text = check_text(text, what="text")
        self._check_not_building(name)
        self.store.info(name)  # NotFoundError for an unknown name
        return self._queue(name, text, kind="append")

    def _check_not_building(self, name: str) -> None:
        job_id = self.building(name)
        if job_id is not None:
            raise ConflictError(f"{name!r} is being memorized already (job {job_id}); try again when it is done.")

    def _queue(self, name: str, text: str, *, replace: bool = False, kind: str = "memorize",
               source: str | None = None) -> Job:
        with self._lock:
            if name in self._building_names:
                raise ConflictError(f"{name!r} is being memorized already (job {self._building_names[name]}).")
            if kind == "memorize" and self.store.exists(name) and not replace:
                raise ConflictError(f"A document named {name!r} already exists; send replace=true to "
                                    "memorize it again.")
            job = Job(id=uuid.uuid4().hex[:16], name=name, chars=len(text), replace=replace, kind=kind,
                      source=source)
            self._jobs[job.id] = job
            self._building_names[name] = job.id
            self._forget_old_jobs()
        self._build_worker.submit(self._build, job, text)
        return job

    def _forget_old_jobs(self, keep: int = 200) -> None:
        finished = [j for j in self._jobs.values() if j.finished is not None]
        for j in sorted(finished, key=lambda j: j.finished or 0)[: max(0, len(finished) - keep)]:
            del self._jobs[j.id]

    def _build(self, job: Job, text: str) -> None:
        job.state, job.stage, job.started = "running", "loading", time.time()
        try:
            builder = self._building_collection()
            if job.kind == "append":
                stats = builder.append(job.name, text, progress=job.report)
            else:
                stats = builder.add_text(job.name, text, source=job.source, replace=job.replace,
                                         progress=job.report)
            job.stats, job.state, job.stage, job.fraction = stats, "done", "done", 1.0
        except MemoRAGError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # a bug or a backend crash: keep serving, report it on the job
            log.exception("memorize job %s failed", job.id)
            job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()
            with self._lock:
                self._building_names.pop(job.name, None)

    def job(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"No job {job_id!r} (jobs are kept in memory until the service restarts).")
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def documents(self) -> list[dict]:
        """The store's entries, each with its ``status``: ``ready``, or ``updating`` while a
        job replaces or appends to it (``job`` names the job)."""
        with self._lock:
            building = dict(self._building_names)
        return [{**entry, "status": "updating" if entry["name"] in building else "ready",
                 **({"job": building[entry["name"]]} if entry["name"] in building else {})}
                for entry in self.store.list()]

    def building(self, name: str) -> str | None:
        """The id of the job memorizing ``name``, if one is queued or running."""
        with self._lock:
            return self._building_names.get(name)

    # ------------------------------------------------------------------ ask
    def check_available(self, name: str) -> dict:
        """The store entry of ``name``; BusyError while it is being memorized, NotFoundError if absent."""
        name = check_name(name)
        with self._lock:
            job_id = self._building_names.get(name)
            job = self._jobs.get(job_id) if job_id else None
        if job_id is not None:
            pct = f" ({job.fraction:.0%} done)" if job else ""
            raise BusyError(f"The memory of {name!r} is being built (job {job_id}{pct}); try again when "
                            "the job is done.", retry_after=5)
        return self.store.info(name)

    def ask(self, name: str, question: str | None, *, task_type: str = "memorag", max_new_tokens: int = 256,
            top_k: int | None = None, on_token: Callable[[str], None] | None = None,
            on_evidence: Callable[[dict], None] | None = None, cancel: threading.Event | None = None) -> Future:
        """Queue a question about ``name``; the Future gives the answer as JSON.

        Bad input, an unknown document and a document being built raise here, before
        anything is queued. ``on_token`` and ``on_evidence`` run on the worker thread.
        """
        if task_type not in TASK_TYPES:
            raise InputError(f"task_type must be one of {', '.join(TASK_TYPES)}; got {task_type!r}.")
        if task_type != "summarize":
            question = check_text(question, what="question")
        self.check_available(name)
        if self._ask_worker.pending() >= self.max_queue:
            raise BusyError(f"{self.max_queue} requests are already waiting; try again shortly.", retry_after=10)
        return self._ask_worker.submit(self._ask, name, question, task_type, max_new_tokens, top_k,
                                       on_token, on_evidence, cancel)

    def _ask(self, name: str, question: str | None, task_type: str, max_new_tokens: int, top_k: int | None,
             on_token: Callable[[str], None] | None, on_evidence: Callable[[dict], None] | None,
             cancel: threading.Event | None) -> dict:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        answerer = self._answering()
        token = self._token_callback(on_token, cancel)

        def evidence(clues: Clues | None, citations: list[Citation]) -> None:
            if on_evidence:
                on_evidence({"clues": clues.to_json() if clues else None, "evidence": evidence_json(citations)})

        t0 = time.perf_counter()
        ans = answerer.ask_document(name, question, task_type=task_type, max_new_tokens=max_new_tokens,
                                    top_k=top_k, on_token=token, on_evidence=evidence)
        out = ans.to_json()
        out["document"] = name
        out["evidence"] = evidence_json(ans.citations)
        out["timings"]["total"] = round(time.perf_counter() - t0, 3)
        return out

    def ask_store(self, question: str, *, route_top: int | None = None, top_k: int | None = None,
                  max_new_tokens: int = 256, task_type: str = "memorag", on_token: Callable[[str], None] | None = None,
                  on_evidence: Callable[[dict], None] | None = None,
                  cancel: threading.Event | None = None) -> Future:
        """Queue a question across the store: routed to the documents that match it and
        answered with numbered citations (``Collection.ask`` with ``cite=True``, as
        ``memorag ask --store``). The Future gives the answer as JSON."""
        question = check_text(question, what="question")
        if task_type not in STORE_TASK_TYPES:
            raise InputError(f"task_type must be one of {', '.join(STORE_TASK_TYPES)} across a store; "
                             f"got {task_type!r}.")
        if route_top is not None and route_top < 1:
            raise InputError(f"route_top must be at least 1; got {route_top!r}.")
        if self._ask_worker.pending() >= self.max_queue:
            raise BusyError(f"{self.max_queue} requests are already waiting; try again shortly.", retry_after=10)
        return self._ask_worker.submit(self._ask_store, question, route_top, top_k, max_new_tokens, task_type,
                                       on_token, on_evidence, cancel)

    def _ask_store(self, question: str, route_top: int | None, top_k: int | None, max_new_tokens: int,
                   task_type: str, on_token: Callable[[str], None] | None, on_evidence: Callable[[dict], None] | None,
                   cancel: threading.Event | None) -> dict:
        if cancel is not None and cancel.is_set():
            raise Cancelled()

        def evidence(clues: dict[str, Clues], citations: list[Citation]) -> None:
            if on_evidence:
                on_evidence({"clues": {n: c.to_json() for n, c in clues.items()},
                             "citations": [c.to_json() for c in citations]})

        t0 = time.perf_counter()
        ans = self._answering().ask(question, route_top=route_top, top_k=top_k, max_new_tokens=max_new_tokens,
                                    task_type=task_type, cite=True, on_token=self._token_callback(on_token, cancel),
                                    on_evidence=evidence)
        out = ans.to_json()
        out["task_type"] = task_type
        out["timings"]["total"] = round(time.perf_counter() - t0, 3)
        return out

    @staticmethod
    def _token_callback(on_token: Callable[[str], None] | None,
                        cancel: threading.Event | None) -> Callable[[str], None]:
        def token(piece: str) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()  # unwinds out of the generator's stream: decoding stops
            if on_token:
                on_token(piece)

        return token

    # --------------------------------------------------------------- delete
    def delete(self, name: str) -> None:
        name = check_name(name)
        with self._lock:
            if name in self._building_names:
                raise ConflictError(f"{name!r} is being memorized (job {self._building_names[name]}); delete it "
                                    "when the job is done.")
            self.store.delete(name)
        # The answering memory may still hold the deleted state; harmless: the next question
        # about any document checks the store first, and a new document under this name has
        # a new version, so it is loaded afresh.

    def close(self, *, wait: bool = False) -> None:
        """Stop both workers once their queued calls are done and release the models and the
        cached memories (a stopped engine holds no KV state). ``wait``: until they have."""
        self._ask_worker.submit(self._release, "_answerer")
        self._build_worker.submit(self._release, "_builder")
        self._ask_worker.stop()
        self._build_worker.stop()
        if wait:
            self._ask_worker.join()
            self._build_worker.join()

    def _release(self, which: str) -> None:  # on the worker that owns it
        setattr(self, which, None)
        if which == "_answerer":
            self.ready.clear()

