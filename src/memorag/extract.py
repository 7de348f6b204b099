"""Text out of the files a collection is built from: plain text, Markdown, HTML and PDF.

The text returned here is what a collection stores as the document (``document.txt``) and
what citations' character offsets point into, so extraction is deterministic: the same
file always gives the same text (and the same sha256, which is how an unchanged document
is recognised and skipped).

- ``.txt``, ``.md``/``.markdown``: read as text (UTF-8, or UTF-16/32 with a BOM), kept as is.
- ``.html``/``.htm``: Beautiful Soup with Python's own ``html.parser`` (no C parser to
  install); scripts, styles and other non-content elements are dropped, block elements
  become line breaks.
- ``.pdf``: pypdf's text layer, pages separated by a blank line (``pip install 'memorag[pdf]'``).
  A scanned PDF without a text layer is refused: there is no OCR here.
"""

from __future__ import annotations

import io
import re
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from memorag.errors import InputError
from memorag.text import check_text, decode_text, read_text_file

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES

# Elements whose text is not part of what a reader sees.
_DROP_TAGS = ("script", "style", "noscript", "template", "head", "svg", "iframe")
# Elements that start a new line; the text inside other (inline) elements runs on.
_BLOCK_TAGS = ("address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "figcaption", "figure",
               "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
               "p", "pre", "section", "table", "tr", "td", "th", "ul", "title", "caption")
_BLANK_RUNS = re.compile(r"\n[ \t\r\f\v]*(?:\n[ \t\r\f\v]*)+")
_SPACE_RUNS = re.compile(r"[ \t\r\f\v]+")


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def _check_type(suffix: str, what: str) -> None:
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"{what}: unsupported file type {suffix or '(no extension)'!r}; memorag reads "
                         f"{', '.join(SUPPORTED_SUFFIXES)}.")


def extract_text(path: str | Path) -> str:
    """The text of ``path`` by its type; :class:`InputError` for an unknown type or an unreadable file."""
    p = Path(path)
    suffix = p.suffix.lower()
    _check_type(suffix, str(p))
    if not p.is_file():
        raise InputError(f"File not found: {p}" if not p.exists() else f"{p} is not a regular file.")
    if suffix in TEXT_SUFFIXES:
        return read_text_file(p)
    if suffix in HTML_SUFFIXES:
        return html_to_text(p.read_bytes(), what=str(p))
    return pdf_to_text(p)


def file_base_name(filename: str) -> str:
    """The last component of a client's file name (``C:\\docs\\a.pdf`` and ``../a.pdf`` give ``a.pdf``)."""
    return PurePosixPath(filename.replace("\\", "/")).name


def extract_uploaded(data: bytes, filename: str) -> str:
    """The text of a file received as bytes (an HTTP upload), by the type its name says: the
    same rules, and so the same text, as :func:`extract_text` of that file on disk."""
    what = file_base_name(filename) or "the uploaded file"
    suffix = PurePosixPath(what).suffix.lower()
    _check_type(suffix, what)
    if not data:
        raise InputError(f"{what} is empty: there is nothing to memorize.")
    if suffix in TEXT_SUFFIXES:
        return decode_text(data, what=what)
    if suffix in HTML_SUFFIXES:
        return html_to_text(data, what=what)
    return pdf_to_text(io.BytesIO(data), what=what)


def _tidy(text: str) -> str:
    lines = [_SPACE_RUNS.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(data: bytes, what: str = "the HTML file") -> str:
    """Visible text of an HTML page: paragraphs and other blocks on their own lines."""
    from bs4 import BeautifulSoup

    markup = decode_text(data, what=what)  # same encoding rules and messages as text files
    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup(list(_DROP_TAGS)):
        tag.decompose()
    for tag in soup(list(_BLOCK_TAGS)):  # a blank line around blocks: they become paragraphs
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")
    for br in soup("br"):
        br.replace_with("\n")
    text = _tidy(soup.get_text())
    if not text:
        raise InputError(f"{what} has no visible text.")
    return check_text(text, what=what)


def pdf_to_text(source: Path | BinaryIO, what: str | None = None) -> str:
    """The text layer of a PDF (a path or a binary stream), one blank line between pages."""
    what = what or str(source)
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:
        raise InputError(f"{what}: reading PDF files needs pypdf: pip install 'memorag[pdf]'.") from None
    try:
        reader = PdfReader(source)
        if reader.is_encrypted:
            raise InputError(f"{what} is an encrypted PDF; decrypt it first (e.g. `qpdf --decrypt`).")
        pages = [page.extract_text() or "" for page in reader.pages]
    except InputError:
        raise
    except (PyPdfError, OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{what} is not a readable PDF ({type(exc).__name__}: {exc}).") from None
    text = "\n\n".join(_tidy(page) for page in pages if page.strip())
    if not text.strip():
        raise InputError(f"{what} has no text layer (a scanned PDF?); memorag does not run OCR.")
    return check_text(text, what=what)
