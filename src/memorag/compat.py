"""The original MemoRAG research API, kept working on top of memorag's one flow.

memorag's own API is :class:`~memorag.pipeline.MemoRAG`'s ``memorize`` / ``load`` / ``ask`` /
``retrieve`` (and ``from_parts``). What is here exists so that code written against the
original research API runs unchanged:

- ``pipe(context, query)``: memorize a new context, then answer (:meth:`OriginalAPI.__call__`);
- ``pipe._retrieve(queries)``: the texts of the top ``ret_hit`` chunks;
- ``pipe.mem_model``: the original name of ``pipe.memory``;
- ``customized_gen_model`` objects that only have ``generate(prompt)`` (:func:`as_generator`);
- the constructor's model-loading arguments (``n_ctx``, ``load_in_4bit``, ...), refused when
  a model is given as an object (:func:`refuse_with_object`); ``cache_dir`` and
  ``access_token`` are shared by all the models (:func:`memorag.models.registry.share_hub_options`).

:class:`~memorag.lite.MemoRAGLite` (``pipe(query)``, question first) is in :mod:`memorag.lite`;
``Agent`` in :mod:`memorag.llm.openai_api`. Both are importable from ``memorag``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from memorag.errors import InputError, NotMemorizedError
from memorag.llm.base import ChatMessage, Generator
from memorag.text import check_text

if TYPE_CHECKING:
    from memorag.memory import Memory
    from memorag.retrieval import Retriever


class OriginalAPI:
    """The original API's calls on a pipeline: a base of :class:`~memorag.pipeline.MemoRAG`,
    whose ``memorize`` and ``ask`` they call."""

    memory: Memory
    retriever: Retriever
    ret_hit: int
    hybrid: bool

    @property
    def mem_model(self) -> Memory:
        """The original API's name for :attr:`memory` (``pipe.mem_model.recall(query)``)."""
        return self.memory

    def _retrieve(self, retrieval_query: list[str] | str) -> list[str]:
        """The texts of the top ``ret_hit`` evidence chunks for one query or a list of queries
        (e.g. clue lines), best first.

        The queries are searched as ``ask`` searches (dense, plus BM25 when ``hybrid``),
        with equal weights, and fused into one ranking. ``retrieve`` gives the
        :class:`~memorag.retrieval.Hit` objects with chunk ids and scores.
        """
        if not self.retriever.chunks:
            raise NotMemorizedError("No document is indexed: call memorize(context) or load(save_dir) first.")
        queries = [retrieval_query] if isinstance(retrieval_query, str) else list(retrieval_query)
        hits = self.retriever.search(queries, self.ret_hit, lexical=self.hybrid)
        return [h.text for h in hits]

    def __call__(self, context: str | None = None, query: str | None = None, task_type: str = "memorag",
                 prompt_template: str | None = None, max_new_tokens: int = 256, reset_each_call: bool = False,
                 use_memory_answer: bool = False) -> str:
        """Memorize ``context`` if it is new (or always, with ``reset_each_call``), then answer ``query``."""
        if context is not None:
            check_text(context)
            sha = hashlib.sha256(context.encode("utf-8")).hexdigest()
            if reset_each_call or sha != self.memory.context_sha256:
                self.memorize(context, progress=False)  # type: ignore[attr-defined]
        elif not self.memory.memorized:
            raise NotMemorizedError("Give context=... or load(save_dir) before asking.")
        return self.ask(query,  # type: ignore[attr-defined] task_type=task_type, max_new_tokens=max_new_tokens,
                        prompt_template=prompt_template, use_memory_answer=use_memory_answer).answer


class PromptGenerator:
    """Adapts an object with only ``generate(prompt) -> str`` (the original API's custom
    generators) to the chat/stream interface by flattening the messages into one prompt."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def chat(self, messages: list[ChatMessage], *, max_new_tokens: int = 256, temperature: float = 0.0,
             stop: list[str] | None = None) -> str:
        prompt = "\n\n".join(m["content"] for m in messages)
        try:
            return str(self.model.generate(prompt, max_new_tokens=max_new_tokens))
        except TypeError:  # generate(prompt) without keyword arguments
            return str(self.model.generate(prompt))

    def stream_chat(self, messages: list[ChatMessage], **kwargs: Any) -> Iterator[str]:
        yield self.chat(messages, **kwargs)


def as_generator(model: Any) -> Generator:
    """``model`` as a generator: itself when it can chat and stream, else a :class:`PromptGenerator`."""
    if hasattr(model, "stream_chat") and hasattr(model, "chat"):
        return model
    if hasattr(model, "generate"):
        return PromptGenerator(model)
    raise InputError("customized_gen_model needs chat()/stream_chat() or generate(prompt) methods.")


# The constructor's model-loading arguments and their defaults (given a spec, they configure the load).
LOADING_DEFAULTS: dict[str, object] = {"n_ctx": None, "beacon_ratio": None, "load_in_4bit": False,
                                       "enable_flash_attn": None, "compression": "extractive", "quote_recall": None,
                                       "quote_from": "document"}


def refuse_with_object(what: str, **given: object) -> None:
    """Arguments that configure loading a model from a spec mean nothing for a loaded one."""
    extra = [name for name, value in given.items() if value != LOADING_DEFAULTS[name]]
    if extra:
        raise InputError(f"{', '.join(extra)} cannot apply when {what} is given as an object: set them where "
                         "that object is made (or pass a spec string).")
