"""LLM backends. Each module is one backend; :mod:`memorag.llm.base` is the protocol."""

from memorag.llm.base import LLM, ChatMessage

__all__ = ["LLM", "ChatMessage"]
