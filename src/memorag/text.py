"""Reading user text safely and telling languages apart."""

from __future__ import annotations

import codecs
import io
import re
from pathlib import Path
from typing import BinaryIO

from memorag.errors import InputError

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[A-Za-z\u00c0-\u024f]")


def detect_language(text: str, sample_chars: int = 20000) -> str:
    """Return ``"zh"`` when CJK ideographs dominate the letters of ``text``, else ``"en"``.

    Counting scripts is enough here: prompts exist only in English and Chinese, and a
    Chinese document always carries far more ideographs than Latin words carry letters
    divided by ~5 (the average English word length).
    """
    sample = text[:sample_chars]
    cjk = len(_CJK.findall(sample))
    latin_words = len(_LETTER.findall(sample)) / 5.0
    return "zh" if cjk > latin_words else "en"


def check_text(text: object, what: str = "context") -> str:
    """Validate text given directly to the API: a non-empty ``str``."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be a string, got {type(text).__name__}.")
    if not text or text.isspace():  # not text.strip(): that would copy a 200 MB document
        nothing = "there is nothing to ask" if what in ("query", "question") else "there is nothing to memorize"
        raise InputError(f"{what} is empty (or only whitespace): {nothing}.")
    if "\x00" in text:
        raise InputError(f"{what} contains NUL bytes: it looks like binary data, not text.")
    return text


# Longest BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]
_BLOCK = 1 << 20


def read_text_file(path: str | Path) -> str:
    """Read a text file, refusing binary and undecodable files with one clear message.

    UTF-8 (with or without a BOM); UTF-16 and UTF-32 when they start with a BOM. The file
    is decoded in 1 MiB blocks, so the peak memory is the text plus the decoded pieces
    (about twice the text), never the raw bytes on top; a NUL byte or an invalid sequence
    anywhere stops the read at that block.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"File not found: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a directory; give a text file.")
    with open(p, "rb") as f:
        return _decode_stream(f, str(p))


def decode_text(data: bytes, what: str = "the file") -> str:
    """Decode uploaded bytes as text (the service and the demo), with the same rules and
    messages as :func:`read_text_file`."""
    return _decode_stream(io.BytesIO(data), what)


def _decode_stream(f: BinaryIO, what: str) -> str:
    head = f.read(4)
    encoding = next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8")
    f.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    pieces: list[str] = []
    offset = 0
    while True:
        block = f.read(_BLOCK)
        # NUL is a character in UTF-16/32; in UTF-8 it means binary data.
        if encoding.startswith("utf-8") and b"\x00" in block:
            at = offset + block.index(b"\x00")
            raise InputError(f"{what} looks like a binary file (it contains NUL bytes, the first at byte {at}); "
                             "give a UTF-8 text file.")
        pending = len(decoder.getstate()[0])  # bytes of a character split across blocks
        try:
            pieces.append(decoder.decode(block, final=not block))
        except UnicodeDecodeError as exc:
            where = offset - pending + exc.start
            raise InputError(
                f"{what} is not valid {encoding.upper().replace('-SIG', '')} (byte {max(where, 0)} cannot be "
                "decoded). Convert it first, e.g. `iconv -f LATIN1 -t UTF-8 in.txt > out.txt`."
            ) from None
        if not block:
            break
        offset += len(block)
    text = "".join(pieces)
    del pieces
    if "\x00" in text:
        raise InputError(f"{what} contains NUL characters: it looks like binary data, not text.")
    return check_text(text, what=what)
