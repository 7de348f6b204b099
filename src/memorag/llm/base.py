"""The LLM protocol every backend implements.

Two halves:

* plain chat generation (``chat`` / ``stream_chat``), all a generator needs, and
* a *prefix state*: ``prefill`` reads a long open-ended user turn once (the document),
  ``continue_chat`` appends a short task to that same user turn and generates the
  assistant reply without re-reading the prefix, and ``save_prefix``/``load_prefix``
  persist it. For llama.cpp and transformers the state is the KV cache; for a remote
  OpenAI-compatible server it is the prefix text, kept warm by the server's prefix cache.

``snapshot_prefix``/``restore_prefix`` keep a copy of the prefix state in memory so a
caller can undo a prefill that failed or was interrupted midway (llama.cpp overwrites its
one KV cache in place): the pipeline uses them so that a failed memorize of a second
document leaves the first one usable. ``memorag.testing`` has the contract every backend
must pass (``llm_prefix_contract``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable

from memorag.errors import StateError


class ChatMessage(TypedDict):
    role: str
    content: str


ProgressFn = Callable[[int, int], None]
"""Called as ``progress(tokens_done, tokens_total)`` during long prefills."""

StageProgressFn = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)`` while memorizing, instead of drawing tqdm bars.
Stages: ``index`` (passages embedded), ``compress`` (windows of a long document),
``memory`` (tokens read into the memory). Used by the HTTP service and the demo."""


@runtime_checkable
class Generator(Protocol):
    """What a generator needs: anything with these methods can answer from evidence."""

    def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> str: ...

    def stream_chat(
        self,
        messages: list[ChatMessage],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[str]: ...


@runtime_checkable
class TaskAdapted(Protocol):
    """A memory model that carries a task adapter (a LoRA trained for some memory tasks).

    ``with llm.task_adapter("recall"): ...`` makes the ``continue_chat`` calls consumed inside
    the block run with the adapter when it was trained for that task, and without it
    otherwise. The adapter applies only to the task and the reply, never to the memorized
    prefix, so a saved memory state is the base model's and valid with or without it.
    """

    def task_adapter(self, task: str) -> AbstractContextManager[None]: ...


@runtime_checkable
class Quoting(Protocol):
    """A memory model that can decode its reply as quotes of the memorized prefix.

    ``continue_quotes`` is ``continue_chat`` (greedy) under a constraint: every line of the
    reply is a verbatim piece of the prefix, at least ``min_words`` long
    (:mod:`memorag.quoting`). The recall task uses it so a clue always points at real text.
    ``avoid``: pieces of the prefix no quote may contain (what retrieval has found already).
    ``null_suffix`` (optional to implement): the same task for no question, so the backend
    knows where the question begins (llama.cpp reads the question the same way every time)
    and can weigh each quote's start against it (``memorag.quoting.QUOTE_CONTRAST``).
    """

    def continue_quotes(self, user_suffix: str, *, max_new_tokens: int = 128, min_words: int = 4,
                        avoid: Sequence[str] = (), null_suffix: str | None = None) -> Iterator[str]: ...


@runtime_checkable
class LLM(Generator, Protocol):
    """A model usable as a memory: chat generation plus a saved prefix state."""

    spec: str
    """The spec string this model was made from (recorded in manifests)."""

    @property
    def context_window(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def prefill(self, messages: list[ChatMessage], *, progress: ProgressFn | None = None) -> int:
        """Read ``messages`` (the last one a user turn left open) into the prefix state.

        Returns the number of tokens in the prefix.
        """
        ...

    @property
    def prefix_tokens(self) -> int:
        """Tokens in the current prefix state (0 when none)."""
        ...

    def continue_chat(
        self,
        user_suffix: str,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> Iterator[str]:
        """Append ``user_suffix`` to the open user turn and stream the assistant's reply."""
        ...

    def save_prefix(self, directory: Path) -> dict:
        """Write the prefix state into ``directory``; return a JSON-able description."""
        ...

    def load_prefix(self, directory: Path, info: dict) -> None:
        """Restore a prefix state written by :meth:`save_prefix` (``info`` is its return)."""
        ...

    def snapshot_prefix(self) -> Any:
        """An in-memory copy of the current prefix state (opaque; None when there is none).

        It must stay valid across later ``prefill`` calls, which may overwrite the live state.
        """
        ...

    def restore_prefix(self, snapshot: Any) -> None:
        """Make a :meth:`snapshot_prefix` result the prefix state again (None: no prefix)."""
        ...

    def twin(self, n_ctx: int = 8192) -> LLM:
        """Another instance on the same weights with its own, empty prefix state.

        Used as the generator when the memory model also answers: generating in the
        memory's own state would evict the document. ``n_ctx`` caps the new window.
        """
        ...

    def describe(self) -> dict:
        """What identifies this model in a manifest (name, file hash or size, settings)."""
        ...


@runtime_checkable
class ExtendablePrefix(Protocol):
    """An LLM whose prefix state can grow: ``extend_prefix`` appends text to the open user
    turn and reads only the new tokens (llama.cpp, ``ScriptedLLM``). ``Collection.append``
    uses it to add to a memorized document without reading it again; a backend without it
    memorizes the whole document again. Contract: ``contracts.EXTENDABLE_PREFIX_CHECKS``."""

    def extend_prefix(self, text: str, *, progress: ProgressFn | None = None) -> int:
        """Append ``text`` to the prefix's open user turn; returns the tokens read."""
        ...


@runtime_checkable
class Judge(Protocol):
    """Scores evidence for a question without decoding (the judging query plans' component).

    ``continuation_logprobs`` serves the query-likelihood plans (``recall``, ``likelihood``):
    how probable the model finds the question after reading a passage. ``yes_probability``
    serves the yes/no plans (``rerank``, ``memorag``). A pipeline's judge defaults to the
    local generator's twin when the generator is a Judge, and can be set on its own
    (``MemoRAG(judge=...)``), so a remote generator still gets judged evidence.
    ``memorag.testing.contracts.JUDGE_CHECKS`` is the contract.
    """

    def continuation_logprobs(self, messages: list[ChatMessage], continuation: str) -> list[float]:
        """Log-probability of each token of ``continuation`` as the reply to ``messages``."""
        ...

    def yes_probability(self, messages: list[ChatMessage]) -> float:
        """P(the reply to ``messages`` starts with yes), in [0, 1]."""
        ...


def score_continuations(judge: Judge, prompts: Sequence[list[ChatMessage]], continuation: str) -> list[list[float]]:
    """``judge.continuation_logprobs`` of ``continuation`` after each of ``prompts``: in one
    call when the judge scores many at once (``continuation_logprobs_many``, as the llama.cpp
    backend does), else one prompt at a time."""
    many = getattr(judge, "continuation_logprobs_many", None)
    if many is not None:
        return many(prompts, continuation)
    return [judge.continuation_logprobs(m, continuation) for m in prompts]


def collect(stream: Iterator[str]) -> str:
    return "".join(stream)


OPEN_TURN_MARK = "\u0000MEMORAG-SPLIT\u0000"
"""A sentinel appended to the open user turn; no chat template changes it."""


def render_open_turn(messages: list[ChatMessage], render: Callable[[list[dict]], str]) -> tuple[str, str]:
    """Render ``messages`` with the last user turn left open.

    ``render`` is a backend's own chat-template rendering (with the reply opened). Returns
    ``(text up to the end of the last message's content, text that closes it and opens the
    reply)``, so ``head + task + tail`` is exactly the rendering of the turn with ``task``
    appended: a prefix state holds ``head`` and each task sends only ``task + tail``.
    """
    msgs = [dict(m) for m in messages]
    msgs[-1]["content"] = msgs[-1]["content"] + OPEN_TURN_MARK
    head, found, tail = render(msgs).partition(OPEN_TURN_MARK)
    if not found:
        raise ValueError("the chat template dropped the open user turn's content")
    return head, tail


def write_message_prefix(directory: Path, file_name: str, messages: list[ChatMessage] | None,
                         n_tokens: int) -> dict:
    """Save a prefix kept as chat messages (backends whose state is text, not a KV cache)."""
    if not messages:
        raise StateError("No prefix state to save: memorize a document first.")
    path = Path(directory) / file_name
    path.write_text(json.dumps({"messages": messages}, ensure_ascii=False), encoding="utf-8")
    return {"file": file_name, "n_tokens": n_tokens}


def read_message_prefix(directory: Path, info: dict, default_file: str) -> list[ChatMessage]:
    """Read back what :func:`write_message_prefix` wrote; anything else is a StateError."""
    path = Path(directory) / info.get("file", default_file)
    try:
        messages = json.loads(path.read_text(encoding="utf-8"))["messages"]
        if not all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in messages):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise StateError(f"Memory prefix {path} is missing or corrupt. Memorize the document again.") from None
    return messages


class Marked(str):
    """Rendered prompt text whose message contents are wrapped in this render's marks.

    The marks carry a fresh random id per render and a NUL (which check_text refuses in
    user text), so no content can forge one; ``pattern`` finds them.
    """

    pattern: re.Pattern[str]

    @classmethod
    def make(cls, text: str, pattern: re.Pattern[str]) -> Marked:
        out = cls(text)
        out.pattern = pattern
        return out

    def plain(self) -> str:
        return self.pattern.sub(r"\1", self)

    def parts(self) -> list[str]:
        """[markup, content, markup, content, ..., markup]."""
        return self.pattern.split(self)


def render_marked(messages: list[ChatMessage], render: Callable[[list[dict]], str], *,
                  open_user_turn: bool = False) -> tuple[Marked, str]:
    """Render ``messages`` with ``render`` (a backend's chat template), each message content
    wrapped in marks, so that the backend can tokenize the template's markup with special
    tokens and the contents as plain text: user text that spells ``<|im_start|>`` must not
    become a control token. With ``open_user_turn`` as :func:`render_open_turn`."""
    key = uuid.uuid4().hex
    start, end = f"\u0000<{key}", f"{key}>\u0000"
    pattern = re.compile(re.escape(start) + "(.*?)" + re.escape(end), re.DOTALL)
    msgs = [dict(m) for m in messages]
    for m in msgs:
        m["content"] = f"{start}{m['content']}{end}"
    if open_user_turn:
        head, tail = render_open_turn(msgs, render)  # type: ignore[arg-type]
        return Marked.make(head, pattern), tail
    return Marked.make(render(msgs), pattern), ""
