"""Deterministic stand-ins for the model backends: a scripted LLM and a hash embedder.

They implement the same protocols as the real backends (``memorag.llm.base.LLM``,
``memorag.embed.base.Embedder``) and pass the same contract suites
(:mod:`memorag.testing.contracts`), so pipeline logic can be tested in milliseconds with
no model loaded. Neither knows anything about language: the scripted LLM answers from a
script, or else quotes the sentences of its input that share the most words with the
request; the hash embedder maps words to random-but-fixed directions.

Both can be told to fail (:meth:`ScriptedLLM.fail`, :meth:`HashEmbedder.fail`) so tests
can interrupt a memorize at a chosen point.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memorag.checkpoint import CheckpointRun
from memorag.errors import ContextTooLongError, StateError
from memorag.llm.base import ChatMessage, ProgressFn, read_message_prefix, render_open_turn, write_message_prefix

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+|\n+")
# Words too common to say anything about overlap between a request and a sentence.
_STOP_WORDS = (
    "a an the of to in on at by for from with and or but is are was were be been it its this that these those "
    "who whom what which when where why how do does did has have had not no as into than then there their they "
    "he she his her him i you we our your me my one ones any each every all some"
)
_STOP = frozenset(_STOP_WORDS.split())
PREFIX_FILE = "scripted_prefix.json"


class _Faults:
    """``fail(method, exc, after=n)``: the call to ``method`` ``n`` calls from now raises ``exc``.

    ``exc`` may also be a function, called at that point instead (it may wait for an
    event before raising, to fail at a moment another thread chose).
    """

    def _init_faults(self) -> None:
        self._faults: dict[str, tuple[int, BaseException | Callable[[], None]]] = {}
        self.call_counts: dict[str, int] = {}

    def fail(self, method: str, exc: BaseException | Callable[[], None], *, after: int = 0) -> None:
        """Make the call to ``method`` ``after`` calls from now raise ``exc`` (once)."""
        self._faults[method] = (self.call_counts.get(method, 0) + after, exc)

    def _tick(self, method: str) -> None:
        n = self.call_counts.get(method, 0)
        self.call_counts[method] = n + 1
        fault = self._faults.get(method)
        if fault is not None and fault[0] == n:
            del self._faults[method]
            if isinstance(fault[1], BaseException):
                raise fault[1]
            fault[1]()


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)} - _STOP


def best_sentences(source: str, request: str, n: int = 2) -> list[str]:
    """The ``n`` sentences of ``source`` sharing the most content words with ``request``
    (ties: earlier first); sentences sharing none are never returned."""
    want = _words(request)
    scored = []
    for i, sent in enumerate(s.strip() for s in _SENTENCE_END.split(source)):
        overlap = len(_words(sent) & want)
        if sent and overlap:
            scored.append((-overlap, i, sent))
    return [s for _, _, s in sorted(scored)[:n]]


@dataclass
class Turn:
    """One request the scripted LLM answered (recorded in :attr:`ScriptedLLM.turns`)."""

    kind: str  # "continue" (a task on the prefix) or "chat"
    request: str  # the task appended to the open turn, or the last message of a chat
    prefix: str  # the open user turn's text ("" for chat)
    reply: str = ""


Reply = str | Callable[[Turn], str]


class ScriptedLLM(_Faults):
    """A fake LLM that follows a script: ``[(regex, reply), ...]``, first match wins.

    A rule's regex is searched in the request (the task appended to the document for
    ``continue_chat``, the last user message for ``chat``); its reply is a string or a
    function of the :class:`Turn`. With no matching rule the reply is the request's
    best-overlapping sentences of the prefix document (``continue_chat``), or for ``chat``
    the sentence of the message that best matches the message's questions, one per line: a crude but deterministic
    reader, enough for retrieval and answers to depend on which document was memorized.

    The prefix state mimics llama.cpp: ``prefill`` discards the old prefix first and reads
    the new one in batches of ``batch_tokens`` (calling ``progress`` after each), so a
    failure midway leaves no prefix; ``snapshot_prefix``/``restore_prefix`` undo that.

    Fault points for :meth:`fail`: ``"prefill_batch"`` (each batch of a prefill),
    ``"prefill"`` (after the last batch, before the new prefix is kept), ``"continue"``
    and ``"chat"`` (each request).
    """

    def __init__(self, script: Sequence[tuple[str, Reply]] = (), *, context_window: int = 8192,
                 batch_tokens: int = 64, spec: str = "scripted") -> None:
        self.script = list(script)
        self.context_window = context_window
        self.batch_tokens = batch_tokens
        self.spec = spec
        self.turns: list[Turn] = []  # every request answered, in order
        self._rules = [(re.compile(p, re.S), r) for p, r in self.script]
        self._prefix: list[ChatMessage] | None = None
        self._head = ""
        self._init_faults()

    # ------------------------------------------------------------- basics
    def count_tokens(self, text: str) -> int:
        return len(_TOKEN.findall(text))

    def describe(self) -> dict:
        script = json.dumps([p for p, _ in self.script])
        return {"backend": "scripted", "spec": self.spec, "n_ctx": self.context_window,
                "fingerprint": hashlib.sha256(script.encode()).hexdigest()[:16]}

    def _render(self, msgs: list[dict]) -> str:
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in msgs) + "<assistant>"

    def _answer(self, turn: Turn) -> str:
        for pattern, reply in self._rules:
            if pattern.search(turn.request):
                return reply(turn) if callable(reply) else reply
        if turn.kind == "continue":
            return "\n".join(best_sentences(turn.prefix, turn.request))
        parts = _SENTENCE_END.split(turn.request)
        questions = " ".join(s for s in parts if s.rstrip().endswith("?"))
        evidence = "\n".join(s for s in parts if not s.rstrip().endswith("?"))
        return "\n".join(best_sentences(evidence, questions or turn.request, n=1))

    def _stream(self, turn: Turn, max_new_tokens: int, stop: list[str] | None) -> Iterator[str]:
        self._tick(turn.kind)
        reply = self._answer(turn)
        for s in stop or []:
            if s in reply:
                reply = reply[: reply.index(s)]
        pieces = re.findall(r"\S+\s*|\s+", reply)[:max_new_tokens]
        turn.reply = "".join(pieces)
        self.turns.append(turn)
        yield from pieces

    # --------------------------------------------------------- generation
    def stream_chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256, temperature: float = 0.0,
                    stop: list[str] | None = None) -> Iterator[str]:
        if self.count_tokens(self._render([dict(m) for m in messages])) > self.context_window:
            raise ContextTooLongError(f"Prompt does not fit the scripted model's {self.context_window}-token window.")
        return self._stream(Turn("chat", messages[-1]["content"], ""), max_new_tokens, stop)

    def chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        return "".join(self.stream_chat(messages, max_new_tokens=max_new_tokens, stop=stop))

    # ------------------------------------------------------------- judging
    def continuation_logprobs(self, messages: list[ChatMessage], continuation: str) -> list[float]:
        """Crude query likelihood: each token of ``continuation`` costs 0 if the prompt holds
        it and -5 if not, so a passage sharing more of the question's words scores higher
        (deterministic, enough for plans to depend on which passage holds the words)."""
        self._tick("judge")
        seen = {t.lower() for m in messages for t in _TOKEN.findall(m["content"])}
        return [0.0 if t.lower() in seen else -5.0 for t in _TOKEN.findall(continuation)]

    def yes_probability(self, messages: list[ChatMessage]) -> float:
        """Crude relevance: the share of the question's words (the sentences of the last
        message that end in ``?``) that the rest of that message holds, so a passage holding
        more of them is judged more helpful."""
        self._tick("judge")
        parts = _SENTENCE_END.split(messages[-1]["content"])
        want = _words(" ".join(s for s in parts if s.rstrip().endswith("?")))
        have = _words(" ".join(s for s in parts if not s.rstrip().endswith("?")))
        return len(want & have) / len(want) if want else 0.0

    # ------------------------------------------------------- prefix state
    resumable_prefill = True  # prefill takes checkpoints=, like the llama.cpp backend

    def prefill(self, messages: list[ChatMessage], *, progress: ProgressFn | None = None,
                checkpoints: CheckpointRun | None = None) -> int:
        head, _ = render_open_turn(messages, self._render)
        n = self.count_tokens(head)
        if n + 256 > self.context_window:
            raise ContextTooLongError(f"The document is {n} tokens; the scripted model's window is "
                                      f"{self.context_window}.")
        self._prefix, self._head = None, ""  # like a KV cache: the old prefix is gone from here on
        # Checkpoints as llama.cpp's: the "state" after k tokens names those k tokens, and a
        # restored one is checked against the text being read (a KV cache of other tokens
        # would be garbage). Each batch read ticks "prefill_batch", so tests can count them.
        ids = [zlib.crc32(t.encode("utf-8")) for t in _TOKEN.findall(head)]
        checkpoint = None if checkpoints is None else checkpoints.prefill(
            ids, model=self.describe(), settings={"batch_tokens": self.batch_tokens}, step=self.batch_tokens)
        start = 0
        found = checkpoint.latest() if checkpoint is not None else None
        if checkpoint is not None and found is not None:
            if bytes(found[1]) == self._state(ids, found[0]):
                start = found[0]
                checkpoint.restored(start)
                if progress:
                    progress(start, n)
            else:
                checkpoint.rejected(found[0])
        for done in range(start, n, self.batch_tokens):
            self._tick("prefill_batch")
            end = min(done + self.batch_tokens, n)
            if checkpoint is not None and checkpoint.due(end):
                checkpoint.save(end, self._state(ids, end))
            if progress:
                progress(end, n)
        self._tick("prefill")
        self._prefix, self._head = [dict(m) for m in messages], head  # type: ignore[misc]
        return n

    @staticmethod
    def _state(ids: list[int], n: int) -> bytes:
        return json.dumps({"tokens": n, "ids": hashlib.sha256(str(ids[:n]).encode()).hexdigest()}).encode()

    @property
    def prefix_tokens(self) -> int:
        return self.count_tokens(self._head) if self._prefix else 0

    def extend_prefix(self, text: str, *, progress: ProgressFn | None = None) -> int:
        """Append ``text`` to the open user turn (as llama.cpp does: only ``text`` is read).
        Fault points: ``"prefill_batch"`` per batch, then ``"extend"``. Returns the tokens read."""
        if not self._prefix:
            raise StateError("No prefix state to extend: memorize or load a document first.")
        before = self.prefix_tokens
        messages = [dict(m) for m in self._prefix]
        messages[-1]["content"] += text
        head = render_open_turn(messages, self._render)[0]  # type: ignore[arg-type]
        n = self.count_tokens(head) - before
        if before + n + 256 > self.context_window:
            raise ContextTooLongError(f"Appending {n} tokens would not fit the scripted model's window.")
        self._prefix, self._head = None, ""
        for done in range(0, n, self.batch_tokens):
            self._tick("prefill_batch")
            if progress:
                progress(min(done + self.batch_tokens, n), n)
        self._tick("extend")
        self._prefix, self._head = messages, head  # type: ignore[assignment]
        return n

    def continue_chat(self, user_suffix: str, *, max_new_tokens: int = 256, temperature: float = 0.0,
                      stop: list[str] | None = None) -> Iterator[str]:
        if not self._prefix:
            raise StateError("No prefix state: memorize or load a document first.")
        if self.prefix_tokens + self.count_tokens(user_suffix) + 1 > self.context_window:
            raise ContextTooLongError("The task does not fit the scripted model's window.")
        return self._stream(Turn("continue", user_suffix, self._prefix[-1]["content"]), max_new_tokens, stop)

    def save_prefix(self, directory: Path) -> dict:
        return write_message_prefix(directory, PREFIX_FILE, self._prefix, self.prefix_tokens)

    def load_prefix(self, directory: Path, info: dict) -> None:
        self._prefix, self._head = None, ""
        messages = read_message_prefix(directory, info, PREFIX_FILE)
        self._prefix, self._head = messages, render_open_turn(messages, self._render)[0]

    def snapshot_prefix(self) -> tuple[list[ChatMessage], str] | None:
        return ([dict(m) for m in self._prefix], self._head) if self._prefix else None  # type: ignore[misc]

    def restore_prefix(self, snapshot: tuple[list[ChatMessage], str] | None) -> None:
        self._prefix, self._head = (None, "") if snapshot is None else ([dict(m) for m in snapshot[0]], snapshot[1])  # type: ignore[misc]

    def twin(self, n_ctx: int = 8192) -> ScriptedLLM:
        return ScriptedLLM(self.script, context_window=min(n_ctx, self.context_window),
                           batch_tokens=self.batch_tokens, spec=self.spec)


class HashEmbedder(_Faults):
    """Bag-of-words vectors from word hashes: deterministic, normalised, no model.

    Each lower-cased word adds +-1 at a position chosen by its hash; texts sharing words
    point the same way, so dense retrieval behaves like a (weak) lexical match.
    """

    def __init__(self, dimension: int = 256, max_tokens: int = 256, spec: str = "hash") -> None:
        self._dimension = dimension
        self._max_tokens = max_tokens
        self.spec = spec
        self._init_faults()

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def tokenizer(self):
        """A word-level ``tokenizers.Tokenizer`` (every word and punctuation mark is one token)."""
        from tokenizers import Tokenizer, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return tok

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self._dimension, dtype=np.float32)
        words = [w.lower() for w in _WORD.findall(text)][: self._max_tokens] or [text]
        for w in words:
            h = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
            v[h % self._dimension] += 1.0 if (h >> 32) & 1 else -1.0
        norm = float(np.linalg.norm(v))
        if norm == 0.0:  # words cancelled out: any fixed direction will do
            v[0], norm = 1.0, 1.0
        return v / norm

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        self._tick("embed")
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts]).astype(np.float32)

    def describe(self) -> dict:
        return {"backend": "hash", "spec": self.spec, "name": f"hash-{self._dimension}", "dimension": self._dimension,
                "max_tokens": self._max_tokens}
