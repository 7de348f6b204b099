"""The fakes of memorag.testing under spec strings, so a CLI subprocess can use them:
``--mem-model scriptedspecs:llm --ret-model scriptedspecs:embedder`` with tests/ on PYTHONPATH.
Each records its own spec, so a store made with them is reopened with them. Also the small
folder of files the store front-ends' tests add (:func:`write_sources`)."""

from __future__ import annotations

import time
from pathlib import Path

from memorag.testing import HashEmbedder, ScriptedLLM

# Seconds each prefill batch of :func:`slow_llm` takes: long enough for a test to kill the
# process mid-document, short enough that a whole test stays fast.
SLOW_BATCH_SECONDS = 0.03


def llm() -> ScriptedLLM:
    return ScriptedLLM(spec="scriptedspecs:llm")


def windowed_llm(n_ctx: int = 8192) -> ScriptedLLM:
    """:func:`llm` taking a context window, as ``memorag eval`` sizes the memory's."""
    return ScriptedLLM(context_window=n_ctx, spec="scriptedspecs:windowed_llm")


class SlowScriptedLLM(ScriptedLLM):
    """:class:`ScriptedLLM` whose prefill batches take time, as a real model's do."""

    def _tick(self, method: str) -> None:
        if method == "prefill_batch":
            time.sleep(SLOW_BATCH_SECONDS)
        super()._tick(method)


def slow_llm() -> SlowScriptedLLM:
    return SlowScriptedLLM(spec="scriptedspecs:slow_llm")


def embedder() -> HashEmbedder:
    return HashEmbedder(spec="scriptedspecs:embedder")


def echo() -> ScriptedLLM:
    """A generator whose answer is the user message of its prompt, word for word: what a
    front-end sent the generator can be read back from the answer it returns."""
    return ScriptedLLM([(r"^Evidence", lambda turn: turn.request)], spec="scriptedspecs:echo")


def write_sources(folder: Path) -> Path:
    """``folder`` with two documents to add (bakery.md, harbour.txt) and a file of another type."""
    folder.mkdir()
    (folder / "bakery.md").write_text("The baker Anselm Rook hid the brass ledger under the flour barrels.\n\n"
                                      "The bakery door was painted yellow.")
    (folder / "harbour.txt").write_text("The keeper Edda Quill kept the silver key in a blue porcelain jar.")
    (folder / "notes.xyz").write_text("skipped")
    return folder
