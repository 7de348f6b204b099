"""llama.cpp backend (llama-cpp-python) for GGUF models on the CPU.

The prefix state is llama.cpp's own KV cache: ``prefill`` evaluates the document tokens
once, ``continue_chat`` hands llama-cpp-python the prefix tokens plus the task tokens, and
its prefix matching skips everything already in the cache. ``save_prefix`` writes the raw
llama.cpp state file (``llama_state_save_file``): no pickle, and loading it is a read of
the file, orders of magnitude faster than re-reading the document.

Message contents (documents, questions, our own instructions) are tokenized as plain
text: a ``<|im_start|>`` or ``<|endoftext|>`` written inside a document stays seven
ordinary tokens and never opens a turn or ends the text. Only the chat template's own
markup is tokenized with special tokens (see ``_encode``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memorag import quoting
from memorag.checkpoint import CheckpointRun, PrefillCheckpoint
from memorag.errors import BackendError, ContextTooLongError, StateError
from memorag.judge_states import JudgeStates
from memorag.llm.base import ChatMessage, Marked, ProgressFn, render_marked
from memorag.models.packaged import sha256_file
from memorag.quoting import QuoteConstraint, document_text, log_softmax, quotable_text

STATE_FILE = "kv_state.bin"

JUDGE_PROMPT_CACHE_MB = 256
"""RAM for the KV states of judged passages (see :class:`PromptStateCache`): for the 1.5B
generator in f16 about 28 KiB per token, so some 9,000 tokens of passages, more than the
paragraphs a few questions about one long document make the judge read."""
ANSWER_CACHE_MB = 512
# Passages a judge scores in one batched decode (one llama.cpp sequence each; 1 scores one
# at a time); see continuation_logprobs_many.
JUDGE_SEQUENCES = 16
"""RAM for the KV states of answered prompts (``LlamaCppLLM.answer_cache``), which the next
question's prompt may start from: at 28 KiB per token a three-chunk prompt of the 1.5B is
some tens of MB, so a dozen or more of them."""
# Restoring a stored state pays only when it saves more than this many tokens of prefill.
ANSWER_CACHE_MIN_TOKENS = 32
# The adapter task of a query-likelihood judge adapter (memorag train judge): applied by
# continuation_logprobs to the scored question, never by the memory's tasks.
JUDGE_TASK = "judge"


class PromptStateCache:
    """KV states of scored prompts, by their token ids, least recently used evicted first.

    Why: query-likelihood judging reads "passage, then the question"; the passage part
    does not depend on the question, and the next question about the same document makes
    the judge read many of the same paragraphs again. Restoring a stored state costs a
    memory copy where re-reading the passage costs a prefill (bench/bench_query_latency.py
    measures the difference). Bounded in bytes, so a long-running service stays flat.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, ids: list[int]) -> bytes | None:
        key = tuple(ids)
        data = self._items.get(key)
        if data is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return data

    def put(self, ids: list[int], data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        key = tuple(ids)
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        while self._items and self.bytes + len(data) > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= len(dropped)
        self._items[key] = data
        self.bytes += len(data)

    def longest_prefix(self, ids: Sequence[int]) -> tuple[int, list[int], bytes] | None:
        """The stored state sharing the longest token prefix with ``ids``: (tokens shared,
        the state's tokens, the state), or None when no state shares a token. The caller
        counts a hit when it uses the state (``hits``/``misses``)."""
        want = np.asarray(ids, dtype=np.int64)
        best: tuple[int, tuple[int, ...]] | None = None
        for key in self._items:
            n = min(len(key), len(want))
            differ = np.flatnonzero(np.asarray(key[:n], dtype=np.int64) != want[:n])
            shared = int(differ[0]) if differ.size else n
            if shared and (best is None or shared > best[0]):
                best = (shared, key)
        if best is None:
            return None
        self._items.move_to_end(best[1])
        return best[0], list(best[1]), self._items[best[1]]

    def drop_prefixes_of(self, ids: Sequence[int]) -> None:
        """Forget the states whose tokens all begin ``ids``: a state of ``ids`` holds them."""
        full = tuple(ids)
        for key in [k for k in self._items if len(k) <= len(full) and full[: len(k)] == k]:
            self.bytes -= len(self._items.pop(key))

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendError(
            "llama-cpp-python is not installed. Install memorag with its default extras: "
            "`bash scripts/setup.sh` (or `pip install 'memorag[llamacpp]'`)."
        ) from exc
    return llama_cpp


def file_fingerprint(path: Path) -> str:
    """Cheap identity of a model file: size plus sha256 of its first and last MiB."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:32]



def token_logprob(logits: np.ndarray, token: int, scratch: np.ndarray) -> float:
    """log softmax(``logits``)[``token``], one row at a time through a reused ``scratch`` row.

    Why one row at a time: the judge scores a few hundred rows of a 151K-word vocabulary per
    question, and stacking them into one array (then ``exp`` of it) allocated and touched
    hundreds of megabytes; row by row the work stays in the CPU cache (tests/test_judge_prompt_cache.py
    checks it against the whole-row formula)."""
    top = float(logits.max())
    np.subtract(logits, top, out=scratch)
    np.exp(scratch, out=scratch)
    return float(logits[token]) - top - float(np.log(scratch.sum(dtype=np.float64)))


def _ends_inside_character(data: bytes) -> bool:
    """Whether ``data`` ends with an incomplete UTF-8 character (a token may carry half of one)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return False
        if byte >= 0xC0:  # a lead byte: how many bytes its character needs
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back < need
    return False

class LlamaCppLLM:
    """A GGUF model run by llama.cpp, usable as memory model and as generator."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        spec: str | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_batch: int = 512,
        flash_attn: bool = True,
        chat: bool | None = None,
        repeat_penalty: float = 1.0,
        seed: int = 0,
        verbose: bool = False,
        adapter: str | Path | None = None,
        adapter_scale: float = 1.0,
        adapter_tasks: tuple[str, ...] = ("recall",),
        prompt_cache_mb: int = JUDGE_PROMPT_CACHE_MB,
        answer_cache_mb: int = ANSWER_CACHE_MB,
    ) -> None:
        llama_cpp = _import_llama()
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"GGUF file not found: {self.model_path}")
        self.spec = spec or str(self.model_path)
        threads = n_threads or max(1, os.cpu_count() or 1)
        # Read the training context first (vocab-only load is instant) so that the default
        # window is the model's own, capped to keep the KV cache a few hundred MB.
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=verbose):
            probe = llama_cpp.Llama(str(self.model_path), vocab_only=True, verbose=False)
        n_ctx_train = int(probe.metadata.get(f"{probe.metadata.get('general.architecture', '')}.context_length", 0) or 0)
        del probe
        self._n_ctx_train = n_ctx_train or 4096
        want_ctx = n_ctx or min(self._n_ctx_train, 32768)
        try:
            self._llm = llama_cpp.Llama(
                str(self.model_path),
                n_ctx=want_ctx,
                n_batch=n_batch,
                n_ubatch=n_batch,
                n_threads=threads,
                n_threads_batch=threads,
                flash_attn=flash_attn,
                seed=seed,
                verbose=verbose,
            )
        except Exception as exc:  # llama.cpp raises ValueError on a bad file
            raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
        self._llama_cpp = llama_cpp
        self._verbose = verbose
        self.n_batch = n_batch
        self.flash_attn = flash_attn
        self.repeat_penalty = repeat_penalty
        md = self._llm.metadata
        self._template = md.get("tokenizer.chat_template")
        self.chat_mode = bool(self._template) if chat is None else chat and bool(self._template)
        self._add_bos = md.get("tokenizer.ggml.add_bos_token", "false") == "true"
        self._bos_text = self._token_text(self._llm.token_bos())
        self._eos_text = self._token_text(self._llm.token_eos())
        self._prefix_ids: list[int] = []
        self._tail = ""
        self._pieces: dict[int, bytes] = {}  # token id -> bytes, for quote-constrained decoding
        self._prefix_text_cache: tuple[str, str] = ("", "")
        self._fingerprint = file_fingerprint(self.model_path)
        self._adapter: Any = None
        self._adapter_info: dict | None = None
        self.adapter_tasks: tuple[str, ...] = ()
        self._adapter_wanted = False  # inside task_adapter() for a task the adapter was trained on
        self._suffix_adapted = False  # whether the KV cache past the prefix was computed with the adapter
        self._base_tokens = 1 << 62  # leading cached tokens computed without the judge adapter
        self._n_seq = 1  # sequences the context holds (JUDGE_SEQUENCES once batched judging began)
        if adapter is not None:
            self._load_adapter(Path(adapter), adapter_scale, tuple(adapter_tasks))
        if prompt_cache_mb < 0:
            raise BackendError(f"prompt_cache_mb must be 0 (off) or more; got {prompt_cache_mb}.")
        self.prompt_cache = PromptStateCache(prompt_cache_mb * 1024 * 1024)
        # the passages of the current document, read when it was memorized (memorag.judge_states)
        self.judge_states: JudgeStates | None = None
        if answer_cache_mb < 0:
            raise BackendError(f"answer_cache_mb must be 0 (off) or more; got {answer_cache_mb}.")
        # Why: llama.cpp keeps only the last prompt's KV, so question B after A re-reads
        # every evidence chunk unless B's prompt begins as A's did. States of earlier
        # answered prompts let B start from the one sharing the longest prefix with it (the
        # evidence is put in document order, so prompts often share their first chunks).
        self.answer_cache = PromptStateCache(answer_cache_mb * 1024 * 1024)
        self._formatter: Any = None

    # ------------------------------------------------------------ task adapter
    def _load_adapter(self, path: Path, scale: float, tasks: tuple[str, ...]) -> None:
        if not path.is_file():
            raise BackendError(f"LoRA adapter file not found: {path}")
        if not scale > 0:
            raise BackendError(f"adapter_scale must be positive; got {scale}.")
        if not tasks:
            raise BackendError("adapter_tasks names no memory task: the adapter would never be used.")
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=self._verbose):  # llama.cpp logs a line per tensor
            handle = self._llama_cpp.llama_adapter_lora_init(self._llm.model, str(path).encode("utf-8"))
        if not handle:
            raise BackendError(f"llama.cpp could not load {path} as a LoRA adapter of {self.model_path.name} "
                               "(another base model, or not an adapter GGUF).")
        self._adapter = handle
        llama_cpp = self._llama_cpp
        # Freed with the model's other resources, before the model itself.
        self._llm._stack.callback(lambda: llama_cpp.llama_adapter_lora_free(handle))
        self.adapter_tasks = tasks
        applies_to = ("the question scored after each passage's prompt (judging); the prompt is the base model's"
                      if tasks == (JUDGE_TASK,) else "task and reply only; the memorized prefix is the base model's")
        self._adapter_info = {"file": path.name, "sha256": sha256_file(path), "scale": float(scale), "tasks": list(tasks),
                              "applies_to": applies_to}
        self._adapter_scale = float(scale)

    def _apply_adapter(self, on: bool) -> None:
        llama_cpp = self._llama_cpp
        if on:
            arr = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            scales = (ctypes.c_float * 1)(self._adapter_scale)
            llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, arr, 1, scales)
        else:
            llama_cpp.llama_set_adapters_lora(self._llm._ctx.ctx, None, 0, None)

    @property
    def _judge_adapted(self) -> bool:
        return self._adapter is not None and JUDGE_TASK in self.adapter_tasks

    @contextmanager
    def task_adapter(self, task: str) -> Iterator[None]:
        """Run the ``continue_chat`` calls consumed in this block with the adapter if it was
        trained for ``task`` (see :class:`memorag.llm.base.TaskAdapted`)."""
        before = self._adapter_wanted
        self._adapter_wanted = self._adapter is not None and task in self.adapter_tasks
        try:
            yield
        finally:
            self._adapter_wanted = before

    # ----------------------------------------------------------------- basics
    def _token_text(self, tok: int) -> str:
        if tok is None or tok < 0:
            return ""
        return self._llm.detokenize([tok], special=True).decode("utf-8", errors="ignore")

    @property
    def context_window(self) -> int:
        return int(self._llm.n_ctx())

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text, add_bos=False))

    def _tokenize(self, text: str, *, add_bos: bool, special: bool = False) -> list[int]:
        # special=False unless the text is the chat template's own markup: user text that
        # spells a control token must not become one.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def _encode(self, marked: Marked, *, add_bos: bool) -> list[int]:
        """Token ids of rendered text whose message contents are wrapped in content marks.

        Template markup between the marks is tokenized with special tokens, the contents
        as plain text. Without marks the whole text counts as markup.
        """
        ids: list[int] = [self._llm.token_bos()] if add_bos else []
        for i, part in enumerate(marked.parts()):
            if part:
                ids += self._tokenize(part, add_bos=False, special=i % 2 == 0)
        return ids

    def describe(self) -> dict:
        return {
            "backend": "llama.cpp",
            "spec": self.spec,
            "file": self.model_path.name,
            "fingerprint": self._fingerprint,
            "n_ctx": self.context_window,
            "flash_attn": self.flash_attn,
            "chat_template": self.chat_mode,
            **({"adapter": self._adapter_info} if self._adapter_info else {}),
        }

    # ------------------------------------------------------------ formatting
    def render(self, messages: list[ChatMessage], *, open_user_turn: bool = False) -> tuple[str, str]:
        """Render ``messages`` to prompt text.

        With ``open_user_turn`` the last user message is left open: returns
        ``(text_up_to_the_end_of_its_content, text_that_closes_it_and_opens_the_reply)``.
        Otherwise returns ``(full_prompt, "")``.
        """
        head, tail = self._render_marked(messages, open_user_turn=open_user_turn)
        return head.plain(), tail

    def _render_marked(self, messages: list[ChatMessage], *, open_user_turn: bool = False) -> tuple[Marked, str]:
        return render_marked(messages, self._render_text, open_user_turn=open_user_turn)

    def _render_text(self, msgs: list[dict]) -> str:
        if self.chat_mode:
            if self._formatter is None:  # compiling the template costs tens of ms: once per model
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                self._formatter = Jinja2ChatFormatter(self._template, eos_token=self._eos_text,
                                                      bos_token=self._bos_text)
            return self._formatter(messages=msgs).prompt
        # Base model: plain completion layout.
        return "\n\n".join(m["content"] for m in msgs) + "\n\nAnswer:"

    def _prompt_ids(self, marked: Marked) -> list[int]:
        add_bos = self._add_bos and not (self._bos_text and marked.plain().startswith(self._bos_text))
        return self._encode(marked, add_bos=add_bos)

    # ------------------------------------------------------------ generation
    def _stream_ids(self, ids: list[int], max_new_tokens: int, temperature: float, stop: list[str] | None,
                    logits_processor: Callable[[Any, Any], Any] | None = None) -> Iterator[str]:
        if len(ids) + max_new_tokens > self.context_window:
            room = self.context_window - len(ids)
            if room < 16:
                raise ContextTooLongError(
                    f"Prompt of {len(ids)} tokens does not fit the {self.context_window}-token "
                    "context window of the model."
                )
            max_new_tokens = room
        stream = self._llm.create_completion(
            prompt=ids,
            max_tokens=max_new_tokens,
            temperature=temperature,
            repeat_penalty=self.repeat_penalty,
            stop=stop or [],
            stream=True,
            **({"logits_processor": self._llama_cpp.LogitsProcessorList([logits_processor])}
               if logits_processor is not None else {}),
        )
        for chunk in stream:
            text = chunk["choices"][0]["text"]
            if text:
                yield text

    def _quote_ids(self, ids: list[int], max_new_tokens: int, constraint: QuoteConstraint,
                   null_ids: list[int] | None = None) -> Iterator[str]:
        """Greedy decoding of the reply to ``ids`` under a quote ``constraint``, in this
        module's own loop rather than create_completion: when the constraint completes a quote
        from the document (:meth:`QuoteConstraint.completion`), the completion's tokens are
        evaluated in one batch, so the model has read its whole quote before it picks the next
        one. Every token, decoded or completed, counts against ``max_new_tokens``.
        ``null_ids``: the same prompt for no question: where the question begins (see
        :meth:`_read_task`), and the look-ahead's contrast (``quoting.QUOTE_CONTRAST``)."""
        room = self.context_window - len(ids)
        if room < 16:
            raise ContextTooLongError(
                f"Prompt of {len(ids)} tokens does not fit the {self.context_window}-token context window of the model.")
        budget = min(max_new_tokens, room)
        llm = self._llm
        common = len(ids) - 1 if null_ids is None else quoting.question_start(ids, null_ids)
        self._read_task(ids, common)
        n_vocab = llm.n_vocab()
        used = 0
        pending = b""  # bytes of a character split over tokens, held back until it is whole

        def logits() -> np.ndarray:
            return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))

        def tokenize(text: str) -> list[int]:
            return self._tokenize(text, add_bos=False)

        def peek(tokens: list[int]) -> np.ndarray:
            """The logits after ``tokens``, read and then taken out of the KV cache again."""
            start = llm.n_tokens
            llm.eval(tokens)
            out = logits().copy()
            llm._ctx.kv_cache_seq_rm(-1, start, -1)
            llm.n_tokens = start
            return out

        contrast = None
        if null_ids is not None and quoting.QUOTE_CONTRAST > 0:

            def contrast(runs: list[list[int]]) -> list[float]:
                """Each run's log-probability after the null prompt and the reply so far; the
                KV cache is cut back to what the two prompts share, and the question's prompt
                and reply are read in again afterwards."""
                pos = llm.n_tokens
                reply = [int(t) for t in llm.input_ids[len(ids): pos]]
                llm._ctx.kv_cache_seq_rm(-1, common, -1)
                llm.n_tokens = common
                try:
                    llm.eval(null_ids[common:] + reply)
                    base = llm.n_tokens
                    first = log_softmax(np.array(logits(), dtype=np.float64))
                    out = []
                    for run in runs:
                        total = float(first[run[0]])
                        for i in range(1, len(run)):
                            llm.eval([run[i - 1]])
                            total += float(log_softmax(np.array(logits(), dtype=np.float64))[run[i]])
                        llm._ctx.kv_cache_seq_rm(-1, base, -1)
                        llm.n_tokens = base
                        out.append(total)
                    return out
                finally:
                    llm._ctx.kv_cache_seq_rm(-1, common, -1)
                    llm.n_tokens = common
                    llm.eval(ids[common:])  # as _read_task read it, so the logits are the same
                    if reply:
                        llm.eval(reply)

        done = False
        while used < budget and not done:
            if constraint.complete or not quoting.DRAFT_FROM_DOCUMENT:
                new = constraint.next_tokens(logits, tokenize, budget - used, peek, contrast)
                if not new:
                    break
                llm.eval(new)
            else:
                token = constraint.choose_looking_ahead(logits(), peek, quoting.QUOTE_LOOKAHEAD, contrast=contrast)
                if constraint.is_end(token):
                    break
                draft = constraint.draft(tokenize, budget - used)
                new = [token]
                if len(draft) > 1 and draft[0] == token:
                    new, token, row = self._verify_draft(draft, constraint)  # ``new`` is in the KV cache
                    if not constraint.line.strip() and not constraint.is_end(token):
                        # the draft closed a quote: the next one starts as every quote does
                        token = constraint.choose_looking_ahead(row, peek, quoting.QUOTE_LOOKAHEAD,
                                                                contrast=contrast)
                    if used + len(new) < budget and not constraint.is_end(token):
                        new = [*new, token]
                        constraint.advance(token)
                        llm.eval([token])
                    else:
                        done = True  # the reply ends after the kept tokens
                else:
                    constraint.advance(token)
                    llm.eval(new)
            used += len(new)
            for tok in new:  # text as single steps would have yielded it
                pending += self._token_bytes(tok)
                text = pending.decode("utf-8", errors="ignore")
                if text and not _ends_inside_character(pending):
                    pending = b""
                    yield text
        if pending:
            yield pending.decode("utf-8", errors="ignore")

    def _read_task(self, ids: list[int], stable: int) -> None:
        """Put ``ids`` (the memorized prefix and a task) into the KV cache, the last token with
        its logits: the part up to ``stable`` (the task before its question) is kept when the
        cache holds all of it and read in one batch after the prefix otherwise, and the rest
        (the question and the turn's end) is always read in one batch of its own. A batch and
        single steps give slightly different logits on a CPU, so reading the question the same
        way every time gives the same question the same quotes, whatever was asked before.
        The instruction is still read once per document, not once per question."""
        llm = self._llm
        prefix = len(self._prefix_ids)
        stable = max(stable, prefix)
        cached = np.asarray(llm.input_ids[: llm.n_tokens], dtype=np.int64)
        want = np.asarray(ids[:stable], dtype=np.int64)
        if len(cached) >= stable and np.array_equal(cached[:stable], want):
            llm.n_tokens = stable  # eval() drops the cache past n_tokens
        else:
            n = min(len(cached), prefix)
            differ = np.flatnonzero(cached[:n] != want[:n])
            llm.n_tokens = int(differ[0]) if differ.size else n
            if llm.n_tokens < stable:
                llm.eval(ids[llm.n_tokens:stable])
        llm.eval(ids[stable:])

    def _verify_draft(self, draft: list[int], constraint: QuoteConstraint) -> tuple[list[int], int, np.ndarray]:
        """Read ``draft`` (its first token already chosen by the model) in one batch with the
        logits of every row, and keep the longest start of it that ``constraint.choose`` takes
        row by row. Returns the kept tokens (advanced in ``constraint`` and left in the KV
        cache; the rest is removed), the model's choice after them (not advanced, not read) and
        the logits that choice was made from.

        Why: a quote, once begun, mostly runs on as the document does, and decoding it a token
        at a time costs a step over the whole memory per token (memorag.quoting)."""
        llm = self._llm
        start = llm.n_tokens
        batch = llm._batch
        batch.set_batch(batch=draft, n_past=start, logits_all=True)
        llm._ctx.decode(batch)
        llm.input_ids[start: start + len(draft)] = draft
        n_vocab = llm.n_vocab()
        constraint.advance(draft[0])
        kept = 1
        while True:
            row = np.ctypeslib.as_array(llm._ctx.get_logits_ith(kept - 1), shape=(n_vocab,))
            token = constraint.choose(row)
            if kept == len(draft) or token != draft[kept]:
                break
            constraint.advance(token)
            kept += 1
        if kept < len(draft) and not llm._ctx.kv_cache_seq_rm(-1, start + kept, -1):
            raise BackendError("llama.cpp cannot truncate this model's KV cache after a quote draft.")
        llm.n_tokens = start + kept
        return draft[:kept], token, row.copy()

    def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[str]:
        text, _ = self._render_marked(messages)
        ids = self._prompt_ids(text)
        if self._prefix_ids or not self.answer_cache.max_bytes:  # a memory's context holds its document
            yield from self._stream_ids(ids, max_new_tokens, temperature, stop)
            return
        self._start_from_answered(ids)
        try:
            yield from self._stream_ids(ids, max_new_tokens, temperature, stop)
        finally:
            self._keep_answered()

    def _start_from_answered(self, ids: list[int]) -> None:
        """Put the stored answered prompt sharing the longest prefix with ``ids`` into the
        KV cache, when it shares more than the cache holds now; llama-cpp-python's own
        prefix matching then evaluates only the rest."""
        llm = self._llm
        if llm.n_tokens > self._base_tokens:  # tokens a judge adapter computed are no prompt's
            llm._ctx.kv_cache_seq_rm(-1, self._base_tokens, -1)
            llm.n_tokens = self._base_tokens
        self._base_tokens = 1 << 62  # from here on the cache holds base-model tokens only
        cached = np.asarray(llm.input_ids[: llm.n_tokens], dtype=np.int64)
        n = min(len(cached), len(ids))
        differ = np.flatnonzero(cached[:n] != np.asarray(ids[:n], dtype=np.int64))
        have = int(differ[0]) if differ.size else n
        found = self.answer_cache.longest_prefix(ids)
        if found is None or found[0] < have + ANSWER_CACHE_MIN_TOKENS:
            self.answer_cache.misses += 1
            return
        self.answer_cache.hits += 1
        _, tokens, data = found
        self._set_seq_state(tokens, data)  # refused: the prompt is evaluated from the start
        # the logits in the context are not this state's: sample only after a fresh decode
        llm._requires_eval = True

    def forget_prompts(self) -> None:
        """Read the next prompt from its start: the stored answered prompts and the KV cache
        are emptied (what a benchmark's mode starts from, so that no mode reuses a prompt
        another mode left). Refused on a context holding a memorized document."""
        if self._prefix_ids:
            raise BackendError("forget_prompts would drop the memorized document; it is for a generator or judge.")
        self.answer_cache.clear()
        self.answer_cache.hits = self.answer_cache.misses = 0
        self._llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        self._llm.n_tokens = 0

    def _keep_answered(self) -> None:
        """Store the KV state of the prompt (and reply) just answered, replacing states it extends."""
        llm = self._llm
        if llm.n_tokens < ANSWER_CACHE_MIN_TOKENS:
            return
        tokens = llm.input_ids[: llm.n_tokens].tolist()
        state = self._seq_state(self.answer_cache.max_bytes)
        if state is not None:
            self.answer_cache.drop_prefixes_of(tokens)
            self.answer_cache.put(tokens, state)

    def chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        return "".join(self.stream_chat(messages, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop))

    # --------------------------------------------------------------- judging
    def yes_probability(self, messages: list[ChatMessage]) -> float:
        """P("yes") / (P("yes") + P("no")) for the first token of the reply to ``messages``.

        One forward pass, no decoding; the longest prefix shared with the previous call
        stays in the KV cache, so judging many passages against one question pays for the
        question once. Used to rerank retrieval candidates (memorag.plans).
        """
        import numpy as np

        text, _ = self._render_marked(messages)
        ids = self._prompt_ids(text)
        if len(ids) + 1 > self.context_window:
            raise ContextTooLongError(f"Judge prompt of {len(ids)} tokens does not fit the {self.context_window}-token window.")
        llm = self._llm
        if self._prefix_ids:  # never overwrite a memory's document state
            raise BackendError("yes_probability runs on a context without a memorized prefix (use twin()).")
        cached = llm.input_ids[: llm.n_tokens].tolist()
        common = 0
        for a, b in zip(cached, ids[:-1]):  # always re-evaluate at least the last token
            if a != b:
                break
            common += 1
        llm.n_tokens = common
        llm.eval(ids[common:])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        yes, no = self._yes_no_ids()
        top = float(np.max(logits))
        p_yes = float(np.sum(np.exp(logits[yes] - top)))
        p_no = float(np.sum(np.exp(logits[no] - top)))
        return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5

    def continuation_logprobs(self, messages: list[ChatMessage], continuation: str) -> list[float]:
        """Log-probability of each token of ``continuation`` as the reply to ``messages``.

        The basis of query-likelihood reranking (score a passage by how likely the model
        finds the question after reading it). Logits are requested only for the positions
        that predict the continuation, so scoring costs one prefill of the prompt plus the
        continuation; the longest prefix shared with the previous call stays cached.
        """
        if self._prefix_ids:  # never overwrite a memory's document state
            raise BackendError("continuation_logprobs runs on a context without a memorized prefix (use twin()).")
        text, _ = self._render_marked(messages)
        prompt = self._prompt_ids(text)
        target = self._tokenize(continuation, add_bos=False)
        if not target:
            return []
        ids = prompt + target
        if len(ids) > self.context_window:
            raise ContextTooLongError(f"Scoring prompt of {len(ids)} tokens does not fit the {self.context_window}-token window.")
        head = prompt[:-1]  # the last prompt token must be evaluated: its logits predict target[0]
        common = self._keep_shared_head(head)
        if common < len(head) and (self.prompt_cache.max_bytes or self.judge_states is not None):
            common = self._prompt_head(head, common)
        if not self._judge_adapted:
            # position len(prompt) - 1's logits predict target[0]
            return self._decode_logprobs(ids[common:], common, len(prompt) - 1)
        # A judge adapter (memorag.training.judge) acts on the last prompt token and the
        # question only, as it was trained: the head is the base model's, so cached heads
        # stay valid with or without it.
        if common < len(head):
            self._decode_logprobs(head[common:] + prompt[-1:], common, len(ids))  # the head, no logits kept
        self._apply_adapter(True)
        try:
            return self._decode_logprobs(ids[len(head):], len(head), len(prompt) - 1)
        finally:
            self._apply_adapter(False)
            self._base_tokens = len(head)

    def continuation_logprobs_many(self, prompts: Sequence[list[ChatMessage]],
                                   continuation: str) -> list[list[float]]:
        """:meth:`continuation_logprobs` of ``continuation`` after each of ``prompts``, the
        continuation after many prompts decoded in one batch.

        Why: a question's ~16 tokens scored after one passage at a time is a decode too
        small to use the CPU well, and it was a large part of the judge's time
        (bench/bench_judge_batch.py). Each prompt's head (all but its last token) is read
        or restored in sequence 0 as :meth:`continuation_logprobs` does, then shared into a
        sequence of its own (a copy in llama.cpp's unified KV cache shares the cells); the
        last prompt token and the continuation of every sequence are then one decode. The
        scores are the one-at-a-time path's up to floating-point rounding (another batch
        shape sums in another order). One at a time when JUDGE_SEQUENCES is below 2.
        """
        if self._prefix_ids:
            raise BackendError("continuation_logprobs runs on a context without a memorized prefix (use twin()).")
        target = self._tokenize(continuation, add_bos=False)
        if not target or len(prompts) < 2 or JUDGE_SEQUENCES < 2:
            return [self.continuation_logprobs(m, continuation) for m in prompts]
        rendered = [self._prompt_ids(self._render_marked(m)[0]) for m in prompts]
        for prompt in rendered:
            if len(prompt) + len(target) > self.context_window:
                raise ContextTooLongError(f"Scoring prompt of {len(prompt) + len(target)} tokens does not fit the "
                                          f"{self.context_window}-token window.")
        self._enable_sequences()
        out: list[list[float]] = []
        group: list[list[int]] = []
        cells = 0
        for prompt in rendered:
            need = len(prompt) + len(target)
            if group and (len(group) == JUDGE_SEQUENCES - 1 or cells + need > self.context_window):
                out += self._score_group(group, target)
                group, cells = [], 0
            group.append(prompt)
            cells += need
        return out + self._score_group(group, target)

    def _enable_sequences(self) -> None:
        """Rebuild this (judge) context to hold JUDGE_SEQUENCES sequences in one unified KV
        cache of ``context_window`` cells; once, on the first batched call. A context
        without a memorized prefix loses only its cached tokens, which the prompt cache keeps."""
        if self._n_seq >= JUDGE_SEQUENCES:
            return
        from llama_cpp import _internals

        llm = self._llm
        params = llm.context_params
        params.n_seq_max = JUDGE_SEQUENCES
        params.kv_unified = True  # one pool of cells, so a sequence can share another's
        old = llm._ctx
        llm._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=self._verbose)
        old.close()
        llm.n_tokens = 0
        self._n_seq = JUDGE_SEQUENCES
        self._base_tokens = 1 << 62

    def _score_group(self, prompts: list[list[int]], target: list[int]) -> list[list[float]]:
        """``target``'s log-probabilities after each of ``prompts`` (fewer than
        JUDGE_SEQUENCES, all fitting the window at once), prompt j in sequence j + 1."""
        llm, lib = self._llm, self._llama_cpp
        memory = llm._ctx.memory
        try:
            for seq, prompt in enumerate(prompts, start=1):
                head = prompt[:-1]
                common = self._keep_shared_head(head)
                if common < len(head):
                    self._prompt_head(head, common)
                self._base_tokens = 1 << 62
                lib.llama_memory_seq_cp(memory, 0, seq, -1, -1)
            rows = [(tok, len(prompt) - 1 + j, seq, nxt) for seq, prompt in enumerate(prompts, start=1)
                    for j, (tok, nxt) in enumerate(zip([prompt[-1], *target[:-1]], target))]
            if self._judge_adapted:
                self._apply_adapter(True)
            try:
                logprobs = self._decode_rows(rows)
            finally:
                if self._judge_adapted:
                    self._apply_adapter(False)
        finally:
            for seq in range(1, len(prompts) + 1):
                lib.llama_memory_seq_rm(memory, seq, -1, -1)
        n = len(target)
        return [logprobs[j * n: (j + 1) * n] for j in range(len(prompts))]

    def _decode_rows(self, rows: list[tuple[int, int, int, int]]) -> list[float]:
        """Decode ``rows`` (token, position, sequence, the token it predicts) in batches of
        n_batch; the log-probability of each predicted token, in row order."""
        lib, ctx = self._llama_cpp, self._llm._ctx.ctx
        batch = self._llm._batch.batch
        n_vocab = self._llm.n_vocab()
        scratch = np.empty(n_vocab, dtype=np.float32)
        out: list[float] = []
        for begin in range(0, len(rows), self.n_batch):
            part = rows[begin: begin + self.n_batch]
            batch.n_tokens = len(part)
            for k, (tok, pos, seq, _) in enumerate(part):
                batch.token[k] = tok
                batch.pos[k] = pos
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = seq
                batch.logits[k] = True
            if int(lib.llama_decode(ctx, batch)) != 0:
                raise BackendError("llama.cpp could not decode the judge's batch.")
            for k, row in enumerate(part):
                logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, k), shape=(n_vocab,))
                out.append(token_logprob(logits, row[3], scratch))
        return out

    def _keep_shared_head(self, head: list[int]) -> int:
        """Keep the longest start of ``head`` the KV cache (sequence 0) holds, drop the rest;
        returns how many tokens were kept. Tokens the judge adapter computed are never kept."""
        llm = self._llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        common = 0
        for a, b in zip(cached, head[: self._base_tokens]):
            if a != b:
                break
            common += 1
        llm.n_tokens = common
        llm._ctx.kv_cache_seq_rm(0, common, -1)
        return common

    def _prompt_head(self, head: list[int], common: int) -> int:
        """Put ``head`` into the KV cache (``common`` of its tokens are there already):
        restored from the prompt cache or the document's :attr:`judge_states`, or evaluated
        and then stored in the prompt cache (when it is on). Returns len(head)."""
        llm = self._llm
        data = self.prompt_cache.get(head) if self.prompt_cache.max_bytes else None
        if data is None and self.judge_states is not None:
            data = self.judge_states.get(head)
        if data is not None:
            if self._set_seq_state(head, data):
                return len(head)
            common = 0  # a state that does not fit: evaluate instead
        llm.eval(head[common:])  # no logits needed; eval keeps input_ids and n_tokens
        if self.prompt_cache.max_bytes:
            state = self._seq_state(self.prompt_cache.max_bytes)
            if state is not None:
                self.prompt_cache.put(head, state)
        return len(head)

    def judge_states_layout(self) -> dict:
        """What a judge state of this model is valid for (:class:`memorag.judge_states.JudgeStates`):
        the model, adapter and window (:meth:`describe`), the sequences of the batched judge's
        context and the llama.cpp build."""
        import llama_cpp

        return {**self.describe(), "sequences": JUDGE_SEQUENCES, "llama_cpp": llama_cpp.__version__}

    def read_passages(self, prompts: Sequence[list[ChatMessage]], *, max_bytes: int,
                      progress: ProgressFn | None = None) -> JudgeStates | None:
        """The KV state of every prompt's head (all but its last token: what
        :meth:`continuation_logprobs_many` restores), or None when they would take more than
        ``max_bytes`` (judged from the first one, before the rest are read).

        Read in the batched judge's context (a state moves only between contexts of the same
        sequence count), one after the other so each reuses the start it shares with the
        one before (the chat template's)."""
        if self._prefix_ids:
            raise BackendError("read_passages runs on a context without a memorized prefix (use twin()).")
        heads = list(dict.fromkeys(tuple(self._prompt_ids(self._render_marked(m)[0])[:-1]) for m in prompts))
        heads = [h for h in heads if h and len(h) < self.context_window]
        if not heads:
            return None
        if JUDGE_SEQUENCES >= 2:
            self._enable_sequences()
        total = sum(len(h) for h in heads)
        states: list[tuple[list[int], bytes]] = []
        used = 0
        for done, head in enumerate(heads):
            ids = list(head)
            common = self._keep_shared_head(ids)
            self._llm.eval(ids[common:])
            self._base_tokens = 1 << 62  # all of the cache is the base model's now
            state = self._seq_state(max_bytes - used)
            if state is None or (done == 0 and len(state) * total / len(ids) > max_bytes):
                return None  # the budget will not hold them all
            states.append((ids, state))
            used += len(state)
            if progress is not None:
                progress(done + 1, len(heads))
        return JudgeStates.build(self.judge_states_layout(), states)

    def use_judge_states(self, states: JudgeStates | None) -> bool:
        """Restore passages from ``states`` from now on (None: stop); False, and none are
        used, when they were made by another model, adapter, window or llama.cpp build."""
        if states is not None and (self._prefix_ids or states.layout != self.judge_states_layout()):
            self.judge_states = None
            return False
        if states is not None and JUDGE_SEQUENCES >= 2:
            self._enable_sequences()  # the states' context layout, for one-at-a-time scoring too
        self.judge_states = states
        return True

    def _set_seq_state(self, tokens: list[int], data: bytes) -> bool:
        """Replace the KV cache by a state of ``tokens`` copied out by :meth:`_seq_state`;
        False (and an empty cache) when llama.cpp refuses it."""
        llm = self._llm
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if int(self._llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buf, len(data), 0)) == len(data):
            llm.input_ids[: len(tokens)] = tokens
            llm.n_tokens = len(tokens)
            return True
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.n_tokens = 0
        return False

    def _seq_state(self, max_bytes: int) -> bytes | None:
        """The KV cache's state (sequence 0) as bytes, or None when it is larger than ``max_bytes``
        or llama.cpp cannot copy it."""
        lib, ctx = self._llama_cpp, self._llm._ctx.ctx
        size = int(lib.llama_state_seq_get_size(ctx, 0))
        if size > max_bytes:
            return None
        out = (ctypes.c_uint8 * size)()
        n = int(lib.llama_state_seq_get_data(ctx, out, size, 0))
        return bytes(memoryview(out)[:n]) if 0 < n <= size else None

    def _yes_no_ids(self) -> tuple[list[int], list[int]]:
        if not hasattr(self, "_yn"):
            def first(words: list[str]) -> list[int]:
                out = set()
                for w in words:
                    toks = self._tokenize(w, add_bos=False)
                    if toks:
                        out.add(toks[0])
                return sorted(out)

            self._yn = (first(["yes", "Yes", " yes", " Yes", "YES", "是"]), first(["no", "No", " no", " No", "NO", "否"]))
        return self._yn

    # ---------------------------------------------------------- prefix state
    def prefix_ids_for(self, messages: list[ChatMessage]) -> tuple[list[int], str]:
        head, tail = self._render_marked(messages, open_user_turn=True)
        return self._prompt_ids(head), tail

    # prefill takes checkpoints= (memorag.checkpoint): the KV state can be saved midway and
    # a killed memory pass resumed from it.
    resumable_prefill = True

    def prefill(self, messages: list[ChatMessage], *, progress: ProgressFn | None = None,
                checkpoints: CheckpointRun | None = None) -> int:
        ids, tail = self.prefix_ids_for(messages)
        self._suffix_adapted = False  # reset() below drops every cached token
        if len(ids) + 256 > self.context_window:
            raise ContextTooLongError(
                f"The document is {len(ids)} tokens with the memory prompt; the memory model's "
                f"window is {self.context_window} tokens (leaving room for questions and clues)."
            )
        llm = self._llm
        llm.reset()
        self._prefix_ids = []  # the KV cache no longer holds the old prefix (until it is complete)
        # Feed n_batch-sized slices ourselves so a progress bar can follow a long prefill;
        # llama.cpp would cut the same batches internally, so this costs nothing. A resumed
        # pass starts at a batch boundary, so it evaluates exactly the batches an
        # uninterrupted one would have after that point.
        step = self.n_batch
        checkpoint = None if checkpoints is None else checkpoints.prefill(
            ids, model=self.describe(), settings={"n_batch": step, "llama_cpp": self._llama_cpp.__version__},
            step=step)
        start = self._resume(checkpoint, ids) if checkpoint is not None else 0
        if start and progress:
            progress(start, len(ids))
        for begin in range(start, len(ids), step):
            llm.eval(ids[begin : begin + step])
            done = min(begin + step, len(ids))
            if checkpoint is not None and checkpoint.due(done):
                checkpoint.save(done, self._state_bytes())
            if progress:
                progress(done, len(ids))
        self._prefix_ids = ids
        self._tail = tail
        return len(ids)

    def _state_bytes(self) -> memoryview:
        """llama.cpp's state (the KV cache of the tokens evaluated so far), copied out."""
        buf, n = self._state_copy()
        return memoryview(buf).cast("B")[:n]

    def _state_copy(self) -> tuple[ctypes.Array, int]:
        """A buffer holding llama.cpp's current state and the number of bytes it used."""
        ctx = self._llm._ctx.ctx
        size = int(self._llama_cpp.llama_state_get_size(ctx))
        buf = (ctypes.c_uint8 * size)()
        n = int(self._llama_cpp.llama_state_get_data(ctx, buf, size))
        if n <= 0 or n > size:
            raise StateError("llama.cpp could not copy its state.")
        return buf, n

    def _resume(self, checkpoint: PrefillCheckpoint, ids: list[int]) -> int:
        """Put the newest valid checkpoint of ``ids`` into the KV cache; tokens restored (0: none)."""
        found = checkpoint.latest()
        if found is None:
            return 0
        n, data = found
        llm = self._llm
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
        if int(self._llama_cpp.llama_state_set_data(llm._ctx.ctx, buf, len(data))) != len(data):
            llm.reset()
            checkpoint.rejected(n)
            return 0
        llm.input_ids[:n] = ids[:n]
        llm.n_tokens = n
        checkpoint.restored(n)
        return n

    @property
    def prefix_tokens(self) -> int:
        return len(self._prefix_ids)

    def extend_prefix(self, text: str, *, progress: ProgressFn | None = None) -> int:
        """Append ``text`` to the open user turn of the prefix, evaluating only its tokens.

        The KV cache already holds the prefix (after prefill, load_prefix or restore_prefix),
        so the document is not read again: only ``text`` is prefilled. Returns the number of
        tokens evaluated. ``text`` is tokenized on its own, as tasks are in continue_chat.
        """
        if not self._prefix_ids:
            raise StateError("No prefix state to extend: memorize or load a document first.")
        new = self._tokenize(text, add_bos=False)
        if len(self._prefix_ids) + len(new) + 256 > self.context_window:
            raise ContextTooLongError(
                f"Appending {len(new)} tokens to the memory's {len(self._prefix_ids)} would not fit its "
                f"{self.context_window}-token window (leaving room for questions and clues).")
        self._truncate_to_prefix()
        ids = list(self._prefix_ids)
        self._prefix_ids = []  # incomplete until every new token is in (Memory.guard restores on failure)
        llm = self._llm
        step = self.n_batch
        for start in range(0, len(new), step):
            llm.eval(new[start : start + step])
            if progress:
                progress(min(start + step, len(new)), len(new))
        self._prefix_ids = ids + new
        return len(new)

    def continue_chat(
        self,
        user_suffix: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[str]:
        return self._continue(user_suffix, max_new_tokens, temperature, stop)

    def continue_quotes(self, user_suffix: str, *, max_new_tokens: int = 128, min_words: int = 4,
                        avoid: Sequence[str] = (), null_suffix: str | None = None,
                        source: str | None = None) -> Iterator[str]:
        """Like :meth:`continue_chat` (greedy), but every line of the reply is a verbatim
        piece of the memorized prefix outside ``avoid``, at least ``min_words`` long
        (memorag.quoting). ``null_suffix``: the task for no question (where the question
        begins; the look-ahead's contrast reads it, ``quoting.QUOTE_CONTRAST``). ``source``:
        the text quotes come from instead of the memorized document (the whole document when
        the memory read an extract of it)."""
        if not self._prefix_ids:
            raise StateError("No prefix state: memorize or load a document first.")
        text = document_text(self._prefix_text()) if source is None else source
        constraint = self.quote_constraint(quotable_text(text, avoid), min_words)
        return self._continue(user_suffix, max_new_tokens, 0.0, None, constraint, null_suffix)

    def quote_constraint(self, source: str, min_words: int = 4) -> QuoteConstraint:
        """The constraint :meth:`continue_quotes` decodes under: lines of ``source``, in this
        model's tokens (its end tokens, its line break, its tokenizer for the document's own
        next tokens)."""
        llm = self._llm
        vocab = llm._model.vocab
        return QuoteConstraint(
            source, self._token_bytes,
            is_end=lambda t: bool(self._llama_cpp.llama_vocab_is_eog(vocab, t)), end_id=llm.token_eos(),
            newline_id=self._tokenize("\n", add_bos=False)[0], min_words=min_words,
            tokenize=lambda text: self._tokenize(text, add_bos=False))

    def score_replies(self, user_suffix: str, replies: list[str], *, max_tokens: int = 16) -> list[list[float]]:
        """Log-probabilities of the first ``max_tokens`` tokens of each of ``replies`` as the
        reply to ``user_suffix`` after the memorized prefix (with the task adapter when one is
        wanted, as :meth:`continue_chat`).

        The task is evaluated once; each reply is then read from that point and cut off again
        (the KV cache is truncated back to the task), so a question costs one task plus
        ``max_tokens`` per reply whatever the document's length."""
        if not self._prefix_ids:
            raise StateError("No prefix state: memorize or load a document first.")
        suffix_ids = self._suffix_ids(user_suffix)
        adapted = self._adapter_wanted
        self._truncate_to_prefix()  # task tokens of an earlier call may carry the other adapter setting
        self._suffix_adapted = adapted
        llm = self._llm
        start = len(self._prefix_ids) + len(suffix_ids) - 1  # the last task token predicts reply[0]
        targets = [self._tokenize(r, add_bos=False)[:max_tokens] for r in replies]
        longest = max((len(t) for t in targets), default=0)
        if start + 1 + longest > self.context_window:
            raise ContextTooLongError(f"Scoring replies after {start + 1} tokens does not fit the "
                                      f"{self.context_window}-token window.")
        if adapted:
            self._apply_adapter(True)
        try:
            llm.eval(suffix_ids[:-1])
            out: list[list[float]] = []
            for target in targets:
                if not target:
                    out.append([])
                    continue
                llm._ctx.kv_cache_seq_rm(-1, start, -1)
                llm.n_tokens = start
                out.append(self._decode_logprobs([suffix_ids[-1], *target], start, start))
            return out
        finally:
            llm._ctx.kv_cache_seq_rm(-1, start, -1)
            llm.n_tokens = start
            if adapted:
                self._apply_adapter(False)

    def _decode_logprobs(self, ids: list[int], start: int, first_needed: int) -> list[float]:
        """Decode ``ids`` at positions ``start``.. (the cache holds everything before) and return
        the log-probability of each token of ``ids`` after position ``first_needed``."""
        llm = self._llm
        n_vocab = llm.n_vocab()
        batch = llm._batch
        scratch = np.empty(n_vocab, dtype=np.float32)
        out: list[float] = []
        end = start + len(ids)
        for pos in range(start, end - 1, self.n_batch):  # the last token predicts nothing we need
            piece = ids[pos - start: min(end - 1, pos + self.n_batch) - start]
            batch.set_batch(batch=piece, n_past=pos, logits_all=False)
            wanted = [i for i in range(len(piece)) if pos + i >= first_needed]
            for i in range(len(piece)):
                batch.batch.logits[i] = i in wanted
            llm._ctx.decode(batch)
            llm.input_ids[pos: pos + len(piece)] = piece
            llm.n_tokens = pos + len(piece)
            for i in wanted:
                logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(i), shape=(n_vocab,))
                out.append(token_logprob(logits, ids[pos - start + i + 1], scratch))
        return out

    def _suffix_ids(self, user_suffix: str) -> list[int]:
        # The task (with the user's question) is plain text; the tail is template markup.
        return self._tokenize(user_suffix, add_bos=False) + self._tokenize(self._tail, add_bos=False, special=True)

    def _token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._llm.detokenize([token], special=False)
        return piece

    def _prefix_text(self) -> str:
        """The memorized prefix as text (what quotes may be taken from), computed once per prefix."""
        key = hashlib.sha256(np.asarray(self._prefix_ids, dtype=np.int32).tobytes()).hexdigest()
        if self._prefix_text_cache[0] != key:
            text = self._llm.detokenize(self._prefix_ids, special=False).decode("utf-8", errors="ignore")
            self._prefix_text_cache = (key, text)
        return self._prefix_text_cache[1]

    def _continue(self, user_suffix: str, max_new_tokens: int, temperature: float, stop: list[str] | None,
                  constraint: QuoteConstraint | None = None, null_suffix: str | None = None) -> Iterator[str]:
        if not self._prefix_ids:
            raise StateError("No prefix state: memorize or load a document first.")
        suffix_ids = self._suffix_ids(user_suffix)
        adapted = self._adapter_wanted
        if adapted != self._suffix_adapted:
            # Cached task tokens computed with the other adapter setting must not be reused:
            # only the prefix (always the base model's) is shared between the two.
            self._truncate_to_prefix()
        if not adapted:
            yield from (self._stream_ids(self._prefix_ids + suffix_ids, max_new_tokens, temperature, stop)
                        if constraint is None else
                        self._quote_ids(self._prefix_ids + suffix_ids, max_new_tokens, constraint,
                                        None if null_suffix is None else self._prefix_ids + self._suffix_ids(null_suffix)))
            return
        self._suffix_adapted = True
        self._apply_adapter(True)
        try:
            yield from (self._stream_ids(self._prefix_ids + suffix_ids, max_new_tokens, temperature, stop)
                        if constraint is None else
                        self._quote_ids(self._prefix_ids + suffix_ids, max_new_tokens, constraint,
                                        None if null_suffix is None else self._prefix_ids + self._suffix_ids(null_suffix)))
        finally:
            # Off again at once: a later prefill, extension or judge call must see the base model.
            self._apply_adapter(False)

    def _truncate_to_prefix(self) -> None:
        n = len(self._prefix_ids)
        llm = self._llm
        if llm.n_tokens > n:
            if not llm._ctx.kv_cache_seq_rm(-1, n, -1):
                raise BackendError("llama.cpp cannot truncate this model's KV cache to the prefix.")
            llm.n_tokens = n
        self._suffix_adapted = False

    def save_prefix(self, directory: Path) -> dict:
        if not self._prefix_ids:
            raise StateError("No prefix state to save: memorize a document first.")
        self._truncate_to_prefix()
        n = len(self._prefix_ids)
        # The cache must hold exactly the prefix tokens; anything else would be saved too.
        path = Path(directory) / STATE_FILE
        arr = (self._llama_cpp.llama_token * n)(*self._prefix_ids)
        ok = self._llama_cpp.llama_state_save_file(self._llm._ctx.ctx, str(path).encode(), arr, n)
        if not ok:
            raise StateError(f"llama.cpp failed to write its state to {path}")
        return {"file": STATE_FILE, "n_tokens": n, "tail": self._tail, "bytes": path.stat().st_size}

    def load_prefix(self, directory: Path, info: dict) -> None:
        path = Path(directory) / info.get("file", STATE_FILE)
        if not path.is_file():
            raise StateError(f"Memory state file missing: {path}")
        n_expected = int(info["n_tokens"])
        if n_expected + 16 > self.context_window:
            raise StateError(
                f"Saved memory has {n_expected} tokens but this model instance's window is "
                f"{self.context_window}; load it with a larger n_ctx."
            )
        llm = self._llm
        llm.reset()
        self._prefix_ids = []
        cap = self.context_window
        out = (self._llama_cpp.llama_token * cap)()
        n_out = ctypes.c_size_t(0)
        ok = self._llama_cpp.llama_state_load_file(llm._ctx.ctx, str(path).encode(), out, cap, ctypes.byref(n_out))
        if not ok or n_out.value != n_expected:
            llm.reset()
            raise StateError(
                f"Memory state {path} is corrupt or was written by another model/llama.cpp build "
                f"(read {n_out.value} of {n_expected} tokens). Memorize the document again."
            )
        ids = list(out[: n_out.value])
        llm.input_ids[: len(ids)] = ids
        llm.n_tokens = len(ids)
        llm._requires_eval = True
        self._prefix_ids = ids
        self._tail = info.get("tail", "")

    def snapshot_prefix(self) -> _Snapshot | None:
        """A copy of the KV cache holding the prefix (llama.cpp's state bytes, ~the prefix's
        KV size: ~12 KB per token for Qwen2.5-0.5B), kept in memory."""
        if not self._prefix_ids:
            return None
        self._truncate_to_prefix()  # the state must hold exactly the prefix tokens
        buf, n = self._state_copy()
        return _Snapshot(buf, n, list(self._prefix_ids), self._tail)

    def restore_prefix(self, snapshot: _Snapshot | None) -> None:
        llm = self._llm
        llm.reset()
        if snapshot is None:
            self._prefix_ids, self._tail = [], ""
            return
        if not self._llama_cpp.llama_state_set_data(llm._ctx.ctx, snapshot.data, snapshot.size):
            self._prefix_ids = []
            raise StateError("llama.cpp could not restore its saved state.")
        ids = snapshot.prefix_ids
        llm.input_ids[: len(ids)] = ids
        llm.n_tokens = len(ids)
        llm._requires_eval = True
        self._prefix_ids, self._tail = list(ids), snapshot.tail

    def twin(self, n_ctx: int = 8192) -> LlamaCppLLM:
        """A second context on the same weights (mmap shares them) for generation.

        Generating with another prompt in the memory's own context would evict the
        document's KV cache, and the next question would have to re-read the document.
        """
        return LlamaCppLLM(self.model_path, spec=self.spec, n_ctx=min(n_ctx, self._n_ctx_train),
                           n_batch=self.n_batch, flash_attn=self.flash_attn, chat=self.chat_mode,
                           repeat_penalty=self.repeat_penalty)


@dataclass(frozen=True)
class _Snapshot:
    data: Any  # ctypes uint8 array
    size: int
    prefix_ids: list[int]
    tail: str
