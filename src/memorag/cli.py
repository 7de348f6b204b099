"""The ``memorag`` command line."""

from __future__ import annotations

import functools
import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from memorag.checkpoint import DEFAULT_EVERY_TOKENS
from memorag.config import DEFAULT_EVIDENCE, PASSAGE_CHARS
from memorag.errors import MemoRAGError

app = typer.Typer(
    help="Memory-augmented RAG over long documents: memorize a document once, ask it many times.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)

SAMPLE = "data/sample_pride_and_prejudice_ch1-3.txt"
SAMPLE_QUESTION = "Who is the new tenant of Netherfield Park, and how rich is he?"
RoutingIndexOption = typer.Option(
    help="How questions are routed to documents: ram (every document's chunks joined in RAM), or "
         "qdrant:URL_OR_DIR (one store-wide index on a Qdrant server, or Qdrant's embedded engine in DIR; "
         "docs/collections.md). Recorded in the store on first use; default: what the store records, else ram.",
    show_default=False)


ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="A TOML or JSON file of settings (the configuration tree: docs/api.md); the flags given on "
                     "the command line go over it.", show_default=False)]


# The configuration file `memorag ui --config` hands to the demo page (memorag.demo_app).
CONFIG_ENV = "MEMORAG_CONFIG"


def command_config(ctx: typer.Context, file: Path | None, flags: dict[str, tuple[str, object]]):
    """One command's configuration tree (memorag.config.MemoragConfig): FILE's (or the
    defaults), with the command's flags set over it. ``flags`` maps a dotted path to (the flag's
    parameter name, its value): with FILE only the flags given on the command line (or by
    environment) count; without it every flag does, so a command's own defaults hold."""
    from memorag.config import MemoragConfig, load_config, with_values

    def given(param: str) -> bool:
        # by name: typer may bring its own copy of click, and so of the ParameterSource enum
        source = ctx.get_parameter_source(param)
        return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")

    base = load_config(file) if file is not None else MemoragConfig()
    return with_values(base, {path: value for path, (param, value) in flags.items() if file is None or given(param)})


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def friendly(fn):
    """Turn the errors a user can cause into one line and a non-zero exit, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MemoRAGError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", code=130)

    return wrapper


def _print_answer(ans, show_clues: bool, show_evidence: bool, streamed: bool) -> None:
    from memorag.plans import found_by_words

    if show_clues and ans.clues is not None:
        typer.secho("clues:", bold=True, err=True)
        grounded = ans.clues.grounded
        used = ans.clues.in_evidence([h.text for h in ans.evidence])
        for i, line in enumerate(ans.clues.lines()):
            found = grounded[i] if i < len(grounded) else None
            mark = "" if found is None else (clue_mark(used[i]) if found else "  [not found in the document]")
            typer.echo(f"  - {line}{mark}", err=True)
    if show_clues and ans.bridge:  # the memory asked again, told the judge's best sentence
        # Only the quote that brought its chunk into the evidence: the others moved nothing
        # (the top sentence does not link to them), and beside the answer they read as noise.
        # --json keeps every quote.
        moved = {h.chunk_id for h in ans.evidence if "memory" in h.found_by}
        in_moved = " ".join(" ".join(h.text.split()) for h in ans.evidence if h.chunk_id in moved)
        used = [line for line in ans.bridge[1:] if " ".join(line.split()) in in_moved]
        if used:
            typer.secho("second hop (the memory, told the top passage's best sentence):", bold=True, err=True)
            for line in used:
                typer.echo(f"  - {line}  [in the evidence]", err=True)
    if show_evidence:
        typer.secho("evidence:", bold=True, err=True)
        read = ans.read if len(ans.read) == len(ans.evidence) else [h.text for h in ans.evidence]
        for h, piece in zip(ans.evidence, read):
            # what the generator read: the chunk, or under excerpts/passages the part of it
            snippet = " ".join(piece.split())
            part = "" if piece == h.text else " (part of the chunk)"
            typer.echo(f"  [{h.chunk_id}]{part} {snippet[:300]}{'...' if len(snippet) > 300 else ''}"
                       f"{'  (' + found_by_words(h.found_by) + ')' if h.found_by else ''}", err=True)
    if not streamed:
        typer.echo(ans.answer)


def clue_mark(in_evidence: bool | None) -> str:
    """A found clue's mark: whether the evidence the answer was given holds its sentence."""
    where = "in the evidence" if in_evidence else "not in the evidence"
    return f"  [found in the document, {where}]"


def _answer_printer():
    """Prints "answer: " (stderr) and returns a callback streaming the answer to stdout."""
    typer.secho("answer: ", bold=True, nl=False, err=True)

    def on_token(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    return on_token


def _ask(pipe, question: str, task_type: str, max_new_tokens: int, use_memory_answer: bool, as_json: bool,
         show_clues: bool, show_evidence: bool):
    streamed = not as_json
    on_token = _answer_printer() if streamed else None
    ans = pipe.ask(question, task_type=task_type, max_new_tokens=max_new_tokens,
                   use_memory_answer=use_memory_answer, on_token=on_token)
    if streamed:
        sys.stdout.write("\n")
        _print_answer(ans, show_clues, show_evidence, streamed=True)
    else:
        typer.echo(json.dumps(ans.to_json(), ensure_ascii=False, indent=1))
    return ans


@app.command()
@friendly
def memorize(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Text file to memorize (UTF-8; UTF-16/32 with a BOM).")],
    save_dir: Annotated[Path, typer.Option("--save-dir", "-o", help="Directory to write the memory, chunks and index to.")],
    mem_model: Annotated[str, typer.Option(help="Memory model spec (default, qwen2.5-1.5b, a .gguf path, openai:MODEL@URL, hf:ID).")] = "default",
    ret_model: Annotated[str, typer.Option(help="Embedding model spec (default = all-MiniLM-L6-v2).")] = "default",
    chunk_tokens: Annotated[int, typer.Option(help="Chunk size in embedder tokens.")] = 512,
    index: Annotated[str, typer.Option(help="Vector index: faiss, qdrant, qdrant:DIR or qdrant:http://HOST:6333.")] = "faiss",
    compression: Annotated[str, typer.Option(help="For documents beyond the memory's window: extractive, gist, or none (refuse).")] = "extractive",
    beacon_ratio: Annotated[float | None, typer.Option(help="Compression ratio: document tokens per memory token (default: fill the window).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Checkpoint embedding batches and the memory's KV state, and resume a killed run of the same FILE from them (deleted once saved).")] = True,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="Where checkpoints go (default: ~/.cache/memorag/checkpoints; env MEMORAG_CHECKPOINT_DIR).")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Tokens of the memory pass between two KV checkpoints.")] = DEFAULT_EVERY_TOKENS,
    as_json: Annotated[bool, typer.Option("--json", help="Print stats as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Read FILE once with the memory model; save memory, chunks and index to SAVE_DIR.

    A run that is killed or interrupted can be started again with the same command: it
    resumes from its checkpoints and says from where."""
    from memorag.checkpoint import Checkpoints
    from memorag.pipeline import format_stats
    from memorag.text import read_text_file

    tree = command_config(ctx, config, {
        "models.memory": ("mem_model", mem_model), "models.embedder": ("ret_model", ret_model),
        "retrieval.chunk_tokens": ("chunk_tokens", chunk_tokens), "retrieval.index": ("index", index),
        "memory.compression": ("compression", compression), "memory.beacon_ratio": ("beacon_ratio", beacon_ratio)})
    text = read_text_file(file)  # validate before loading any model
    checkpoints = Checkpoints(checkpoint_dir, every_tokens=checkpoint_every) if resume else False
    from memorag.pipeline import MemoRAG
    from memorag.store import writer_lock

    # Taken before the models load, so a second writer of SAVE_DIR is told at once.
    with writer_lock(save_dir):
        pipe = MemoRAG(**tree.pipeline_kwargs())
        stats = pipe.memorize(text, save_dir=save_dir, resume=checkpoints)
    if as_json:
        typer.echo(json.dumps(stats))
    else:
        typer.echo(format_stats(stats), err=True)
        typer.echo(f"saved to {save_dir}", err=True)


@app.command()
@friendly
def ask(
    ctx: typer.Context,
    save_dir: Annotated[str | None, typer.Argument(help="A directory written by `memorag memorize` (with --store, "
                                                        "leave it out and give only the question).",
                                                   show_default=False)] = None,
    question: Annotated[str | None, typer.Argument(help="The question.", show_default=False)] = None,
    store: Annotated[Path | None, typer.Option(help="Ask across the documents of this store (made by `memorag add`) "
                                                    "instead of one save dir; the answer cites them.")] = None,
    task_type: Annotated[str, typer.Option(help="memorag (clues+retrieval), qa (surrogate questions), rag (question only), summarize (single save dir only).")] = "memorag",
    gen_model: Annotated[str | None, typer.Option(help="Generator spec; default: qwen2.5-1.5b beside the default memory model, else the memory model.")] = None,
    judge: Annotated[str | None, typer.Option(help="Model that judges evidence for the default plan; 'default' = judge-0.5b, the packaged trained judge. Default: that judge beside the packaged generator, else the generator's twin when it can judge (local llama.cpp), else none (e.g. for an OpenAI-compatible --gen-model).")] = None,
    top_k: Annotated[int, typer.Option(help="Evidence chunks given to the generator.")] = 3,
    route_top: Annotated[int, typer.Option(help="With --store: documents a question is routed to (each one's memory gives clues).")] = 2,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    use_memory_answer: Annotated[bool, typer.Option(help="Also search with the memory's draft answer (task memorag).")] = False,
    show_clues: Annotated[bool, typer.Option(help="Print the memory's clues (stderr).")] = False,
    show_evidence: Annotated[bool, typer.Option(help="Print the evidence chunks (stderr), each as the generator read it; with --store the citations are always printed.")] = False,
    evidence: Annotated[str, typer.Option(help=f"What the generator reads of each evidence chunk: chunks (whole), excerpts (the sentences that bear on the question), passages (the paragraph the judge scored best) or lead (the best chunk whole, the judged paragraph of the others); passages:N and lead:N widen each judged paragraph to N characters (default {PASSAGE_CHARS}).")] = DEFAULT_EVIDENCE,
    evidence_order: Annotated[str, typer.Option(help="The order the generator reads the evidence in: document (as the text runs) or rank (best first).")] = "document",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (answer, clues, evidence or citations, timings).")] = False,
    routing_index: Annotated[str | None, RoutingIndexOption] = None,
    config: ConfigOption = None,
) -> None:
    """Answer QUESTION about a memorized document (SAVE_DIR QUESTION), or across a store (--store S QUESTION).

    The answer streams to stdout. With --store the question is routed to the best-matching documents and every piece of evidence is printed as a numbered citation: document, chunk and character offsets [start, end) into the document's text.
    """
    from memorag.text import check_text

    tree = command_config(ctx, config, {
        "models.generator": ("gen_model", gen_model), "models.judge": ("judge", judge or "auto"),
        "retrieval.top_k": ("top_k", top_k), "evidence.render": ("evidence", evidence),
        "evidence.order": ("evidence_order", evidence_order),
        "collection.route_top": ("route_top", route_top),
        "collection.routing_index": ("routing_index", routing_index)})
    if store is not None:
        if task_type == "summarize":
            _fail("--task-type summarize applies to a single save dir, not to --store.")
        if question is not None:
            _fail("with --store give only the question (no SAVE_DIR).")
        if save_dir is None:
            _fail("missing QUESTION: memorag ask --store S \"your question\".")
        _ask_store(store, check_text(save_dir, what="question"), tree, max_new_tokens, as_json, show_clues,
                   task_type, use_memory_answer)
        return
    if routing_index is not None:
        _fail("--routing-index applies to a store (--store S), not to a single save dir.")
    if save_dir is None or question is None:
        _fail("give SAVE_DIR and QUESTION (memorag ask DIR \"your question\"), or --store S \"your question\".")
    from memorag.pipeline import MemoRAG

    check_text(question, what="question")
    pipe = MemoRAG.from_saved(Path(save_dir), **tree.pipeline_kwargs())
    _ask(pipe, question, task_type, max_new_tokens, use_memory_answer, as_json, show_clues, show_evidence)


def _open_store(store: Path, **kwargs):
    """A collection over an existing store (never creates one: a typo should not make a directory)."""
    from memorag.collection import Collection

    if not (store / ".staging").is_dir():
        what = "does not exist" if not store.exists() else "is not a memorag store"
        _fail(f"{store} {what}; add documents first: memorag add FILES --store {store}")
    return Collection(store, **kwargs)


def _ask_store(store: Path, question: str, tree, max_new_tokens: int, as_json: bool, show_clues: bool,
               task_type: str = "memorag", use_memory_answer: bool = False) -> None:
    # cite: a store's answer always numbers the evidence and asks for the numbers used ("(cited)" below)
    coll = _open_store(store, **{**tree.collection_kwargs(), "cite": True})
    ans = coll.ask(question, max_new_tokens=max_new_tokens, task_type=task_type, use_memory_answer=use_memory_answer,
                   on_token=None if as_json else _answer_printer())
    if as_json:
        typer.echo(json.dumps(ans.to_json(), ensure_ascii=False, indent=1))
        return
    sys.stdout.write("\n")
    if show_clues:
        for name, clues in ans.clues.items():
            typer.secho(f"clues from {name}:", bold=True, err=True)
            for line in clues.lines():
                typer.echo(f"  - {line}", err=True)
    typer.secho("routed to: " + ", ".join(f"{n} ({s:.3f})" for n, s in ans.documents), bold=True, err=True)
    typer.secho("citations:", bold=True, err=True)
    for c in ans.citations:
        snippet = " ".join(c.text.split())
        mark = "  (cited)" if c.n in ans.marks else ""
        typer.echo(f"  [{c.n}] {c.document} chunk {c.chunk_id}, chars {c.start}-{c.end}{mark}: "
                   f"{snippet[:200]}{'...' if len(snippet) > 200 else ''}", err=True)


StoreOption = Annotated[Path, typer.Option("--store", help="The store's directory (one subdirectory per document; "
                                                           "the same layout `memorag serve` uses); env MEMORAG_STORE.",
                                           envvar="MEMORAG_STORE")]


@app.command()
@friendly
def add(
    ctx: typer.Context,
    paths: Annotated[list[str], typer.Argument(help="Files, folders (searched recursively) or glob patterns "
                                                    "(quote them): .txt, .md, .html, .pdf.", show_default=False)],
    store: StoreOption = Path("memorag_store"),
    update: Annotated[bool, typer.Option("--update", help="Memorize documents whose text changed again "
                                                          "(without it a changed document is an error).")] = False,
    mem_model: Annotated[str | None, typer.Option(help="Memory model spec (default: the store's, else default).")] = None,
    ret_model: Annotated[str | None, typer.Option(help="Embedding model spec (default: the store's, else default).")] = None,
    index: Annotated[str | None, typer.Option(help="Vector index: faiss, qdrant, qdrant:DIR (default: the store's, else faiss).")] = None,
    chunk_tokens: Annotated[int | None, typer.Option(help="Chunk size in embedder tokens (default: the store's, else 512).")] = None,
    compression: Annotated[str, typer.Option(help="For documents beyond the memory's window: extractive, gist, or none (refuse).")] = "extractive",
    as_json: Annotated[bool, typer.Option("--json", help="Print what was added, updated, unchanged and skipped as JSON.")] = False,
    on_ray: Annotated[bool, typer.Option("--ray", help="Memorize on a Ray cluster (docs/scaling.md): the one at "
                                                       "$RAY_ADDRESS, else the one `ray start` runs here, else a "
                                                       "new local one. Needs pip install 'memorag\\[ray]'.")] = False,
    ray_address: Annotated[str | None, typer.Option(help="With --ray: the cluster's head, HOST:PORT (implies --ray).",
                                                    show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(help="With --ray: worker processes, each loading the models once "
                                                     "(default: one per node).")] = None,
    routing_index: Annotated[str | None, RoutingIndexOption] = None,
    config: ConfigOption = None,
) -> None:
    """Add documents to a store: each is read once by the memory model and keeps its own memory, chunks and vectors.

    A document is named after its file (e.g. report.pdf). Files whose text is unchanged are skipped without any model work; files of other types inside folders are skipped and listed.
    """
    from memorag.collection import Collection, gather

    gather(paths)  # a missing file or an unknown type fails before the store is made or a model loads
    tree = command_config(ctx, config, {
        "models.memory": ("mem_model", mem_model), "models.embedder": ("ret_model", ret_model),
        "retrieval.index": ("index", index), "retrieval.chunk_tokens": ("chunk_tokens", chunk_tokens),
        "memory.compression": ("compression", compression),
        "collection.routing_index": ("routing_index", routing_index)})
    routing_index = tree.collection.routing_index
    if on_ray or ray_address is not None:
        from memorag.docstore import DocStore
        from memorag.index.store_index import store_routing

        routing = None  # recorded (or refused) before any work; a new store without one is made by the run
        if routing_index is not None or (store / ".staging").is_dir():
            routing = store_routing(DocStore(store), routing_index)
        try:
            _add_on_ray(paths, store, update, tree.pipeline_kwargs(), ray_address, workers, as_json)
        finally:
            if routing is not None:  # the workers' commits bypass the routing index: copy them in now
                routing.sync()
        return
    if workers is not None:
        _fail("--workers needs --ray (without it one process memorizes the documents one by one).")
    coll = Collection(store, build_only=True, **tree.collection_kwargs())

    def report(name: str, status: str) -> None:
        if not as_json:
            typer.echo(f"{status:>9}  {name}", err=True)

    result = coll.add(paths, replace=update, on_document=report, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    for path in result.skipped:
        typer.echo(f"  skipped  {path} (not .txt, .md, .html or .pdf)", err=True)
    typer.echo(f"{len(result.added)} added, {len(result.updated)} updated, {len(result.unchanged)} unchanged, "
               f"{len(result.skipped)} skipped; {len(coll.names())} documents in {coll.store.root}", err=True)


def _add_on_ray(paths: list[str], store: Path, update: bool, pipeline_options: dict, address: str | None,
                workers: int | None, as_json: bool) -> None:
    from memorag.distributed import add_on_ray

    if workers is not None and workers < 1:
        _fail("--workers must be at least 1.")

    def report(name: str, status: str) -> None:
        if not as_json:
            typer.echo(f"{status:>9}  {name}", err=True)

    result = add_on_ray(store, paths, replace=update, address=address, workers=workers, on_document=report,
                        progress=not as_json, **pipeline_options)
    if as_json:
        typer.echo(json.dumps(result.to_json()))
    else:
        for path in result.skipped:
            typer.echo(f"  skipped  {path} (not .txt, .md, .html or .pdf)", err=True)
        for name, why in result.failed.items():
            typer.echo(f"   failed  {name}: {why}", err=True)
        typer.echo(f"{len(result.added)} added, {len(result.updated)} updated, {len(result.unchanged)} unchanged, "
                   f"{len(result.skipped)} skipped, {len(result.failed)} failed on Ray", err=True)
    if result.failed:
        raise typer.Exit(1)


@app.command("append")
@friendly
def append_document(
    name: Annotated[str, typer.Argument(help="The document to extend, as `memorag ls` shows it.", show_default=False)],
    file: Annotated[Path, typer.Argument(help="File whose text is appended (.txt, .md, .html, .pdf).", show_default=False)],
    store: StoreOption = Path("memorag_store"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the stats as JSON.")] = False,
) -> None:
    """Append a file's text to a document without reading the document again: only the new tokens are read and embedded.

    A document whose memory was compressed, or that would outgrow the memory's window, is memorized again as a whole (the stats say so).
    """
    from memorag.extract import extract_text

    text = extract_text(file)  # checked before any model loads
    coll = _open_store(store, build_only=True)
    coll.store.info(name)
    stats = coll.append(name, text)
    if as_json:
        typer.echo(json.dumps(stats))
        return
    app_stats = stats["append"]
    if app_stats["mode"] == "appended":
        typer.echo(f"appended {app_stats['appended_chars']} characters to {name}: {app_stats['prefill_tokens']} "
                   f"tokens read, {app_stats['passages']} passages embedded", err=True)
    else:
        typer.echo(f"memorized {name} again ({app_stats['reason']})", err=True)


@app.command("ls")
@friendly
def list_documents(
    store: StoreOption = Path("memorag_store"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the store's entries as JSON.")] = False,
) -> None:
    """List the documents of a store: name, characters, when added, source file."""
    coll = _open_store(store)
    entries = coll.list()
    if as_json:
        typer.echo(json.dumps([{k: e.get(k) for k in ("name", "chars", "created", "sha256", "source")}
                               for e in entries], ensure_ascii=False))
        return
    if not entries:
        typer.echo(f"no documents in {coll.store.root}", err=True)
    for e in entries:
        typer.echo(f"{e['name']}\t{e.get('chars')}\t{e.get('created')}\t{e.get('source') or ''}")


@app.command("rm")
@friendly
def remove_documents(
    names: Annotated[list[str], typer.Argument(help="Document names as `memorag ls` shows them.", show_default=False)],
    store: StoreOption = Path("memorag_store"),
) -> None:
    """Delete documents (memory, chunks, vectors and stored text) from a store."""
    coll = _open_store(store)
    for name in names:
        coll.store.info(name)  # all names checked before anything is deleted
    for name in names:
        coll.delete(name)
        typer.echo(f"removed  {name}", err=True)


@app.command("mcp")
@friendly
def mcp_server(
    ctx: typer.Context,
    store: StoreOption = Path("memorag_store"),
    mem_model: Annotated[str | None, typer.Option(help="Memory model spec (default: the store's, else default).")] = None,
    ret_model: Annotated[str | None, typer.Option(help="Embedding model spec (default: the store's, else default).")] = None,
    gen_model: Annotated[str | None, typer.Option(help="Generator spec; default: qwen2.5-1.5b beside the default memory model, else the memory model.")] = None,
    chunk_tokens: Annotated[int | None, typer.Option(help="Chunk size in embedder tokens (default: the store's, else 512).")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve a store to MCP clients over stdio: tools ask (cited answers), add_documents, list_documents, remove_document.

    Models load at the first tool call that needs them. Client configuration: command `memorag`, args `["mcp", "--store", "/path/to/store"]`.
    """
    from memorag.mcp_server import serve as serve_mcp

    tree = command_config(ctx, config, {
        "models.memory": ("mem_model", mem_model), "models.embedder": ("ret_model", ret_model),
        "models.generator": ("gen_model", gen_model), "retrieval.chunk_tokens": ("chunk_tokens", chunk_tokens)})
    serve_mcp(store, **tree.collection_kwargs())


@app.command()
@friendly
def summarize(
    ctx: typer.Context,
    save_dir: Annotated[Path, typer.Argument(help="A directory written by `memorag memorize`.")],
    gen_model: Annotated[str | None, typer.Option(help="Generator spec; default: qwen2.5-1.5b beside the default memory model, else the memory model.")] = None,
    top_k: Annotated[int, typer.Option(help="Evidence chunks given to the generator.")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Longest summary, in tokens.")] = 400,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOption = None,
) -> None:
    """Summarize a memorized document: the memory lists key points, evidence is retrieved for them."""
    from memorag.pipeline import MemoRAG

    tree = command_config(ctx, config, {"models.generator": ("gen_model", gen_model),
                                        "retrieval.top_k": ("top_k", top_k)})
    pipe = MemoRAG.from_saved(save_dir, **tree.pipeline_kwargs())
    _ask(pipe, "", "summarize", max_new_tokens, False, as_json, True, False)


@app.command()
@friendly
def demo(
    save_dir: Annotated[Path, typer.Option(help="Where to keep the sample's memory.")] = Path("memorag_state/sample"),
    question: Annotated[str, typer.Option(help="Question to ask about the sample.")] = SAMPLE_QUESTION,
) -> None:
    """Memorize the bundled sample (Pride and Prejudice, ch. 1-3) with the default models and ask it a question."""
    from memorag.pipeline import MemoRAG, format_stats

    text = files("memorag").joinpath(SAMPLE).read_text(encoding="utf-8")
    typer.secho(f"memorizing the bundled sample ({len(text.split())} words) with the default models...", err=True)
    pipe = MemoRAG()
    stats = pipe.memorize(text, save_dir=save_dir)
    typer.echo(format_stats(stats), err=True)
    typer.secho(f"\nreloading {save_dir} ...", err=True)
    pipe.load(save_dir)
    typer.echo(f"loaded in {pipe.stats['load_seconds']} s", err=True)
    typer.secho(f"\nquestion: {question}", bold=True, err=True)
    _ask(pipe, question, "memorag", 128, False, False, True, True)


@app.command()
@friendly
def serve(
    ctx: typer.Context,
    store: Annotated[Path, typer.Option(help="Directory of memorized documents (one subdirectory each); env MEMORAG_STORE.",
                                        envvar="MEMORAG_STORE")] = Path("memorag_store"),
    host: Annotated[str, typer.Option(help="Address to bind. Anything but loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[str | None, typer.Option(help="Bearer token clients must send (prefer env MEMORAG_TOKEN: "
                                                   "a flag shows in the process list).", envvar="MEMORAG_TOKEN",
                                              show_envvar=False)] = None,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, in MB (a document to memorize is sent in one).")] = 16.0,
    mem_model: Annotated[str, typer.Option(help="Memory model spec for new documents.")] = "default",
    gen_model: Annotated[str | None, typer.Option(help="Generator spec; default: qwen2.5-1.5b beside the default memory model.")] = None,
    judge: Annotated[str | None, typer.Option(help="Model that judges evidence for the default plan; 'default' = judge-0.5b, the packaged trained judge. Default: that judge beside the packaged generator, else the generator's twin when it can judge, else none (e.g. for an OpenAI-compatible --gen-model).")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="Answer only: refuse memorize, upload, append and delete with 403, run no jobs (a replica behind a load balancer; docs/scaling.md).")] = False,
    config: ConfigOption = None,
) -> None:
    """Serve memorized documents over HTTP: memorize, ask (streamed), summarize, list, delete (docs/service.md)."""
    try:
        from memorag.service import Settings
        from memorag.service import serve as run_service
    except ImportError as exc:
        _fail(f"the service needs FastAPI and uvicorn: pip install 'memorag[serve]' ({exc.name} is missing).")
    tree = command_config(ctx, config, {
        "collection.store": ("store", str(store)), "service.host": ("host", host), "service.port": ("port", port),
        "service.max_body_mb": ("max_body_mb", max_body_mb), "models.memory": ("mem_model", mem_model),
        "models.generator": ("gen_model", gen_model), "models.judge": ("judge", judge or "auto"),
        "service.read_only": ("read_only", read_only)})
    settings = Settings.from_config(tree, token=token or None)
    typer.echo(f"memorag: documents in {Path(settings.store).resolve()}; API on http://{settings.host}:"
               f"{settings.port} (OpenAPI at /docs)", err=True)
    run_service(settings)


@app.command()
@friendly
def ui(
    ctx: typer.Context,
    store: Annotated[Path, typer.Option(help="Directory of memorized documents shared with `memorag serve`; env MEMORAG_STORE.",
                                        envvar="MEMORAG_STORE")] = Path("memorag_store"),
    port: Annotated[int, typer.Option(help="TCP port of the web page (bound to 127.0.0.1).")] = 8501,
    config: ConfigOption = None,
) -> None:
    """Open the Streamlit demo: memorize, ask, and watch clues, evidence and the answer (= streamlit run demo/demo.py).

    With --config the demo's engine takes its models and options from FILE (as `memorag serve` does)."""
    import importlib.util
    import os

    # read and checked here, so a bad file fails before Streamlit starts; the page reads it again
    tree = command_config(ctx, config, {"collection.store": ("store", str(store))})
    if importlib.util.find_spec("streamlit") is None:
        _fail("the demo needs Streamlit: pip install 'memorag[ui]'.")
    script = Path(__file__).with_name("demo_app.py")
    env = {**os.environ, "MEMORAG_STORE": tree.collection.store}
    if config is not None:
        env[CONFIG_ENV] = str(config.expanduser().resolve())
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)  # streamlit takes over this process (and its Ctrl-C)


def _register_eval() -> None:
    from memorag.eval.cli import eval_command

    app.command("eval")(friendly(eval_command))


_register_eval()


def _register_train() -> None:
    from memorag.training.cli import train_app

    for command in train_app.registered_commands:  # errors as one line, as for every command
        command.callback = friendly(command.callback)
    app.add_typer(train_app, name="train")


_register_train()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
