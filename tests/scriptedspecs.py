"""The fakes of memorag.testing under spec strings, so a CLI subprocess can use them:
``--mem-model scriptedspecs:llm --ret-model scriptedspecs:embedder`` with tests/ on PYTHONPATH.
Each records its own spec, so a store made with them is reopened with them."""

from __future__ import annotations

from memorag.testing import HashEmbedder, ScriptedLLM


def llm() -> ScriptedLLM:
    return ScriptedLLM(spec="scriptedspecs:llm")


def embedder() -> HashEmbedder:
    return HashEmbedder(spec="scriptedspecs:embedder")


def echo() -> ScriptedLLM:
    """A generator whose answer is the user message of its prompt, word for word: what a
    front-end sent the generator can be read back from the answer it returns."""
    return ScriptedLLM([(r"^Evidence", lambda turn: turn.request)], spec="scriptedspecs:echo")
