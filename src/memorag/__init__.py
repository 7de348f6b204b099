"""memorag: memory-augmented retrieval-augmented generation over long documents."""

from memorag._version import __version__
from memorag.errors import MemoRAGError
from memorag.memory import Memory
from memorag.pipeline import Answer, MemoRAG

# Agent and MemoRAGLite are listed but resolved lazily by __getattr__ below, so that
# `import memorag` stays light; `from memorag import *` imports them (neither needs an
# optional package to import: Agent imports `openai` only when it is used).
__all__ = ["MemoRAG", "MemoRAGLite", "Memory", "Answer", "Agent", "MemoRAGError", "__version__"]


def __getattr__(name: str):
    # Optional backends are imported on first use so that `import memorag` stays light.
    if name == "Agent":
        from memorag.llm.openai_api import Agent

        return Agent
    if name == "MemoRAGLite":
        from memorag.lite import MemoRAGLite

        return MemoRAGLite
    raise AttributeError(name)
