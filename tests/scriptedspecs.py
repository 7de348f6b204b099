"""The fakes of memorag.testing under spec strings, so a CLI subprocess can use them:
``--mem-model scriptedspecs:llm --ret-model scriptedspecs:embedder`` with tests/ on PYTHONPATH.
Each records its own spec, so a store made with them is reopened with them. Also the small
folder of files the store front-ends' tests add (:func:`write_sources`) and a PDF made by
hand (:func:`minimal_pdf`)."""

from __future__ import annotations

import time
from pathlib import Path

from memorag.errors import BackendError
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


# Text holding this makes :func:`breaking_llm` fail while it reads the text into its memory.
BREAK_MARK = "BREAK-THE-BUILD"


class BreakingScriptedLLM(ScriptedLLM):
    """:class:`ScriptedLLM` whose backend fails when the text it memorizes holds ``BREAK_MARK``:
    a build (or an append) that breaks midway, chosen by the document, not by the test."""

    def prefill(self, messages, **kwargs):  # type: ignore[override]
        if any(BREAK_MARK in str(m.get("content", "")) for m in messages):
            raise BackendError("The scripted backend broke while reading the document.")
        return super().prefill(messages, **kwargs)

    def extend_prefix(self, text: str, **kwargs):  # type: ignore[override]
        if BREAK_MARK in text:
            raise BackendError("The scripted backend broke while reading the appended text.")
        return super().extend_prefix(text, **kwargs)


def breaking_llm() -> BreakingScriptedLLM:
    return BreakingScriptedLLM(spec="scriptedspecs:breaking_llm")


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


def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with a text layer (Helvetica), built by hand with correct xref offsets."""
    ops = " ".join(f"({line}) Tj 0 -16 Td" for line in lines)
    stream = f"BT /F1 12 Tf 72 720 Td {ops} ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
