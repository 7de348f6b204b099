"""The global memory: a memory model that has read the whole document once.

``memorize`` puts the memory prompt and the document into the model's prefix state (the
KV cache for local models). ``recall``/``rewrite``/``answer``/``summarize`` each append a
short task to that state and decode a few lines; the document is never read again.
``save``/``load`` persist the state with a small JSON description (one file, or a directory).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from memorag.checkpoint import CheckpointRun
from memorag.config import QUOTE_FROM, Compression, choice
from memorag.errors import InputError, NotMemorizedError, StateError
from memorag.llm.base import LLM, ChatMessage, Quoting, StageProgressFn, TaskAdapted
from memorag.memory_file import unpack_memory_file, write_memory_file
from memorag.progress import for_stage, progress_bar
from memorag.prompts import prompts_for
from memorag.quoting import ABBREVIATIONS, QUOTE_MIN_WORDS
from memorag.text import check_text, detect_language

MEMORY_FORMAT = 1
MEMORY_JSON = "memory.json"
# Beside memory.json when the memory read a compressed form of its document: the document
# itself, which quoted recall draws from (its sha256 is the state's context_sha256).
MEMORY_DOCUMENT = "document.txt"

_BULLET = re.compile(
    r"^\s*(?:[-*\u2022\u00b7>]+|\(?\d{1,2}[.)\u3001:]|[Qq]\d*[:.)]|#+|"
    r"[\u4e00\u4e8c\u4e09\u56db\u4e94\u516d\u4e03\u516b\u4e5d\u5341]{1,2}[\u3001.\uff0e]|"
    r"[(\uff08][\d\u4e00-\u5341]{1,2}[)\uff09])\s*"
)
_PREAMBLE = re.compile(
    r"^(here (are|is)|sure|certainly|the (following|relevant)|quotes?:|questions?:|answer:|"
    r"以下|好的|根据文档)", re.I)


def clean_line(line: str, min_words: int = 2) -> str:
    """Strip list markers and quotes; return '' for preambles and lines too short to search."""
    s = _BULLET.sub("", line.strip()).strip().strip('"\u201c\u201d\u300c\u300d\'').strip()
    if not s or _PREAMBLE.match(s) and s.endswith((":", "：")):
        return ""
    is_cjk = bool(re.search(r"[\u4e00-\u9fff]", s))
    if (is_cjk and len(s) < 2 * min_words) or (not is_cjk and len(s.split()) < min_words):
        return ""
    return s


def _norm(s: str) -> str:
    return re.sub(r"\W+", " ", s.lower()).strip()


_UNIT_END = re.compile(r"\n|(?<=[.!?])\s+(?=[A-Z\"'(\u201c])|(?<=[\u3002\uff01\uff1f])")


_ABBREV = re.compile(rf"(?:\b(?:{ABBREVIATIONS})\.)$")


def _next_unit_end(buf: str) -> re.Match | None:
    for m in _UNIT_END.finditer(buf):
        if m.group() == "\n" or not _ABBREV.search(buf[: m.start()]):
            return m
    return None


_LIST_SEP = re.compile(r"[,;\uff0c\u3001\uff1b]")


def _phrase_loop(unit: str, repeats: int = 3) -> str | None:
    """If an unfinished unit repeats one list item ``repeats`` times ("A, A, A, ..."), return
    the unit cut before the first repeat; else None. Sentence-level checks miss this loop
    because it never ends a sentence, and it would run to the token limit."""
    parts = _LIST_SEP.split(unit)
    if len(parts) <= repeats:
        return None
    counts: dict[str, int] = {}
    for part in parts[:-1]:  # the last part may still be growing
        key = _norm(part)
        if key:
            counts[key] = counts.get(key, 0) + 1
    if max(counts.values(), default=0) < repeats:
        return None
    kept, seen = [], set()
    for part in parts:
        key = _norm(part)
        if key in seen:
            break
        seen.add(key)
        kept.append(part)
    return ",".join(kept)


STOP_ON_RESTART = True
"""Stop decoding a quoted recall once an unfinished line begins a kept one word for word
(restarts_kept); False decodes the repeat to its end first, as bench/bench_clue_stop.py
compares."""
RESTART_WORDS = 5  # words a unit must share with a kept one's start before it counts as a repeat


def restarts_kept(unit: str, seen: set[str]) -> bool:
    """Whether the unfinished ``unit`` begins one of the kept units (normalized keys in
    ``seen``) with at least RESTART_WORDS whole words (twice as many characters in CJK text).

    Why: the memory's most common loop is quoting the same sentence again, and a repeat is
    only dropped once its unit ends, each token of it costing a decode step over the whole
    memory (bench/bench_clue_stop.py). Five words are the same start, not a new sentence
    that happens to share a word or two.
    """
    key = _norm(clean_line(unit, 0))
    if not key or not seen:
        return False
    whole = key.rsplit(" ", 1)[0] if " " in key else ""  # the last word may still be growing
    if re.search(r"[\u4e00-\u9fff]", key):
        enough = len(key) >= 2 * RESTART_WORDS
    else:
        enough = len(whole.split()) >= RESTART_WORDS
    return enough and any(k.startswith(key) for k in seen)


def _takes(fn, name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` (a Quoting model written before it existed
    still quotes, without it)."""
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def distinct_lines(stream: Iterator[str], max_lines: int, min_words: int = 2,
                   stop_on_restart: bool = False) -> list[str]:
    """Collect cleaned, distinct lines (or sentences) from a token stream.

    Small models loop: they repeat a line or a sentence, or echo the question forever. A
    repeated unit ends generation at once (closing the stream stops decoding), which both
    drops the repeat and saves the rest of the token budget. Units are lines, and sentences
    within a line, so a loop inside one long line is caught too. ``stop_on_restart`` (for
    quotes, where five words name one sentence; free text such as questions often shares a
    start like "What is the name of") ends generation as soon as a unit begins a kept one
    (restarts_kept), before the repeat is decoded.
    """
    lines: list[str] = []
    seen: set[str] = set()
    buf = ""

    def take(raw: str) -> bool:  # False = stop
        s = clean_line(raw, min_words)
        if not s:
            return True
        key = _norm(s)
        if key in seen:
            return False
        seen.add(key)
        lines.append(s)
        return len(lines) < max_lines

    def stop() -> list[str]:
        if hasattr(stream, "close"):
            stream.close()
        return lines

    for piece in stream:
        buf += piece
        while True:
            m = _next_unit_end(buf)
            if m is None:
                break
            raw, buf = buf[: m.start()], buf[m.end():]
            if not take(raw):
                return stop()
        if stop_on_restart and STOP_ON_RESTART and restarts_kept(buf, seen):
            return stop()
        looped = _phrase_loop(buf)
        if looped is not None:
            take(looped)
            return stop()
    if buf.strip():
        take(buf)
    return lines


@dataclass(frozen=True)
class MemoryState:
    """What the memory model's prefix state holds: one document, read in ``language``."""

    language: str
    context_sha256: str | None
    context_chars: int
    prefix_tokens: int
    compression: dict | None = None  # CompressionStats.to_json() when the document was compressed
    # The whole document when the model read a compressed form of it (an extract): quotes
    # are drawn from it (Memory.quote_from). None when the prefix holds the document itself,
    # or for a memory saved before memorag kept it.
    document: str | None = field(default=None, repr=False)


@dataclass
class Clues:
    """What the memory offers for one question."""

    question: str
    spans: list[str] = field(default_factory=list)  # recalled text spans
    questions: list[str] = field(default_factory=list)  # surrogate questions
    answer: str = ""  # draft answer (only when asked for)
    seconds: float = 0.0
    # per line of lines(): the document sentence it was matched to, or "" when the document
    # does not hold it (an invented clue, ignored by retrieval); filled in by the pipeline
    grounded: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Every clue once (a draft answer often repeats a recalled span word for word)."""
        out, seen = [], set()
        for line in self.spans + self.questions + ([self.answer] if self.answer else []):
            if _norm(line) not in seen:
                seen.add(_norm(line))
                out.append(line)
        return out

    def to_json(self) -> dict:
        return {"spans": self.spans, "questions": self.questions, "answer": self.answer,
                "grounded": self.grounded, "seconds": round(self.seconds, 3)}

    def in_evidence(self, chunk_texts: Sequence[str]) -> list[bool | None]:
        """Per line of :meth:`lines`: whether the document sentence it was matched to lies in
        one of ``chunk_texts`` (the evidence chunks), False when it lies elsewhere, None when
        it matched none (or grounding was not run).

        Why: a clue found in the document can still be off the question; a reader shown the
        clues beside the answer should see which ones the evidence holds, and so which ones
        could have mattered to it."""
        chunks = [_norm(t) for t in chunk_texts]
        lines = self.lines()
        out: list[bool | None] = []
        for i in range(len(lines)):
            sentence = _norm(self.grounded[i]) if i < len(self.grounded) else ""
            out.append(None if not sentence else any(sentence in c for c in chunks))
        return out


# A llama.cpp memory model's flash attention when none is asked for: off. Every question
# reads a few hundred tokens (the clue task, quotes verified in batches) after the whole
# document, and llama.cpp's CPU flash-attention kernel is slower at that than the plain
# attention path, while it reads the document itself only somewhat faster; measured in
# docs/benchmarks.md ("The memory without flash attention"). The KV layouts differ, so a
# memory is reloaded with the setting it was saved with (memorag.pipeline.saved_pipeline_kwargs).
MEMORY_FLASH_ATTN = False


class Memory:
    """Global memory over one document.

    ``Memory(model_name_or_path)`` accepts any LLM spec (see :mod:`memorag.models.registry`)
    or an already-loaded LLM via ``llm=``.
    """

    def __init__(self, model_name_or_path: str | None = "default", cache_dir: str | None = None,
                 access_token: str | None = None, beacon_ratio: float | None = None,
                 load_in_4bit: bool = False, enable_flash_attn: bool | None = None, *,
                 llm: LLM | None = None, n_ctx: int | None = None, language: str | None = None,
                 compression: str = "extractive", quote_recall: bool = True,
                 quote_from: str = "document") -> None:
        # Checked before a model loads: a typo should not cost a model load.
        compression = choice(Compression, compression, "compression")
        if beacon_ratio is not None and (isinstance(beacon_ratio, bool) or not isinstance(beacon_ratio, int | float)
                                         or not beacon_ratio >= 1):
            raise InputError(f"beacon_ratio (document tokens per memory token) must be a number >= 1 or None; "
                             f"got {beacon_ratio!r}.")
        if llm is None:
            from memorag.models.registry import default_window, load_llm

            if n_ctx is None:
                n_ctx = default_window(model_name_or_path)
            llm = load_llm(model_name_or_path, cache_dir=cache_dir, access_token=access_token, n_ctx=n_ctx,
                           flash_attn=enable_flash_attn, load_in_4bit=load_in_4bit,
                           flash_attn_default=MEMORY_FLASH_ATTN)
        else:
            given = {"cache_dir": cache_dir, "access_token": access_token, "load_in_4bit": load_in_4bit,
                     "enable_flash_attn": enable_flash_attn, "n_ctx": n_ctx}
            extra = [k for k, v in given.items() if v is not None and v is not False]
            if extra:
                raise InputError(f"{', '.join(extra)} cannot apply to a model given as llm=...: set them where "
                                 "that model is made.")
        self.llm = llm
        # beacon_ratio (the original API's name) is the compression ratio for documents
        # beyond the window: document tokens per memory token. None = just fit the window.
        self.beacon_ratio = beacon_ratio
        # "none" keeps the original behaviour: the whole document must fit the window.
        self.compression = compression
        self._forced_language = language
        if not isinstance(quote_recall, bool):
            raise InputError(f"quote_recall must be True or False; got {quote_recall!r}.")
        # Recalled spans decoded as verbatim quotes of the document when the model can
        # (memorag.quoting); the measured effect is in docs/evaluation.md.
        self.quote_recall = quote_recall
        if quote_from not in QUOTE_FROM:
            raise InputError(f"quote_from must be one of {', '.join(QUOTE_FROM)}; got {quote_from!r}.")
        # When the model read an extract of a long document, quotes may still come from the
        # whole document: the model reads what the extract holds, and points into the rest
        # (the question steers the quote to sentences the extract left out).
        self.quote_from = quote_from
        self.state: MemoryState | None = None

    # The memorized document's description (None / 0 before memorize or load).
    @property
    def memorized(self) -> bool:
        return self.state is not None

    @property
    def can_quote(self) -> bool:
        """Whether its recalled spans are quoted (decoded as verbatim pieces of the
        document), so that they can be kept away from text (``avoid``)."""
        return self.quote_recall and isinstance(self.llm, Quoting)

    @property
    def language(self) -> str | None:
        return self.state.language if self.state else self._forced_language

    @property
    def context_sha256(self) -> str | None:
        return self.state.context_sha256 if self.state else None

    @property
    def n_context_chars(self) -> int:
        return self.state.context_chars if self.state else 0

    @property
    def compression_stats(self) -> dict | None:
        return self.state.compression if self.state else None

    # ------------------------------------------------------------- memorize
    def language_for(self, context: str) -> str:
        """The language prompts and tokenizers use for ``context`` (forced, or detected)."""
        return self._forced_language or detect_language(context)

    def _prefix_messages(self, context: str, language: str) -> list[ChatMessage]:
        return prompts_for(language).memory_prefix(context)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Undo changes to the model's prefix state if the block fails or is interrupted.

        llama.cpp reads a new document into the same KV cache that holds the current one
        (and gist compression prefills every window), so a failure midway would leave the
        memory pointing at a half-read document. The current prefix is copied first
        (``snapshot_prefix``; for llama.cpp about the prefix's KV size in RAM) and put back
        on any exception, including KeyboardInterrupt.
        """
        snapshot = getattr(self.llm, "snapshot_prefix", None)
        saved = snapshot() if snapshot is not None else None
        try:
            yield
        except BaseException:
            restore = getattr(self.llm, "restore_prefix", None)
            if restore is not None:
                restore(saved)
            raise

    def prepare(self, context: str, *, progress: bool | StageProgressFn = False,
                language: str | None = None, checkpoints: CheckpointRun | None = None) -> tuple[MemoryState, dict]:
        """Read ``context`` into the model's prefix state and describe it, *without* making it
        this memory's document: the caller swaps the returned state in (see :meth:`memorize`).
        Call it inside :meth:`guard` so a failure restores the previous prefix.

        With ``checkpoints``, a backend whose prefix is a KV cache (``resumable_prefill``)
        saves it every few thousand tokens and resumes from the newest valid checkpoint of
        the same text (memorag.checkpoint)."""
        check_text(context)
        language = language or self.language_for(context)
        t0 = time.perf_counter()
        memory_text = context
        compression = None
        if self.needs_compression(context):
            from memorag.longmem import compress

            memory_text, cstats = compress(self.llm, context, method=self.compression, ratio=self.beacon_ratio,
                                           language=language, progress=for_stage(progress, "compress"))
            compression = cstats.to_json()
        resumable = checkpoints is not None and getattr(self.llm, "resumable_prefill", False)
        with progress_bar("memory: reading", "tok", for_stage(progress, "memory")) as callback:
            n_tokens = self.llm.prefill(self._prefix_messages(memory_text, language), progress=callback,
                                        **({"checkpoints": checkpoints} if resumable else {}))
        seconds = time.perf_counter() - t0
        state = MemoryState(language, hashlib.sha256(context.encode("utf-8")).hexdigest(), len(context),
                            n_tokens, compression, document=context if compression is not None else None)
        stats = {"memory_tokens": n_tokens, "memory_seconds": round(seconds, 3),
                 "memory_tokens_per_second": round(n_tokens / seconds, 1) if seconds else None}
        if compression:
            stats["document_tokens"] = compression["input_tokens"]
            stats["compression"] = compression
        return state, stats

    def memorize(self, context: str, *, progress: bool | StageProgressFn = False) -> dict:
        """Read ``context`` once into the memory model's state. Returns stats.

        ``progress``: True draws tqdm bars; a callable gets ``(stage, done, total)`` with
        stage ``compress`` (windows, long documents only) then ``memory`` (tokens read).
        If reading fails or is interrupted, the previously memorized document stays.
        """
        with self.guard():
            state, stats = self.prepare(context, progress=progress)
        self.state = state
        return stats

    def needs_compression(self, context: str) -> bool:
        """Whether ``context`` is compressed before it is read (too long for the window, or a ``beacon_ratio``)."""
        if self.compression == "none":
            return False
        if self.beacon_ratio is not None and self.beacon_ratio > 1:
            return True
        # Leave room for a task and its answer. More than ~6 characters per token is rare,
        # so very long texts skip the exact (slower) count.
        window = self.llm.context_window - 512
        if len(context) // 6 > window:
            return True
        return self.llm.count_tokens(context) > window

    def _require(self) -> None:
        if not self.memorized:
            raise NotMemorizedError("Nothing is memorized yet: call memorize(context) or load(path) first.")

    # --------------------------------------------------------------- tasks
    def _run(self, task: str, max_new_tokens: int) -> Iterator[str]:
        self._require()
        return self.llm.continue_chat(task, max_new_tokens=max_new_tokens)

    def _lines(self, template: str, question: str, max_new_tokens: int, max_lines: int,
               adapter_task: str | None = None) -> list[str]:
        task = template.format(question=question)
        with self._adapter_for(adapter_task):
            return distinct_lines(self._run(task, max_new_tokens), max_lines=max_lines)

    def _adapter_for(self, task: str | None) -> AbstractContextManager[None]:
        """The memory model's task adapter for ``task`` (a trained LoRA, see
        :class:`memorag.llm.base.TaskAdapted`); a no-op for models without one."""
        if task is not None and isinstance(self.llm, TaskAdapted):
            return self.llm.task_adapter(task)
        return nullcontext()

    def recall_spans(self, query: str, max_new_tokens: int = 128, avoid: Sequence[str] = (),
                     source: str | None = None) -> list[str]:
        """Spans of the document that bear on ``query``; quoted (decoded as verbatim pieces of
        the document) when the model can, and then never from the pieces in ``avoid``.
        ``source``: the text quotes may come from, in place of what the memory read (the whole
        document when it read an extract; quoted recall only)."""
        template = prompts_for(self.language or "en").recall
        if not self.can_quote:
            if avoid:  # a free reply cannot be kept away from text: refused, not ignored
                raise InputError("avoid_found needs quoted recall (quote_recall=True and a memory model that "
                                 f"can quote, as llama.cpp and transformers models can); "
                                 f"{'quote_recall is False' if not self.quote_recall else type(self.llm).__name__ + ' cannot quote'}.")
            if source is not None:
                raise InputError("Quoting from another text (source) needs quoted recall (quote_recall=True and a "
                                 "memory model that can quote).")
            return self._lines(template, query, max_new_tokens, 4, adapter_task="recall")
        self._require()
        with self._adapter_for("recall"):
            # only asked when there is something to avoid: a Quoting model written before
            # ``avoid`` existed still quotes
            extra: dict = {"avoid": list(avoid)} if avoid else {}
            takes_source = _takes(self.llm.continue_quotes, "source")
            if source is None and takes_source and self.quote_from == "document" and self.state is not None:
                source = self.state.document  # None when the model read the whole document
            if source is not None:
                if not takes_source:
                    raise InputError(f"{type(self.llm).__name__} cannot quote from another text than the one it read.")
                extra["source"] = source
            if _takes(self.llm.continue_quotes, "null_suffix"):
                # the task for no question: where the question begins (a backend reads it the
                # same way every time) and what the look-ahead's contrast weighs against
                extra["null_suffix"] = template.format(question="")
            stream = self.llm.continue_quotes(template.format(question=query), max_new_tokens=max_new_tokens,
                                              min_words=QUOTE_MIN_WORDS, **extra)
            # A quote cut short by the token budget is dropped with the same length rule.
            return distinct_lines(stream, max_lines=4, min_words=QUOTE_MIN_WORDS, stop_on_restart=True)

    def surrogate_questions(self, query: str, max_new_tokens: int = 96) -> list[str]:
        lines = self._lines(prompts_for(self.language or "en").rewrite, query, max_new_tokens, 3)
        return [q for q in lines if _norm(q) != _norm(query)]

    def recall(self, query: str, max_new_tokens: int = 128) -> str:
        """Text spans from the document that bear on ``query``, one per line."""
        return "\n".join(self.recall_spans(query, max_new_tokens))

    def rewrite(self, query: str, max_new_tokens: int = 96) -> str:
        """Sharper surrogate questions for ``query``, one per line."""
        return "\n".join(self.surrogate_questions(query, max_new_tokens))

    def answer(self, query: str, max_new_tokens: int = 64) -> str:
        """A draft answer straight from memory."""
        task = prompts_for(self.language or "en").answer.format(question=query)
        return "".join(self._run(task, max_new_tokens)).strip()

    def key_points(self, max_new_tokens: int = 256) -> list[str]:
        task = prompts_for(self.language or "en").summarize
        return distinct_lines(self._run(task, max_new_tokens), max_lines=8)

    def summarize(self, max_new_tokens: int = 256) -> str:
        """Key points of the whole document, one per line."""
        return "\n".join(self.key_points(max_new_tokens))

    def clues(self, query: str, *, use_answer: bool = False, max_new_tokens: int = 128,
              kinds: tuple[str, ...] = ("spans", "questions", "answer"), avoid: Sequence[str] = ()) -> Clues:
        """Recalled spans, surrogate questions and (``use_answer``) a draft answer; ``kinds``
        limits which are generated (a query plan that reads only spans skips the rest).
        ``avoid``: text the quoted spans may not come from (see :meth:`recall_spans`)."""
        t0 = time.perf_counter()
        clues = Clues(question=query)
        if "spans" in kinds:
            clues.spans = self.recall_spans(query, max_new_tokens, avoid)
        if "questions" in kinds:
            clues.questions = self.surrogate_questions(query, min(96, max_new_tokens))
        if use_answer and "answer" in kinds:
            clues.answer = self.answer(query)
        clues.seconds = time.perf_counter() - t0
        return clues

    # ---------------------------------------------------------- persistence
    def save(self, path: str | Path, state: MemoryState | None = None, *, directory: bool | None = None) -> dict:
        """Write the memory state to ``path``: one file, as the original MemoRAG's
        ``save("cache/x/memory.bin")`` writes (:mod:`memorag.memory_file`).

        ``path`` is written as a directory (the state file plus ``memory.json``) instead when
        ``directory`` is true, or, with ``directory=None``, when it is an existing directory
        (a memory saved by an older memorag, which wrote directories) or has no file extension
        (the ``memory`` entry of a MemoRAG save dir). An existing file that is not a memory
        saved by memorag is not overwritten: :class:`InputError`. ``state`` is the
        description of what the model's prefix holds (default: this memory's document; the
        pipeline passes a new one before swapping it in).
        """
        if state is None:
            self._require()
            state = self.state
        assert state is not None
        target = Path(path).expanduser()
        if directory is None:
            directory = target.is_dir() or not target.suffix
        if not directory:
            if target.is_dir():
                raise InputError(f"{target} is a directory; Memory.save(directory=False) writes a file there.")
            return write_memory_file(target, MEMORY_JSON, lambda d: self._save_directory(d, state))
        if target.exists() and not target.is_dir():
            raise InputError(f"{target} is a file; a memory saved as a directory needs a directory path.")
        return self._save_directory(target, state)

    def _save_directory(self, directory: Path, state: MemoryState) -> dict:
        directory.mkdir(parents=True, exist_ok=True)
        backend = self.llm.save_prefix(directory)
        info = {"format": MEMORY_FORMAT, "language": state.language, "context_sha256": state.context_sha256,
                "context_chars": state.context_chars, "model": self.llm.describe(), "state": backend,
                "compression": state.compression}
        if state.document is not None:
            (directory / MEMORY_DOCUMENT).write_text(state.document, encoding="utf-8", newline="")
            info["document"] = MEMORY_DOCUMENT
        (directory / MEMORY_JSON).write_text(json.dumps(info, indent=1, ensure_ascii=False), encoding="utf-8")
        return info

    def read(self, path: str | Path) -> tuple[MemoryState, dict]:
        """Load the prefix state saved at ``path`` (a file or a directory written by :meth:`save`)
        into the model and describe it, without making it this memory's document (see
        :meth:`load`; call inside :meth:`guard`)."""
        target = Path(path).expanduser()
        if target.is_file():
            with tempfile.TemporaryDirectory(prefix="memorag-memory-") as tmp:
                unpack_memory_file(target, MEMORY_JSON, Path(tmp))
                return self._read_directory(Path(tmp), shown=target)
        return self._read_directory(target, shown=target)

    def _read_directory(self, directory: Path, *, shown: Path) -> tuple[MemoryState, dict]:
        meta = directory / MEMORY_JSON
        if not meta.is_file():
            raise StateError(f"No saved memory at {shown} (missing {MEMORY_JSON}).")
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError:
            raise StateError(f"The {MEMORY_JSON} of {shown} is corrupt (not JSON).") from None
        if info.get("format") != MEMORY_FORMAT:
            raise StateError(f"{shown} has memory format {info.get('format')}; this memorag reads {MEMORY_FORMAT}.")
        check_same_model(info.get("model", {}), self.llm.describe(), what="memory model")
        check_same_attention(info.get("model", {}), self.llm.describe(), shown)
        saved_tokens = int(info["state"].get("n_tokens") or 0)
        if saved_tokens > self.llm.context_window:
            saved_window = info.get("model", {}).get("n_ctx")
            raise StateError(
                f"The memory at {shown} holds {saved_tokens} tokens, more than this memory model's window "
                f"({self.llm.context_window} tokens). Load it with the window it was made with"
                f"{f' (n_ctx={saved_window})' if saved_window else ''}: MemoRAG.from_saved(dir) does, or "
                f"MemoRAG(n_ctx=...).")
        document = _read_document(directory, info, shown)  # before the model state: a bad one changes nothing
        self.llm.load_prefix(directory, info["state"])
        state = MemoryState(info.get("language") or "en", info.get("context_sha256"),
                            int(info.get("context_chars", 0)), int(info["state"].get("n_tokens") or 0),
                            info.get("compression"), document=document)
        return state, info

    def load(self, path: str | Path) -> dict:
        """Read back a memory written by :meth:`save` to the same ``path`` (a file or a directory).

        A missing or corrupt state leaves the current document in place.
        """
        with self.guard():
            state, info = self.read(path)
        self.state = state
        return info


def _read_document(directory: Path, info: dict, shown: Path) -> str | None:
    """The whole document a memory saved beside its state (None when it saved none),
    checked against the state's context_sha256."""
    name = info.get("document")
    if name is None:
        return None
    if name != MEMORY_DOCUMENT:
        raise StateError(f"The {MEMORY_JSON} of {shown} names an unknown document file {name!r}.")
    path = directory / MEMORY_DOCUMENT
    if not path.is_file():
        raise StateError(f"The memory at {shown} lacks its document ({MEMORY_DOCUMENT}).")
    with open(path, encoding="utf-8", newline="") as f:
        try:
            text = f.read()
        except UnicodeDecodeError:
            raise StateError(f"The document of the memory at {shown} is not UTF-8 text (corrupt).") from None
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != info.get("context_sha256"):
        raise StateError(f"The document of the memory at {shown} does not match its checksum (corrupt or "
                         "changed after it was saved).")
    return text


_IDENTITY_KEYS = ("backend", "fingerprint", "file", "model", "name")


def check_same_attention(saved: dict, current: dict, shown: Path) -> None:
    """Refuse a llama.cpp state saved with the other flash-attention setting: llama.cpp lays
    the KV cache out differently with and without it and cannot read one into the other."""
    if "flash_attn" not in saved or "flash_attn" not in current or saved["flash_attn"] == current["flash_attn"]:
        return
    on = "on" if saved["flash_attn"] else "off"
    raise StateError(
        f"The memory at {shown} was saved with flash attention {on} and this memory model has it "
        f"{'off' if on == 'on' else 'on'}; llama.cpp cannot read one KV layout into the other. Load it with "
        f"MemoRAG.from_saved(dir) (as `memorag ask DIR` does), which reopens the memory as it was saved, "
        f"or MemoRAG(enable_flash_attn={bool(saved['flash_attn'])}).")


def check_same_model(saved: dict, current: dict, *, what: str) -> None:
    """Refuse state made by a different model: its KV cache or vectors would be garbage."""
    for key in _IDENTITY_KEYS:
        if key in saved and key in current and saved[key] != current[key]:
            raise StateError(
                f"This save dir was made with a different {what} ({key}: {saved[key]!r}, now "
                f"{current[key]!r}). Load it with the same model, or memorize the document again."
            )
