"""Memorize a corpus on a Ray cluster: one pipeline per worker, one writer for the store.

``memorag add PATHS --store S --ray [ADDRESS]`` and :func:`add_on_ray` do what
:meth:`memorag.collection.Collection.add` does, with the memorize step spread over a pool of
Ray actors (docs/scaling.md):

* The driver (the process that runs ``memorag add``) reads every file, names it and checks
  it against the store exactly as a single-machine add does; documents whose text sha256
  equals the stored one are skipped before any worker starts.
* Each worker is a Ray actor that loads the models once (spec strings, so any node can load
  them) and memorizes the documents handed to it into a save dir of its own under the
  store's staging area, ``ROOT/.staging/ray-RUN~PID@HOST/NNNN/state``; ROOT must be the same path
  on a file system every node sees.
* The driver verifies each finished save dir (every file's size and sha256 against its
  manifest) and commits it with :meth:`memorag.docstore.DocStore.commit`: the store keeps one
  writer, and a commit is the same atomic rename a single-machine add makes.
* A worker that dies mid-document is restarted by Ray and the document is handed to it
  again (``max_restarts``/``max_task_retries``); the memorize checkpoints, kept in a
  checkpoint dir on the shared file system (``ROOT/.checkpoints`` by default), let the
  retry resume from the last embedding batch and memory state saved, on any node.

Ray is an optional dependency (``pip install 'memorag[ray]'``), imported only here and
only when a distributed add runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memorag.checkpoint import DEFAULT_EVERY_TOKENS, Checkpoints
from memorag.collection import AddResult, files_by_name, stored_sha256, text_sha256
from memorag.docstore import STATE, DocStore
from memorag.errors import ConflictError, InputError, MemoRAGError, StateError
from memorag.extract import extract_text
from memorag.store import read_manifest

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
INSTALL_HINT = "pip install 'memorag[ray]'"
CHECKPOINT_DIR = ".checkpoints"  # in the store's root: hidden names are never documents
DEFAULT_MAX_RETRIES = 3


def import_ray() -> Any:
    """The ``ray`` module, or one clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"Distributed memorize needs Ray, which is not installed: {INSTALL_HINT}.") from None
    return ray


def connect(address: str | None = None, **init_kwargs: Any) -> bool:
    """Attach to the Ray cluster at ``address`` (``None``: ``$RAY_ADDRESS``, else the cluster
    ``ray start`` last started on this machine, else a new local one). Returns whether this
    call started the connection (so the caller knows to shut it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    init_kwargs.setdefault("include_dashboard", False)
    init_kwargs.setdefault("log_to_driver", False)
    try:
        ray.init(address=address, **init_kwargs)
    except ConnectionError as exc:
        raise InputError(f"Cannot reach a Ray cluster at {address!r}: {exc}. Start one with `ray start --head` "
                         "(docs/scaling.md).") from None
    return True


@dataclass
class DistributedAddResult(AddResult):
    """:class:`AddResult` plus what a cluster adds: documents that failed (name -> error, the
    others committed anyway) and which worker (host, pid) memorized each document."""

    failed: dict[str, str] = field(default_factory=dict)
    workers: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**super().to_json(), "failed": self.failed, "workers": self.workers}


@dataclass
class _Planned:
    name: str
    source: Path
    text: str
    replace: bool
    sha256: str


def plan_add(store: DocStore, paths: Iterable[str | Path], *,
             replace: bool = False) -> tuple[list[_Planned], DistributedAddResult]:
    """What an add of ``paths`` would memorize, checked before any model or worker starts:
    the same names, refusals and skips as :meth:`memorag.collection.Collection.add`."""
    by_name, skipped = files_by_name(paths)
    result = DistributedAddResult(skipped=[str(s) for s in skipped])
    plan: list[_Planned] = []
    for name, f in by_name.items():
        text = extract_text(f)
        sha = text_sha256(text)
        exists = store.exists(name)
        if exists and stored_sha256(store, name) == sha:
            result.unchanged.append(name)
            continue
        if exists and not replace:
            raise ConflictError(f"A different document named {name!r} is already in the store; use "
                                "update (`memorag add --update`) to replace it.")
        plan.append(_Planned(name, f, text, exists, sha))
    return plan, result


def check_plain(options: dict[str, Any]) -> None:
    """Refuse pipeline options that are objects: each worker builds its own models from specs."""
    for key, value in options.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise InputError(f"{key} must be a spec string for a distributed add (each worker loads its own "
                             f"model); got a {type(value).__name__}.")


def worker_options(store: DocStore, given: dict[str, Any]) -> dict[str, Any]:
    """The pipeline options every worker builds with: ``given`` over the models, chunk size and
    index the store's documents were made with (a store keeps one set of models)."""
    check_plain(given)
    options = {k: v for k, v in given.items() if v is not None}
    docs = store.list()
    if docs:
        manifest = read_manifest(store.state_dir(docs[0]["name"]), verify=False)
        models = manifest.get("models", {})
        options.setdefault("mem_model_name_or_path", models.get("memory", {}).get("spec", "default"))
        options.setdefault("ret_model_name_or_path", models.get("embedder", {}).get("spec", "default"))
        options.setdefault("retrieval_chunk_size", manifest.get("retrieval", {}).get("chunk_tokens", 512))
        options.setdefault("index", manifest.get("index", "faiss"))
    return options


class _NoAnswers:
    """A worker only memorizes: this stands in for the generator so its weights never load."""

    def chat(self, messages: list, **kwargs: Any) -> str:
        raise StateError("A memorize worker does not answer questions.")

    def stream_chat(self, messages: list, **kwargs: Any):
        raise StateError("A memorize worker does not answer questions.")


class MemorizeWorker:
    """One Ray actor: a pipeline built once, memorizing one document per call into a save dir."""

    def __init__(self, options: dict[str, Any], checkpoint_dir: str, checkpoint_every: int) -> None:
        from memorag.pipeline import MemoRAG

        self.pipe = MemoRAG(customized_gen_model=_NoAnswers(), **options)
        self.checkpoints = Checkpoints(checkpoint_dir, every_tokens=checkpoint_every)

    def where(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid()}

    def memorize(self, text: str, document_dir: str) -> dict:
        """Memorize ``text`` into ``document_dir/state``. A retry after a crash starts from an
        empty dir (a half-written save dir is never reused) and resumes from the checkpoints."""
        target = Path(document_dir)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        stats = self.pipe.memorize(text, save_dir=target / STATE, progress=False, resume=self.checkpoints)
        return {"stats": stats, "worker": self.where()}


def add_on_ray(store: str | Path, paths: Iterable[str | Path], *, replace: bool = False,
               address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1,
               checkpoint_dir: str | Path | None = None, checkpoint_every: int = DEFAULT_EVERY_TOKENS,
               max_retries: int = DEFAULT_MAX_RETRIES, on_document: Callable[[str, str], None] | None = None,
               on_dispatch: Callable[[str, dict], None] | None = None, progress: bool = False,
               **pipeline_options: Any) -> DistributedAddResult:
    """Memorize the files in ``paths`` into the store at ``store`` on a pool of Ray actors.

    Planning, naming, skipping and refusals are those of ``Collection.add`` (``replace``:
    memorize changed documents again). ``address``: the Ray cluster (see :func:`connect`;
    ignored when Ray is already initialized in this process). ``workers``: actors in the pool
    (default: one per alive node), each reserving ``cpus_per_worker`` CPUs and spread over
    the nodes. ``checkpoint_dir`` (default ``STORE/.checkpoints``) must be on the shared file
    system so a retry on another node resumes. ``max_retries``: restarts of a dead worker and
    retries of its document. ``pipeline_options`` are :class:`memorag.MemoRAG` options as
    plain values (model spec strings, ``retrieval_chunk_size``, ``index``, ``compression``).

    ``on_document(name, status)`` is called on the driver as each document is committed
    (``added``, ``updated``, ``unchanged``) or fails (``failed``); ``on_dispatch(name,
    worker)`` when a document is handed to a worker (``{"host", "pid"}``). Documents that
    fail after their retries are listed in ``failed``; every other document is committed.
    """
    if workers is not None and workers < 1:
        raise InputError(f"workers must be at least 1; got {workers!r}.")
    if not cpus_per_worker > 0:
        raise InputError(f"cpus_per_worker must be positive; got {cpus_per_worker!r}.")
    if max_retries < 0:
        raise InputError(f"max_retries must be 0 or more; got {max_retries!r}.")
    check_plain(pipeline_options)
    ray = import_ray()  # before the store is made: a missing Ray leaves nothing behind
    docstore = DocStore(store)
    plan, result = plan_add(docstore, paths, replace=replace)
    for name in result.unchanged:
        if on_document:
            on_document(name, "unchanged")
    if not plan:
        return result
    options = worker_options(docstore, pipeline_options)
    checkpoints = Path(checkpoint_dir).expanduser().resolve() if checkpoint_dir else docstore.root / CHECKPOINT_DIR
    Checkpoints(checkpoints, every_tokens=checkpoint_every)  # a bad interval fails here, not in every worker
    started = connect(address)
    run_dir = docstore.new_staging(f"ray-{uuid.uuid4().hex[:12]}")
    try:
        _run(ray, docstore, plan, result, run_dir, options=options, workers=workers, cpus_per_worker=cpus_per_worker,
             checkpoint_dir=str(checkpoints), checkpoint_every=checkpoint_every, max_retries=max_retries,
             on_document=on_document, on_dispatch=on_dispatch, progress=progress)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        if started:
            ray.shutdown()
    return result


def _pool_size(ray: Any, workers: int | None, cpus_per_worker: float) -> int:
    """``workers``, or one per alive node with the CPUs for one (a head started with --num-cpus 0
    has none); more workers than the cluster's nodes have CPUs for would wait forever: refused."""
    slots = [int(n.get("Resources", {}).get("CPU", 0) // cpus_per_worker) for n in ray.nodes() if n.get("Alive")]
    room = sum(slots)
    if workers is None:
        workers = sum(1 for s in slots if s > 0)
    if workers < 1 or workers > room:
        raise InputError(f"The Ray cluster ({len(slots)} node(s)) has CPUs for {room} worker(s) of "
                         f"{cpus_per_worker:g} CPU(s) each; asked for {workers}.")
    return workers


def _run(ray: Any, docstore: DocStore, plan: list[_Planned], result: DistributedAddResult, run_dir: Path, *,
         options: dict, workers: int | None, cpus_per_worker: float, checkpoint_dir: str, checkpoint_every: int,
         max_retries: int, on_document: Callable[[str, str], None] | None,
         on_dispatch: Callable[[str, dict], None] | None, progress: bool) -> None:
    n_workers = min(_pool_size(ray, workers, cpus_per_worker), len(plan))
    remote_worker = ray.remote(MemorizeWorker).options(
        num_cpus=cpus_per_worker, max_restarts=max_retries, max_task_retries=max_retries,
        scheduling_strategy="SPREAD")
    actors = [remote_worker.remote(options, checkpoint_dir, checkpoint_every) for _ in range(n_workers)]
    try:  # a model spec a node cannot load, or memorag missing there, is one error before any document
        ray.get([actor.where.remote() for actor in actors])
    except ray.exceptions.RayActorError as exc:
        for actor in actors:
            ray.kill(actor)
        raise StateError(f"The Ray workers could not start: {_worker_error(exc)}") from None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan), desc=f"memorize on {n_workers} Ray workers", unit="doc")
    queue = list(enumerate(plan))
    running: dict[Any, tuple[Any, int, _Planned]] = {}  # result ref -> (actor, number, document)
    idle = list(actors)
    try:
        while queue or running:
            while idle and queue:
                actor = idle.pop(0)
                number, doc = queue.pop(0)
                if on_dispatch:  # asked first: an actor runs its calls in order
                    on_dispatch(doc.name, ray.get(actor.where.remote()))
                ref = actor.memorize.remote(doc.text, str(run_dir / f"{number:06d}"))
                running[ref] = (actor, number, doc)
            if not running:  # no worker left alive to take the queue
                for _, doc in queue:
                    _fail(result, doc, "no Ray worker is left to memorize it", on_document)
                break
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, number, doc = running.pop(ref)
            try:
                done = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the worker died more often than it may restart
                _fail(result, doc, f"its worker died ({_worker_error(exc)})", on_document)
                # the actor is not put back: Ray will not restart it again
            except ray.exceptions.RayTaskError as exc:  # the memorize raised: not retried, it would again
                cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
                _fail(result, doc, str(cause) if isinstance(cause, MemoRAGError) else _first_line(cause), on_document)
                idle.append(actor)
            else:
                idle.append(actor)
                _commit(docstore, doc, run_dir / f"{number:06d}", done, result, on_document)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)


def _commit(docstore: DocStore, doc: _Planned, document_dir: Path, done: dict, result: DistributedAddResult,
            on_document: Callable[[str, str], None] | None) -> None:
    """Check the worker's save dir (every file against its manifest) and move it into the store."""
    try:
        read_manifest(document_dir / STATE, verify=True)
        docstore.commit(document_dir, doc.name, doc.text, done["stats"], replace=doc.replace,
                        extra={"sha256": doc.sha256, "source": str(doc.source)})
    except MemoRAGError as exc:
        _fail(result, doc, str(exc), on_document)
        return
    result.stats[doc.name] = done["stats"]
    result.workers[doc.name] = done["worker"]
    (result.updated if doc.replace else result.added).append(doc.name)
    if on_document:
        on_document(doc.name, "updated" if doc.replace else "added")


def _fail(result: DistributedAddResult, doc: _Planned, why: str, on_document: Callable[[str, str], None] | None
          ) -> None:
    result.failed[doc.name] = why
    if on_document:
        on_document(doc.name, "failed")


def _worker_error(exc: BaseException) -> str:
    """The error at the bottom of a worker's traceback, as one line (a memorag error's own message)."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(exc).__name__
    kind, sep, message = last.partition(": ")
    if sep and kind.startswith("memorag.errors."):
        return message
    return last[:300]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


__all__ = ["CHECKPOINT_DIR", "DistributedAddResult", "MemorizeWorker", "add_on_ray", "connect", "import_ray",
           "plan_add", "worker_options"]
