"""``memorag serve``: an HTTP API over a store of memorized documents (FastAPI + uvicorn).

Endpoints (docs/service.md has examples; the OpenAPI schema is at ``/openapi.json``):

    GET    /health                         liveness; whether the models are loaded
    GET    /ready                          readiness: 200 when it can answer, else 503 + Retry-After
    GET    /documents                      memorized documents (name, chars, sha256, status, ...)
    POST   /documents                      memorize {name, text, replace} as a job -> 202 {job}
    POST   /documents/upload               multipart file (txt, md, html, pdf) [+ name, replace] -> 202 {job}
    POST   /documents/{name}/append        {text}: append to a document as a job -> 202 {job}
    GET    /documents/{name}               one document's entry (?text=true adds its text)
    DELETE /documents/{name}
    GET    /jobs, /jobs/{id}               memorize jobs and their progress
    POST   /documents/{name}/ask           {question, task_type, stream, ...}: JSON, or SSE when stream=true
    POST   /documents/{name}/summarize     {stream, ...}
    POST   /ask                            {question, route_top, task_type, stream, ...}: across the store,
                                           numbered citations (document, character offsets)
    GET    /v1/models, POST /v1/chat/completions   OpenAI-compatible facade (model = document name)

Safety: bound to 127.0.0.1 unless a bearer token is set (``--token`` / ``MEMORAG_TOKEN``);
with a token, every route except /health, /ready and the schema pages needs
``Authorization: Bearer TOKEN``. Request bodies are capped (``--max-body-mb``); names
are checked against a strict pattern (memorag.docstore). Every error is JSON:
``{"error": "..."}`` (OpenAI-shaped under /v1).

Replicas: several processes may serve one store (docs/scaling.md). Jobs are recorded in the
store (memorag.jobs), so any replica answers GET /jobs/{id}; ``--read-only`` refuses writes.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from memorag import __version__
from memorag.docstore import NAME_RULES
from memorag.engine import JOB_SCAN_SECONDS, Cancelled, Engine, Job
from memorag.errors import (
    BackendError,
    BusyError,
    ConflictError,
    ContextTooLongError,
    InputError,
    MemoRAGError,
    ModelNotFoundError,
    NotFoundError,
    NotMemorizedError,
    ReadOnlyError,
    StateError,
)

if TYPE_CHECKING:
    from memorag.config import MemoragConfig

log = logging.getLogger("memorag.service")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_MB = 16.0
MIN_TOKEN_CHARS = 16
TOKEN_ENV = "MEMORAG_TOKEN"
STORE_ENV = "MEMORAG_STORE"
DEFAULT_STORE = "memorag_store"

_STATUS: list[tuple[type[MemoRAGError], int]] = [
    (NotFoundError, 404), (BusyError, 503), (ReadOnlyError, 403), (ConflictError, 409), (ContextTooLongError, 413),
    (InputError, 400), (NotMemorizedError, 409), (StateError, 409), (ModelNotFoundError, 500),
    (BackendError, 502),
]


def status_for(exc: MemoRAGError) -> int:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 400


@dataclass
class Settings:
    """What ``memorag serve`` runs with: :meth:`from_config` makes it from the configuration
    tree (memorag.config.MemoragConfig), whose ``service`` section and model specs map onto
    these fields one to one; every other option of the tree goes to the engine
    (``engine_options``)."""

    store: str = DEFAULT_STORE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1024 * 1024)
    mem_model: str = "default"
    ret_model: str = "default"
    gen_model: str | None = None
    judge: str | None = None  # a model spec, or "none"; None: "auto" (answering.generator_judge)
    warm_up: bool = True
    read_only: bool = False  # refuse writes, run no jobs (a replica that only answers)
    job_scan_seconds: float = JOB_SCAN_SECONDS  # how often to look for jobs a dead replica left
    max_queue: int = 32  # requests waiting beyond which one is refused with 503
    # the engine's other keywords (Engine(**engine_options)): pipeline options and its collections'
    engine_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: MemoragConfig, *, token: str | None = None) -> Settings:
        """The settings a configuration tree makes (the token is no part of the tree: a secret)."""
        options = config.engine_kwargs()
        judge = options.pop("judge", "auto")
        s = config.service
        return cls(store=config.collection.store, host=s.host, port=s.port, token=token,
                   max_body_bytes=int(s.max_body_mb * 1024 * 1024), mem_model=options.pop("mem_model"),
                   ret_model=options.pop("ret_model"), gen_model=options.pop("gen_model"),
                   judge=None if judge == "auto" else ("none" if judge is None else judge), warm_up=s.warm_up,
                   read_only=options.pop("read_only"), job_scan_seconds=s.job_scan_seconds,
                   max_queue=options.pop("max_queue"), engine_options=options)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to expose the API beyond this machine without a token (and refuse weak tokens)."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"The bearer token must have at least {MIN_TOKEN_CHARS} characters "
                         "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`).")
    if not is_loopback(host) and not token:
        raise InputError(f"Refusing to bind to {host} without a bearer token: anyone who can reach it could "
                         f"read and delete your documents. Set {TOKEN_ENV} (or --token), or bind to 127.0.0.1.")


# ----------------------------------------------------------------- request bodies
class MemorizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description=f"Document name: {NAME_RULES}", examples=["pride-ch1-3"])
    text: str = Field(description="The document, as plain text.")
    replace: bool = Field(False, description="Memorize again if the name exists (the old version stays on "
                                             "disk until the new one is complete).")


class AppendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="Text to add at the end of the document (a blank line is put between "
                                  "unless one side already has a line break there).")


UPLOAD_FIELDS = ("file", "name", "replace")


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(max_length=8000, examples=["Who is the new tenant of Netherfield Park?"])
    task_type: Literal["memorag", "qa", "rag"] = Field(
        "memorag", description="memorag: clues + retrieval; qa: surrogate questions; rag: plain RAG (question only).")
    stream: bool = Field(False, description="Answer as server-sent events: evidence, token..., done.")
    max_new_tokens: int = Field(256, ge=1, le=2048)
    top_k: int | None = Field(None, ge=1, le=20, description="Evidence chunks (default: the pipeline's 3).")


class StoreAskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(max_length=8000, examples=["Which supplier raised prices in 2023?"])
    task_type: Literal["memorag", "qa", "rag"] = Field(
        "memorag", description="memorag: clues + retrieval; qa: surrogate questions; rag: plain RAG (question "
                               "only, no memory).")
    stream: bool = Field(False, description="Answer as server-sent events: evidence, token..., done.")
    max_new_tokens: int = Field(256, ge=1, le=2048)
    top_k: int | None = Field(None, ge=1, le=20, description="Evidence chunks (default: the pipeline's 3).")
    route_top: int | None = Field(None, ge=1, le=20, description="Documents the question is routed to (default 2).")


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stream: bool = False
    max_new_tokens: int = Field(400, ge=1, le=2048)
    top_k: int | None = Field(4, ge=1, le=20)


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (temperature, ...)
    model: str = Field(description="The name of a memorized document.")
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(None, ge=1, le=2048)


# ------------------------------------------------------------------- middleware
class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit_mb = self.max_bytes / 1024 / 1024
        message = f"Request body too large: the limit is {limit_mb:g} MB (memorag serve --max-body-mb)."
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, {"error": "Content-Length is not a number."})
                    return
                if declared > self.max_bytes:
                    await _send_json(send, 413, {"error": message})
                    return
        received = 0
        started = refused = False

        async def limited_receive():
            nonlocal received, started, refused
            if refused:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    # A chunked body has no Content-Length: answer 413 as soon as it overflows,
                    # then tell the app the client is gone (raising here would turn into 400).
                    refused = True
                    if not started:
                        started = True
                        await _send_json(send, 413, {"error": message})
                    return {"type": "http.disconnect"}
            return msg

        async def tracking_send(msg):
            nonlocal started
            if refused:
                return  # the 413 is already sent
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not refused:
                raise


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# ------------------------------------------------------------------------ SSE
def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _error_body(exc: BaseException) -> tuple[int, dict]:
    if isinstance(exc, MemoRAGError):
        return status_for(exc), {"error": str(exc)}
    log.error("request failed", exc_info=exc)
    return 500, {"error": f"internal error: {type(exc).__name__} (see the server log)"}


def _event_stream(submit: Callable[..., Future], fmt_piece: Callable[[str, Any], str | None],
                  fmt_end: Callable[[Future], list[str]]) -> StreamingResponse:
    """Queue a model call now and stream its events as they happen.

    Called inside a request handler: ``submit`` validates and queues (so a bad request
    still gets a 4xx before any byte is streamed). The model runs on the engine's worker
    thread; its callbacks hop onto the event loop through a queue. If the client goes away,
    the stream is closed and ``cancel`` stops decoding at the next token (or before it
    starts, if the call was still queued).
    """
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def emit(kind: str, data: Any) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, (kind, data))
        except RuntimeError:  # the loop is closed: the server is stopping
            cancel.set()

    future = submit(on_token=lambda t: emit("token", t), on_evidence=lambda ev: emit("evidence", ev), cancel=cancel)
    future.add_done_callback(lambda _f: emit("_end", None))

    async def events_out() -> AsyncIterator[str]:
        try:
            while True:
                kind, data = await events.get()
                if kind == "_end":
                    break
                chunk = fmt_piece(kind, data)
                if chunk:
                    yield chunk
            for chunk in fmt_end(future):
                yield chunk
        finally:
            cancel.set()

    return StreamingResponse(events_out(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ------------------------------------------------------------------------ app
def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app. ``engine`` defaults to one over ``settings.store`` with its models."""
    check_bind(settings.host, settings.token)
    judge = {"judge": None if settings.judge == "none" else settings.judge} if settings.judge else {}
    engine = engine or Engine(settings.store, mem_model=settings.mem_model, ret_model=settings.ret_model,
                              gen_model=settings.gen_model, read_only=settings.read_only,
                              max_queue=settings.max_queue, **{**settings.engine_options, **judge})
    if engine.read_only != settings.read_only:
        raise InputError(f"The settings say read_only={settings.read_only} but the engine given has "
                         f"read_only={engine.read_only}.")
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if settings.warm_up:
            engine.warm_up()
        engine.watch_jobs(settings.job_scan_seconds)  # a read-only engine runs no jobs
        yield
        engine.close()

    app = FastAPI(title="memorag", version=__version__, lifespan=lifespan,
                  description="Memory-augmented RAG over long documents: memorize once, ask many times.")
    app.state.engine = engine
    app.state.settings = settings
    bearer = HTTPBearer(auto_error=False, description="Required when the service has a token (MEMORAG_TOKEN).")

    def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.token is None:
            return
        if creds is None:
            raise _ApiError(401, "Missing bearer token: send the header 'Authorization: Bearer <token>'.",
                            {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(creds.credentials.encode(), settings.token.encode()):
            raise _ApiError(401, "Wrong bearer token.", {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    api = APIRouter(dependencies=[Depends(require_token)])

    # ------------------------------------------------------------- errors
    def _is_openai(request: Request) -> bool:
        return request.url.path.startswith("/v1/")

    def _json_error(request: Request, status: int, message: str, headers: dict | None = None,
                    extra: dict | None = None) -> JSONResponse:
        if _is_openai(request):
            kind = "invalid_request_error" if status < 500 else "server_error"
            body: dict = {"error": {"message": message, "type": kind, "code": status}}
        else:
            body = {"error": message, **(extra or {})}
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError):
        return _json_error(request, exc.status, exc.message, exc.headers)

    @app.exception_handler(MemoRAGError)
    async def _memorag_error(request: Request, exc: MemoRAGError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, BusyError) else None
        return _json_error(request, status_for(exc), str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                problems.append(f"the body is not valid JSON ({(err.get('ctx') or {}).get('error', 'parse error')})")
                continue
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return _json_error(request, 422, "Invalid request: " + "; ".join(problems),
                           extra={"detail": json.loads(json.dumps(exc.errors(), default=str))})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _json_error(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        status, body = _error_body(exc)
        return _json_error(request, status, body["error"])

    # ------------------------------------------------------------- routes
    @app.get("/health", tags=["service"])
    def health() -> dict:
        return {"status": "ok", "version": __version__, "models_loaded": engine.ready.is_set(),
                "auth": settings.token is not None, "read_only": engine.read_only}

    @app.get("/ready", tags=["service"],
             responses={503: {"description": "Not ready (models loading or failed, store unreadable, queue "
                                             "full): {\"error\": why}, with Retry-After."}})
    def ready(request: Request) -> JSONResponse:
        """Readiness for a load balancer: 200 when this replica can answer a question now."""
        is_ready, why, wait = engine.readiness()
        if not is_ready:
            return _json_error(request, 503, f"Not ready: {why}.", {"Retry-After": str(wait)},
                               extra={"models_loaded": engine.ready.is_set()})
        return JSONResponse({"status": "ready", "models_loaded": True, "read_only": engine.read_only})

    @api.get("/documents", tags=["documents"])
    def list_documents() -> dict:
        docs = engine.documents()
        building = [{"name": j.name, "job": j.id, "fraction": j.fraction} for j in engine.jobs()
                    if j.finished is None]
        return {"documents": docs, "building": building}

    @api.post("/documents", status_code=202, tags=["documents"])
    def memorize(body: MemorizeRequest) -> JSONResponse:
        return _accepted(engine.memorize(body.name, body.text, replace=body.replace))

    def _accepted(job: Job) -> JSONResponse:
        return JSONResponse(job.to_json(), status_code=202, headers={"Location": f"/jobs/{job.id}"})

    @api.post("/documents/upload", status_code=202, tags=["documents"],
              responses={200: {"description": "The store already holds this text under this name: nothing "
                                              "to do (no job)."},
                         202: {"description": "The memorize job (its id; Location: /jobs/{id})."}})
    async def upload(request: Request,
                     file: UploadFile = File(description="A .txt, .md, .html or .pdf file; its text is extracted "
                                                         "as `memorag add` extracts it."),
                     name: str | None = Form(None, description="Document name (default: from the file name, as "
                                                               f"`memorag add` names it). {NAME_RULES}"),
                     replace: bool = Form(False, description="Memorize the file in place of a different "
                                                             "document of that name.")) -> JSONResponse:
        """Memorize an uploaded file as a background job (multipart/form-data)."""
        form = await request.form()  # already parsed for the parameters above: this is the same form
        unknown = sorted(set(form.keys()) - set(UPLOAD_FIELDS))
        if unknown:
            raise _ApiError(422, f"Invalid request: unknown form field(s) {', '.join(map(repr, unknown))}; "
                                 f"an upload takes {', '.join(UPLOAD_FIELDS)}.")
        if len(form.getlist("file")) > 1:
            raise _ApiError(422, "Invalid request: one file per upload.")
        data = await file.read()
        # extraction (a PDF's text layer) takes CPU time: off the event loop
        stored_as, job = await run_in_threadpool(engine.upload, file.filename or "", data, name=name,
                                                 replace=replace)
        if job is None:
            return JSONResponse({"name": stored_as, "status": "unchanged"})
        return _accepted(job)

    @api.post("/documents/{name}/append", status_code=202, tags=["documents"])
    def append(name: str, body: AppendRequest) -> JSONResponse:
        """Append text to a document as a background job (the memory reads only the new text
        when it can; see the job's stats.append)."""
        return _accepted(engine.append(name, body.text))

    @api.get("/documents/{name}", tags=["documents"])
    def get_document(name: str, text: bool = False) -> dict:
        info = engine.check_available(name)
        if text:
            info = {**info, "text": engine.store.text(name)}
        return info

    @api.delete("/documents/{name}", tags=["documents"])
    def delete_document(name: str) -> dict:
        engine.delete(name)
        return {"deleted": name}

    @api.get("/jobs", tags=["jobs"])
    def list_jobs() -> dict:
        return {"jobs": [j.to_json() for j in engine.jobs()]}

    @api.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str) -> dict:
        return engine.job(job_id).to_json()

    def _native_stream(start: Callable[..., Future]) -> StreamingResponse:
        def piece(kind: str, data: Any) -> str | None:
            return _sse(kind, {"text": data} if kind == "token" else data)

        def end(future: Future) -> list[str]:
            exc = future.exception()
            if exc is None:
                return [_sse("done", future.result())]
            if isinstance(exc, Cancelled):
                return []
            status, body = _error_body(exc)
            return [_sse("error", {**body, "status": status})]

        return _event_stream(start, piece, end)

    async def _run(start: Callable[..., Future]) -> dict:
        return await asyncio.wrap_future(start(on_token=None, on_evidence=None, cancel=None))

    def _starter(name: str, question: str | None, task_type: str, max_new_tokens: int, top_k: int | None):
        def start(**callbacks: Any) -> Future:
            return engine.ask(name, question, task_type=task_type, max_new_tokens=max_new_tokens, top_k=top_k,
                              **callbacks)

        return start

    @api.post("/documents/{name}/ask", tags=["questions"],
              responses={200: {"description": "The answer as JSON, or (stream=true) text/event-stream with "
                                              "events evidence, token (many), then done or error."}})
    async def ask(name: str, body: AskRequest):
        start = _starter(name, body.question, body.task_type, body.max_new_tokens, body.top_k)
        if body.stream:
            return _native_stream(start)
        return await _run(start)

    @api.post("/ask", tags=["questions"],
              responses={200: {"description": "The answer with numbered citations as JSON, or (stream=true) "
                                              "text/event-stream with events evidence, token (many), then done "
                                              "or error."}})
    async def ask_store(body: StoreAskRequest):
        """Ask across the store: the question is routed to the best-matching documents and
        answered from their evidence, each piece a numbered citation (document, chunk,
        character offsets into the document's text)."""
        def start(**callbacks: Any) -> Future:
            return engine.ask_store(body.question, route_top=body.route_top, top_k=body.top_k,
                                    max_new_tokens=body.max_new_tokens, task_type=body.task_type, **callbacks)

        if body.stream:
            return _native_stream(start)
        return await _run(start)

    @api.post("/documents/{name}/summarize", tags=["questions"])
    async def summarize(name: str, body: SummarizeRequest | None = None):
        body = body or SummarizeRequest()
        start = _starter(name, None, "summarize", body.max_new_tokens, body.top_k)
        if body.stream:
            return _native_stream(start)
        return await _run(start)

    # ------------------------------------------------------- OpenAI facade
    @api.get("/v1/models", tags=["openai"])
    def openai_models() -> dict:
        return {"object": "list", "data": [{"id": d["name"], "object": "model", "owned_by": "memorag",
                                            "created": int(time.time())} for d in engine.store.list()]}

    @api.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest):
        """The last user message is the question; ``model`` names the document.

        Earlier turns are ignored: each question is answered from the document's memory and
        evidence alone. The answer's clues and evidence are in the non-standard ``memorag``
        field (non-streaming only).
        """
        question = _last_user_text(body.messages)
        max_tokens = body.max_completion_tokens or body.max_tokens or 256
        start = _starter(body.model, question, "memorag", max_tokens, None)
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not body.stream:
            result = await _run(start)
            return {"id": cid, "object": "chat.completion", "created": created, "model": body.model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": result["answer"]}}],
                    "memorag": {k: result[k] for k in ("clues", "evidence", "timings")}}

        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                          "model": body.model,
                                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]},
                                         ensure_ascii=False) + "\n\n"

        first = [True]

        def piece(kind: str, data: Any) -> str | None:
            if kind != "token":
                return None
            delta = {"role": "assistant", "content": data} if first[0] else {"content": data}
            first[0] = False
            return chunk(delta)

        def end(future: Future) -> list[str]:
            exc = future.exception()
            if isinstance(exc, Cancelled):
                return []
            if exc is not None:
                status, err = _error_body(exc)
                return ["data: " + json.dumps({"error": {"message": err["error"], "type": "server_error",
                                                         "code": status}}) + "\n\n", "data: [DONE]\n\n"]
            return [chunk({}, "stop"), "data: [DONE]\n\n"]

        return _event_stream(start, piece, end)

    app.include_router(api)
    # Outermost, so an oversized body is refused before any route or dependency runs.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


class _ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _last_user_text(messages: list[ChatMessageIn]) -> str:
    for m in reversed(messages):
        if m.role == "user":
            if isinstance(m.content, str):
                text = m.content
            else:
                text = " ".join(p.get("text", "") for p in (m.content or []) if p.get("type") == "text")
            if text.strip():
                return text
            break
    raise InputError("messages must end with a user message that has text (the question).")


def serve(settings: Settings) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=os.environ.get("MEMORAG_LOG_LEVEL", "info"),
                timeout_graceful_shutdown=5)
