"""memorag: memory-augmented retrieval-augmented generation over long documents."""

__version__ = "0.1.0"

from memorag.errors import MemoRAGError  # noqa: E402
from memorag.memory import Memory  # noqa: E402
from memorag.pipeline import Answer, MemoRAG  # noqa: E402

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
