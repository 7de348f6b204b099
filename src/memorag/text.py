"""Reading user text safely and telling languages apart."""

from __future__ import annotations

import re
from pathlib import Path

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
    if not text.strip():
        nothing = "there is nothing to ask" if what in ("query", "question") else "there is nothing to memorize"
        raise InputError(f"{what} is empty (or only whitespace): {nothing}.")
    if "\x00" in text:
        raise InputError(f"{what} contains NUL bytes: it looks like binary data, not text.")
    return text


def read_text_file(path: str | Path) -> str:
    """Read a UTF-8 text file, refusing binary and non-UTF-8 files with one clear message."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"File not found: {p}")
    if p.is_dir():
        raise InputError(f"{p} is a directory; give a text file.")
    return decode_text(p.read_bytes(), str(p))


def decode_text(data: bytes, what: str = "the file") -> str:
    """Decode uploaded bytes as UTF-8 text, refusing binary and non-UTF-8 data with one clear message."""
    if b"\x00" in data[:65536]:
        raise InputError(f"{what} looks like a binary file (it contains NUL bytes); give a UTF-8 text file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not valid UTF-8 (byte {exc.start} cannot be decoded). "
            "Convert it first, e.g. `iconv -f LATIN1 -t UTF-8 in.txt > out.txt`."
        ) from None
    return check_text(text, what=what)
