"""The fakes of memorag.testing under spec strings, so a CLI subprocess can use them:
``--mem-model scriptedspecs:llm --ret-model scriptedspecs:embedder`` with tests/ on PYTHONPATH.
Each records its own spec, so a store made with them is reopened with them."""

from __future__ import annotations

from memorag.testing import HashEmbedder, ScriptedLLM


def llm() -> ScriptedLLM:
    return ScriptedLLM(spec="scriptedspecs:llm")


def embedder() -> HashEmbedder:
    return HashEmbedder(spec="scriptedspecs:embedder")
