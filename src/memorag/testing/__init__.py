"""Test helpers for memorag and for code that extends it.

- :mod:`memorag.testing.fakes`: :class:`ScriptedLLM` and :class:`HashEmbedder`, protocol
  implementations that need no model, for fast tests of pipeline logic.
- :mod:`memorag.testing.contracts`: the behaviour every LLM, embedder and vector-index
  backend must show, as lists of check functions a test module parametrizes over.
"""

from memorag.testing.fakes import HashEmbedder, ScriptedLLM, Turn, best_sentences

__all__ = ["HashEmbedder", "ScriptedLLM", "Turn", "best_sentences"]
