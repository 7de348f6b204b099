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

Jobs live in the store (:mod:`memorag.jobs`), not in this process: every engine over the
store sees every job, a job accepted by one replica can be polled from another, and a job
left unfinished by a process that died is run again by the next engine that looks for
orphans (:meth:`Engine.adopt_orphans`, and :meth:`Engine.watch_jobs` in the service).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from memorag.answering import Citation, NoGenerator
from memorag.collection import Collection, check_no_judge_states, document_name, stored_sha256, text_sha256
from memorag.docstore import DocStore, check_name
from memorag.errors import BusyError, ConflictError, InputError, MemoRAGError, NotFoundError, ReadOnlyError
from memorag.extract import extract_uploaded, file_base_name
from memorag.jobs import Claim, JobBoard
from memorag.memory import Clues
from memorag.models.registry import HUB_OPTIONS, share_hub_options
from memorag.pipeline import TASK_TYPES, MemoRAG, pipeline_models
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
# Seconds between two writes of a running job's progress to its record (other replicas read it).
PROGRESS_SAVE_SECONDS = 0.5
# Seconds between two looks for jobs a dead process left unfinished (memorag serve).
JOB_SCAN_SECONDS = 10.0
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
    owner: str | None = None  # host:pid of the process running it
    attempts: int = 1  # more than one: taken over after the process running it died
    base_version: str | None = None  # append: the version of the document it appends to
    _parts: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, record: dict) -> Job:
        """A job from its record (:meth:`to_json`), as another process wrote it."""
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__ and not k.startswith("_")}
        return cls(**known)

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
                "created": self.created, "started": self.started, "finished": self.finished,
                "owner": self.owner, "attempts": self.attempts, "base_version": self.base_version}


def evidence_json(citations: list[Citation]) -> list[dict]:
    """Evidence chunks with their place in the document (character offsets), for highlighting."""
    return [{"chunk_id": c.chunk_id, "score": round(float(c.score), 5), "text": c.text, "start": c.start,
             "end": c.end, "found_by": list(c.found_by)} for c in citations]


class Engine:
    """Memorize, ask and summarize the documents of one store with one set of models.

    ``pipeline_kwargs`` go to :class:`memorag.MemoRAG` for both pipelines (e.g.
    ``query_plan``); models load on first use (:meth:`warm_up` loads the answering one early).
    ``read_only``: refuse every write (memorize, upload, append, delete) with
    :class:`ReadOnlyError` and never run a job (a replica that only answers).
    ``max_queue``: questions waiting, and memorize jobs waiting, beyond which a request is
    refused with :class:`BusyError`. ``collection``: keywords of both
    :class:`~memorag.collection.Collection` objects (``route_top``, ``routing``,
    ``routing_index``, ``max_memories``, ``max_memory_bytes``; the configuration tree's
    ``collection`` section).
    """

    def __init__(self, store: DocStore | str, *, mem_model: str = "default", ret_model: str = "default",
                 gen_model: str | None = None, max_queue: int = 32, read_only: bool = False,
                 collection: Mapping[str, Any] | None = None, **pipeline_kwargs: Any) -> None:
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise InputError(f"max_queue must be a whole number >= 0; got {max_queue!r}.")
        self.store = store if isinstance(store, DocStore) else DocStore(store)
        self.collection_options = dict(collection or {})
        self.mem_model = mem_model
        self.ret_model = ret_model
        self.gen_model = gen_model
        self.max_queue = max_queue
        self.read_only = read_only
        check_no_judge_states(pipeline_kwargs)  # refused here, at start; Collection keeps none
        self.pipeline_kwargs = pipeline_kwargs
        # cache_dir / access_token checked against all the models now (refused when none takes
        # them), not at the first question; the memorize pipeline gets those its own models take
        self._hub = share_hub_options(pipeline_models(mem_model, ret_model, gen_model, None,
                                                      pipeline_kwargs.get("judge", "auto")),
                                      cache_dir=pipeline_kwargs.get("cache_dir"),
                                      access_token=pipeline_kwargs.get("access_token"))
        self.board = JobBoard(self.store.root)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._ask_worker = _SerialWorker("memorag-answer")
        self._build_worker = _SerialWorker("memorag-build")
        self._answerer: Collection | None = None  # answers (ask worker thread only)
        self._builder: Collection | None = None  # memorizes (build thread only)
        self._jobs: dict[str, Job] = {}  # the jobs this engine runs, until they end (their records are in the board)
        self._claims: dict[str, Claim] = {}
        self._lock = threading.Lock()  # guards _jobs and _claims (request threads + build thread)
        self._stopping = threading.Event()
        self._warm_up: Future | None = None
        self.ready = threading.Event()

    # --------------------------------------------------------------- models
    def _answering(self) -> Collection:
        if self._answerer is None:
            pipe = MemoRAG(self.mem_model, self.ret_model, gen_model_name_or_path=self.gen_model,
                           **self.pipeline_kwargs)
            self._answerer = Collection(self.store.root, pipe, **self.collection_options)
            self.ready.set()
        return self._answerer

    def warm_up(self) -> Future:
        """Load the answering models now (in the worker), instead of at the first question."""
        self._warm_up = self._ask_worker.submit(self._answering)
        return self._warm_up

    def readiness(self) -> tuple[bool, str, int]:
        """Whether this engine can answer now: (ready, why not, seconds to wait before asking again).

        Ready means the answering models are loaded, the store can be read, and the question
        queue has room (a full queue refuses questions with the same wait)."""
        if self._warm_up is not None and self._warm_up.done() and self._warm_up.exception() is not None:
            return False, f"the models failed to load: {self._warm_up.exception()}", 60
        if not self.ready.is_set():
            return False, "the models are loading", 5
        try:
            with os.scandir(self.store.root) as entries:
                next(entries, None)
            self.store.settings()
        except (OSError, MemoRAGError) as exc:
            return False, f"the store {self.store.root} cannot be read: {exc}", 30
        if self._ask_worker.pending() >= self.max_queue:
            return False, f"{self.max_queue} requests are already waiting", 10
        return True, "", 0

    def _building_collection(self) -> Collection:
        if self._builder is None:
            # it never answers: no generator, and no judge loaded for it (nor the hub options
            # only they take)
            hub = {**self._hub["memory"], **self._hub["embedder"]}
            kwargs = {k: v for k, v in self.pipeline_kwargs.items() if k not in HUB_OPTIONS}
            pipe = MemoRAG(self.mem_model, self.ret_model, customized_gen_model=NoGenerator(),
                           **{**kwargs, **hub, "judge": None})
            self._builder = Collection(self.store.root, pipe, **self.collection_options)
        return self._builder

    # ------------------------------------------------------------- memorize
    def memorize(self, name: str, text: str, *, replace: bool = False, source: str | None = None) -> Job:
        """Queue a memorize job; returns at once. Poll :meth:`job` for progress."""
        self._check_writable("memorize")
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
        self._check_writable("upload")
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
        self._check_writable("append")
        name = check_name(name)
        text = check_text(text, what="text")
        self._check_not_building(name)
        base = self.store.info(name)  # NotFoundError for an unknown name
        return self._queue(name, text, kind="append", base_version=base.get("version"))

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise ReadOnlyError(f"This replica is read-only (memorag serve --read-only): it answers questions "
                                f"but does not {what}; send writes to the replica that takes them.")

    def _check_not_building(self, name: str) -> None:
        job_id = self.building(name)
        if job_id is not None:
            raise ConflictError(f"{name!r} is being memorized already (job {job_id}); try again when it is done.")

    def _queue(self, name: str, text: str, *, replace: bool = False, kind: str = "memorize",
               source: str | None = None, base_version: str | None = None) -> Job:
        if kind == "memorize" and self.store.exists(name) and not replace:
            raise ConflictError(f"A document named {name!r} already exists; send replace=true to "
                                "memorize it again.")
        if self._build_worker.pending() >= self.max_queue:
            raise BusyError(f"{self.max_queue} memorize jobs are already waiting here; try again later.",
                            retry_after=30)
        job = Job(id=uuid.uuid4().hex[:16], name=name, chars=len(text), replace=replace, kind=kind,
                  source=source, owner=self.owner, base_version=base_version)
        # Recorded and claimed before it is queued: from here on any replica sees it, and if
        # this process dies the claim is dropped and another replica runs the job.
        claim = self.board.create(job.to_json(), text)  # ConflictError if any replica builds this name
        with self._lock:
            self._jobs[job.id] = job
            self._claims[job.id] = claim
        self.board.forget_old()
        self._build_worker.submit(self._build, job, text)
        return job

    # ------------------------------------------------------------- replicas
    def adopt_orphans(self) -> list[str]:
        """Run the jobs that a process which died left queued or running (their claim was
        dropped with it: :mod:`memorag.jobs`); returns their ids. A read-only engine runs none."""
        if self.read_only or self._stopping.is_set():
            return []
        taken = self.board.orphans()
        if taken:
            self.store.recover()  # the dead process's half-built documents
        for record, claim in taken:
            job = Job.from_json(record)
            job.state, job.stage, job.owner, job.attempts = "queued", "queued", self.owner, job.attempts + 1
            job.error = job.started = None
            try:
                text = self.board.text(job.id)
            except OSError:
                job.state, job.error, job.finished = "failed", "its text was lost with the process that "                                                                "accepted it; send it again.", time.time()
                self.board.finish(job.to_json())
                claim.release()
                continue
            log.warning("job %s (%s) was left unfinished by a process that is gone: running it again here",
                        job.id, job.name)
            self.board.save(job.to_json())
            with self._lock:
                self._jobs[job.id] = job
                self._claims[job.id] = claim
            self._build_worker.submit(self._build, job, text)
        return [record["id"] for record, _ in taken]

    def watch_jobs(self, every: float = JOB_SCAN_SECONDS) -> None:
        """Look for orphaned jobs now and then every ``every`` seconds until :meth:`close`."""
        def loop() -> None:
            while True:
                try:
                    self.adopt_orphans()
                except Exception:  # a full disk or a vanished store: log it, look again later
                    log.exception("looking for orphaned jobs failed")
                if self._stopping.wait(every):
                    return

        if not self.read_only:
            threading.Thread(target=loop, name="memorag-jobs", daemon=True).start()

    def _already_done(self, job: Job, text: str) -> bool:
        """Whether a job taken over from a dead process had committed before it died."""
        if job.attempts < 2 or not self.store.exists(job.name):
            return False
        if job.kind == "append":
            return self.store.info(job.name).get("version") != job.base_version
        return stored_sha256(self.store, job.name) == text_sha256(text)

    def _build(self, job: Job, text: str) -> None:
        job.state, job.stage, job.started = "running", "loading", time.time()
        last_save = [0.0, job.stage]

        def progress(stage: str, done: int, total: int) -> None:
            job.report(stage, done, total)
            now = time.monotonic()
            if stage != last_save[1] or now - last_save[0] >= PROGRESS_SAVE_SECONDS:
                last_save[:] = [now, stage]
                self._save(job)

        self._save(job)
        ended: dict[str, Any] = {"state": "failed"}
        try:
            if self._already_done(job, text):
                stats = {**(self.store.info(job.name).get("stats") or {}),
                         "note": "committed by the process that died before it recorded the job as done"}
            elif job.kind == "append":
                stats = self._building_collection().append(job.name, text, progress=progress)
            else:
                stats = self._building_collection().add_text(job.name, text, source=job.source,
                                                             replace=job.replace, progress=progress)
            ended = {"stats": stats, "state": "done", "stage": "done", "fraction": 1.0}
        except MemoRAGError as exc:
            ended["error"] = str(exc)
        except Exception as exc:  # a bug or a backend crash: keep serving, report it on the job
            log.exception("memorize job %s failed", job.id)
            ended["error"] = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            ended["finished"] = time.time()
            # The record says the job ended before this process's copy does: a client that
            # sees "done" here finds the same on every replica.
            try:
                self.board.finish({**job.to_json(), **ended})
            except OSError:
                log.exception("could not record the end of job %s", job.id)
            for key, value in ended.items():
                setattr(job, key, value)
            with self._lock:
                self._jobs.pop(job.id, None)
                claim = self._claims.pop(job.id, None)
            if claim is not None:
                claim.release()  # after the record says it ended: nobody takes it over

    def _save(self, job: Job) -> None:
        try:
            self.board.save(job.to_json())
        except OSError:  # progress only: the job goes on
            log.warning("could not record the progress of job %s", job.id, exc_info=True)

    def job(self, job_id: str) -> Job:
        """A job of any replica over the store (this engine's own ones with their latest progress)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            return job
        record = self.board.read(job_id) if job_id.isalnum() else None
        if record is None:
            raise NotFoundError(f"No job {job_id!r} in this store (the records of the last 200 ended jobs "
                                "are kept).")
        return Job.from_json(record)

    def jobs(self) -> list[Job]:
        """Every job of the store, of every replica, oldest first."""
        with self._lock:
            mine = dict(self._jobs)
        listed = [mine.pop(r["id"], None) or Job.from_json(r) for r in self.board.records()]
        return sorted(listed + list(mine.values()), key=lambda j: j.created)

    def documents(self) -> list[dict]:
        """The store's entries, each with its ``status``: ``ready``, or ``updating`` while a
        job replaces or appends to it (``job`` names the job)."""
        building = self.board.active()
        return [{**entry, "status": "updating" if entry["name"] in building else "ready",
                 **({"job": building[entry["name"]]} if entry["name"] in building else {})}
                for entry in self.store.list()]

    def building(self, name: str) -> str | None:
        """The id of the job memorizing ``name``, if one is queued or running (in any replica)."""
        return self.board.active().get(name)

    # ------------------------------------------------------------------ ask
    def check_available(self, name: str) -> dict:
        """The store entry of ``name``; BusyError while it is being memorized, NotFoundError if absent."""
        name = check_name(name)
        job_id = self.building(name)
        if job_id is not None:
            job = self.board.read(job_id)
            pct = f" ({job['fraction']:.0%} done)" if job else ""
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
        self._check_writable("delete documents")
        name = check_name(name)
        with self.board.locked():  # no replica starts a job on the name between the check and the delete
            job_id = self.building(name)
            if job_id is not None:
                raise ConflictError(f"{name!r} is being memorized (job {job_id}); delete it when the job is done.")
            self.store.delete(name)
        # The answering memory may still hold the deleted state; harmless: the next question
        # about any document checks the store first, and a new document under this name has
        # a new version, so it is loaded afresh.

    def close(self, *, wait: bool = False) -> None:
        """Stop both workers once their queued calls are done and release the models and the
        cached memories (a stopped engine holds no KV state). ``wait``: until they have."""
        self._stopping.set()
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

