"""memorag: memory-augmented retrieval-augmented generation over long documents."""

__version__ = "0.1.0"

from memorag.errors import MemoRAGError  # noqa: E402
from memorag.memory import Memory  # noqa: E402
from memorag.pipeline import Answer, MemoRAG  # noqa: E402

__all__ = ["MemoRAG", "Memory", "Answer", "MemoRAGError", "__version__"]


def __getattr__(name: str):
    # Optional backends are imported on first use so that `import memorag` stays light.
    if name == "Agent":
        from memorag.llm.openai_api import Agent

        return Agent
    if name == "MemoRAGLite":
        from memorag.lite import MemoRAGLite

        return MemoRAGLite
    raise AttributeError(name)
